"""Device profiles: what engines a device runs and when to move between them, as data (``profiles/*.yaml``).

A profile is loaded into the frozen :class:`DeviceProfile` and validated: unknown keys and bad values are errors that
list the valid ones. Built-in profiles ship with the package; a user's YAML file works the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .artifacts.tensorrt import TARGETS as TENSORRT_TARGETS
from .errors import ConfigError
from .fileio import package_dir
from .geometry import MIN_TILE, check_tiling
from .model.config import VARIANTS
from .typed import check_keys

BACKENDS = ("tensorrt", "onnxruntime", "torch")
ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PRECISIONS = ("fp32", "fp16", "int8")
_DATA = "mambaesr_runtime.profiles_data"
#: ONNX Runtime intra-op threads a profile or caller may ask for. Far above any board we target; a request for
#: 100,000 made ONNX Runtime crash the process (segfault) while creating its thread pool.
MAX_THREADS = 256
#: A profile is a page of YAML; a larger file is not one (and parsing is where a hostile file would spend memory).
MAX_PROFILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Tier:
    """One engine tier: a model variant run on tiles of a static shape."""

    name: str
    variant: str
    """Model variant (see ``model.config.VARIANTS``)."""
    tile: int
    """LR tile size (square), the engine's static input shape."""
    overlap: int
    """Overlap per side between tiles, LR pixels."""
    batch: int
    """Tiles per engine call (the engine's static batch)."""
    precision: str | None = None
    """What this tier's engine computes in (``fp32``, ``fp16``, ``int8``); ``None``: the profile's ``precision``.
    ``int8`` is the tier's int8 QDQ graph (ONNX Runtime runs it on the CPU; TensorRT builds its plan from it)."""
    small_tile: int | None = None
    """An image no larger than this (both sides, LR) runs on the tier's engine exported at this tile, batch 1,
    instead of padding it to a whole ``tile`` (``None``: no such engine). Only for pad-aware engines, which give a
    padded image the whole-image result whatever the tile (measured: within 1.2e-7 of the full tile's output on
    x86-64, 2.4e-7 on aarch64); it spares the rest of the tile's work (the student: 15 ms at 32x32 against ~600 ms
    at 264x264)."""

    def precision_in(self, profile: DeviceProfile) -> str:
        """The precision this tier's engines have in ``profile``."""
        return self.precision or profile.precision

    def small(self) -> Tier | None:
        """The tier of the ``small_tile`` engine (named ``<name>-small``), or ``None``."""
        if self.small_tile is None:
            return None
        return Tier(f"{self.name}-small", self.variant, self.small_tile, self.overlap, 1, self.precision)


