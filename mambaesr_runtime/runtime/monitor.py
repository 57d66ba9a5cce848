"""Hardware telemetry: one frozen snapshot type, the monitors that produce it, traces, and a background sampler.

    from mambaesr_runtime.runtime.monitor import BackgroundSampler, auto_monitor
    monitor = auto_monitor()                   # jtop on a Jetson, NVML on an NVIDIA GPU, psutil anywhere
    with BackgroundSampler(monitor, interval_s=1.0) as sampler:
        t = sampler.latest()                   # never blocks the caller: the newest snapshot so far

Every field of a :class:`Telemetry` but the timestamp is optional. A sensor this machine lacks, or one that dropped
out, is ``None``, and the policy reads ``None`` as "no information". ``Monitor.sample()`` never raises: a monitor
whose source fails returns what it still knows (the jtop monitor falls back to psutil values and reconnects with
exponential back-off), because it is called between the frames of an inference loop.

Optional hardware libraries are imported lazily, each only inside its monitor: ``jtop`` (``pip install
jetson-stats``) and ``pynvml`` (``pip install nvidia-ml-py``). psutil is a base dependency.

Timestamps are seconds on ``time.monotonic()`` for live monitors (the policy measures dwell times with them, and the
wall clock can jump); a trace may use any increasing clock.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import importlib
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, DependencyError, MonitorError
from ..fileio import atomic_write, atomic_write_json, read_json
from ..typed import check_keys

log = logging.getLogger(__name__)

__all__ = [
    "SOURCES", "BackgroundSampler", "JtopMonitor", "Monitor", "NvmlMonitor", "PsutilMonitor", "ReplayMonitor",
    "Telemetry", "TraceRecorder", "auto_monitor", "is_jetson", "jtop_fields", "load_trace", "open_monitor",
    "record_trace", "save_trace", "select_monitor",
]

#: Values of ``--source`` / :func:`open_monitor`.
SOURCES = ("auto", "jtop", "nvml", "psutil", "replay")
TRACE_FORMAT = "mambaesr-telemetry-trace"
# Readings outside this range are sensor junk (jtop marks an offline sensor -256 °C), not temperatures.
_TEMP_RANGE_C = (-60.0, 250.0)


@dataclass(frozen=True)
class Telemetry:
    """One snapshot of the hardware. Every field but ``timestamp`` may be ``None``: not measured here, or lost."""

    timestamp: float
    """Seconds; ``time.monotonic()`` for live monitors, any increasing clock in a trace."""
    temps_c: Mapping[str, float] | None = None
    """Temperature per sensor, °C."""
    temp_max_c: float | None = None
    """The hottest sensor, °C (computed from ``temps_c`` when not given)."""
    cpu_percent: float | None = None
    """CPU load over all cores since the previous sample, %."""
    gpu_percent: float | None = None
    """GPU load, %."""
    gpu_freq_mhz: float | None = None
    """Current GPU clock, MHz."""
    emc_freq_mhz: float | None = None
    """Current external memory controller clock (Jetson), MHz."""
    power_w: float | None = None
    """Total board power (Jetson: the sum of rails or the input rail, as jtop reports it; NVML: the GPU), W."""
    power_rails_w: Mapping[str, float] | None = None
    """Power per rail, W."""
    mem_free_mb: float | None = None
    """Memory the engine can still allocate, MB: available RAM (Jetson and CPU: unified), device memory (NVML)."""
    nvpmodel: str | None = None
    """Jetson power mode name (``MAXN``, ``15W``...)."""
    jetson_clocks: bool | None = None
    """Whether jetson_clocks pins the clocks at their maximum."""
    latency_ms: float | None = None
    """Recent per-frame inference latency, ms: filled in by the adaptive controller, not by monitors."""
    source: str = ""
    """Which monitor produced the snapshot, and how it is doing (``jtop``, ``psutil (jtop down: ...)``)."""

    def __post_init__(self):
        # Defensive copies keep a snapshot unchanged when its producer reuses its dicts.
        for name in ("temps_c", "power_rails_w"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, dict(value))
        if self.temp_max_c is None and self.temps_c:
            object.__setattr__(self, "temp_max_c", max(self.temps_c.values()))

    @property
    def hottest(self) -> str | None:
        """Name of the hottest sensor, if known."""
        if not self.temps_c:
            return None
        return max(self.temps_c, key=self.temps_c.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v, Mapping) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "telemetry") -> Telemetry:
        """Validated inverse of :meth:`to_dict`; unknown keys and wrong types are errors that list what is valid."""
        data = check_keys(data, cls, where)
        if _num(data.get("timestamp")) is None:
            raise ConfigError(f"{where}: timestamp must be a number (seconds), got {data.get('timestamp')!r}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            kind = _FIELDS[key]
            if value is None:
                values[key] = None
            elif kind == "number":
                if _num(value) is None:
                    raise ConfigError(f"{where}: {key} must be a number or null, got {value!r}")
                values[key] = float(value)
            elif kind == "mapping":
                if not isinstance(value, Mapping) or any(_num(v) is None for v in value.values()):
                    raise ConfigError(f"{where}: {key} must map sensor names to numbers, got {value!r}")
                values[key] = {str(k): float(v) for k, v in value.items()}
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: {key} must be true, false or null, got {value!r}")
                values[key] = value
            else:
                values[key] = str(value)
        return cls(**values)


_FIELDS = {"timestamp": "number", "temps_c": "mapping", "temp_max_c": "number", "cpu_percent": "number",
           "gpu_percent": "number", "gpu_freq_mhz": "number", "emc_freq_mhz": "number", "power_w": "number",
           "power_rails_w": "mapping", "mem_free_mb": "number", "nvpmodel": "str", "jetson_clocks": "bool",
           "latency_ms": "number", "source": "str"}
assert set(_FIELDS) == {f.name for f in dataclasses.fields(Telemetry)}


def _num(value) -> float | None:
    """A finite float, or None for anything else (``'OFF'``, NaN, None, a dict)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _temp(value) -> float | None:
    value = _num(value)
    return value if value is not None and _TEMP_RANGE_C[0] < value < _TEMP_RANGE_C[1] else None


