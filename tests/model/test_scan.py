"""The chunked scan against the sequential oracle: values, gradients, padding, adversarial steps, low precision."""

from __future__ import annotations

import pytest
import torch

from mambaesr_runtime.model.config import DIRECTIONS
from mambaesr_runtime.model.scan import (
    LOG_DECAY_FLOOR,
    carry_states,
    decay_lower,
    diagonal_line_mask,
    from_diagonal_lines,
    line_orders,
    orientations,
    prefix_sum,
    scan_2d,
    scan_2d_ref,
    scan_lines,
    scan_lines_ref,
    scan_order,
    selective_scan_chunked,
    selective_scan_ref,
    spiral_order,
    to_diagonal_lines,
)

RTOL = 1e-5  # the bar: fp32 fast path vs oracle, relative to the output's scale


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30))


def seq_inputs(b, L, h, p, n, step_scale=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, L, h, p, generator=g, dtype=dtype)
    log_a = -torch.rand(b, L, h, generator=g, dtype=dtype) * step_scale
    B = torch.randn(b, L, n, generator=g, dtype=dtype)
    C = torch.randn(b, L, n, generator=g, dtype=dtype)
    return u, log_a, B, C


def map_inputs(b, h, p, n, H, W, dt_scale=1.0, A_scale=3.0, seed=0, dtype=torch.float32, dirs=DIRECTIONS):
    g = torch.Generator().manual_seed(seed)
    k, o = len(dirs), len(orientations(dirs))
    x = torch.randn(b, h, p, H, W, generator=g, dtype=dtype)
    dt = torch.rand(b, o, h, H, W, generator=g, dtype=dtype) * dt_scale
    A = torch.rand(o, h, generator=g, dtype=dtype) * A_scale + 0.01
    B = torch.randn(b, k, n, H, W, generator=g, dtype=dtype)
    C = torch.randn(b, k, n, H, W, generator=g, dtype=dtype)
    return x, dt, A, B, C


def assert_map_gradients_match(oracle, fast, inputs) -> None:
    """Gradients of a random weighting of the output, through the float64 oracle and the fp32 fast path, for every
    input of a map scan (x, dt, A, B, C): each within RTOL."""
    weights = torch.randn(inputs[0].shape, dtype=torch.float64)
    slow = [t.double().requires_grad_() for t in inputs]
    (oracle(*slow) * weights).sum().backward()
    quick = [t.clone().requires_grad_() for t in inputs]
    (fast(*quick) * weights.float()).sum().backward()
    for name, want, got in zip(["x", "dt", "A", "B", "C"], slow, quick):
        assert rel_err(got.grad, want.grad) <= RTOL, name