@dataclass(frozen=True)
class TelemetryThresholds:
    """Thresholds of the adaptive tier policy (``runtime/policy.py``). ``None``: that signal is not watched here.

    A signal puts the device under pressure at its threshold and counts as cleared only once it is back by its
    hysteresis margin, so a reading that wobbles around a threshold cannot move the tier back and forth.
    """

    temp_c: float | None
    """Step down at or above this temperature (hottest sensor), °C."""
    temp_hysteresis_c: float
    """Cleared only at or below ``temp_c - temp_hysteresis_c``."""
    power_w: float | None
    """Step down above this total board power, W."""
    power_hysteresis_w: float
    """Cleared only at or below ``power_w - power_hysteresis_w``."""
    mem_free_mb: float | None
    """Step down when free memory falls below this floor, MB."""
    mem_hysteresis_mb: float
    """Cleared only at or above ``mem_free_mb + mem_hysteresis_mb``."""
    latency_ms: float | None
    """Step down when the recent per-frame latency exceeds this target, ms."""
    latency_hysteresis_ms: float
    """Cleared only at or below ``latency_ms - latency_hysteresis_ms``."""
    latency_window: int
    """Frames on the current tier whose median is the "recent latency" (one slow frame is not a trend)."""
    dwell_s: float
    """Step up only after every signal has been cleared continuously this long, and this long after the last
    switch (no flapping)."""
    step_down_s: float
    """Minimum time on a tier before stepping down again, so a lighter engine gets the chance to take effect."""
    interval_s: float
    """Telemetry sampling interval, s."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    backends: tuple[str, ...]
    """Engine backends in order of preference."""
    ort_providers: tuple[str, ...]
    """ONNX Runtime execution providers in order of preference."""
    precision: str
    tensorrt: str | None
    """TensorRT version family the engines target (``"8.5"``: JetPack 5, ``"10"``: TensorRT 10.x (JetPack 6) and 11.x
    (desktop))."""
    opset: int
    workspace_mb: int
    dla_core: int | None
    threads: int
    """ONNX Runtime intra-op threads (0: its default)."""
    tiers: tuple[Tier, ...]
    """From heaviest to lightest."""
    telemetry: TelemetryThresholds
    """When the adaptive policy moves between tiers (YAML key ``telemetry``)."""

    def engine_tiers(self) -> tuple[Tier, ...]:
        """Every engine the profile needs exported: each tier's, and after it its ``small_tile`` engine's."""
        return tuple(e for t in self.tiers for e in (t, t.small()) if e is not None)

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise ConfigError(f"profile {self.name!r} has no tier {name!r}; its tiers are {[t.name for t in self.tiers]}")


def _choice(value, valid, where: str):
    if value not in valid:
        raise ConfigError(f"{where} is {value!r}; valid values are {list(valid)}")
    return value


def _number(value, where: str, minimum=0, allow_none=False, integer=False):
    if value is None and allow_none:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{where} must be {what} >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
    return value


def _thresholds(tel, where: str) -> TelemetryThresholds:
    check_keys(tel, TelemetryThresholds, where)
    t = TelemetryThresholds(
        temp_c=_number(tel["temp_c"], f"{where}.temp_c", allow_none=True),
        temp_hysteresis_c=_number(tel["temp_hysteresis_c"], f"{where}.temp_hysteresis_c"),
        power_w=_number(tel["power_w"], f"{where}.power_w", allow_none=True),
        power_hysteresis_w=_number(tel["power_hysteresis_w"], f"{where}.power_hysteresis_w"),
        mem_free_mb=_number(tel["mem_free_mb"], f"{where}.mem_free_mb", allow_none=True),
        mem_hysteresis_mb=_number(tel["mem_hysteresis_mb"], f"{where}.mem_hysteresis_mb"),
        latency_ms=_number(tel["latency_ms"], f"{where}.latency_ms", allow_none=True),
        latency_hysteresis_ms=_number(tel["latency_hysteresis_ms"], f"{where}.latency_hysteresis_ms"),
        latency_window=_number(tel["latency_window"], f"{where}.latency_window", 1, integer=True),
        dwell_s=_number(tel["dwell_s"], f"{where}.dwell_s"),
        step_down_s=_number(tel["step_down_s"], f"{where}.step_down_s"),
        interval_s=_number(tel["interval_s"], f"{where}.interval_s", 0.01))
    # A margin as large as its threshold could never be cleared: the policy would never step back up.
    for limit, margin, unit in (("temp_c", "temp_hysteresis_c", "°C"), ("power_w", "power_hysteresis_w", "W"),
                                ("latency_ms", "latency_hysteresis_ms", "ms")):
        if getattr(t, limit) is not None and getattr(t, margin) >= getattr(t, limit):
            raise ConfigError(f"{where}.{margin} {getattr(t, margin)} {unit} must be below {limit} "
                              f"{getattr(t, limit)} {unit}, or the policy could never step back up; a few percent "
                              f"of {limit} is typical")
    return t


def profile_from_dict(data: dict, source: str = "profile") -> DeviceProfile:
    """Validate and build a :class:`DeviceProfile` from parsed YAML."""
    check_keys(data, DeviceProfile, source)
    where = f"{source} ({data.get('name')!r})"
    backends = tuple(_choice(b, BACKENDS, f"{where} backends entry") for b in data["backends"] or ())
    providers = tuple(_choice(p, ORT_PROVIDERS, f"{where} ort_providers entry") for p in data["ort_providers"] or ())
    if not backends:
        raise ConfigError(f"{where}: backends is empty; list some of {list(BACKENDS)}")
    if "onnxruntime" in backends and not providers:
        raise ConfigError(f"{where}: ort_providers is empty; list some of {list(ORT_PROVIDERS)}")
    trt = data["tensorrt"]
    if trt is not None:
        trt = _choice(str(trt), TENSORRT_TARGETS, f"{where} tensorrt")
    if "tensorrt" in backends and trt is None:
        raise ConfigError(f"{where}: the tensorrt backend needs a tensorrt target, one of {list(TENSORRT_TARGETS)}")
    tiers = []
    if not data["tiers"]:
        raise ConfigError(f"{where}: tiers is empty; give at least one (variant, tile, overlap, batch)")
    for i, t in enumerate(data["tiers"]):
        tw = f"{where} tiers[{i}]"
        check_keys(t, Tier, tw)
        tile = _number(t["tile"], f"{tw} tile", MIN_TILE, integer=True)
        overlap = _number(t["overlap"], f"{tw} overlap", 0, integer=True)
        check_tiling(tile, overlap, MIN_TILE, tw)
        precision = t.get("precision")
        if precision is not None:
            _choice(precision, PRECISIONS, f"{tw} precision")
        small = t.get("small_tile")
        if small is not None:
            small = _number(small, f"{tw} small_tile", MIN_TILE, integer=True)
            if small >= tile:
                raise ConfigError(f"{tw} small_tile {small} must be below the tile {tile} (it is the engine for "
                                  f"images smaller than a tile), or null")
            check_tiling(small, overlap, MIN_TILE, f"{tw} small_tile")
        tiers.append(Tier(str(t["name"]), _choice(t["variant"], sorted(VARIANTS), f"{tw} variant"), tile, overlap,
                          _number(t["batch"], f"{tw} batch", 1, integer=True), precision, small))
    if len({t.name for t in tiers}) != len(tiers):
        raise ConfigError(f"{where}: tier names must be unique, got {[t.name for t in tiers]}")
    telemetry = _thresholds(data["telemetry"], f"{where} telemetry")
    return DeviceProfile(
        name=str(data["name"]), description=str(data["description"]), backends=backends, ort_providers=providers,
        precision=_choice(data["precision"], PRECISIONS, f"{where} precision"), tensorrt=trt,
        opset=_number(data["opset"], f"{where} opset", 13, integer=True),
        workspace_mb=_number(data["workspace_mb"], f"{where} workspace_mb", integer=True),
        dla_core=_number(data["dla_core"], f"{where} dla_core", allow_none=True, integer=True),
        threads=check_threads(data["threads"], f"{where} threads"), tiers=tuple(tiers), telemetry=telemetry)


def check_threads(value, where: str = "threads") -> int:
    """``value`` as a thread count for ONNX Runtime: an integer from 0 (its default) to :data:`MAX_THREADS`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise ConfigError(f"{where} must be an integer from 0 (ONNX Runtime's default) to {MAX_THREADS}, got "
                          f"{value!r}")
    return value


