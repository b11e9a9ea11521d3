"""FFT convolution (fft, fft_tiling): kernels/fft_conv.cu through ops/fft_conv.py, the transforms
through the backend's FFT (NumPy on the emulator, cuFFT on the GPU).

Every numeric test poisons its output, compares with the float64 reference by relative error
and runs on the emulator (always) and the GPU (when present).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cuconv
from conftest import auto_order, put
from cuconv import cost, fft_math
from cuconv.backend import EmulatorBackend
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops import fft_conv, heuristics
from cuconv.plan import FftStep, Ref, launch_all
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array, rel_error, to_numpy

ALGOS = ["fft", "fft_tiling"]


# =========================================================================== sizes and tiles
def test_fft_length_is_the_smallest_smooth_length():
    for n in range(1, 400):
        m = fft_math.fft_length(n)
        assert m >= n and fft_math.is_smooth(m)
        assert not any(fft_math.is_smooth(j) for j in range(n, m))
        e = fft_math.fft_length(n, even=True)
        assert e % 2 == 0 and fft_math.is_smooth(e) and e >= n
        assert not any(fft_math.is_smooth(j) and j % 2 == 0 for j in range(n, e))
    assert [fft_math.fft_length(n) for n in (11, 13, 17, 19, 23, 29, 31)] == [12, 14, 18, 20, 24, 30, 32]


@pytest.mark.parametrize("x,w,pad,dil", [((2, 3, 9, 7), (4, 3, 5, 5), 2, 1), ((1, 2, 57, 40), (3, 2, 7, 3), (3, 1), 1),
                                         ((1, 1, 200, 130), (2, 1, 5, 5), 0, (2, 3)), ((1, 4, 9, 9), (2, 4, 9, 9), 8, 1)])
@pytest.mark.parametrize("algo", ALGOS)
def test_tiles_cover_the_output_and_transforms_hold_the_tiles(x, w, pad, dil, algo):
    """Overlap-save's invariants: Th = Lh − Re + 1, tiles cover P×Q, Lh >= Re; the whole-image
    transform holds the whole padded plane (so nothing wraps into a kept output)."""
    p = Conv2dProblem.from_shapes(x, w, 1, pad, dil)
    t = fft_math.tiling(p, algo)
    Re, Se = fft_math.effective_kernel(p)
    Hp, Wp = fft_math.padded_extent(p)
    assert (t.Th, t.Tw) == (t.Lh - Re + 1, t.Lw - Se + 1) and t.Th >= 1 and t.Tw >= 1
    assert (t.tiles_h - 1) * t.Th < p.P <= t.tiles_h * t.Th and (t.tiles_w - 1) * t.Tw < p.Q <= t.tiles_w * t.Tw
    assert fft_math.is_smooth(t.Lh) and fft_math.is_smooth(t.Lw)
    whole = fft_math.whole_image_size(p)
    if algo == "fft":
        assert (t.Lh, t.Lw) == whole and t.Lh >= Hp and t.Lw >= Wp and t.tiles == 1 and t.Lw % 2 == 0
    else:
        assert t.Lh <= whole[0] and t.Lw <= whole[1]


def test_tiling_picks_the_cheapest_candidate():
    p = Conv2dProblem(1, 64, 112, 112, 64, 7, 7, pad_h=3, pad_w=3)
    t = fft_math.tiling(p, "fft_tiling")
    flops = {L: fft_math.fft_flops(p, "fft_tiling", tile=L) for L in fft_math.TILE_CANDIDATES}
    assert t.Lh == t.Lw == min(flops, key=flops.get)
    assert t.workspace_bytes() < fft_math.workspace_bytes(p, "fft") / 4     # bounded: 112x112 -> 32x32 tiles
    # Larger images or batches: fft's workspace grows with them, fft_tiling's stays below one pass's
    # bound plus the filter spectra, and stops growing.
    for q in (p.with_(H=448, W=448), p.with_(N=16)):
        qt = fft_math.tiling(q, "fft_tiling")
        assert qt.workspace_bytes() <= fft_math.TILING_PASS_BYTES + qt.filter_bytes
        assert fft_math.workspace_bytes(q.with_(N=2 * q.N), "fft_tiling") == qt.workspace_bytes()
        assert fft_math.workspace_bytes(q.with_(N=2 * q.N), "fft") > fft_math.workspace_bytes(q, "fft")


# =========================================================================== the conv test matrix
# Odd sizes, C = 1 and 3, K no tile divides, padding 0 ... R−1, asymmetric ("same" with an even
# kernel), non-square kernels, dilation, groups, batch 1 and 2, every epilogue. Each runs
# through both algorithms; fft_tiling also with a tile of 8 so several (partial) tiles occur.
CASES = [
    # x, w, padding, dilation, groups, epilogue
    ((1, 1, 7, 7), (3, 1, 5, 5), 0, 1, 1, None),
    ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "bias_relu"),
    ((1, 3, 9, 7), (4, 3, 7, 7), 6, 1, 1, "residual"),
    ((2, 4, 10, 9), (6, 2, 3, 5), (1, 4), 1, 2, "bias_residual_silu"),
    ((1, 2, 13, 12), (3, 2, 3, 3), (2, 3), (2, 3), 1, "bias"),
    ((1, 3, 9, 9), (3, 1, 4, 4), "same", 1, 3, "bias_relu"),
    ((1, 1, 9, 8), (2, 1, 1, 1), 0, 1, 1, None),
]


def _case_id(case):
    x, w, pad, dil, g, epi = case
    return f"x{'x'.join(map(str, x))}-w{w[2]}x{w[3]}-p{pad}-d{dil}-g{g}-{epi or 'plain'}"


def _inputs(rng, case):
    xs, ws, pad, dil, g, epi = case
    x, w = random_array(rng, xs), random_array(rng, ws)
    p = Conv2dProblem.from_shapes(xs, ws, 1, pad, dil, g)
    bias = random_array(rng, (p.K,)) if epi and "bias" in epi else None
    residual = random_array(rng, p.output_shape) if epi and "residual" in epi else None
    act = {"bias_relu": "relu", "bias_residual_silu": "silu"}.get(epi)
    kw = dict(padding=pad, dilation=dil, groups=g)
    ref = conv2d_ref(x, w, bias, activation=act, residual=residual, **kw)
    return x, w, bias, residual, act, kw, ref


def _run(be, x, w, bias, residual, act, kw, shape, **extra):
    out = put(be, np.empty(shape, np.float32))
    poison(out)
    y = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), activation=act, residual=put(be, residual), out=out,
                      **kw, **extra)
    assert y is out
    return to_numpy(out)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fft_conv_matches_float64(be, rng, case):
    x, w, bias, residual, act, kw, ref = _inputs(rng, case)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, 1, **kw)
    runs = [("fft", {}), ("fft_tiling", {})]
    # Several (partial) tiles: 8x8, and an odd, non-smooth 9x11 (Lw odd: the R2C's half spectrum
    # has no Nyquist column).
    runs += [("fft_tiling", {"tile": t}) for t in (8, (9, 11)) if not fft_math.tile_size_reason(
        p, (t, t) if isinstance(t, int) else t)]
    for algo, extra in runs:
        y = _run(be, x, w, bias, residual, act, kw, ref.shape, algo=algo, **extra)
        assert_close(y, ref, "float32", algo, what=f"{algo} {extra}")


def test_simple_and_tiled_channel_gemm_agree(be, rng):
    """The reference GEMM kernel and the register-tiled one (both configs: K/g below and above
    32) sum the same products in the same order."""
    for ws, groups in (((5, 3, 5, 5), 1), ((40, 3, 5, 5), 1), ((70, 1, 5, 5), 2)):
        x, w = random_array(rng, (3, ws[1] * groups, 9, 7)), random_array(rng, ws)
        kw = dict(padding=2, groups=groups)
        ref = conv2d_ref(x, w, **kw)
        ys = {}
        for multiply in ("auto", "simple"):
            with cuconv.backend("record"):
                plan = cuconv.plan_conv2d(x, w, algo="fft_tiling", tile=8, multiply=multiply, **kw)
            want = "fft_conv_channel_gemm_simple" if multiply == "simple" else (
                "fft_conv_channel_gemm_4x4" if ws[0] // groups >= 32 else "fft_conv_channel_gemm_4x1")
            assert want in plan.kernels
            ys[multiply] = _run(be, x, w, None, None, None, kw, ref.shape, algo="fft_tiling", tile=8,
                                multiply=multiply)
            assert_close(ys[multiply], ref, "float32", "fft_tiling")
        assert rel_error(ys["auto"], ys["simple"]) <= 1e-6


def test_workspace_cap_chunks_the_batch_and_keeps_the_answer(be, rng):
    x, w = random_array(rng, (3, 2, 11, 9)), random_array(rng, (4, 2, 5, 5))
    ref = conv2d_ref(x, w, padding=1)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, 1, 1)
    for algo, extra in (("fft", {}), ("fft_tiling", {}), ("fft_tiling", dict(tile=8))):
        full = fft_math.workspace_bytes(p, algo, tile=extra.get("tile"))
        t = fft_math.tiling(p, algo, extra.get("tile"))
        for items in [n for n in (1, 4) if n < t.items]:   # 4 tiles a pass: passes end inside images
            cap = t.chunk_bytes(items) + t.filter_bytes + 64
            with cuconv.backend("record"):
                plan = cuconv.plan_conv2d(x, w, padding=1, algo=algo, max_workspace_bytes=cap, **extra)
            assert plan.workspace_bytes <= cap < full
            assert plan.kernels.count("fft_conv_crop_epilogue") == -(-t.items // items)
            y = _run(be, x, w, None, None, None, dict(padding=1, max_workspace_bytes=cap), ref.shape, algo=algo,
                     **extra)
            assert_close(y, ref, "float32", algo, what=f"{algo} {extra} cap {cap}")


# =========================================================================== reuse of the filter spectra
@pytest.mark.parametrize("algo", ALGOS)
def test_transformed_weight_is_reused(be, rng, algo):
    x, w = random_array(rng, (2, 4, 11, 9)), random_array(rng, (6, 2, 5, 3))
    bias = random_array(rng, (6,))
    kw = dict(padding=(2, 1), dilation=(1, 2), groups=2)
    ref = conv2d_ref(x, w, bias, activation="relu", **kw)
    extra = dict(tile=8) if algo == "fft_tiling" else {}
    p = Conv2dProblem.from_shapes(x.shape, w.shape, 1, **kw)
    Lh, Lw = fft_conv.fft_size(p, algo, extra.get("tile"))
    U = put(be, np.empty((6, 2, Lh, Lw // 2 + 1), np.complex64))
    U[...] = np.nan
    assert cuconv.fft_filter_transform(put(be, w), x.shape, padding=(2, 1), dilation=(1, 2), algo=algo, out=U,
                                       **extra) is U
    # The spectrum is the conjugate of the dilated filter's (the correlation's), to float32 rounding.
    spread = np.zeros((6, 2, Lh, Lw))
    spread[:, :, 0:5:1, 0:5:2] = w                 # dilation (1, 2)
    want = np.conj(np.fft.rfft2(spread))
    assert rel_error(to_numpy(U).view(np.float32), want.astype(np.complex128).view(np.float64)) <= 1e-6
    y = _run(be, x, w, bias, None, "relu", kw, ref.shape, algo=algo, transformed_weight=U, **extra)
    assert_close(y, ref, "float32", algo)
    y2 = _run(be, x, w, bias, None, "relu", kw, ref.shape, algo=algo, **extra)
    np.testing.assert_array_equal(y, y2)          # the same spectra either way
    with cuconv.backend("record"):
        with_u = cuconv.plan_conv2d(x, w, bias, algo=algo, transformed_weight=to_numpy(U), **kw, **extra)
        without = cuconv.plan_conv2d(x, w, bias, algo=algo, **kw, **extra)
    assert "fft_conv_pack_filter" not in with_u.kernels and "fft_conv_pack_filter" in without.kernels
    assert with_u.workspace_bytes < without.workspace_bytes


def test_transformed_weight_errors_name_the_rule():
    x, w = np.ones((1, 3, 9, 9), np.float32), np.ones((4, 3, 5, 5), np.float32)
    with cuconv.backend("record"):
        U = cuconv.fft_filter_transform(w, x.shape, padding=2)
        assert U.shape == (4, 3, 14, 8) and U.dtype == np.complex64
        with pytest.raises(ValueError, match=r"must have shape \(K, C/g, Lh, Lw//2\+1\) = \(4, 3, 12, 7\).*"
                                             r"fft_filter_transform.*got \(4, 3, 14, 8\)"):
            cuconv.conv2d(x, w, padding=1, algo="fft", transformed_weight=U)     # another padding: 12x12
        with pytest.raises(TypeError, match="complex64"):
            cuconv.conv2d(x, w, padding=2, algo="fft", transformed_weight=U.real.copy())
        with pytest.raises(ValueError, match="does not divide"):
            cuconv.fft_filter_transform(w, (1, 4, 9, 9))
        with pytest.raises(ValueError, match="algo must be one of"):
            cuconv.fft_filter_transform(w, x.shape, algo="winograd")


# =========================================================================== refusals
def test_refusals_are_clear_and_listed():
    strided = Conv2dProblem.from_shapes((1, 3, 227, 227), (96, 3, 11, 11), 4)         # AlexNet conv1
    infos = {i.name: i for i in cuconv.algorithms(strided)}
    for algo in ALGOS:
        assert not infos[algo].ok and "stride 1" in infos[algo].reason and "polyphase" in infos[algo].reason
    x, w = np.ones((1, 3, 9, 9), np.float32), np.ones((4, 3, 5, 5), np.float32)
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match=r"algo='fft' cannot run .*stride 1"):
            cuconv.conv2d(x, w, stride=2, algo="fft")
        with pytest.raises(TypeError, match="algo='fft_tiling' takes dtype float32, got float16"):
            cuconv.conv2d(x.astype(np.float16), w.astype(np.float16), algo="fft_tiling")
        with pytest.raises(ValueError, match=r"algo='fft' cannot run .*needs \d+ bytes of workspace, more than "
                                             r"max_workspace_bytes=1000"):
            cuconv.conv2d(x, w, algo="fft", max_workspace_bytes=1000)
        with pytest.raises(ValueError, match="smaller than the \\(dilated\\) filter 5x5"):
            cuconv.conv2d(x, w, algo="fft_tiling", tile=4)
        with pytest.raises(ValueError, match="tile must be a positive int"):
            cuconv.conv2d(x, w, algo="fft_tiling", tile=(8, 0))
        with pytest.raises(TypeError, match=r"unexpected keyword arguments \['tile'\]"):
            cuconv.conv2d(x, w, algo="fft", tile=8)
        with pytest.raises(ValueError, match="multiply must be"):
            cuconv.conv2d(x, w, algo="fft", multiply="cublas")
    huge = Conv2dProblem(1, 1024, 2048, 2048, 16, 7, 7, pad_h=3, pad_w=3)    # 2058² planes: 4.3e9 a buffer
    infos = {i.name: i for i in cuconv.algorithms(huge)}
    assert not infos["fft"].ok and "2**31" in infos["fft"].reason and "fft_tiling bounds them" in infos["fft"].reason
    t = fft_math.tiling(huge, "fft_tiling")
    assert infos["fft_tiling"].ok and t.pass_items < t.items
    assert infos["fft_tiling"].workspace_bytes <= fft_math.TILING_PASS_BYTES + t.filter_bytes + 64   # bounded
    p = Conv2dProblem.from_shapes(x.shape, w.shape)
    capped = {i.name: i for i in cuconv.algorithms(p, max_workspace_bytes=1000)}
    assert not capped["fft"].ok and "max_workspace_bytes=1000" in capped["fft"].reason
    listed = {i.name: i for i in cuconv.algorithms(p)}
    for algo in ALGOS:
        assert listed[algo].ok and listed[algo].workspace_bytes == fft_math.workspace_bytes(p, algo)


# =========================================================================== the plan's steps
def test_plan_steps_and_the_record_backend():
    x, w = np.ones((2, 3, 20, 17), np.float32), np.ones((5, 3, 7, 7), np.float32)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, 1, 3)
    with cuconv.backend("record") as rec:
        plan = cuconv.plan_conv2d(x, w, padding=3, algo="fft_tiling", tile=16)
        cuconv.conv2d(x, w, padding=3, algo="fft_tiling", tile=16)
    t = fft_math.tiling(p, "fft_tiling", 16)
    assert plan.kernels == ["fft_conv_pack_filter", "fft2d_r2c_16x16", "fft_conv_flags_init", "fft_conv_pack_input",
                            "fft2d_r2c_16x16", "fft_conv_channel_gemm_4x1", "fft2d_c2r_16x16", "fft_conv_crop_epilogue",
                            "fft_conv_fixup"]
    steps = [ln for ln in plan.launches if isinstance(ln, FftStep)]
    assert [s.batch for s in steps] == [5 * 3, t.items * 3, t.items * 5]
    assert [(r.kernel, r.grid, r.block) for r in rec.launches] == [(ln.kernel, ln.grid, ln.block) for ln in plan.launches]
    assert "backend FFT" in plan.describe()


def test_backend_fft_is_unnormalised_both_ways(rng):
    """r2c then c2r multiplies by Lh·Lw (cuFFT's convention, which the crop kernel undoes)."""
    a = random_array(rng, (3, 6, 10))
    spec = np.full((3, 6, 6), np.nan, np.complex64)
    back = np.full_like(a, np.nan)
    be = EmulatorBackend()
    be.fft("r2c", a, spec)
    assert rel_error(spec.view(np.float32), np.fft.rfft2(a.astype(np.float64)).view(np.float64)) <= 1e-6
    be.fft("c2r", spec, back)
    assert rel_error(back, 60.0 * a) <= 1e-6
    with pytest.raises(ValueError, match="complex64"):
        be.fft("r2c", a, spec.astype(np.complex128))
    with pytest.raises(ValueError, match="kind"):
        be.fft("c2c", a, spec)
    with pytest.raises(ValueError, match="kind"):
        FftStep("z2z", Ref("a"), Ref("b"), 1, (4, 4))


def test_pack_kernels_against_numpy(be, rng):
    """The input tiles (zero padding and overhang) and the spread, reversed filter planes."""
    p = Conv2dProblem.from_shapes((2, 3, 9, 7), (4, 3, 3, 2), 1, (2, 1), (2, 3))
    t = fft_math.tiling(p, "fft_tiling", (8, 10))
    x, w = random_array(rng, p.input_shape), random_array(rng, p.weight_shape)
    begin, count = 1, t.items - 2
    real = put(be, np.full((count, p.C, t.Lh, t.Lw), np.nan, np.float32))
    flags = put(be, np.zeros(t.flag_elements(count), np.int32))
    launch_all(be, [fft_conv.pack_input_launch(Ref("x"), Ref("real"), p, t, begin, count)],
               {"x": put(be, x), "real": real, "flags": flags})
    assert not to_numpy(flags).any()            # finite input: no item flagged for the fix-up
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_h, 64), (p.pad_w, 64)))
    for b in range(count):
        n, tile = divmod(begin + b, t.tiles)
        th, tw = divmod(tile, t.tiles_w)
        want = xp[n, :, th * t.Th:th * t.Th + t.Lh, tw * t.Tw:tw * t.Tw + t.Lw]
        np.testing.assert_array_equal(to_numpy(real)[b], want)
    # A non-finite value flags exactly the items whose Lh×Lw window holds it (tiles overlap: a
    # value can lie in several), in the pass's numbering, and sets the "any item" word.
    bad = x.copy()
    bad[1, 2, 0, 6], bad[0, 0, 5, 3] = np.inf, np.nan
    flags[...] = 0
    launch_all(be, [fft_conv.pack_input_launch(Ref("x"), Ref("real"), p, t, begin, count)],
               {"x": put(be, bad), "real": real, "flags": flags})
    want_items = _expected_flags(bad, w, p, t)[0][begin:begin + count]
    assert 1 < want_items.sum() < count
    np.testing.assert_array_equal(to_numpy(flags)[1:1 + count], want_items)
    assert to_numpy(flags)[0] == 1 and not to_numpy(flags)[1 + count:].any()
    planes = put(be, np.full((5, t.Lh, t.Lw), np.nan, np.float32))
    launch_all(be, [fft_conv.pack_filter_launch(Ref("w"), Ref("real"), p, t, 3, 5)], {"w": put(be, w), "real": planes})
    want = np.zeros((p.K * p.C, t.Lh, t.Lw), np.float32)
    for r in range(p.R):
        for s in range(p.S):
            want[:, (-2 * r) % t.Lh, (-3 * s) % t.Lw] = w.reshape(-1, p.R, p.S)[:, r, s]
    np.testing.assert_array_equal(to_numpy(planes), want[3:8])


