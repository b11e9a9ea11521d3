"""wgmma (Hopper warpgroup MMA): the emulator's model against the PTX ISA's definitions, and the
implicit-GEMM convolution built on it (kernels/wgmma_conv.cu, ops/wgmma_conv.py).

The shared-memory layouts are written here a second time, independently of the emulator, as
the PTX ISA's "Canonical Layouts" table states them in CuTe notation (shape:stride in 16-bit
elements, then Swizzle<B,4,3> on the byte address), and the accumulator ownership as its
"Matrix Fragments for wgmma.mma_async.m64nNk16" (CuTe's CLayout_64xN). Inputs are small
integers, so every product and partial sum is exact: a wrong descriptor field, swizzle or
fragment index shows as a wrong integer, on the emulator and (on an sm_90 device) on the GPU.
docs/wgmma.md lists the facts and their sources.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import emulator
from cuconv.ops import tensor_core as tc
from cuconv.ops import wgmma_conv as wg
from cuconv.problem import Conv2dProblem
from cuconv.reference.conv import conv2d_ref

BF16 = ml_dtypes.bfloat16
DT = {"float16": np.float16, "bfloat16": BF16}


def needs_sm90(be):
    """On the GPU these run only on an sm_90 device (H100/H200); the emulator always runs them."""
    if be.name == "cupy" and tc.device_arch(be)[0] != 90:
        pytest.skip("wgmma needs an sm_90 device (H100, H200)")


def emulator_only(be, why):
    if be.name != "emulator":
        pytest.skip(why)


# ----------------------------------------------------------------- the PTX tables, once more
def cute(shape, stride, coord):
    """Offset of a flat coordinate in a (possibly nested) CuTe layout, colexicographic."""
    if isinstance(shape, int):
        return coord * stride
    off = 0
    for s, d in zip(shape, stride):
        size = _size(s)
        off += cute(s, d, coord % size)
        coord //= size
    return off


def _size(s):
    return s if isinstance(s, int) else int(np.prod([_size(x) for x in s]))


SWIZZLE_BYTES = {0: 0, 1: 128, 2: 64, 3: 32}   # descriptor mode -> swizzle width


def canonical(major, mode, rows, lbo, sbo, start):
    """The PTX ISA's canonical layout for 16-bit elements (T = 8): (row, k) -> the shared byte
    address, i.e. Swizzle<log2(sw/16), 4, 3> applied to start + 2 · (the CuTe layout's element
    offset; LBO/SBO given in bytes). The swizzle acts on the address, so its pattern is anchored
    at absolute 8·sw-byte boundaries. rows = M (A) or N (B); k < 16."""
    T = 8
    L, S_ = lbo // 2, sbo // 2
    sw = SWIZZLE_BYTES[mode]
    if major == "K":
        m = rows // 8
        if sw == 0:                     # ((8,m),(T,2k)):((1T,SBO),(1,LBO))
            shape, stride = ((8, m), (T, 2)), ((T, S_), (1, L))
        else:                           # ((8,m),(T,2k)):((sw/16·T,SBO),(1,T))
            shape, stride = ((8, m), (T, 2)), ((sw // 16 * T, S_), (1, T))
    else:
        if sw == 0:                     # ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
            shape, stride = ((T, 1, rows // T), (8, 2)), ((1, T, S_), (T, L))
        else:                           # ((T,sw/16,m),(8,k)):((1,T,LBO),(sw/16·T,SBO))
            per = sw // 16
            shape, stride = ((T, per, rows // (T * per)), (8, 2)), ((1, T, L), (per * T, S_))

    def byte(row, k):
        e = cute(shape[0], stride[0], row) + cute(shape[1], stride[1], k)
        b = start + 2 * e
        if sw:                          # Swizzle<log2(sw/16), 4, 3> on the byte address
            b ^= ((b >> 7) & (sw // 16 - 1)) << 4
        return b
    return byte


def accumulator_owner(N):
    """[(thread, i, row, col)]: thread t of the warpgroup holds D[row][col] in register i
    (CLayout_64xN: thread (4,8,4):(128,1,16), value (2,2,N/8):(64,8,512), index = m + 64·n)."""
    out = []
    for t in range(128):
        for i in range(N // 2):
            idx = cute(((4, 8, 4), (2, 2, N // 8)), ((128, 1, 16), (64, 8, 512)), t + 128 * i)
            out.append((t, i, idx % 64, idx // 64))
    return out


def test_accumulator_table_is_the_ptx_formula():
    for N in (64, 128):
        own = accumulator_owner(N)
        assert sorted((r, c) for *_x, r, c in own) == [(r, c) for r in range(64) for c in range(N)]
        for t, i, r, c in own:
            w, lane = t // 32, t % 32
            assert (r, c) == (16 * w + lane // 4 + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * (lane % 4) + (i & 1))


def desc(start, lbo, sbo, mode, base=0):
    return ((start >> 4) & 0x3FFF) | (((lbo >> 4) & 0x3FFF) << 16) | (((sbo >> 4) & 0x3FFF) << 32) \
        | (base << 49) | (mode << 62)


def small_ints(rng, shape, lo=-4, hi=4):
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64)


def run_wgmma(be, dtype, N, A, Bt, C, a_spec, b_spec, *, fill=0, bug=0, scale_d=1, extra_image=0):
    """One wgmma through wgmma_probe_mma. A (64x16), Bt (Nx16: B transposed, row n = column n of
    B) placed in one image by their specs (major, mode, lbo, sbo, start); returns D (64xN)."""
    image = np.zeros(1 << 15, np.uint8)
    used = np.zeros(1 << 15, bool)
    descs = []
    for M, (major, mode, lbo, sbo, start) in ((A, a_spec), (Bt, b_spec)):
        off = canonical(major, mode, M.shape[0], lbo, sbo, start)
        bits = M.astype(DT[dtype]).view(np.uint16)
        for r in range(M.shape[0]):
            for k in range(16):
                o = off(r, k)
                assert not used[o:o + 2].any(), "the test's layout maps two elements to one place"
                used[o:o + 2] = True
                image[o:o + 2] = np.frombuffer(bits[r, k].tobytes(), np.uint8)
        descs.append(desc(start, lbo, sbo, mode))
    size = int(np.nonzero(used)[0].max() + 1 + 15) // 16 * 16 + extra_image
    image = image[:size].copy()
    kind = (dtype == "bfloat16") | (2 if N == 128 else 0) | (4 if a_spec[0] == "MN" else 0) \
        | (8 if b_spec[0] == "MN" else 0)
    c = np.zeros((128, N // 2), np.float32)
    for t, i, r, col in accumulator_owner(N):
        c[t, i] = C[r, col]
    d = np.full((128, N // 2), np.nan, np.float32)
    img_, c_, d_ = put(be, image), put(be, c), put(be, d)
    wg.launch(be, wg.PROBE_FILE, "wgmma_probe_mma", (1, 1, 1), (128, 1, 1),
              (np.int32(kind), np.int32(fill), np.int32(bug), img_, np.int32(size), np.uint64(descs[0]),
               np.uint64(descs[1]), np.int32(scale_d), c_, d_), shared_mem=size + 1024)
    d = be.to_numpy(d_)
    D = np.full((64, N), np.nan)
    for t, i, r, col in accumulator_owner(N):
        D[r, col] = d[t, i]
    return D


# (major, mode, lbo, sbo, start) for A (64 rows) and B (N rows); K-major uses every swizzle
LAYOUTS = {
    "K_128B": (("K", 1, 16, 1024, 0), ("K", 1, 16, 1024, 8192)),
    "K_64B": (("K", 2, 16, 512, 0), ("K", 2, 16, 1024, 8192)),          # B's row groups 1024 apart (padding)
    "K_32B": (("K", 3, 16, 256, 0), ("K", 3, 16, 256, 4096)),
    "K_none": (("K", 0, 128, 256, 0), ("K", 0, 2048, 128, 8192)),       # two interleavings of the core matrices
    "K_128B_kstep": (("K", 1, 16, 1024, 32), ("K", 1, 16, 1024, 8192 + 64)),   # start inside the swizzle row
    "MN_128B": (("MN", 1, 2048, 1024, 0), ("MN", 1, 2048, 1024, 8192)),
    "MN_64B": (("MN", 2, 512, 1024, 0), ("MN", 2, 512, 1024, 8192)),
    "MN_none": (("MN", 0, 1024, 128, 0), ("MN", 0, 1024, 128, 8192)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype,N", [("float16", 64), ("bfloat16", 64), ("float16", 128)])
def test_wgmma_layouts_integers_bit_exact(be, rng, layout, dtype, N):
    """D = A·B + C for integer A, B, C, read through every swizzle mode and both majornesses."""
    needs_sm90(be)
    a_spec, b_spec = LAYOUTS[layout]
    if N == 128 and layout in ("MN_64B", "MN_none"):
        pytest.skip("N = 128 N-major: the 128-byte mode is enough (these strides are sized for N = 64)")
    A, Bt, C = small_ints(rng, (64, 16)), small_ints(rng, (N, 16)), small_ints(rng, (64, N))
    D = run_wgmma(be, dtype, N, A, Bt, C, a_spec, b_spec)
    np.testing.assert_array_equal(D, A @ Bt.T + C)


def test_wgmma_mixed_majorness_and_scale_d(be, rng):
    """A M-major with B K-major, and scale-d = 0 (D = A·B, the accumulator input ignored)."""
    needs_sm90(be)
    A, Bt, C = small_ints(rng, (64, 16)), small_ints(rng, (64, 16)), small_ints(rng, (64, 64))
    D = run_wgmma(be, "float16", 64, A, Bt, C, LAYOUTS["MN_128B"][0], LAYOUTS["K_128B"][1], scale_d=0)
    np.testing.assert_array_equal(D, A @ Bt.T)


def test_wgmma_cp_async_fill(be, rng):
    """The operand image copied by cp.async + wait_group + fence.proxy.async: same bits."""
    needs_sm90(be)
    A, Bt, C = small_ints(rng, (64, 16)), small_ints(rng, (128, 16)), small_ints(rng, (64, 128))
    D = run_wgmma(be, "bfloat16", 128, A, Bt, C, *LAYOUTS["K_128B"], fill=1)
    np.testing.assert_array_equal(D, A @ Bt.T + C)


def test_wgmma_wrong_descriptor_gives_wrong_integers(rng):
    """The model is not forgiving: the image laid out for 128-byte swizzling but described as
    64-byte swizzled, or with the stride-dimension offset off by half, gives wrong integers."""
    A, Bt, C = small_ints(rng, (64, 16), 1, 4), small_ints(rng, (64, 16), 1, 4), np.zeros((64, 64))
    with cuconv.backend("emulator") as be:
        np.testing.assert_array_equal(_run_redescribed(be, A, Bt, C), A @ Bt.T)
        assert not np.array_equal(_run_redescribed(be, A, Bt, C, a_desc_mode=2), A @ Bt.T)
        assert not np.array_equal(_run_redescribed(be, A, Bt, C, a_sbo=512), A @ Bt.T)


def _run_redescribed(be, A, Bt, C, a_desc_mode=1, a_sbo=1024):
    """The K_128B image with A's descriptor changed."""
    a_spec, b_spec = LAYOUTS["K_128B"]
    orig = wg.launch

    def patched(be_, file, name, grid, block, args, shared_mem=0):
        args = list(args)
        args[5] = np.uint64(desc(a_spec[4], a_spec[2], a_sbo, a_desc_mode))
        return orig(be_, file, name, grid, block, tuple(args), shared_mem=shared_mem)
    wg.launch = patched
    try:
        return run_wgmma(be, "float16", 64, A, Bt, C, a_spec, b_spec)
    finally:
        wg.launch = orig


