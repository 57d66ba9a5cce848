"""mambaesr-eval: a checkpoint, its ONNX export and the tiled runtime path give the same PSNR (to 0.01 dB)."""

from __future__ import annotations

import json

import pytest
import torch

from mambaesr_runtime.cli.eval import main
from mambaesr_runtime.evaluation.benchmark import evaluate
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.model.checkpoint import save_checkpoint
from tinymodels import untrained


@pytest.fixture(scope="module")
def tiny_artifacts(tmp_path_factory):
    torch.manual_seed(0)
    model = untrained("tiny")
    root = tmp_path_factory.mktemp("artifacts")
    save_checkpoint(model, root / "tiny", variant="tiny")
    export_onnx(model, root / "tiny_t64.onnx", 64, 64, batch=2)
    return root


def test_checkpoint_onnx_and_runtime_path_agree(tiny_artifacts, shared_data):
    """64x64 tiles with 8 px overlap, as the CPU tier will ship. (The untrained tiny net has slow decays, so its
    long-range context is larger than a trained one's; 32x32 tiles measured 0.018 dB apart, 64x64 0.002 dB.)"""
    sets = {"Set5": str(shared_data / "benchmarks" / "Set5")}
    ckpt = evaluate(tiny_artifacts / "tiny.json", sets)["sets"]["Set5"]
    tiled = evaluate(tiny_artifacts / "tiny_t64.onnx", sets, overlap=8)["sets"]["Set5"]
    assert abs(ckpt["psnr"] - tiled["psnr"]) <= 0.01
    for name in ckpt["images"]:
        assert abs(ckpt["images"][name]["psnr"] - tiled["images"][name]["psnr"]) <= 0.02, name
    assert abs(ckpt["bicubic_psnr"] - 28.43) <= 0.01  # the reference column uses the same convention


def test_cli_writes_table_json_and_crop_sheet(tiny_artifacts, shared_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(tiny_artifacts / "tiny_t64.onnx"), str(shared_data / "benchmarks" / "Set5"), "-o", str(out)]) == 0
    assert "| Set5 | 5 |" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert set(result["sets"]["Set5"]["images"]) == {"baby", "bird", "butterfly", "head", "woman"}
    assert (out / "crops.png").stat().st_size > 1000 and (out / "results.md").is_file()


def test_cli_rejects_a_folder_without_hr(tmp_path, tiny_artifacts, capsys):
    assert main([str(tiny_artifacts / "tiny.json"), str(tmp_path)]) == 2
    assert "needs an HR/ subfolder" in capsys.readouterr().err


def test_a_tensorrt_plan_is_evaluated_through_the_runtime_path(tmp_path, shared_data, monkeypatch):
    """A plan (built with the recording TensorRT stand-in, whose engine upscales by nearest neighbour) goes through
    the tiled runtime path: its scores must be nearest-neighbour's, computed here independently."""
    import sys
    import types

    import cv2

    from mambaesr_runtime.artifacts.manifest import EngineManifest, write_manifest
    from mambaesr_runtime.evaluation.metrics import psnr_y
    from mambaesr_runtime.export.tensorrt_build import build_engine
    from standins.tensorrt_standin import TRT10_VERSION, make_standins, write_static_sr_onnx

    trt, cuda, rec = make_standins(TRT10_VERSION)
    rec.network_input = ("lr", (1, 3, 32, 32))
    onnx_file = write_static_sr_onnx(tmp_path / "nn.onnx", (1, 3, 32, 32))
    plan = tmp_path / "nn.plan"
    info = build_engine(onnx_file, plan, target="10", input_shape=(1, 3, 32, 32), precision="fp32",
                        workspace_mb=64, trt=trt, cuda=cuda)
    write_manifest(EngineManifest(
        kind="plan", artifact=plan.name, artifact_sha256=info["plan_sha256"], variant="tiny", scale=4,
        input_shape=(1, 3, 32, 32), output_shape=(1, 3, 128, 128), precision="fp32", opset=17, onnx_sha256="-",
        weights_sha256="-", profile="orin", tier="t", tensorrt_target="10", versions={"tensorrt": TRT10_VERSION},
        device=info["device"]), tmp_path)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)

    folder = shared_data / "benchmarks" / "Set5"
    result = evaluate(plan, {"Set5": str(folder)}, overlap=4)["sets"]["Set5"]
    for name, scores in result["images"].items():
        hr = cv2.imread(str(folder / "HR" / f"{name}.png"))[:, :, ::-1]
        lr = cv2.imread(str(folder / "LR_bicubic" / "X4" / f"{name}x4.png"))[:, :, ::-1]
        nearest = lr.repeat(4, 0).repeat(4, 1)
        h, w = hr.shape[0] // 4 * 4, hr.shape[1] // 4 * 4
        assert abs(scores["psnr"] - psnr_y(nearest[:h, :w], hr[:h, :w], 4)) < 1e-6, name
    assert "trt.Runtime.deserialize_cuda_engine" in rec.names()


