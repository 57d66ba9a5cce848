"""The live telemetry sources: psutil (anywhere), jtop (Jetson), NVML (NVIDIA GPUs), and choosing one.

``Monitor.sample()`` never raises: a monitor whose source fails returns what it still knows (the jtop monitor falls
back to psutil values and reconnects with exponential back-off), because it is called between the frames of an
inference loop. Optional hardware libraries are imported lazily, each only inside its monitor: ``jtop`` (``pip
install jetson-stats``) and ``pynvml`` (``pip install nvidia-ml-py``). psutil is a base dependency.
"""

from __future__ import annotations

import importlib
import logging
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DependencyError, MonitorError
from .telemetry import Monitor, Telemetry, _attempt, _num, _temp
from .traces import ReplayMonitor

log = logging.getLogger(__name__)

#: Values of ``source`` for :func:`open_monitor` (``--telemetry`` on the command lines).
SOURCES = ("auto", "jtop", "nvml", "psutil", "replay")

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
