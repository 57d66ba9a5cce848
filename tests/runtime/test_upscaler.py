"""Upscaler and mambaesr-run on a tiny exported engine: shapes, modes, folders, refusals, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaesr_runtime.cli.run import main
from mambaesr_runtime.cli.run import main as run_main
from mambaesr_runtime.errors import MambaESRError
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.runtime.imageio import read_image, write_image
from mambaesr_runtime.runtime.upscaler import Upscaler
from tinymodels import untrained


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = untrained("tiny")
    path = export_onnx(model, tmp_path_factory.mktemp("engine") / "tiny_t16_b2.onnx", 16, 16, batch=2)
    return path, model


def test_upscale_matches_the_torch_model_through_tiles(tiny_onnx):
    path, model = tiny_onnx
    img = (np.random.default_rng(0).random((23, 37, 3)) * 255).astype(np.uint8)
    with Upscaler(model=path, overlap=4) as up:
        out = up.upscale(img)
    assert out.shape == (92, 148, 3) and out.dtype == np.uint8
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        whole = (model(rgb)[0].permute(1, 2, 0).numpy()[:, :, ::-1].clip(0, 1) * 255).round()
    assert np.abs(out.astype(float) - whole).mean() < 2.0  # tiles vs whole image: same picture


@pytest.mark.parametrize("shape, dtype", [((10, 10), np.uint8), ((10, 10, 4), np.uint8), ((10, 10, 3), np.uint16)])
def test_modes_and_depths_come_back_as_they_went_in(tiny_onnx, shape, dtype):
    img = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    with Upscaler(model=tiny_onnx[0], overlap=4) as up:
        out = up.upscale(img)
    assert out.dtype == dtype and out.shape[:2] == (40, 40) and out.shape[2:] == shape[2:]


def test_huge_outputs_are_refused_up_front(tiny_onnx):
    with Upscaler(model=tiny_onnx[0], overlap=4, max_output_megapixels=0.01) as up:
        with pytest.raises(MambaESRError, match="image: a 100x100 input makes a 400x400 output .0.2 MP., above the "
                                                "0.01 MP limit; the output alone needs 0.5 MB"):
            up.upscale(np.zeros((100, 100, 3), np.uint8))


def test_cli_file_folder_and_refusals(tiny_onnx, tmp_path, capsys):
    onnx_path = str(tiny_onnx[0])
    src = write_image(tmp_path / "a.png", np.full((12, 9, 3), 90, np.uint8))
    assert main([str(src), "--model", onnx_path, "--overlap", "4", "-q"]) == 0
    out = tmp_path / "a_x4.png"
    assert read_image(out).shape == (48, 36, 3)
    before = out.read_bytes()
    assert main([str(src), "--model", onnx_path, "--overlap", "4", "-q"]) == 2  # exists: refused, untouched
    assert out.read_bytes() == before and "pass --overwrite" in capsys.readouterr().err
    assert main([str(src), "--model", onnx_path, "--overlap", "4", "-q", "--overwrite"]) == 0

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.png", "y.jpg"):
        write_image(folder / name, np.full((8, 8, 3), 50, np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", onnx_path, "--overlap", "4", "-q"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "y.jpg"]  # names kept, no partial
    assert "broken.png: not a readable image" in capsys.readouterr().err


def test_cli_bad_arguments_exit_2(tiny_onnx, tmp_path, capsys):
    onnx_path = str(tiny_onnx[0])
    main = lambda argv: run_main(argv + ["--overlap", "4"])
    assert main([str(tmp_path / "missing.png"), "--model", onnx_path]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(tmp_path), "--model", onnx_path]) == 2  # an empty folder
    assert "holds no images" in capsys.readouterr().err
    src = write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert main([str(src), "--model", onnx_path, "--scale", "2"]) == 2
    assert "upscales x4" in capsys.readouterr().err
    assert main([str(src), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(src), str(src), "-o", str(tmp_path / "one.png"), "--model", onnx_path]) == 2
    assert "pass a folder" in capsys.readouterr().err
    assert run_main([str(src), "--model", onnx_path, "--overlap", "8"]) == 2  # 8 does not fit a 16x16 engine
    assert "overlap 8 must be an integer >= 0 and less than half the tile (16x16)" in capsys.readouterr().err
    assert run_main([str(src), "--model", onnx_path, "-q", "--overwrite"]) == 0  # default: the profile's overlap


@pytest.mark.parametrize("extra", [[], ["--precision", "int8"]], ids=["fp32", "int8"])
def test_the_readme_main_job_runs_without_torch(tmp_path, extra):
    """mambaesr-run on the shipped sample with the shipped model (and its int8 graph), in a process where torch
    cannot be imported."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
            "from mambaesr_runtime.cli.run import main\n"
            "from mambaesr_runtime.runtime.upscaler import shipped_model\n"
            "sample = shipped_model().parent.parent / 'data' / 'sample.png'\n"
            f"sys.exit(main([str(sample), '-o', r'{tmp_path / 'sample_x4.png'}', '-q', '-v'] + {extra!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if extra:
        assert "student_x4_t264_b1_int8.onnx" in done.stderr and "int8" in done.stderr
    out = read_image(tmp_path / "sample_x4.png")
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8