# ----------------------------------------------------------------- the ordering rules are enforced
PLANTED = [
    (dict(fill=2), "no fence.proxy.async"),
    (dict(fill=3), "has not completed"),
    (dict(bug=1), "before a wgmma.wait_group"),
    (dict(bug=2), "without a wgmma.fence"),
    (dict(bug=3), "changed before the wgmma.wait_group"),
    (dict(bug=4), "descriptors must be the same"),
    (dict(bug=5), "before a wgmma.wait_group"),
    (dict(bug=6), "accessed after the last wgmma.fence"),
]


@pytest.mark.parametrize("planted,message", PLANTED, ids=[m for _, m in PLANTED])
def test_wgmma_planted_ordering_bugs_are_faults(rng, planted, message):
    A, Bt, C = small_ints(rng, (64, 16)), small_ints(rng, (64, 16)), small_ints(rng, (64, 64))
    fill = planted.get("fill", 0)
    with cuconv.backend("emulator") as be:
        with pytest.raises((emulator.KernelFault, emulator.BarrierDivergence), match=message):
            run_wgmma(be, "float16", 64, A, Bt, C, *LAYOUTS["K_128B"], fill=fill, bug=planted.get("bug", 0))


def test_wgmma_descriptor_fields_checked(rng):
    """Reserved descriptor bits and a non-zero base offset (not modelled) are faults, not guesses."""
    A, Bt, C = small_ints(rng, (64, 16)), small_ints(rng, (64, 16)), small_ints(rng, (64, 64))
    orig = wg.launch
    for bad, message in ((1 << 15, "reserved bits"), (3 << 49, "base offset")):
        def patched(be_, file, name, grid, block, args, shared_mem=0, bad=bad):
            args = list(args)
            args[5] = np.uint64(int(args[5]) | bad)
            return orig(be_, file, name, grid, block, tuple(args), shared_mem=shared_mem)
        wg.launch = patched
        try:
            with cuconv.backend("emulator") as be:
                with pytest.raises(emulator.KernelFault, match=message):
                    run_wgmma(be, "float16", 64, A, Bt, C, *LAYOUTS["K_128B"])
        finally:
            wg.launch = orig


