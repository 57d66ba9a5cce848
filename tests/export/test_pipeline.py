"""The export pipeline (checkpoint -> ONNX per tier -> onnxsim -> verify -> manifest), on the tiny variant and the
shipped student, without TensorRT (this machine has none; the TensorRT build has its own stand-in tests)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx
import pytest
import torch

from mambaesr_runtime.artifacts.manifest import manifest_path, read_manifest
from mambaesr_runtime.artifacts.names import shipped_dir
from mambaesr_runtime.errors import CheckpointError, ExportError
from mambaesr_runtime.export import parity, pipeline
from mambaesr_runtime.fileio import sha256_file
from mambaesr_runtime.model.checkpoint import save_checkpoint
from mambaesr_runtime.profiles import Tier, load_profile
from mambaesr_runtime.runtime.imageio import decode, read_image
from tinymodels import LINES, untrained


def make_profile(name="test-cpu", tiers=(("t", "tiny", 16, 4, 2),), precision="fp32", tensorrt=None):
    """A built-in profile (its telemetry thresholds) with test tiers and targets."""
    base = load_profile("orin" if tensorrt else "cpu")
    return dataclasses.replace(base, name=name, precision=precision, tensorrt=tensorrt,
                               tiers=tuple(Tier(n, v, t, o, b) for n, v, t, b, o in tiers))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = untrained("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x4.safetensors"
    save_checkpoint(model, path, variant="tiny")
    return path


def test_tiny_export_writes_verified_onnx_and_manifest(tmp_path, tiny_ckpt):
    out = tmp_path / "engines"
    [art] = pipeline.export_profile(make_profile(), out, [tiny_ckpt])
    assert art.onnx == out / "tiny_x4_t16_b4.onnx" and not art.reused
    graph = onnx.load(art.onnx)
    onnx.checker.check_model(graph)
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 16, 16]
    m = read_manifest(art.onnx)
    assert m == art.manifest
    assert (m.kind, m.variant, m.scale, m.input_shape, m.output_shape) == ("onnx", "tiny", 4, (4, 3, 16, 16),
                                                                            (4, 3, 64, 64))
    assert m.artifact_sha256 == sha256_file(art.onnx) == m.onnx_sha256
    assert m.weights_sha256 == sha256_file(tiny_ckpt)
    assert m.profile == "test-cpu" and m.tier == "t" and m.tensorrt_target is None
    assert {"torch", "onnx", "onnxsim", "onnxruntime", "mambaesr"} <= set(m.versions)
    assert m.verification["ort_vs_torch_max_abs_err"] <= parity.FP32_TOLERANCE
    assert "fp16_psnr_vs_fp32_db" not in m.verification  # an fp32 profile has no fp16 engines to check
    assert art.trtexec is None  # ONNX Runtime profile: nothing to build on a device
    assert sorted(p.name for p in out.iterdir()) == ["tiny_x4_t16_b4.onnx", "tiny_x4_t16_b4.onnx.manifest.json"]


def test_a_line_model_exports_pad_aware_and_a_small_image_through_it_is_the_whole_image_result(tmp_path):
    """The manifest says what to pad with; through ONNX Runtime and the tiler, an image smaller than the tile comes
    out as the whole-image PyTorch result (a reflected border changed it: the scans carry state along lines)."""
    from mambaesr_runtime.backends.onnxruntime import OrtBackend
    from mambaesr_runtime.geometry import PAD_VALUE
    from mambaesr_runtime.runtime.tiling import upscale_tiled

    model = untrained("tiny", **LINES)
    ckpt = tmp_path / "tiny_x4.safetensors"
    save_checkpoint(model, ckpt, variant="tiny")
    [art] = pipeline.export_profile(make_profile(tiers=(("t", "tiny", 24, 1, 2),)), tmp_path / "engines", [ckpt])
    assert art.manifest.pad_value == PAD_VALUE and art.manifest.verification["ort_vs_torch_batches"] == 3
    assert not model.pad_aware  # the caller's model is left as it was
    img = np.random.default_rng(1).random((14, 18, 3), dtype=np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    with OrtBackend(art.onnx, threads=1) as backend:
        assert backend.pad_value == PAD_VALUE
        tiled = upscale_tiled(backend.infer, img, 4, 24, 2, pad_value=backend.pad_value)
        reflected = upscale_tiled(backend.infer, img, 4, 24, 2)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)
    assert np.abs(reflected - whole).max() > 1e-3


def test_rerun_skips_up_to_date_artifacts_and_force_redoes_them(tmp_path, tiny_ckpt):
    profile = make_profile()
    [first] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt])
    stamp = first.onnx.stat().st_mtime_ns
    [again] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt])
    assert again.reused and again.onnx.stat().st_mtime_ns == stamp
    [forced] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt], force=True)
    assert not forced.reused and forced.onnx.stat().st_mtime_ns != stamp
    # A damaged artifact is not "up to date", whatever its manifest says.
    forced.onnx.write_bytes(forced.onnx.read_bytes()[:-10])
    [repaired] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt])
    assert not repaired.reused and sha256_file(repaired.onnx) == repaired.manifest.artifact_sha256


def test_new_weights_make_the_artifact_stale(tmp_path, tiny_ckpt):
    profile = make_profile()
    pipeline.export_profile(profile, tmp_path / "e", [tiny_ckpt])
    other = tmp_path / "other" / "tiny_x4.safetensors"
    save_checkpoint(untrained("tiny", seed=1), other, variant="tiny")
    [art] = pipeline.export_profile(profile, tmp_path / "e", [other])
    assert not art.reused and art.manifest.weights_sha256 == sha256_file(other)


def test_tensorrt_profile_without_tensorrt_gives_trtexec_and_checks_fp16_and_ops(tmp_path, tiny_ckpt):
    profile = make_profile("test-orin", precision="fp16", tensorrt="10")
    [art] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt], trt=None)
    assert art.plan is None
    v = art.manifest.verification
    assert v["fp16_psnr_vs_fp32_db"] >= parity.FP16_MIN_PSNR
    assert v["tensorrt_compat"]["target"] == "10" and v["tensorrt_compat"]["ok"]
    assert art.trtexec.startswith("trtexec ") and "tiny_x4_t16_b4.onnx" in art.trtexec
    assert "--fp16" in art.trtexec and "tiny_x4_t16_b4_fp16.plan" in art.trtexec


def test_shipped_student_exports_and_verifies_on_real_tiles(tmp_path, shared_data):
    """The shipped weights through the whole pipeline, checked on real Set14 tiles, not only random ones."""
    img = decode(read_image(shared_data / "benchmarks" / "Set14" / "LR_bicubic" / "X4" / "baboonx4.png")).rgb
    tiles = np.stack([img[y:y + 32, x:x + 32].transpose(2, 0, 1) for y, x in ((0, 0), (40, 60))])
    profile = make_profile(tiers=(("q", "student", 32, 2, 4),))
    [art] = pipeline.export_profile(profile, tmp_path, [], threads=2)  # default: the shipped weights
    from mambaesr_runtime.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(shipped_dir() / "student_x4.safetensors")
    result = parity.verify_fp32(model.eval(), art.onnx, [np.ascontiguousarray(tiles)])
    assert result["ort_vs_torch_max_abs_err"] <= 1e-4
    assert art.manifest.verification["ort_vs_torch_max_abs_err"] <= 1e-4
    # onnx-simplifier folded the graph: fewer nodes than the raw export, and no shape arithmetic left
    assert art.manifest.verification["nodes"] < 0.9 * _raw_nodes(model, tmp_path)
    assert not {"Shape", "ConstantOfShape"} & {n.op_type for n in onnx.load(art.onnx).graph.node}


def _raw_nodes(model, tmp_path):
    from mambaesr_runtime.export.onnx_export import export_onnx

    return len(onnx.load(export_onnx(model, tmp_path / "raw.onnx", 32, 32, 2)).graph.node)


def test_verify_rejects_an_onnx_from_other_weights(tmp_path, tiny_ckpt):
    from mambaesr_runtime.model.checkpoint import load_checkpoint

    [art] = pipeline.export_profile(make_profile(), tmp_path, [tiny_ckpt])
    other = untrained("tiny", seed=7)
    x = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    with pytest.raises(ExportError, match="disagree by"):
        parity.verify_fp32(other, art.onnx, [x])
    model, _ = load_checkpoint(tiny_ckpt)
    assert parity.verify_fp32(model.eval(), art.onnx, [x])["ort_vs_torch_max_abs_err"] <= 1e-4


def test_fp16_check_fails_a_model_that_overflows_in_half_precision():
    torch.manual_seed(0)
    model = untrained("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(300.0)  # activations far beyond fp16's 65504
    tiles = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    with pytest.raises(ExportError, match="fp16"):
        parity.verify_fp16(model, tiles)


def test_interrupted_export_leaves_nothing(tmp_path, tiny_ckpt, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "verify_fp32", interrupt)
    out = tmp_path / "engines"
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_profile(make_profile(), out, [tiny_ckpt])
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_weights_for_a_variant_name_the_fix(tmp_path, tiny_ckpt):
    profile = make_profile(tiers=(("a", "tiny", 16, 1, 2), ("b", "teacher", 16, 1, 2)))
    with pytest.raises(CheckpointError, match=r"no weights for variant\(s\) \['teacher'\].*weights=CHECKPOINT"):
        pipeline.export_profile(profile, tmp_path, [tiny_ckpt])
    assert list(tmp_path.iterdir()) == []


def test_real_tiles_are_real_content_of_the_right_shape():
    tiles = parity.real_tiles(64, 5)
    assert tiles.shape == (5, 3, 64, 64) and tiles.dtype == np.float32
    assert 0 <= tiles.min() and tiles.max() <= 1 and tiles.std() > 0.05
    assert not np.array_equal(tiles[0], tiles[1])
    big = parity.real_tiles(160, 1)  # larger than the 128x128 sample: reflected
    assert big.shape == (1, 3, 160, 160)


def test_manifest_path_is_beside_the_artifact(tmp_path):
    assert manifest_path(tmp_path / "a.onnx") == tmp_path / "a.onnx.manifest.json"
    assert os.path.dirname(manifest_path("x/y.plan")) == "x"


@pytest.mark.parametrize("target", ["8.5", "10"])
def test_tensorrt_build_through_the_pipeline_with_recording_standins(tmp_path, tiny_ckpt, target):
    """With (stand-in) TensorRT importable, the pipeline builds a plan per tier, writes its manifest, times it, and
    re-running reuses it. The stand-ins mirror the documented TensorRT 8.5 / 10.x and PyCUDA APIs (no GPU here)."""
    from standins.tensorrt_standin import TRT10_VERSION, TRT85_VERSION, make_standins

    trt, cuda, rec = make_standins({"8.5": TRT85_VERSION, "10": TRT10_VERSION}[target])
    rec.network_input = ("lr", (4, 3, 16, 16))  # what the fake parser reports for the tier's ONNX
    profile = make_profile("test-jetson", precision="fp16", tensorrt=target)
    [art] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt], trt=trt, cuda=cuda)
    assert art.plan == tmp_path / "tiny_x4_t16_b4_fp16.plan" and art.plan.is_file()
    pm = read_manifest(art.plan)
    assert pm == art.plan_manifest
    assert (pm.kind, pm.precision, pm.onnx_sha256) == ("plan", "fp16", art.manifest.onnx_sha256)
    assert pm.versions["tensorrt"] == trt.__version__ and pm.artifact_sha256 == sha256_file(art.plan)
    assert pm.verification["infer_ms"] >= 0 and pm.verification["build_s"] >= 0
    assert (tmp_path / "timing.cache").is_file()  # kept for the next build
    calls = len(rec.calls)
    [again] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt], trt=trt, cuda=cuda)
    assert again.reused and again.plan_manifest == pm
    assert "trt.Builder.build_serialized_network" in rec.names()[:calls]
    assert "trt.Builder.build_serialized_network" not in rec.names()[calls:]


def test_plans_only_builds_on_the_device_from_copied_onnx_without_reexporting(tmp_path, tiny_ckpt, monkeypatch):
    """The Jetson flow: ONNX exported and verified on a dev machine, copied, plans built on the device."""
    from standins.tensorrt_standin import TRT10_VERSION, make_standins

    profile = make_profile("test-jetson", precision="fp16", tensorrt="10")
    [dev] = pipeline.export_profile(profile, tmp_path, [tiny_ckpt], build=False)
    trt, cuda, rec = make_standins(TRT10_VERSION)
    rec.network_input = ("lr", (4, 3, 16, 16))
    monkeypatch.setattr(pipeline, "export_tier", lambda *a, **k: pytest.fail("plans-only must not re-export"))
    monkeypatch.setattr(pipeline, "resolve_weights", lambda *a, **k: pytest.fail("plans-only needs no weights"))
    [art] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    assert art.onnx == dev.onnx and art.plan.is_file() and art.plan_manifest.onnx_sha256 == dev.manifest.onnx_sha256
    dev.onnx.write_bytes(dev.onnx.read_bytes() + b"\0")  # damaged in the copy
    with pytest.raises(ExportError, match="does not match its manifest's sha256"):
        pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    with pytest.raises(ExportError, match="not found: export it on a machine with the torch extra"):
        pipeline.build_plans(profile, tmp_path / "empty", trt=trt, cuda=cuda)


def _profile_shapes() -> list:
    """(variant, batch, tile) of every shipped-variant tier of every built-in profile, once each."""
    from mambaesr_runtime.profiles import builtin_profiles

    return sorted({(t.variant, t.batch, t.tile) for name in builtin_profiles() for t in load_profile(name).tiers
                   if t.variant in ("student", "fast")})


def test_every_profile_tier_exports_without_loops_or_padding(tmp_path):
    """Zero CumSum/Loop/Scan/If (and no Pad: the profiles' tiles give whole chunks) in the graph of every tier of
    every profile, at its own batch and tile, for the variants the profiles ship."""
    from mambaesr_runtime.export.onnx_export import export_onnx, forbidden_ops

    shapes = _profile_shapes()
    assert {v for v, _, _ in shapes} == {"student", "fast"} and len(shapes) >= 6
    for variant, batch, tile in shapes:
        raw = export_onnx(untrained(variant), tmp_path / f"{variant}_{batch}_{tile}.onnx", tile, tile, batch)
        pipeline.simplify(raw, str(tmp_path / "s.onnx"))
        graph = onnx.load(tmp_path / "s.onnx")
        assert forbidden_ops(graph) == [], (variant, batch, tile)
        assert "Pad" not in {n.op_type for n in graph.graph.node}, (variant, batch, tile)
# --- build-time parity: the plan against ONNX Runtime fp32 on real tiles and a saturated one ------------------------

def _jetson_export(tmp_path, tiny_ckpt, rec=None, version=None):
    from standins.tensorrt_standin import TRT10_VERSION, make_standins

    trt, cuda, rec = make_standins(version or TRT10_VERSION, rec)
    profile = make_profile("test-jetson", precision="fp16", tensorrt="10")
    pipeline.export_profile(profile, tmp_path, [tiny_ckpt], build=False)
    return profile, trt, cuda, rec


def test_parity_of_the_built_plan_is_recorded_in_its_manifest(tmp_path, tiny_ckpt):
    from mambaesr_runtime.export.plan_parity import PLAN_MIN_PSNR

    profile, trt, cuda, _ = _jetson_export(tmp_path, tiny_ckpt)
    [art] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    v = read_manifest(art.plan).verification
    # The stand-in engine computes the parsed graph, so it matches ONNX Runtime: the numbers are the measurement.
    assert v["parity_reference"] == "onnxruntime fp32 CPU" and v["parity_min_psnr_db"] == PLAN_MIN_PSNR
    assert v["parity_tiles"] == 4 and v["parity_tiles"] % art.manifest.input_shape[0] == 0  # whole batches
    assert v["plan_vs_ort_psnr_db"] >= v["plan_vs_ort_min_tile_psnr_db"] >= PLAN_MIN_PSNR
    assert v["plan_vs_ort_saturated_tile_psnr_db"] >= PLAN_MIN_PSNR and v["plan_vs_ort_max_abs_err"] < 1e-5
    assert v["built_by"] == "mambaesr-export" and v["infer_ms"] >= 0 and v["strongly_typed"] is False


def test_a_pad_aware_export_checks_padded_tiles_in_fp16_and_in_the_plan(tmp_path):
    """fp16 and the built plan are also checked on tiles that overhang an image (on the image part, where the
    runtime keeps the output), for a line model, whose engines are pad-aware."""
    from mambaesr_runtime.export.parity import FP16_MIN_PSNR
    from mambaesr_runtime.export.plan_parity import PLAN_MIN_PSNR

    ckpt = tmp_path / "ckpt" / "tiny_x4.safetensors"
    ckpt.parent.mkdir()
    save_checkpoint(untrained("tiny", **LINES), ckpt, variant="tiny")
    profile, trt, cuda, _ = _jetson_export(tmp_path, ckpt)
    [art] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    onnx_v, plan_v = read_manifest(art.onnx).verification, read_manifest(art.plan).verification
    assert art.manifest.pad_value is not None and read_manifest(art.plan).pad_value == art.manifest.pad_value
    assert onnx_v["fp16_padded_psnr_vs_fp32_db"] >= FP16_MIN_PSNR
    assert plan_v["parity_tiles"] == 4 + 4 and plan_v["plan_vs_ort_padded_tile_psnr_db"] >= PLAN_MIN_PSNR


def test_padded_tiles_pad_bottom_and_right_thirds_and_fp16_compares_only_the_image_part():
    from mambaesr_runtime.export.parity import FP16_MIN_PSNR, padded_tiles, real_tiles, verify_fp16

    tiles, keep = padded_tiles(real_tiles(24, 2), -1.0)
    assert keep == 16 and (tiles[..., 16:, :] == -1).all() and (tiles[..., :16, :16] >= 0).all()
    model = untrained("tiny", **LINES).set_pad_aware(True)
    assert verify_fp16(model, tiles, "cpu", keep)["fp16_psnr_vs_fp32_db"] >= FP16_MIN_PSNR


def test_a_plan_that_computes_something_else_is_refused_and_nothing_is_written(tmp_path, tiny_ckpt):
    profile, trt, cuda, rec = _jetson_export(tmp_path, tiny_ckpt)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKECACHE:5")
    before = sorted(p.name for p in tmp_path.iterdir())
    rec.output_fault = lambda x, y: y + 0.05  # 26 dB: a broken plan
    with pytest.raises(ExportError, match=r"only 2\d.\d dB PSNR from ONNX Runtime fp32 on .* must reach 40 dB on every "
                                          r"tile. It was not installed \(nothing was written\)"):
        pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    assert "trt.Builder.build_serialized_network" in rec.names()  # it was built, then refused
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no plan, no manifest, no scratch folder
    assert cache.read_bytes() == b"FAKECACHE:5"  # the timing cache of a refused build is not kept either


def test_a_refused_rebuild_keeps_the_installed_plan(tmp_path, tiny_ckpt):
    profile, trt, cuda, rec = _jetson_export(tmp_path, tiny_ckpt)
    [good] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    plan_bytes, manifest = good.plan.read_bytes(), read_manifest(good.plan)
    rec.output_fault = lambda x, y: np.full_like(y, np.nan)
    with pytest.raises(ExportError, match=r"produces inf/NaN .*\(nothing was written\)"):
        pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda, force=True)
    assert good.plan.read_bytes() == plan_bytes and read_manifest(good.plan) == manifest


def test_the_saturated_tile_catches_what_real_tiles_miss(tmp_path, tiny_ckpt):
    """A plan that goes wrong only on saturated, high-contrast content (where fp16 overflows first) is refused, and
    the message names that tile."""
    profile, trt, cuda, rec = _jetson_export(tmp_path, tiny_ckpt)

    def fails_on_saturated(x, y):
        saturated = ((x == 0) | (x == 1)).mean(axis=(1, 2, 3)) > 0.9
        return np.where(saturated[:, None, None, None], 1.0 - y, y)

    rec.output_fault = fails_on_saturated
    with pytest.raises(ExportError, match="on the saturated tile"):
        pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)


def test_saturated_tile_is_saturated_and_high_contrast():
    from mambaesr_runtime.export.plan_parity import parity_tiles, saturated_tile

    tile = saturated_tile(64)
    assert tile.shape == (3, 64, 64) and tile.dtype == np.float32
    assert set(np.unique(tile)) == {0.0, 1.0}  # every value at a clipping limit
    assert (tile[:, :12] == 1).all() and (tile[:, -12:] == 0).all()
    assert np.abs(np.diff(tile[:, 32], axis=-1)).mean() > 0.3  # hard edges along the checkerboard rows
    tiles = parity_tiles(16, 3)
    assert tiles.shape == (6, 3, 16, 16) and np.array_equal(tiles[-1], saturated_tile(16))


def test_trt11_fp16_plan_passes_parity_through_its_fp16_graph(tmp_path, tiny_ckpt):
    from standins.tensorrt_standin import TRT11_VERSION

    profile, trt, cuda, _ = _jetson_export(tmp_path, tiny_ckpt, version=TRT11_VERSION)
    [art] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    v = art.plan_manifest.verification
    assert v["strongly_typed"] is True and art.plan_manifest.versions["tensorrt"] == TRT11_VERSION
    assert v["plan_vs_ort_min_tile_psnr_db"] >= 40  # the tiny model, computed from its fp16 conversion


def test_adopt_plan_checks_a_trtexec_plan_and_writes_its_manifest(tmp_path, tiny_ckpt):
    from mambaesr_runtime.export.tensorrt_build import build_engine

    profile, trt, cuda, rec = _jetson_export(tmp_path, tiny_ckpt)
    plan = tmp_path / "tiny_x4_t16_b4_fp16.plan"  # the name build_engines.sh gives it
    build_engine(tmp_path / "tiny_x4_t16_b4.onnx", plan, target="10", input_shape=(4, 3, 16, 16), precision="fp16",
                 workspace_mb=64, trt=trt, cuda=cuda)  # what trtexec would have written
    rec.output_fault = lambda x, y: y + 0.05
    with pytest.raises(ExportError, match="nothing was written"):
        pipeline.adopt_plan(plan, profile, trt=trt, cuda=cuda)
    assert not manifest_path(plan).exists() and plan.is_file()  # the user's plan is left alone
    rec.output_fault = None
    art = pipeline.adopt_plan(plan, profile, trt=trt, cuda=cuda)
    m = read_manifest(plan)
    assert m == art.plan_manifest and m.kind == "plan" and m.artifact_sha256 == sha256_file(plan)
    assert m.verification["built_by"].startswith("trtexec") and m.verification["plan_vs_ort_psnr_db"] >= 40
    assert m.versions["tensorrt"] == trt.__version__ and m.device == rec.device_name
    assert m.onnx_sha256 == read_manifest(tmp_path / "tiny_x4_t16_b4.onnx").onnx_sha256
    with pytest.raises(ExportError, match=r"not the name of a plan of profile test-jetson; its tiers' plans are "
                                          r"\['tiny_x4_t16_b4_fp16.plan'\]"):
        pipeline.adopt_plan(plan.rename(tmp_path / "mine.plan"), profile, trt=trt, cuda=cuda)


# ------------------------------------------------------------------------- mask-free twins (issue 19 item 4)
def _lines_ckpt(tmp_path):
    ckpt = tmp_path / "ckpt" / "tiny_x4.safetensors"
    ckpt.parent.mkdir(exist_ok=True)
    torch.manual_seed(0)
    save_checkpoint(untrained("tiny", **LINES), ckpt, variant="tiny")
    return ckpt


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_a_pad_aware_export_has_a_mask_free_twin_that_equals_it_where_no_tile_is_padded(tmp_path):
    """Beside the pad-aware graph: the same weights without the valid-map masks (fewer nodes, no input Clip), its
    manifest naming the graph it stands in for; on an image that covers a whole tile the two agree to float
    rounding, and a rerun reuses the twin. A graph without masks (the raster tiny model) gets none."""
    from mambaesr_runtime.backends.onnxruntime import OrtBackend
    from mambaesr_runtime.runtime.tiling import upscale_tiled

    out = tmp_path / "engines"
    [art] = pipeline.export_profile(make_profile(tiers=(("t", "tiny", 24, 2, 2),)), out, [_lines_ckpt(tmp_path)])
    twin = art.interior
    assert twin.onnx == out / "tiny_x4_t24_b2_interior.onnx" and not twin.reused
    m = read_manifest(twin.onnx)
    assert m == twin.manifest and m.interior_of == art.onnx.name and m.pad_value is None
    assert (m.weights_sha256, m.input_shape, m.precision) == (art.manifest.weights_sha256, art.manifest.input_shape,
                                                              "fp32")
    assert m.verification["ort_vs_torch_max_abs_err"] <= parity.FP32_TOLERANCE
    assert m.verification["interior_vs_pad_aware_max_abs_err"] <= parity.FP32_TOLERANCE
    masked, plain = _ops(art.onnx), _ops(twin.onnx)
    assert len(plain) < len(masked) and plain.count("Clip") < masked.count("Clip")
    img = np.random.default_rng(2).random((30, 41, 3), dtype=np.float32)  # >= the tile both ways: no padding
    with OrtBackend(art.onnx, threads=1) as a, OrtBackend(twin.onnx, threads=1) as b:
        np.testing.assert_allclose(upscale_tiled(b.infer, img, 4, 24, 2, 2, pad_value=b.pad_value),
                                   upscale_tiled(a.infer, img, 4, 24, 2, 2, pad_value=a.pad_value), rtol=0, atol=1e-5)
    stamp = twin.onnx.stat().st_mtime_ns
    [again] = pipeline.export_profile(make_profile(tiers=(("t", "tiny", 24, 2, 2),)), out, [_lines_ckpt(tmp_path)])
    assert again.interior.reused and again.interior.onnx.stat().st_mtime_ns == stamp
    [raster] = pipeline.export_profile(make_profile(), tmp_path / "raster", [_raster_ckpt(tmp_path)])
    assert raster.manifest.pad_value is None and raster.interior is None
    assert not list((tmp_path / "raster").glob("*interior*"))


def _raster_ckpt(tmp_path):
    ckpt = tmp_path / "raster_ckpt" / "tiny_x4.safetensors"
    ckpt.parent.mkdir(exist_ok=True)
    save_checkpoint(untrained("tiny"), ckpt, variant="tiny")
    return ckpt


def test_a_twin_that_disagrees_with_its_graph_is_refused_and_not_left_behind(tmp_path, monkeypatch):
    real = pipeline.check_interior
    # tiles holding padding: there the masks are 0 and the twin computes something else, as a wrong twin would
    monkeypatch.setattr(pipeline, "check_interior", lambda twin, main, tiles, threads=2: real(
        twin, main, np.where(tiles > 0.5, np.float32(-1), tiles), threads))
    with pytest.raises(ExportError, match="disagree by .* on tiles without padding"):
        pipeline.export_profile(make_profile(tiers=(("t", "tiny", 24, 2, 2),)), tmp_path, [_lines_ckpt(tmp_path)])
    assert not list(tmp_path.glob("*interior*"))


def test_twin_plans_are_built_checked_and_adopted_like_the_tiers_own(tmp_path, monkeypatch):
    """TensorRT profiles: the twin gets its own plan (``..._interior_fp16.plan``, parity-checked) from
    ``--plans-only``, ``--adopt-plan`` knows its name, and without TensorRT it has its own trtexec command."""
    profile, trt, cuda, rec = _jetson_export(tmp_path, _lines_ckpt(tmp_path))
    rec.network_input = ("lr", (4, 3, 16, 16))
    [art] = pipeline.build_plans(profile, tmp_path, trt=trt, cuda=cuda)
    twin = art.interior
    assert twin.plan == tmp_path / "tiny_x4_t16_b4_interior_fp16.plan" and twin.plan.is_file()
    pm = read_manifest(twin.plan)
    assert pm.interior_of == art.onnx.name and pm.onnx_sha256 == twin.manifest.onnx_sha256 and pm.pad_value is None
    assert pm.verification["plan_vs_ort_min_tile_psnr_db"] >= 40
    assert "plan_vs_ort_padded_tile_psnr_db" not in pm.verification  # no padding ever reaches a twin
    manifest_path(twin.plan).unlink()
    adopted = pipeline.adopt_plan(twin.plan, profile, trt=trt, cuda=cuda)
    assert read_manifest(twin.plan).interior_of == art.onnx.name and adopted.onnx == twin.onnx
    monkeypatch.setattr(pipeline, "find_tensorrt", lambda: None)
    [pending] = pipeline.export_profile(profile, tmp_path / "notrt", [_lines_ckpt(tmp_path)])
    assert "tiny_x4_t16_b4_interior.onnx" in pending.interior.trtexec
    assert "tiny_x4_t16_b4_interior_fp16.plan" in pending.interior.trtexec
def test_a_tier_is_exported_with_its_small_image_engine():
    from mambaesr_runtime.export.pipeline import _chosen
    from mambaesr_runtime.profiles import load_profile

    cpu = load_profile("cpu")
    assert [(t.name, t.tile, t.batch) for t in _chosen(cpu, ["balanced"])] == [("balanced", 264, 1),
                                                                                ("balanced-small", 32, 1)]
    assert [t.name for t in _chosen(cpu, None)] == [t.name for t in cpu.engine_tiers()]