def _attempt(read: Callable[[], Any]):
    """``read()``, or None when the source does not have it (a jetson-stats version without that property, a sensor
    that vanished): one missing field must not cost the others."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - hardware libraries raise many types; a failed read is "no information"
        return None


@runtime_checkable
class Monitor(Protocol):
    """A telemetry source. ``sample()`` never raises; ``close()`` releases what the monitor opened."""

    def sample(self) -> Telemetry: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------------------- psutil


def psutil_fields(psutil) -> dict[str, Any]:
    """CPU load (non-blocking: since the previous call), temperatures where the OS exposes them, available RAM."""
    out: dict[str, Any] = {"cpu_percent": _num(_attempt(lambda: psutil.cpu_percent(interval=None)))}
    sensors = _attempt(psutil.sensors_temperatures) if hasattr(psutil, "sensors_temperatures") else None
    temps = {}
    for chip, entries in (sensors or {}).items():
        for i, entry in enumerate(entries):
            value = _temp(getattr(entry, "current", None))
            if value is not None:
                label = getattr(entry, "label", "") or str(i)
                temps[f"{chip}/{label}"] = value
    out["temps_c"] = temps or None
    available = _attempt(lambda: psutil.virtual_memory().available)
    out["mem_free_mb"] = None if _num(available) is None else available / 2**20
    return out


class PsutilMonitor:
    """CPU load, temperatures (Linux thermal zones / hwmon, when present) and available RAM, through psutil."""

    name = "psutil"

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        import psutil

        self._psutil, self._clock = psutil, clock
        _attempt(lambda: psutil.cpu_percent(interval=None))  # the first call only starts psutil's measuring period

    def fields(self) -> dict[str, Any]:
        return psutil_fields(self._psutil)

    def sample(self) -> Telemetry:
        return Telemetry(timestamp=self._clock(), source=self.name, **self.fields())

    def describe(self) -> str:
        return f"psutil {self._psutil.__version__}"

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------------ jtop


def _mw_to_w(value) -> float | None:
    value = _num(value)
    return None if value is None else value / 1000.0


def jtop_fields(jetson) -> dict[str, Any]:
    """Read a started ``jtop`` object into :class:`Telemetry` fields; what it lacks is left out.

    Reads the documented properties first (jetson-stats >= 4: ``temperature`` {name: {temp, online}}, ``power``
    {rail: {name: {power mW}}, tot: {power mW}}, ``cpu`` {total: {idle %}}, ``gpu`` {name: {status: {load %},
    freq: {cur kHz}}}, ``memory`` {RAM: {tot, used KB}, EMC: {cur kHz}}, ``nvpmodel``, ``jetson_clocks``), the 3.x
    shapes where they differ (temperature {name: °C}, power (total {cur mW}, rails)), then the flat ``stats`` dict
    (``Temp X`` °C, ``Power TOT`` / ``power cur`` mW, ``CPU1``.. %, ``GPU`` %, ``nvp model``, ``jetson_clocks``).
    """
    out: dict[str, Any] = {}
    stats_cache: list[dict] = []

    def stats() -> dict:
        if not stats_cache:  # building jtop's stats dict reads every property: do it once, and only if needed
            stats_cache.append(dict(_attempt(lambda: jetson.stats) or {}))
        return stats_cache[0]

    # Temperatures.
    temps = {}
    for name, value in (_attempt(lambda: dict(jetson.temperature)) or {}).items():
        if isinstance(value, Mapping):
            if not value.get("online", True):
                continue
            value = value.get("temp")
        if _temp(value) is not None:
            temps[str(name)] = _temp(value)
    if not temps:
        temps = {k[5:]: _temp(v) for k, v in stats().items() if k.startswith("Temp ") and _temp(v) is not None}
    if temps:
        out["temps_c"] = temps

    # Power (mW in every jetson-stats version).
    power = _attempt(lambda: jetson.power)
    total, rails = None, {}
    if isinstance(power, Mapping) and isinstance(power.get("tot"), Mapping):
        total = _mw_to_w(power["tot"].get("power"))
        for name, rail in (power.get("rail") or {}).items():
            if isinstance(rail, Mapping) and rail.get("online", True) and _num(rail.get("power")) is not None:
                rails[str(name)] = _mw_to_w(rail["power"])
    elif isinstance(power, tuple) and len(power) == 2 and isinstance(power[0], Mapping):  # jetson-stats 3.x
        total = _mw_to_w(power[0].get("cur"))
        rails = {str(n): _mw_to_w(r.get("cur")) for n, r in (power[1] or {}).items()
                 if isinstance(r, Mapping) and _num(r.get("cur")) is not None}
    if total is None:
        total = _mw_to_w(stats().get("Power TOT", stats().get("power cur")))
    if not rails:
        rails = {k[6:]: _mw_to_w(v) for k, v in stats().items()
                 if k.startswith("Power ") and k != "Power TOT" and _num(v) is not None}
    if total is not None:
        out["power_w"] = total
    if rails:
        out["power_rails_w"] = rails

    # CPU load: the aggregate row, else the mean of the online cores.
    cpu = _attempt(lambda: jetson.cpu)
    idle = _attempt(lambda: cpu["total"]["idle"]) if isinstance(cpu, Mapping) else None
    if _num(idle) is not None:
        out["cpu_percent"] = 100.0 - float(idle)
    else:
        cores = [_num(v) for k, v in stats().items() if k.startswith("CPU") and k[3:].isdigit()]
        cores = [c for c in cores if c is not None]  # an offline core reads 'OFF'
        if cores:
            out["cpu_percent"] = statistics.fmean(cores)

    # GPU: the first (integrated) GPU's load and clock.
    gpu = _attempt(lambda: jetson.gpu)
    first = _attempt(lambda: next(iter(gpu.values()))) if isinstance(gpu, Mapping) or hasattr(gpu, "values") else None
    if isinstance(first, Mapping):
        load = _num(_attempt(lambda: first["status"]["load"]))
        freq = _num(_attempt(lambda: first["freq"]["cur"]))
        if load is not None:
            out["gpu_percent"] = load
        if freq is not None:
            out["gpu_freq_mhz"] = freq / 1000.0  # kHz
    elif isinstance(gpu, Mapping) and _num(gpu.get("val")) is not None:  # jetson-stats 3.x
        out["gpu_percent"] = float(gpu["val"])
    if "gpu_percent" not in out and _num(stats().get("GPU")) is not None:
        out["gpu_percent"] = float(stats()["GPU"])

    # Memory: jtop's "used" excludes buffers and cache, so tot - used is what applications can still get.
    memory = _attempt(lambda: jetson.memory)
    ram = _attempt(lambda: memory["RAM"])
    if isinstance(ram, Mapping) and _num(ram.get("tot")) is not None and _num(ram.get("used")) is not None:
        out["mem_free_mb"] = (ram["tot"] - ram["used"]) / 1024.0  # KB
    emc = _attempt(lambda: memory["EMC"]) if memory is not None and _attempt(lambda: "EMC" in memory) else None
    if isinstance(emc, Mapping) and _num(emc.get("cur")) is not None:
        out["emc_freq_mhz"] = emc["cur"] / 1000.0  # kHz

    # Power mode and clocks.
    nvp = _attempt(lambda: jetson.nvpmodel)
    if nvp is not None:
        name = nvp if isinstance(nvp, str) else _attempt(lambda: nvp.name)
        if name is not None:
            out["nvpmodel"] = str(name)
    elif isinstance(stats().get("nvp model"), str):
        out["nvpmodel"] = stats()["nvp model"]
    jc = _attempt(lambda: jetson.jetson_clocks)
    if jc is not None and _attempt(lambda: bool(jc)) is not None:
        out["jetson_clocks"] = bool(jc)
    elif stats().get("jetson_clocks") in ("ON", "OFF"):
        out["jetson_clocks"] = stats()["jetson_clocks"] == "ON"
    return out


class JtopMonitor:
    """Jetson telemetry through jetson-stats' ``jtop`` service, resilient to the service being absent or dying.

    The service may be down when this starts (not installed as a service, still booting) or die mid-run (upgrade,
    restart). Then ``sample()`` returns psutil's values (CPU, temperatures, RAM; power and GPU unknown: ``None``),
    with ``source`` saying why, and reconnects at most every ``backoff_s``, doubling up to ``max_backoff_s``.
    ``module``: the ``jtop`` module (default: imported here; tests pass a stand-in). A (re)connection can wait up
    to about three intervals for the service (jtop's own timeout), so sample it from a :class:`BackgroundSampler`
    (the adaptive controller does) rather than from the inference thread.
    """

    name = "jtop"

    def __init__(self, interval_s: float = 1.0, *, module=None, fallback: bool = True,
                 clock: Callable[[], float] = time.monotonic, backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        if module is None:
            try:
                module = importlib.import_module("jtop")
            except ImportError as exc:
                raise DependencyError("the jtop monitor needs jetson-stats: sudo pip3 install -U jetson-stats (on "
                                      "the Jetson, system-wide: it installs the jtop service; the [jetson] extra "
                                      "adds the client to a virtual environment), or use source='psutil'") from exc
        self._module, self._interval, self._clock = module, float(interval_s), clock
        self._backoff, self._max_backoff = float(backoff_s), float(max_backoff_s)
        self._fallback = PsutilMonitor(clock) if fallback else None
        self._jetson = None
        self._failures = 0
        self._next_try = clock()
        self.last_error: str | None = None
        self.connects = 0
        self._connect()

    @property
    def connected(self) -> bool:
        return self._jetson is not None

    def _connect(self) -> None:
        try:
            jetson = self._module.jtop(interval=self._interval)
            jetson.start()
        except Exception as exc:  # noqa: BLE001 - JtopException, or OSError/EOFError from its socket
            self._lost(f"cannot connect: {_oneline(exc)}")
            return
        self._jetson, self._failures, self.last_error = jetson, 0, None
        self.connects += 1
        log.info("jtop connected (service interval %s s)", _attempt(lambda: jetson.interval))

    def _lost(self, why: str) -> None:
        was_connected = self._jetson is not None
        if was_connected:
            _attempt(self._jetson.close)
        self._jetson = None
        delay = min(self._backoff * 2 ** self._failures, self._max_backoff)
        self._failures += 1
        self._next_try = self._clock() + delay
        self.last_error = why
        # Loud once when a working connection breaks; quiet for the retries and for a service that was never up
        # (auto_monitor probes jtop on every machine).
        level = logging.WARNING if was_connected else logging.INFO if self._failures == 1 else logging.DEBUG
        log.log(level, "jtop %s; psutil values until it answers again (next try in %.1f s)", why, delay)

    def sample(self) -> Telemetry:
        now = self._clock()
        if self._jetson is None and now >= self._next_try:
            self._connect()
        fields: dict[str, Any] = {}
        if self._jetson is not None:
            try:
                # spin=True: never wait for fresh data here; ok() re-raises an error its reader thread stored.
                if not self._jetson.ok(spin=True):
                    raise MonitorError("jtop stopped")
                fields = jtop_fields(self._jetson)
            except Exception as exc:  # noqa: BLE001 - the service can fail in many ways; never into the caller
                self._lost(f"lost the service: {_oneline(exc)}")
                fields = {}
        source = "jtop" if self._jetson is not None else f"psutil (jtop down: {self.last_error})"
        if self._fallback is not None:
            for key, value in self._fallback.fields().items():
                if fields.get(key) is None and value is not None:
                    fields[key] = value
        return Telemetry(timestamp=now, source=source, **fields)

    def describe(self) -> str:
        if self._jetson is not None:
            return f"jtop (connected, interval {self._interval:g} s)"
        wait = max(0.0, self._next_try - self._clock())
        return f"jtop (down: {self.last_error}; next try in {wait:.0f} s; psutil values meanwhile)"

    def close(self) -> None:
        if self._jetson is not None:
            _attempt(self._jetson.close)
        self._jetson = None


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------------------------------ NVML


class NvmlMonitor:
    """A desktop/server NVIDIA GPU through NVML (``pip install nvidia-ml-py``), plus psutil's CPU load.

    ``mem_free_mb`` is the GPU's free device memory (where a discrete GPU's engines live). Raises
    :class:`DependencyError` without pynvml and :class:`MonitorError` without a driver or GPU ``index``.
    """

    name = "nvml"

    def __init__(self, index: int = 0, *, module=None, clock: Callable[[], float] = time.monotonic):
        if module is None:
            try:
                module = importlib.import_module("pynvml")
            except ImportError as exc:
                raise DependencyError("the NVML monitor needs nvidia-ml-py: pip install nvidia-ml-py (the [nvml] "
                                      "extra), or use source='psutil'") from exc
        self._nvml, self._clock, self.index = module, clock, index
        try:
            module.nvmlInit()
        except Exception as exc:  # pynvml's NVMLError subclasses
            raise MonitorError(f"NVML cannot start: {_oneline(exc)}; is the NVIDIA driver installed (does "
                               f"nvidia-smi work)? Use source='psutil' otherwise") from exc
        try:
            self._handle = module.nvmlDeviceGetHandleByIndex(index)
            self.gpu_name = str(_attempt(lambda: module.nvmlDeviceGetName(self._handle)) or f"GPU {index}")
        except Exception as exc:
            module.nvmlShutdown()
            raise MonitorError(f"NVML has no GPU {index}: {_oneline(exc)}; nvidia-smi -L lists the GPUs") from exc
        self._cpu = PsutilMonitor(clock)

    def sample(self) -> Telemetry:
        nv, h = self._nvml, self._handle
        fields = self._cpu.fields()
        gpu_temp = _temp(_attempt(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)))
        temps = dict(fields.get("temps_c") or {})
        if gpu_temp is not None:
            temps["gpu"] = gpu_temp
        fields["temps_c"] = temps or None
        fields["gpu_percent"] = _num(_attempt(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu))
        fields["gpu_freq_mhz"] = _num(_attempt(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_GRAPHICS)))
        fields["power_w"] = _mw_to_w(_attempt(lambda: nv.nvmlDeviceGetPowerUsage(h)))
        free = _num(_attempt(lambda: nv.nvmlDeviceGetMemoryInfo(h).free))
        fields["mem_free_mb"] = None if free is None else free / 2**20
        return Telemetry(timestamp=self._clock(), source=self.name, **fields)

    def describe(self) -> str:
        return f"nvml ({self.gpu_name}, index {self.index})"

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            _attempt(self._nvml.nvmlShutdown)


# ------------------------------------------------------------------------------------------------- traces


def load_trace(path: str | Path) -> list[Telemetry]:
    """Read a trace: JSON (what :func:`save_trace` writes, or a bare list of snapshots) or CSV.

    CSV columns are the :class:`Telemetry` field names, plus ``temp:<sensor>`` and ``rail:<name>`` for the two
    mappings; an empty cell is ``None``. Timestamps must not decrease.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trace {path} not found; record one with mambaesr-monitor --record {path.name}")
    if path.suffix.lower() == ".csv":
        samples = _read_csv(path)
    elif path.suffix.lower() == ".json":
        data = read_json(path, "trace", f"record one with mambaesr-monitor --record {path.name}", ConfigError)
        rows = data.get("samples") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ConfigError(f"trace {path} must be a list of snapshots or an object with a 'samples' list")
        samples = [Telemetry.from_dict(row, f"trace {path.name} sample {i}") for i, row in enumerate(rows)]
    else:
        raise ConfigError(f"trace {path}: unknown format {path.suffix!r}; valid suffixes are ['.json', '.csv']")
    if not samples:
        raise ConfigError(f"trace {path} holds no samples")
    for i in range(1, len(samples)):
        if samples[i].timestamp < samples[i - 1].timestamp:
            raise ConfigError(f"trace {path}: timestamp of sample {i} ({samples[i].timestamp}) is before sample "
                              f"{i - 1}'s ({samples[i - 1].timestamp}); timestamps must not decrease")
    return samples


