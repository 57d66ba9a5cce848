"""The selective state-space scan: sequential oracles and the chunked pure-tensor form we train and export.

Recurrences (Mamba-2 / SSD form: one scalar decay per head and token, B and C shared by the heads)::

    forward:   h_t = exp(a_t) h_{t-1}     + B_t (dt_t x_t)^T        y_t = C_t^T h_t
    reverse:   h_t = exp(a_{t+1}) h_{t+1} + B_t (dt_t x_t)^T        y_t = C_t^T h_t

with ``a_t = -dt_t * A <= 0``; ``h`` is an (n, p) matrix per head. The two directions of one orientation (row-major
and its reverse, column-major and its reverse) share the step ``dt`` (and so the decays) and have their own ``B`` and
``C``. The reverse recurrence is gated at the source (token ``t+1`` decides how much of what lies beyond it reaches
``t``), which makes its transfer matrix exactly the transpose of the forward one: both directions of an orientation
are built from one decay matrix, as in Hydra's quasiseparable mixers (Hwang et al., 2024).

The fast form cuts each scan line into chunks of ``Q`` tokens. Inside a chunk the output is one matmul with a
(Q, Q) matrix ``(C B^T) * decay``; the forward and reverse scans of a line read the same ``x``, so their two matrices
are added and applied in a single matmul. Across chunks, each chunk's end (start) state is carried by the same
transfer-matrix construction one level up. The work is batched matmuls, one cumulative sum per level and elementwise
ops, with static shapes and no loop over the image.

Numerics: every decay is ``exp`` of a sum of non-positive terms built directly (a masked cumulative sum of the step
terms, never a difference of two prefix sums), so there is no ``exp`` of a positive number, no ``inf - inf`` and no
cancellation: fp16/bf16 stay finite and fp32 matches the oracle to ~1e-6 whatever the step sizes.

2D layouts: a row-major scan line is the whole image in raster order; a chunk is ``Q`` consecutive pixels of one row
(rows are padded to a multiple of ``Q`` with tokens that have ``dt = 0``: they neither decay nor inject, so the padded
scan equals the unpadded one). Column-major is the same on the transposed image. Moving the (b, h, p, H, W) map into
chunk layout is one transpose per orientation, shared by its two directions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DIRECTIONS


# ----------------------------------------------------------------------------------------------------------------
# Oracles: readable, sequential, slow. Every fast path is tested against these.
# ----------------------------------------------------------------------------------------------------------------
def selective_scan_ref(u: Tensor, log_a: Tensor, B: Tensor, C: Tensor, reverse: bool = False) -> Tensor:
    """The recurrences above, one token at a time.

    u (b, L, h, p) = dt * x;  log_a (b, L, h) <= 0;  B, C (b, L, n)  ->  y (b, L, h, p).
    ``reverse``: run from the end, gated at the source (``h_t = exp(a_{t+1}) h_{t+1} + ...``).
    """
    b, L, h, p = u.shape
    n = B.shape[-1]
    state = u.new_zeros(b, h, n, p)
    ys = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        if reverse:
            decay = torch.exp(log_a[:, t + 1]) if t + 1 < L else torch.zeros_like(log_a[:, 0])
        else:
            decay = torch.exp(log_a[:, t])  # (b, h)
        inject = B[:, t, None, :, None] * u[:, t, :, None, :]  # (b, h, n, p)
        state = decay[:, :, None, None] * state + inject
        ys[t] = torch.einsum("bn,bhnp->bhp", C[:, t], state)
    return torch.stack(ys, dim=1)


#: Orientations in the order their parameters are stacked; each orientation has a forward and a ``_rev`` direction.
ORIENTATIONS = ("row", "col", "diag", "anti", "spiral")


def orientations(directions: tuple[str, ...]) -> tuple[str, ...]:
    """The orientations (``row``, ``col``, ``diag``, ``anti``, ``spiral``) that ``directions`` use, in that order:
    one ``dt`` and ``A`` each."""
    return tuple(o for o in ORIENTATIONS if o in directions or o + "_rev" in directions)


def spiral_order(H: int, W: int) -> np.ndarray:
    """Flat (row-major) pixel indices of an (H, W) map visited clockwise from the top-left corner inwards: the top
    row left to right, the right column down, the bottom row right to left, the left column up, then the same
    one ring further in. Consecutive pixels are always 4-neighbours."""
    grid = np.arange(H * W).reshape(H, W)
    out = []
    while grid.size:
        out.append(grid[0])
        grid = np.rot90(grid[1:])  # the rest, turned so that its right column becomes its top row
    return np.concatenate(out)


def scan_order(H: int, W: int, direction: str) -> Tensor:
    """Flat (row-major) pixel indices in the order a raster-layout ``direction`` visits them (the whole map as one
    line): a permutation of ``range(H * W)``."""
    grid = torch.arange(H * W).reshape(H, W)
    orient = direction.split("_")[0]
    if orient == "row":
        order = grid.flatten()
    elif orient == "col":
        order = grid.t().flatten()
    elif orient == "spiral":
        order = torch.from_numpy(spiral_order(H, W))
    else:
        raise ValueError(f"{direction!r} is not a raster scan order; raster orders are row, col and spiral")
    return order.flip(0) if direction.endswith("_rev") else order


def line_orders(H: int, W: int, orient: str) -> list[list[int]]:
    """The scan lines of a ``lines``-layout orientation as flat (row-major) pixel indices, each line in its forward
    order: rows left to right, columns top to bottom, diagonals (``j - i`` constant, from the top-left end) and
    anti-diagonals (``i + j`` constant, from the bottom-left end) left to right. The oracle's definition."""
    if orient == "row":
        return [[i * W + j for j in range(W)] for i in range(H)]
    if orient == "col":
        return [[i * W + j for i in range(H)] for j in range(W)]
    if orient == "diag":
        return [[i * W + i + d for i in range(H) if 0 <= i + d < W] for d in range(-(H - 1), W)]
    if orient == "anti":
        return [[(s - j) * W + j for j in range(W) if 0 <= s - j < H] for s in range(H + W - 1)]
    raise ValueError(f"{orient!r} is not a line orientation; they are row, col, diag and anti")


