"""Telemetry monitors: psutil on this machine, jtop against a stand-in service (absent, dying, back), NVML against a
fake pynvml, traces (JSON/CSV round trips, replay by frame and by time), and a sampler that never blocks."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from mambaesr_runtime.errors import ConfigError, DependencyError, MonitorError
from mambaesr_runtime.runtime import monitor as monitor_module
from mambaesr_runtime.runtime.monitor import (
    BackgroundSampler,
    JtopMonitor,
    Monitor,
    NvmlMonitor,
    PsutilMonitor,
    ReplayMonitor,
    Telemetry,
    TraceRecorder,
    load_trace,
    open_monitor,
    record_trace,
    save_trace,
    select_monitor,
)
from standins import jtop_standin
from standins.jtop_standin import SERVICE


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_service():
    SERVICE.reset()
    yield SERVICE
    SERVICE.reset()


# ------------------------------------------------------------------------------------------------ Telemetry


def test_snapshot_finds_the_hottest_sensor_and_round_trips_through_a_dict():
    t = Telemetry(12.5, temps_c={"cpu": 61.0, "gpu": 64.5}, power_w=9.5, power_rails_w={"VDD_IN": 9.5},
                  nvpmodel="15W", jetson_clocks=True, source="jtop")
    assert t.temp_max_c == 64.5 and t.hottest == "gpu"
    assert Telemetry.from_dict(t.to_dict()) == t
    assert Telemetry.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert Telemetry(1.0).hottest is None and Telemetry(1.0).temp_max_c is None


def test_snapshot_keeps_its_own_copy_of_the_sensor_dicts():
    temps = {"cpu": 50.0}
    t = Telemetry(1.0, temps_c=temps)
    temps["cpu"] = 99.0
    assert t.temps_c == {"cpu": 50.0} and t.temp_max_c == 50.0


@pytest.mark.parametrize("data, words", [
    ({"timestamp": 1, "temp": 50}, "unknown keys \\['temp'\\]; valid keys are \\['cpu_percent'"),
    ({"cpu_percent": 5}, "missing keys \\[.timestamp.\\]"),
    ({"timestamp": None}, "timestamp must be a number"),
    ({"timestamp": 1, "power_w": "high"}, "power_w must be a number or null, got 'high'"),
    ({"timestamp": 1, "temps_c": {"cpu": "hot"}}, "temps_c must map sensor names to numbers"),
    ({"timestamp": 1, "jetson_clocks": "yes"}, "jetson_clocks must be true, false or null"),
])
def test_snapshot_from_bad_dicts_names_the_problem(data, words):
    with pytest.raises(ConfigError, match=words):
        Telemetry.from_dict(data)


# ------------------------------------------------------------------------------------------------- psutil


def test_psutil_monitor_on_this_machine_returns_plausible_values():
    m = PsutilMonitor()
    assert isinstance(m, Monitor) and m.describe().startswith("psutil ")
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:  # some load, so the non-blocking cpu_percent has a period to measure
        sum(range(1000))
    a, b = m.sample(), m.sample()
    assert b.timestamp >= a.timestamp and a.source == "psutil"
    assert a.cpu_percent is not None and 0.0 <= a.cpu_percent <= 100.0
    total_mb = psutil.virtual_memory().total / 2**20
    assert a.mem_free_mb is not None and 1 < a.mem_free_mb <= total_mb
    if a.temps_c is not None:  # this machine may expose no sensors: then None, never junk
        assert all(-60 < v < 250 for v in a.temps_c.values()) and a.temp_max_c == max(a.temps_c.values())
    assert a.power_w is None and a.gpu_percent is None and a.latency_ms is None
    start = time.perf_counter()
    m.sample()
    assert time.perf_counter() - start < 0.1  # non-blocking: no cpu_percent interval


def test_psutil_fields_skip_junk_sensor_readings():
    entry = SimpleNamespace
    fake = SimpleNamespace(
        cpu_percent=lambda interval=None: 37.5,
        sensors_temperatures=lambda: {"thermal": [entry(label="", current=48.0), entry(label="bad", current=-256.0)],
                                      "coretemp": [entry(label="Package id 0", current=71.0)]},
        virtual_memory=lambda: SimpleNamespace(available=3 * 2**30))
    fields = monitor_module.psutil_fields(fake)
    assert fields == {"cpu_percent": 37.5, "temps_c": {"thermal/0": 48.0, "coretemp/Package id 0": 71.0},
                      "mem_free_mb": 3072.0}
    broken = SimpleNamespace(cpu_percent=lambda interval=None: 1 / 0, virtual_memory=lambda: 1 / 0)
    assert monitor_module.psutil_fields(broken) == {"cpu_percent": None, "temps_c": None, "mem_free_mb": None}


# --------------------------------------------------------------------------------------------------- jtop


def test_jtop_monitor_maps_every_documented_field():
    m = JtopMonitor(1.0, module=jtop_standin)
    t = m.sample()
    assert m.connected and t.source == "jtop" and m.describe() == "jtop (connected, interval 1 s)"
    assert t.temps_c == {"CPU": 52.5, "GPU": 50.0, "SOC0": 49.0, "tj": 53.0}  # offline PMIC (-256) left out
    assert t.temp_max_c == 53.0 and t.hottest == "tj"
    assert t.power_w == pytest.approx(7.8)
    assert t.power_rails_w == pytest.approx({"VDD_GPU_SOC": 3.6, "VDD_CPU_CV": 1.2, "VIN_SYS_5V0": 3.0})
    assert t.cpu_percent == pytest.approx(20.0)  # 100 - aggregate idle
    assert t.gpu_percent == 42.0 and t.gpu_freq_mhz == pytest.approx(918.0) and t.emc_freq_mhz == pytest.approx(2133)
    assert t.mem_free_mb == pytest.approx((7_620_000 - 3_500_000) / 1024)
    assert t.nvpmodel == "MAXN" and t.jetson_clocks is False
    SERVICE.readings.temps_c["GPU"] = 88.0
    SERVICE.readings.jetson_clocks = True
    t2 = m.sample()
    assert t2.temp_max_c == 88.0 and t2.hottest == "GPU" and t2.jetson_clocks is True
    m.close()
    assert not m.connected


@pytest.mark.parametrize("flavour", ["3", "stats-only"])
def test_jtop_monitor_reads_older_shapes_and_the_flat_stats_dict(flavour):
    SERVICE.reset(flavour)
    t = JtopMonitor(1.0, module=jtop_standin).sample()
    assert t.source == "jtop"
    assert t.temps_c == {"CPU": 52.5, "GPU": 50.0, "SOC0": 49.0, "tj": 53.0}
    assert t.power_w == pytest.approx(7.8) and t.gpu_percent == 42.0
    assert t.nvpmodel == "MAXN" and t.jetson_clocks is False
    if flavour == "stats-only":
        assert t.power_rails_w == pytest.approx({"VDD_GPU_SOC": 3.6, "VDD_CPU_CV": 1.2, "VIN_SYS_5V0": 3.0})
        assert t.cpu_percent == pytest.approx((12 + 30 + 18) / 3)  # mean of the online cores; CPU3 is 'OFF'
    # No RAM figure in MB from these: psutil's fills the gap (same machine, same RAM).
    assert t.mem_free_mb is not None and t.mem_free_mb > 0


def test_jtop_service_absent_at_start_gives_psutil_values_and_retries_with_backoff():
    SERVICE.die()
    clock = FakeClock(100.0)
    m = JtopMonitor(1.0, module=jtop_standin, clock=clock, backoff_s=1.0, max_backoff_s=8.0)  # never raises
    assert not m.connected and SERVICE.start_attempts == 1
    t = m.sample()
    assert t.source.startswith("psutil (jtop down: cannot connect: The jtop.service is not active.")
    assert t.power_w is None and t.gpu_percent is None and t.nvpmodel is None  # only jtop knows these
    assert t.cpu_percent is not None and t.mem_free_mb is not None  # psutil's
    assert "next try in 1 s" in m.describe()
    # Retries at 101, 103, 107, 115, then every 8 s (capped): doubling back-off.
    attempts = []
    for now in [100.5, 101, 102, 103, 106.9, 107, 114, 115, 122.9, 123, 131]:
        clock.now = now
        m.sample()
        attempts.append(SERVICE.start_attempts)
    assert attempts == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7]
    SERVICE.revive()
    clock.now = 139
    t = m.sample()
    assert m.connected and t.source == "jtop" and t.power_w == pytest.approx(7.8)


def test_jtop_service_dying_mid_run_never_raises_and_reconnects():
    clock = FakeClock(0.0)
    m = JtopMonitor(1.0, module=jtop_standin, clock=clock, backoff_s=2.0)
    assert m.sample().source == "jtop"
    SERVICE.die()
    clock.now = 1.0
    t = m.sample()  # the client's ok() raises "Lost connection": caught here
    assert t.source == "psutil (jtop down: lost the service: Lost connection with jtop server)"
    assert t.power_w is None and t.mem_free_mb is not None and not m.connected
    clock.now = 2.0
    SERVICE.revive()
    assert m.sample().source.startswith("psutil")  # back-off: next try at 1 + 2 s
    clock.now = 3.0
    t = m.sample()
    assert t.source == "jtop" and t.power_w == pytest.approx(7.8) and m.connects == 2
    assert not SERVICE.clients[0]._running  # the dead client was closed, a new one opened


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jetson-stats calls distro.linux_distribution
def test_the_real_jetson_stats_client_without_its_service_falls_back_to_psutil():
    """The installed jetson-stats (when it is, as on a developer's machine; CI's venv has none) against a machine
    with no jtop service: its real JtopException path, not the stand-in's."""
    real = pytest.importorskip("jtop")
    if Path("/run/jtop.sock").exists():
        pytest.skip("a jtop service runs here")
    m = JtopMonitor(0.5, module=real)
    t = m.sample()
    assert not m.connected and t.source.startswith("psutil (jtop down: cannot connect: The jtop.service is not active")
    assert t.mem_free_mb is not None and t.power_w is None
    m.close()


