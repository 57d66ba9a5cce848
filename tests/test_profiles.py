"""Device profiles: every built-in loads and is coherent; bad files get errors that list the valid values."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.model.config import PARAM_BUDGETS, VARIANTS
from mambaesr_runtime.profiles import builtin_profiles, load_profile

EXPECTED = {"orin": "10", "orin-nano": "10", "xavier-nx": "8.5", "agx-xavier": "8.5", "rpi5": None, "cpu": None,
            "cuda": "10"}


def test_all_builtin_devices_load_with_their_tensorrt_target():
    assert set(builtin_profiles()) == set(EXPECTED)
    for name, trt in EXPECTED.items():
        p = load_profile(name)
        assert p.name == name and p.tensorrt == trt
        assert p.opset <= 17  # TensorRT 8.5 parses up to opset 17; one opset everywhere keeps artifacts comparable
        assert ("tensorrt" in p.backends) == (trt is not None)
        for tier in p.tiers:
            assert tier.variant in VARIANTS and tier.tile % 8 == 0 and 2 * tier.overlap < tier.tile
        assert p.tiers[-1].variant == "fast"  # every device can fall back to the light tier


def test_rpi5_runs_onnxruntime_cpu_with_4_threads():
    p = load_profile("rpi5")
    assert p.backends == ("onnxruntime",) and p.ort_providers == ("CPUExecutionProvider",)
    assert p.threads == 4 and p.precision == "fp32"
    assert all(PARAM_BUDGETS.get(t.variant, 0) <= 400_000 for t in p.tiers)


def _write(tmp_path, change):
    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath("cpu.yaml").read_text())
    change(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_user_file_loads_like_a_builtin(tmp_path):
    path = _write(tmp_path, lambda d: d.update(name="my-box", threads=3))
    p = load_profile(path)
    assert p.name == "my-box" and p.threads == 3


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(colour="red"), "unknown keys \\['colour'\\]; valid keys are"),
    (lambda d: d.update(precision="fp8"), "valid values are \\['fp32', 'fp16', 'int8'\\]"),
    (lambda d: d.update(backends=["openvino"]), "valid values are \\['tensorrt', 'onnxruntime', 'torch'\\]"),
    (lambda d: d["tiers"][0].update(variant="huge"), "variant is 'huge'; valid values are"),
    (lambda d: d["tiers"][0].update(overlap=40), "less than half the tile"),
    (lambda d: d["tiers"][0].update(batch=0), "batch must be an integer >= 1"),
    (lambda d: d["telemetry"].pop("dwell_s"), "missing keys \\['dwell_s'\\]"),
    (lambda d: d.update(backends=["tensorrt"], tensorrt=None), "needs a tensorrt target"),
    (lambda d: d.update(tensorrt="7.1"), "valid values are \\['8.5', '10'\\]"),
])
def test_bad_values_are_errors_that_list_the_valid_ones(tmp_path, change, words):
    with pytest.raises(ConfigError, match=words):
        load_profile(_write(tmp_path, change))


def test_unknown_device_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="built-in devices are \\['agx-xavier'"):
        load_profile("jetson-tx1")
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="no tier 'ultra'"):
        load_profile("cpu").tier("ultra")
