"""The adaptive tier policy: which engine tier to run next, from one telemetry snapshot. Pure: no clock, no I/O.

    policy = TierPolicy(load_profile("orin"))
    state = policy.initial_state()                  # the heaviest tier
    decision = policy.decide(telemetry, state)      # -> Decision(tier, reason, state, ...)
    state = decision.state                          # keep it for the next frame

Rules (thresholds from the profile's ``telemetry`` section; tiers are ordered heaviest first):

- **Pressure** is any watched signal over its threshold: hottest temperature ``>= temp_c``, board power
  ``> power_w``, free memory ``< mem_free_mb``, recent latency ``> latency_ms``. Under pressure the policy steps
  down one tier, but not sooner than ``step_down_s`` after the previous switch (the lighter engine needs a moment to
  show its effect, and the latency window restarts on a switch).
- **Clear** means every watched signal is back by its margin (``temp_c - temp_hysteresis_c``, ``power_w -
  power_hysteresis_w``, ``mem_free_mb + mem_hysteresis_mb``, ``latency_ms - latency_hysteresis_ms``). The policy
  steps up one tier only after telemetry has been clear continuously for ``dwell_s`` and ``dwell_s`` has passed
  since the last switch. A reading between threshold and margin is neither: it holds the tier and restarts the
  clear clock, so a signal wobbling around a threshold cannot flap the tier.
- **Back-off.** A step down that undoes a step up before that step up has held for its dwell doubles the dwell
  before the next step up (up to x8, ``MAX_BACKOFF``); one that holds resets it. A heavier tier that is too slow
  or runs too hot is then retried every 10, 20, 40, 80 s instead of every 10 s.
- **Missing data is no information.** A signal that has never been reported (a machine without that sensor) is
  ignored. One that was reported before and is missing now (a dropout) cannot count as clear: it holds the tier and
  restarts the clear clock. A snapshot with no watched signal at all never steps up. Missing data never steps down.

Switch bounds that follow (the property tests check them): consecutive switches are at least ``min(step_down_s,
dwell_s)`` apart, every step up is at least ``dwell_s`` after the previous switch and after ``dwell_s`` of
uninterrupted clear readings, so at most one step up falls in any ``dwell_s`` window, and each switch moves one
tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..profiles import DeviceProfile, TelemetryThresholds, Tier
from .monitor.telemetry import Telemetry

__all__ = ["MAX_BACKOFF", "SIGNALS", "Decision", "PolicyState", "TierPolicy"]

#: The watched signals, in the order reasons list them.
SIGNALS = ("temperature", "power", "memory", "latency")
#: A failed step up doubles the next dwell, at most this many times (x8): a tier that is too slow or too hot is
#: retried ever more rarely instead of every dwell, and after a step up holds for its dwell, back to x1.
MAX_BACKOFF = 3


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between decisions. Frozen: each decision returns a new one."""

    tier: int
    """Index of the current tier in the profile's ``tiers`` (0: the heaviest)."""
    entered_at: float | None
    """Timestamp of the switch onto this tier; ``None`` on the starting tier (no switch to wait after yet)."""
    clear_since: float | None = None
    """Timestamp from which every watched signal has been clear without a break; ``None``: not clear now."""
    seen: frozenset[str] = frozenset()
    """Signals reported at least once: a later gap in one of them is a dropout, not a missing sensor."""
    entered_up: bool = False
    """This tier was entered by stepping up (so a step down before the dwell passes means that step up failed)."""
    backoff: int = 0
    """Step ups that failed in a row (capped at ``MAX_BACKOFF``): the dwell before the next one doubles each time."""


@dataclass(frozen=True)
class Decision:
    """The tier to run next and why."""

    tier: Tier
    """The tier to run next."""
    index: int
    """Its index in the profile's ``tiers``."""
    previous: int
    """The index of the tier before this decision."""
    reason: str
    """Why, in words: the signal, its value and its threshold."""
    state: PolicyState
    """Pass to the next ``decide``."""

    @property
    def switched(self) -> bool:
        return self.index != self.previous


@dataclass(frozen=True)
class _Reading:
    """One watched signal in one snapshot."""

    signal: str
    value: float | None
    pressure: bool
    clear: bool
    pressure_text: str
    """e.g. ``temperature 86.0 °C >= 85 °C`` (meaningful only under pressure)."""
    band_text: str
    """e.g. ``temperature 82.0 °C (clear at <= 80 °C)``."""
    clear_text: str
    """e.g. ``temperature 70.0 °C <= 80 °C``."""


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _readings(t: Telemetry, th: TelemetryThresholds) -> list[_Reading]:
    """The watched signals of snapshot ``t``, judged against ``th``. Pure."""
    out = []
    specs = (
        # signal, value, limit, margin, unit, True when a higher value is worse
        ("temperature", t.temp_max_c, th.temp_c, th.temp_hysteresis_c, "°C", True),
        ("power", t.power_w, th.power_w, th.power_hysteresis_w, "W", True),
        ("memory", t.mem_free_mb, th.mem_free_mb, th.mem_hysteresis_mb, "MB", False),
        ("latency", t.latency_ms, th.latency_ms, th.latency_hysteresis_ms, "ms", True),
    )
    for signal, value, limit, margin, unit, high_is_bad in specs:
        if limit is None:
            continue
        label = {"temperature": "temperature", "power": "power", "memory": "free memory",
                 "latency": "latency"}[signal]
        if signal == "temperature" and t.hottest:
            label = f"temperature ({t.hottest})"
        if high_is_bad:
            # Temperature counts at the threshold (thermal limits are "at or above"); power and latency above it.
            pressure = value is not None and (value >= limit if signal == "temperature" else value > limit)
            back = limit - margin
            clear = value is not None and value <= back
            over = ">=" if signal == "temperature" else ">"
            budget = {"temperature": "", "power": "budget ", "latency": "target "}[signal]
            p_text = f"{label} {_fmt(value or 0)} {unit} {over} {budget}{_fmt(limit)} {unit}"
            c_text = f"{label} {_fmt(value or 0)} {unit} <= {_fmt(back)} {unit}"
            b_text = f"{label} {_fmt(value or 0)} {unit} (clear at <= {_fmt(back)} {unit})"
        else:
            pressure = value is not None and value < limit
            back = limit + margin
            clear = value is not None and value >= back
            p_text = f"{label} {_fmt(value or 0)} {unit} < floor {_fmt(limit)} {unit}"
            c_text = f"{label} {_fmt(value or 0)} {unit} >= {_fmt(back)} {unit}"
            b_text = f"{label} {_fmt(value or 0)} {unit} (clear at >= {_fmt(back)} {unit})"
        out.append(_Reading(signal, value, pressure, clear, p_text, b_text, c_text))
    return out