class _ProfileLoader(yaml.SafeLoader):
    """``safe_load`` without anchors and aliases: a profile never needs them, and a few lines of nested aliases
    ("billion laughs") expand into gigabytes and minutes of parsing."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: anchors and aliases (&name, *name) are not "
                                 f"allowed in a profile; write the values out")
        return super().compose_node(parent, index)


def profiles_dir() -> Path:
    """The folder of the built-in profiles: the installed ``mambaesr_runtime.profiles_data`` package (setup.py maps
    the checkout's ``profiles/`` to it), or, in a source checkout run without installing (the tree on PYTHONPATH,
    where that package does not exist), the checkout's own ``profiles/`` beside the ``mambaesr_runtime`` folder."""
    try:
        return package_dir(_DATA)
    except ModuleNotFoundError:
        tree = Path(__file__).resolve().parents[1] / "profiles"
        if (tree / "cpu.yaml").is_file():
            return tree
        raise ConfigError(f"the built-in device profiles are missing (no {_DATA} package and no {tree}); "
                          f"reinstall the runtime (pip install .) or pass a profile YAML file") from None


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in profiles_dir().iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A built-in profile by name (``orin``, ``cpu``...) or a YAML file by path."""
    text, source = None, str(name_or_path)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in source:
        if not path.is_file():
            raise ConfigError(f"profile file {path} not found")
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ConfigError(f"profile file {path} is {size} bytes; a profile is at most {MAX_PROFILE_BYTES} "
                              f"(see profiles/README.md for what one holds)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"profile file {path} cannot be read as text ({exc})") from exc
    else:
        names = builtin_profiles()
        if source not in names:
            raise ConfigError(f"unknown device {source!r}; built-in devices are {names} (or pass a YAML file)")
        text = (profiles_dir() / f"{source}.yaml").read_text()
    try:
        data = yaml.load(text, Loader=_ProfileLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {source} is not valid YAML: {exc}") from exc
    return profile_from_dict(data, f"profile {source}")
