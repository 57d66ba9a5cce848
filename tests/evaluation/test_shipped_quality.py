"""Golden test: the shipped ONNX files, run through the tiled runtime path, still score what their results record.

The recorded numbers (benchmarks/results/<name>/results.json) were made once by scripts/ship_weights.py when the
weights shipped; any change to the runtime, tiling, blending, image conversion or the evaluation protocol that moves
the shipped quality by more than 0.01 dB on Set5 fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mambaesr_runtime.artifacts.names import shipped_dir
from mambaesr_runtime.evaluation import benchmark
from mambaesr_runtime.profiles import load_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variant", ["student", "fast"])
def test_shipped_onnx_scores_what_it_recorded(variant, shared_data):
    tier = next(t for t in load_profile("cpu").tiers if t.variant == variant)
    onnx_path = shipped_dir() / f"{variant}_x4_t{tier.tile}_b{tier.batch}.onnx"
    recorded = json.loads((ROOT / "benchmarks" / "results" / f"{variant}_x4" / "results.json").read_text())
    assert recorded["model"].endswith(onnx_path.name), "results.json does not describe the shipped ONNX file"
    result = benchmark.evaluate(onnx_path, {"Set5": shared_data / "benchmarks" / "Set5"}, overlap=tier.overlap)
    assert result["sets"]["Set5"]["psnr"] == pytest.approx(recorded["sets"]["Set5"]["psnr"], abs=0.01)
    assert result["sets"]["Set5"]["ssim"] == pytest.approx(recorded["sets"]["Set5"]["ssim"], abs=1e-4)


def test_shipped_int8_onnx_scores_what_it_recorded_and_stays_within_the_bar(shared_data):
    """The shipped student's int8 QDQ graph (the cpu profile's int8 tier) through the runtime on Set5: what
    benchmarks/int8_quality.py recorded (0.01 dB), and within 0.10 dB of the fp32 graph's recorded score."""
    from mambaesr_runtime.artifacts.manifest import read_manifest

    tier = load_profile("cpu").tier("int8")
    onnx_path = shipped_dir() / f"{tier.variant}_x4_t{tier.tile}_b{tier.batch}_int8.onnx"
    recorded = json.loads((ROOT / "benchmarks" / "results" / "int8_quality.json").read_text())
    assert recorded["int8_sha256"] == read_manifest(onnx_path).artifact_sha256, "the record is of another int8 graph"
    result = benchmark.evaluate(onnx_path, {"Set5": shared_data / "benchmarks" / "Set5"}, overlap=tier.overlap)
    want = recorded["results"]["int8"]["sets"]["Set5"]
    assert result["sets"]["Set5"]["psnr"] == pytest.approx(want["psnr"], abs=0.01)
    assert result["sets"]["Set5"]["ssim"] == pytest.approx(want["ssim"], abs=1e-4)
    fp32 = recorded["results"]["fp32"]["sets"]["Set5"]["psnr"]
    assert fp32 - result["sets"]["Set5"]["psnr"] <= recorded["max_loss_db"] == 0.10
