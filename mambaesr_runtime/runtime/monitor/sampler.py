"""The background sampler: one thread samples a monitor at the profile's interval, so the inference loop reads the
newest snapshot without ever waiting for a sensor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ...errors import ConfigError
from .telemetry import Monitor, Telemetry

log = logging.getLogger(__name__)

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
