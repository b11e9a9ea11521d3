"""Bit-exact tests of the tensor-core portability layer (the end of kernels/common.cuh) through
the probes in kernels/tc_probe.cu.

The expected fragment layouts are written here a second time, independently of the emulator's
inverse maps, straight from the PTX ISA's per-element formulas ("Matrix Fragments for
mma.m16n8k16 / mma.m16n8k8": element i of lane (g = lane/4, t = lane%4) sits at row/col
given by i); see /work/shared/research/tensor_cores.md §1. Inputs are small integers, so every
product and partial sum is exact and any accumulation order or rounding gives the same bits:
the emulator, the portable shuffle fallback and (when a device is lent) the GPU must all agree
with an int64 reference bit for bit.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import emulator
from cuconv.ops import tc_probe

BF16 = ml_dtypes.bfloat16

# name -> (probe kind, K, storage dtype of A/B, A registers, B registers)
KINDS = {
    "m16n8k16_f16": (0, 16, np.float16, 4, 2),
    "m16n8k16_bf16": (1, 16, BF16, 4, 2),
    "m16n8k8_f16": (2, 8, np.float16, 2, 1),
    "m16n8k8_tf32": (3, 8, np.float32, 4, 2),
}


# ----------------------------------------------------------------- the PTX tables, once more
def a_elements(name):
    """[(lane, reg, half, row, col)] of the A fragment: element i of lane (g, t)."""
    out = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        if name in ("m16n8k16_f16", "m16n8k16_bf16"):
            for i in range(8):
                row = g if i in (0, 1, 4, 5) else g + 8
                col = 2 * t + (i & 1) + (8 if i >= 4 else 0)
                out.append((lane, i // 2, i % 2, row, col))
        elif name == "m16n8k8_f16":
            for i in range(4):
                out.append((lane, i // 2, i % 2, g if i < 2 else g + 8, 2 * t + (i & 1)))
        else:  # tf32: one element per register
            for i in range(4):
                out.append((lane, i, 0, g if i in (0, 2) else g + 8, t if i < 2 else t + 4))
    return out


def b_elements(name):
    """[(lane, reg, half, k, n)] of the B fragment."""
    out = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        if name in ("m16n8k16_f16", "m16n8k16_bf16"):
            for i in range(4):
                out.append((lane, i // 2, i % 2, 2 * t + (i & 1) + (8 if i >= 2 else 0), g))
        elif name == "m16n8k8_f16":
            for i in range(2):
                out.append((lane, 0, i, 2 * t + i, g))
        else:
            for i in range(2):
                out.append((lane, i, 0, t if i == 0 else t + 4, g))
    return out


def c_elements():
    """[(lane, i, row, col)] of the C/D fragment (every shape)."""
    return [(lane, i, lane // 4 + (8 if i >= 2 else 0), 2 * (lane % 4) + (i & 1))
            for lane in range(32) for i in range(4)]


def bits(values, dtype) -> np.ndarray:
    """Raw bits as uint32 (16-bit types zero-extended)."""
    v = np.asarray(values).astype(dtype)
    return (v.view(np.uint16) if v.itemsize == 2 else v.view(np.uint32)).astype(np.uint32)


def pack(name, A, B, C):
    """Registers of W warps from A (W,16,K), B (W,K,8), C (W,16,8): a (W*32,4), b (W*32,2), c (W*32,4)."""
    _, K, dt, _, _ = KINDS[name]
    W = A.shape[0]
    a = np.zeros((W, 32, 4), np.uint32)
    b = np.zeros((W, 32, 2), np.uint32)
    c = np.zeros((W, 32, 4), np.float32)
    ab, bb = bits(A, dt), bits(B, dt)
    for lane, reg, half, row, col in a_elements(name):
        a[:, lane, reg] |= ab[:, row, col] << np.uint32(16 * half)
    for lane, reg, half, k, n in b_elements(name):
        b[:, lane, reg] |= bb[:, k, n] << np.uint32(16 * half)
    for lane, i, row, col in c_elements():
        c[:, lane, i] = C[:, row, col]
    return a.reshape(-1, 4), b.reshape(-1, 2), c.reshape(-1, 4)


def unpack_d(d, W):
    D = np.full((W, 16, 8), np.nan)
    d = d.reshape(W, 32, 4)
    for lane, i, row, col in c_elements():
        D[:, row, col] = d[:, lane, i]
    return D


def run_mma(be, name, A, B, C, options=()):
    kind = KINDS[name][0]
    a, b, c = pack(name, A, B, C)
    d = np.full((A.shape[0] * 32, 4), np.nan, np.float32)
    a_, b_, c_, d_ = (put(be, v) for v in (a, b, c, d))
    tc_probe.launch(be, "tc_probe_mma", (A.shape[0], 1, 1), (32, 1, 1), (np.int32(kind), a_, b_, c_, d_), portable=bool(options))
    return unpack_d(be.to_numpy(d_), A.shape[0])


def small_ints(rng, shape):
    return rng.integers(-8, 9, size=shape).astype(np.float64)


def skip_unless_emulator(be, why):
    if be.name != "emulator":
        pytest.skip(why)


# ----------------------------------------------------------------- mma
def test_fragment_tables_cover_each_element_once():
    for name, (_, K, *_rest) in KINDS.items():
        assert sorted((r, c) for *_x, r, c in a_elements(name)) == [(r, c) for r in range(16) for c in range(K)]
        assert sorted((k, n) for *_x, k, n in b_elements(name)) == [(k, n) for k in range(K) for n in range(8)]
    assert sorted((r, c) for *_x, r, c in c_elements()) == [(r, c) for r in range(16) for c in range(8)]


@pytest.mark.parametrize("name", list(KINDS))
def test_mma_integer_matrices_bit_exact(be, rng, name):
    """T1: random integers in [-8, 8]: D = A·B + C exactly, in every lane and register."""
    K = KINDS[name][1]
    W = 3
    A, B, C = small_ints(rng, (W, 16, K)), small_ints(rng, (W, K, 8)), small_ints(rng, (W, 16, 8))
    D = run_mma(be, name, A, B, C)
    np.testing.assert_array_equal(D, A @ B + C)


@pytest.mark.parametrize("name", list(KINDS))
def test_mma_one_hot_probes(be, name):
    """T2: A = e(r0, k0) for all 16·K positions at once (one warp each), B[k][n] = 1 + 8k + n:
    D must be B's row k0 in row r0 and zero elsewhere; then the same with B one-hot.
    A failure names the (lane, register, half) that holds the misplaced element."""
    K = KINDS[name][1]
    probes = [(r, k) for r in range(16) for k in range(K)]
    W = len(probes)
    A = np.zeros((W, 16, K))
    for w, (r, k) in enumerate(probes):
        A[w, r, k] = 1
    B = np.broadcast_to(1 + 8 * np.arange(K)[:, None] + np.arange(8)[None, :], (W, K, 8)).astype(np.float64)
    D = run_mma(be, name, A, B, np.zeros((W, 16, 8)))
    where = {(row, col): (lane, reg, half) for lane, reg, half, row, col in a_elements(name)}
    bad = []
    for w, (r, k) in enumerate(probes):
        want = np.zeros((16, 8))
        want[r] = B[0, k]
        if not np.array_equal(D[w], want):
            bad.append(f"A({r},{k}) in lane/reg/half {where[(r, k)]}")
    assert not bad, f"{len(bad)} misplaced A elements, e.g. {bad[:4]}"

    probes = [(k, n) for k in range(K) for n in range(8)]
    W = len(probes)
    Bh = np.zeros((W, K, 8))
    for w, (k, n) in enumerate(probes):
        Bh[w, k, n] = 1
    Ar = np.broadcast_to(1 + 16 * np.arange(16)[:, None] + np.arange(K)[None, :], (W, 16, K)).astype(np.float64)
    D = run_mma(be, name, Ar, Bh, np.zeros((W, 16, 8)))
    where = {(k, n): (lane, reg, half) for lane, reg, half, k, n in b_elements(name)}
    bad = []
    for w, (k, n) in enumerate(probes):
        want = np.zeros((16, 8))
        want[:, n] = Ar[0, :, k]
        if not np.array_equal(D[w], want):
            bad.append(f"B({k},{n}) in lane/reg/half {where[(k, n)]}")
    assert not bad, f"{len(bad)} misplaced B elements, e.g. {bad[:4]}"


def test_mma_identity_gives_b(be, rng):
    """A = I16 (first 16 columns) so D = B exactly, for the m16n8k16 fp16 layout."""
    B = small_ints(rng, (1, 16, 8))
    D = run_mma(be, "m16n8k16_f16", np.eye(16)[None], B, np.zeros((1, 16, 8)))
    np.testing.assert_array_equal(D, B)


def test_m16n8k16_is_two_m16n8k8(be, rng):
    """§1.5: a[0..1], b[0] of m16n8k16 are the m16n8k8 fragments of k 0-7 and a[2..3], b[1]
    those of k 8-15, so chaining two m16n8k8 on those registers gives the same bits."""
    W = 2
    A, B, C = small_ints(rng, (W, 16, 16)), small_ints(rng, (W, 16, 8)), small_ints(rng, (W, 16, 8))
    a16, b16, c = pack("m16n8k16_f16", A, B, C)
    lo = pack("m16n8k8_f16", A[:, :, :8], B[:, :8], C)
    hi = pack("m16n8k8_f16", A[:, :, 8:], B[:, 8:], C)
    np.testing.assert_array_equal(a16[:, :2], lo[0][:, :2])
    np.testing.assert_array_equal(a16[:, 2:], hi[0][:, :2])
    np.testing.assert_array_equal(b16[:, 0], lo[1][:, 0])
    np.testing.assert_array_equal(b16[:, 1], hi[1][:, 0])
    first = run_mma(be, "m16n8k8_f16", A[:, :, :8], B[:, :8], C)
    both = run_mma(be, "m16n8k8_f16", A[:, :, 8:], B[:, 8:], first)
    np.testing.assert_array_equal(both, run_mma(be, "m16n8k16_f16", A, B, C))


def test_mma_rounds_once_per_instruction(be):
    """Emulator rule: exact products, one round-to-nearest to f32 per mma. 2^24 + 1 + 1:
    summed in f32 step by step each +1 would be lost; the exact sum 2^24 + 2 is representable.
    (Hardware may differ — PTX leaves accumulation rounding unspecified — so emulator only.)"""
    skip_unless_emulator(be, "accumulation rounding is unspecified on hardware")
    A = np.zeros((1, 16, 16))
    A[0, 0, :2] = 1
    B = np.zeros((1, 16, 8))
    B[0, :2, 0] = 1
    C = np.zeros((1, 16, 8))
    C[0, 0, 0] = 2.0 ** 24
    D = run_mma(be, "m16n8k16_f16", A, B, C)
    assert D[0, 0, 0] == 2.0 ** 24 + 2


def test_divergent_mma_is_reported(be):
    """Only half the warp reaching mma.sync is undefined in PTX; the emulator must stop it."""
    skip_unless_emulator(be, "a divergent mma.sync is undefined behaviour on a GPU")
    z = np.zeros((32, 4), np.uint32)
    with pytest.raises((emulator.BarrierDivergence, emulator.KernelFault)):
        tc_probe.launch(be, "tc_probe_mma", (1, 1, 1), (32, 1, 1),
                  (np.int32(-1), z, np.zeros((32, 2), np.uint32), np.zeros((32, 4), np.float32),
                   np.zeros((32, 4), np.float32)))


def test_tf32_operands_use_only_the_top_19_bits(be, rng):
    """Raw f32 bits given to the tf32 mma: the emulator drops the low 13 bits (documented for
    wgmma, de-facto for mma.sync; PyTorch's "only the first 10 bits of the mantissa are read").
    With A·I8 the product is A's truncation exactly."""
    A = rng.uniform(-4, 4, (1, 16, 8)).astype(np.float32)
    A.view(np.uint32)[...] |= np.uint32(0x1fff) & rng.integers(1, 0x2000, A.shape).astype(np.uint32)
    B = np.eye(8, dtype=np.float32)[None]
    D = run_mma(be, "m16n8k8_tf32", A, B, np.zeros((1, 16, 8)))
    truncated = (A.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(D, truncated)


# ----------------------------------------------------------------- ldmatrix
def code(j, r, c):
    return (j << 8) | (r << 4) | c


def ldmatrix_case(rng, num):
    """Shared memory with matrix j's row r at a random 48-byte slot; per-lane row offsets."""
    pitch = 24                                        # halves: 48 bytes, a multiple of 16
    slots = rng.permutation(64)
    smem = np.full(64 * pitch, 0xEEEE, np.uint16)
    for j in range(4):
        for r in range(8):
            s = slots[8 * j + r]
            smem[s * pitch: s * pitch + 8] = [code(j, r, c) for c in range(8)]
    # Lanes past 8·num repeat the lower lanes' addresses (valid, as sm_75 requires).
    row_off = np.array([slots[8 * ((lane // 8) % num) + lane % 8] * pitch for lane in range(32)], np.int32)
    return smem, row_off


def expected_ldmatrix(num, trans):
    want = np.zeros((32, 4), np.uint32)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for j in range(num):
            if trans:
                lo, hi = code(j, 2 * t, g), code(j, 2 * t + 1, g)
            else:
                lo, hi = code(j, g, 2 * t), code(j, g, 2 * t + 1)
            want[lane, j] = lo | (hi << 16)
    return want


def run_ldmatrix(be, smem, row_off, num, trans, options=()):
    out = put(be, np.full((32, 4), 0xDEADBEEF, np.uint32))
    tc_probe.launch(be, "tc_probe_ldmatrix", (1, 1, 1), (32, 1, 1),
              (np.int32(num), np.int32(trans), put(be, smem), np.int32(smem.size), put(be, row_off), out), portable=bool(options))
    return be.to_numpy(out)


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [0, 1])
def test_ldmatrix_coded_values(be, rng, num, trans):
    """T3: every lane/register/half of x1/x2/x4 (.trans) against the PTX figure, bit for bit,
    with rows scattered over shared memory (row address per lane, not a contiguous block)."""
    smem, row_off = ldmatrix_case(rng, num)
    got = run_ldmatrix(be, smem, row_off, num, trans)
    want = expected_ldmatrix(num, trans)
    np.testing.assert_array_equal(got[:, :num], want[:, :num])


def test_ldmatrix_misaligned_row_is_reported(be, rng):
    skip_unless_emulator(be, "a misaligned ldmatrix address is undefined behaviour on a GPU")
    smem, row_off = ldmatrix_case(rng, 4)
    row_off[5] += 1                                    # 2 bytes off a 16-byte boundary
    with pytest.raises(emulator.KernelFault, match="ldmatrix"):
        run_ldmatrix(be, smem, row_off, 4, 0)


# ----------------------------------------------------------------- cvt.rna.tf32.f32
def tf32_rna_model(u: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero, on the magnitude; 10 explicit mantissa bits."""
    u = u.astype(np.uint64)
    special = (u & 0x7F800000) == 0x7F800000
    out = ((u + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF
    return np.where(special, u, out).astype(np.uint32)


def test_cvt_rna_tf32_edge_cases(be, rng):
    """T5: exact ties (both signs), one ulp either side of a tie, carries into the next binade,
    the largest finite value (-> inf), ±0, ±inf, subnormals, plus random values."""
    cases = [0x3F801000, 0xBF801000, 0x3F800FFF, 0x3F801001, 0x3F803000, 0x3FFFF000, 0x3FFFFFFF, 0x7F7FFFFF,
             0xFF7FFFFF, 0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x00001000, 0x00000FFF, 0x807FFFFF,
             0x00400000, 0x3F800000, 0x4B7FF000]
    u = np.concatenate([np.array(cases, np.uint32), rng.integers(0, 2 ** 32, 300, dtype=np.uint64).astype(np.uint32)])
    u = u[((u & 0x7F800000) != 0x7F800000) | ((u & 0x007FFFFF) == 0)]   # NaNs are checked separately
    x = u.view(np.float32)
    out = put(be, np.full(x.size, 0xDEADBEEF, np.uint32))
    tc_probe.launch(be, "tc_probe_cvt_tf32", (-(-x.size // 256), 1, 1), (256, 1, 1),
              (put(be, x), out, np.int32(x.size)))
    got = be.to_numpy(out)
    want = tf32_rna_model(u)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(u[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]
    assert want[0] == 0x3F802000 and want[1] == 0xBF802000 and want[7] == 0x7F800000    # the model itself

    nan = put(be, np.array([np.nan, -np.nan], np.float32))
    out = put(be, np.zeros(2, np.uint32))
    tc_probe.launch(be, "tc_probe_cvt_tf32", (1, 1, 1), (256, 1, 1), (nan, out, np.int32(2)))
    assert np.all(np.isnan(be.to_numpy(out).view(np.float32)))


# ----------------------------------------------------------------- cp.async
def run_cp_async(be, mode, nbytes, src, src_bytes, options=()):
    out = put(be, np.full(32 * 48, 0x5A, np.uint8))
    s = put(be, src)
    end = s[src.size:]                          # one past the end: must never be read
    tc_probe.launch(be, "tc_probe_cp_async", (1, 1, 1), (32, 1, 1),
              (np.int32(mode), np.int32(nbytes), s, end, put(be, src_bytes), out), portable=bool(options))
    return be.to_numpy(out)


@pytest.mark.parametrize("nbytes", [4, 8, 16])
def test_cp_async_zero_fill(be, rng, nbytes):
    """T7: every src-size 0..BYTES: the first src-size bytes copied, the rest of the BYTES zero,
    bytes past BYTES untouched; src-size 0 passes a one-past-the-end source."""
    src = rng.integers(1, 256, 32 * 16 + 16, dtype=np.uint8)[:32 * 16].copy()
    src_bytes = (np.arange(32) % (nbytes + 1)).astype(np.int32)
    got = run_cp_async(be, 0, nbytes, src, src_bytes)[:32 * 16].reshape(32, 16)
    for i in range(32):
        n = src_bytes[i]
        want = np.concatenate([src[i * 16: i * 16 + n], np.zeros(nbytes - n, np.uint8),
                               np.full(16 - nbytes, 0xAB, np.uint8)])
        np.testing.assert_array_equal(got[i], want, err_msg=f"thread {i}, src-size {n} of {nbytes}")


def test_cp_async_zero_fill_under_address_sanitizer(rng):
    """src-size 0 with a one-past-the-end source: ASan must stay silent (the source is not read)."""
    with cuconv.backend("emulator", sanitize="address") as be:
        test_cp_async_zero_fill(be, rng, 16)


def test_cp_async_groups_complete_in_order(be, rng):
    """Three groups, then wait_group 1: the first two are complete; in the emulator's deferred
    mode the third still holds the poison (0xFF) — on a GPU it may or may not have landed."""
    src = rng.integers(0, 255, 32 * 48, dtype=np.uint8)
    got = run_cp_async(be, 1, 16, src, np.zeros(32, np.int32)).reshape(32, 3, 16)
    src = src.reshape(32, 3, 16)
    np.testing.assert_array_equal(got[:, :2], src[:, :2])
    if be.name == "emulator":
        assert np.all(got[:, 2] == 0xFF)


def test_cp_async_bad_arguments_are_reported(be, rng):
    skip_unless_emulator(be, "misaligned cp.async / src-size > cp-size are undefined behaviour on a GPU")
    src = rng.integers(0, 255, 32 * 16 + 16, dtype=np.uint8)
    with pytest.raises(emulator.KernelFault, match="cp.async"):
        run_cp_async(be, 0, 16, src, np.full(32, 17, np.int32))
    with pytest.raises(emulator.KernelFault, match="aligned"):
        run_cp_async(be, 0, 16, src[1:], np.full(32, 16, np.int32))     # a source 1 byte off


def run_pipeline(be, bug, src, options=()):
    out = put(be, np.full(64, np.nan, np.float32))
    tc_probe.launch(be, "tc_probe_pipeline", (1, 1, 1), (64, 1, 1),
              (np.int32(bug), put(be, src), out, np.int32(src.size // 64)), portable=bool(options))
    return be.to_numpy(out)


def pipeline_reference(src):
    tiles = src.reshape(-1, 64)
    acc = np.zeros(64, np.float32)
    for t in tiles:
        acc = (acc + np.roll(t, -1)).astype(np.float32)
    return acc


def test_cp_async_pipeline_correct(be, rng):
    src = rng.uniform(-1, 1, 5 * 64).astype(np.float32)
    np.testing.assert_array_equal(run_pipeline(be, 0, src), pipeline_reference(src))


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_cp_async_planted_bugs_fail_in_deferred_mode(rng, order):
    """Read before wait_group, no barrier after it, refill before everyone has read: each must
    produce wrong numbers in the emulator's deferred mode (the destination is poisoned at issue
    and filled at the covering wait), in every thread order."""
    src = rng.uniform(1, 2, 5 * 64).astype(np.float32)
    ref = pipeline_reference(src)
    with cuconv.backend("emulator", order=order, seed=7) as be:
        np.testing.assert_array_equal(run_pipeline(be, 0, src), ref)
        for bug in (1, 2, 3):
            got = run_pipeline(be, bug, src)
            assert not np.array_equal(got, ref), f"planted bug {bug} went unnoticed ({order} order)"


# ----------------------------------------------------------------- the portable fallbacks
def test_portable_fallbacks_agree(rng):
    """-DCUCONV_PORTABLE_TC: the warp-shuffle mma, shuffle ldmatrix and synchronous cp.async
    (the GPU fallback below sm_80) run in the emulator and must match the same tables: a second,
    independent implementation of every layout."""
    portable = ("-DCUCONV_PORTABLE_TC",)
    with cuconv.backend("emulator") as be:
        for name, (_, K, *_r) in KINDS.items():
            A, B, C = small_ints(rng, (2, 16, K)), small_ints(rng, (2, K, 8)), small_ints(rng, (2, 16, 8))
            np.testing.assert_array_equal(run_mma(be, name, A, B, C, portable), A @ B + C, err_msg=name)
        for num in (1, 2, 4):
            for trans in (0, 1):
                smem, row_off = ldmatrix_case(rng, num)
                got = run_ldmatrix(be, smem, row_off, num, trans, portable)
                np.testing.assert_array_equal(got[:, :num], expected_ldmatrix(num, trans)[:, :num])
        src = rng.uniform(-1, 1, 3 * 64).astype(np.float32)
        np.testing.assert_array_equal(run_pipeline(be, 0, src, portable), pipeline_reference(src))