class TierPolicy:
    """Decides the tier from telemetry with hysteresis, a dwell time and a step-down interval (see the module)."""

    def __init__(self, profile: DeviceProfile):
        if not profile.tiers:
            raise ConfigError(f"profile {profile.name!r} has no tiers; the policy needs at least one")
        self.profile, self.tiers, self.thresholds = profile, profile.tiers, profile.telemetry

    def initial_state(self, tier: int | str = 0) -> PolicyState:
        """Start on ``tier`` (index or name; default the heaviest). The first switch needs no wait after the start:
        a device that is already hot steps down at once."""
        if isinstance(tier, str):
            tier = self.tiers.index(self.profile.tier(tier))
        if not 0 <= tier < len(self.tiers):
            raise ConfigError(f"tier index {tier} is outside profile {self.profile.name!r}'s "
                              f"{[t.name for t in self.tiers]} (0..{len(self.tiers) - 1})")
        return PolicyState(tier=tier, entered_at=None)

    def decide(self, t: Telemetry, state: PolicyState) -> Decision:
        """The tier to run next, given snapshot ``t`` (whose timestamp is "now") and the previous ``state``."""
        th, now, i = self.thresholds, t.timestamp, state.tier
        readings = _readings(t, th)
        present = [r for r in readings if r.value is not None]
        seen = state.seen | {r.signal for r in present}
        dropped = [r.signal for r in readings if r.value is None and r.signal in seen]
        on_tier = math.inf if state.entered_at is None else now - state.entered_at
        last = len(self.tiers) - 1
        # A step up that held for its whole dwell proved itself: the back-off starts again from x1.
        held = state.entered_up and on_tier >= th.dwell_s * 2 ** state.backoff
        backoff = 0 if held else state.backoff
        dwell = th.dwell_s * 2 ** backoff
        dwell_text = f"{_fmt(dwell)} s" + (f" (x{2 ** backoff} after {backoff} failed step up{'s' * (backoff > 1)})"
                                           if backoff else "")

        def decision(index: int, reason: str, clear_since: float | None) -> Decision:
            entered_up, new_backoff = state.entered_up, backoff
            if index > i:  # down: if it undoes a step up that has not held, the next step up waits longer
                entered_up = False
                if state.entered_up and not held:
                    new_backoff = min(state.backoff + 1, MAX_BACKOFF)
            elif index < i:
                entered_up = True
            new = PolicyState(tier=index, entered_at=now if index != i else state.entered_at,
                              clear_since=clear_since, seen=seen, entered_up=entered_up, backoff=new_backoff)
            return Decision(self.tiers[index], index, i, reason, new)

        pressing = [r for r in readings if r.pressure]
        if pressing:
            why = "; ".join(r.pressure_text for r in pressing)
            if i == last:
                return decision(i, f"holding {self.tiers[i].name}, the lightest tier: {why}", None)
            if on_tier < th.step_down_s:
                return decision(i, f"holding {self.tiers[i].name}: {why}; {_fmt(on_tier)} s on this tier, next "
                                   f"step down after {_fmt(th.step_down_s)} s", None)
            return decision(i + 1, f"down {self.tiers[i].name} -> {self.tiers[i + 1].name}: {why}", None)

        if dropped:
            gaps = [("latency not measured on this tier yet" if s == "latency" else f"no {s} reading (dropout)")
                    for s in dropped]
            return decision(i, f"holding {self.tiers[i].name}: {'; '.join(gaps)}; no step up without it", None)
        if not present:
            return decision(i, f"holding {self.tiers[i].name}: no telemetry for any watched signal", None)
        band = [r for r in present if not r.clear]
        if band:
            why = "; ".join(r.band_text for r in band)
            return decision(i, f"holding {self.tiers[i].name}: {why}", None)

        # Every watched signal is clear.
        since = state.clear_since if state.clear_since is not None else now
        clear_for = now - since
        why = "; ".join(r.clear_text for r in present)
        if i == 0:
            return decision(i, f"on {self.tiers[i].name}, the heaviest tier: {why}", since)
        if clear_for >= dwell and on_tier >= dwell:
            return decision(i - 1, f"up {self.tiers[i].name} -> {self.tiers[i - 1].name}: clear for "
                                   f"{_fmt(clear_for)} s >= dwell {dwell_text} ({why})", since)
        waited = min(clear_for, on_tier)
        return decision(i, f"holding {self.tiers[i].name}: clear for {_fmt(waited)} s of the {dwell_text} dwell "
                           f"({why})", since)
