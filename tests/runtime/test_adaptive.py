"""The adaptive controller over whole streams: replayed traces switch at the expected frames, the latency it
measures itself drives the policy, switch callbacks, background sampling that never blocks, stale telemetry."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.adaptive import AdaptiveController, SwitchEvent
from mambaesr_runtime.runtime.monitor import (
    PsutilMonitor,
    ReplayMonitor,
    Telemetry,
    save_trace,
)

ORIN = load_profile("orin")  # quality > balanced > light; 85 °C (clear <= 80); latency 250 ms (clear <= 200), window 5
FRAME_S = 0.5  # the replayed stream runs at 2 frames/s


def thermal_trace() -> list[Telemetry]:
    """200 frames: cool, a ramp through 85 °C at frame 60, hot, cooling through 80 °C at frame 132, cool."""
    temps = []
    for f in range(200):
        if f < 40:
            c = 70.0
        elif f < 70:
            c = 70.0 + (f - 40) * 0.75  # 85.0 at frame 60
        elif f < 120:
            c = 92.0
        elif f < 150:
            c = 92.0 - (f - 120)  # 80.0 at frame 132
        else:
            c = 62.0
        temps.append(c)
    return [Telemetry(f * FRAME_S, temps_c={"cpu": c, "gpu": c - 3}, mem_free_mb=20000.0, source="scripted")
            for f, c in enumerate(temps)]


def runs(tiers: list[str]) -> list[tuple[str, int]]:
    return [(name, len(list(group))) for name, group in itertools.groupby(tiers)]


def stream(ctl: AdaptiveController, frames: int, latency_ms) -> list[str]:
    tiers = []
    for _ in range(frames):
        tier = ctl.before_frame()
        tiers.append(tier.name)
        ctl.after_frame(latency_ms(tier.name))
    return tiers


def test_200_frames_of_a_thermal_trace_switch_at_the_expected_frames():
    calls = []
    ctl = AdaptiveController(ORIN, ReplayMonitor(thermal_trace()), on_switch=calls.append)
    tiers = stream(ctl, 200, lambda name: 100.0)  # latency well inside the target on every tier
    assert [(e.frame, e.from_tier, e.to_tier) for e in ctl.events] == [
        (60, "quality", "balanced"),   # 85 °C at frame 60
        (64, "balanced", "light"),     # still hot 2 s (4 frames) later
        (152, "light", "balanced"),    # clear (<= 80 °C) from frame 132, plus the 10 s dwell (20 frames)
        (177, "balanced", "quality"),  # the latency window refills for 5 frames (no reading: the clock restarts
    ]                                  # at 157), then another 10 s dwell
    assert [e.reason for e in ctl.events] == [
        "down quality -> balanced: temperature (cpu) 85 °C >= 85 °C",
        "down balanced -> light: temperature (cpu) 88 °C >= 85 °C",
        ("up light -> balanced: clear for 10 s >= dwell 10 s (temperature (cpu) 62 °C <= 80 °C; free memory 20000 MB "
         ">= 2560 MB; latency 100 ms <= 200 ms)"),
        ("up balanced -> quality: clear for 10 s >= dwell 10 s (temperature (cpu) 62 °C <= 80 °C; free memory 20000 "
         "MB >= 2560 MB; latency 100 ms <= 200 ms)"),
    ]
    assert runs(tiers) == [("quality", 60), ("balanced", 4), ("light", 88), ("balanced", 25), ("quality", 23)]
    assert calls == ctl.events and ctl.events[0].time == 30.0 and isinstance(ctl.events[0], SwitchEvent)
    assert ctl.frames == 200 and ctl.tier.name == "quality"
    assert ctl.describe() == ("adaptive tiers ['quality', 'balanced', 'light'] on replay in-memory trace (200 "
                              "snapshots, by frame), direct sampling")


def test_measured_latency_steps_down_and_a_too_slow_tier_is_retried_ever_more_rarely():
    cool = [Telemetry(f * FRAME_S, temps_c={"cpu": 60.0}) for f in range(200)]
    ctl = AdaptiveController(ORIN, ReplayMonitor(cool))
    per_tier = {"quality": 400.0, "balanced": 180.0, "light": 90.0}
    tiers = stream(ctl, 200, per_tier.__getitem__)
    assert [(e.frame, e.to_tier) for e in ctl.events] == [
        (5, "balanced"),   # after the first 5 quality frames: median 400 ms > 250 ms
        (30, "quality"),   # balanced measured (frames 5-9), then clear 10 s
        (35, "balanced"),  # quality still too slow: that step up failed, the next dwell doubles
        (80, "quality"),   # 20 s
        (85, "balanced"),
        (170, "quality"),  # 40 s
        (175, "balanced"),
    ]
    assert ctl.events[0].reason == "down quality -> balanced: latency 400 ms > target 250 ms"
    assert ctl.events[3].reason == ("up balanced -> quality: clear for 20 s >= dwell 20 s (x2 after 1 failed step "
                                    "up) (temperature (cpu) 60 °C <= 80 °C; latency 180 ms <= 200 ms)")
    assert tiers.count("quality") == 5 + 3 * 5  # slow frames paid: 5 per retry
    assert ctl.state.backoff == 3


def test_latency_is_the_median_of_the_window_and_restarts_on_a_switch():
    ctl = AdaptiveController(ORIN, ReplayMonitor([Telemetry(0.0, temps_c={"cpu": 60.0})]))
    for ms in [100, 900, 120, 110]:  # one slow frame is not a trend
        ctl.before_frame()
        ctl.after_frame(ms)
        assert ctl.recent_latency_ms() is None  # not yet a full window of 5
    ctl.before_frame()
    ctl.after_frame(130)
    assert ctl.recent_latency_ms() == 120
    assert ctl.telemetry().latency_ms == 120
    for bad in [-1, float("nan"), "fast", True]:
        with pytest.raises(ConfigError, match="frame latency must be a finite number of ms >= 0"):
            ctl.after_frame(bad)


def test_a_failing_switch_callback_keeps_the_old_tier_and_is_retried():
    hot = [Telemetry(float(i), temps_c={"cpu": 95.0}) for i in range(10)]
    attempts = []

    def swap(event):
        attempts.append(event)
        if len(attempts) == 1:
            raise RuntimeError("engine for 'balanced' failed to load")

    ctl = AdaptiveController(ORIN, ReplayMonitor(hot), on_switch=swap)
    with pytest.raises(RuntimeError, match="failed to load"):
        ctl.before_frame()
    assert ctl.tier.name == "quality" and ctl.events == [] and ctl.frames == 0
    assert ctl.before_frame().name == "balanced"
    assert [(e.frame, e.to_tier) for e in ctl.events] == [(0, "balanced")] and len(attempts) == 2


def test_start_tier_and_opening_from_a_trace_file(tmp_path):
    path = save_trace(tmp_path / "t.json", [Telemetry(float(i), temps_c={"cpu": 60.0}) for i in range(3)])
    with AdaptiveController.open(ORIN, "replay", replay=path, start_tier="light") as ctl:
        assert ctl.tier.name == "light" and ctl.before_frame().name == "light"
        assert ctl.last_telemetry.source == "replay (t.json)" and ctl.last_telemetry.timestamp == 0.0
    with pytest.raises(ConfigError, match="no tier 'ultra'"):
        AdaptiveController(ORIN, ReplayMonitor([Telemetry(0.0)]), start_tier="ultra")


def test_background_sampling_on_this_machine_never_holds_up_a_frame():
    cpu = load_profile("cpu")
    with AdaptiveController(cpu, PsutilMonitor()) as ctl:
        sampler = ctl._sampler
        assert sampler is not None and sampler.running
        worst, tiers = 0.0, []
        for _ in range(50):
            start = time.perf_counter()
            tiers.append(ctl.before_frame().name)
            worst = max(worst, time.perf_counter() - start)
            ctl.after_frame(10.0)
        assert worst < 0.05, f"before_frame took {worst * 1000:.1f} ms"
        assert set(tiers) == {"balanced"} and ctl.events == []  # plenty of RAM, fast frames, no heat data
        assert ctl.last_telemetry.source == "psutil" and ctl.last_telemetry.mem_free_mb > 0
        assert "background sampling" in ctl.describe()
    assert not sampler.running


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Frozen:
    """A monitor whose one reading never gets newer (a hung sensor thread)."""

    def __init__(self):
        self.sampled = threading.Event()

    def sample(self):
        self.sampled.set()
        return Telemetry(0.0, temps_c={"cpu": 99.0}, source="frozen")

    def describe(self):
        return "frozen"

    def close(self):
        pass


def test_stale_background_telemetry_is_no_information():
    clock = FakeClock(1.0)
    ctl = AdaptiveController(ORIN, Frozen(), clock=clock)  # orin samples every 1 s: stale after 3 s
    try:
        assert ctl.before_frame().name == "balanced"  # 1 s old: fresh enough, and hot
        clock.now = 10.0
        t = ctl.telemetry()
        assert t.source == "stale: frozen, 10 s old" and t.temp_max_c is None and t.timestamp == 10.0
        assert ctl.before_frame().name == "balanced"  # neither down on old heat nor up on no data
        assert ctl.last_decision.reason == "holding balanced: no temperature reading (dropout); no step up without it"
    finally:
        ctl.close()