# =========================================================================== checking modes
@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="reverse"),
                                  dict(order="random", seed=7)], ids=["asan-ubsan", "reverse", "random"])
def test_every_kernel_under_the_emulators_checks(rng, mode):
    """Every kernel of fft_conv.cu once under ASan+UBSan and in reversed and random thread order."""
    x, w = random_array(rng, (2, 3, 9, 7)), random_array(rng, (33, 3, 5, 5))
    bias, res = random_array(rng, (33,)), random_array(rng, (2, 33, 7, 5))
    ref = conv2d_ref(x, w, bias, padding=(1, 1), activation="relu", residual=res)
    seen = set()
    with cuconv.backend("emulator", **mode) as be:
        for algo, extra in (("fft", {}), ("fft_tiling", dict(tile=8, multiply="simple"))):
            out = np.full(ref.shape, np.nan, np.float32)
            cuconv.conv2d(x, w, bias, padding=1, activation="relu", residual=res, algo=algo, out=out, **extra)
            assert_close(out, ref, "float32", algo)
            seen |= set(cuconv.plan_conv2d(x, w, bias, padding=1, activation="relu", residual=res, algo=algo,
                                           **extra).kernels)
        w_narrow = random_array(rng, (4, 3, 5, 5))
        y = cuconv.conv2d(x, w_narrow, padding=2, algo="fft")
        assert_close(y, conv2d_ref(x, w_narrow, padding=2), "float32", "fft")
        seen |= set(cuconv.plan_conv2d(x, w_narrow, padding=2, algo="fft").kernels)
        assert be.sanitize == mode.get("sanitize")
    assert {e.label for e in fft_conv.ENTRIES.values()} <= seen


