"""mambaesr-train: the whole pipeline end to end on a small budget, summary, resume, and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mambaesr_runtime.cli.train import main, parse_duration


@pytest.mark.usefixtures("needs_torch")
def test_pipeline_runs_end_to_end_and_leaves_complete_records(tmp_path, shared_data, capsys):
    bench = shared_data / "benchmarks"
    # steps end it; the budget only guards a loaded machine (2m gave the last stage 1 step next to two training runs)
    argv = ["pipeline", "--variant", "tiny", "--teacher-variant", "tiny", "--steps", "6", "--eval-every", "3",
            "--max-images", "3", "--patch", "12", "--batch", "2", "--val-max-images", "1",
            "--train-dir", str(shared_data / "train" / "T91"), "--val-dir", str(bench / "Set5"),
            "--eval-dir", str(bench / "Set5"), "--eval-dir", str(bench / "Set14"),
            "--runs", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--time-budget", "10m"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Each stage reports its best validated checkpoint: step 3 or step 6.
    assert re.search(r"\| student \| [36] \|", out) and re.search(r"\| fast \| [36] \|", out), out
    pipeline = next(tmp_path.glob("pipeline_*"))
    stages = json.loads((pipeline / "stages.json").read_text())
    assert set(stages) == {"teacher", "student", "fast"}
    student_cfg = json.loads((Path(stages["student"]) / "config.json").read_text())["train"]
    assert student_cfg["teacher"].startswith(stages["teacher"])  # distilled from this pipeline's teacher
    evaluation = json.loads((pipeline / "metrics.json").read_text())["evaluation"]
    assert set(evaluation["student"]["sets"]) == {"Set5", "Set14"}

    assert main(["summary", "--runs", str(tmp_path)]) == 0
    assert "latest average PSNR" in capsys.readouterr().out


@pytest.mark.usefixtures("needs_torch")
def test_resume_from_the_cli(tmp_path, shared_data, capsys):
    common = ["--variant", "tiny", "--steps", "4", "--eval-every", "2", "--max-images", "2", "--patch", "12",
              "--batch", "2", "--train-dir", str(shared_data / "train" / "T91"),
              "--val-dir", str(shared_data / "benchmarks" / "Set5"), "--val-max-images", "1",
              "--runs", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    assert main(["teacher", *common, "--time-budget", "0.01s"]) == 0
    assert "stopped: time budget at step 0" in capsys.readouterr().out
    assert main(["resume", str(tmp_path / "latest")]) == 0
    assert "run record:" in capsys.readouterr().out
    metrics = json.loads(((tmp_path / "latest").resolve() / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["stopped"] == "finished"


@pytest.mark.usefixtures("needs_torch")
def test_errors_exit_non_zero_with_the_reason(tmp_path, capsys):
    assert main(["student", "--train-dir", str(tmp_path / "missing"), "--runs", str(tmp_path)]) == 2
    assert "image folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no run folder left behind
    data = tmp_path.parent / "synthetic"  # made here: this test must run without ../shared too
    for seed, folder in enumerate(("train", "Set5/HR")):  # two different images (a copy would be refused)
        (data / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / folder / "a.png"), np.random.default_rng(seed).integers(0, 256, (64, 64, 3), np.uint8))
    assert main(["student", "--perceptual-weight", "0.1", "--train-dir", str(data / "train"),
                 "--val-dir", str(data / "Set5"), "--guard-dir", str(data / "Set5"),
                 "--runs", str(tmp_path), "--cache-dir", str(tmp_path.parent / "lr_cache")]) == 2
    assert "nothing is downloaded" in capsys.readouterr().err and not list(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:
        main(["student", "--time-budget", "soon"])
    assert exc.value.code == 2
    assert main(["summary", "--runs", str(tmp_path / "none")]) == 2


def test_durations():
    assert parse_duration("25m") == 1500 and parse_duration("1.5h") == 5400 and parse_duration("90") == 90
