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