@pytest.mark.parametrize("bug,message", [(0, None), (1, "never completes"), (2, "not initialised")])
def test_mbarrier_phases(be, bug, message):
    needs_sm90(be)
    if bug:
        emulator_only(be, "planted mbarrier bugs hang a real GPU")
    out = put(be, np.zeros(128, np.int32))
    args = (np.int32(bug), out)
    if message is None:
        wg.launch(be, wg.PROBE_FILE, "wgmma_probe_mbarrier", (1, 1, 1), (128, 1, 1), args, shared_mem=16)
        np.testing.assert_array_equal(be.to_numpy(out), 3)
    else:
        with pytest.raises((emulator.KernelFault, emulator.BarrierDivergence), match=message):
            wg.launch(be, wg.PROBE_FILE, "wgmma_probe_mbarrier", (1, 1, 1), (128, 1, 1), args, shared_mem=16)


# ----------------------------------------------------------------- the convolution
# (N, C, H, W, K, R, S, stride, padding, dilation, groups): C, K and P·Q no tile divides
CASES = {
    "3x3": (1, 24, 7, 9, 40, 3, 3, 1, 1, 1, 1),
    "1x1_K72": (2, 16, 5, 6, 72, 1, 1, 1, 0, 1, 1),
    "5x5_s2": (1, 8, 9, 7, 24, 5, 5, 2, 2, 1, 1),
    "C3_s2": (1, 3, 9, 9, 16, 3, 3, 2, 1, 1, 1),
    "C72_two_chunks": (1, 72, 5, 5, 20, 3, 3, 1, 1, 1, 1),
    "groups2_dil2": (1, 32, 9, 9, 48, 3, 3, 1, 2, 2, 2),
    "bands_M612": (2, 8, 18, 17, 24, 3, 3, 1, 1, 1, 1),      # 10 M tiles: two bands of the raster
}


