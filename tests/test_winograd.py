"""Winograd F(2x2,3x3) / F(4x4,3x3): kernels/winograd.cu through ops/winograd.py.

Every numeric test poisons its output, compares with the float64 reference by relative error
and runs on the emulator (always) and the GPU (when present).
"""
from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest

import cuconv
import cuconv.ops  # noqa: F401  (registers the algorithms)
from conftest import auto_order, put
from cuconv import cost
from cuconv.ops import winograd as wg
from cuconv.plan import Ref, launch_all
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array, rel_error, to_numpy

conv2d_mod = importlib.import_module("cuconv.ops.conv2d")   # the module (cuconv.ops.conv2d is the function)

ALGOS = ["winograd_f2x2_3x3", "winograd_f4x4_3x3", "winograd_fused_f2x2_3x3"]
M_OF = {"winograd_f2x2_3x3": 2, "winograd_f4x4_3x3": 4, "winograd_fused_f2x2_3x3": 2}


def _frac(matrix):
    return np.array([[Fraction(v) for v in row] for row in matrix], dtype=object)


# =========================================================================== the matrices
@pytest.mark.parametrize("points, m", [((0, 1, -1), 2), ((0, 1, -1, 2, -2), 4),
                                       ((0, 1, -1, Fraction(1, 2), Fraction(-1, 2)), 4)])
def test_interpolation_matrices_compute_the_correlation_exactly(points, m, rng):
    """Aᵀ[(G g) ⊙ (Bᵀ d)] = correlation in exact arithmetic, in 1-D and nested into 2-D."""
    AT, G, BT = (_frac(x) for x in wg.interpolation_matrices(points, m))
    alpha = m + 2
    for _ in range(5):
        d = _frac(rng.integers(-20, 20, (alpha, alpha)).tolist())
        g = _frac(rng.integers(-20, 20, (3, 3)).tolist())
        y = AT.dot((G.dot(g).dot(G.T)) * (BT.dot(d).dot(BT.T))).dot(AT.T)
        want = np.array([[sum(g[r, s] * d[i + r, j + s] for r in range(3) for s in range(3))
                          for j in range(m)] for i in range(m)], dtype=object)
        assert (y == want).all()


@pytest.mark.parametrize("m", [2, 4])
def test_kernel_matrices_are_lavins_and_exact(m, rng):
    AT, G, BT = (_frac(x) for x in wg.winograd_matrices(m))
    ref = cost.WINOGRAD_MATRICES[m]
    assert (AT == _frac(ref["AT"])).all() and (G == _frac(ref["G"])).all() and (BT == _frac(ref["BT"])).all()
    d = _frac(rng.integers(-9, 9, (m + 2, 1)).tolist())[:, 0]
    g = _frac(rng.integers(-9, 9, (3, 1)).tolist())[:, 0]
    assert list(AT.dot(G.dot(g) * BT.dot(d))) == [sum(g[j] * d[i + j] for j in range(3)) for i in range(m)]


def _float_matrices(m):
    return tuple(np.array(x, dtype=np.float64) for x in wg.winograd_matrices(m))


# =========================================================================== the kernels, stage by stage
@pytest.mark.parametrize("variant", ["f2x2_3x3", "f4x4_3x3"])
def test_filter_transform_matches_derivation(be, rng, variant):
    """The kernel's hard-coded G equals the derived one: U = G g Gᵀ to one float32 rounding."""
    m = wg.VARIANTS[variant]
    K, C = 5, 3
    w = random_array(rng, (K, C, 3, 3))
    _, G, _ = _float_matrices(m)
    want = np.einsum("ir,kcrs,js->ijkc", G, w.astype(np.float64), G).reshape((m + 2) ** 2, K, C)
    out = put(be, np.empty(want.shape, np.float32))
    poison(out)
    U = cuconv.winograd_filter_transform(put(be, w), variant, out=out)
    assert U is out
    assert rel_error(U, want) <= 2 ** -24
    assert rel_error(cuconv.winograd_filter_transform(put(be, w), variant), want) <= 2 ** -24


