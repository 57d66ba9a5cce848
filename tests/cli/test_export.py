"""``mambaesr-export``: device listing, user profiles, the no-TensorRT path, and each bad input's error and exit code."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from mambaesr_runtime.cli.export import main
from mambaesr_runtime.export.manifest import read_manifest
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
