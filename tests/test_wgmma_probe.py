"""wgmma (Hopper warpgroup MMA) and mbarrier through the probes of kernels/wgmma_probe.cu
(ops/wgmma_probe.py): the emulator's model against the PTX ISA's definitions, and its checks
of the ordering rules against planted bugs.

The shared-memory layouts are written here a second time, independently of the emulator, as
the PTX ISA's "Canonical Layouts" table states them in CuTe notation (shape:stride in 16-bit
elements, then Swizzle<B,4,3> on the byte address), and the accumulator ownership as its
"Matrix Fragments for wgmma.mma_async.m64nNk16" (CuTe's CLayout_64xN). Inputs are small
integers, so every product and partial sum is exact: a wrong descriptor field, swizzle or
fragment index shows as a wrong integer, on the emulator and (on an sm_90 device) on the GPU.
docs/wgmma.md lists the facts and their sources.
"""
from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import emulator
from cuconv.ops import wgmma_probe
from cuconv import tensor_map as tm
from cuconv.ops import wgmma_conv as wg
from cuconv.problem import Conv2dProblem
from cuconv.tensor_map import TensorMapSpec

BF16 = ml_dtypes.bfloat16
DT = {"float16": np.float16, "bfloat16": BF16}


def needs_sm90(be):
    """On the GPU these run only on an sm_90 device (H100/H200); the emulator always runs them."""
    if be.name == "cupy" and be.caps().cc != 90:
        pytest.skip(f"wgmma needs an sm_90 device (H100, H200); this one is sm_{be.caps().cc}")


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