_MAPPINGS = {"temp:": "temps_c", "rail:": "power_rails_w"}
_CSV_COLUMNS = [k for k, kind in _FIELDS.items() if kind != "mapping"]


def _read_csv(path: Path) -> list[Telemetry]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        bad = [c for c in columns if c not in _CSV_COLUMNS and not c.startswith(tuple(_MAPPINGS))]
        if bad:
            raise ConfigError(f"trace {path}: unknown columns {bad}; valid columns are {_CSV_COLUMNS} and "
                              f"'temp:<sensor>', 'rail:<name>'")
        samples = []
        for i, row in enumerate(reader):
            where = f"trace {path.name} row {i + 2}"
            data: dict[str, Any] = {}
            for column, cell in row.items():
                cell = (cell or "").strip()
                prefix = next((p for p in _MAPPINGS if column.startswith(p)), None)
                if prefix:
                    if cell:
                        data.setdefault(_MAPPINGS[prefix], {})[column[len(prefix):]] = _csv_number(cell, column, where)
                elif not cell:
                    data[column] = None
                elif _FIELDS[column] == "number":
                    data[column] = _csv_number(cell, column, where)
                elif _FIELDS[column] == "bool":
                    if cell.lower() not in ("true", "false", "1", "0"):
                        raise ConfigError(f"{where}: {column} is {cell!r}; valid values are true, false, 1, 0, empty")
                    data[column] = cell.lower() in ("true", "1")
                else:
                    data[column] = cell
            samples.append(Telemetry.from_dict(data, where))
        return samples


