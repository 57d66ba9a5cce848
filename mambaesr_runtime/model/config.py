"""Model configuration: one frozen dataclass and the table of named variants.

Kept free of torch so the runtime can read a checkpoint's config without importing the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..typed import from_dict

#: The default scan orders over an (H, W) feature map, in the order their parameters are stacked
#: (see ``model.scan.scan_order``): rows and columns, each forward and reversed.
DIRECTIONS = ("row", "row_rev", "col", "col_rev")
#: Every scan order a layout offers (``_rev``: the same lines scanned from the other end). ``lines``: each row,
#: column, diagonal (``diag``: top-left to bottom-right) or anti-diagonal (``anti``: bottom-left to top-right) its
#: own line. ``raster``: the whole map as one line, row by row, column by column, or clockwise inwards from the
#: top-left corner (``spiral``).
LAYOUT_DIRECTIONS = {
    "raster": ("row", "row_rev", "col", "col_rev", "spiral", "spiral_rev"),
    "lines": ("row", "row_rev", "col", "col_rev", "diag", "diag_rev", "anti", "anti_rev"),
}
SCALES = (2, 3, 4)
SCAN_LAYOUTS = ("raster", "lines")
FFN_KINDS = ("dw", "conv")
SCAN_STRIDES = (1, 2, 4)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a MambaESR network. Every field is part of the checkpoint's JSON."""

    embed_dim: int
    """Channels of the feature map carried through the blocks."""
    num_blocks: int
    """Number of residual Mamba blocks."""
    mixers_per_block: int
    """Scan mixers per block (each: in-proj, depthwise conv, scan, gate, out-proj); 0 makes a conv-only block."""
    inner_dim: int
    """Channels inside a mixer (the scanned width); a multiple of ``heads``."""
    state_dim: int
    """State size ``n`` of the SSM (rows of each head's state matrix)."""
    heads: int
    """Heads per direction; each head has one scalar decay per token (SSD form)."""
    chunk: int = 32
    """Tokens per chunk of the chunked scan: a speed knob only, the result is the same for any value."""
    ffn_dim: int = 0
    """Hidden channels of the conv feed-forward after the mixers of each block (0: no feed-forward)."""
    scale: int = 4
    """Upscaling factor: 2, 3 or 4."""
    directions: tuple[str, ...] = field(default=DIRECTIONS)
    """Scan orders, merged by summation after being mapped back to (H, W)."""
    in_channels: int = 3
    """Image channels (RGB)."""
    scan_layout: str = "raster"
    """``raster``: each orientation scans the whole map as one line in raster order, state carried from row to row,
    behind a pre-norm (the first shipped models). ``lines``: every row (column) is its own scan line, scanned in
    token-major layout with the norm inside the mixer (:class:`~mambaesr_runtime.model.net.LineMixer`)."""
    scan_stride: int = 1
    """``lines`` only: the mixer scans the map downsampled by this factor (1, 2 or 4: an s x s stride-s conv in,
    nearest upsampling out), so its scan costs 1/s^2; the blocks' conv path stays at full resolution."""
    mixer_every: int = 1
    """Mixers sit in every ``mixer_every``-th block only (the last block of each group: blocks ``k - 1``,
    ``2k - 1``, ...), the others are conv-only; 1: every block has ``mixers_per_block`` mixers."""
    context_mixers: int = 0
    """``lines`` only: line mixers in a context stream beside the blocks, at ``1 / scan_stride`` resolution from one
    conv in to one upsample out (:class:`~mambaesr_runtime.model.net.ContextStream`); 0: none."""
    context_tap: int = 0
    """The context stream reads the body after this many blocks."""
    context_merge: int = 0
    """The context stream's output is added to the body after this many blocks (>= ``context_tap``)."""
    ffn_kind: str = "dw"
    """Feed-forward of each block: ``dw`` (pre-norm 1x1 -> depthwise 3x3 -> SiLU -> 1x1) or ``conv`` (3x3 ->
    LeakyReLU -> 3x3, no norm: dense convs, the fastest per MAC on CPUs and GPUs)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("embed_dim", "num_blocks", "inner_dim", "state_dim", "heads", "chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.mixers_per_block, int) or self.mixers_per_block < 0:
            problems.append(f"mixers_per_block must be an integer >= 0, got {self.mixers_per_block!r}")
        if self.scan_layout not in SCAN_LAYOUTS:
            problems.append(f"scan_layout must be one of {SCAN_LAYOUTS}, got {self.scan_layout!r}")
        if self.ffn_kind not in FFN_KINDS:
            problems.append(f"ffn_kind must be one of {FFN_KINDS}, got {self.ffn_kind!r}")
        if not isinstance(self.mixer_every, int) or self.mixer_every < 1:
            problems.append(f"mixer_every must be a positive integer, got {self.mixer_every!r}")
        elif isinstance(self.num_blocks, int) and self.mixers_per_block and self.mixer_every > self.num_blocks:
            problems.append(f"mixer_every ({self.mixer_every}) > num_blocks ({self.num_blocks}) leaves no mixer; "
                            f"use mixers_per_block=0 for a conv-only network")
        if not isinstance(self.context_mixers, int) or self.context_mixers < 0:
            problems.append(f"context_mixers must be an integer >= 0, got {self.context_mixers!r}")
        elif self.context_mixers:
            if self.scan_layout != "lines":
                problems.append("context_mixers needs scan_layout 'lines'")
            if not (isinstance(self.context_tap, int) and isinstance(self.context_merge, int)
                    and 0 <= self.context_tap <= self.context_merge <= self.num_blocks):
                problems.append(f"the context stream needs 0 <= context_tap <= context_merge <= num_blocks "
                                f"({self.num_blocks}), got {self.context_tap!r} and {self.context_merge!r}")
        if self.scan_stride not in SCAN_STRIDES:
            problems.append(f"scan_stride must be one of {SCAN_STRIDES}, got {self.scan_stride!r}")
        if self.scan_layout == "raster" and self.scan_stride != 1:
            problems.append("scan_stride needs scan_layout 'lines'")
        if self.scan_layout == "lines" and self.heads != 1:
            problems.append(f"scan_layout 'lines' scans one head per orientation (heads 1), got heads {self.heads!r}")
        if not isinstance(self.ffn_dim, int) or self.ffn_dim < 0:
            problems.append(f"ffn_dim must be an integer >= 0, got {self.ffn_dim!r}")
        if self.scale not in SCALES:
            problems.append(f"scale must be one of {SCALES}, got {self.scale!r}")
        if isinstance(self.inner_dim, int) and isinstance(self.heads, int) and self.heads > 0 \
                and self.inner_dim % self.heads:
                problems.append(f"inner_dim ({self.inner_dim}) must be a multiple of heads ({self.heads})")
        dirs = tuple(self.directions)
        valid = LAYOUT_DIRECTIONS.get(self.scan_layout, DIRECTIONS)
        if not dirs or any(d not in valid for d in dirs) or len(set(dirs)) != len(dirs):
            problems.append(f"directions must be distinct names from {valid} (scan_layout {self.scan_layout!r}), "
                            f"got {dirs!r}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))
        object.__setattr__(self, "directions", dirs)

    @property
    def head_dim(self) -> int:
        return self.inner_dim // self.heads

    def has_mixers(self, block: int) -> bool:
        """Whether block ``block`` (0-based) carries mixers (see ``mixer_every``)."""
        return self.mixers_per_block > 0 and block % self.mixer_every == self.mixer_every - 1

    @property
    def num_mixers(self) -> int:
        """Every line or raster mixer: in the blocks and in the context stream."""
        return self.mixers_per_block * sum(self.has_mixers(i) for i in range(self.num_blocks)) + self.context_mixers

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["directions"] = list(self.directions)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return from_dict(cls, data, "model config", tuple_fields=("directions",))


#: The named variants. ``student`` and ``fast`` are what ships; ``tiny`` exists for tests only.
VARIANTS: dict[str, ModelConfig] = {
    "teacher": ModelConfig(embed_dim=96, num_blocks=8, mixers_per_block=2, inner_dim=192, state_dim=16, heads=2,
                           ffn_dim=192),
    # The shipped layout (benchmarks/results/arch_study.md): per block, one half-resolution line mixer (rows and
    # columns alternating) beside a full-resolution 3x3 conv pair. The CPU profile's 264-pixel tiles scan 132-token
    # lines (4 chunks of 33), the GPU profiles' 64- and 128-pixel tiles 32 and 64 (2 x 32): no padding.
    "student": ModelConfig(embed_dim=48, num_blocks=6, mixers_per_block=1, inner_dim=48, state_dim=8, heads=1,
                           chunk=34, ffn_dim=48, scan_layout="lines", scan_stride=2, ffn_kind="conv"),
    "fast": ModelConfig(embed_dim=32, num_blocks=4, mixers_per_block=1, inner_dim=24, state_dim=4, heads=1,
                        chunk=34, ffn_dim=32, scan_layout="lines", scan_stride=2, ffn_kind="conv"),
    # The first shipped models (12 / 4 four-direction raster mixers at full resolution): their checkpoints carry
    # this config and stay loadable; kept by name for comparisons.
    "student_raster": ModelConfig(embed_dim=40, num_blocks=6, mixers_per_block=2, inner_dim=48, state_dim=8,
                                  heads=1, ffn_dim=80),
    "fast_raster": ModelConfig(embed_dim=32, num_blocks=4, mixers_per_block=1, inner_dim=32, state_dim=8, heads=1,
                               ffn_dim=48),
    "tiny": ModelConfig(embed_dim=8, num_blocks=1, mixers_per_block=1, inner_dim=8, state_dim=4, heads=2,
                        chunk=8, ffn_dim=8),
}

#: Parameter budgets the variants must respect at every scale (the issue's product limits).
PARAM_BUDGETS = {"student": 400_000, "fast": 120_000, "student_raster": 400_000, "fast_raster": 120_000}


def variant(name: str, scale: int = 4, **overrides) -> ModelConfig:
    """The named variant at ``scale``; ``overrides`` replace single fields (e.g. ``chunk=16``)."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown model variant {name!r}; valid variants are {sorted(VARIANTS)}")
    return VARIANTS[name].replace(scale=scale, **overrides)