def scan_2d_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                directions: tuple[str, ...] = DIRECTIONS) -> Tensor:
    """Oracle for :func:`scan_2d`: gather each orientation's pixel order explicitly, run the sequential recurrence
    (forward, or reverse from the end), scatter back and sum. Shapes as in :func:`scan_2d`."""
    b, h, p, H, W = x.shape
    orients = orientations(directions)
    out = torch.zeros_like(x)
    for k, direction in enumerate(directions):
        o = orients.index(direction.split("_")[0])
        order = scan_order(H, W, direction.split("_")[0])
        seq = lambda t: t.flatten(-2)[..., order].movedim(-1, 1)  # (b, ..., H, W) -> (b, L, ...)
        log_a = -dt[:, o] * A[o][None, :, None, None]
        y = selective_scan_ref(seq(x) * seq(dt[:, o]).unsqueeze(-1), seq(log_a), seq(B[:, k]), seq(C[:, k]),
                               reverse=direction.endswith("_rev"))
        flat = torch.zeros(b, H * W, h, p, dtype=x.dtype, device=x.device)
        flat[:, order] = y
        out = out + flat.reshape(b, H, W, h, p).permute(0, 3, 4, 1, 2)
    return out


def scan_lines_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   directions: tuple[str, ...] = DIRECTIONS) -> Tensor:
    """Oracle for the line scans on a 2D map: every line of each direction's orientation (:func:`line_orders`:
    rows, columns, diagonals, anti-diagonals) is its own sequence, gathered explicitly and scanned by
    :func:`selective_scan_ref` from a zero state (lines of equal length together). Shapes as in :func:`scan_2d`."""
    b, H, W = x.shape[0], *x.shape[-2:]
    orients = orientations(directions)
    flat = lambda t: t.flatten(-2)  # (b, ..., H * W)
    out = torch.zeros_like(flat(x))
    for k, direction in enumerate(directions):
        orient = direction.split("_")[0]
        o = orients.index(orient)
        log_a = -dt[:, o] * A[o][None, :, None, None]  # (b, h, H, W)
        by_length: dict[int, list[list[int]]] = {}
        for line in line_orders(H, W, orient):
            by_length.setdefault(len(line), []).append(line)
        for lines in by_length.values():
            idx = torch.tensor(lines)  # (lines, tokens)
            # (b, ..., H, W) -> (b * lines, tokens, ...)
            seq = lambda t: flat(t)[..., idx].movedim(-2, 1).movedim(-1, 2).flatten(0, 1)
            u = seq(x * dt[:, o].unsqueeze(2))  # (b * lines, tokens, h, p)
            y = selective_scan_ref(u, seq(log_a), seq(B[:, k]), seq(C[:, k]), reverse=direction.endswith("_rev"))
            y = y.unflatten(0, (b, len(lines))).movedim(2, -1).movedim(1, -2)  # (b, h, p, lines, tokens)
            out[..., idx] += y
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------------------------------------------
# Transfer matrices
# ----------------------------------------------------------------------------------------------------------------
def _ceil_div(a: int, b: int) -> int:
    # Not -(-a // b): while tracing for export, sizes may be tensors, whose // has truncated negatives.
    return (a + b - 1) // b