# =========================================================================== non-finite values
# A transform spreads one NaN/±Inf over its whole plane; the flags and the direct fix-up
# (kernels/fft_conv.cu's header) must give exactly direct convolution's NaN/Inf pattern and values.
def _with_specials(rng, shape, where, values):
    a = random_array(rng, shape)
    for idx, v in zip(where, values):
        a[idx] = v
    return a


def _expected_flags(x, w, p, t):
    """(item flags, channel flags) as the kernels must set them: an item whose Lh×Lw input window
    (the tile fft_conv_pack_input packs, padding included) holds a non-finite value; a channel whose
    filter holds one."""
    bad = ~np.isfinite(np.pad(x, ((0, 0), (0, 0), (p.pad_h, 0), (p.pad_w, 0))))    # padding is finite
    items = np.zeros((p.N, t.tiles_h, t.tiles_w), bool)
    for th in range(t.tiles_h):
        for tw in range(t.tiles_w):
            items[:, th, tw] = bad[:, :, th * t.Th:th * t.Th + t.Lh, tw * t.Tw:tw * t.Tw + t.Lw].any(axis=(1, 2, 3))
    return items.reshape(-1), ~np.isfinite(w).reshape(p.K, -1).all(axis=1)


def _recomputed(x, w, p, t):
    """The outputs the fix-up rewrites: every output of a flagged item or a flagged channel."""
    items, channels = _expected_flags(x, w, p, t)
    per_output = np.repeat(np.repeat(items.reshape(p.N, t.tiles_h, t.tiles_w), t.Th, 1), t.Tw, 2)[:, :p.P, :p.Q]
    return per_output[:, None] | channels[None, :, None, None]


