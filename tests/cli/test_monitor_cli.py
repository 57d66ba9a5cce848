"""mambaesr-monitor: replayed and live (psutil) runs with --count, recording, the panel, and bad arguments.

(Named ``test_monitor_cli.py``: ``tests/`` has no ``__init__.py`` files, so two ``test_monitor.py`` modules would
collide in pytest's default import mode.)
"""

from __future__ import annotations

import re

import pytest

from mambaesr_runtime.cli.monitor import main, panel
from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.monitor import Telemetry, load_trace, save_trace
from mambaesr_runtime.runtime.policy import TierPolicy


@pytest.fixture
def hot_trace(tmp_path):
    temps = [70, 90, 90, 90, 91, 84, 79]
    return save_trace(tmp_path / "hot.json",
                      [Telemetry(float(i), temps_c={"soc": c}, mem_free_mb=4000.0, source="jtop")
                       for i, c in enumerate(temps)])


def tiers(out: str) -> list[str]:
    return re.findall(r"tier=(\w+)", out)


def test_replay_runs_to_the_end_of_the_trace(hot_trace, capsys):
    assert main(["--device", "orin", "--replay", str(hot_trace)]) == 0
    out, err = capsys.readouterr()
    assert tiers(out) == ["quality", "balanced", "balanced", "light", "light", "light", "light"]
    lines = out.splitlines()
    assert lines[1] == ("#2 t=1.0s temp=90.0 power=-- free_mb=4000 cpu=-- gpu=-- tier=balanced | down quality -> "
                        "balanced: temperature (soc) 90 °C >= 85 °C")
    assert lines[5].endswith("holding light: temperature (soc) 84 °C (clear at <= 80 °C)")
    assert err.startswith("telemetry: replay hot.json (7 snapshots, by frame)")


def test_count_past_the_end_of_a_replay_holds_the_last_snapshot(hot_trace, capsys):
    assert main(["--device", "orin", "--replay", str(hot_trace), "--count", "9", "--start-tier", "light"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 9 and out.splitlines()[-1].startswith("#9 t=6.0s temp=79.0")
    assert set(tiers(out)) == {"light"}


def test_psutil_run_with_count_records_a_trace(tmp_path, capsys):
    path = tmp_path / "live.json"
    assert main(["--telemetry", "psutil", "--count", "3", "--interval", "0.01", "--record", str(path)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and tiers(out) == ["balanced"] * 3  # the cpu profile's heaviest tier
    assert re.search(r"free_mb=\d+ cpu=\d+", out)
    assert f"recorded 3 samples to {path}" in err
    samples = load_trace(path)
    assert len(samples) == 3 and all(s.source == "psutil" and s.mem_free_mb > 0 for s in samples)
    assert [s.timestamp for s in samples] == sorted(s.timestamp for s in samples)


def test_the_panel_shows_every_reading_against_its_threshold():
    orin = load_profile("orin")
    policy = TierPolicy(orin)
    t = Telemetry(5.0, temps_c={"tj": 86.5, "cpu": 80.0}, power_w=31.25, power_rails_w={"VDD_GPU": 20.0},
                  mem_free_mb=6000.0, cpu_percent=55.0, gpu_percent=97.0, gpu_freq_mhz=1300.0, emc_freq_mhz=3199.0,
                  nvpmodel="MAXN", jetson_clocks=True, source="jtop")
    d = policy.decide(t, policy.initial_state())
    lines = panel(orin, t, d, 0, 10, "jtop")
    assert lines == [
        "mambaesr-monitor  device orin  source jtop  sample 1/10",
        "  temperature   86.5 °C (tj)             [step down at 85 °C]",
        "  power         31.25 W                  [budget 50 W]  VDD_GPU 20.0 W",
        "  free memory   6000 MB                  [floor 2048 MB]",
        "  cpu / gpu     55 % / 97 %              gpu 1300 MHz  emc 3199 MHz",
        "  power mode    nvpmodel MAXN  jetson_clocks on",
        "  tier          balanced (student, tile 64, batch 8)",
        "  why           down quality -> balanced: temperature (tj) 86.5 °C >= 85 °C",
    ]


@pytest.mark.parametrize("argv, words", [
    (["--replay", "none.json"], "error: trace none.json not found; record one with mambaesr-monitor --record"),
    (["--device", "jetson-tx1", "--count", "1"], "error: unknown device 'jetson-tx1'; built-in devices are"),
    (["--telemetry", "psutil", "--count", "1", "--record", "trace.txt"], "give a .json or .csv file name"),
    (["--telemetry", "psutil", "--start-tier", "ultra", "--count", "1"], "no tier 'ultra'; its tiers are"),
    # Before: these failed only at save time, after the whole session, losing the samples.
    (["--telemetry", "psutil", "--count", "1", "--record", "/proc/r.json"], "cannot create files in /proc"),
    (["--telemetry", "psutil", "--count", "1", "--record", "no/such/r.json"], "the folder no/such does not exist"),
    (["--telemetry", "psutil", "--count", "1", "--record", "."], "give a .json or .csv file name"),
])
def test_bad_arguments_exit_2_with_the_fix(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mambaesr_runtime.runtime.monitor.PsutilMonitor.sample",
                        lambda self: pytest.fail("sampled before the arguments were checked"))
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [["--source", "tegrastats"], ["--count", "0"], ["--interval", "-1"],
                                  ["--device", "orin", "--profile", "x.yaml"]])
def test_unparseable_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["nan", "inf", "-inf", "0", "-1", "-0.5"])
def test_an_interval_that_is_not_a_pause_is_refused(interval, capsys, monkeypatch):
    """Before: nan and inf were accepted (time.sleep(nan) raised ValueError after the first sample, inf never woke
    up) and 0 sampled a live source in a busy loop."""
    import mambaesr_runtime.runtime.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "open_monitor", lambda *a, **k: pytest.fail("a source was opened"))
    with pytest.raises(SystemExit) as exc:
        main(["--telemetry", "psutil", "--count", "2", f"--interval={interval}"])  # = : "-inf" is no flag
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "--interval must be a finite number of seconds above 0 (e.g. 0.5; 0 only with --replay" in err
    assert f"got {float(interval)}" in err


def test_the_old_source_flag_still_works_and_says_it_is_now_telemetry(capsys):
    """mambaesr-run and mambaesr-monitor name the telemetry source the same way (--telemetry); --source stays."""
    assert main(["--source", "psutil", "--count", "1"]) == 0
    assert "note: --source is now called --telemetry" in capsys.readouterr().err
    assert main(["--telemetry", "psutil", "--count", "1"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_library_errors_show_this_commands_flags(capsys):
    from mambaesr_runtime.cli.flags import for_cli

    assert main(["--telemetry", "replay", "--count", "1"]) == 2  # a replay source without a trace file
    assert "(--replay trace.json)" in capsys.readouterr().err
    assert for_cli("pass overwrite=True or raise max_output_megapixels; use source='psutil'",
                   {"overwrite": "--overwrite", "max_output_megapixels": "--max-megapixels",
                    "source": "--telemetry"}) == "pass --overwrite or raise --max-megapixels; use --telemetry psutil"