@pytest.mark.parametrize("m", [2, 4])
def test_input_transform_matches_derivation(be, rng, m):
    """V[ξ][c][t] = Bᵀ d B for a chunk starting mid-batch, padding and partial tiles included."""
    p = Conv2dProblem.from_shapes((2, 3, 7, 9), (4, 3, 3, 3), padding=(2, 1))
    x = random_array(rng, p.input_shape)
    pl = wg.chunking(p, m)
    begin, count = 3, pl.tiles - 4
    alpha = m + 2
    _, _, BT = _float_matrices(m)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p.pad_h, alpha), (p.pad_w, alpha)))
    want = np.empty((alpha * alpha, p.C, count))
    for t in range(count):
        n, rest = divmod(begin + t, pl.tiles_h * pl.tiles_w)
        th, tw = divmod(rest, pl.tiles_w)
        d = xp[n, :, th * m:th * m + alpha, tw * m:tw * m + alpha]
        want[:, :, t] = np.einsum("ik,ckl,jl->ijc", BT, d, BT).reshape(alpha * alpha, p.C)
    V = put(be, np.empty(want.shape, np.float32))
    poison(V)
    flags = put(be, np.zeros(pl.tiles, np.int32))
    launch_all(be, [wg.input_transform_launch(Ref("x"), Ref("V"), p, pl, begin, count)],
               {"x": put(be, x), "V": V, "tile_flags": flags})
    assert not to_numpy(flags).any()          # finite input: no tile flagged for the fix-up
    assert rel_error(V, want) <= 1e-6


# =========================================================================== the conv test matrix
# 3x3 stride 1 only: odd H/W, C = 1 and 3 (and one C that spans several fused channel chunks),
# K not a multiple of any tile (and one K that spans two fused K blocks), batch 1 and 3,
# padding 0/1/2 and an asymmetric pair.
CASES = [
    # N, C, H, W, K, padding, epilogue
    (1, 1, 7, 7, 5, 0, None),
    (3, 3, 9, 7, 5, 1, "bias_relu"),
    (1, 3, 7, 9, 7, 2, "residual"),
    (3, 1, 9, 9, 3, 1, "bias_residual_silu"),
    (1, 19, 7, 5, 33, (2, 0), "bias"),
]


def _case_id(case):
    n, c, h, w, k, pad, epi = case
    return f"N{n}C{c}H{h}W{w}K{k}p{pad if isinstance(pad, int) else 'x'.join(map(str, pad))}-{epi or 'plain'}"


def _inputs(rng, case):
    n, c, h, w, k, pad, epi = case
    x = random_array(rng, (n, c, h, w))
    wt = random_array(rng, (k, c, 3, 3))
    p = Conv2dProblem.from_shapes(x.shape, wt.shape, padding=pad)
    bias = random_array(rng, (k,)) if epi and "bias" in epi else None
    residual = random_array(rng, p.output_shape) if epi and "residual" in epi else None
    act = {"bias_relu": "relu", "bias_residual_silu": "silu"}.get(epi)
    ref = conv2d_ref(x, wt, bias, padding=pad, activation=act, residual=residual)
    return x, wt, bias, residual, act, pad, ref


def _run(be, algo, x, wt, bias, residual, act, pad, ref, **extra):
    out = put(be, np.empty(ref.shape, np.float32))
    poison(out)
    y = cuconv.conv2d(put(be, x), put(be, wt), put(be, bias), padding=pad, algo=algo, activation=act,
                      residual=put(be, residual), out=out, **extra)
    assert y is out
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("algo", ALGOS)
def test_conv_matrix(be, rng, algo, case):
    x, wt, bias, residual, act, pad, ref = _inputs(rng, case)
    extra = {} if "fused" in algo else {"multiply": "simple"}
    out = _run(be, algo, x, wt, bias, residual, act, pad, ref, **extra)
    assert_close(out, ref, "float32", algo)