def _assert_like_direct(got, direct, ref, recomputed, algo, what):
    """What is compared: the recomputed outputs bit for bit with algo="direct" (NaN payloads
    included); everywhere, non-finite exactly where direct is, with direct's values there (±Inf
    signs, NaN); every other output within the FFT tolerance of the float64 reference (which
    keeps relu(NaN) = NaN where the kernels' fmaxf gives 0: those outputs are recomputed ones)."""
    np.testing.assert_array_equal(got[recomputed].view(np.uint32), direct[recomputed].view(np.uint32),
                                  err_msg=f"{what}: a recomputed output differs from direct's bits")
    finite = np.isfinite(direct)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{what}: the NaN/Inf pattern differs")
    np.testing.assert_array_equal(got[~finite], direct[~finite], err_msg=what)
    both = finite & np.isfinite(ref)
    assert recomputed[finite & ~both].all()
    assert_close(np.where(both, got, 0), np.where(both, ref, 0), "float32", algo, what)


NONFINITE_CASES = {
    # name: x, w, padding, dilation, groups, epilogue, input specials, weight specials, residual specials
    # relu maps NaN and -Inf to 0: the FFT alone would write a plausible 0 over the whole item.
    "nan_interior_relu": ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "bias_residual_relu",
                          [(0, 1, 4, 5)], [np.nan], [], [], []),
    "inf_corner_neg_inf_border": ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "bias_residual_silu",
                                  [(1, 0, 0, 10), (1, 2, 8, 0)], [np.inf, -np.inf], [], [], []),
    # +Inf and -Inf in one window give NaN there, ±Inf where only one of them reaches
    "several_in_one_image": ((1, 2, 10, 9), (4, 2, 5, 5), 2, 1, 1, None,
                             [(0, 0, 4, 4), (0, 1, 5, 6), (0, 0, 9, 8)], [np.inf, -np.inf, np.nan], [], [], []),
    "nan_weight": ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "bias", [], [], [(3, 1, 0, 2)], [np.nan], []),
    # tap (0, 0) of filter 1 reads only padding at outputs p < 2 or q < 2: direct keeps them finite
    "inf_weights_tap_in_padding": ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "residual", [], [],
                                   [(1, 0, 0, 0), (4, 2, 4, 4)], [np.inf, -np.inf], []),
    "grouped_dilated": ((1, 4, 13, 12), (6, 2, 3, 3), (2, 3), (2, 3), 2, "bias_residual_relu",
                        [(0, 3, 6, 6), (0, 0, 12, 0)], [np.nan, np.inf], [(4, 1, 2, 2)], [-np.inf], []),
    # a non-finite residual needs no flag: the epilogue adds it to direct's and the FFT's value alike
    "input_and_residual": ((2, 3, 9, 11), (5, 3, 5, 5), 2, 1, 1, "bias_residual_silu",
                           [(1, 2, 3, 9)], [-np.inf], [], [], [(0, 4, 2, 2), (1, 0, 8, 10)]),
}