def int_inputs(rng, case, dtype, layout):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = small_ints(rng, (N, C, H, W), -2, 2)
    w = small_ints(rng, (K, C // groups, R, S), -2, 2)
    ref = conv2d_ref(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if layout == "NHWC":
        x, w, ref = x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), ref.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x).astype(DT[dtype]), np.ascontiguousarray(w).astype(DT[dtype]), ref, kw


def run_conv(be, x, w, layout, config=None, **kw):
    out = cuconv.conv2d(put(be, x), put(be, w), algo="implicit_gemm_wgmma", layout=layout, config=config, **kw)
    return be.to_numpy(out)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,layout", [("float16", "NHWC"), ("bfloat16", "NCHW"), ("float16", "NCHW"),
                                          ("bfloat16", "NHWC")])
def test_conv_integers_bit_exact(be, rng, case, dtype, layout):
    """Exact: every product and partial sum is an integer below 2^24; the output is the exact
    sum rounded once to the output dtype, as the reference cast is."""
    needs_sm90(be)
    if dtype == "bfloat16" and case not in ("3x3", "1x1_K72", "C3_s2"):
        pytest.skip("bf16 on three shapes keeps the emulator run short")
    x, w, ref, kw = int_inputs(rng, CASES[case], dtype, layout)
    y = run_conv(be, x, w, layout, **kw)
    np.testing.assert_array_equal(y.astype(np.float64), ref.astype(DT[dtype]).astype(np.float64))