@pytest.mark.parametrize("algo", ALGOS)
def test_allocating_path_and_gemm_stage(be, rng, algo):
    """out=None allocates; the element-wise stage on the tiled GEMM (multiply="gemm") agrees too."""
    x, wt, bias, residual, act, pad, ref = _inputs(rng, (2, 3, 9, 7, 6, 1, "bias_relu"))
    y = cuconv.conv2d(put(be, x), put(be, wt), put(be, bias), padding=pad, algo=algo, activation=act)
    assert_close(y, ref, "float32", algo)
    if "fused" not in algo:
        out = _run(be, algo, x, wt, bias, residual, act, pad, ref, multiply="gemm")
        assert_close(out, ref, "float32", algo, what=f"{algo} (multiply='gemm')")


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined", order="reverse"),
                                  dict(order="random", seed=7)], ids=["asan_ubsan_reverse", "random_order"])
@pytest.mark.parametrize("algo", ALGOS)
def test_emulator_checking_modes(rng, algo, mode):
    """Every kernel once under ASan/UBSan with reversed thread order, once in random order."""
    x, wt, bias, residual, act, pad, ref = _inputs(rng, (3, 3, 7, 9, 5, 1, "bias_residual_silu"))
    with cuconv.backend("emulator", **mode) as be:
        out = _run(be, algo, x, wt, bias, residual, act, pad, ref,
                   **({} if "fused" in algo else {"multiply": "simple"}))
    assert_close(out, ref, "float32", algo)


# =========================================================================== transformed weights
@pytest.mark.parametrize("algo", ALGOS)
def test_transformed_weight_is_reused(be, rng, algo):
    m = M_OF[algo]
    wt = random_array(rng, (4, 3, 3, 3))
    U = cuconv.winograd_filter_transform(put(be, wt), f"f{m}x{m}_3x3")
    for _ in range(2):                                   # one U, two inputs
        x = random_array(rng, (1, 3, 7, 9))
        ref = conv2d_ref(x, wt, padding=1)
        out = _run(be, algo, x, wt, None, None, None, 1, ref, transformed_weight=U)
        assert_close(out, ref, "float32", algo)


@pytest.mark.parametrize("algo", ALGOS)
def test_transformed_weight_is_checked_before_any_launch(be, rng, algo):
    m = M_OF[algo]
    other = 4 if m == 2 else 2
    wt = random_array(rng, (4, 3, 3, 3))
    x = random_array(rng, (1, 3, 7, 9))
    ref = conv2d_ref(x, wt, padding=1)
    out = put(be, np.empty(ref.shape, np.float32))
    poison(out)
    wrong_variant = cuconv.winograd_filter_transform(put(be, wt), f"f{other}x{other}_3x3")
    wrong_k = cuconv.winograd_filter_transform(put(be, wt[:3]), f"f{m}x{m}_3x3")
    for bad, exc, words in [(wrong_variant, ValueError, "(α², K, C)"), (wrong_k, ValueError, "(α², K, C)"),
                            (put(be, np.zeros(((m + 2) ** 2, 4, 3), np.float64)), TypeError, "float32"),
                            (put(be, np.zeros(((m + 2) ** 2, 12), np.float32)), ValueError, "3-D")]:
        with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
            cuconv.conv2d(put(be, x), put(be, wt), padding=1, algo=algo, out=out, transformed_weight=bad)
    assert np.isnan(to_numpy(out)).all(), "a kernel ran before the bad transformed_weight was refused"


def test_filter_transform_rejects_bad_arguments():
    with cuconv.backend("emulator"):
        w = np.ones((2, 3, 3, 3), np.float32)
        with pytest.raises(ValueError, match="variant"):
            cuconv.winograd_filter_transform(w, "f6x6_3x3")
        with pytest.raises(ValueError, match="3x3 filter"):
            cuconv.winograd_filter_transform(np.ones((2, 3, 5, 5), np.float32), "f2x2_3x3")
        with pytest.raises(TypeError, match="float32"):
            cuconv.winograd_filter_transform(w.astype(np.float64), "f2x2_3x3")
        with pytest.raises(ValueError, match="shape"):
            cuconv.winograd_filter_transform(w, "f2x2_3x3", out=np.empty((36, 2, 3), np.float32))


