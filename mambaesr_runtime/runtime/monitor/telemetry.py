"""The telemetry snapshot the policy reads (:class:`Telemetry`) and the protocol every monitor follows (:class:`Monitor`).

Every field but the timestamp is optional: a sensor this machine lacks, or one that dropped out, is ``None``, and the
policy reads ``None`` as "no information". Timestamps are seconds on ``time.monotonic()`` for live monitors (the
policy measures dwell times with them, and the wall clock can jump); a trace may use any increasing clock.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ...errors import ConfigError
from ...typed import check_keys

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