@pytest.mark.parametrize("config", [c.name for c in wg.CONFIGS])
def test_every_config_bit_exact_with_epilogue(be, rng, config):
    """Each config (both dtypes), NHWC and NCHW, with bias + residual + relu fused."""
    needs_sm90(be)
    cfg = wg.CONFIGS_BY_NAME[config]
    case = (1, 72, 6, 7, 136 if cfg.bn == 128 else 72, 3, 3, 1, 1, 1, 1) if cfg.bm == 128 else CASES["3x3"]
    for layout in ("NHWC", "NCHW"):
        x, w, ref, kw = int_inputs(rng, case, cfg.dtype, layout)
        K = case[4]
        bias = small_ints(rng, (K,), -3, 3)
        residual = small_ints(rng, ref.shape, -3, 3)
        bshape = (1, K, 1, 1) if layout == "NCHW" else (1, 1, 1, K)
        want = np.maximum(ref + bias.reshape(bshape) + residual, 0).astype(DT[cfg.dtype]).astype(np.float64)
        out = cuconv.conv2d(put(be, x), put(be, w), put(be, bias.astype(DT[cfg.dtype])), algo="implicit_gemm_wgmma",
                            layout=layout, config=config, activation="relu",
                            residual=put(be, residual.astype(DT[cfg.dtype])), **kw)
        np.testing.assert_array_equal(be.to_numpy(out).astype(np.float64), want, err_msg=f"{config} {layout}")


def test_conv_random_inputs_silu(be, rng):
    """Random (non-integer) inputs with SiLU: within the tensor-core tolerance of the reference
    computed from the quantized operands (docs: research note §8.9)."""
    needs_sm90(be)
    N, C, H, W, K, R, S = 2, 40, 7, 6, 70, 3, 3
    x = rng.standard_normal((N, C, H, W)).astype(np.float16)
    w = (rng.standard_normal((K, C, R, S)) / 10).astype(np.float16)
    y = cuconv.conv2d(put(be, x), put(be, w), padding=1, algo="implicit_gemm_wgmma", activation="silu")
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), padding=1)
    ref = ref / (1 + np.exp(-ref))
    scale = conv2d_ref(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), padding=1) + 1
    err = np.abs(be.to_numpy(y).astype(np.float64) - ref) / scale
    assert err.max() < 2 ** -9, err.max()   # dominated by the fp16 output rounding


def test_conv_under_sanitizers_and_random_order(rng):
    """ASan + UBSan, ThreadSanitizer (the mbarrier ring must order every cross-thread access),
    then reversed and random thread order: the mbarrier ring and the async bookkeeping must not
    depend on the schedule."""
    x, w, ref, kw = int_inputs(rng, CASES["3x3"], "float16", "NHWC")
    want = ref.astype(np.float16).astype(np.float64)
    for settings in (dict(sanitize="address,undefined"), dict(sanitize="thread"), dict(order="reverse"),
                     dict(order="random", seed=5)):
        with cuconv.backend("emulator", **settings) as be:
            for config in ("wgmma_conv_f16_64x64x64_s3", "wgmma_conv_f16_128x128x64_s4"):
                if settings.get("sanitize") == "address,undefined" and config.startswith("wgmma_conv_f16_128"):
                    continue
                y = run_conv(be, x, w, "NHWC", config=config, **kw)
                np.testing.assert_array_equal(y.astype(np.float64), want, err_msg=f"{settings} {config}")