# =========================================================================== what Winograd can run
@pytest.mark.parametrize("kwargs, words", [
    (dict(w_shape=(4, 3, 5, 5), padding=2), "3x3 kernel"),
    (dict(stride=2, padding=1), "stride 1"),
    (dict(dilation=2, padding=2), "dilation 1"),
    (dict(x_shape=(1, 4, 9, 9), w_shape=(4, 2, 3, 3), groups=2, padding=1), "groups 1"),
])
def test_unsupported_problems_are_refused_with_a_reason(kwargs, words):
    x_shape = kwargs.pop("x_shape", (1, 3, 9, 9))
    w_shape = kwargs.pop("w_shape", (4, 3, 3, 3))
    p = Conv2dProblem.from_shapes(x_shape, w_shape, **kwargs)
    infos = {i.name: i for i in cuconv.algorithms(p)}
    for algo in ALGOS:
        assert not infos[algo].ok and words in infos[algo].reason
    assert not conv2d_mod.choose_algorithm(p).startswith("winograd")
    with cuconv.backend("emulator"):
        x = np.ones(x_shape, np.float32)
        w = np.ones(w_shape, np.float32)
        for algo in ALGOS:
            with pytest.raises(ValueError, match=words):
                cuconv.conv2d(x, w, algo=algo, **kwargs)


def test_auto_rule():
    """Winograd only where the channel product amortises the transforms; F(4x4) for the large layers."""
    def order(**shape):
        s = dict(N=1, C=64, H=28, W=28, K=64)
        s.update(shape)
        p = Conv2dProblem.from_shapes((s["N"], s["C"], s["H"], s["W"]), (s["K"], s["C"], 3, 3), padding=1)
        return auto_order(p)

    big = order()
    assert big.index("winograd_f4x4_3x3") < big.index("winograd_fused_f2x2_3x3") < big.index("winograd_f2x2_3x3")
    assert "winograd_f4x4_3x3" not in order(C=32) and "winograd_fused_f2x2_3x3" in order(C=32)
    assert "winograd_f4x4_3x3" not in order(H=6, W=6)
    for algo in ALGOS:
        assert algo not in order(C=8) and algo not in order(K=8)
    assert all(big.index("winograd_fused_f2x2_3x3") < big.index(g) for g in ("implicit_gemm", "im2col_gemm"))


# =========================================================================== workspace
def _workspace(algo, p, limit=None) -> int:
    """The workspace of ``algo``'s plan for ``p`` under ``limit`` (reported even when over it)."""
    return {i.name: i for i in cuconv.algorithms(p, limit)}[algo].workspace_bytes


