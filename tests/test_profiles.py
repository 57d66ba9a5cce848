"""Device profiles: every built-in loads and is coherent; bad files get errors that list the valid values."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from mambaesr_runtime.artifacts.names import engine_name, shipped_dir
from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.model.config import PARAM_BUDGETS, VARIANTS
from mambaesr_runtime.profiles import (
    TelemetryThresholds,
    builtin_profiles,
    load_profile,
)

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


@pytest.mark.parametrize("name", ["cpu", "rpi5"])
def test_onnxruntime_profiles_run_on_the_shipped_weights(name):
    """No export step on these devices (mambaesr-export needs torch): every tier's graph (and its small-image
    engine's) must ship in weights/."""
    p = load_profile(name)
    assert any(t.small_tile for t in p.tiers)
    for tier in p.engine_tiers():
        engine = engine_name("onnxruntime", tier.variant, 4, tier.tile, tier.batch, tier.precision_in(p))
        assert (shipped_dir() / engine).is_file(), f"{name} tier {tier.name}: {engine} is not shipped"


def _write(tmp_path, change):
    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath("cpu.yaml").read_text())
    change(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_builtin_watches_with_margins_the_policy_can_clear():
    for name in EXPECTED:
        t = load_profile(name).telemetry
        assert isinstance(t, TelemetryThresholds)
        assert t.temp_c is not None and 0 < t.temp_hysteresis_c < t.temp_c
        assert t.latency_ms is not None and 0 < t.latency_hysteresis_ms < t.latency_ms
        assert t.mem_free_mb is not None and t.mem_hysteresis_mb > 0
        assert t.power_w is None or 0 < t.power_hysteresis_w < t.power_w
        assert t.latency_window >= 1 and 0 < t.step_down_s <= t.dwell_s and t.interval_s <= t.step_down_s
    assert load_profile("orin").telemetry.power_w == 50  # Jetsons watch board power; the CPU-only profiles cannot


def test_a_user_file_loads_like_a_builtin(tmp_path):
    path = _write(tmp_path, lambda d: d.update(name="my-box", threads=3))
    p = load_profile(path)
    assert p.name == "my-box" and p.threads == 3


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(colour="red"), "unknown keys \\['colour'\\]; valid keys are"),
    (lambda d: d.update(precision="fp8"), "valid values are \\['fp32', 'fp16', 'int8'\\]"),
    (lambda d: d.update(backends=["openvino"]), "valid values are \\['tensorrt', 'onnxruntime', 'torch'\\]"),
    (lambda d: d["tiers"][0].update(variant="huge"), "variant is 'huge'; valid values are"),
    (lambda d: d["tiers"][0].update(overlap=d["tiers"][0]["tile"] // 2), "less than half the tile"),
    (lambda d: d["tiers"][0].update(batch=0), "batch must be an integer >= 1"),
    (lambda d: d["telemetry"].pop("dwell_s"), "missing keys \\['dwell_s'\\]"),
    (lambda d: d["telemetry"].update(cooldown=3), "unknown keys \\['cooldown'\\]; valid keys are \\['dwell_s'"),
    (lambda d: d["telemetry"].update(latency_window=0), "telemetry.latency_window must be an integer >= 1"),
    (lambda d: d["telemetry"].update(temp_hysteresis_c=-1), "telemetry.temp_hysteresis_c must be a number >= 0"),
    (lambda d: d["telemetry"].update(temp_c=5, temp_hysteresis_c=5),
     "temp_hysteresis_c 5 °C must be below temp_c 5 °C, or the policy could never step back up"),
    (lambda d: d["telemetry"].update(power_w=10, power_hysteresis_w=12), "power_hysteresis_w 12 W must be below"),
    (lambda d: d.update(backends=["tensorrt"], tensorrt=None), "needs a tensorrt target"),
    (lambda d: d.update(tensorrt="7.1"), "valid values are \\['8.5', '10'\\]"),
    (lambda d: d["tiers"][0].update(small_tile=264), "small_tile 264 must be below the tile 264"),
    (lambda d: d["tiers"][0].update(small_tile=8), "small_tile: overlap 4 must be an integer >= 0 and less than half"),
    (lambda d: d["tiers"][0].update(small_tile=4), "small_tile must be an integer >= 8"),
])
def test_bad_values_are_errors_that_list_the_valid_ones(tmp_path, change, words):
    with pytest.raises(ConfigError, match=words):
        load_profile(_write(tmp_path, change))


def test_a_small_tile_is_an_engine_of_its_own_for_small_images(tmp_path):
    p = load_profile(_write(tmp_path, lambda d: d["tiers"][0].update(small_tile=40)))
    small = p.tiers[0].small()
    assert (small.name, small.tile, small.batch, small.small_tile) == ("balanced-small", 40, 1, None)
    assert [t.name for t in p.engine_tiers()][:2] == ["balanced", "balanced-small"]
    assert load_profile(_write(tmp_path, lambda d: d["tiers"][0].pop("small_tile", None))).tiers[0].small() is None


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


def test_yaml_alias_bombs_and_oversized_files_are_refused_before_parsing(tmp_path):
    """Before: a profile of nested aliases ("billion laughs") took 68 s and 3.2 GB in yaml.safe_load."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000  # expands to 10**9 strings
    with pytest.raises(ConfigError, match="line 1: anchors and aliases .* are not allowed in a profile"):
        load_profile(bomb)
    alias_only = tmp_path / "alias.yaml"
    alias_only.write_text("name: *x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(alias_only)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 10000)
    with pytest.raises(ConfigError, match="big.yaml is 100000 bytes; a profile is at most 65536"):
        load_profile(big)


def test_a_profile_with_an_absurd_thread_count_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="threads must be an integer from 0 .* to 256, got 100000"):
        load_profile(_write(tmp_path, lambda d: d.update(threads=100000)))


def test_a_source_checkout_without_an_install_finds_the_checkouts_profiles(monkeypatch, tmp_path):
    """The tree on PYTHONPATH, never installed (a copied checkout on a board, the tests' CLI subprocesses in an
    installed root): no ``profiles_data`` package exists there, so the built-ins come from ``profiles/`` beside the
    package. Before: ModuleNotFoundError from every CLI that names a device (found by scripts/foreign_check.sh)."""
    from mambaesr_runtime import profiles

    def not_installed(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    real_cpu = (profiles.profiles_dir() / "cpu.yaml").read_text()
    (tmp_path / "mambaesr_runtime").mkdir()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "cpu.yaml").write_text(real_cpu)
    monkeypatch.setattr(profiles, "package_dir", not_installed)
    monkeypatch.setattr(profiles, "__file__", str(tmp_path / "mambaesr_runtime" / "profiles.py"))
    assert profiles.profiles_dir() == tmp_path / "profiles"
    assert builtin_profiles() == ["cpu"] and load_profile("cpu").name == "cpu"
    (tmp_path / "profiles" / "cpu.yaml").unlink()  # neither the package nor the checkout's folder: say what to do
    with pytest.raises(ConfigError, match=r"built-in device profiles are missing .* reinstall the runtime"):
        load_profile("cpu")
