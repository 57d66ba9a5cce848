"""The selective state-space scan: sequential oracles and the chunked pure-tensor form we train and export.

Recurrence (Mamba-2 / SSD form: one scalar decay per head, B and C shared by the heads of a direction)::

    forward:   h_t = exp(a_t) h_{t-1} + B_t (dt_t x_t)^T        y_t = C_t^T h_t
    reverse:   h_t = exp(a_t) h_{t+1} + B_t (dt_t x_t)^T        (the forward scan of the reversed sequence)

with ``a_t = -dt_t * A <= 0``. ``h`` is an (n, p) matrix per head.

The fast form cuts each scan line into chunks of ``Q`` tokens. Inside a chunk the output is one matmul with a
(Q, Q) matrix ``(C B^T) * decay``; because the forward and reverse scans of one line read the same ``x``, their two
matrices are added and applied in a single matmul. Across chunks, each chunk's end (start) state is carried by the same
transfer-matrix construction one level up. So the work is batched matmuls, one cumulative sum per level and
elementwise ops, with static shapes and no loop over the image.

Numerics: every decay is ``exp`` of a sum of non-positive terms built directly (a masked cumulative sum of the step
terms, never a difference of two prefix sums), so there is no ``exp`` of a positive number, no ``inf - inf`` and no
cancellation: fp16/bf16 stay finite and fp32 matches the oracle to ~1e-6 whatever the step sizes.

2D layouts: a row-major scan line is the whole image in raster order; a chunk is ``Q`` consecutive pixels of one row
(rows are padded to a multiple of ``Q`` with tokens that have ``dt = 0``: they neither decay nor inject, so the padded
scan equals the unpadded one). Column-major is the same on the transposed image. Moving the (b, h, p, H, W) map into
chunk layout is one transpose per orientation, shared by its two directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DIRECTIONS


# ----------------------------------------------------------------------------------------------------------------
# Oracles: readable, sequential, slow. Every fast path is tested against these.
# ----------------------------------------------------------------------------------------------------------------
def selective_scan_ref(u: Tensor, log_a: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """Forward recurrence, one token at a time.

    u (b, L, h, p) = dt * x;  log_a (b, L, h) <= 0;  B, C (b, L, n)  ->  y (b, L, h, p).
    """
    b, L, h, p = u.shape
    n = B.shape[-1]
    state = u.new_zeros(b, h, n, p)
    ys = []
    for t in range(L):
        decay = torch.exp(log_a[:, t])  # (b, h)
        inject = B[:, t, None, :, None] * u[:, t, :, None, :]  # (b, h, n, p)
        state = decay[:, :, None, None] * state + inject
        ys.append(torch.einsum("bn,bhnp->bhp", C[:, t], state))
    return torch.stack(ys, dim=1)


def scan_order(H: int, W: int, direction: str) -> Tensor:
    """Flat (row-major) pixel indices in the order ``direction`` visits them: a permutation of ``range(H * W)``."""
    grid = torch.arange(H * W).reshape(H, W)
    order = grid.flatten() if direction.startswith("row") else grid.t().flatten()
    return order.flip(0) if direction.endswith("_rev") else order


def scan_2d_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                directions: tuple[str, ...] = DIRECTIONS) -> Tensor:
    """Oracle for :func:`scan_2d`: gather each direction's pixel order explicitly, run the sequential scan, scatter back.

    Shapes as in :func:`scan_2d`.
    """
    b, h, p, H, W = x.shape
    out = torch.zeros_like(x)
    for k, direction in enumerate(directions):
        order = scan_order(H, W, direction)
        seq = lambda t: t.flatten(-2)[..., order].movedim(-1, 1)  # (b, ..., H, W) -> (b, L, ...)
        log_a = -dt[:, k] * A[k][None, :, None, None]
        y = selective_scan_ref(seq(x) * seq(dt[:, k]).unsqueeze(-1), seq(log_a), seq(B[:, k]), seq(C[:, k]))
        flat = torch.zeros(b, H * W, h, p, dtype=x.dtype, device=x.device)
        flat[:, order] = y
        out = out + flat.reshape(b, H, W, h, p).permute(0, 3, 4, 1, 2)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Transfer matrices
# ----------------------------------------------------------------------------------------------------------------
#: Floor for a single step's log-decay. exp(-1e4) is 0 in every float format, so the floor changes no result; it
#: keeps the masked products below finite (0 * -inf would be NaN) when an fp16 step overflows.
LOG_DECAY_FLOOR = -1.0e4


def _masks(T: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(strict lower, inclusive lower) triangles of ones, as ``like``'s dtype (constants once exported)."""
    ones = torch.ones(T, T, dtype=like.dtype, device=like.device)
    return ones.tril(-1), ones.tril()


