"""``mambaesr-export``: device listing, user profiles, the no-TensorRT path, and each bad input's error and exit code."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from mambaesr_runtime.artifacts.manifest import read_manifest
from mambaesr_runtime.cli.export import main
from mambaesr_runtime.model.checkpoint import save_checkpoint
from mambaesr_runtime.profiles import builtin_profiles
from tinymodels import untrained


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x4.safetensors"
    save_checkpoint(untrained("tiny"), path, variant="tiny")
    return path


def user_profile(tmp_path, base="cpu", **changes):
    from importlib import resources

    data = yaml.safe_load(resources.files("mambaesr_runtime.profiles_data").joinpath(f"{base}.yaml").read_text())
    data.update(name="my-board", tiers=[{"name": "only", "variant": "tiny", "tile": 16, "overlap": 2, "batch": 2}],
                **changes)
    path = tmp_path / "my_board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_list_devices_prints_every_builtin_profile(capsys):
    assert main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    for name in builtin_profiles():
        assert f"\n{name} " in out
    assert "orin" in builtin_profiles() and "rpi5" in builtin_profiles()


def test_unknown_device_lists_the_valid_ones(capsys):
    assert main(["--device", "jetson-nano-2gb"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'jetson-nano-2gb'" in err and "orin" in err and "rpi5" in err


def test_no_device_is_an_error(capsys):
    assert main([]) == 2
    assert "--device" in capsys.readouterr().err


def test_user_profile_exports_onnx_and_manifest(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tiny_ckpt), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny_x4_t16_b2.onnx" in printed and "exported" in printed
    assert read_manifest(out / "tiny_x4_t16_b2.onnx").profile == "my-board"
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tiny_ckpt), "-o", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_tensorrt_profile_without_tensorrt_prints_and_writes_trtexec_commands(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    profile = user_profile(tmp_path, base="xavier-nx")
    assert main(["--profile", str(profile), "--weights", str(tiny_ckpt), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TensorRT is not installed here" in printed and "trtexec --onnx=tiny_x4_t16_b2.onnx" in printed
    script = (out / "build_engines.sh").read_text()
    assert "trtexec --onnx=tiny_x4_t16_b2.onnx" in script and "--fp16" in script
    assert (out / "build_engines.sh").stat().st_mode & 0o111


def test_missing_weights_file_exits_2(tmp_path, capsys):
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tmp_path / "nope.safetensors"),
                 "-o", str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_exits_2_and_writes_nothing(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "bad" / "tiny_x4.safetensors"
    bad.parent.mkdir()
    shutil.copy(tiny_ckpt.with_suffix(".json"), bad.with_suffix(".json"))
    bad.write_bytes(b"\x00" * 64 + tiny_ckpt.read_bytes()[64:])
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tiny_x4.safetensors" in err
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder_exits_2(tmp_path, tiny_ckpt, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tiny_ckpt),
                 "-o", str(blocker / "engines")]) == 2
    assert "error: " in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_invalid_user_profile_names_the_bad_value(tmp_path, capsys):
    assert main(["--profile", str(user_profile(tmp_path, precision="fp8"))]) == 2
    err = capsys.readouterr().err
    assert "precision" in err and "'fp16'" in err


def test_manifest_json_is_plain_json(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tiny_ckpt), "-o", str(out)]) == 0
    data = json.loads((out / "tiny_x4_t16_b2.onnx.manifest.json").read_text())
    assert data["format"] == "mambaesr-engine-manifest" and data["input_shape"] == [2, 3, 16, 16]


# --- on the device: plans, their parity check, trtexec plans (TensorRT and PyCUDA are recording stand-ins) -----------

@pytest.fixture
def jetson(tmp_path, tiny_ckpt, monkeypatch):
    """The ONNX half of the Jetson flow done (as on a dev machine), then `import tensorrt` / `import pycuda.driver`
    give the stand-ins, as on the device. Returns (profile YAML, engines folder, recorder)."""
    import sys
    import types

    from standins.tensorrt_standin import TRT10_VERSION, make_standins

    profile, out = user_profile(tmp_path, base="orin"), tmp_path / "engines"
    assert main(["--profile", str(profile), "--weights", str(tiny_ckpt), "-o", str(out), "--onnx-only"]) == 0
    trt, cuda, rec = make_standins(TRT10_VERSION)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, module)
    return profile, out, rec


def test_plans_only_builds_checks_and_reports_the_parity(jetson, capsys):
    profile, out, _ = jetson
    capsys.readouterr()
    assert main(["--profile", str(profile), "-o", str(out), "--plans-only"]) == 0
    printed = capsys.readouterr().out
    assert "tiny_x4_t16_b2_fp16.plan" in printed and "dB vs ONNX Runtime fp32 (worst tile" in printed
    assert read_manifest(out / "tiny_x4_t16_b2_fp16.plan").verification["plan_vs_ort_psnr_db"] >= 40


def test_plans_only_refuses_a_plan_far_from_fp32_with_exit_2_and_writes_nothing(jetson, capsys):
    profile, out, rec = jetson
    before = sorted(p.name for p in out.iterdir())
    rec.output_fault = lambda x, y: y * 0.8
    assert main(["--profile", str(profile), "-o", str(out), "--plans-only"]) == 2
    err = capsys.readouterr().err
    assert "dB PSNR from ONNX Runtime fp32" in err and "nothing was written" in err and "precision fp32" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_adopt_plan_makes_a_trtexec_plan_loadable_and_run_v_shows_its_parity(jetson, tmp_path, capsys):
    """build_engines.sh's trtexec route: the plan has no manifest until --adopt-plan checks it; then mambaesr-run
    loads it and -v prints the recorded parity."""
    import sys

    import cv2
    import numpy as np

    from mambaesr_runtime.cli.run import main as run_main
    from mambaesr_runtime.export.tensorrt_build import build_engine

    profile, out, _ = jetson
    plan = out / "tiny_x4_t16_b2_fp16.plan"
    build_engine(out / "tiny_x4_t16_b2.onnx", plan, target="10", input_shape=(2, 3, 16, 16), precision="fp16",
                 workspace_mb=64, trt=sys.modules["tensorrt"], cuda=sys.modules["pycuda.driver"])  # "trtexec"
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (20, 24, 3), np.uint8))
    run = ["--profile", str(profile), "--engines", str(out), "--backend", "tensorrt", "-q"]
    assert run_main([str(image), "-o", str(tmp_path / "a.png")] + run) == 2  # no manifest: not loadable
    assert "needs its manifest beside it" in capsys.readouterr().err

    assert main(["--profile", str(profile), "--adopt-plan", str(tmp_path / "x.plan")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--profile", str(profile), "--adopt-plan", str(plan)]) == 0
    assert "(adopted; TensorRT" in capsys.readouterr().out
    assert read_manifest(plan).verification["built_by"].startswith("trtexec")

    assert run_main([str(image), "-o", str(tmp_path / "b.png"), "-v"] + run) == 0
    err = capsys.readouterr().err
    assert "tiny_x4_t16_b2_fp16.plan" in err and "parity vs ONNX Runtime fp32:" in err and "dB PSNR (worst tile" in err
    assert cv2.imread(str(tmp_path / "b.png")).shape == (80, 96, 3)


def test_build_engines_sh_ends_with_the_adopt_command(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    assert main(["--profile", str(user_profile(tmp_path, base="xavier-nx")), "--weights", str(tiny_ckpt),
                 "-o", str(out)]) == 0
    script = (out / "build_engines.sh").read_text()
    assert "--adopt-plan tiny_x4_t16_b2_fp16.plan" in script and "11.x has no --fp16" in script
    assert "--adopt-plan tiny_x4_t16_b2_fp16.plan" in capsys.readouterr().out


@pytest.mark.parametrize("threads", ["-5", "100000"])
def test_bad_threads_are_refused_before_any_export_work(tmp_path, tiny_ckpt, capsys, monkeypatch, threads):
    """Before: --threads -5 went through the whole torch -> ONNX export, then failed in ONNX Runtime's verification."""
    from mambaesr_runtime.export import pipeline

    monkeypatch.setattr(pipeline, "export_profile", lambda *a, **k: pytest.fail("the export started"))
    monkeypatch.setattr("mambaesr_runtime.profiles.load_profile", lambda *a, **k: pytest.fail("a profile was read"))
    assert main(["--profile", str(user_profile(tmp_path)), "--weights", str(tiny_ckpt), "-o", str(tmp_path / "out"),
                 "--threads", threads]) == 2
    assert "--threads must be an integer from 0 (ONNX Runtime's default) to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