def _nonfinite_inputs(rng, name):
    xs, ws, pad, dil, g, epi, xi, xv, wi, wv, ri = NONFINITE_CASES[name]
    x, w = _with_specials(rng, xs, xi, xv), _with_specials(rng, ws, wi, wv)
    p = Conv2dProblem.from_shapes(xs, ws, 1, pad, dil, g)
    bias = random_array(rng, (p.K,)) if epi and "bias" in epi else None
    residual = None
    if epi and "residual" in epi:
        residual = _with_specials(rng, p.output_shape, ri, [np.nan, np.inf][:len(ri)])
    act = {"bias_residual_relu": "relu", "bias_residual_silu": "silu"}.get(epi)
    kw = dict(padding=pad, dilation=dil, groups=g)
    return x, w, bias, residual, act, kw, p


@pytest.mark.parametrize("name", list(NONFINITE_CASES))
def test_non_finite_values_follow_direct_convolution_exactly(be, rng, name):
    """NaN/±Inf in the input (interior, corner, border, several) and in the weights reach exactly
    the outputs, with exactly the values, that direct convolution gives: fft, fft_tiling (the
    model's tile and 8x8, several partial tiles), given filter spectra, and passes of a capped
    workspace, which split the batch inside images."""
    x, w, bias, residual, act, kw, p = _nonfinite_inputs(rng, name)
    args = (put(be, x), put(be, w), put(be, bias))
    direct = to_numpy(cuconv.conv2d(*args, activation=act, residual=put(be, residual), algo="direct", **kw))
    with np.errstate(invalid="ignore", over="ignore"):
        ref = conv2d_ref(x, w, bias, activation=act, residual=residual, **kw)
    assert np.isfinite(direct).any() and (not np.isfinite(direct).all() or act == "relu")
    runs = [("fft", {}), ("fft", {"multiply": "simple"}), ("fft_tiling", {}), ("fft_tiling", {"tile": 8})]
    for algo, extra in runs + [("fft", {"spectra": True}), ("fft_tiling", {"tile": 8, "spectra": True}),
                               ("fft", {"passes": 1}), ("fft_tiling", {"tile": 8, "passes": 3})]:
        extra = dict(extra)
        spectra, passes = extra.pop("spectra", False), extra.pop("passes", None)
        t = fft_math.tiling(p, algo, extra.get("tile"))
        if spectra:
            extra["transformed_weight"] = cuconv.fft_filter_transform(put(be, w), x.shape, padding=kw["padding"],
                                                                      dilation=kw["dilation"], algo=algo, **(
                                                                          {"tile": 8} if "tile" in extra else {}))
        if passes:
            if passes >= t.items:
                continue
            extra["max_workspace_bytes"] = t.chunk_bytes(passes) + t.filter_bytes + 64
            with cuconv.backend("record"):
                plan = cuconv.plan_conv2d(x, w, bias, activation=act, residual=residual, algo=algo, **kw, **extra)
            # each pass clears its flags, and fixes its items up
            for kernel in ("fft_conv_flags_init", "fft_conv_crop_epilogue", "fft_conv_fixup"):
                assert plan.kernels.count(kernel) == -(-t.items // passes)
        what = f"{name} {algo} {sorted(extra)}"
        recomputed = _recomputed(x, w, p, t)
        assert recomputed.any() and (not recomputed.all() or "tile" not in extra), what
        got = _run(be, x, w, bias, residual, act, kw, p.output_shape, algo=algo, **extra)
        _assert_like_direct(got, direct, ref, recomputed, algo, what)


@pytest.mark.parametrize("algo,extra", [("fft", {}), ("fft_tiling", {"tile": 8})])
def test_flags_are_cleared_every_call_and_the_fix_up_touches_only_flagged_outputs(be, rng, algo, extra):
    """The plan clears stale flags from a reused workspace and sets exactly the expected ones (one
    pass here: the flags buffer holds every item's); on
    finite data the fix-up (the plan's last launch, at most FIXUP_BLOCKS blocks) changes nothing,
    on non-finite data it rewrites exactly the flagged items' and channels' outputs."""
    p = Conv2dProblem.from_shapes((2, 3, 9, 11), (5, 3, 5, 5), 1, 2)
    t = fft_math.tiling(p, algo, extra.get("tile"))
    finite_x, finite_w = random_array(rng, p.input_shape), random_array(rng, p.weight_shape)
    nan_x = _with_specials(rng, p.input_shape, [(1, 1, 2, 3)], [np.nan])
    inf_w = _with_specials(rng, p.weight_shape, [(2, 0, 4, 1)], [np.inf])
    plan = cuconv.plan_conv2d(put(be, finite_x), put(be, finite_w), padding=2, algo=algo, **extra)
    assert plan.kernels[-1] == "fft_conv_fixup"
    assert plan.kernels[plan.kernels.index("fft_conv_pack_input") - 1] == "fft_conv_flags_init"
    fix = plan.launches[-1]
    assert fix.grid[0] * fix.grid[1] * fix.grid[2] <= fft_conv.FIXUP_BLOCKS and fix.grid[1] == p.K
    assert plan.buffers[0].name == "flags" and plan.buffers[0].offset == 0
    without = dataclasses.replace(plan, launches=plan.launches[:-1])     # no fix-up
    workspace = put(be, np.full(plan.workspace_bytes, 0xFF, np.uint8))      # stale flags: all set
    for x, w in ((finite_x, finite_w), (nan_x, finite_w), (finite_x, inf_w), (nan_x, inf_w), (finite_x, finite_w)):
        items, channels = _expected_flags(x, w, p, t)
        outs = []
        for pl in (plan, without):
            out = put(be, np.full(p.output_shape, 7.0, np.float32))
            pl.execute(be, pl.bind(be, put(be, x), put(be, w), out=out), workspace)
            outs.append(to_numpy(out))
            flags = to_numpy(workspace[:4 * t.flag_elements(t.items)]).view(np.int32)
            assert flags[0] == items.any()
            np.testing.assert_array_equal(flags[1:1 + t.items], items)
            np.testing.assert_array_equal(flags[1 + t.items:1 + t.items + p.K], channels)
        full, fft_only = (o.view(np.uint32) for o in outs)
        recomputed = _recomputed(x, w, p, t)
        np.testing.assert_array_equal(full[~recomputed], fft_only[~recomputed])     # the others left alone
        if not recomputed.any():
            continue
        direct = to_numpy(cuconv.conv2d(put(be, x), put(be, w), padding=2, algo="direct"))
        np.testing.assert_array_equal(full[recomputed], direct.view(np.uint32)[recomputed])
        # Without the fix-up the transforms spread the NaN/Inf over whole items and channels.
        assert np.isnan(outs[1][recomputed]).all() and np.isfinite(direct[recomputed]).any()


@pytest.mark.parametrize("algo,extra", [("fft", {}), ("fft_tiling", {"tile": 8})])
def test_float32_overflow_in_a_transform_is_recomputed_directly(be, rng, algo, extra):
    """A finite input near float32's maximum: direct convolution's sums stay finite (|w| < 1),
    the spectra overflow (|X[f]| sums a plane, |Wf| the taps) and the FFT alone writes NaN over
    the item; fft_conv_crop_epilogue flags it and the fix-up writes direct's values."""
    x, w = random_array(rng, (2, 2, 12, 10)), random_array(rng, (3, 2, 5, 5))
    x[1, 1, 5, 6] = 3e38
    p = Conv2dProblem.from_shapes(x.shape, w.shape, 1, 2)
    t = fft_math.tiling(p, algo, extra.get("tile"))
    direct = to_numpy(cuconv.conv2d(put(be, x), put(be, w), padding=2, algo="direct"))
    assert np.isfinite(direct).all()
    plan = cuconv.plan_conv2d(put(be, x), put(be, w), padding=2, algo=algo, **extra)
    without = dataclasses.replace(plan, launches=plan.launches[:-1])     # no fix-up
    fft_only = to_numpy(without.run(put(be, x), put(be, w)))
    assert not np.isfinite(fft_only).all(), "the transforms should have overflowed"
    got = _run(be, x, w, None, None, None, dict(padding=2), p.output_shape, algo=algo, **extra)
    overflowed = ~np.isfinite(fft_only)
    items = np.zeros(p.output_shape, bool)        # every output of an item where some output overflowed
    for th in range(t.tiles_h):
        for tw in range(t.tiles_w):
            rows, cols = slice(th * t.Th, (th + 1) * t.Th), slice(tw * t.Tw, (tw + 1) * t.Tw)
            items[:, :, rows, cols] |= overflowed[:, :, rows, cols].any(axis=(1, 2, 3))[:, None, None, None]
    _assert_like_direct(got, direct, conv2d_ref(x, w, padding=2), items, algo, f"{algo} overflow")


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="reverse"),
                                  dict(order="random", seed=11)], ids=["asan-ubsan", "reverse", "random"])