@pytest.mark.parametrize("algo", ["winograd_f2x2_3x3", "winograd_f4x4_3x3"])
@pytest.mark.parametrize("x_shape", [(3, 19, 17, 13), (2, 19, 16, 14)])
def test_workspace_agrees_with_cost_model(algo, x_shape):
    """V + M (rows padded to a multiple of 4 tiles) + U; exactly the cost model's V + M and U when
    the tile count is a multiple of 4."""
    p = Conv2dProblem.from_shapes(x_shape, (21, 19, 3, 3), padding=1)
    m = M_OF[algo]
    pl = wg.chunking(p, m)
    assert pl.tiles == cost.winograd_tiles(p, m) and pl.chunks == 1 and 0 <= pl.ld - pl.tiles < 4
    vm = cost.winograd_workspace_bytes(p, algo) * pl.ld // pl.tiles
    # plus the non-finite flags: 4 bytes per tile of the batch and per filter, each buffer 16-aligned
    r16 = lambda n: -(-n // 16) * 16  # noqa: E731
    flags = r16(r16(4 * pl.tiles) + 4 * p.K)
    assert wg.flags_bytes(p, m) == flags
    assert _workspace(algo, p) == vm + cost.winograd_filter_bytes(p, m) + flags
    if pl.tiles % 4 == 0:
        assert _workspace(algo, p) == cost.winograd_workspace_bytes(p, algo) + cost.winograd_filter_bytes(p, m) + flags
    tiles2 = cost.winograd_tiles(p, 2)
    assert _workspace("winograd_fused_f2x2_3x3", p) == cost.winograd_filter_bytes(p, 2) + r16(4 * tiles2) + 4 * p.K
    # a limit chunks the tiles: the reported figure fits and shrinks with the limit
    full, one_tile = _workspace(algo, p), wg.chunking(p, m, 1).workspace_bytes() + flags
    for limit in (full - 1, one_tile + (full - one_tile) // 2, one_tile + (full - one_tile) // 5, one_tile):
        assert _workspace(algo, p, limit) <= limit
        assert wg.chunking(p, m, limit, fixed_bytes=flags).chunks > 1 or limit == full - 1
    assert _workspace(algo, p, one_tile - 1) > one_tile - 1     # not even one tile fits: refused


@pytest.mark.parametrize("algo", ["winograd_f2x2_3x3", "winograd_f4x4_3x3"])
def test_workspace_limit_is_honoured(be, rng, algo):
    """A limit that forces several chunks gives the same answer; a limit too small is refused first."""
    x, wt, bias, residual, act, pad, ref = _inputs(rng, (3, 3, 9, 7, 5, 1, "bias_relu"))
    p = Conv2dProblem.from_shapes(x.shape, wt.shape, padding=pad)
    m = M_OF[algo]
    one_tile = wg.chunking(p, m, 1).workspace_bytes()
    limit = one_tile + 7 * (m + 2) ** 2 * (p.C + p.K) * 4         # 8 tiles a chunk
    assert wg.chunking(p, m, limit).chunks >= 2
    out = _run(be, algo, x, wt, bias, residual, act, pad, ref, multiply="simple", max_workspace_bytes=limit)
    assert_close(out, ref, "float32", algo)
    out = put(be, np.empty(ref.shape, np.float32))
    poison(out)
    with pytest.raises(ValueError, match="max_workspace_bytes"):
        cuconv.conv2d(put(be, x), put(be, wt), padding=pad, algo=algo, out=out, max_workspace_bytes=one_tile - 1)
    assert np.isnan(to_numpy(out)).all()


# =========================================================================== the multiplication count
@pytest.mark.parametrize("algo, per_tile, direct_per_tile", [("winograd_f2x2_3x3", 16, 36),
                                                              ("winograd_f4x4_3x3", 36, 144)])
def test_elementwise_multiplications_per_tile(be, rng, algo, per_tile, direct_per_tile):
    """Count the multiplications the launched element-wise stage performs (batch·M·N·K of each
    batched product), per output tile and (k, c) pair: 16 vs 36 (2.25x), 36 vs 144 (4x).

    8x8 outputs and 3 images give tile counts (48, 12) and chunks that are multiples of 4, so no
    GEMM column is alignment padding and every counted product belongs to a tile."""
    x, wt, bias, residual, act, pad, ref = _inputs(rng, (3, 3, 8, 8, 5, 1, None))
    p = Conv2dProblem.from_shapes(x.shape, wt.shape, padding=pad)
    m = M_OF[algo]
    flags = wg.flags_bytes(p, m)
    limit = wg.chunking(p, m, 1).workspace_bytes() + flags + 3 * (m + 2) ** 2 * (p.C + p.K) * 4   # 4 tiles a chunk
    pl = wg.chunking(p, m, limit, fixed_bytes=flags)
    assert pl.chunk_tiles == 4 and pl.chunks > 1
    out = _run(be, algo, x, wt, bias, residual, act, pad, ref, multiply="simple", max_workspace_bytes=limit)
    assert_close(out, ref, "float32", algo)
    # What the plan launched for the element-wise stage: the simple kernel's (batch, K, C, T) args.
    plan = cuconv.plan_conv2d(put(be, x), put(be, wt), padding=pad, algo=algo, multiply="simple",
                              max_workspace_bytes=limit)
    launched = [int(ln.args[3]) * int(ln.args[4]) * int(ln.args[5]) * int(ln.args[6])
                for ln in plan.launches if ln.kernel == "winograd_multiply_simple"]
    assert len(launched) == pl.chunks
    tiles = -(-p.P // m) * -(-p.Q // m) * p.N
    total = sum(launched)
    assert total == cost.winograd_multiplications(p, m)
    assert total / (tiles * p.K * p.C) == per_tile
    assert m * m * 9 == direct_per_tile == p.macs() / (tiles * p.K * p.C)      # 8x8 outputs: no partial tiles
    assert direct_per_tile / per_tile == {2: 2.25, 4: 4.0}[m]


# =========================================================================== accuracy
def test_accuracy_against_measured_bounds(be, rng):
    """Bounds from docs/winograd_accuracy.md (C = 128, x ~ U(-1,1), K = 16, 12x12, padding 1):
    worst measured F(2x2,3x3) 5.5e-7 and F(4x4,3x3) 9.7e-6, F(4x4)/F(2x2) at least 8x on the
    same draw. Asserted with ~3x headroom, and the ratio at half the smallest measured."""
    x = random_array(rng, (1, 128, 12, 12))
    wt = random_array(rng, (16, 128, 3, 3))
    ref = conv2d_ref(x, wt, padding=1)
    err = {}
    for algo in ALGOS:
        y = cuconv.conv2d(put(be, x), put(be, wt), padding=1, algo=algo)
        err[algo] = rel_error(y, ref)
    assert err["winograd_f2x2_3x3"] <= 1.5e-6, err
    assert err["winograd_fused_f2x2_3x3"] <= 1.5e-6, err
    assert err["winograd_f4x4_3x3"] <= 3e-5, err
    assert err["winograd_f4x4_3x3"] >= 4 * err["winograd_f2x2_3x3"], err     # markedly worse, as measured


# =========================================================================== non-finite values
def _with_specials(rng, shape, where, values):
    a = random_array(rng, shape)
    for idx, v in zip(where, values):
        a[idx] = v
    return a


NONFINITE_CASES = {
    # name: (input specials, weight specials); positions chosen for interior, edge and partial tiles
    "nan_interior": ([(0, 1, 4, 4)], [np.nan], [], []),
    "inf_edge": ([(1, 0, 0, 8)], [np.inf], [], []),
    "neg_inf_partial_tile": ([(0, 2, 8, 6)], [-np.inf], [], []),
    "inf_and_nan": ([(0, 0, 3, 3), (0, 0, 3, 4), (1, 2, 6, 1)], [np.inf, -np.inf, np.nan], [], []),
    "nan_weight": ([], [], [(3, 1, 0, 2)], [np.nan]),
    "inf_weight_and_input": ([(1, 1, 5, 2)], [np.inf], [(0, 2, 1, 1)], [-np.inf]),
}


@pytest.mark.parametrize("case", sorted(NONFINITE_CASES))
@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_values_follow_direct_convolution_exactly(be, rng, algo, case):
    """NaN/±Inf in the input or the weights reach exactly the outputs, with exactly the values,
    that direct convolution gives (the transforms alone would spread a NaN over its whole tile
    and turn Inf into NaN); with the fused epilogue and padding."""
    xs, xv, ws, wv = NONFINITE_CASES[case]
    x = _with_specials(rng, (2, 3, 9, 9), xs, xv)
    w = _with_specials(rng, (5, 3, 3, 3), ws, wv)
    bias = random_array(rng, (5,))
    residual = random_array(rng, (2, 5, 9, 9))
    args = dict(padding=1)          # (no clamping activation: relu6 would map NaN to 0 and Inf to 6)
    want = to_numpy(cuconv.conv2d(put(be, x), put(be, w), put(be, bias), residual=put(be, residual),
                                  algo="direct", **args))
    assert not np.isfinite(want).all() and np.isfinite(want).any()
    for extra in ({}, {"multiply": "simple"} if "fused" not in algo else {}):
        got = to_numpy(cuconv.conv2d(put(be, x), put(be, w), put(be, bias), residual=put(be, residual),
                                     algo=algo, **args, **extra))
        np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)])
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), f"{algo} {case}: NaN/Inf pattern differs"
        finite = np.isfinite(want)
        assert_close(np.where(finite, got, 0), np.where(finite, want, 0), "float32", algo, case)
    # a transformed_weight is checked through the weight it came from
    U = cuconv.winograd_filter_transform(put(be, w), "f2x2_3x3" if M_OF[algo] == 2 else "f4x4_3x3")
    got = to_numpy(cuconv.conv2d(put(be, x), put(be, w), put(be, bias), residual=put(be, residual), algo=algo,
                                 transformed_weight=U, **args))
    assert np.array_equal(np.isfinite(got), np.isfinite(want))


