"""The reference MambaESR network: shallow conv -> Mamba blocks -> conv -> pixel-shuffle upsampler, global residual.

One definition serves training, evaluation, the torch backend and ONNX export (export wraps it, never copies it).
Every op is chosen to export to plain ONNX with static shapes (Conv, MatMul, Exp, Transpose, Reshape, Resize,
DepthToSpace, reductions, elementwise): no LayerNormalization/Gelu nodes that older TensorRT parsers lack, no loops,
no CumSum (TensorRT < 10.8 runs it as a loop), and norms that cannot overflow in fp16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..geometry import PAD_VALUE
from .config import ModelConfig
from .scan import diagonal_line_mask, from_diagonal_lines, orientations, scan_2d, scan_lines, to_diagonal_lines

#: The norm's working scale: each token is divided by its largest magnitude, then multiplied by this, so its
#: squares are at most 256 and their sum over up to 255 channels stays below fp16's 65504; the mean of the squares
#: is then at least 256 / channels, so the eps below it never matters by more than ~1e-5 relative.
_NORM_SCALE = 16.0


def rms_normalize(x: Tensor, dim: int, eps: float = 1e-4) -> Tensor:
    """``x / sqrt(mean(x**2, dim))``, safe in fp16 by construction (TensorRT's fp16 norms overflow on the square:
    NVIDIA/TensorRT issues #2564, #3692): ``x`` is first scaled so its largest entry along ``dim`` is
    :data:`_NORM_SCALE`, so no square overflows and no mean underflows whatever the activations. Exported as plain
    Abs/ReduceMax/Clip/Div/Pow/ReduceMean/Sqrt (no LayerNormalization, which older TensorRT parsers lack)."""
    peak = x.abs().amax(dim=dim, keepdim=True).clamp(min=1e-4)  # an all-zero token stays zero, not 0/0
    xs = (x / peak) * _NORM_SCALE  # not x * (16 / peak): 16 / 1e-4 overflows fp16, and 0 * inf is NaN
    return xs / torch.sqrt(xs.pow(2).mean(dim=dim, keepdim=True) + eps)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of an NCHW map (:func:`rms_normalize`, then a per-channel gain)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return rms_normalize(x, dim=1) * self.weight[:, None, None]


def _init_decays(o: int, h: int) -> tuple[Tensor, Tensor]:
    """(A_log, dt_bias), each (o, h): decay rates A spread log-evenly over [1, 16] across the heads, the same spread
    for every orientation (a row scan and a column scan start with the same memory; one head gets the geometric
    middle, A = 4), and steps dt log-uniform in [1e-3, 1e-1], as in Mamba; stored as logs / inverse softplus."""
    A_log = (math.log(16.0) * (torch.arange(h) + 0.5) / h).repeat(o, 1)
    dt = torch.exp(torch.rand(o, h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return A_log, dt + torch.log(-torch.expm1(-dt))


def mask_coefficients(pad_value: float) -> tuple[float, float]:
    """``(shift, gain)`` of the pad-aware mask ``clamp((x + shift) * gain, 0, 1)``: the threshold halfway between the
    padding and the darkest pixel (0), and a gain that puts each of them two units beyond it, so the padding gives
    exactly 0 and every pixel in [0, 1] exactly 1 (for :data:`PAD_VALUE` = -1: ``(x + 0.5) * 4``)."""
    if not pad_value < 0:
        raise ValueError(f"pad value {pad_value} must lie below the pixel range [0, 1] for the mask to see it")
    shift = -pad_value / 2
    return shift, 2 / shift


_MASK_SHIFT, _MASK_GAIN = mask_coefficients(PAD_VALUE)

class ValidMap:
    """Which pixels of a pad-aware input are inside the image (:meth:`MambaESR.set_pad_aware`), as 0/1 maps.

    ``at(channels, stride)`` gives the map at ``1 / stride`` resolution (a token is inside if its first pixel is),
    expanded to ``channels`` by a constant 1x1 conv, made once per (channels, stride) and shared by every Mul that
    masks with it. ONNX Runtime keeps conv outputs in its blocked NCHWc layout, so a Mul of two such maps runs in
    place; a broadcast (b, 1, h, w) mask cost a layout reorder pair around every Mul instead.
    """

    def __init__(self, x: Tensor):
        # exactly 1 for pixels in [0, 1], 0 for the padding (arithmetic only: no bool, no Cast)
        self.map = torch.clamp((x[:, :1] + _MASK_SHIFT) * _MASK_GAIN, 0, 1)  # (b, 1, h, w)
        self._made: dict[tuple[int, int], Tensor] = {}

    def at(self, channels: int, stride: int = 1) -> Tensor:
        key = (channels, stride)
        if key not in self._made:
            m = self.map
            H, W = m.shape[-2:]
            if stride > 1:
                if H % stride or W % stride:  # odd sizes: as the mixer pads its input
                    m = F.pad(m, (0, -W % stride, 0, -H % stride), mode="replicate")
                m = m[..., ::stride, ::stride]
            self._made[key] = F.conv2d(m, m.new_ones(channels, 1, 1, 1)) if channels > 1 else m
        return self._made[key]


class ScanMixer(nn.Module):
    """Multi-directional selective-scan mixer (Mamba-2 style) over a 2D feature map.

    in-proj (x, gate z) -> depthwise 3x3 conv + SiLU -> from x: a step dt per orientation and (B, C) per direction
    -> :func:`scan_2d` (the directions summed) -> + D * x -> * SiLU(z) -> out-proj.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, n, h, k = cfg.inner_dim, cfg.state_dim, cfg.heads, len(cfg.directions)
        o = len(orientations(cfg.directions))
        self.cfg = cfg
        # Two 1x1 convs rather than one split in two: a Split is a full copy in ONNX Runtime.
        self.in_x = nn.Conv2d(cfg.embed_dim, d, 1)
        self.in_z = nn.Conv2d(cfg.embed_dim, d, 1)
        self.local = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.param_proj = nn.Conv2d(d, o * h + k * 2 * n, 1)  # dt per orientation, then (B, C) per direction
        self.out_proj = nn.Conv2d(d, cfg.embed_dim, 1)
        A_log, dt_bias = _init_decays(o, h)
        self.A_log, self.dt_bias = nn.Parameter(A_log), nn.Parameter(dt_bias)
        self.D = nn.Parameter(torch.ones(d))

    def forward(self, u: Tensor) -> Tensor:
        cfg = self.cfg
        b, _, H, W = u.shape
        d, n, h, k = cfg.inner_dim, cfg.state_dim, cfg.heads, len(cfg.directions)
        o = self.A_log.shape[0]
        x = F.silu(self.local(self.in_x(u)))  # (b, d, H, W)
        dt, BC = self.param_proj(x).split([o * h, k * 2 * n], dim=1)
        dt = F.softplus(dt.reshape(b, o, h, H, W) + self.dt_bias[None, :, :, None, None])  # (b, o, h, H, W)
        B, C = BC.reshape(b, k, 2 * n, H, W).split([n, n], dim=2)  # (b, k, n, H, W) each
        y = scan_2d(x.reshape(b, h, d // h, H, W), dt, torch.exp(self.A_log), B, C, cfg.directions, cfg.chunk)
        y = y.reshape(b, d, H, W) + self.D[:, None, None] * x
        return self.out_proj(y * F.silu(self.in_z(u)))


class LineMixer(nn.Module):
    """Selective-scan mixer over the rows or columns of a map, each row (column) its own scan line.

    (b, C, H, W) -> ``scan_stride`` x ``scan_stride`` conv, stride ``scan_stride`` -> depthwise 3x3 + SiLU -> one
    transpose into token-major lines (b, lines, tokens, d) -> RMS norm over channels (the contiguous last axis) ->
    dt and (B, C) per direction by one MatMul -> :func:`scan_lines` -> + D * x -> * SiLU(gate) -> one transpose back
    -> 1x1 conv to C -> nearest-neighbour upsampling by ``scan_stride`` -> (b, C, H, W).

    Layout, measured with ONNX Runtime on CPU: a transpose that keeps rows contiguous (NCHW <-> NHWC, or swapping
    the last two axes) costs about one copy, but NCHW -> (b, W, H, C) in one transpose costs ~10x that. So a column
    mixer swaps H and W of its small half-resolution map before the depthwise conv and after the out conv (the convs
    keep ONNX Runtime from merging the transposes back into the slow one) and otherwise works like a row mixer.
    A diagonal (``diag``) or anti-diagonal (``anti``) mixer works like a row mixer on the map skewed so that its
    diagonals are rows (:func:`~mambaesr_runtime.model.scan.to_diagonal_lines`: H + W - 1 lines of W tokens, about
    twice the tokens, the extra ones zero with ``dt = 0``), one reorder in after the depthwise conv and one out before
    the out conv. The projections inside are MatMuls on the last axis; nothing is padded when the lines' lengths are
    multiples of the chunk. The mixer's output is the nearest-upsampled context of the low-resolution scan: the blocks'
    full-resolution conv path supplies the detail (a pixel shuffle cost 4x the upsampling in ONNX Runtime).
    """

    def __init__(self, cfg: ModelConfig, orient: str, stride: int | None = None, valid_stride: int | None = None):
        """``stride``: of the in conv (default ``cfg.scan_stride``); ``valid_stride``: the resolution of the map it
        is given relative to the image, for the pad-aware masks (default: 1, the full-resolution blocks; a mixer of
        the half-resolution context stream gets a half-resolution map and ``stride`` 1)."""
        super().__init__()
        s = cfg.scan_stride if stride is None else stride
        d, n, c = cfg.inner_dim, cfg.state_dim, cfg.embed_dim
        self.cfg, self.orient, self.stride = cfg, orient, s
        self.valid_stride = s * (1 if valid_stride is None else valid_stride)
        self.dirs = tuple(d_ for d_ in (orient, orient + "_rev") if d_ in cfg.directions)
        self.inp = nn.Conv2d(c, d, s, stride=s)
        self.local = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.norm_weight = nn.Parameter(torch.ones(d))
        self.params = nn.Linear(d, 1 + 2 * n * len(self.dirs))
        self.gate = nn.Linear(d, d)
        self.out = nn.Conv2d(d, c, 1)
        # The mixer starts silent (its residual branch adds exactly 0): a random branch adds random context to the
        # conv path, which the conv-only ablation out-trained at equal steps; from zero, the scan joins in as it
        # learns to help.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        A_log, dt_bias = _init_decays(1, 1)
        self.A_log, self.dt_bias = nn.Parameter(A_log[0]), nn.Parameter(dt_bias[0])
        self.D = nn.Parameter(torch.ones(d))

    def forward(self, u: Tensor, valid: ValidMap | None = None) -> Tensor:
        """``valid``: the pixels inside the image, for a pad-aware model (:class:`ValidMap`): tokens outside it are
        zeroed before the depthwise conv and get ``dt = 0`` (no decay, no input), so no scan carries anything across
        them."""
        cfg, s, n, vs = self.cfg, self.stride, self.cfg.state_dim, self.valid_stride
        H, W = u.shape[-2:]
        if s > 1 and (H % s or W % s):  # odd sizes (whole-image evaluation): replicate to a multiple, crop after
            u = F.pad(u, (0, -W % s, 0, -H % s), mode="replicate")
        swap = self.orient == "col"  # a column mixer is a row mixer on the map with H and W swapped
        diagonal = self.orient in ("diag", "anti")
        x = self.inp(u)  # (b, d, H/s, W/s)
        if valid is not None:
            x = x * valid.at(x.shape[1], vs)
        x = F.silu(self.local(x.transpose(-1, -2) if swap else x))
        xt = x.permute(0, 2, 3, 1)  # (b, lines, tokens, d)
        if diagonal:
            hs, ws = xt.shape[1:3]
            xt = to_diagonal_lines(xt, self.orient)  # (b, H/s + W/s - 1, W/s, d)
        xt = rms_normalize(xt, dim=-1) * self.norm_weight
        dt, *bc = self.params(xt).split([1] + [n] * 2 * len(self.dirs), dim=-1)
        dt = F.softplus(dt.squeeze(-1) + self.dt_bias)  # (b, lines, tokens)
        if diagonal:  # dt = 0 on the tokens outside the map (and outside the image, pad-aware)
            dt = dt * (diagonal_line_mask(hs, ws, self.orient, dt) if valid is None
                       else to_diagonal_lines(valid.at(1, vs).permute(0, 2, 3, 1), self.orient)[..., 0])
        elif valid is not None:
            inside = valid.at(1, vs)[:, 0]  # (b, H/s, W/s)
            dt = dt * (inside.transpose(-1, -2) if swap else inside)
        pairs = {d_: (bc[2 * k], bc[2 * k + 1]) for k, d_ in enumerate(self.dirs)}
        y = scan_lines(xt, dt, torch.exp(self.A_log), pairs.get(self.orient), pairs.get(self.orient + "_rev"),
                       cfg.chunk)
        y = (y + self.D * xt) * F.silu(self.gate(xt))  # (b, lines, tokens, d)
        if diagonal:
            y = from_diagonal_lines(y, self.orient)  # (b, H/s, W/s, d)
        y = self.out(y.permute(0, 3, 1, 2))  # (b, C, lines, tokens)
        if swap:
            y = y.transpose(-1, -2)
        if s > 1:
            y = F.interpolate(y, scale_factor=s, mode="nearest")
        return y[..., :H, :W] if y.shape[-2:] != (H, W) else y


class ContextStream(nn.Module):
    """Line mixers on a downsampled copy of the body's features, beside the blocks: the long-range context path.

    (b, C, H, W) after block ``context_tap`` -> ``scan_stride`` x ``scan_stride`` conv, stride ``scan_stride`` ->
    ``context_mixers`` residual line mixers at that resolution (orientations taking turns; each a
    :class:`LineMixer` with a 1x1 in conv) -> 1x1 conv -> nearest upsampling -> added to the body after block
    ``context_merge``.

    Why beside, not inside, the blocks: a line mixer in a block pays its in conv on the full-resolution map and a
    full-resolution upsample and add for its output (with the layout conversions around them, ONNX Runtime cannot
    fuse that add into a conv): about half of the mixer's time on a CPU. Here the stream stays at low resolution from
    one conv in to one upsample out, however many mixers it has. The merge conv starts at zero (the stream adds
    nothing until it learns to help, as the in-block mixers do); the mixers inside start random, since nothing
    reads them until the merge opens.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, c = cfg.scan_stride, cfg.embed_dim
        self.stride = s
        every = orientations(cfg.directions)
        self.tap = nn.Conv2d(c, c, s, stride=s)
        self.mixers = nn.ModuleList(LineMixer(cfg, every[i % len(every)], stride=1, valid_stride=s)
                                    for i in range(cfg.context_mixers))
        for mixer in self.mixers:
            mixer.out.reset_parameters()
        self.merge = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.merge.weight)
        nn.init.zeros_(self.merge.bias)

    def forward(self, u: Tensor, valid: ValidMap | None = None) -> Tensor:
        s = self.stride
        H, W = u.shape[-2:]
        if s > 1 and (H % s or W % s):  # odd sizes: replicate to a multiple, crop after (as a LineMixer does)
            u = F.pad(u, (0, -W % s, 0, -H % s), mode="replicate")
        x = self.tap(u)  # (b, C, H/s, W/s)
        if valid is not None:
            x = x * valid.at(x.shape[1], s)
        for mixer in self.mixers:
            x = x + mixer(x, valid)
        y = self.merge(x)
        if s > 1:
            y = F.interpolate(y, scale_factor=s, mode="nearest")
        return y[..., :H, :W] if y.shape[-2:] != (H, W) else y


class ConvBlock(nn.Module):
    """3x3 conv -> LeakyReLU -> 3x3 conv: the full-resolution local path of a ``conv`` block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, valid: ValidMap | None = None) -> Tensor:
        if valid is None:
            return self.conv2(F.leaky_relu(self.conv1(x), 0.05))
        h = F.leaky_relu(self.conv1(x * valid.at(x.shape[1])), 0.05)
        return self.conv2(h * valid.at(h.shape[1]))


class ConvFFN(nn.Module):
    """1x1 expand -> depthwise 3x3 -> SiLU -> 1x1 project: the local, per-pixel capacity of a block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.local = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor, valid: ValidMap | None = None) -> Tensor:
        h = self.expand(x)
        return self.project(F.silu(self.local(h if valid is None else h * valid.at(h.shape[1]))))


class MambaBlock(nn.Module):
    """Residual mixers, then a residual feed-forward. ``raster`` mixers and ``dw`` feed-forwards are pre-norm;
    ``lines`` mixers normalise inside (in token-major layout) and ``conv`` feed-forwards have no norm.

    ``first_mixer``: the index of this block's first mixer in the whole network (orientations take turns);
    ``mixers``: how many mixers this block has (default ``cfg.mixers_per_block``; 0 for the conv-only blocks of a
    ``mixer_every`` > 1 network).
    """

    def __init__(self, cfg: ModelConfig, first_mixer: int = 0, mixers: int | None = None):
        super().__init__()
        m, raster = cfg.mixers_per_block if mixers is None else mixers, cfg.scan_layout == "raster"
        self.norms = nn.ModuleList(ChannelRMSNorm(cfg.embed_dim) for _ in range(m)) if raster else None
        if raster:
            self.mixers = nn.ModuleList(ScanMixer(cfg) for _ in range(m))
        else:
            every = orientations(cfg.directions)
            self.mixers = nn.ModuleList(LineMixer(cfg, every[(first_mixer + i) % len(every)]) for i in range(m))
        self.ffn_norm = ChannelRMSNorm(cfg.embed_dim) if cfg.ffn_dim and cfg.ffn_kind == "dw" else None
        self.ffn = (None if not cfg.ffn_dim else ConvFFN(cfg.embed_dim, cfg.ffn_dim) if cfg.ffn_kind == "dw"
                    else ConvBlock(cfg.embed_dim, cfg.ffn_dim))

    def forward(self, x: Tensor, valid: ValidMap | None = None) -> Tensor:
        for i, mixer in enumerate(self.mixers):
            if self.norms is not None:  # raster mixers (the first shipped models) take no valid map
                x = x + mixer(self.norms[i](x))
            else:
                x = x + mixer(x, valid)
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x) if self.ffn_norm is not None else x, valid)
        return x


class MambaESR(nn.Module):
    """Super-resolution network. ``forward``: float (N, 3, h, w) in [0, 1] -> (N, 3, s*h, s*w), not clamped."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c, s = cfg.embed_dim, cfg.scale
        self.head = nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        counts = [cfg.mixers_per_block if cfg.has_mixers(i) else 0 for i in range(cfg.num_blocks)]
        self.blocks = nn.Sequential(*(MambaBlock(cfg, sum(counts[:i]), counts[i]) for i in range(cfg.num_blocks)))
        self.context = ContextStream(cfg) if cfg.context_mixers else None
        self.body_tail = nn.Conv2d(c, c, 3, padding=1)
        self.upsample = nn.Conv2d(c, cfg.in_channels * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s)
        # Start as the nearest-neighbour upscale: a random last conv would add noise of RMS ~0.16 on top of the
        # global residual (L1 0.142 at init against 0.055 for nearest alone) that training first has to undo.
        nn.init.zeros_(self.upsample.weight)
        nn.init.zeros_(self.upsample.bias)
        self.pad_aware = False

    @property
    def engine_pad_value(self) -> float | None:
        """What this model's tiles are padded with when it runs as an engine: line-scan models run pad-aware
        (``PAD_VALUE``), raster ones take reflection (``None``). The one rule export and the torch backend follow."""
        return PAD_VALUE if self.cfg.scan_layout == "lines" else None

    def set_pad_aware(self, on: bool = True) -> MambaESR:
        """Engines only (``lines`` layout): treat input pixels below 0 as outside the image. The runtime pads a
        tile that overhangs a small image with ``geometry.PAD_VALUE`` (-1); every 3x3 conv then sees zeros
        there and every scan ``dt = 0``, exactly as for the whole image (a scan carries state along a whole line, so
        a reflected border leaked into the image: -0.13 dB on Set5 for the fast tier). On a tile without padding it
        changes nothing."""
        if on and self.cfg.scan_layout != "lines":
            raise ValueError("pad-aware inference needs the lines scan layout; raster models pad by reflection")
        self.pad_aware = on
        return self

    def forward(self, x: Tensor) -> Tensor:
        b, ch, h, w = x.shape
        s = self.cfg.scale
        valid = ValidMap(x) if self.pad_aware else None
        feat = self.head(x - 0.5 if valid is None else (x - 0.5) * valid.map)
        body, tapped = feat, None
        for i, block in enumerate(self.blocks):
            if self.context is not None:
                tapped = body if i == self.cfg.context_tap else tapped
                body = body + self.context(tapped, valid) if i == self.cfg.context_merge else body
            body = block(body, valid)
        if self.context is not None and self.cfg.context_merge == len(self.blocks):
            body = body + self.context(body if tapped is None else tapped, valid)
        c = feat.shape[1]
        feat = self.body_tail(body if valid is None else body * valid.at(c)) + feat
        if valid is not None:
            feat = feat * valid.at(c)
        # Global residual: the nearest-neighbour upscaled input, added before the shuffle (each input channel
        # repeated s*s times lands on exactly its own s x s output block).
        base = x.unsqueeze(2).expand(b, ch, s * s, h, w).reshape(b, ch * s * s, h, w)
        return self.shuffle(self.upsample(feat) + base)


def build_model(cfg: ModelConfig) -> MambaESR:
    return MambaESR(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
