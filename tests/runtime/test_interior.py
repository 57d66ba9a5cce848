"""Mask-free twins (issue 19 item 4): a pad-aware engine's masks cost ~7 % of every tile, yet only an image smaller
than a tile has padded tiles. Images that cover a whole tile run on the engine's twin without masks: same result to
float rounding, found beside the engine by name and manifest, and never used where it would be wrong."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from mambaesr_runtime.artifacts.manifest import manifest_path, read_manifest
from mambaesr_runtime.artifacts.names import interior_name, shipped_dir
from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.engines import interior_twin
from mambaesr_runtime.runtime.upscaler import Upscaler

FAST = "fast_x4_t264_b1.onnx"


def test_twin_names_sit_after_the_tiers_stem():
    assert interior_name("e/student_x4_t264_b1.onnx").as_posix() == "e/student_x4_t264_b1_interior.onnx"
    assert interior_name("student_x4_t64_b8_fp16_dla0.plan").name == "student_x4_t64_b8_interior_fp16_dla0.plan"
    for bad in ("my_model.onnx", "student_x4_t264_b1_interior.onnx"):
        with pytest.raises(ConfigError, match="not an exported tier engine"):
            interior_name(bad)


def test_every_shipped_pad_aware_fp32_graph_ships_its_twin():
    """The cpu and rpi5 tiers' fp32 graphs are pad-aware; each has an intact twin from the same weights (int8 graphs
    have none: a twin quantized on its own would compute other integers)."""
    names = {t.variant for p in ("cpu", "rpi5") for t in load_profile(p).tiers if (t.precision or "fp32") == "fp32"}
    for variant in names:
        engine = shipped_dir() / f"{variant}_x4_t264_b1.onnx"
        twin = interior_twin("onnxruntime", engine)
        assert twin == interior_name(engine), variant
        m = read_manifest(twin)
        assert m.interior_of == engine.name and m.weights_sha256 == read_manifest(engine).weights_sha256
        assert m.verification["interior_vs_pad_aware_max_abs_err"] <= 1e-4
    assert interior_twin("onnxruntime", shipped_dir() / "student_x4_t264_b1_int8.onnx") is None


def _image(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The fast engine copied into a folder of its own: no twin beside it."""
    folder = tmp_path_factory.mktemp("alone")
    for name in (FAST, FAST + ".manifest.json"):
        shutil.copy(shipped_dir() / name, folder / name)
    return folder / FAST


def test_an_image_covering_a_tile_runs_on_the_twin_and_a_smaller_one_on_the_engine(alone):
    big, small = _image(270, 300), _image(100, 264)
    with Upscaler(model=shipped_dir() / FAST) as up, Upscaler(model=alone) as ref:
        assert up.summary()["interior_engine"].endswith("fast_x4_t264_b1_interior.onnx")
        assert ref.summary()["interior_engine"] is None
        assert np.array_equal(up.upscale(small), ref.upscale(small))  # padded tiles: the pad-aware engine itself
        assert not any(up._twins.values())  # the twin is not even opened for it
        got, want = up.upscale(big), ref.upscale(big)
        assert any(up._twins.values())
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # float rounding of the fused graph, at most one grey level


def test_the_default_profile_uses_the_students_twin_for_large_images():
    with Upscaler() as up:
        assert up.engine.interior == shipped_dir() / "student_x4_t264_b1_interior.onnx"
        assert "mask-free twin student_x4_t264_b1_interior.onnx" in up.describe()


def test_a_twin_whose_manifest_does_not_match_is_left_out_with_the_reason(tmp_path, caplog):
    for name in (FAST, FAST + ".manifest.json"):
        shutil.copy(shipped_dir() / name, tmp_path / name)
    twin = interior_name(tmp_path / FAST)
    shutil.copy(shipped_dir() / twin.name, twin)
    data = json.loads((shipped_dir() / (twin.name + ".manifest.json")).read_text())
    manifest_path(twin).write_text(json.dumps({**data, "weights_sha256": "0" * 64}))
    with caplog.at_level(logging.WARNING, logger="mambaesr_runtime.runtime.engines"):
        assert interior_twin("onnxruntime", tmp_path / FAST) is None
    assert "does not match fast_x4_t264_b1.onnx (weights_sha256)" in caplog.text
    manifest_path(twin).write_text(json.dumps({**data, "interior_of": None}))
    assert interior_twin("onnxruntime", tmp_path / FAST) is None
    manifest_path(twin).unlink()  # a twin without a manifest is not a twin
    assert interior_twin("onnxruntime", tmp_path / FAST) is None
    assert interior_twin("torch", shipped_dir() / "fast_x4.safetensors") is None


def test_a_twin_that_fails_to_open_falls_back_to_the_engine(tmp_path, caplog):
    for name in (FAST, FAST + ".manifest.json"):
        shutil.copy(shipped_dir() / name, tmp_path / name)
    twin = interior_name(tmp_path / FAST)
    shutil.copy(shipped_dir() / (twin.name + ".manifest.json"), manifest_path(twin))
    twin.write_bytes(b"not an onnx file")
    big = _image(264, 270)
    with Upscaler(model=tmp_path / FAST) as up, caplog.at_level(logging.WARNING):
        assert up.engine.interior == twin
        out = up.upscale(big)
    assert out.shape == (1056, 1080, 3) and "mask-free twin fast_x4_t264_b1_interior.onnx not used" in caplog.text


def test_the_memory_estimate_counts_the_twin_where_an_image_runs_on_it(alone):
    """An image of a whole tile runs on the twin: the estimate adds the engine's fixed part (loaded, never run), or
    the whole engine once it has run an image (ONNX Runtime keeps a session's working memory); a small image on the
    engine alone adds nothing for a twin that never ran."""
    from mambaesr_runtime.runtime.memory import ENGINE_FIXED_BYTES, engine_bytes

    with Upscaler(model=shipped_dir() / FAST) as up, Upscaler(model=alone) as ref:
        main = engine_bytes(up.engine.backend, "fast", "fp32")
        fresh = up.memory_estimate(300, 300).total - ref.memory_estimate(300, 300).total
        assert fresh == ENGINE_FIXED_BYTES
        assert up.memory_estimate(100, 300).total == ref.memory_estimate(100, 300).total  # on the engine: no twin
        up.upscale(_image(100, 300))  # the engine runs (a padded tile) and keeps its working memory
        assert up.memory_estimate(300, 300).total - ref.memory_estimate(300, 300).total == main