def decay_lower(a: Tensor) -> Tensor:
    """Forward transfer matrix: ``out[..., i, j] = exp(a_{j+1} + ... + a_i)`` for ``i >= j``, else 0.

    a: (..., T) <= 0  ->  (..., T, T). Each entry is the cumulative sum of the masked step terms (``a_i`` placed at
    ``[i, j]`` for ``i > j``), so it is a sum of non-positive numbers: no cancellation, no ``exp`` of a positive.
    """
    strict, incl = _masks(a.shape[-1], a)
    rows = a.clamp(min=LOG_DECAY_FLOOR).unsqueeze(-1) * strict  # [i, j] = a_i for i > j
    return torch.exp(rows.cumsum(dim=-2)) * incl


def decay_lower_t(a: Tensor) -> Tensor:
    """``decay_lower(a)`` transposed, built directly: ``out[..., j, i] = exp(a_{j+1} + ... + a_i)`` for ``i >= j``."""
    strict, incl = _masks(a.shape[-1], a)
    cols = a.clamp(min=LOG_DECAY_FLOOR).unsqueeze(-2) * strict.t()  # [j, i] = a_i for i > j
    return torch.exp(cols.cumsum(dim=-1)) * incl.t()


def decay_upper_t(a: Tensor) -> Tensor:
    """Reverse transfer matrix, transposed: ``out[..., j, i] = exp(a_i + ... + a_{j-1})`` for ``j >= i``, else 0."""
    strict, incl = _masks(a.shape[-1], a)
    prev = F.pad(a[..., :-1], (1, 0)).clamp(min=LOG_DECAY_FLOOR)  # prev[j] = a_{j-1}
    rows = prev.unsqueeze(-1) * strict  # [j, i] = a_{j-1} for j > i
    return torch.exp(rows.cumsum(dim=-2)) * incl


def _shift_right(H: Tensor) -> Tensor:
    """Exclusive from inclusive along dim -2: ``out[..., c, :] = H[..., c - 1, :]``, ``out[..., 0, :] = 0``."""
    return F.pad(H[..., :-1, :], (0, 0, 1, 0))


