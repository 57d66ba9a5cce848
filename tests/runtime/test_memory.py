"""The working-memory estimate and its limit: what it counts (deterministic: the parts, not a timing or an RSS; the
comparison with measured peak RSS is benchmarks/bad_inputs.py's "issue 24 memory" cases), and that an image or an
engine over the limit is refused before any decode or model run, naming the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaesr_runtime.cli.run import main
from mambaesr_runtime.errors import ConfigError, MambaESRError
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.runtime import memory
from mambaesr_runtime.runtime import upscaler as upscaler_module
from mambaesr_runtime.runtime.imageio import write_image
from mambaesr_runtime.runtime.memory import MB, estimate_memory
from mambaesr_runtime.runtime.upscaler import Upscaler
from tinymodels import dynamic_sr_onnx, untrained


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    return export_onnx(untrained("tiny"), tmp_path_factory.mktemp("engine") / "tiny_t16_b2.onnx", 16, 16, batch=2)


def parts(estimate):
    return dict(estimate.parts)


SHIPPED = dict(scale=4, tile=(264, 264), overlap=4, batch=1, engine=300 * MB)


def test_a_strip_costs_its_own_pixels_not_a_band_of_the_whole_width():
    short, long = estimate_memory(1, 20000, **SHIPPED), estimate_memory(1, 60000, **SHIPPED)
    blend = parts(short)["blend"], parts(long)["blend"]
    assert max(blend) < 1 * MB and abs(blend[0] - blend[1]) < 1024  # a few rows of one tile, whatever the length
    # 40,000 more LR pixels: 12 B each as floats, 3 B decoded and 48 B of output (x4, RGB): nothing else grows
    assert abs(long.total - short.total - 40000 * (12 + 3 + 48)) < 1024


def test_the_encoder_and_the_file_are_counted_where_they_are_the_peak():
    array = estimate_memory(1024, 1024, **SHIPPED)
    png = estimate_memory(1024, 1024, **SHIPPED, suffix=".png", file_bytes=3 << 20)
    webp = estimate_memory(1024, 1024, **SHIPPED, suffix=".webp")
    assert "encoding" not in parts(array) and array.total < png.total < webp.total
    assert parts(webp)["encoding"] == memory.WEBP_BYTES_PER_PIXEL * 4096 * 4096
    rgba16 = estimate_memory(1024, 1024, **SHIPPED, channels=4, itemsize=2)
    assert parts(rgba16)["output"] == 4096 * 4096 * 8  # the output keeps the input's kind and depth


def test_an_engine_without_a_measured_figure_gets_the_general_rule():
    class Backend:
        name, input_shape, scale, manifest = "onnxruntime", (1, 3, 100, 100), 4, None

    assert memory.engine_bytes(Backend()) == memory.ENGINE_FIXED_BYTES + 10000 * (1024 + 16 * 3 * 4 * 16)
    assert memory.engine_bytes(Backend(), "student", "fp32") == memory.ENGINE_FIXED_BYTES + 10000 * 4100


@pytest.mark.parametrize("available, limit", [(1 << 30, 0.9 * 1024), (100 << 30, 4096), (None, 4096)])
def test_the_default_limit_is_4096_mb_or_90_percent_of_what_is_available(monkeypatch, available, limit):
    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    mb, origin = memory.default_limit()
    assert mb == pytest.approx(limit) and origin.startswith("the default")
    assert ("available" in origin) == (limit < 4096)


def test_an_image_over_the_limit_is_refused_before_it_is_decoded(tiny_onnx, tmp_path, monkeypatch):
    src = write_image(tmp_path / "big.png", np.zeros((600, 600, 3), np.uint8))
    with Upscaler(model=tiny_onnx, overlap=4) as up:
        small = up.memory_estimate(8, 8).mb
        big = up.memory_estimate(600, 600, suffix=".png", file_bytes=src.stat().st_size).mb
        limit = (small + up.memory_estimate(600, 600).mb) / 2  # the array alone is over it too
    monkeypatch.setattr(upscaler_module, "read_photo", lambda *a, **k: pytest.fail("the input was decoded"))
    monkeypatch.setattr(upscaler_module, "decode", lambda *a, **k: pytest.fail("the array was converted"))
    with Upscaler(model=tiny_onnx, overlap=4, max_memory_mb=limit) as up:
        with pytest.raises(MambaESRError, match=rf"big.png: upscaling the 600x600 input \(2400x2400 output\) needs "
                                                rf"about {big:.0f} MB \(.*output 16 MB.*\) of working memory, above "
                                                rf"the {limit:.0f} MB limit \(max_memory_mb\); crop or split"):
            up.upscale_file(src, tmp_path / "out.png")
        with pytest.raises(MambaESRError, match="above the"):
            up.upscale(np.zeros((600, 600, 3), np.uint8))
    assert not (tmp_path / "out.png").exists()


def test_an_engine_whose_tile_alone_is_over_the_limit_is_refused_when_opened(tiny_onnx):
    with pytest.raises(ConfigError, match=r"tiny_t16_b2.onnx \(onnxruntime, 16x16 tiles, batch 2\) needs about "
                                          r"\d+ MB .* for any image, above the 50 MB limit \(max_memory_mb\); choose "
                                          r"an engine with a smaller tile"):
        Upscaler(model=tiny_onnx, overlap=4, max_memory_mb=50)
    with pytest.raises(ConfigError, match="max_memory_mb must be a positive number"):
        Upscaler(model=tiny_onnx, overlap=4, max_memory_mb=float("nan"))


def test_a_dynamic_onnx_at_a_huge_tile_is_refused_having_run_only_a_small_probe(tmp_path, monkeypatch):
    """Before: the probe ran at the tile asked for (4000x4000 of an x4 model: gigabytes) before anything could be
    weighed. Now it runs at 64x64 and the tile's working memory is checked before any larger run."""
    import onnxruntime

    path, _ = dynamic_sr_onnx(tmp_path / "user_x4.onnx", scale=4)
    seen = []
    real_run = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, out, feed, *a: (
        seen.append(next(iter(feed.values())).shape), real_run(self, out, feed, *a))[1])
    with pytest.raises(ConfigError, match=r"user_x4.onnx \(onnxruntime, 4000x4000 tiles, batch 1\) needs about .* "
                                          r"for any image, above the 4096 MB limit .*; give a smaller tile \(e.g. "
                                          r"tile=264\)"):
        Upscaler(model=path, tile=4000, max_memory_mb=4096)
    assert seen == [(1, 3, 64, 64)]
    seen.clear()
    with Upscaler(model=path, tile=200, overlap=4) as up:  # probed small, then its first real run is checked too
        assert up.engine.backend.input_shape == (1, 3, 200, 200) and up.scale == 4
        assert up.upscale(np.zeros((30, 30, 3), np.uint8)).shape == (120, 120, 3)
    assert seen == [(1, 3, 64, 64), (1, 3, 200, 200)]


def test_the_cli_names_its_flag_and_writes_nothing(tiny_onnx, tmp_path, capsys):
    src = write_image(tmp_path / "in.png", np.zeros((300, 300, 3), np.uint8))
    with Upscaler(model=tiny_onnx, overlap=4) as up:
        limit = up.memory_estimate(1, 1).mb + 1  # the engine fits, the image does not
    assert main([str(src), "--model", str(tiny_onnx), "--overlap", "4", "-q", "--max-memory", f"{limit}"]) == 2
    err = capsys.readouterr().err
    assert "in.png: upscaling the 300x300 input" in err and "raise the limit (--max-memory)" in err
    assert "limit (--max-memory)" in err and not (tmp_path / "in_x4.png").exists()
    assert main([str(src), "--model", str(tiny_onnx), "-q", "--max-memory", "-5"]) == 2
    assert "--max-memory must be a positive number of MB, got -5.0" in capsys.readouterr().err