@pytest.mark.parametrize("algo", ALGOS)
def test_the_fix_up_changes_nothing_when_the_data_is_finite_and_is_needed_when_not(be, rng, algo):
    """The plan without its last launch (the fix-up) gives the same output on finite data; on an
    Inf input the transforms turn Inf into NaN (Inf − Inf), which the fix-up then corrects."""
    w = random_array(rng, (4, 3, 3, 3))
    plan = cuconv.plan_conv2d(put(be, random_array(rng, (1, 3, 8, 8))), put(be, w), padding=1, algo=algo)
    assert plan.launches[-1].kernel.startswith("winograd_fixup") and plan.launches[0].kernel == "winograd_flags_init"
    for x, finite in ((random_array(rng, (1, 3, 8, 8)), True), (_with_specials(rng, (1, 3, 8, 8), [(0, 0, 4, 4)], [np.inf]), False)):
        outs = []
        for launches in (plan.launches, plan.launches[:-1]):
            out = put(be, np.full((1, 4, 8, 8), 7.0, np.float32))
            env = plan.bind(be, put(be, x), put(be, w), out=out)
            partial = cuconv.Plan(plan.op, plan.algo, plan.problem, launches, plan.inputs, plan.outputs, plan.device,
                                  plan.workspace_bytes, plan.buffers)
            partial.execute(be, env)
            outs.append(to_numpy(out))
        if finite:
            np.testing.assert_array_equal(outs[0], outs[1])
        else:
            direct = to_numpy(cuconv.conv2d(put(be, x), put(be, w), padding=1, algo="direct"))
            special = ~np.isfinite(direct)
            np.testing.assert_array_equal(np.isfinite(outs[0]), ~special)
            np.testing.assert_array_equal(outs[0][special], direct[special])
            assert (~np.isfinite(direct)).sum() == 4 * 9 and not np.isnan(direct).any()   # ±Inf in a 3x3 window
            assert np.isnan(outs[1]).any(), "without the fix-up the transforms should have made a NaN"


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="random", seed=5),
                                  dict(order="reverse")], ids=["asan_ubsan", "random", "reverse"])
def test_non_finite_fix_up_under_the_emulators_checks(rng, mode):
    """The flag and fix-up kernels (and the flagging input transforms) under ASan+UBSan and
    shuffled thread orders: the atomicOr flags and the direct recomputation must not depend on
    the order."""
    x = _with_specials(rng, (2, 3, 7, 9), [(0, 1, 3, 3), (1, 0, 6, 8)], [np.nan, np.inf])
    w = _with_specials(rng, (4, 3, 3, 3), [(2, 0, 1, 1)], [-np.inf])
    with cuconv.backend("emulator"):
        want = cuconv.conv2d(x, w, padding=1, algo="direct")
    special = ~np.isfinite(want)
    with cuconv.backend("emulator", **mode):
        for algo in ("winograd_f4x4_3x3", "winograd_fused_f2x2_3x3"):
            got = cuconv.conv2d(x, w, padding=1, algo=algo)
            np.testing.assert_array_equal(np.isfinite(got), ~special)
            np.testing.assert_array_equal(got[special], want[special])
