"""Tests of cuconv.emulator: CUDA programs written for the purpose
(tests/emulator_programs/*.cu) run on the CPU and compared with NumPy, under
every thread order and under ASan+UBSan; planted bugs must be caught.

Compiled libraries are cached on disk (~/.cache/cuconv/emulator or
$CUCONV_CACHE_DIR/emulator), so a second run only pays for running."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cuconv import emulator as emu

PROGRAMS = Path(__file__).parent / "emulator_programs"
SANITIZE = "address,undefined"

# (order, sanitize): every order without sanitizers, forward order with them.
MODES = [("forward", ""), ("reverse", ""), ("random", ""), ("forward", SANITIZE)]
MODE_IDS = ["forward", "reverse", "random", "sanitized"]
if os.environ.get("CUCONV_EMU_TEST_TSAN"):  # the whole conformance suite under ThreadSanitizer too (slow)
    MODES.append(("random", "thread"))
    MODE_IDS.append("tsan")


@functools.lru_cache(maxsize=None)
def _module(program: str, sanitize: str, order: str, options: tuple = (), names: tuple = (), seed: int = 0,
            timeout: float | None = None) -> emu.RawModule:
    code = (PROGRAMS / program).read_text()
    return emu.RawModule(code=code, options=options, name_expressions=names, sanitize=sanitize, order=order,
                         seed=seed, timeout=timeout, source_name=program).compile()


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mode(request):
    return request.param


def load(program: str, mode, options=(), names=()) -> emu.RawModule:
    order, sanitize = mode
    return _module(program, sanitize, order, tuple(options), tuple(names))


def rel_err(out, ref) -> float:
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm((out - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-300))


def poison(shape, dtype) -> np.ndarray:
    """Output buffer whose unwritten elements fail any comparison."""
    a = np.empty(shape, dtype)
    if np.dtype(dtype).kind == "f":
        a.fill(np.nan)
    else:
        a.fill(np.iinfo(dtype).min + 7)
    return a


# --- features.cu: indices, qualifiers, templates, shared memory, barriers --------------------------

FEATURES_OPTS = ("-D", "TILE=16", "--use_fast_math", "-arch=sm_90", "-lineinfo")
FEATURES_NAMES = ("block_sum<64, float>", "block_sum<128, double>", "shared_address<1>", "shared_address<2>",
                  "sgemm_tiled<16>")


def features(mode):
    return load("features.cu", mode, FEATURES_OPTS, FEATURES_NAMES)


def test_indices_3d(mode):
    grid, block = (2, 3, 2), (4, 2, 3)
    n = np.prod(grid) * np.prod(block)
    out = poison((n, 8), np.int32)
    features(mode).get_function("indices3d")(grid, block, (out,))
    ref = np.empty_like(out)
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                b = bx + grid[0] * (by + grid[1] * bz)
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            t = tx + block[0] * (ty + block[1] * tz)
                            ref[b * 24 + t] = (tx, ty, tz, bx, by, bz, 423, 232)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name,dtype,block", [("block_sum<64, float>", np.float32, 64),
                                              ("block_sum<128, double>", np.float64, 128)])
def test_template_reduction(mode, name, dtype, block):
    rng = np.random.default_rng(1)
    n = 3 * block + 17
    x = rng.standard_normal(n).astype(dtype)
    nblocks = -(-n // block)
    partial = poison(nblocks, dtype)
    features(mode).get_function(name)(nblocks, block, (x, partial, np.int32(n)))
    ref = np.pad(x.astype(np.float64), (0, nblocks * block - n)).reshape(nblocks, block).sum(1)
    assert rel_err(partial, ref) < (1e-6 if dtype == np.float32 else 1e-14)


def test_template_shared_distinct_per_instantiation(mode):
    m = features(mode)
    a1, a2 = poison(1, np.uint64), poison(1, np.uint64)
    m.get_function("shared_address<1>")(1, 32, (a1,))
    m.get_function("shared_address<2>")(1, 32, (a2,))
    assert a1[0] != a2[0]


def test_transpose_2d_shared(mode):
    rng = np.random.default_rng(2)
    rows, cols = 37, 23
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    out = poison((cols, rows), np.float32)
    grid = (-(-cols // 16), -(-rows // 16))
    features(mode).get_function("transpose")(grid, (16, 16), (x, out, np.int32(rows), np.int32(cols)))
    np.testing.assert_array_equal(out, x.T)


def test_dynamic_shared_aliases(mode):
    rng = np.random.default_rng(3)
    n, block = 200, 64
    x = rng.standard_normal(n).astype(np.float32)
    out = poison(n, np.float32)
    features(mode).get_function("reverse_dynamic")(-(-n // block), block, (x, out, np.int32(n)),
                                                   shared_mem=block * 4)
    ref = np.zeros(n, np.float32)
    for i in range(n):
        b, t = divmod(i, block)
        src = b * block + block - 1 - t
        ref[i] = x[src] if src < n else 0
    np.testing.assert_array_equal(out, ref)


def test_syncthreads_count_and_or(mode):
    rng = np.random.default_rng(4)
    flags = (rng.random((4, 96)) < 0.5).astype(np.int32)
    flags[1] = 1
    flags[2] = 0
    out = poison((4, 3), np.int32)
    features(mode).get_function("sync_votes")(4, 96, (flags, out))
    ref = np.stack([flags.sum(1), flags.all(1), flags.any(1)], 1).astype(np.int32)
    np.testing.assert_array_equal(out, ref)


def test_qualifiers_device_functions_and_arch(mode):
    rng = np.random.default_rng(5)
    x = rng.integers(-1000, 1000, (3, 128)).astype(np.int32)
    out = poison((3, 128, 4), np.int32)
    features(mode).get_function("qualifiers")(3, 128, (x, out))
    v = np.roll(x, -1, axis=1)
    np.testing.assert_array_equal(out[..., 0], 2 * v + 1)
    np.testing.assert_array_equal(out[..., 1], v * v)
    np.testing.assert_array_equal(out[..., 2], np.broadcast_to(x.max(1, keepdims=True), (3, 128)))
    np.testing.assert_array_equal(out[..., 3], 1)  # __CUDA_ARCH__ undefined, CUCONV_EMULATOR defined


def test_scalar_parameters(mode):
    out = poison(14, np.float64)
    pair = np.array([(1.5, -2.25)], dtype=[("x", np.float32), ("y", np.float32)])[0]
    args = (np.int8(-5), np.uint8(250), np.int16(-30000), np.uint16(60000), np.int32(-7), np.uint32(4000000000),
            np.int64(-(2**40)), np.uint64(2**63), np.float32(0.1), np.float64(1e300), np.bool_(True), pair, out)
    features(mode).get_function("scalars")(1, 32, args)
    ref = [-5, 250, -30000, 60000, -7, 4000000000, -(2**40), 2.0**63, np.float32(0.1), 1e300, 1, 1.5, -2.25,
           -7 * 3000000000]
    np.testing.assert_array_equal(out, np.array(ref, np.float64))


def test_sgemm_tiled(mode):
    rng = np.random.default_rng(16)
    M, N, K = 37, 45, 33
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = poison((M, N), np.float32)
    features(mode).get_function("sgemm_tiled<16>")((-(-N // 16), -(-M // 16)), (16, 16),
                                                    (A, B, C, np.int32(M), np.int32(N), np.int32(K)))
    assert rel_err(C, A.astype(np.float64) @ B) < 1e-6


def test_printf(mode, capsys):
    features(mode).get_function("hello")(3, 32, (np.int32(40),))
    lines = sorted(capsys.readouterr().out.splitlines())
    assert lines == [f"hello from block {b}: {40 + b}" for b in range(3)]


# --- numeric.cu: vector types, math, conversions, bits, atomics -----------------------------------

def numeric(mode):
    return load("numeric.cu", mode)


def test_vector_type_layout(mode):
    out = poison(32, np.int32)
    numeric(mode).get_function("vector_layout")(1, 32, (out,))
    ref = [2, 2, 4, 4, 3, 1, 4, 4, 8, 8, 8, 8, 12, 4, 16, 16, 16, 16, 8, 8, 12, 4, 16, 16, 16, 16, 16, 16,
           12, 4, 12, 4]
    np.testing.assert_array_equal(out, ref)


def test_vectors_ldg_make(mode):
    rng = np.random.default_rng(6)
    n4 = 45
    x = rng.standard_normal(4 * n4).astype(np.float32)
    out = poison(5 * n4, np.float32)
    numeric(mode).get_function("vectors")(2, 32, (x, out, np.int32(n4)))
    v = x.reshape(n4, 4)
    ref = np.stack([v[:, 3], v[:, 2] * 2, v[:, 1] + 1, v[:, 0]], 1).ravel()
    np.testing.assert_array_equal(out[:4 * n4], ref)
    np.testing.assert_array_equal(out[4 * n4:], np.arange(n4) + 1.5 + 4)


def test_math_functions(mode):
    import math
    rng = np.random.default_rng(7)
    n = 77
    a = rng.uniform(0.1, 4, n).astype(np.float32)
    b = rng.uniform(-3, 3, n).astype(np.float32)
    out = poison((20, n), np.float32)
    numeric(mode).get_function("math_f32")(3, 32, (a, b, out, np.int32(n)))
    A, B = a.astype(np.float64), b.astype(np.float64)
    erf = np.vectorize(math.erf)
    ref = [np.exp(B), np.exp(B), np.log(A), np.log(A), np.sqrt(A), 1 / np.sqrt(A), np.maximum(A, B),
           np.minimum(A, B), A * B + 0.5, A * B - 0.25, B / A, np.clip(B, 0, 1), np.tanh(B),
           np.sin(B) + np.cos(B), A ** B, np.abs(B) + np.floor(B) + np.ceil(A) + np.trunc(B) + np.floor(A + 0.5),
           np.abs(A - B), erf(B) + np.expm1(B * 0.1) + np.log1p(A), 1 / A + np.sqrt(A) + (A + B) * (A * B),
           np.full(n, 4.0)]
    for k, r in enumerate(ref):
        assert rel_err(out[k], r) < 2e-6, f"row {k}"


def test_conversions(mode):
    rng = np.random.default_rng(8)
    special = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e10, -1e10, np.nan, np.inf, -np.inf, 3.7, -3.7, 0.0, -0.0,
               2147483520.0, -2147483648.0, 4294967040.0, 1e-30]
    x = np.concatenate([special, rng.uniform(-1e4, 1e4, 45)]).astype(np.float32)
    n = len(x)
    out = poison((n, 8), np.int32)
    numeric(mode).get_function("conversions")(3, 32, (x, out, np.int32(n)))

    def sat(v, lo=-2**31, hi=2**31 - 1):
        v = np.where(np.isnan(v), 0, v)
        return np.clip(v, lo, hi).astype(np.int64)
    X = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        rz = sat(np.trunc(X))
        ref = np.stack([sat(np.rint(X)), rz, sat(np.ceil(X)), sat(np.floor(X)),
                        sat(np.rint(X), 0, 2**32 - 1).astype(np.uint32).view(np.int32).astype(np.int64),
                        x.view(np.int32), np.ones(n), rz.astype(np.float32).view(np.int32)], 1)
    np.testing.assert_array_equal(out, ref.astype(np.int32))


def test_bit_intrinsics(mode):
    rng = np.random.default_rng(9)
    x = np.concatenate([[0, 1, 0x80000000, 0xFFFFFFFF], rng.integers(0, 2**32, 40)]).astype(np.uint32)
    n = len(x)
    out = np.full((n, 10), 0xDEADBEEF, np.uint32)
    numeric(mode).get_function("bits")(2, 32, (x, out, np.int32(n)))
    ref = np.zeros((n, 10), np.uint64)
    for i in range(n):
        v, w = int(x[i]), int(x[(i + 1) % n])
        sv, sw = (v - 2**32 if v >= 2**31 else v), (w - 2**32 if w >= 2**31 else w)
        b8 = v.to_bytes(4, "little") + w.to_bytes(4, "little")
        ref[i] = [bin(v).count("1"), 32 - v.bit_length(), (v & -v).bit_length(), int(f"{v:032b}"[::-1], 2),
                  int.from_bytes(bytes([b8[0], b8[4], b8[1], b8[5]]), "little"), (v * w) >> 32,
                  bin(v).count("1") + bin(w).count("1"), min(v, w), max(sv, sw) & 0xFFFFFFFF,
                  (((w << 32) | v) << 5 >> 32) & 0xFFFFFFFF]
    np.testing.assert_array_equal(out, ref.astype(np.uint32))


def test_atomics(mode):
    rng = np.random.default_rng(10)
    n = 1000
    keys = rng.integers(0, 1000, n).astype(np.int32)
    vals = rng.standard_normal(n).astype(np.float32)
    hist = np.zeros(16, np.int32)
    fsum = np.zeros(1, np.float32)
    dsum = np.zeros(1, np.float64)
    stats = np.array([-2**31, 2**31 - 1, 0, 0], np.int32)
    bitsout = np.array([0, 0xFFFFFFFF, 0, 0], np.uint32)
    usum = np.zeros(1, np.uint64)
    fmax = np.array([-np.inf], np.float32)
    numeric(mode).get_function("atomics")(3, 64, (keys, vals, np.int32(n), hist, fsum, dsum, stats, bitsout,
                                                   usum, fmax))
    np.testing.assert_array_equal(hist, np.bincount(keys & 15, minlength=16))
    assert rel_err(fsum, vals.astype(np.float64).sum()) < 1e-5
    assert rel_err(dsum, vals.astype(np.float64).sum()) < 1e-12
    np.testing.assert_array_equal(stats, [keys.max(), keys.min(), -keys.sum(), 12345])
    orbits = np.bitwise_or.reduce(np.left_shift(np.uint32(1), (keys & 31).astype(np.uint32)))
    np.testing.assert_array_equal(bitsout, [orbits, ~orbits & 0xFFFFFFFF, np.bitwise_xor.reduce(keys), n % 10])
    assert int(usum[0]) == (int(keys.astype(np.int64).sum()) * 1000000007) % 2**64
    assert fmax[0] == vals.max()


# --- warp.cu: shuffles, votes, masks, the generic warp collective ----------------------------------

def warp_program(mode):
    return load("warp.cu", mode)


def _lanes(block):
    t = np.arange(block)
    return t, t & 31, t - (t & 31)  # thread, lane, first thread of its warp


def test_shuffles(mode):
    rng = np.random.default_rng(11)
    nblocks, block = 2, 80
    xi = rng.integers(-10**6, 10**6, nblocks * block).astype(np.int32)
    xd = rng.standard_normal(nblocks * block)
    oi = poison((nblocks * block, 7), np.int32)
    od = poison(nblocks * block, np.float64)
    warp_program(mode).get_function("shuffles")(nblocks, block, (xi, xd, oi, od))
    for b in range(nblocks):
        t, lane, w0 = _lanes(block)
        base = b * block + w0
        v = xi[b * block:(b + 1) * block]
        seg16 = lane & ~15

        def pick(src_lane, valid=True):
            return np.where(valid, xi[np.clip(base + src_lane, 0, len(xi) - 1)], v)
        ref = np.stack([pick(3), pick((lane & ~7) + 5), pick(lane - 3, (lane & 15) >= 3),
                        pick(lane + 2, (lane & 15) + 2 < 16), pick(lane ^ 5), pick(lane ^ 1),
                        pick(seg16 + ((lane + 17) & 15))], 1)
        np.testing.assert_array_equal(oi[b * block:(b + 1) * block], ref)
        dref = np.where((lane & 15) + 1 < 16, xd[np.minimum(base + lane + 1, len(xd) - 1)],
                        xd[b * block:(b + 1) * block])
        np.testing.assert_array_equal(od[b * block:(b + 1) * block], dref)


def test_votes(mode):
    rng = np.random.default_rng(12)
    block = 80
    pred = (rng.random(block) < 0.4).astype(np.int32) * rng.integers(1, 5, block).astype(np.int32)
    pred[32:64] = 1  # an all-true warp
    out = np.full((block, 6), 0xDEADBEEF, np.uint32)
    warp_program(mode).get_function("votes")(1, block, (pred, out))
    for w0 in (0, 32, 64):
        lanes = min(32, block - w0)
        p = pred[w0:w0 + lanes]
        mask = (1 << lanes) - 1
        ballot = sum(1 << i for i in range(lanes) if p[i])
        for i in range(lanes):
            match = sum(1 << j for j in range(lanes) if (p[j] & 3) == (p[i] & 3))
            assert list(out[w0 + i]) == [ballot, int(ballot != 0), int(ballot == mask), mask, match, int(p.sum())]


def test_warp_sum(mode):
    rng = np.random.default_rng(13)
    x = rng.standard_normal(4 * 64).astype(np.float32)
    out = poison(8, np.float32)
    warp_program(mode).get_function("warp_sum")(4, 64, (x, out))
    assert rel_err(out, x.astype(np.float64).reshape(8, 32).sum(1)) < 1e-6


def test_split_masks(mode):
    rng = np.random.default_rng(14)
    x = rng.integers(0, 1000, 128).astype(np.int32)
    out = poison(128, np.int32)
    warp_program(mode).get_function("split_masks")(2, 64, (x, out))
    ref = np.empty(128, np.int64)
    for w0 in range(0, 128, 32):
        hi = x[w0 + 16:w0 + 32]
        ballot = sum(1 << (16 + i) for i in range(16) if hi[i] & 1)
        ref[w0:w0 + 16] = x[w0 + 3]
        ref[w0 + 16:w0 + 32] = (int(x[w0 + 20]) + ballot) & 0xFFFFFFFF
    np.testing.assert_array_equal(out.view(np.uint32), ref.astype(np.uint32))


def test_generic_warp_collective(mode):
    rng = np.random.default_rng(15)
    x = rng.integers(-100, 100, 2 * 96).astype(np.int32)
    out = poison(2 * 96, np.int32)
    serials = np.zeros(2, np.uint64)
    fn = warp_program(mode).get_function("collective")
    fn(2, 96, (x, out, serials))
    ref = np.repeat(x.reshape(6, 32).sum(1), 32) * np.tile(np.arange(32), 6)
    np.testing.assert_array_equal(out, ref)
    first = serials.copy()
    assert first[0] != first[1]
    fn(2, 96, (x, out, serials))
    assert not set(serials) & set(first)  # every block of every launch has its own serial
    x[40] = 12345  # block 0, warp 1, lane 8
    with pytest.raises(emu.KernelFault, match="lane 8 of warp 1 got the magic value") as ei:
        fn(2, 96, (x, out, serials))
    assert ei.value.block == (0, 0, 0) and ei.value.thread == (40, 0, 0)


# --- planted bugs (bugs.cu) -------------------------------------------------------------------------

def bugs(sanitize="", order="forward", timeout=None):
    return _module("bugs.cu", sanitize, order, timeout=timeout)


def line_of(snippet: str, program: str = "bugs.cu") -> int:
    """1-based line of the first line of `program` containing `snippet`."""
    lines = (PROGRAMS / program).read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if snippet in line)


def _assert_located(e, kernel, block=(0, 0, 0), thread=None):
    assert e.kernel == kernel
    assert e.block == block
    if thread is not None:
        assert e.thread == thread


def test_oob_global_write_is_caught():
    out = poison(50, np.float32)
    with pytest.raises(emu.KernelFault, match="heap-buffer-overflow") as ei:
        bugs(SANITIZE).get_function("oob_write")(2, 32, (out, np.int32(50)))
    _assert_located(ei.value, "oob_write", (1, 0, 0), (18, 0, 0))  # element 50 = block 1, thread 18
    assert f"bugs.cu:{line_of('out[i] = (float)n;')}" in ei.value.report


def test_oob_read_before_array_is_caught():
    x = np.random.default_rng(20).standard_normal(32).astype(np.float32)
    with pytest.raises(emu.KernelFault, match="heap-buffer-overflow") as ei:
        bugs(SANITIZE).get_function("oob_read_before")(1, 32, (x, poison(32, np.float32)))
    _assert_located(ei.value, "oob_read_before", (0, 0, 0), (0, 0, 0))


def test_misaligned_float4_load_is_caught():
    x = np.random.default_rng(21).standard_normal(32).astype(np.float32)
    with pytest.raises(emu.KernelFault, match="misaligned address .* float4.* 16 byte alignment") as ei:
        bugs(SANITIZE).get_function("misaligned_float4")(1, 4, (x, poison(4, np.float32)))
    _assert_located(ei.value, "misaligned_float4", (0, 0, 0), (0, 0, 0))


def test_misaligned_view_is_caught():
    """A view one element into an array keeps its misalignment in the emulator."""
    base = np.random.default_rng(22).standard_normal(64).astype(np.float32)
    assert base.__array_interface__["data"][0] % 16 == 0
    fn = bugs(SANITIZE).get_function("misaligned_float4")
    out = poison(4, np.float32)
    fn(1, 4, (base[3:], out))  # the kernel's x + 1 is base + 4 floats: 16-byte aligned, fine
    np.testing.assert_allclose(out, base[4:20].reshape(4, 4).sum(1), rtol=1e-6)
    with pytest.raises(emu.KernelFault, match="misaligned"):
        fn(1, 4, (base[2:], poison(4, np.float32)))


def test_static_shared_overrun_is_caught():
    with pytest.raises(emu.KernelFault, match=r"index 32 out of bounds for type 'float \[32\]'") as ei:
        bugs(SANITIZE).get_function("static_shared_overrun")(1, 64, (poison(64, np.float32),))
    _assert_located(ei.value, "static_shared_overrun", (0, 0, 0), (32, 0, 0))


def test_dynamic_shared_overrun_past_shared_mem_is_caught():
    fn = bugs(SANITIZE).get_function("dynamic_shared_overrun")
    out = poison(64, np.float32)
    fn(1, 64, (out,), shared_mem=64 * 4)  # enough: runs clean
    np.testing.assert_array_equal(out, np.arange(64)[::-1])
    with pytest.raises(emu.KernelFault, match="AddressSanitizer") as ei:
        fn(1, 64, (poison(64, np.float32),), shared_mem=32 * 4 + 4)
    _assert_located(ei.value, "dynamic_shared_overrun", (0, 0, 0), (33, 0, 0))


def test_missing_barrier_wrong_under_reverse_right_under_forward():
    rng = np.random.default_rng(23)

    def run(order):
        x = rng.standard_normal(2 * 128).astype(np.float32)
        out = poison(2 * 128, np.float32)
        bugs("", order).get_function("missing_barrier")(2, 128, (x, out))
        ref = np.concatenate([[0], x[:127], [0], x[128:255]])
        return out, ref
    out, ref = run("forward")
    np.testing.assert_array_equal(out, ref)  # forward order hides the race
    out, ref = run("reverse")
    assert np.count_nonzero(out != ref) > 100  # reverse order exposes it


def _barrier_line(kernel: str, nth: int = 1) -> int:
    """Line of the nth __syncthreads() after the definition of `kernel` in bugs.cu."""
    start = line_of(f"void {kernel}(")
    lines = (PROGRAMS / "bugs.cu").read_text().splitlines()
    hits = [i + 1 for i in range(start, len(lines)) if "__syncthreads();" in lines[i]]
    return hits[nth - 1]


def test_missing_barrier_is_a_data_race_under_tsan():
    """sanitize="thread": each CUDA thread is a TSan thread, barriers order them, so the
    missing __syncthreads is a race report whatever the order, and a correct kernel passes."""
    rng = np.random.default_rng(24)
    x = rng.standard_normal(2 * 128).astype(np.float32)
    out = poison(2 * 128, np.float32)
    m = bugs("thread")
    m.get_function("divergent_barrier_exit")(2, 128, (x, out, np.int32(256)))  # has its barrier: no report
    np.testing.assert_array_equal(out, x.reshape(2, 128)[:, ::-1].ravel())
    with pytest.raises(emu.KernelFault, match=rf"data race .*bugs.cu:{line_of('t > 0 ? s[t - 1]')}") as ei:
        m.get_function("missing_barrier")(2, 128, (x, poison(2 * 128, np.float32)))
    _assert_located(ei.value, "missing_barrier", (0, 0, 0), (1, 0, 0))  # thread 1 reads what thread 0 wrote
    assert "thread (0,0,0) of block (0,0,0)" in ei.value.report
    # A launch abandoned mid-block leaves no false report behind.
    with pytest.raises(emu.BarrierDivergence):
        m.get_function("divergent_barrier_exit")(2, 128, (x, poison(256, np.float32), np.int32(200)))
    out = poison(2 * 128, np.float32)
    m.get_function("divergent_barrier_exit")(2, 128, (x, out, np.int32(256)))
    np.testing.assert_array_equal(out, x.reshape(2, 128)[:, ::-1].ravel())


def test_divergent_barrier_after_early_exit():
    x = np.ones(200, np.float32)
    line = _barrier_line("divergent_barrier_exit")
    with pytest.raises(emu.BarrierDivergence, match=rf"thread \(72,0,0\) exited.*__syncthreads\(\) at bugs.cu:{line}"):
        bugs().get_function("divergent_barrier_exit")(2, 128, (x, poison(200, np.float32), np.int32(200)))


def test_divergent_barrier_in_branches():
    first = _barrier_line("divergent_barrier_branches")
    second = _barrier_line("divergent_barrier_branches", 2)
    expected = rf"bugs.cu:{second} while thread \(0,0,0\) waits at .*bugs.cu:{first}"
    with pytest.raises(emu.BarrierDivergence, match=expected):
        bugs("", "forward").get_function("divergent_barrier_branches")(1, 32, (poison(32, np.float32),))
    with pytest.raises(emu.BarrierDivergence):
        bugs("", "reverse").get_function("divergent_barrier_branches")(1, 32, (poison(32, np.float32),))


def test_deadlock_is_reported():
    with pytest.raises(emu.BarrierDivergence, match=r"deadlock.*16 thread\(s\) wait at __shfl_sync\(\).*"
                                                   r"16 thread\(s\) wait at __syncthreads\(\)"):
        bugs().get_function("deadlock")(1, 32, (poison(32, np.float32),))


def test_undefined_sanitizer_alone():
    code = ('extern "C" __global__ void k(const float* x, float* y) {\n'
            '    y[threadIdx.x] = reinterpret_cast<const double*>(x + 1)[threadIdx.x];\n}\n')
    fn = emu.RawKernel(code, "k", sanitize="undefined", source_name="ub.cu")
    x = np.arange(16, dtype=np.float32)
    with pytest.raises(emu.KernelFault, match=r"ub.cu:2:.*misaligned address.*double") as ei:
        fn(1, 2, (x, poison(2, np.float32)))
    assert ei.value.thread == (0, 0, 0)


def test_shuffle_with_exited_lane():
    x = np.ones(32, np.float32)
    with pytest.raises(emu.BarrierDivergence, match="exited"):
        bugs().get_function("shuffle_exited_lane")(1, 32, (x, poison(32, np.float32), np.int32(20)))


@pytest.mark.parametrize("sanitize", ["", SANITIZE], ids=["plain", "sanitized"])
def test_endless_kernel_times_out(sanitize):
    t0 = time.monotonic()
    with pytest.raises(emu.KernelTimeout, match="did not finish within 1 s") as ei:
        bugs(sanitize, timeout=1.0).get_function("endless")(1, 4, (np.zeros(1, np.int32),))
    assert time.monotonic() - t0 < 30
    _assert_located(ei.value, "endless", (0, 0, 0))
    # The worker was replaced: the next launch works.
    out = poison(200, np.float32)
    bugs(sanitize).get_function("divergent_barrier_exit")(1, 128, (np.ones(128, np.float32), out, np.int32(128)))
    np.testing.assert_array_equal(out[:128], 1)


def test_wild_pointer_segfault_does_not_kill_python():
    with pytest.raises(emu.KernelFault, match="SIGSEGV") as ei:
        bugs().get_function("wild_pointer")(1, 4, (poison(4, np.float32),))
    _assert_located(ei.value, "wild_pointer", (0, 0, 0), (0, 0, 0))


def test_failed_assert():
    x = np.array([3, 1, -1, 2], np.int32)
    with pytest.raises(emu.KernelFault, match=r"Assertion .x\[threadIdx.x\] >= 0. failed") as ei:
        bugs().get_function("asserts")(1, 4, (x,))
    _assert_located(ei.value, "asserts", (0, 0, 0), (2, 0, 0))


def test_stack_overflow():
    with pytest.raises(emu.KernelFault, match="stack overflow") as ei:
        bugs().get_function("stack_overflow")(1, 2, (poison(2, np.int32),))
    _assert_located(ei.value, "stack_overflow", (0, 0, 0), (0, 0, 0))


def test_trap():
    with pytest.raises(emu.KernelFault, match=r"__trap\(\) called at bugs.cu") as ei:
        bugs().get_function("traps")(1, 8, (np.int32(5),))
    _assert_located(ei.value, "traps", (0, 0, 0), (5, 0, 0))


# --- argument checking ------------------------------------------------------------------------------

def test_wrong_scalar_type_names_parameter():
    fn = bugs().get_function("oob_write")
    out = poison(64, np.float32)
    with pytest.raises(TypeError, match=r"argument 1 \(int\) of kernel 'oob_write'.*numpy.int32.*numpy.int64"):
        fn(2, 32, (out, np.int64(64)))
    with pytest.raises(TypeError, match=r"argument 1 \(int\).*Python float \(64.0\) is ambiguous"):
        fn(2, 32, (out, 64.0))  # an int parameter given a float would truncate (a Python int converts)
    with pytest.raises(TypeError, match=r"argument 1 \(int\).*not an array"):
        fn(2, 32, (out, np.array([64], np.int32)))
    with pytest.raises(TypeError, match=r"argument 0 \(float\*\).*pointer: pass a NumPy array"):
        fn(2, 32, (np.float32(1), np.int32(64)))
    with pytest.raises(TypeError, match=r"argument 0 \(float\*\).*dtype is float64"):
        fn(2, 32, (np.zeros(64), np.int32(64)))
    assert np.isnan(out).all()  # nothing ran


def test_wrong_argument_count():
    fn = bugs().get_function("oob_write")
    with pytest.raises(TypeError, match=r"takes 2 argument\(s\) \(0: float\*, 1: int\), got 1"):
        fn(1, 32, (poison(32, np.float32),))


def test_bad_launch_configuration():
    fn = bugs().get_function("oob_write")
    args = (poison(64, np.float32), np.int32(64))
    with pytest.raises(ValueError, match="1024 threads"):
        fn(1, (32, 33), args)
    with pytest.raises(ValueError, match="grid"):
        fn((1, 0), 32, args)
    with pytest.raises(ValueError, match="shared_mem"):
        fn(1, 32, args, shared_mem=300000)
    with pytest.raises(ValueError, match="C-contiguous"):
        fn(1, 32, (poison((8, 16), np.float32)[:, ::2], np.int32(64)))


def test_unknown_option_and_kernel():
    with pytest.raises(ValueError, match="unknown compile option '--frobnicate'"):
        emu.RawModule(code="", options=("--frobnicate",))
    with pytest.raises(emu.CompileError, match="no_such_kernel"):
        bugs().get_function("no_such_kernel")


def test_compile_error_names_line():
    code = "extern \"C\" __global__ void k(float* x) {\n    x[0] = undeclared_thing;\n}\n"
    with pytest.raises(emu.CompileError, match=r"broken.cu:2:12: error: 'undeclared_thing' was not declared"):
        emu.RawModule(code=code, source_name="broken.cu").compile()


# --- half.cu: __half, __half2, bfloat16, wmma ---------------------------------------------------------

def half_program(mode):
    return load("half.cu", mode)


def _f16_directed(x: np.ndarray, mode: str) -> np.ndarray:
    """float32 -> float16 rounded toward zero / up / down, from NumPy's nearest rounding."""
    h = x.astype(np.float16)
    back = h.astype(np.float32)
    with np.errstate(invalid="ignore"):
        if mode == "rz":
            step = np.abs(back) > np.abs(x)
            h = np.where(step, np.nextafter(h, np.float16(0)), h)
        elif mode == "ru":
            h = np.where(back < x, np.nextafter(h, np.float16(np.inf)), h)
        elif mode == "rd":
            h = np.where(back > x, np.nextafter(h, np.float16(-np.inf)), h)
    return h.astype(np.float16)