def _csv_number(cell: str, column: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ConfigError(f"{where}: {column} is {cell!r}, not a number (leave it empty for no reading)") from None


def save_trace(path: str | Path, samples: Sequence[Telemetry], **meta) -> Path:
    """Write ``samples`` atomically, as JSON (``meta`` kept beside them) or CSV, by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return atomic_write_json(path, {"format": TRACE_FORMAT, "version": 1, **meta,
                                        "samples": [s.to_dict() for s in samples]})
    if suffix != ".csv":
        raise ConfigError(f"trace {path}: unknown format {path.suffix!r}; valid suffixes are ['.json', '.csv']")
    temps = sorted({k for s in samples for k in (s.temps_c or {})})
    rails = sorted({k for s in samples for k in (s.power_rails_w or {})})
    header = _CSV_COLUMNS + [f"temp:{k}" for k in temps] + [f"rail:{k}" for k in rails]

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for s in samples:
                row = ["" if getattr(s, c) is None else _csv_cell(getattr(s, c)) for c in _CSV_COLUMNS]
                row += [_csv_cell((s.temps_c or {}).get(k)) for k in temps]
                row += [_csv_cell((s.power_rails_w or {}).get(k)) for k in rails]
                writer.writerow(row)

    return atomic_write(path, write, suffix=".csv")


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # repr: floats round-trip exactly


class TraceRecorder:
    """Collects snapshots and writes them atomically with :meth:`save` (what was recorded so far, any time)."""

    def __init__(self, path: str | Path, **meta):
        self.path, self.meta = Path(path), meta
        self.samples: list[Telemetry] = []

    def add(self, sample: Telemetry) -> None:
        self.samples.append(sample)

    def save(self) -> Path:
        return save_trace(self.path, self.samples, **self.meta)


def record_trace(monitor: Monitor, path: str | Path, count: int, interval_s: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 on_sample: Callable[[Telemetry], None] | None = None) -> list[Telemetry]:
    """Sample ``monitor`` ``count`` times, ``interval_s`` apart, and write the trace atomically (also when
    interrupted: what was sampled until then)."""
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    recorder = TraceRecorder(path, monitor=monitor.describe(), interval_s=interval_s)
    try:
        for i in range(count):
            if i:
                sleep(interval_s)
            sample = monitor.sample()
            recorder.add(sample)
            if on_sample is not None:
                on_sample(sample)
    finally:
        if recorder.samples:
            recorder.save()
    return recorder.samples


class ReplayMonitor:
    """Plays a recorded trace, in order.

    ``mode="frame"``: each ``sample()`` returns the next snapshot with its recorded timestamp, so a run over it is
    deterministic (tests, benchmarks). ``mode="time"``: ``sample()`` returns the snapshot due at the time elapsed
    since the first call, timestamps moved onto ``clock``. Past the end it holds the last snapshot (``exhausted``
    turns true), or starts over with ``loop=True`` (timestamps keep increasing).
    """

    name = "replay"

    def __init__(self, trace: str | Path | Iterable[Telemetry], mode: str = "frame", loop: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in ("frame", "time"):
            raise ConfigError(f"replay mode is {mode!r}; valid values are ['frame', 'time']")
        if isinstance(trace, (str, Path)):
            self._label, samples = Path(trace).name, load_trace(trace)
        else:
            self._label, samples = "in-memory trace", list(trace)
            if not samples:
                raise ConfigError("a replay needs at least one snapshot")
        self.samples, self.mode, self.loop, self._clock = samples, mode, loop, clock
        self._times = [s.timestamp - samples[0].timestamp for s in samples]
        gaps = [b - a for a, b in zip(self._times, self._times[1:]) if b > a]
        # One loop lasts the trace plus one typical gap, so the replayed clock never stands still at the seam.
        self._span = self._times[-1] + (statistics.median(gaps) if gaps else 1.0)
        self.position = 0
        self.exhausted = False
        self._start: float | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self) -> Telemetry:
        n = len(self.samples)
        if self.mode == "frame":
            lap, i = divmod(self.position, n)
            if lap and not self.loop:
                lap, i = 0, n - 1
                self.exhausted = True
            self.position += 1
            s = self.samples[i]
            stamp = s.timestamp + lap * self._span
        else:
            now = self._clock()
            if self._start is None:
                self._start = now
            elapsed = now - self._start
            lap = 0
            if self.loop:
                lap, elapsed = divmod(elapsed, self._span)
            elif elapsed >= self._span:
                self.exhausted = True
            i = max(0, bisect.bisect_right(self._times, elapsed) - 1)
            self.position = i
            s = self.samples[i]
            stamp = self._start + lap * self._span + self._times[i]
        return dataclasses.replace(s, timestamp=stamp, source=f"replay ({s.source or self._label})")

    def describe(self) -> str:
        return f"replay {self._label} ({len(self.samples)} snapshots, by {self.mode}{', looping' if self.loop else ''})"

    def close(self) -> None:
        pass


# -------------------------------------------------------------------------------------------------- choose


def is_jetson() -> bool:
    """An NVIDIA Jetson (L4T) board, or a container that sees its release file or device tree."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    model = _attempt(lambda: Path("/proc/device-tree/model").read_text(errors="replace"))
    return bool(model) and "jetson" in model.lower()


def select_monitor(interval_s: float = 1.0) -> tuple[Monitor, str]:
    """The best telemetry source here, jtop > NVML > psutil, and why (one line naming each source passed over)."""
    passed: list[str] = []
    try:
        monitor = JtopMonitor(interval_s)
    except DependencyError:
        passed.append("jtop: jetson-stats is not installed")
    else:
        if monitor.connected:
            return monitor, "jtop: the jtop service answers"
        if is_jetson():  # a Jetson whose service is late or restarting: keep trying it, with psutil meanwhile
            return monitor, f"jtop: this is a Jetson; the service is not answering yet ({monitor.last_error})"
        monitor.close()
        passed.append(f"jtop: installed, but its service is not running here ({monitor.last_error})")
    try:
        monitor = NvmlMonitor()
    except (DependencyError, MonitorError) as exc:
        passed.append(f"nvml: {_oneline(exc).split(';')[0]}")
    else:
        return monitor, f"nvml: {monitor.describe()}; passed over {'; '.join(passed)}"
    return PsutilMonitor(), f"psutil, the fallback; passed over {'; '.join(passed)}"


def auto_monitor(interval_s: float = 1.0) -> Monitor:
    """:func:`select_monitor`, logging which source it took and why."""
    monitor, why = select_monitor(interval_s)
    log.info("telemetry source: %s", why)
    return monitor


def open_monitor(source: str = "auto", *, interval_s: float = 1.0, replay: str | Path | None = None,
                 replay_mode: str = "frame") -> Monitor:
    """A monitor by name (one of :data:`SOURCES`); ``replay`` is the trace file for ``source="replay"``."""
    if source not in SOURCES:
        raise ConfigError(f"telemetry source is {source!r}; valid values are {list(SOURCES)}")
    if (source == "replay") != (replay is not None):
        raise ConfigError("a replay needs a trace file (replay='trace.json'), and a trace file needs source="
                          "'replay'")
    if source == "auto":
        return auto_monitor(interval_s)
    if source == "jtop":
        return JtopMonitor(interval_s)
    if source == "nvml":
        return NvmlMonitor()
    if source == "psutil":
        return PsutilMonitor()
    return ReplayMonitor(replay, mode=replay_mode)


# ----------------------------------------------------------------------------------------------- sampler


class BackgroundSampler:
    """Samples a monitor on its own thread every ``interval_s``; :meth:`latest` never blocks.

    The inference thread only reads a reference the sampler replaces (an atomic store in CPython), so a monitor
    that takes long (a jtop reconnect, a slow sensor) delays the next sample, never a frame. Until the first
    sample lands, :meth:`latest` is an empty snapshot ("no information").
    """

    def __init__(self, monitor: Monitor, interval_s: float, clock: Callable[[], float] = time.monotonic):
        if not interval_s > 0:
            raise ConfigError(f"sampling interval must be > 0 s, got {interval_s}")
        self.monitor, self.interval_s, self._clock = monitor, float(interval_s), clock
        self._latest = Telemetry(timestamp=clock(), source="no sample yet")
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.errors = 0

    def start(self) -> BackgroundSampler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mambaesr-telemetry", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            began = self._clock()
            try:
                self._latest = self.monitor.sample()
                self.samples += 1
                self._first.set()
            except Exception:  # a monitor broke its promise; keep the last snapshot and go on
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.exception("telemetry sample failed (%d so far); keeping the last snapshot", self.errors)
            self._stop.wait(max(0.0, self.interval_s - (self._clock() - began)))

    def latest(self) -> Telemetry:
        return self._latest

    def wait_first(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the first sample (at start-up, before any frame); True once it landed."""
        return self._first.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A daemon thread stuck inside monitor.sample() cannot be interrupted; it ends with the process.
                log.warning("telemetry sampler still inside %s after %.1f s; leaving it", self.monitor.describe(),
                            timeout)

    def __enter__(self) -> BackgroundSampler:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
