"""Between frames, ask the policy which engine tier to run: the glue between monitor, policy and the upscaler.

    with AdaptiveController.open(load_profile("orin"), on_switch=swap_engine) as ctl:
        for frame in frames:
            tier = ctl.before_frame()           # the tier to run this frame on (calls on_switch first if it changed)
            start = time.perf_counter()
            ...run the frame on `tier`'s engine...
            ctl.after_frame(1000 * (time.perf_counter() - start))
    ctl.events                                  # [SwitchEvent(frame, time, from_tier, to_tier, reason), ...]

The controller owns one policy state and is driven from one (the inference) thread. Live monitors are sampled on a
:class:`~.monitor.BackgroundSampler` thread, so ``before_frame`` never waits on a sensor; a frame-mode
:class:`~.monitor.ReplayMonitor` is sampled directly, once per frame, which makes a run deterministic.

Latency is the controller's own measurement: the median of the last ``latency_window`` frames on the current tier
(``None`` until that many have run; the window restarts on every switch, so a new engine's warm-up frames and the
old engine's times never decide about the new tier).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..profiles import DeviceProfile, Tier
from .monitor import BackgroundSampler, Monitor, ReplayMonitor, Telemetry, open_monitor
from .policy import Decision, PolicyState, TierPolicy

log = logging.getLogger(__name__)

__all__ = ["AdaptiveController", "SwitchEvent"]


@dataclass(frozen=True)
class SwitchEvent:
    """One change of tier."""

    frame: int
    """Index (from 0) of the first frame that runs on the new tier."""
    time: float
    """Timestamp of the telemetry the decision was made on (monitor clock)."""
    from_tier: str
    """Name of the tier left."""
    to_tier: str
    """Name of the tier entered."""
    reason: str
    """The policy's reason: the signal, its value and its threshold."""


class AdaptiveController:
    """Chooses the tier for each frame of a stream (see the module docstring for the calling pattern).

    ``policy``: default ``TierPolicy(profile)``. ``on_switch(event)``: called in ``before_frame`` when the tier
    changes, before the frame runs (load or select the other engine there); if it raises, the controller stays on
    the old tier and the exception propagates. ``background``: sample on a thread (default: yes, except for a
    frame-mode replay). ``start_tier``: index or name (default: the heaviest). ``stale_after_s``: a background
    snapshot older than this counts as no information (default: 3 sampling intervals).
    """

    def __init__(self, profile: DeviceProfile, monitor: Monitor, policy: TierPolicy | None = None,
                 on_switch: Callable[[SwitchEvent], None] | None = None, *, background: bool | None = None,
                 start_tier: int | str = 0, clock: Callable[[], float] = time.monotonic,
                 stale_after_s: float | None = None):
        self.profile, self.monitor = profile, monitor
        self.policy = policy if policy is not None else TierPolicy(profile)
        self.on_switch = on_switch
        th = self.policy.thresholds
        if background is None:
            background = not (isinstance(monitor, ReplayMonitor) and monitor.mode == "frame")
        self._clock = clock
        self._stale_after = stale_after_s if stale_after_s is not None else 3 * th.interval_s
        self._state = self.policy.initial_state(start_tier)  # validates start_tier now, not at the first frame
        self._sampler = BackgroundSampler(monitor, th.interval_s, clock).start() if background else None
        if self._sampler is not None:
            self._sampler.wait_first(th.interval_s)  # start-up only: so the first frame decides on real data
        self._latencies: deque[float] = deque(maxlen=th.latency_window)
        self.frames = 0
        """Frames begun (calls of ``before_frame``)."""
        self.events: list[SwitchEvent] = []
        self.last_decision: Decision | None = None
        self.last_telemetry: Telemetry | None = None

    @classmethod
    def open(cls, profile: DeviceProfile, source: str = "auto", *, replay: str | Path | None = None,
             **kwargs) -> AdaptiveController:
        """A controller over a monitor opened by name (``auto``, ``jtop``, ``nvml``, ``psutil``, ``replay``); it
        closes the monitor when closed."""
        monitor = open_monitor(source, interval_s=profile.telemetry.interval_s, replay=replay)
        try:
            return cls(profile, monitor, **kwargs)
        except BaseException:
            monitor.close()
            raise

    @property
    def tier(self) -> Tier:
        """The tier of the current frame (before the first frame: the starting tier)."""
        return self.policy.tiers[self._state.tier]

    @property
    def state(self) -> PolicyState:
        return self._state

    def recent_latency_ms(self) -> float | None:
        """Median of the last ``latency_window`` frame latencies on this tier; None until there are that many."""
        if len(self._latencies) < (self._latencies.maxlen or 1):
            return None
        return statistics.median(self._latencies)

    def telemetry(self) -> Telemetry:
        """The snapshot the next decision would use: the monitor's latest, with this controller's latency."""
        if self._sampler is None:
            snapshot = self.monitor.sample()
        else:
            snapshot, now = self._sampler.latest(), self._clock()
            age = now - snapshot.timestamp
            if age > self._stale_after:
                # The sampler is stuck or dead: old readings could hold a tier forever or step up on stale calm.
                snapshot = Telemetry(timestamp=now, source=f"stale: {snapshot.source}, {age:.0f} s old")
            else:
                snapshot = dataclasses.replace(snapshot, timestamp=now)
        return dataclasses.replace(snapshot, latency_ms=self.recent_latency_ms())

    def before_frame(self) -> Tier:
        """Decide the tier for the frame about to run; never blocks on a sensor (background sampling)."""
        t = self.telemetry()
        decision = self.policy.decide(t, self._state)
        if decision.switched:
            event = SwitchEvent(self.frames, t.timestamp, self.policy.tiers[decision.previous].name,
                                decision.tier.name, decision.reason)
            if self.on_switch is not None:
                self.on_switch(event)  # may raise: then nothing below happens and the old tier stays
            self.events.append(event)
            self._latencies.clear()
            log.info("tier %s -> %s at frame %d: %s", event.from_tier, event.to_tier, event.frame, event.reason)
        self._state = decision.state
        self.last_decision, self.last_telemetry = decision, t
        self.frames += 1
        return decision.tier

    def after_frame(self, latency_ms: float) -> None:
        """Report how long the frame just run took (ms, wall time of the whole frame)."""
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not math.isfinite(latency_ms) \
                or latency_ms < 0:
            raise ConfigError(f"frame latency must be a finite number of ms >= 0, got {latency_ms!r}")
        self._latencies.append(float(latency_ms))

    def describe(self) -> str:
        sampling = "background sampling" if self._sampler is not None else "direct sampling"
        return f"adaptive tiers {[t.name for t in self.policy.tiers]} on {self.monitor.describe()}, {sampling}"

    def close(self) -> None:
        """Stop sampling and close the monitor."""
        if self._sampler is not None:
            self._sampler.stop()
        self.monitor.close()

    def __enter__(self) -> AdaptiveController:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.close()