def test_half(mode):
    rng = np.random.default_rng(30)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65520.0, 65519.99, 1e6, -1e6, 5.960464477539063e-08,
                        2.9802322387695312e-08, 2.98023259e-08, 6.1035156e-05, 6.1e-05, 1.00048828125,
                        1.00146484375, -2.5, 3.0e-6, np.inf, -np.inf], np.float32)
    # Random bit patterns cover every binade, subnormals and ties.
    bits = rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32)
    rnd = bits.view(np.float32)
    rnd = rnd[np.isfinite(rnd) & (np.abs(rnd) < 7e4)]
    ties = (rng.integers(-2**14, 2**14, 40) * 2 + 1).astype(np.float32) * np.float32(2.0**-11)  # exact half-ulp
    x = np.concatenate([special, rnd, ties, rng.standard_normal(40).astype(np.float32) * 100])
    n = len(x)
    a = rng.standard_normal(n).astype(np.float16)
    b = (rng.standard_normal(n) * 4).astype(np.float16)
    out_h = poison((n, 10), np.float16)
    out_f = poison((n, 2), np.float32)
    half_program(mode).get_function("half_ops")(-(-n // 64), 64, (x, a, b, out_h, out_f, np.int32(n)))
    with np.errstate(over="ignore"):
        _check_half(x, a, b, out_h, out_f)


def _check_half(x, a, b, out_h, out_f):
    rn = x.astype(np.float16)
    A, B = a.astype(np.float32), b.astype(np.float32)
    ref = [rn, rn, _f16_directed(x, "rz"), _f16_directed(x, "ru"), _f16_directed(x, "rd"), (A + B).astype(np.float16),
           (A * B).astype(np.float16),
           (A.astype(np.float64) * B + rn.astype(np.float64)).astype(np.float16),
           (A - (B * A).astype(np.float16).astype(np.float32)).astype(np.float16),
           ((A * 2).astype(np.float16).astype(np.float32) + (B * 2).astype(np.float16).astype(np.float32))
           .astype(np.float16)]
    for k, r in enumerate(ref):
        np.testing.assert_array_equal(out_h[:, k].view(np.uint16), r.view(np.uint16), err_msg=f"column {k}")
    fma = (A.astype(np.float64) * A + A).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out_f[:, 0], A)
    np.testing.assert_array_equal(out_f[:, 1], fma + (B + B).astype(np.float16).astype(np.float32))


def test_bfloat16(mode):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(31)
    bits = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], [0.0, 1.0, 1.00390625, 1.01171875, -3.0e38, 3.4e38]]).astype(np.float32)
    n = len(x)
    out = np.full((n, 3), 0xFFFF, np.uint16)
    half_program(mode).get_function("bf16_ops")(-(-n // 64), 64, (x, out.view(bf16), np.int32(n)))
    h = x.astype(bf16)
    hf = h.astype(np.float32)
    with np.errstate(over="ignore"):
        ref = np.stack([h, (hf * 3).astype(bf16), (hf * hf).astype(bf16)], 1)
    np.testing.assert_array_equal(out, ref.view(np.uint16))


def test_wmma(mode):
    rng = np.random.default_rng(32)
    M, N, K = 48, 32, 64
    A = rng.standard_normal((M, K)).astype(np.float16)
    Bt = rng.standard_normal((N, K)).astype(np.float16)  # B column-major = B^T row-major
    C = rng.standard_normal((M, N)).astype(np.float32)
    beta = np.float32(0.5)
    ref = A.astype(np.float64) @ Bt.astype(np.float64).T + 0.5 * C.astype(np.float64)
    tiles = (M // 16) * (N // 16)
    half_program(mode).get_function("wmma_gemm")(-(-tiles // 4), 128, (A, Bt, C, np.int32(M), np.int32(N),
                                                                        np.int32(K), beta))
    assert rel_err(C, ref) < 1e-6


# --- fibers: the ucontext fallback ---------------------------------------------------------------------

def test_ucontext_fallback_when_boost_is_missing(tmp_path):
    """With a compiler that cannot link boost.context the emulator warns and runs on
    ucontext fibers, still passing a barrier-and-shuffle kernel in reverse order."""
    fake = tmp_path / "gxx-without-boost"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in *boost_context*) exit 1;; esac; done\n'
                    'exec g++ "$@"\n')
    fake.chmod(0o755)
    script = textwrap.dedent("""
        import warnings, numpy as np
        from cuconv import emulator as emu
        code = open(%r).read()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = emu.RawModule(code=code, order="reverse").compile()
        assert any("ucontext" in str(w.message) for w in caught), [str(w.message) for w in caught]
        x = np.random.default_rng(1).standard_normal(4 * 64).astype(np.float32)
        out = np.full(8, np.nan, np.float32)
        mod.get_function("warp_sum")(4, 64, (x, out))
        err = np.abs(out - x.astype(np.float64).reshape(8, 32).sum(1)).max()
        assert err < 1e-4, err
        print("ucontext ok")
    """ % str(PROGRAMS / "warp.cu"))
    env = dict(os.environ, CUCONV_EMU_CXX=str(fake))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ucontext ok" in r.stdout
