"""Every variant builds at every scale with the right output shape and parameter budget; the network is sane."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaesr_runtime.errors import ConfigError
from mambaesr_runtime.model.config import PARAM_BUDGETS, SCALES, VARIANTS, ModelConfig, variant
from mambaesr_runtime.model.net import MambaESR, build_model, count_parameters
from tinymodels import TINY, untrained


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("scale", SCALES)
def test_variant_builds_with_budget_and_shape(name, scale):
    model = build_model(variant(name, scale=scale)).eval()
    if name in PARAM_BUDGETS:
        assert count_parameters(model) <= PARAM_BUDGETS[name]
    if name == "teacher":
        cfg = model.cfg
        assert 96 <= cfg.embed_dim <= 128 and 8 <= cfg.num_blocks <= 12
        assert count_parameters(model) > 4 * PARAM_BUDGETS["student"]  # a teacher worth distilling from
    x = torch.rand(1, 3, 7, 9)  # odd sizes: chunks pad inside the scan
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["student", "fast"])
def test_shipped_variants_scan_four_directions_without_padding_on_their_tiles(name):
    """Both orientations, forward and reverse (alternating between mixers), and the CPU profile's tiles (264 pixels:
    132-token half-resolution lines, 4 chunks of 33) are whole chunks, nothing padded."""
    from mambaesr_runtime.model.scan import line_chunking
    from mambaesr_runtime.profiles import load_profile

    cfg = VARIANTS[name]
    assert cfg.scan_layout == "lines" and len(cfg.directions) == 4 and cfg.num_blocks * cfg.mixers_per_block >= 2
    tile = next(t.tile for t in load_profile("cpu").tiers if t.variant == name)
    q, k = line_chunking(tile // cfg.scan_stride, cfg.chunk)
    assert q * k == tile // cfg.scan_stride


def test_fresh_model_starts_near_nearest_neighbour_upscaling():
    """The global residual means an untrained net already outputs roughly the upscaled input, not noise."""
    torch.manual_seed(0)
    model = build_model(variant("tiny", scale=2)).eval()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        y = model(x)
    nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert (y - nearest).abs().mean() < 0.5
    # and every output pixel depends on its own input pixel: change one input pixel, its 2x2 block changes most
    x2 = x.clone()
    x2[0, 0, 3, 3] += 0.5
    with torch.no_grad():
        delta = (model(x2) - y).abs()[0, 0]
    assert delta[6:8, 6:8].mean() > delta.mean()


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = build_model(variant("tiny")).eval()
    x = torch.rand(3, 3, 8, 5)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_the_untrained_model_is_the_nearest_neighbour_upscale():
    x = torch.rand(2, 3, 6, 7)
    with torch.no_grad():
        out = build_model(variant("tiny")).eval()(x)
    torch.testing.assert_close(out, x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3), rtol=0, atol=0)


@pytest.mark.parametrize("layout", sorted(TINY))
def test_gradients_flow_to_every_parameter(layout):
    # (untrained: the zero-initialised last conv passes no gradient back until it has been updated once)
    model = untrained("tiny", **TINY[layout]).train()
    model(torch.rand(2, 3, 6, 7)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("layout", sorted(TINY))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward_is_finite(dtype, layout):
    model = untrained("tiny", **TINY[layout]).to(dtype)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 12, 10, dtype=dtype))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("layout", sorted(TINY))
def test_chunk_is_only_a_speed_knob(layout):
    a = untrained("tiny", chunk=3, **TINY[layout])
    b = untrained("tiny", chunk=16, **TINY[layout])
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, words", [
    (dict(scale=5), "scale must be one of"),
    (dict(inner_dim=10, heads=3), "multiple of heads"),
    (dict(directions=("row", "diagonal")), "directions must be"),
    (dict(embed_dim=0), "embed_dim must be a positive integer"),
    (dict(scan_layout="zigzag"), "scan_layout must be one of"),
    (dict(scan_stride=2), "scan_stride needs scan_layout 'lines'"),
    (dict(scan_layout="lines", heads=2), "one head per orientation"),
    (dict(scan_layout="lines", heads=1, scan_stride=3), "scan_stride must be one of"),
    (dict(ffn_kind="mlp"), "ffn_kind must be one of"),
    (dict(mixers_per_block=-1), "mixers_per_block must be an integer >= 0"),
])
def test_invalid_configs_are_rejected_with_the_reason(bad, words):
    with pytest.raises(ConfigError, match=words):
        VARIANTS["tiny"].replace(**bad)


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = variant("student", scale=3)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="model config: unknown keys \\['depth'\\]"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match="valid variants are"):
        variant("huge")


def test_model_is_the_one_class():
    assert isinstance(build_model(variant("tiny")), MambaESR)


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (7, 9), (13, 8)])
def test_line_layout_handles_any_size_and_batch(h, w):
    """Odd sizes are replicated to the scan stride inside the mixer and cropped back; batch items stay apart."""
    model = untrained("tiny", **TINY["lines"])
    x = torch.rand(3, 3, h, w)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert together.shape == (3, 3, 4 * h, 4 * w) and torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_line_mixers_alternate_rows_and_columns():
    model = untrained("tiny", **TINY["lines"], num_blocks=3, mixers_per_block=1)
    assert [b.mixers[0].orient for b in model.blocks] == ["row", "col", "row"]


def test_a_line_mixer_sees_its_whole_row_and_nothing_beyond_its_stride_neighbourhood():
    """A row mixer (stride 2) mixes along its (half-resolution) row: an input change far along the row moves the
    mixer's output there, while a change far up the column does not (only the depthwise conv's rows are seen)."""
    torch.manual_seed(0)
    model = untrained("tiny", **TINY["lines"])
    mixer = model.blocks[0].mixers[0]
    x = torch.rand(1, model.cfg.embed_dim, 16, 32)
    with torch.no_grad():
        base = mixer(x)
        along, across = x.clone(), x.clone()
        along[..., 8, 30] += 1.0
        across[..., 0, 2] += 1.0
        d_along = (mixer(along) - base).abs()[..., 8:10, 0:4].sum()
        d_across = (mixer(across) - base).abs()[..., 8:10, 0:4].sum()
    assert d_along > 1e-6 and d_across == 0


# ------------------------------------------------------------------------------------------- pad-aware tiles
@pytest.mark.parametrize("layout, h, w", [("lines", 20, 26), ("lines", 32, 12), ("lines", 6, 30),
                                          ("diagonals", 20, 26), ("diagonals", 6, 30),
                                          ("context", 20, 28), ("context", 8, 36)])
def test_a_pad_aware_tile_of_a_small_image_is_the_whole_image_result(layout, h, w):
    """A 32x40 tile holding an h x w image and PAD_VALUE elsewhere gives, on the image, what the whole image gives
    (sizes that are multiples of the scan stride: exactly, up to float rounding), while a replicated border leaks in
    through the scans and convs."""
    from mambaesr_runtime.geometry import PAD_VALUE

    model = untrained("tiny", **TINY[layout], num_blocks=2)
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        whole = model(x)
        padded = F.pad(x, (0, 40 - w, 0, 32 - h), value=PAD_VALUE)
        aware = model.set_pad_aware(True)(padded)[..., :4 * h, :4 * w]
        edge = model.set_pad_aware(False)(F.pad(x, (0, 40 - w, 0, 32 - h), mode="replicate"))[..., :4 * h, :4 * w]
    torch.testing.assert_close(aware, whole, rtol=1e-5, atol=1e-5)
    assert (edge - whole).abs().max() > 1e-3


@pytest.mark.parametrize("pad_value", [-1.0, -2.0, -0.25])
def test_the_valid_map_is_derived_from_the_pad_value_and_exact_at_both_ends(pad_value):
    """0 exactly at the pad value, 1 exactly on [0, 1]; the shipped mask is the one PAD_VALUE derives."""
    from mambaesr_runtime.geometry import PAD_VALUE
    from mambaesr_runtime.model import net

    shift, gain = net.mask_coefficients(pad_value)
    x = torch.tensor([pad_value, 0.0, 1e-7, 0.5, 1.0])
    assert torch.clamp((x + shift) * gain, 0, 1).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert net.mask_coefficients(PAD_VALUE) == (net._MASK_SHIFT, net._MASK_GAIN) == (0.5, 4.0)  # graphs unchanged
    pixels = torch.tensor([PAD_VALUE, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert net.ValidMap(pixels).map.flatten().tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="below the pixel range"):
        net.mask_coefficients(0.0)


def test_pad_awareness_changes_nothing_on_a_tile_without_padding_and_needs_line_scans():
    model = untrained("tiny", **TINY["lines"])
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        plain = model(x)
        aware = model.set_pad_aware(True)(x)
    torch.testing.assert_close(aware, plain, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="lines"):
        untrained("tiny", **TINY["raster"]).set_pad_aware(True)


# ---------------------------------------------------------------------------------------------- fp16-safe norms
def _psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    mse = (got.double() - want.double()).pow(2).mean()
    return float(10 * torch.log10(want.double().abs().max() ** 2 / mse))


def test_the_norm_is_safe_in_fp16_for_any_magnitude():
    """Tokens from 1e-3 to 3e4 (squares up to 9e8, far past fp16's 65504): the plain x / sqrt(mean(x**2)) gives
    zeros or NaN in fp16; rms_normalize stays finite and matches the exact normalisation."""
    from mambaesr_runtime.model.net import rms_normalize

    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 4, 64)[:, None]  # x3 (randn) stays below fp16's 65504
    x = torch.randn(64, 48, generator=g) * scales
    exact = x.double() / x.double().pow(2).mean(-1, keepdim=True).sqrt()
    half = x.half()
    plain = half / torch.sqrt(half.pow(2).mean(-1, keepdim=True))
    assert not torch.isfinite(plain).all() or (plain == 0).all(-1).any()  # the failure this guards against
    safe = rms_normalize(half, dim=-1)
    assert torch.isfinite(safe).all()
    assert _psnr(safe, exact) >= 40
    torch.testing.assert_close(rms_normalize(x.double(), dim=-1), exact, rtol=2e-5, atol=0)


@pytest.mark.parametrize("layout", sorted(TINY))
def test_mixers_run_in_fp16_with_activations_that_would_overflow_a_plain_norm(layout):
    """A checkpoint scaled so that the activations entering a mixer's norm pass 1,000 (their squares overflow
    fp16): the mixer branch in fp16 stays finite and within 40 dB of fp32."""
    model = untrained("tiny", **TINY[layout], embed_dim=16, inner_dim=16)
    block = model.blocks[0]
    mixer = block.mixers[0] if len(block.mixers) else model.context.mixers[0]
    x = torch.rand(1, 16, 16, 16)
    seen = []
    if TINY[layout].get("scan_layout") == "lines":  # the norm sits inside, after the in-conv: scale that conv
        with torch.no_grad():
            mixer.inp.weight.mul_(4000.0)
        mixer.local.register_forward_hook(lambda m, a, out: seen.append(float(F.silu(out).abs().max())))
        branch = mixer
    else:  # the legacy pre-norm sees the residual stream itself
        x = x * 2000.0
        block.norms[0].register_forward_hook(lambda m, a, out: seen.append(float(a[0].abs().max())))
        branch = lambda t: block.mixers[0](block.norms[0](t))
    with torch.no_grad():
        want = branch(x)
        block.half()
        mixer.half()
        got = branch(x.half())
    assert min(seen) > 1000, seen  # what the norm sees squares past fp16's 65504
    assert torch.isfinite(got).all()
    assert _psnr(got, want) >= 40


def test_line_mixers_start_silent_and_still_learn():
    """A fresh line mixer adds exactly 0 to its block (the conv path trains undisturbed), yet its out conv gets a
    gradient at once, so the scan joins in as soon as it helps."""
    model = build_model(variant("tiny", **TINY["lines"])).train()
    mixer = model.blocks[0].mixers[0]
    x = torch.rand(2, model.cfg.embed_dim, 8, 10)
    out = mixer(x)
    assert torch.equal(out, torch.zeros_like(out))
    out.square().add(out).sum().backward()
    assert mixer.out.weight.grad.abs().sum() > 0


def test_mixer_every_puts_mixers_in_every_kth_block_with_orientations_taking_turns():
    model = untrained("tiny", **TINY["lines"], num_blocks=6, mixer_every=2)
    assert [len(block.mixers) for block in model.blocks] == [0, 1, 0, 1, 0, 1]
    assert [m.orient for block in model.blocks for m in block.mixers] == ["row", "col", "row"]
    assert model.cfg.num_mixers == 3
    with pytest.raises(ConfigError, match="mixer_every"):
        variant("tiny", **TINY["lines"], num_blocks=2, mixer_every=3)


def test_the_context_stream_starts_silent_reads_its_tap_and_adds_after_its_merge():
    cfg = variant("tiny", **{**TINY["lines"], "num_blocks": 3, "mixers_per_block": 0, "context_mixers": 2,
                             "context_tap": 1, "context_merge": 2})
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.upsample.weight.normal_(std=0.05)
    conv_only = build_model(cfg.replace(context_mixers=0)).eval()
    conv_only.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("context.")})
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), conv_only(x), rtol=0, atol=0)  # merge conv at zero: adds nothing
        model.context.merge.weight.normal_(std=0.05)
        seen = {}
        model.context.register_forward_hook(lambda m, a, out: seen.update(inp=a[0].clone(), out=out.clone()))
        stages = []
        for block in model.blocks:
            block.register_forward_hook(lambda m, a, out: stages.append(a[0].clone()))
        model(x)
    assert [m.orient for m in model.context.mixers] == ["row", "col"]
    assert seen["out"].shape == seen["inp"].shape  # half-resolution inside, full resolution out
    torch.testing.assert_close(seen["inp"], stages[1])  # read after block 0 (context_tap=1)
    assert seen["out"].abs().max() > 0
    with pytest.raises(ConfigError, match="context_tap <= context_merge"):
        variant("tiny", **TINY["lines"], context_mixers=1, context_tap=1, context_merge=0)
    with pytest.raises(ConfigError, match="context_mixers needs scan_layout"):
        variant("tiny", context_mixers=1)


def test_a_context_mixer_sees_its_whole_low_resolution_line():
    """A change at one corner reaches the far end of its row through the quarter-resolution stream, where the conv
    path alone never reaches."""
    model = untrained("tiny", **{**TINY["context"], "context_mixers": 1})  # one row mixer
    with torch.no_grad():
        model.context.mixers[0].A_log.fill_(-8.0)  # large steps, slow decay: the far end hears clearly
        model.context.mixers[0].dt_bias.fill_(3.0)
    x = torch.rand(1, 3, 16, 64)
    y = x.clone()
    y[..., :4, :4] += 0.5
    with torch.no_grad():
        far = (model(y) - model(x))[..., :16, -16:].abs().max()
        model.context = None
        conv_only = (model(y) - model(x))[..., :16, -16:].abs().max()
    assert far > 1e-5 and conv_only == 0