#: Floor for a single step's log-decay. exp(-1e4) is 0 in every float format, so the floor changes no result; it
#: keeps the masked products below finite (0 * -inf would be NaN) when an fp16 step overflows.
LOG_DECAY_FLOOR = -1.0e4


def _constant(array: np.ndarray, like: Tensor) -> Tensor:
    """``array`` as a tensor of ``like``'s dtype and device: made from NumPy, it is one initializer once exported
    (``torch.ones(...).tril()`` would export as Trilu nodes that not every simplifier folds)."""
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


def _masks(T: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(strict lower, inclusive lower) triangles of ones, as ``like``'s dtype (constants once exported)."""
    return _constant(np.tri(T, k=-1), like), _constant(np.tri(T), like)


def prefix_sum(x: Tensor, reverse: bool = False) -> Tensor:
    """Inclusive prefix sums along the last axis (suffix sums when ``reverse``), as a matmul with a constant
    triangle of ones: TensorRT's ONNX parsers before 10.8 turn ``CumSum`` into a sequential loop (which no DLA
    runs), while a matmul is one GEMM everywhere. Exact for sums of same-signed terms (no cancellation)."""
    _, incl = _masks(x.shape[-1], x)
    return x @ (incl if reverse else incl.t())  # [c', c] = 1 where c' >= c (suffix) or c' <= c (prefix)


def decay_lower(a: Tensor) -> Tensor:
    """Forward transfer matrix: ``out[..., i, j] = exp(a_{j+1} + ... + a_i)`` for ``i >= j``, else 0.

    a: (..., T) <= 0  ->  (..., T, T). Each entry sums the masked step terms (``a_i`` placed at ``[i, j]`` for
    ``i > j``) down the rows, so it is a sum of non-positive numbers: no cancellation, no ``exp`` of a positive.
    The row sums are one matmul with the inclusive lower triangle (``T**3`` MACs per matrix; no ``CumSum``).
    """
    strict, incl = _masks(a.shape[-1], a)
    rows = a.clamp(min=LOG_DECAY_FLOOR).unsqueeze(-1) * strict  # [i, j] = a_i for i > j
    return torch.exp(incl @ rows) * incl


def _shift_right(H: Tensor) -> Tensor:
    """Exclusive from inclusive, forward: ``out[..., c, :] = H[..., c - 1, :]``, ``out[..., 0, :] = 0``."""
    return F.pad(H[..., :-1, :], (0, 0, 1, 0))


def _shift_left(H: Tensor) -> Tensor:
    """Exclusive from inclusive, reverse: ``out[..., c, :] = H[..., c + 1, :]``, last row 0."""
    return F.pad(H[..., 1:, :], (0, 0, 0, 1))


def carry_states(S: Tensor, g: Tensor, group: int, reverse: bool = False) -> Tensor:
    """Inclusive carry over chunks: ``H_c = exp(g_c) H_{c-1} + S_c`` (``H_{-1} = 0``), for every chunk ``c``;
    ``reverse``: from the other end, ``H_c = exp(g_c) H_{c+1} + S_c``.

    S: (..., c, m) per-chunk states (flattened); g: (..., c) <= 0 per-chunk total log-decay. Returns (..., c, m).
    Up to ``group`` chunks this is one transfer-matrix matmul; beyond, chunks are grouped and the group ends (starts)
    are carried by this same function one level up: depth ``ceil(log_group(c))``, 1-3 for any image we process.
    """
    c, m = S.shape[-2:]
    if c <= group:
        if reverse:  # H_c = sum_{c' >= c} exp(g_c + ... + g_{c'-1}) S_c': a transposed forward matrix of g shifted
            # right by one (as a matmul with a constant shift: no Pad/Slice pair in the exported graph)
            # (floored first: an fp16 total of -inf times the matrix's zeros would be NaN)
            return decay_lower(g.clamp(min=LOG_DECAY_FLOOR) @ _constant(np.eye(c, k=1), g)).transpose(-1, -2) @ S
        return decay_lower(g) @ S
    ng = _ceil_div(c, group)
    pad = ng * group - c
    if pad:  # padded chunks have S = 0 and g = 0: they add nothing and pass states through unchanged
        S = F.pad(S, (0, 0, 0, pad))
        g = F.pad(g, (0, pad))
    Sg = S.reshape(*S.shape[:-2], ng, group, m)
    gg = g.reshape(*g.shape[:-1], ng, group)
    local = carry_states(Sg, gg, group, reverse)  # (..., ng, group, m): carried within each group only
    totals = gg.sum(dim=-1)
    # A chunk total can overflow fp16 to -inf, and the prefix-sum matmul would multiply it by the triangle's zeros
    # (NaN): floored like single steps, which changes no result (exp of either is 0).
    gg = gg.clamp(min=LOG_DECAY_FLOOR)
    if reverse:  # state entering each group from its right, and the decay from there to each chunk (suffix sums)
        entering = _shift_left(carry_states(local[..., 0, :], totals, group, reverse=True))
        into = torch.exp(prefix_sum(gg, reverse=True)).unsqueeze(-1)
    else:
        entering = _shift_right(carry_states(local[..., -1, :], totals, group))
        into = torch.exp(prefix_sum(gg)).unsqueeze(-1)
    out = local + into * entering.unsqueeze(-2)
    return out.reshape(*S.shape[:-2], ng * group, m)[..., :c, :]


# ----------------------------------------------------------------------------------------------------------------
# The chunked scan of one orientation (a forward and/or a reverse direction over the same x)
# ----------------------------------------------------------------------------------------------------------------
def scan_chunks(x: Tensor, dt: Tensor, log_a: Tensor, fwd: tuple | None, rev: tuple | None, group: int) -> Tensor:
    """Sum of the forward and reverse scans of scan lines already cut into chunks.

    x: (b, h, c, p, Q): ``c`` chunks of ``Q`` tokens in scan order (consecutive chunks continue the line); channels
    come before tokens so that the 2D map reaches this layout with one cheap transpose.
    dt, log_a: (b, h, c, Q), shared by both directions. fwd, rev: ``(B, C)``, each (b, c, n, Q); ``None`` skips one.
    Returns y (b, h, c, p, Q).

    Written transposed (``y^T = x^T M^T``): ``Mt[j, i]`` is the weight of token ``j`` in output ``i``.
    """
    p = x.shape[-2]
    L = decay_lower(log_a)  # (b, h, c, Q, Q): [i, j] = exp(a_{j+1} + ... + a_i), i >= j
    # Per-token decays read off L (no second cumsum): through the rest of the chunk after token j, and from the
    # chunk's start through token i inclusive.
    to_end = L[..., -1, :]  # exp(a_{j+1} + ... + a_{Q-1})
    from_start = L[..., :, 0] * torch.exp(log_a[..., :1])  # exp(a_0 + ... + a_i)
    g = log_a.sum(dim=-1)  # (b, h, c): each chunk's total log-decay
    dtB = lambda B: B.unsqueeze(1) * dt.unsqueeze(-2)  # (b, h, c, n, Q)
    BC = lambda B, C: dtB(B).transpose(-1, -2) @ C.unsqueeze(1)  # (b, h, c, Q, Q): [j, i] = dt_j B_j . C_i

    mat, states_w, readout, carries = None, [], [], []
    if fwd is not None:  # token j reaches i >= j with decay L[i, j]
        B, C = fwd
        mat = BC(B, C) * L.transpose(-1, -2)
        states_w.append(dtB(B) * to_end.unsqueeze(-2))  # weight of token j in its chunk's end state
        readout.append(C.unsqueeze(1) * from_start.unsqueeze(-2))  # decay from the state entering the chunk to i
        carries.append(False)
    if rev is not None:  # token j reaches i <= j with decay exp(a_{i+1} + ... + a_j) = L[j, i]: no transpose
        B, C = rev
        rmat = BC(B, C) * L
        mat = rmat if mat is None else mat + rmat
        # The chunk's start state gathers token j with exp(a_0 + ... + a_j); token i reads the state entering from
        # the right with exp(a_{i+1} + ... + a_{Q-1}): the forward weights swapped.
        states_w.append(dtB(B) * from_start.unsqueeze(-2))
        readout.append(C.unsqueeze(1) * to_end.unsqueeze(-2))
        carries.append(True)

    y = x @ mat  # (b, h, c, p, Q)
    n = states_w[0].shape[-2]
    S = x @ torch.cat(states_w, dim=-2).transpose(-1, -2)  # (b, h, c, p, D*n): every direction in one matmul
    entering = []
    for i, reverse in enumerate(carries):
        Si = (S[..., i * n:(i + 1) * n] if len(carries) > 1 else S).flatten(-2)  # (b, h, c, p*n)
        shift = _shift_left if reverse else _shift_right
        entering.append(shift(carry_states(Si, g, group, reverse)).unflatten(-1, (p, n)))  # (b, h, c, p, n)
    return y + torch.cat(entering, dim=-1) @ torch.cat(readout, dim=-2)


def selective_scan_chunked(u: Tensor, log_a: Tensor, B: Tensor, C: Tensor, chunk: int = 32) -> Tensor:
    """The forward scan of 1D sequences in chunked form; same contract as :func:`selective_scan_ref`."""
    b, L, h, p = u.shape
    nc = _ceil_div(L, chunk)
    pad = nc * chunk - L
    dt = torch.ones_like(log_a)
    if pad:  # trailing padding cannot affect earlier tokens
        u, log_a, dt = F.pad(u, (0, 0, 0, 0, 0, pad)), F.pad(log_a, (0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    heads_first = lambda t: t.reshape(b, nc, chunk, h).permute(0, 3, 1, 2)  # (b, h, nc, Q)
    x = u.reshape(b, nc, chunk, h, p).permute(0, 3, 1, 4, 2)  # (b, h, nc, p, Q)
    tokens_last = lambda t: t.reshape(b, nc, chunk, -1).transpose(-1, -2)  # (b, nc, n, Q)
    y = scan_chunks(x, heads_first(dt), heads_first(log_a), (tokens_last(B), tokens_last(C)), None, chunk)
    return y.permute(0, 2, 4, 1, 3).reshape(b, nc * chunk, h, p)[:, :L]


# ----------------------------------------------------------------------------------------------------------------
# 2D: four directions over a feature map
# ----------------------------------------------------------------------------------------------------------------
def line_chunking(length: int, chunk: int) -> tuple[int, int]:
    """(chunk size, chunks per line) for a scan line of ``length`` tokens: ``chunk`` or fewer, least padding."""
    per_line = _ceil_div(length, chunk)
    return _ceil_div(length, per_line), per_line


def scan_2d(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
            directions: tuple[str, ...] = DIRECTIONS, chunk: int = 32) -> Tensor:
    """Sum over ``directions`` of the selective scan of a 2D map in that order.

    x (b, h, p, H, W);  dt (b, o, h, H, W) > 0 and A (o, h) > 0, one per orientation in :func:`orientations` order
    (log-decay ``-dt * A``);  B, C (b, k, n, H, W), one per direction, ``k = len(directions)`` in that order.
    Returns (b, h, p, H, W). Equal to :func:`scan_2d_ref` for every ``chunk``.
    """
    b, h, p, H, W = x.shape
    n = B.shape[2]
    index = {d: i for i, d in enumerate(directions)}
    out = None
    for o, orient in enumerate(orientations(directions)):
        present = [d for d in (orient, orient + "_rev") if d in index]
        length, lines = {"row": (W, H), "col": (H, W), "spiral": (H * W, 1)}[orient]
        Q, per_line = line_chunking(length, chunk)
        c = lines * per_line
        if orient == "spiral":  # one line through the whole map: a constant permutation in and out (Gather)
            order = scan_order(H, W, "spiral").to(x.device)
            back = torch.argsort(order)

        def chunks(t: Tensor) -> Tensor:
            """(b, ch, H, W) -> (b, ch, c, Q): scan lines cut into chunks, channels first."""
            if orient == "col":
                t = t.transpose(-1, -2)
            elif orient == "spiral":
                t = t.flatten(-2).index_select(-1, order).unsqueeze(-2)  # (b, ch, 1, H * W)
            if Q * per_line > length:  # pad with dt = 0 (and x = 0): no decay and no input there
                t = F.pad(t, (0, Q * per_line - length))
            return t.reshape(t.shape[0], t.shape[1], c, Q)

        xc = chunks(x.reshape(b, h * p, H, W)).reshape(b * h, p, c, Q).transpose(1, 2).reshape(b, h, c, p, Q)
        # The small per-token parameters of this orientation go through one transform together.
        packed = chunks(torch.cat([dt[:, o]] + [torch.cat([B[:, index[d]], C[:, index[d]]], dim=1)
                                                for d in present], dim=1))  # (b, h + 2n * len(present), c, Q)
        dt_o, *bcs = packed.split([h] + [2 * n] * len(present), dim=1)
        bc = {d: tuple(t.transpose(1, 2) for t in bc.split([n, n], dim=1)) for d, bc in zip(present, bcs)}
        log_a = -dt_o * A[o][None, :, None, None]
        y = scan_chunks(xc, dt_o, log_a, bc.get(orient), bc.get(orient + "_rev"), chunk)  # (b, h, c, p, Q)
        # Back to (b, h, p, H, W): the inverse block transpose, then (columns only) a last-two-axes swap.
        y = y.reshape(b * h, c, p, Q).transpose(1, 2).reshape(b, h, p, lines, per_line * Q)
        if per_line * Q > length:  # (a no-op slice would still cost a full copy in ONNX Runtime)
            y = y[..., :length]
        if orient == "col":
            y = y.transpose(-1, -2)
        elif orient == "spiral":
            y = y.flatten(-2).index_select(-1, back).reshape(b, h, p, H, W)
        out = y if out is None else out + y
    return out


# ----------------------------------------------------------------------------------------------------------------
# Line scans in token-major layout (the layout the line mixers work in)
# ----------------------------------------------------------------------------------------------------------------
def to_lines(t: Tensor, orient: str) -> Tensor:
    """(b, ch, H, W) -> token-major lines (b, lines, tokens, ch): rows (``row``) or columns (``col``). One
    transpose; a 1x1 projection of the result is a plain MatMul on the last axis."""
    return t.permute(0, 2, 3, 1) if orient == "row" else t.permute(0, 3, 2, 1)


def from_lines(t: Tensor, orient: str) -> Tensor:
    """Inverse of :func:`to_lines`: (b, lines, tokens, ch) -> (b, ch, H, W)."""
    return t.permute(0, 3, 1, 2) if orient == "row" else t.permute(0, 3, 2, 1)


def to_diagonal_lines(t: Tensor, orient: str) -> Tensor:
    """Token-major map (b, H, W, ch) -> its diagonals (``diag``) or anti-diagonals (``anti``) as token-major lines
    (b, H + W - 1, W, ch), the lines of :func:`line_orders`: line ``s`` holds pixel (i, j) at token ``j`` for
    ``i + j = s`` (``anti``) or ``j - i = s - (H - 1)`` (``diag``), and zeros at the tokens outside the map (each
    line's pixels are one run of tokens; scanned with ``dt = 0`` there, see :func:`diagonal_line_mask`, the zeros
    change nothing).

    The skew is reshapes of a padded copy, the standard trick: a (W, H + W) map read with row length H + W - 1 has
    row ``j`` shifted right by ``j``. Every op moves whole ``ch``-vectors (the contiguous last axis): one Transpose,
    Pad, Reshape and Slice in, the same out; ``diag`` adds one reversed Slice each way.
    """
    if orient == "diag":  # pixel (i, j) -> (H - 1 - i, j): diagonals become anti-diagonals
        t = t.flip(1)
    b, H, W, ch = t.shape
    y = F.pad(t.transpose(1, 2), (0, 0, 0, W))  # (b, W, H + W, ch): column j of the map, then W zeros
    y = y.reshape(b, W * (H + W), ch)[:, :W * (H + W - 1)].reshape(b, W, H + W - 1, ch)  # [j, i + j] = t[i, j]
    return y.transpose(1, 2)


def from_diagonal_lines(t: Tensor, orient: str) -> Tensor:
    """Inverse of :func:`to_diagonal_lines`: (b, H + W - 1, W, ch) -> (b, H, W, ch)."""
    b, S, W, ch = t.shape
    H = S - W + 1
    y = F.pad(t.transpose(1, 2).reshape(b, W * S, ch), (0, 0, 0, W)).reshape(b, W, S + 1, ch)[:, :, :H]
    y = y.transpose(1, 2)  # (b, H, W, ch)
    return y.flip(1) if orient == "diag" else y


def diagonal_line_mask(H: int, W: int, orient: str, like: Tensor) -> Tensor:
    """(H + W - 1, W) ones where :func:`to_diagonal_lines` puts a pixel of an (H, W) map, zeros elsewhere: a
    constant (one initializer once exported)."""
    H, W = int(H), int(W)  # static sizes (while tracing for export they arrive as 0-d tensors)
    s, j = np.arange(H + W - 1)[:, None], np.arange(W)[None, :]
    i = s - j if orient == "anti" else (H - 1) - (s - j)  # the map row of token j of line s
    return _constant(((i >= 0) & (i < H)).astype(np.float32), like)


def _shift_matmul(H: Tensor, down: bool) -> Tensor:
    """:func:`_shift_right` (``down``) or :func:`_shift_left` as a matmul with a constant shift matrix: one small
    GEMM instead of a Pad and a Slice round trip in the exported graph. H: (..., c, m)."""
    shift = np.eye(H.shape[-2], k=-1 if down else 1)  # [i, i - 1] = 1 (down) or [i, i + 1] = 1
    return _constant(shift, H) @ H


def scan_lines(x: Tensor, dt: Tensor, A: Tensor, fwd: tuple | None, rev: tuple | None, chunk: int = 32) -> Tensor:
    """Sum of the forward and/or reverse selective scans of every line of a token-major map, each line on its own
    (state zero at both ends of a line).

    x (b, L, T, p): L lines of T tokens, channels last (one head);  dt (b, L, T) >= 0;  A: a one-element tensor > 0
    (log-decay ``-dt * A``);  fwd, rev: ``(B, C)``, each (b, L, T, n), or ``None``. Returns (b, L, T, p).

    Lines are cut into ``k`` chunks of ``Q <= chunk`` tokens (:func:`line_chunking`; no padding when ``T`` is a
    multiple of the chunk). Inside a chunk the two directions are one (Q, Q) matrix applied by one batched matmul
    with the tokens already in the matmul's layout (no transpose of ``x``); chunk states are carried along the line
    only when ``k > 1``. Equal to :func:`scan_lines_ref` (tested, values and gradients).
    """
    b, L, T, p = x.shape
    Q, k = line_chunking(T, chunk)
    pad = Q * k - T
    dirs = [d for d in (fwd, rev) if d is not None]
    n = dirs[0][0].shape[-1]
    if pad:  # tokens with dt = 0 and x = 0 neither decay nor inject: the padded scan equals the unpadded one
        x, dt = F.pad(x, (0, 0, 0, pad)), F.pad(dt, (0, pad))
        fwd, rev = ((None if d is None else tuple(F.pad(t, (0, 0, 0, pad)) for t in d)) for d in (fwd, rev))
    x = x.reshape(b, L, k, Q, p)
    dt = dt.reshape(b, L, k, Q)
    chunked = lambda d: (d[0].reshape(b, L, k, Q, n) * dt.unsqueeze(-1), d[1].reshape(b, L, k, Q, n))  # (dt B, C)
    log_a = -dt * A.reshape(())
    decay = decay_lower(log_a)  # (b, L, k, Q, Q): [i, j] = exp(a_{j+1} + ... + a_i) for i >= j
    mat = None
    if fwd is not None:  # token j reaches i >= j
        dtB_f, C_f = chunked(fwd)
        mat = (C_f @ dtB_f.transpose(-1, -2)) * decay
    if rev is not None:  # token j reaches i <= j with exp(a_{i+1} + ... + a_j) = decay[j, i]
        dtB_r, C_r = chunked(rev)
        rmat = (C_r @ dtB_r.transpose(-1, -2)) * decay.transpose(-1, -2)
        mat = rmat if mat is None else mat + rmat
    y = mat @ x  # (b, L, k, Q, p)
    if k > 1:
        g = log_a.sum(dim=-1)  # (b, L, k): each chunk's total log-decay
        to_end = decay[..., -1, :].unsqueeze(-1)  # (b, L, k, Q, 1): exp(a_{j+1} + ... + a_{Q-1})
        from_start = (decay[..., :, 0] * torch.exp(log_a[..., :1])).unsqueeze(-1)  # exp(a_0 + ... + a_i)
        if fwd is not None:  # end states (n, p) of each chunk, carried along the line, read from the next chunk on
            S = ((dtB_f * to_end).transpose(-1, -2) @ x).flatten(-2)  # (b, L, k, n * p)
            entering = _shift_matmul(carry_states(S, g, chunk), down=True).unflatten(-1, (n, p))
            y = y + (C_f * from_start) @ entering
        if rev is not None:  # start states, carried towards the line's start
            S = ((dtB_r * from_start).transpose(-1, -2) @ x).flatten(-2)
            entering = _shift_matmul(carry_states(S, g, chunk, reverse=True), down=False).unflatten(-1, (n, p))
            y = y + (C_r * to_end) @ entering
    y = y.reshape(b, L, k * Q, p)
    return y[:, :, :T] if pad else y