def run_wgmma(be, dtype, N, A, Bt, C, a_spec, b_spec, *, fill=0, bug=0, scale_d=1, extra_image=0,
              a_desc=None, a_desc_or=0):
    """One wgmma through wgmma_probe_mma. A (64x16), Bt (Nx16: B transposed, row n = column n of
    B) placed in one image by their specs (major, mode, lbo, sbo, start); returns D (64xN).
    ``a_desc`` replaces A's descriptor (the image stays as a_spec lays it out), ``a_desc_or``
    sets extra bits in it."""
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
    da = (descs[0] if a_desc is None else a_desc) | a_desc_or
    wgmma_probe.launch(be, "wgmma_probe_mma", (1, 1, 1), (128, 1, 1),
                       (np.int32(kind), np.int32(fill), np.int32(bug), img_, np.int32(size), np.uint64(da),
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
    return run_wgmma(be, "float16", 64, A, Bt, C, a_spec, b_spec, a_desc=desc(a_spec[4], a_spec[2], a_sbo, a_desc_mode))


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
    for bad, message in ((1 << 15, "reserved bits"), (3 << 49, "base offset")):
        with cuconv.backend("emulator") as be:
            with pytest.raises(emulator.KernelFault, match=message):
                run_wgmma(be, "float16", 64, A, Bt, C, *LAYOUTS["K_128B"], a_desc_or=bad)


@pytest.mark.parametrize("bug,message", [(0, None), (1, "never completes"), (2, "not initialised")])
def test_mbarrier_phases(be, bug, message):
    needs_sm90(be)
    if bug:
        emulator_only(be, "planted mbarrier bugs hang a real GPU")
    out = put(be, np.zeros(128, np.int32))
    args = (np.int32(bug), out)
    if message is None:
        wgmma_probe.launch(be, "wgmma_probe_mbarrier", (1, 1, 1), (128, 1, 1), args, shared_mem=16)
        np.testing.assert_array_equal(be.to_numpy(out), 3)
    else:
        with pytest.raises((emulator.KernelFault, emulator.BarrierDivergence), match=message):
            wgmma_probe.launch(be, "wgmma_probe_mbarrier", (1, 1, 1), (128, 1, 1), args, shared_mem=16)


def test_probes_are_registered_for_sm90a_only():
    for name, entry in wgmma_probe.ENTRIES.items():
        assert entry.archs == ("sm_90a",) and entry.file == "wgmma_probe.cu" and entry.label == name


# ----------------------------------------------------------------- TMA: the emulated loads against a NumPy model
# The model below is written from the PTX ISA's "Tensors" sections independently of the emulator
# (tensor_core.h walks the box with counters; this enumerates the bounding box's pixels in
# traversal order and slices): tiled boxes with element strides, the im2col bounding box (lower
# corner .. dim - 1 + upper corner, every element-stride-th pixel, W then H then N), the im2col
# offsets added to each pixel, zero fill outside the tensor, dimension 0 fastest, rows of the
# inner box, then the swizzle on the shared address (the box starts 1024-byte aligned).
def tma_model(t, spec, coord, offsets=(0, 0)):
    """The bytes a load of ``spec`` at ``coord`` puts in shared memory. ``t``: the NHWC-like array
    whose axes, reversed, are the map's dims (dims = (C, W, H, N) for t of shape (N, H, W, C))."""
    dims = spec.dims
    assert t.shape[::-1] == dims

    def elem(c, w, h, n):
        if 0 <= c < dims[0] and 0 <= w < dims[1] and 0 <= h < dims[2] and 0 <= n < dims[3]:
            return t[n, h, w, c]
        return t.dtype.type(0)

    rows = []
    if spec.mode == "tiled":
        es = spec.element_strides
        for i3 in range(0, spec.box[3], es[3]):
            for i2 in range(0, spec.box[2], es[2]):
                for i1 in range(0, spec.box[1], es[1]):
                    rows.append([elem(coord[0] + i0, coord[1] + i1, coord[2] + i2, coord[3] + i3)
                                 for i0 in range(spec.box[0])])
    else:
        ws = range(spec.lower[0], dims[1] + spec.upper[0], spec.element_strides[1])
        hs = range(spec.lower[1], dims[2] + spec.upper[1], spec.element_strides[2])
        per_image = [(w, h) for h in hs for w in ws]
        start = per_image.index((coord[1], coord[2]))
        for p in range(spec.pixels_per_column):
            k = start + p
            n = coord[3] + k // len(per_image)
            w, h = per_image[k % len(per_image)]
            rows.append([elem(coord[0] + j, w + offsets[0], h + offsets[1], n)
                         for j in range(spec.channels_per_pixel)])
    flat = np.array(rows, dtype=t.dtype).view(np.uint8).reshape(-1)
    out = np.empty_like(flat)
    out[swizzled(flat.size, spec.swizzle)] = flat
    return out


def swizzled(nbytes, swizzle):
    """Where byte i of the box lands: Swizzle<log2(span/16), 4, 3> on the address (box at 0)."""
    span = {0: 0, 1: 32, 2: 64, 3: 128}[swizzle]
    addr = np.arange(nbytes)
    return addr ^ (((addr >> 7) & (span // 16 - 1)) << 4) if span else addr


def run_tma(be, spec, t, coord, offsets=(0, 0), bug=0):
    nbytes = spec.box_bytes
    out = put(be, np.full(nbytes, 0xAB, np.uint8))
    tensor = put(be, t)
    tmap = be.tensor_map(spec, tensor.reshape(-1))
    wgmma_probe.launch(be, "wgmma_probe_tma", (1, 1, 1), (128, 1, 1),
                       (tmap, np.int32(spec.mode == "im2col"), *(np.int32(c) for c in coord),
                        np.int32(offsets[0]), np.int32(offsets[1]), np.int32(nbytes), np.int32(bug), out),
                       shared_mem=2048 + -(-nbytes // 1024) * 1024)
    return be.to_numpy(out)


def nhwc_spec(shape, dtype, mode, swizzle=3, **kw):
    N, H, W, C = shape
    e = 2
    return TensorMapSpec(mode, dtype, (C, W, H, N), (C * e, W * C * e, H * W * C * e), swizzle=swizzle, **kw)


# (tensor shape NHWC, C per pixel, pixels, swizzle, conv: pad, stride, dilation, filter R=S, start pixel m,
#  filter tap (r, s), first channel)
IM2COL_CASES = {
    "pad1_3x3_C40_box64": ((2, 7, 9, 40), 64, 128, 3, (1, 1, 1, 3), 5, (2, 0), 0),
    "stride2_pad1_last_rows": ((2, 9, 7, 16), 64, 128, 3, (1, 2, 1, 3), 30, (1, 2), 0),
    "dilation2_pad2": ((1, 9, 9, 24), 32, 64, 2, (2, 1, 2, 3), 11, (2, 1), 0),
    "stride3_no_swizzle_C24": ((3, 8, 10, 24), 24, 40, 0, (0, 3, 1, 2), 7, (1, 1), 0),
    "second_channel_box_5x5": ((1, 11, 6, 72), 64, 64, 3, (2, 2, 1, 5), 3, (4, 3), 64),
}


@pytest.mark.parametrize("case", list(IM2COL_CASES))
def test_tma_im2col_matches_the_numpy_model(be, rng, case):
    """One im2col load per case, byte for byte against the model: padding (zero fill before and past
    the image), stride 2/3 (element strides), dilation (offsets), C not a multiple of the pixel's
    channel box, a column running past the image and past N, swizzle none / 64 B / 128 B."""
    needs_sm90(be)
    shape, cpp, ppc, swizzle, (pad, stride, dil, R), m, (r, s), c0 = IM2COL_CASES[case]
    N, H, W, C = shape
    P = (H + 2 * pad - dil * (R - 1) - 1) // stride + 1
    Q = (W + 2 * pad - dil * (R - 1) - 1) // stride + 1
    t = rng.integers(-1000, 1000, shape).astype(np.float16)
    spec = nhwc_spec(shape, "float16", "im2col", swizzle, element_strides=(1, stride, stride, 1),
                     lower=(-pad, -pad), upper=(pad - dil * (R - 1), pad - dil * (R - 1)),
                     channels_per_pixel=cpp, pixels_per_column=ppc)
    n0, pq = divmod(m, P * Q)
    p0, q0 = divmod(pq, Q)
    coord = (c0, q0 * stride - pad, p0 * stride - pad, n0)
    got = run_tma(be, spec, t, coord, (s * dil, r * dil))
    want = tma_model(t, spec, coord, (s * dil, r * dil))
    np.testing.assert_array_equal(got, want)
    # the model's rows are the convolution's im2col rows m, m+1, ... for tap (r, s) (zero past M,
    # past C and in the padding): what the wgmma kernel multiplies
    x = np.pad(t.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    vals = want[swizzled(want.size, swizzle)].view(np.float16).astype(np.float64).reshape(ppc, cpp)
    for p in range(ppc):
        mm = m + p
        if mm >= N * P * Q:
            assert not vals[p].any()
            continue
        n, rem = divmod(mm, P * Q)
        pp, qq = divmod(rem, Q)
        ref = x[n, pp * stride + r * dil, qq * stride + s * dil, c0:c0 + cpp]
        np.testing.assert_array_equal(vals[p, :len(ref)], ref)
        assert not vals[p, len(ref):].any()


@pytest.mark.parametrize("settings", [dict(sanitize="address,undefined"), dict(sanitize="thread"),
                                      dict(order="random", seed=3)], ids=["asan_ubsan", "tsan", "random"])
def test_tma_under_sanitizers_and_random_order(rng, settings):
    shape, cpp, ppc, swizzle, (pad, stride, dil, R), m, (r, s), c0 = IM2COL_CASES["stride2_pad1_last_rows"]
    t = rng.integers(-1000, 1000, shape).astype(np.float16)
    spec = nhwc_spec(shape, "float16", "im2col", swizzle, element_strides=(1, stride, stride, 1),
                     lower=(-pad, -pad), upper=(pad - dil * (R - 1), pad - dil * (R - 1)),
                     channels_per_pixel=cpp, pixels_per_column=ppc)
    N, H, W, C = shape
    P, Q = (H + 2 * pad - dil * (R - 1) - 1) // stride + 1, (W + 2 * pad - dil * (R - 1) - 1) // stride + 1
    n0, pq = divmod(m, P * Q)
    coord = (c0, pq % Q * stride - pad, pq // Q * stride - pad, n0)
    with cuconv.backend("emulator", **settings) as be:
        got = run_tma(be, spec, t, coord, (s * dil, r * dil))
    np.testing.assert_array_equal(got, tma_model(t, spec, coord, (s * dil, r * dil)))


TILED_CASES = {
    "weights_KRSC_box64x128": ((20, 3, 3, 40), (64, 1, 1, 128), (1, 1, 1, 1), (0, 2, 1, 0), 3),
    "inner_offset_es2": ((9, 5, 6, 32), (32, 4, 2, 3), (1, 2, 1, 1), (8, -1, 3, 7), 2),
    "no_swizzle_C8": ((4, 3, 7, 8), (8, 3, 4, 2), (1, 1, 2, 1), (0, 0, -2, 3), 0),
}


@pytest.mark.parametrize("case", list(TILED_CASES))
def test_tma_tiled_matches_the_numpy_model(be, rng, case):
    """Tiled loads: boxes past every edge of the tensor, negative coordinates, element strides,
    128 B / 64 B / no swizzle."""
    needs_sm90(be)
    shape, box, es, coord, swizzle = TILED_CASES[case]
    t = rng.integers(-1000, 1000, shape).astype(np.float16)
    spec = nhwc_spec(shape, "float16", "tiled", swizzle, element_strides=es, box=box)
    np.testing.assert_array_equal(run_tma(be, spec, t, coord), tma_model(t, spec, coord))


TMA_PLANTED = [(1, "not made visible to the async proxy"), (2, "still in flight"), (3, "never completes")]


@pytest.mark.parametrize("bug,message", TMA_PLANTED, ids=[m for _, m in TMA_PLANTED])
def test_tma_planted_ordering_bugs_are_faults(rng, bug, message):
    t = rng.integers(-9, 9, (1, 4, 4, 64)).astype(np.float16)
    spec = nhwc_spec(t.shape, "float16", "tiled", element_strides=(1, 1, 1, 1), box=(64, 4, 2, 1))
    with cuconv.backend("emulator") as be:
        with pytest.raises((emulator.KernelFault, emulator.BarrierDivergence), match=message):
            run_tma(be, spec, t, (0, 0, 0, 0), bug=bug)


def test_tma_without_expect_tx_reads_poison(rng):
    """No expect-tx: the phase completes on the arrival alone and the waiters read the destination
    before the load lands (the emulator lands it no earlier than a waiter needs it)."""
    t = rng.integers(-9, 9, (1, 4, 4, 64)).astype(np.float16)
    spec = nhwc_spec(t.shape, "float16", "tiled", element_strides=(1, 1, 1, 1), box=(64, 4, 2, 1))
    with cuconv.backend("emulator") as be:
        got = run_tma(be, spec, t, (0, 0, 0, 0), bug=4)
    assert (got == 0xFF).all()


def test_emulator_encoder_checks_the_driver_rules(rng):
    """The emulator's encoder refuses what the driver documents as CUDA_ERROR_INVALID_VALUE, and a
    region past its array."""
    a = np.zeros(4 * 4 * 64, np.float16)
    ok = dict(data_type=6, rank=4, array=a, global_dim=(64, 4, 4, 1), global_strides=(128, 512, 2048),
              box_dim=(64, 4, 2, 1), element_strides=(1, 1, 1, 1), swizzle=3)
    emulator.encode_tensor_map_tiled(**ok)
    for change, message in ((dict(global_strides=(120, 512, 2048)), "multiples of 16"),
                            (dict(box_dim=(64, 4, 2, 300)), "1..256"),
                            (dict(element_strides=(1, 9, 1, 1)), "1..8"),
                            (dict(global_dim=(64, 4, 4, 2)), "past the"),
                            (dict(box_dim=(72, 4, 2, 1)), "swizzle span")):
        with pytest.raises(ValueError, match=message):
            emulator.encode_tensor_map_tiled(**{**ok, **change})
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        emulator.encode_tensor_map_im2col(6, 4, a, (64, 4, 4, 1), (128, 512, 2048), (-129, 0), (0, 0), 64, 16,
                                          (1, 1, 1, 1), 0, 3)


class _FakeDriver:
    """Stands in for cuda.bindings.driver: records the encode calls, returns 16 words."""
    CUtensorMapDataType = CUtensorMapInterleave = CUtensorMapSwizzle = int
    CUtensorMapL2promotion = CUtensorMapFloatOOBfill = cuuint32_t = cuuint64_t = int

    def __init__(self, version):
        self.calls, self.version = [], version

    def _map(self):
        class Map:
            opaque = [0x1111, 0xFFFFFFFF, *range(2, 16)]
        return Map()

    def cuTensorMapEncodeIm2col(self, *args):
        self.calls.append(("im2col", args))
        return 0, self._map()

    def cuTensorMapEncodeTiled(self, *args):
        self.calls.append(("tiled", args))
        return 0, self._map()

    def cuDriverGetVersion(self):
        return 0, self.version


def test_driver_encode_passes_the_drivers_arguments(monkeypatch):
    """The GPU path calls cuTensorMapEncodeIm2col / cuTensorMapEncodeTiled with the driver's argument
    order (dims innermost first, byte strides of dims 1.., corners W first, channels per pixel,
    pixels per column, element strides, interleave none, 128-byte swizzle, L2 promotion 128 B, zero
    fill) and passes the 16 words on as 128 bytes; on drivers up to 13.1 an im2col map of a tensor
    under 128 KiB gets CUTLASS's workaround (bit 21 of word 1 cleared)."""
    p = Conv2dProblem.from_shapes((2, 64, 10, 12), (128, 64, 3, 3), padding=1, stride=2, dtype="float16")
    mx, mw = wg.tensor_maps(p, 64, "float16")
    for version, cleared in ((13010, True), (13020, False)):
        drv = _FakeDriver(version)
        monkeypatch.setattr(tm, "_DRIVER_VERSION", None)
        data = mx.driver_encode(0x7000, driver=drv)
        words = struct.unpack("<16Q", data)
        assert len(data) == 128 and words[0] == 0x1111
        assert words[1] == (0xFFFFFFFF & ~(1 << 21) if cleared else 0xFFFFFFFF)
        kind, args = drv.calls[0]
        assert kind == "im2col" and args == (6, 4, 0x7000, [64, 12, 10, 2], [128, 1536, 15360], [-1, -1], [-1, -1],
                                             64, 128, [1, 2, 2, 1], 0, 3, 2, 0)
    drv = _FakeDriver(13020)
    mw.driver_encode(0x9000, driver=drv)
    assert drv.calls == [("tiled", (6, 4, 0x9000, [64, 3, 3, 128], [128, 384, 1152], [64, 1, 1, 128], [1, 1, 1, 1],
                                    0, 3, 2, 0))]


def test_driver_encode_arguments_convert_in_cuda_bindings():
    """With NVIDIA's cuda-bindings installed, its encode functions accept the arguments as built
    (its list types included): the call gets as far as the driver (a result on a GPU machine, the
    driver library not found elsewhere), never a TypeError."""
    driver = pytest.importorskip("cuda.bindings.driver")
    p = Conv2dProblem.from_shapes((2, 64, 10, 12), (128, 64, 3, 3), padding=1, stride=2, dtype="float16")
    for spec in wg.tensor_maps(p, 64, "float16"):
        try:
            assert len(spec.driver_encode(0x7000, driver=driver)) == 128
        except Exception as exc:   # no driver on this machine (or no valid address): past the conversions
            assert not isinstance(exc, TypeError), exc