def test_jtop_monitor_without_jetson_stats_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)  # makes `import jtop` fail
    with pytest.raises(DependencyError, match="pip3 install -U jetson-stats"):
        JtopMonitor()


# --------------------------------------------------------------------------------------------------- NVML


def fake_pynvml(fail_init: bool = False):
    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    shut = []
    nv = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_CLOCK_GRAPHICS=0, shutdowns=shut,
        nvmlInit=init, nvmlShutdown=lambda: shut.append(1),
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i) if i == 0 else 1 / 0,
        nvmlDeviceGetName=lambda h: "NVIDIA H100 80GB HBM3",
        nvmlDeviceGetTemperature=lambda h, kind: 47,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=63, memory=20),
        nvmlDeviceGetClockInfo=lambda h, kind: 1755,
        nvmlDeviceGetPowerUsage=lambda h: 312_500,  # mW
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(free=60 * 2**30, total=80 * 2**30, used=20 * 2**30))
    return nv


def test_nvml_monitor_reads_the_gpu():
    nv = fake_pynvml()
    m = NvmlMonitor(module=nv)
    t = m.sample()
    assert t.source == "nvml" and m.describe() == "nvml (NVIDIA H100 80GB HBM3, index 0)"
    assert t.temps_c["gpu"] == 47 and t.gpu_percent == 63 and t.gpu_freq_mhz == 1755
    assert t.power_w == pytest.approx(312.5) and t.mem_free_mb == 60 * 1024
    assert t.cpu_percent is not None  # psutil's
    m.close()
    assert nv.shutdowns == [1]


