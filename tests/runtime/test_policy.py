"""The tier policy on scripted traces (exact tier sequences and reasons) and, with hypothesis, on noisy and arbitrary
signals: it never flaps, never steps up on missing data, and never crashes.

Thresholds are the built-in ``orin`` profile's: tiers quality > balanced > light; temperature 85 °C (clear at
<= 80), power 50 W (clear at <= 45), free memory 2048 MB (clear at >= 2560), latency 250 ms (clear at <= 200);
step down at most every 2 s, step up after 10 s clear and 10 s on the tier (doubled after each failed step up).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.monitor import Telemetry
from mambaesr_runtime.runtime.policy import PolicyState, TierPolicy

ORIN = load_profile("orin")
TH = ORIN.telemetry


def run(policy: TierPolicy, samples: list[Telemetry], start: int | str = 0) -> list[tuple[float, str, str]]:
    """(timestamp, tier, reason) for each sample, threading the state through."""
    state, rows = policy.initial_state(start), []
    for t in samples:
        d = policy.decide(t, state)
        assert d.state.tier == d.index and d.tier == policy.tiers[d.index]
        state = d.state
        rows.append((t.timestamp, d.tier.name, d.reason))
    return rows


def switches(rows, start: str = "quality") -> list[tuple[float, str, str]]:
    out, tier = [], start
    for ts, name, reason in rows:
        if name != tier:
            out.append((ts, name, reason))
            tier = name
    return out


def tiers_by_second(rows) -> str:
    """The tier at each sample as one letter (q, b, l): a whole run at a glance."""
    return "".join(name[0] for _, name, _ in rows)


def temps(values) -> list[Telemetry]:
    return [Telemetry(float(i), temps_c=None if v is None else {"cpu": v}) for i, v in enumerate(values)]


def test_thermal_ramp_steps_down_twice_then_recovers_one_tier_per_dwell():
    values = [70] * 5 + [80, 84.9, 85, 87, 88] + [90] * 5 + [84] + [80] * 30
    rows = run(TierPolicy(ORIN), temps(values))
    assert switches(rows) == [
        (7.0, "balanced", "down quality -> balanced: temperature (cpu) 85 °C >= 85 °C"),
        (9.0, "light", "down balanced -> light: temperature (cpu) 88 °C >= 85 °C"),
        (26.0, "balanced", "up light -> balanced: clear for 10 s >= dwell 10 s (temperature (cpu) 80 °C <= 80 °C)"),
        (36.0, "quality", "up balanced -> quality: clear for 20 s >= dwell 10 s (temperature (cpu) 80 °C <= 80 °C)"),
    ]
    assert tiers_by_second(rows) == "q" * 7 + "bb" + "l" * 17 + "b" * 10 + "q" * 10
    reasons = {ts: reason for ts, _, reason in rows}
    assert reasons[0.0] == "on quality, the heaviest tier: temperature (cpu) 70 °C <= 80 °C"
    assert reasons[6.0] == "holding quality: temperature (cpu) 84.9 °C (clear at <= 80 °C)"
    assert reasons[8.0] == ("holding balanced: temperature (cpu) 87 °C >= 85 °C; 1 s on this tier, next step down "
                            "after 2 s")
    assert reasons[12.0] == "holding light, the lightest tier: temperature (cpu) 90 °C >= 85 °C"
    assert reasons[15.0] == "holding light: temperature (cpu) 84 °C (clear at <= 80 °C)"
    assert reasons[20.0] == "holding light: clear for 4 s of the 10 s dwell (temperature (cpu) 80 °C <= 80 °C)"
    assert reasons[30.0] == "holding balanced: clear for 4 s of the 10 s dwell (temperature (cpu) 80 °C <= 80 °C)"


def test_a_device_that_starts_hot_steps_down_at_once():
    rows = run(TierPolicy(ORIN), temps([95, 95, 95, 95]))
    assert tiers_by_second(rows) == "bbll"
    assert rows[0][2] == "down quality -> balanced: temperature (cpu) 95 °C >= 85 °C"


def test_power_spike_steps_down_and_back_after_a_full_dwell_without_a_blip():
    watts = [30] * 5 + [62, 55, 48] + [40] * 5 + [47] + [40] * 15
    rows = run(TierPolicy(ORIN), [Telemetry(float(i), power_w=w) for i, w in enumerate(watts)])
    assert switches(rows) == [
        (5.0, "balanced", "down quality -> balanced: power 62 W > budget 50 W"),
        # Clear from 8; the 47 W blip at 13 is inside the margin (not clear), so the dwell restarts at 14.
        (24.0, "quality", "up balanced -> quality: clear for 10 s >= dwell 10 s (power 40 W <= 45 W)"),
    ]
    assert rows[6][2] == "holding balanced: power 55 W > budget 50 W; 1 s on this tier, next step down after 2 s"
    assert rows[7][2] == "holding balanced: power 48 W (clear at <= 45 W)"
    assert rows[12][2] == "holding balanced: clear for 4 s of the 10 s dwell (power 40 W <= 45 W)"
    assert rows[13][2] == "holding balanced: power 47 W (clear at <= 45 W)"
    assert tiers_by_second(rows) == "q" * 5 + "b" * 19 + "q" * 5


def test_memory_squeeze_steps_down_to_the_lightest_and_needs_the_margin_to_recover():
    free = [4000] * 3 + [1800, 1500, 1200] + [2200] * 4 + [3000] * 25
    rows = run(TierPolicy(ORIN), [Telemetry(float(i), mem_free_mb=m) for i, m in enumerate(free)])
    assert switches(rows) == [
        (3.0, "balanced", "down quality -> balanced: free memory 1800 MB < floor 2048 MB"),
        (5.0, "light", "down balanced -> light: free memory 1200 MB < floor 2048 MB"),
        (20.0, "balanced", "up light -> balanced: clear for 10 s >= dwell 10 s (free memory 3000 MB >= 2560 MB)"),
        (30.0, "quality", "up balanced -> quality: clear for 20 s >= dwell 10 s (free memory 3000 MB >= 2560 MB)"),
    ]
    assert rows[4][2] == ("holding balanced: free memory 1500 MB < floor 2048 MB; 1 s on this tier, next step down "
                          "after 2 s")
    assert rows[8][2] == "holding light: free memory 2200 MB (clear at >= 2560 MB)"


def test_sensor_dropout_holds_the_tier_and_restarts_the_dwell():
    values = [90] + [None] * 30 + [70] * 5 + [None] + [70] * 15
    rows = run(TierPolicy(ORIN), temps(values))
    assert switches(rows) == [
        (0.0, "balanced", "down quality -> balanced: temperature (cpu) 90 °C >= 85 °C"),
        # Clear from 31, a dropout at 36 (no information) restarts the clock at 37: up at 47, not 41.
        (47.0, "quality", "up balanced -> quality: clear for 10 s >= dwell 10 s (temperature (cpu) 70 °C <= 80 °C)"),
    ]
    assert rows[1][2] == "holding balanced: no temperature reading (dropout); no step up without it"
    assert rows[36][2] == rows[1][2]
    assert tiers_by_second(rows) == "b" * 47 + "q" * 5


def test_missing_data_alone_never_steps_up_and_never_steps_down():
    policy = TierPolicy(ORIN)
    rows = run(policy, [Telemetry(float(i)) for i in range(100)], start="light")
    assert {name for _, name, _ in rows} == {"light"}
    assert rows[-1][2] == "holding light: no telemetry for any watched signal"
    rows = run(policy, [Telemetry(float(i), cpu_percent=100.0, gpu_percent=100.0) for i in range(50)])
    assert {name for _, name, _ in rows} == {"quality"}  # unwatched signals decide nothing


def test_latency_target_missed_steps_down_and_a_failed_step_up_doubles_the_next_dwell():
    # The controller reports None while it refills its latency window after a switch.
    lat = ([None] * 5 + [300] + [None] * 5 + [220] + [180] * 11 + [None] * 5 + [320] + [None] * 5 + [180] * 25
           + [190] * 22)
    policy = TierPolicy(ORIN)
    samples = [Telemetry(float(i), latency_ms=v) for i, v in enumerate(lat)]
    rows = run(policy, samples)
    assert switches(rows) == [
        (5.0, "balanced", "down quality -> balanced: latency 300 ms > target 250 ms"),
        (22.0, "quality", "up balanced -> quality: clear for 10 s >= dwell 10 s (latency 180 ms <= 200 ms)"),
        # Quality is too slow again 6 s after the step up: that step up failed, so the next one waits 20 s.
        (28.0, "balanced", "down quality -> balanced: latency 320 ms > target 250 ms"),
        (54.0, "quality", ("up balanced -> quality: clear for 20 s >= dwell 20 s (x2 after 1 failed step up) "
                           "(latency 180 ms <= 200 ms)")),
    ]
    assert rows[0][2] == "holding quality: no telemetry for any watched signal"
    assert rows[6][2] == "holding balanced: latency not measured on this tier yet; no step up without it"
    assert rows[11][2] == "holding balanced: latency 220 ms (clear at <= 200 ms)"
    assert rows[44][2] == ("holding balanced: clear for 10 s of the 20 s (x2 after 1 failed step up) dwell "
                           "(latency 180 ms <= 200 ms)")
    state = policy.initial_state()
    backoffs = []
    for t in samples:
        state = policy.decide(t, state).state
        backoffs.append(state.backoff)
    assert backoffs[27] == 0 and backoffs[28] == 1 and backoffs[73] == 1
    assert backoffs[74] == 0  # quality has now held for 20 s: the step up proved itself


def test_back_off_doubles_up_to_eight_times_the_dwell():
    """A tier that always runs too hot: retried after 10, 20, 40, 80, 80 s of calm."""
    policy = TierPolicy(ORIN)
    state, now, ups = policy.initial_state("balanced"), 0.0, []
    for _ in range(5):
        for _ in range(1000):
            now += 1.0
            d = policy.decide(Telemetry(now, temps_c={"cpu": 60.0}), state)
            state = d.state
            if d.switched:
                ups.append(now)
                break
        else:
            pytest.fail(f"no step up within 1000 s after {ups}")
        now += 2.0  # hot again 2 s after the step up (step_down_s): back down, the step up failed
        d = policy.decide(Telemetry(now, temps_c={"cpu": 95.0}), state)
        assert d.tier.name == "balanced"
        state = d.state
    # Clear again 1 s after each step down, then up after the (backed-off) dwell.
    assert ups[0] == 11.0  # clear from the first sample at 1 s
    assert [b - a for a, b in zip(ups, ups[1:])] == [2 + 1 + 20, 2 + 1 + 40, 2 + 1 + 80, 2 + 1 + 80]
    assert state.backoff == 3


def test_several_pressures_are_all_named_and_still_move_one_tier():
    rows = run(TierPolicy(ORIN), [Telemetry(0.0, temps_c={"gpu": 90}, power_w=60, mem_free_mb=1000)])
    assert rows == [(0.0, "balanced", ("down quality -> balanced: temperature (gpu) 90 °C >= 85 °C; power 60 W > "
                                       "budget 50 W; free memory 1000 MB < floor 2048 MB"))]


def test_a_signal_the_profile_does_not_watch_is_ignored():
    cpu = load_profile("cpu")  # power_w: null
    rows = run(TierPolicy(cpu), [Telemetry(float(i), power_w=1000.0, mem_free_mb=8000.0) for i in range(5)])
    assert {name for _, name, _ in rows} == {"balanced"}
    assert rows[0][2] == "on balanced, the heaviest tier: free memory 8000 MB >= 1280 MB"


def test_start_tier_by_name_and_bad_start_tiers():
    policy = TierPolicy(ORIN)
    assert policy.initial_state("light") == PolicyState(tier=2, entered_at=None)
    with pytest.raises(ConfigError, match="no tier 'ultra'; its tiers are \\['quality', 'balanced', 'light'\\]"):
        policy.initial_state("ultra")
    with pytest.raises(ConfigError, match="outside profile 'orin'"):
        policy.initial_state(3)


def test_decisions_are_pure():
    policy, state = TierPolicy(ORIN), TierPolicy(ORIN).initial_state()
    t = Telemetry(3.0, temps_c={"cpu": 99.0})
    assert policy.decide(t, state) == policy.decide(t, state)
    assert state == PolicyState(tier=0, entered_at=None)  # the input state is untouched (frozen)


# ------------------------------------------------------------------------------------------------ properties

gaps = st.one_of(st.sampled_from([0.5, 1.0, 2.0]), st.floats(min_value=0.01, max_value=4.0, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(gaps, st.floats(min_value=-0.999, max_value=1.0)), min_size=1, max_size=300),
       st.integers(min_value=0, max_value=2))
def test_noise_around_the_threshold_never_flaps(samples, start):
    """Temperature anywhere inside (threshold - margin, threshold + margin]: only step-downs, each at least
    step_down_s apart, at most one per tier; never a step back up."""
    policy, now, rows = TierPolicy(ORIN), 0.0, []
    trace = []
    for gap, noise in samples:
        now += gap
        trace.append(Telemetry(now, temps_c={"cpu": TH.temp_c + noise * TH.temp_hysteresis_c}))
    rows = run(policy, trace, start)
    idx = [policy.tiers.index(ORIN.tier(name)) for _, name, _ in rows]
    assert all(b >= a for a, b in zip([start] + idx, idx)), "stepped up on noise"
    moves = [rows[i][0] for i in range(len(rows)) if idx[i] != ([start] + idx)[i]]
    assert len(moves) <= len(ORIN.tiers) - 1 - start
    assert all(b - a >= TH.step_down_s for a, b in zip(moves, moves[1:]))


# Signals in regimes, so that long clear stretches (where step-ups happen), pressure, the hysteresis band and
# dropouts all occur: independent values per sample would almost never stay clear for a whole dwell.
REGIMES = {  # regime -> (temperature, power, free memory, latency) ranges; None: missing
    "clear": ((40, 80), (5, 45), (2560, 8000), (50, 200)),
    "band": ((80.01, 84.99), (45.01, 50), (2048, 2559.99), (200.01, 250)),
    "pressure": ((85, 100), (50.01, 70), (500, 2047.99), (250.01, 600)),
}


@st.composite
def regime_trace(draw):
    trace, now = [], 0.0
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        regime = draw(st.sampled_from([*REGIMES, "dropout", "mixed", "flicker"]))
        for _ in range(draw(st.integers(min_value=1, max_value=40))):
            now += draw(gaps)
            values = []
            # flicker: clear, but now and then one signal slips back into the band (that must restart the dwell)
            slip = draw(st.integers(min_value=0, max_value=15)) if regime == "flicker" else None
            for k in range(4):
                if regime == "mixed":
                    pick = draw(st.sampled_from([*REGIMES, "dropout"]))
                elif regime == "flicker":
                    pick = "band" if slip == k else "clear"
                else:
                    pick = regime
                if pick == "dropout" and draw(st.booleans()):
                    values.append(None)
                else:
                    lo, hi = REGIMES["clear" if pick == "dropout" else pick][k]
                    values.append(draw(st.floats(min_value=lo, max_value=hi, allow_nan=False)))
            temp, power, mem, lat = values
            trace.append(Telemetry(now, temps_c=None if temp is None else {"soc": temp}, power_w=power,
                                   mem_free_mb=mem, latency_ms=lat))
    return trace


def clear_now(t: Telemetry, seen: set) -> bool:
    """Independent oracle: every watched signal present is back by its margin, no seen signal is missing, and at
    least one is present."""
    values = {"temperature": t.temp_max_c, "power": t.power_w, "memory": t.mem_free_mb, "latency": t.latency_ms}
    present = {k: v for k, v in values.items() if v is not None}
    if not present or any(k not in present for k in seen):
        return False
    ok = {"temperature": lambda v: v <= TH.temp_c - TH.temp_hysteresis_c,
          "power": lambda v: v <= TH.power_w - TH.power_hysteresis_w,
          "memory": lambda v: v >= TH.mem_free_mb + TH.mem_hysteresis_mb,
          "latency": lambda v: v <= TH.latency_ms - TH.latency_hysteresis_ms}
    return all(ok[k](v) for k, v in present.items())


@settings(max_examples=200, deadline=None)
@given(regime_trace(), st.integers(min_value=0, max_value=2))
def test_arbitrary_signals_respect_every_switch_bound(trace, start):
    policy = TierPolicy(ORIN)
    rows = run(policy, trace, start)  # never raises
    idx = [start] + [policy.tiers.index(ORIN.tier(name)) for _, name, _ in rows]
    seen: set = set()
    clear_run_start = None
    last_switch = -math.inf
    ups = []
    for k, t in enumerate(trace):
        seen |= {name for name, v in (("temperature", t.temp_max_c), ("power", t.power_w),
                                      ("memory", t.mem_free_mb), ("latency", t.latency_ms)) if v is not None}
        clear = clear_now(t, seen)
        clear_run_start = (clear_run_start if clear_run_start is not None else t.timestamp) if clear else None
        step = idx[k + 1] - idx[k]
        assert step in (-1, 0, 1), "moved more than one tier"
        if step == -1:  # up
            assert clear and t.timestamp - clear_run_start >= TH.dwell_s, "stepped up before a full clear dwell"
            assert t.timestamp - last_switch >= TH.dwell_s, "stepped up too soon after a switch"
            ups.append(t.timestamp)
        if step == 1:
            assert t.timestamp - last_switch >= TH.step_down_s, "stepped down too soon after a switch"
            assert not clear
        if step:
            last_switch = t.timestamp
    # At most one step up in any dwell window.
    assert all(b - a >= TH.dwell_s for a, b in zip(ups, ups[1:]))
