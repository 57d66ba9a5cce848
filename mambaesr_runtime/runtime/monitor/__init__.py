"""Hardware telemetry: one frozen snapshot type, the monitors that produce it, traces, and a background sampler.

One module each: :mod:`.telemetry` (the snapshot and the monitor protocol: what the policy needs), :mod:`.sources`
(psutil, jtop, NVML, and choosing one), :mod:`.traces` (record and replay) and :mod:`.sampler`. This package re-exports
their public names.

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

from .sampler import BackgroundSampler
from .sources import (
                      SOURCES,
                      JtopMonitor,
                      NvmlMonitor,
                      PsutilMonitor,
                      auto_monitor,
                      is_jetson,
                      jtop_fields,
                      open_monitor,
                      psutil_fields,
                      select_monitor,
)
from .telemetry import Monitor, Telemetry
from .traces import TRACE_FORMAT, ReplayMonitor, TraceRecorder, load_trace, record_trace, save_trace

__all__ = [
    "SOURCES", "TRACE_FORMAT", "BackgroundSampler", "JtopMonitor", "Monitor", "NvmlMonitor", "PsutilMonitor",
    "ReplayMonitor", "Telemetry", "TraceRecorder", "auto_monitor", "is_jetson", "jtop_fields", "load_trace",
    "open_monitor", "psutil_fields", "record_trace", "save_trace", "select_monitor",
]