def test_non_finite_output_of_an_fp16_engine_names_the_fp32_fix(tmp_path):
    """The tile check lives in the runtime, so it holds for every backend; for fp16/int8 engines the fix is fp32."""
    import dataclasses

    import hostile

    with Upscaler(model=hostile.onnx_graph(tmp_path / "nan.onnx", "nan", 16), overlap=2) as up:
        up._engines["model"] = dataclasses.replace(up._engines["model"], precision="fp16")
        with pytest.raises(MambaESRError, match=r"frame: engine nan.onnx \(onnxruntime, fp16, tier model\): tile 1 of "
                                                r"1 .* NaN or infinite values; the engine runs in fp16, whose range the "
                                                r"model overflowed: use the fp32 engine \(precision='fp32'\)"):
            up.upscale(np.zeros((10, 10, 3), np.uint8), source="frame")


def test_any_dynamic_shape_sr_onnx_runs_on_the_profiles_tiles_at_its_own_scale(tmp_path, capsys):
    """A user's x3 model with dynamic height and width (no manifest, not ours): tiled at the profile's tile size (or
    tile=), its scale measured by one probe run and said in describe(); the tiles agree with the whole-image run."""
    from tinymodels import dynamic_sr_onnx

    path, model = dynamic_sr_onnx(tmp_path / "user_x3.onnx", scale=3)
    img = (np.random.default_rng(0).random((30, 41, 3)) * 255).astype(np.uint8)
    with Upscaler(model=path, tile=24, overlap=4) as up:
        assert up.scale == 3 and up.engine.backend.input_shape == (1, 3, 24, 24)
        assert "dynamic height/width" in up.describe() and "x3" in up.describe()
        out = up.upscale(img)
    assert out.shape == (90, 123, 3)
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        whole = (model(rgb)[0].permute(1, 2, 0).numpy()[:, :, ::-1].clip(0, 1) * 255).round()
    assert np.abs(out.astype(float) - whole).mean() < 1.0  # a 3x3 conv: tiles with overlap are exact but for rounding
    with Upscaler(model=path) as up:  # default: the cpu profile's first tier
        tier = up.profile.tiers[0]
        assert up.engine.backend.input_shape == (tier.batch, 3, tier.tile, tier.tile)
    assert run_main([str(write_image(tmp_path / "a.png", img)), "--model", str(path), "--scale", "3", "-q"]) == 0
    assert read_image(tmp_path / "a_x3.png").shape == (90, 123, 3)
    assert run_main([str(tmp_path / "a.png"), "--model", str(path), "--scale", "4", "-q"]) == 2
    assert "upscales x3, not the x4 asked for" in capsys.readouterr().err
