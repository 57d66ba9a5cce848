"""The reference MambaESR network: shallow conv -> Mamba blocks -> conv -> pixel-shuffle upsampler, global residual.

One definition serves training, evaluation, the torch backend and ONNX export (export wraps it, never copies it).
Every op is chosen to export to plain ONNX with static shapes (Conv, MatMul, CumSum, Exp, Where, Slice, Transpose,
Reshape, DepthToSpace, elementwise): no LayerNormalization/Gelu nodes that older TensorRT parsers lack, no loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .scan import orientations, scan_2d


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of an NCHW map (ReduceMean + Sqrt + Div in ONNX; no LayerNormalization op)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        rms = torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x / rms * self.weight[:, None, None]


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
        # Decay rates A in [1, 16] and steps dt in [1e-3, 1e-1] at init, as in Mamba; stored as logs / inverse softplus.
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, o * h)).reshape(o, h))
        dt = torch.exp(torch.rand(o, h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
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


class ConvFFN(nn.Module):
    """1x1 expand -> depthwise 3x3 -> SiLU -> 1x1 project: the local, per-pixel capacity of a block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.local = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(F.silu(self.local(self.expand(x))))


class MambaBlock(nn.Module):
    """Pre-norm residual mixers, then a pre-norm residual conv feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norms = nn.ModuleList(ChannelRMSNorm(cfg.embed_dim) for _ in range(cfg.mixers_per_block))
        self.mixers = nn.ModuleList(ScanMixer(cfg) for _ in range(cfg.mixers_per_block))
        self.ffn_norm = ChannelRMSNorm(cfg.embed_dim) if cfg.ffn_dim else None
        self.ffn = ConvFFN(cfg.embed_dim, cfg.ffn_dim) if cfg.ffn_dim else None

    def forward(self, x: Tensor) -> Tensor:
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x


class MambaESR(nn.Module):
    """Super-resolution network. ``forward``: float (N, 3, h, w) in [0, 1] -> (N, 3, s*h, s*w), not clamped."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c, s = cfg.embed_dim, cfg.scale
        self.head = nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        self.blocks = nn.Sequential(*(MambaBlock(cfg) for _ in range(cfg.num_blocks)))
        self.body_tail = nn.Conv2d(c, c, 3, padding=1)
        self.upsample = nn.Conv2d(c, cfg.in_channels * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s)

    def forward(self, x: Tensor) -> Tensor:
        b, ch, h, w = x.shape
        s = self.cfg.scale
        feat = self.head(x - 0.5)
        feat = self.body_tail(self.blocks(feat)) + feat
        # Global residual: the nearest-neighbour upscaled input, added before the shuffle (each input channel
        # repeated s*s times lands on exactly its own s x s output block).
        base = x.unsqueeze(2).expand(b, ch, s * s, h, w).reshape(b, ch * s * s, h, w)
        return self.shuffle(self.upsample(feat) + base)


def build_model(cfg: ModelConfig) -> MambaESR:
    return MambaESR(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