# ----------------------------------------------------------------- planning and checks
def test_configs_and_registration():
    names = [c.name for c in wg.CONFIGS]
    assert "wgmma_conv_f16_128x128x64_s4" in names and "wgmma_conv_bf16_128x128x64_s4" in names
    from cuconv.compile import registered_kernels
    reg = {e.label: e for e in registered_kernels()}
    for c in wg.CONFIGS:
        e = reg[c.name]
        assert e.archs == ("sm_90a",) and e.file == "wgmma_conv.cu" and e.dynamic_smem == c.smem_bytes
    assert [c.name for c in wg.CONFIGS if c.main] == ["wgmma_conv_f16_128x128x64_s4", "wgmma_conv_bf16_128x128x64_s4"]
    info = {a.name: a for a in cuconv.algorithms(Conv2dProblem.from_shapes((1, 8, 8, 8), (16, 8, 3, 3),
                                                                             dtype="float16"))}
    assert info["implicit_gemm_wgmma"].ok and info["implicit_gemm_wgmma"].auto_priority is None


def test_can_implement_reasons():
    p = Conv2dProblem.from_shapes((1, 12, 8, 8), (16, 12, 3, 3), dtype="float16")
    cfg = wg.CONFIGS_BY_NAME["wgmma_conv_f16_64x64x64_s3"]
    assert "multiple of 8" in cfg.can_implement(p)
    assert "takes float16" in cfg.can_implement(p.with_(dtype="bfloat16"))
    assert "sm_90a" in cfg.can_implement(p.with_(C=16), cc=80)
    assert cfg.can_implement(p.with_(C=16)) is None
    assert wg.workspace_bytes(p.with_(C=16), layout="NHWC") == 0
    assert wg.workspace_bytes(p, layout="NHWC") == (8 * 8 * 16 + 16 * 9 * 16) * 2


def test_bad_arguments(rng):
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float16)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float16)
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="unknown wgmma config"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", config="nope")
        with pytest.raises(ValueError, match="takes bfloat16, got float16"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", config="wgmma_conv_bf16_64x64x64_s3")
        with pytest.raises(TypeError, match="float16 or bfloat16"):
            cuconv.conv2d(x.astype(np.float32), w.astype(np.float32), algo="implicit_gemm_wgmma")
        with pytest.raises(TypeError, match="extra arguments"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", allow_tf32=True, bogus=1)


# ----------------------------------------------------------------- static analysis (no GPU needed)
def test_analysis_sees_hgmma_in_the_main_loop():
    """The main configs' main loop issues HGMMA.64x128x16 and, by the issue model, can keep
    Hopper's tensor pipe >= 90 % busy; no spills; the stated occupancy holds."""
    from cuconv import analysis
    from cuconv.compile import find_kernel
    try:
        analysis.find_tool("nvdisasm")
    except analysis.ToolNotFoundError as exc:
        pytest.skip(str(exc))
    for name in ("wgmma_conv_f16_128x128x64_s4", "wgmma_conv_bf16_128x128x64_s4"):
        a = analysis.analyze_entry(find_kernel(name), "sm_90a")
        lp = a.main_loop
        assert lp.path_mix.by_opcode["HGMMA"] == 4, lp.path_mix.by_opcode
        assert lp.ceiling_pipe == "tensor_fp16" and lp.ceiling >= 0.90, (name, lp.ceiling)
        assert a.spill_bytes == 0 and not a.design_problems()
        assert a.occupancy["blocks_per_sm"] >= 1 and a.arch == "sm_90a"


def test_gpu_launch_asks_for_sm90a():
    """CuPy compiles for the device's plain sm_90, where wgmma does not exist; the launch adds
    -arch=sm_90a (the emulator gets no GPU options)."""
    class FakeGpu:
        name = "cupy"

    class FakeEmu:
        name = "emulator"
    assert "-arch=sm_90a" in wg.launch_options(FakeGpu())
    assert wg.launch_options(FakeEmu()) == ()


def test_other_devices_get_a_reason(monkeypatch):
    """On a device other than sm_90 the algorithm says why it cannot run, before any launch."""
    monkeypatch.setattr(tc, "device_arch", lambda be: (80, 108))
    p = Conv2dProblem.from_shapes((1, 16, 8, 8), (16, 16, 3, 3), padding=1, dtype="float16")
    info = {a.name: a for a in cuconv.algorithms(p)}["implicit_gemm_wgmma"]
    assert not info.ok and "sm_90a" in info.reason and "sm_80" in info.reason
    x = np.ones((1, 16, 8, 8), np.float16)
    w = np.ones((16, 16, 3, 3), np.float16)
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="sm_90a"):
            cuconv.conv2d(x, w, padding=1, algo="implicit_gemm_wgmma")