def test_non_finite_fix_up_under_the_emulators_checks(rng, mode):
    """The flag and fix-up kernels (and the flagging pack and crop kernels) under ASan+UBSan and
    shuffled thread orders: the atomicOr flags, the block-wide OR of the weight scan and the direct
    recomputation must not depend on the order."""
    x, w, bias, residual, act, kw, p = _nonfinite_inputs(rng, "grouped_dilated")
    w[1, 0, 0, 1] = np.nan
    with cuconv.backend("emulator"):
        direct = cuconv.conv2d(x, w, bias, activation=act, residual=residual, algo="direct", **kw)
    with np.errstate(invalid="ignore"):
        ref = conv2d_ref(x, w, bias, activation=act, residual=residual, **kw)
    with cuconv.backend("emulator", **mode):
        for algo, extra in (("fft", {}), ("fft_tiling", dict(tile=8, multiply="simple"))):
            t = fft_math.tiling(p, algo, extra.get("tile"))
            got = cuconv.conv2d(x, w, bias, activation=act, residual=residual, algo=algo, **kw, **extra)
            _assert_like_direct(got, direct, ref, _recomputed(x, w, p, t), algo, f"{algo} {mode}")


# =========================================================================== cost model and auto
def test_cost_counts_follow_the_convention():
    """5·n·log2(n) per complex n-point transform, 2.5·n·log2(n) per real one (FFTW's benchFFT),
    8 FLOPs per complex MAC; on a power-of-two case the figures are exact integers."""
    p = Conv2dProblem(1, 2, 16, 16, 3, 3, 3)            # no padding: Hp = Wp = 16
    c = cost.fft_cost(p, "fft")
    per = 2.5 * 256 * 8
    assert (c.Lh, c.Lw) == (16, 16)
    assert c.input_transform_flops == 2 * per and c.output_transform_flops == 3 * per
    assert c.filter_transform_flops == 6 * per and c.product_flops == 8 * 3 * 2 * 16 * 9
    assert c.flops == 11 * per + 8 * 3 * 2 * 16 * 9 and c.flops_reusing_filter == c.flops - 6 * per
    assert c.filter_bytes == 6 * 16 * 9 * 8
    # Real planes: the 6 filter planes (more than the 3 output planes), then spectra; and the
    # non-finite flags: 1 + 1 item + 3 channels int32, rounded up to 16 bytes.
    assert c.workspace_bytes == 6 * 256 * 4 + (2 + 3) * 16 * 9 * 8 + c.filter_bytes + 32
    assert c.workspace_reusing_filter == 3 * 256 * 4 + (2 + 3) * 16 * 9 * 8 + 32
    layer = cost.conv2d_cost(p)
    assert [f.algo for f in layer.fft] == ["fft", "fft_tiling"]
    assert cost.conv2d_cost(Conv2dProblem(1, 2, 16, 16, 3, 3, 3, 2, 2)).fft == ()
    with pytest.raises(ValueError, match="stride 1"):
        cost.fft_cost(Conv2dProblem(1, 2, 16, 16, 3, 3, 3, 2, 2))