def impulse(H: int, W: int, r0: int, c0: int):
    """(x, dt, ones) for a (1, 1, 1, H, W) map: a unit impulse at (r0, c0), steps of 0.5 everywhere, B = C = 1 for
    two directions."""
    x = torch.zeros(1, 1, 1, H, W, dtype=torch.float64)
    x[..., r0, c0] = 1.0
    return x, torch.full((1, 1, 1, H, W), 0.5, dtype=torch.float64), torch.ones(1, 2, 1, H, W, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- building blocks
def test_decay_matrices_match_their_definitions():
    a = -torch.rand(7, dtype=torch.float64) * 3
    T = a.numel()
    want_lower = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        for j in range(T):
            if i >= j:
                want_lower[i, j] = torch.exp(a[j + 1:i + 1].sum())
    torch.testing.assert_close(decay_lower(a), want_lower, rtol=1e-12, atol=0)


def test_reverse_oracle_is_the_forward_scan_of_the_flipped_sequence_gated_at_the_source():
    u, log_a, B, C = (t.double() for t in seq_inputs(2, 23, 2, 3, 4, seed=4))
    shifted = torch.cat([log_a[:, 1:], torch.zeros_like(log_a[:, :1])], dim=1)  # a_{t+1}
    flip = lambda t: t.flip(1)
    want = flip(selective_scan_ref(flip(u), flip(shifted), flip(B), flip(C)))
    torch.testing.assert_close(selective_scan_ref(u, log_a, B, C, reverse=True), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("c, group", [(1, 4), (4, 4), (5, 4), (17, 4), (70, 4), (9, 2)])
def test_carry_states_matches_the_recurrence(c, group, reverse):
    g = torch.Generator().manual_seed(c)
    S = torch.randn(2, c, 3, generator=g, dtype=torch.float64)
    gl = -torch.rand(2, c, generator=g, dtype=torch.float64)
    H, want = torch.zeros(2, 3, dtype=torch.float64), [None] * c
    for i in (range(c - 1, -1, -1) if reverse else range(c)):
        H = torch.exp(gl[:, i, None]) * H + S[:, i]
        want[i] = H
    got = carry_states(S, gl, group, reverse=reverse)
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- 1D forward scan
@pytest.mark.parametrize("L, chunk", [(1, 4), (7, 4), (16, 4), (33, 8), (129, 32), (300, 4), (70, 3), (64, 64)])
def test_chunked_matches_oracle_any_length_and_chunk(L, chunk):
    u, log_a, B, C = seq_inputs(2, L, 3, 5, 4, seed=L)
    ref = selective_scan_ref(*(t.double() for t in (u, log_a, B, C)))
    assert rel_err(selective_scan_chunked(u, log_a, B, C, chunk), ref) <= RTOL


@pytest.mark.parametrize("step_scale", [1e-8, 1e-3, 30.0, 1e4, 1e8])
def test_adversarial_step_sizes_stay_exact_and_finite(step_scale):
    """Tiny steps (state kept ~forever) and huge ones (state reset every token) both match the oracle."""
    u, log_a, B, C = seq_inputs(2, 200, 2, 4, 4, step_scale=step_scale, seed=1)
    y = selective_scan_chunked(u, log_a, B, C, 16)
    assert torch.isfinite(y).all()
    assert rel_err(y, selective_scan_ref(*(t.double() for t in (u, log_a, B, C)))) <= RTOL


def test_gradients_match_oracle():
    u, log_a, B, C = seq_inputs(2, 45, 2, 3, 4, seed=3)
    leaves = [t.double().requires_grad_() for t in (u, log_a, B, C)]
    (selective_scan_ref(*leaves) * torch.linspace(-1, 1, 45)[None, :, None, None]).sum().backward()
    fast = [t.clone().requires_grad_() for t in (u, log_a, B, C)]
    (selective_scan_chunked(*fast, chunk=8) * torch.linspace(-1, 1, 45)[None, :, None, None]).sum().backward()
    for name, want, got in zip(["u", "log_a", "B", "C"], leaves, fast):
        assert rel_err(got.grad, want.grad) <= RTOL, name


# ---------------------------------------------------------------------------------------------- 2D, four directions
@pytest.mark.parametrize("H, W, chunk", [(1, 1, 32), (1, 9, 4), (9, 1, 4), (5, 7, 4), (8, 8, 4), (6, 13, 4),
                                         (9, 40, 8), (13, 11, 32), (16, 16, 16)])
def test_scan_2d_matches_oracle(H, W, chunk):
    x, dt, A, B, C = map_inputs(2, 2, 3, 4, H, W, seed=H * 100 + W)
    ref = scan_2d_ref(*(t.double() for t in (x, dt, A, B, C)))
    assert rel_err(scan_2d(x, dt, A, B, C, DIRECTIONS, chunk), ref) <= RTOL


@pytest.mark.parametrize("dirs", [("row",), ("col_rev",), ("row", "col"), ("row_rev", "col", "col_rev")])
def test_scan_2d_direction_subsets(dirs):
    x, dt, A, B, C = map_inputs(1, 1, 2, 3, 6, 7, seed=5, dirs=dirs)
    ref = scan_2d_ref(*(t.double() for t in (x, dt, A, B, C)), directions=dirs)
    assert rel_err(scan_2d(x, dt, A, B, C, dirs, 4), ref) <= RTOL


def test_scan_2d_gradients_match_oracle():
    assert_map_gradients_match(scan_2d_ref, lambda *t: scan_2d(*t, DIRECTIONS, 4), map_inputs(1, 2, 2, 3, 5, 6, seed=9))


def test_the_four_orders_are_distinct_permutations():
    orders = {d: scan_order(4, 5, d).tolist() for d in DIRECTIONS}
    for d, order in orders.items():
        assert sorted(order) == list(range(20)), d
    assert len({tuple(o) for o in orders.values()}) == 4
    assert orders["row"][:6] == [0, 1, 2, 3, 4, 5]  # along the first row, then the next
    assert orders["col"][:5] == [0, 5, 10, 15, 1]  # down the first column, then the next


def _expected_reach(direction: str, H: int, W: int, r0: int, c0: int) -> torch.Tensor:
    """Pixels an impulse at (r0, c0) can reach in a causal scan of ``direction``, written out by hand."""
    reach = torch.zeros(H, W, dtype=torch.bool)
    for r in range(H):
        for c in range(W):
            after = {"row": (r, c) >= (r0, c0), "row_rev": (r, c) <= (r0, c0),
                     "col": (c, r) >= (c0, r0), "col_rev": (c, r) <= (c0, r0)}[direction]
            reach[r, c] = after
    return reach


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_impulse_reaches_exactly_the_pixels_after_it_in_its_order(direction):
    """Fails if a direction used another's ordering (each reach pattern is unique) or if un-permuting were wrong."""
    H, W, r0, c0 = 5, 6, 2, 3
    x = torch.zeros(1, 1, 1, H, W, dtype=torch.float64)
    x[..., r0, c0] = 1.0
    dt = torch.full((1, 1, 1, H, W), 0.5, dtype=torch.float64)  # one orientation
    A = torch.full((1, 1), 0.1, dtype=torch.float64)
    B = torch.ones(1, 1, 1, H, W, dtype=torch.float64)
    y = scan_2d(x, dt, A, B, B.clone(), (direction,), chunk=4)[0, 0, 0]
    assert torch.equal(y > 1e-12, _expected_reach(direction, H, W, r0, c0))


def test_merged_directions_are_the_sum_of_each_direction():
    x, dt, A, B, C = map_inputs(1, 1, 2, 3, 6, 5, seed=11, dtype=torch.float64)
    merged = scan_2d(x, dt, A, B, C, DIRECTIONS, 4)
    orient = lambda d: orientations(DIRECTIONS).index(d.split("_")[0])
    parts = sum(scan_2d(x, dt[:, orient(d):orient(d) + 1], A[orient(d):orient(d) + 1], B[:, k:k + 1], C[:, k:k + 1],
                        (d,), 4) for k, d in enumerate(DIRECTIONS))
    torch.testing.assert_close(merged, parts, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- low precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dt_scale, A_scale", [(1e-4, 3.0), (1.0, 3.0), (1.0, 1e4), (30.0, 1e3), (1e-3, 1e7)])
def test_low_precision_stays_finite_and_close(dtype, dt_scale, A_scale):
    """Step sizes from ~0 to log-decays of -1e7 per token (overflowing fp16 to -inf): finite and near the oracle.

    (dt also scales the input, so it is kept where the true output fits in fp16; the decay is what we stress.)
    """
    x, dt, A, B, C = map_inputs(1, 1, 4, 4, 16, 16, dt_scale=dt_scale, A_scale=A_scale, seed=2)
    ref = scan_2d_ref(*(t.double() for t in (x, dt, A, B, C)))
    y = scan_2d(*(t.to(dtype) for t in (x, dt, A, B, C)), DIRECTIONS, 8)
    assert torch.isfinite(y).all()
    # Low precision carries ~3 significant digits through a few dozen products: a loose but meaningful bound.
    assert rel_err(y, ref) <= (0.05 if dtype == torch.float16 else 0.1)


def test_decay_floor_only_guards_against_overflow():
    assert torch.exp(torch.tensor(LOG_DECAY_FLOOR, dtype=torch.float64)) == 0
    a = torch.tensor([0.0, float("-inf"), -1.0], dtype=torch.float16)
    assert torch.isfinite(decay_lower(a)).all()


# ---------------------------------------------------------------------------------------------- line scans
def test_prefix_sums_are_exact_matmuls():
    x = torch.randn(3, 11, dtype=torch.float64)
    torch.testing.assert_close(prefix_sum(x), x.cumsum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prefix_sum(x, reverse=True), x.flip(-1).cumsum(-1).flip(-1), rtol=1e-12, atol=1e-12)


def lines_2d(x, dt, A, B, C, directions, chunk):
    """:func:`scan_lines` over a (b, 1, p, H, W) map, one call per orientation, in the oracle's shapes."""
    index = {d: i for i, d in enumerate(directions)}
    out = 0
    for o, orient in enumerate(orientations(directions)):
        # rows: (b, ch, H, W) -> (b, H, W, ch); columns: (b, ch, H, W) -> (b, W, H, ch)
        tm = (lambda t: t.permute(0, 2, 3, 1)) if orient == "row" else (lambda t: t.permute(0, 3, 2, 1))
        pair = lambda d: None if d not in index else (tm(B[:, index[d]]), tm(C[:, index[d]]))
        y = scan_lines(tm(x[:, 0]), tm(dt[:, o])[..., 0], A[o], pair(orient), pair(orient + "_rev"), chunk)
        out = out + (y.permute(0, 3, 1, 2) if orient == "row" else y.permute(0, 3, 2, 1))
    return out.unsqueeze(1)


@pytest.mark.parametrize("H, W, chunk", [(1, 1, 32), (1, 9, 4), (9, 1, 4), (5, 7, 4), (8, 8, 4), (6, 13, 4),
                                         (9, 40, 8), (13, 11, 32), (16, 16, 16), (3, 70, 8), (4, 68, 34)])
def test_line_scan_matches_oracle(H, W, chunk):
    """Any line length, with and without padding, one chunk or many (70 tokens in chunks of 8: carried states)."""
    x, dt, A, B, C = map_inputs(2, 1, 3, 4, H, W, seed=H * 100 + W)
    ref = scan_lines_ref(*(t.double() for t in (x, dt, A, B, C)))
    assert rel_err(lines_2d(x, dt, A, B, C, DIRECTIONS, chunk), ref) <= RTOL


@pytest.mark.parametrize("dirs", [("row",), ("col_rev",), ("row", "row_rev"), ("col", "col_rev")])
def test_line_scan_direction_subsets(dirs):
    x, dt, A, B, C = map_inputs(1, 1, 2, 3, 6, 19, seed=5, dirs=dirs)
    ref = scan_lines_ref(*(t.double() for t in (x, dt, A, B, C)), directions=dirs)
    assert rel_err(lines_2d(x, dt, A, B, C, dirs, 4), ref) <= RTOL


def test_line_scan_gradients_match_oracle():
    # 19 tokens: 5 chunks of 4, padded
    assert_map_gradients_match(scan_lines_ref, lambda *t: lines_2d(*t, DIRECTIONS, 4),
                               map_inputs(1, 1, 2, 3, 5, 19, seed=9))


def test_lines_are_independent():
    """An impulse reaches its own row (forward and reverse) and nothing else: no state crosses a line's end."""
    H, W, r0, c0 = 4, 9, 1, 4
    x, dt, ones = impulse(H, W, r0, c0)
    y = lines_2d(x, dt, torch.full((1, 1), 0.1, dtype=torch.float64), ones, ones, ("row", "row_rev"), 4)[0, 0, 0]
    reach = torch.zeros(H, W, dtype=torch.bool)
    reach[r0] = True
    assert torch.equal(y > 1e-12, reach)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_line_scan_low_precision_with_log_decays_down_to_minus_1e4(dtype):
    """fp16 stays finite and >= 40 dB from fp32 (bf16: >= 30 dB, it keeps 8 bits) with per-token log-decays from 0
    to -1e4, mixed within each line: long memories and hard resets side by side."""
    g = torch.Generator().manual_seed(7)
    b, L, T, p, n = 2, 6, 68, 8, 8
    x = torch.randn(b, L, T, p, generator=g)
    dt = torch.rand(b, L, T, generator=g) * 0.1
    # log-decay -dt*A between 0 and -1e4: A = 1 and steps spread log-uniformly over 10 decades
    dt = torch.where(torch.rand(b, L, T, generator=g) < 0.5, dt, 10 ** (torch.rand(b, L, T, generator=g) * 8 - 4))
    A = torch.ones(1)
    x = x / dt.clamp(min=1).unsqueeze(-1)  # the input is dt * x: keep it O(1) so the decays are what is stressed
    B, C, Br, Cr = (torch.randn(b, L, T, n, generator=g) * 0.3 for _ in range(4))
    want = scan_lines(x.double(), dt.double(), A.double(), (B.double(), C.double()), (Br.double(), Cr.double()), 34)
    got = scan_lines(*(t.to(dtype) for t in (x, dt, A)), tuple(t.to(dtype) for t in (B, C)),
                     tuple(t.to(dtype) for t in (Br, Cr)), 34)
    assert (dt * A).max() > 5e3 and (dt * A).min() < 1e-3
    assert torch.isfinite(got).all() and want.abs().max() < 20
    mse = float((got.double() - want).pow(2).mean())
    psnr = 10 * torch.log10(want.abs().max() ** 2 / mse)
    assert psnr >= (40 if dtype == torch.float16 else 30), float(psnr)


# ---------------------------------------------------------------------------------------------- diagonal lines, spiral
def test_spiral_visits_every_pixel_once_clockwise_inwards_through_neighbours():
    assert spiral_order(3, 4).tolist() == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]
    for H, W in [(1, 1), (1, 7), (7, 1), (2, 2), (5, 5), (4, 9), (9, 4)]:
        order = spiral_order(H, W)
        assert sorted(order.tolist()) == list(range(H * W))
        steps = abs(order[1:] // W - order[:-1] // W) + abs(order[1:] % W - order[:-1] % W)
        assert (steps == 1).all(), (H, W)
        assert scan_order(H, W, "spiral_rev").tolist() == order[::-1].tolist()


@pytest.mark.parametrize("orient, step", [("diag", (1, 1)), ("anti", (-1, 1))])
@pytest.mark.parametrize("H, W", [(1, 1), (1, 6), (6, 1), (4, 4), (3, 7), (7, 3)])
def test_diagonal_lines_cover_the_map_once_walking_one_diagonal_step(orient, step, H, W):
    lines = line_orders(H, W, orient)
    assert len(lines) == H + W - 1
    assert sorted(i for line in lines for i in line) == list(range(H * W))
    for line in lines:
        for a, b in zip(line, line[1:]):
            assert (b // W - a // W, b % W - a % W) == step


@pytest.mark.parametrize("orient", ["diag", "anti"])
@pytest.mark.parametrize("H, W", [(1, 1), (3, 5), (5, 3), (4, 4), (1, 6), (6, 1)])
def test_the_diagonal_skew_lays_out_the_oracles_lines_and_inverts(orient, H, W):
    x = torch.arange(1, H * W + 1, dtype=torch.float64).reshape(1, H, W, 1)
    z = to_diagonal_lines(x, orient)[0, ..., 0]
    assert [[int(v) - 1 for v in row[row > 0]] for row in z] == line_orders(H, W, orient)
    assert torch.equal(diagonal_line_mask(H, W, orient, z) > 0, z > 0)
    assert torch.equal(from_diagonal_lines(to_diagonal_lines(x, orient), orient), x)


def diagonals_2d(x, dt, A, B, C, directions, chunk):
    """:func:`scan_lines` over the diagonal lines of a (b, 1, p, H, W) map (as the line mixers run it: skewed into
    token-major lines, ``dt`` masked outside the map), one call per orientation, in the oracle's shapes."""
    H, W = x.shape[-2:]
    index = {d: i for i, d in enumerate(directions)}
    out = 0
    for o, orient in enumerate(orientations(directions)):
        tm = lambda t: to_diagonal_lines(t.permute(0, 2, 3, 1), orient)  # (b, ch, H, W) -> (b, H + W - 1, W, ch)
        pair = lambda d: None if d not in index else (tm(B[:, index[d]]), tm(C[:, index[d]]))
        dt_o = tm(dt[:, o])[..., 0] * diagonal_line_mask(H, W, orient, x)
        y = scan_lines(tm(x[:, 0]), dt_o, A[o], pair(orient), pair(orient + "_rev"), chunk)
        out = out + from_diagonal_lines(y, orient).permute(0, 3, 1, 2)
    return out.unsqueeze(1)


DIAGONAL_DIRS = ("diag", "diag_rev", "anti", "anti_rev")


@pytest.mark.parametrize("H, W, chunk", [(1, 1, 32), (1, 9, 4), (9, 1, 4), (5, 7, 4), (8, 8, 4), (13, 11, 32),
                                         (6, 40, 8), (4, 68, 34)])
def test_diagonal_line_scan_matches_oracle(H, W, chunk):
    """Diagonals of every length from 1 to min(H, W), with the skew's zero tokens inside the chunks and carried
    states across chunks (40 tokens in chunks of 8)."""
    x, dt, A, B, C = map_inputs(2, 1, 3, 4, H, W, seed=H * 100 + W, dirs=DIAGONAL_DIRS)
    ref = scan_lines_ref(*(t.double() for t in (x, dt, A, B, C)), directions=DIAGONAL_DIRS)
    assert rel_err(diagonals_2d(x, dt, A, B, C, DIAGONAL_DIRS, chunk), ref) <= RTOL


@pytest.mark.parametrize("dirs", [("diag",), ("anti_rev",), ("anti", "anti_rev")])
def test_diagonal_direction_subsets(dirs):
    x, dt, A, B, C = map_inputs(1, 1, 2, 3, 6, 9, seed=3, dirs=dirs)
    ref = scan_lines_ref(*(t.double() for t in (x, dt, A, B, C)), directions=dirs)
    assert rel_err(diagonals_2d(x, dt, A, B, C, dirs, 4), ref) <= RTOL


def test_diagonal_line_scan_gradients_match_oracle():
    # 11 tokens: 3 chunks of 4, padded
    assert_map_gradients_match(lambda *t: scan_lines_ref(*t, directions=DIAGONAL_DIRS),
                               lambda *t: diagonals_2d(*t, DIAGONAL_DIRS, 4),
                               map_inputs(1, 1, 2, 3, 5, 11, seed=9, dirs=DIAGONAL_DIRS))


def test_an_impulse_reaches_its_diagonal_and_nothing_else():
    H, W, r0, c0 = 5, 7, 2, 3
    x, dt, ones = impulse(H, W, r0, c0)
    for orient, on_line in [("diag", lambda i, j: j - i == c0 - r0), ("anti", lambda i, j: i + j == r0 + c0)]:
        y = diagonals_2d(x, dt, torch.full((1, 1), 0.1, dtype=torch.float64), ones, ones,
                         (orient, orient + "_rev"), 4)[0, 0, 0]
        want = torch.tensor([[on_line(i, j) for j in range(W)] for i in range(H)])
        assert torch.equal(y > 1e-12, want), orient


SPIRAL_DIRS = ("row", "spiral", "spiral_rev")


@pytest.mark.parametrize("H, W, chunk", [(1, 1, 32), (3, 4, 4), (5, 5, 8), (6, 9, 4), (9, 6, 32), (12, 12, 8)])
def test_spiral_raster_scan_matches_oracle(H, W, chunk):
    """The spiral is one line through the whole map (up to 144 tokens in chunks of 8: two carry levels)."""
    x, dt, A, B, C = map_inputs(2, 2, 3, 4, H, W, seed=H * 10 + W, dirs=SPIRAL_DIRS)
    ref = scan_2d_ref(*(t.double() for t in (x, dt, A, B, C)), directions=SPIRAL_DIRS)
    assert rel_err(scan_2d(x, dt, A, B, C, SPIRAL_DIRS, chunk), ref) <= RTOL


def test_spiral_raster_scan_gradients_match_oracle():
    assert_map_gradients_match(lambda *t: scan_2d_ref(*t, directions=SPIRAL_DIRS),
                               lambda *t: scan_2d(*t, SPIRAL_DIRS, 4),
                               map_inputs(1, 2, 2, 3, 5, 6, seed=4, dirs=SPIRAL_DIRS))