def carry_states(S: Tensor, g: Tensor, group: int) -> Tensor:
    """Inclusive carry over chunks: ``H_c = exp(g_c) H_{c-1} + S_c`` (``H_{-1} = 0``), for every chunk ``c``.

    S: (..., c, m) per-chunk states (flattened); g: (..., c) <= 0 per-chunk total log-decay. Returns (..., c, m).
    Up to ``group`` chunks this is one transfer-matrix matmul; beyond, chunks are grouped and the group ends are
    carried by this same function one level up: depth ``ceil(log_group(c))``, 1-3 for any image we process.
    """
    c, m = S.shape[-2:]
    if c <= group:
        return decay_lower(g) @ S
    ng = -(-c // group)
    pad = ng * group - c
    if pad:  # padded chunks come last: they cannot reach a real chunk's state
        S = F.pad(S, (0, 0, 0, pad))
        g = F.pad(g, (0, pad))
    Sg = S.reshape(*S.shape[:-2], ng, group, m)
    gg = g.reshape(*g.shape[:-1], ng, group)
    local = carry_states(Sg, gg, group)  # (..., ng, group, m): carried within each group only
    entering = _shift_right(carry_states(local[..., -1, :], gg.sum(dim=-1), group))  # (..., ng, m)
    into = torch.exp(gg.cumsum(dim=-1)).unsqueeze(-1)  # decay from a group's start to each of its chunks
    out = local + into * entering.unsqueeze(-2)
    return out.reshape(*S.shape[:-2], ng * group, m)[..., :c, :]


# ----------------------------------------------------------------------------------------------------------------
# The chunked scan of one orientation (a forward and/or a reverse direction over the same x)
# ----------------------------------------------------------------------------------------------------------------
def scan_chunks(x: Tensor, fwd: tuple | None, rev: tuple | None, group: int) -> Tensor:
    """Sum of the forward and reverse scans of scan lines already cut into chunks.

    x: (b, h, c, p, Q): ``c`` chunks of ``Q`` tokens in scan order (consecutive chunks continue the line); channels
    come before tokens so that the 2D map reaches this layout with one cheap transpose.
    fwd, rev: ``(dt, log_a, B, C)`` with dt, log_a (b, h, c, Q) and B, C (b, c, n, Q); ``None`` skips a direction.
    Returns y (b, h, c, p, Q).

    Everything is written transposed (``y^T = x^T M^T``), so ``Mt[j, i]`` is the weight of token ``j`` in output ``i``.
    """
    mats, states_w, readout, carries = [], [], [], []
    for params, reverse in ((fwd, False), (rev, True)):
        if params is None:
            continue
        dt, log_a, B, C = params
        Tt = decay_upper_t(log_a) if reverse else decay_lower_t(log_a)  # (b, h, c, Q, Q): [j, i]
        BC = (B.unsqueeze(1) * dt.unsqueeze(-2)).transpose(-1, -2) @ C.unsqueeze(1)  # (b, h, c, Q, Q): [j, i] = dt_j B_j . C_i
        mats.append(BC * Tt)
        # Weight of token j in its chunk's end state (forward) / start state (reverse), and the decay from the chunk's
        # start (forward) / end (reverse) to token i, inclusive of a_i: both read off Tt, no second cumsum.
        if reverse:
            to_edge, from_edge = Tt[..., :, 0], Tt[..., -1, :] * torch.exp(log_a[..., -1:])
        else:
            to_edge, from_edge = Tt[..., :, -1], Tt[..., 0, :] * torch.exp(log_a[..., :1])
        states_w.append(B.unsqueeze(1) * (to_edge * dt).unsqueeze(-2))  # (b, h, c, n, Q)
        readout.append(C.unsqueeze(1) * from_edge.unsqueeze(-2))  # (b, h, c, n, Q)
        carries.append((reverse, log_a.sum(dim=-1)))  # chunk total log-decay (b, h, c)

    y = x @ (mats[0] if len(mats) == 1 else mats[0] + mats[1])  # (b, h, c, p, Q)
    p, n = x.shape[-2], states_w[0].shape[-2]
    S = x @ torch.cat(states_w, dim=-2).transpose(-1, -2)  # (b, h, c, p, D*n): every direction in one matmul
    entering = []
    for i, (reverse, g) in enumerate(carries):
        Si = S[..., i * n:(i + 1) * n].flatten(-2)  # (b, h, c, p*n)
        if reverse:  # carry from the right: the forward carry of the chunk-reversed states, reversed back
            Hi = _shift_right(carry_states(Si.flip(-2), g.flip(-1), group)).flip(-2)
        else:
            Hi = _shift_right(carry_states(Si, g, group))
        entering.append(Hi.unflatten(-1, (p, n)))  # (b, h, c, p, n)
    return y + torch.cat(entering, dim=-1) @ torch.cat(readout, dim=-2)


def selective_scan_chunked(u: Tensor, log_a: Tensor, B: Tensor, C: Tensor, chunk: int = 32) -> Tensor:
    """The forward scan of 1D sequences in chunked form; same contract as :func:`selective_scan_ref`."""
    b, L, h, p = u.shape
    nc = -(-L // chunk)
    pad = nc * chunk - L
    dt = torch.ones_like(log_a)
    if pad:  # trailing padding cannot affect earlier tokens
        u, log_a, dt = F.pad(u, (0, 0, 0, 0, 0, pad)), F.pad(log_a, (0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    heads_first = lambda t: t.reshape(b, nc, chunk, h).permute(0, 3, 1, 2)  # (b, h, nc, Q)
    x = u.reshape(b, nc, chunk, h, p).permute(0, 3, 1, 4, 2)  # (b, h, nc, p, Q)
    tokens_last = lambda t: t.reshape(b, nc, chunk, -1).transpose(-1, -2)  # (b, nc, n, Q)
    y = scan_chunks(x, (heads_first(dt), heads_first(log_a), tokens_last(B), tokens_last(C)), None, chunk)
    return y.permute(0, 2, 4, 1, 3).reshape(b, nc * chunk, h, p)[:, :L]


# ----------------------------------------------------------------------------------------------------------------
# 2D: four directions over a feature map
# ----------------------------------------------------------------------------------------------------------------
def line_chunking(length: int, chunk: int) -> tuple[int, int]:
    """(chunk size, chunks per line) for a scan line of ``length`` tokens: ``chunk`` or fewer, least padding."""
    per_line = -(-length // chunk)
    return -(-length // per_line), per_line


def scan_2d(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
            directions: tuple[str, ...] = DIRECTIONS, chunk: int = 32) -> Tensor:
    """Sum over ``directions`` of the selective scan of a 2D map in that order.

    x (b, h, p, H, W);  dt (b, k, h, H, W) > 0;  A (k, h) > 0 (log-decay ``-dt * A``);  B, C (b, k, n, H, W);
    ``k = len(directions)``, in that order. Returns (b, h, p, H, W). Equal to :func:`scan_2d_ref` for every ``chunk``.
    """
    b, h, p, H, W = x.shape
    n = B.shape[2]
    index = {d: i for i, d in enumerate(directions)}
    out = None
    for orient in ("row", "col"):
        present = [d for d in (orient, orient + "_rev") if d in index]
        if not present:
            continue
        length, lines = (W, H) if orient == "row" else (H, W)
        Q, per_line = line_chunking(length, chunk)
        c = lines * per_line

        def chunks(t: Tensor) -> Tensor:
            """(b, ch, H, W) -> (b, ch, c, Q): scan lines cut into chunks, channels first."""
            if orient == "col":
                t = t.transpose(-1, -2)
            if Q * per_line > length:  # pad with dt = 0 (and x = 0): no decay and no input there
                t = F.pad(t, (0, Q * per_line - length))
            return t.reshape(t.shape[0], t.shape[1], c, Q)

        xc = chunks(x.reshape(b, h * p, H, W)).reshape(b * h, p, c, Q).transpose(1, 2).reshape(b, h, c, p, Q)
        packed = chunks(torch.cat([torch.cat([dt[:, index[d]], B[:, index[d]], C[:, index[d]]], dim=1)
                                   for d in present], dim=1))  # (b, len(present) * (h + 2n), c, Q): one transform
        params = {}
        for i, d in enumerate(present):
            dt_d, B_d, C_d = packed[:, i * (h + 2 * n):(i + 1) * (h + 2 * n)].split([h, n, n], dim=1)
            log_a = -dt_d * A[index[d]][None, :, None, None]
            params[d] = (dt_d, log_a, B_d.transpose(1, 2), C_d.transpose(1, 2))
        y = scan_chunks(xc, params.get(orient), params.get(orient + "_rev"), chunk)  # (b, h, c, p, Q)
        # Back to (b, h, p, H, W): the inverse block transpose, then (columns only) a last-two-axes swap.
        y = y.reshape(b * h, c, p, Q).transpose(1, 2).reshape(b, h, p, lines, per_line * Q)[..., :length]
        if orient == "col":
            y = y.transpose(-1, -2)
        out = y if out is None else out + y
    return out