def test_eval_takes_any_dynamic_shape_sr_onnx_at_its_own_scale(tmp_path, capsys):
    """mambaesr-eval on a user's x2 ONNX with dynamic height and width: tiled at --tile, scale from the probe run, LR
    made at x2 (the set has HR only), reported per set."""
    import cv2
    import numpy as np

    from tinymodels import dynamic_sr_onnx

    path, _ = dynamic_sr_onnx(tmp_path / "user_x2.onnx", scale=2)
    (tmp_path / "Mini" / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "Mini" / "HR" / "a.png"), (rng.random((40, 36, 3)) * 255).astype(np.uint8))
    assert main([str(path), str(tmp_path / "Mini"), "--tile", "16", "--overlap", "2"]) == 0
    out = capsys.readouterr().out
    assert "x2" in out and "tiles 16x16 overlap 2" in out and "scale found by a probe run" in out and "| Mini | 1 |" in out


def test_o_onto_an_existing_file_is_refused_before_the_run(tmp_path, tiny_artifacts, capsys, monkeypatch):
    """Before: the whole evaluation ran, then write_report's mkdir raised FileExistsError (a traceback, exit 1)."""
    from mambaesr_runtime.evaluation import benchmark

    (tmp_path / "Mini" / "HR").mkdir(parents=True)
    (tmp_path / "report.md").write_text("mine\n")
    monkeypatch.setattr(benchmark, "make_upscaler", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([str(tiny_artifacts / "tiny.json"), str(tmp_path / "Mini"), "-o", str(tmp_path / "report.md")]) == 2
    assert "-o " + str(tmp_path / "report.md") + " is a file, and -o takes a folder" in capsys.readouterr().err
    assert (tmp_path / "report.md").read_text() == "mine\n"


def test_an_lr_image_that_is_not_1_over_scale_of_its_hr_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """Before: the HR was cropped to the LR's size x scale and a meaningless PSNR was reported (an LR larger than
    HR/scale: a shape error deep inside the metrics). Every set is checked before the first one is scored."""
    import cv2
    import numpy as np

    from mambaesr_runtime.evaluation import benchmark
    from tinymodels import dynamic_sr_onnx

    path, _ = dynamic_sr_onnx(tmp_path / "user_x2.onnx", scale=2)
    for name, lr_size in (("Good", (20, 18)), ("Bad", (12, 18))):
        (tmp_path / name / "HR").mkdir(parents=True)
        (tmp_path / name / "LR_bicubic" / "X2").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "HR" / "a.png"), np.full((40, 37, 3), 90, np.uint8))
        cv2.imwrite(str(tmp_path / name / "LR_bicubic" / "X2" / "ax2.png"), np.full((*lr_size, 3), 90, np.uint8))
    monkeypatch.setattr(benchmark, "score_set", lambda *a, **k: pytest.fail("a set was scored"))
    assert main([str(path), str(tmp_path / "Good"), str(tmp_path / "Bad"), "--tile", "16", "--overlap", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'Bad' / 'LR_bicubic' / 'X2' / 'ax2.png'} is 18x12, but its HR " \
           f"{tmp_path / 'Bad' / 'HR' / 'a.png'} is 37x40, so an x2 LR must be 18x20 (each side // 2)" in err