def test_nvml_monitor_failures_name_the_fix(monkeypatch):
    with pytest.raises(MonitorError, match="is the NVIDIA driver installed"):
        NvmlMonitor(module=fake_pynvml(fail_init=True))
    with pytest.raises(MonitorError, match="NVML has no GPU 3"):
        NvmlMonitor(3, module=fake_pynvml())
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(DependencyError, match="pip install nvidia-ml-py"):
        NvmlMonitor()


# ------------------------------------------------------------------------------------------ choosing one


def test_auto_falls_back_to_psutil_and_says_why(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "jtop", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    m, why = select_monitor()
    assert isinstance(m, PsutilMonitor)
    assert why == ("psutil, the fallback; passed over jtop: jetson-stats is not installed; nvml: the NVML monitor "
                   "needs nvidia-ml-py: pip install nvidia-ml-py (the [nvml] extra), or use source='psutil'")
    with caplog.at_level("INFO", logger="mambaesr_runtime.runtime.monitor"):
        assert isinstance(open_monitor("auto"), PsutilMonitor)
    assert "telemetry source: psutil, the fallback" in caplog.text


def test_auto_prefers_jtop_when_its_service_answers_or_on_a_jetson(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", jtop_standin)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    m, why = select_monitor()
    assert isinstance(m, JtopMonitor) and m.connected and why == "jtop: the jtop service answers"
    SERVICE.die()
    monkeypatch.setattr(monitor_module.sources, "is_jetson", lambda: True)
    m, why = select_monitor()
    assert isinstance(m, JtopMonitor) and not m.connected  # a Jetson whose service is late: keep retrying it
    assert why.startswith("jtop: this is a Jetson; the service is not answering yet (cannot connect:")
    monkeypatch.setattr(monitor_module.sources, "is_jetson", lambda: False)
    m, why = select_monitor()
    assert isinstance(m, PsutilMonitor)
    assert why.startswith("psutil, the fallback; passed over jtop: installed, but its service is not running here")


def test_open_monitor_rejects_unknown_sources_and_a_replay_without_a_trace():
    with pytest.raises(ConfigError, match="valid values are \\['auto', 'jtop', 'nvml', 'psutil', 'replay'\\]"):
        open_monitor("tegrastats")
    with pytest.raises(ConfigError, match="a replay needs a trace file"):
        open_monitor("replay")


# ------------------------------------------------------------------------------------------------ traces


def trace(n: int = 4) -> list[Telemetry]:
    return [Telemetry(10.0 + 0.5 * i, temps_c={"cpu": 60.0 + i, "gpu": 58.25}, cpu_percent=10.0 * i,
                      power_w=None if i == 2 else 7.5 + i, power_rails_w={"VDD_IN": 7.5 + i}, mem_free_mb=2048.0,
                      nvpmodel="MAXN", jetson_clocks=i % 2 == 0, source="jtop") for i in range(n)]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_recorded_trace_round_trips_exactly(tmp_path, suffix):
    path = tmp_path / f"trace{suffix}"
    samples = record_trace(ReplayMonitor(trace()), path, count=4, interval_s=0.0)
    assert [s.source for s in samples] == ["replay (jtop)"] * 4
    assert load_trace(path) == samples
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temporary left behind
    if suffix == ".json":
        data = json.loads(path.read_text())
        assert data["format"] == "mambaesr-telemetry-trace" and data["version"] == 1
        assert data["monitor"].startswith("replay in-memory trace") and len(data["samples"]) == 4


def test_record_trace_from_psutil_sleeps_between_samples(tmp_path):
    slept = []
    samples = record_trace(PsutilMonitor(), tmp_path / "live.json", count=3, interval_s=0.25, sleep=slept.append)
    assert slept == [0.25, 0.25] and len(samples) == 3
    assert load_trace(tmp_path / "live.json") == samples


def test_recorder_saves_what_it_has_when_interrupted(tmp_path):
    class Interrupting:
        calls = 0

        def sample(self):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return Telemetry(float(self.calls), cpu_percent=5.0)

        def describe(self):
            return "interrupting"

    with pytest.raises(KeyboardInterrupt):
        record_trace(Interrupting(), tmp_path / "cut.json", count=10, interval_s=0.0)
    assert [s.timestamp for s in load_trace(tmp_path / "cut.json")] == [1.0, 2.0]


def test_a_hand_written_csv_trace_loads(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text("timestamp,temp:cpu,temp:gpu,power_w,jetson_clocks,nvpmodel\n0,50,55.5,,true,15W\n1,,,9.5,0,\n")
    a, b = load_trace(path)
    assert a == Telemetry(0.0, temps_c={"cpu": 50.0, "gpu": 55.5}, jetson_clocks=True, nvpmodel="15W")
    assert b == Telemetry(1.0, power_w=9.5, jetson_clocks=False)


@pytest.mark.parametrize("name, text, words", [
    ("t.json", '[{"timestamp": 2}, {"timestamp": 1}]', "timestamp of sample 1 \\(1.0\\) is before sample 0's"),
    ("t.json", "[]", "holds no samples"),
    ("t.json", "{nope", "not valid JSON"),
    ("t.json", '{"samples": 3}', "must be a list of snapshots"),
    ("t.json", '[{"timestamp": 0, "fan": 3}]', "sample 0: unknown keys \\['fan'\\]"),
    ("t.csv", "timestamp,fan\n0,1\n", "unknown columns \\['fan'\\]; valid columns are \\['timestamp'"),
    ("t.csv", "timestamp,power_w\n0,lots\n", "row 2: power_w is 'lots', not a number"),
    ("t.csv", "timestamp,jetson_clocks\n0,maybe\n", "valid values are true, false, 1, 0, empty"),
    ("t.yaml", "", "unknown format '.yaml'; valid suffixes are \\['.json', '.csv'\\]"),
])
def test_bad_traces_are_errors_that_say_what_is_wrong(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_trace(path)


def test_missing_trace_says_how_to_record_one(tmp_path):
    with pytest.raises(ConfigError, match="record one with mambaesr-monitor --record none.json"):
        ReplayMonitor(tmp_path / "none.json")


def test_replay_by_frame_plays_in_order_then_holds_or_loops():
    samples = trace(3)
    m = ReplayMonitor(samples)
    got = [m.sample() for _ in range(5)]
    assert [g.timestamp for g in got] == [10.0, 10.5, 11.0, 11.0, 11.0] and m.exhausted
    assert [g.temp_max_c for g in got] == [60.0, 61.0, 62.0, 62.0, 62.0]
    assert got[0].source == "replay (jtop)" and "3 snapshots, by frame" in m.describe()
    looped = ReplayMonitor(samples, loop=True)
    stamps = [looped.sample().timestamp for _ in range(7)]
    assert stamps == [10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0] and not looped.exhausted  # one gap at the seam
    assert [looped.samples.index(s) for s in samples] == [0, 1, 2]


def test_replay_by_time_follows_the_clock():
    clock = FakeClock(1000.0)
    m = ReplayMonitor(trace(3), mode="time", clock=clock)
    seen = []
    for now in [1000.0, 1000.4, 1000.5, 1000.99, 1001.0, 1005.0]:
        clock.now = now
        s = m.sample()
        seen.append((s.temp_max_c, s.timestamp))
    assert seen == [(60.0, 1000.0), (60.0, 1000.0), (61.0, 1000.5), (61.0, 1000.5), (62.0, 1001.0), (62.0, 1001.0)]
    assert m.exhausted
    with pytest.raises(ConfigError, match="valid values are \\['frame', 'time'\\]"):
        ReplayMonitor(trace(), mode="wall")


def test_trace_recorder_writes_csv_with_one_column_per_sensor(tmp_path):
    rec = TraceRecorder(tmp_path / "t.csv")
    for s in trace(2):
        rec.add(s)
    rec.save()
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["temp:cpu", "temp:gpu", "rail:VDD_IN"] and header[0] == "timestamp"
    with pytest.raises(ConfigError, match="valid suffixes"):
        save_trace(tmp_path / "t.txt", trace(1))


# ------------------------------------------------------------------------------------------------ sampler


class SlowMonitor:
    """Each sample takes ``delay`` seconds (a jtop reconnect, a slow sensor bus)."""

    def __init__(self, delay: float):
        self.delay, self.calls, self.inside = delay, 0, threading.Event()

    def sample(self) -> Telemetry:
        self.calls += 1
        self.inside.set()
        time.sleep(self.delay)
        return Telemetry(time.monotonic(), cpu_percent=float(self.calls), source="slow")

    def describe(self) -> str:
        return "slow"

    def close(self) -> None:
        pass


def test_sampler_latest_never_waits_for_a_slow_sample():
    slow = SlowMonitor(0.3)
    with BackgroundSampler(slow, interval_s=0.01) as sampler:
        assert sampler.wait_first(2.0)
        first = sampler.latest()
        slow.inside.clear()
        assert slow.inside.wait(2.0)  # the sampler is now inside a 0.3 s sample
        worst = 0.0
        for _ in range(1000):
            start = time.perf_counter()
            snap = sampler.latest()
            worst = max(worst, time.perf_counter() - start)
        assert worst < 0.01, f"latest() took {worst * 1000:.1f} ms while a sample was in progress"
        assert snap.cpu_percent >= first.cpu_percent  # the last finished sample, not a half-made one
    assert not sampler.running  # stop waited for the sample in progress, then the thread ended


def test_sampler_survives_a_monitor_that_raises_and_stops_promptly():
    class Flaky:
        calls = 0

        def sample(self):
            self.calls += 1
            if self.calls % 2 == 0:
                raise RuntimeError("sensor bus error")
            return Telemetry(time.monotonic(), cpu_percent=float(self.calls))

        def describe(self):
            return "flaky"

    flaky = Flaky()
    sampler = BackgroundSampler(flaky, interval_s=0.005)
    assert sampler.latest().source == "no sample yet" and sampler.latest().cpu_percent is None
    sampler.start()
    deadline = time.monotonic() + 5
    while flaky.calls < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    start = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - start < 1.0 and not sampler.running
    assert sampler.errors >= 2 and sampler.samples >= 3
    assert sampler.latest().cpu_percent % 2 == 1  # always the last good sample


def test_sampler_rejects_a_zero_interval():
    with pytest.raises(ConfigError, match="must be > 0 s"):
        BackgroundSampler(PsutilMonitor(), 0)