@pytest.mark.parametrize("algo", ALGOS)
def test_plan_workspace_is_the_cost_models(algo):
    for xs, ws, pad in (((2, 16, 56, 56), (16, 16, 7, 7), 3), ((1, 3, 33, 31), (8, 3, 5, 5), 2)):
        p = Conv2dProblem.from_shapes(xs, ws, 1, pad)
        with cuconv.backend("record"):
            plan = cuconv.plan_conv2d(np.empty(xs, np.float32), np.empty(ws, np.float32), padding=pad, algo=algo)
        want = cost.fft_cost(p, algo).workspace_bytes
        assert want <= plan.workspace_bytes <= want + 4 * 16      # alignment padding only


def test_auto_takes_fft_only_where_the_model_says_it_pays():
    big = Conv2dProblem(8, 64, 56, 56, 64, 11, 11, pad_h=5, pad_w=5)
    assert auto_order(big)[:2] == ["fft", "fft_tiling"]
    assert conv2d_mod.choose_algorithm(big) == "fft"
    t = fft_math.tiling(big, "fft")
    least = t.chunk_bytes(1) + t.filter_bytes     # one image a pass, the filter through its planes
    assert fft_math.tiling(big, "fft_tiling").workspace_bytes() < least
    assert conv2d_mod.choose_algorithm(big, max_workspace_bytes=least - 1) == "fft_tiling"
    for p in (Conv2dProblem(8, 64, 56, 56, 64, 3, 3, pad_h=1, pad_w=1),      # 3x3: Winograd's
              Conv2dProblem(8, 64, 56, 56, 64, 7, 7, 2, 2, 3, 3),            # strided
              Conv2dProblem(1, 1, 32, 32, 6, 5, 5)):                          # LeNet C1: no FLOP advantage
        assert "fft" not in auto_order(p) and "fft_tiling" not in auto_order(p)
    assert heuristics.fft_choice(conv2d_mod.spec_of(big)) == "fft"


def test_algorithms_lists_the_fft_algorithms_with_their_workspace():
    p = Conv2dProblem(1, 8, 30, 30, 8, 9, 9, pad_h=4, pad_w=4)
    infos = {i.name: i for i in cuconv.algorithms(p)}
    for algo in ALGOS:
        assert infos[algo].ok and infos[algo].workspace_bytes >= cost.fft_cost(p, algo).workspace_bytes
        assert infos[algo].kernels[0] == "fft_conv_pack_filter"
