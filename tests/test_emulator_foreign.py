"""The emulator on CUDA written the way other people write it (issue 19): cooperative
groups, cuComplex, curand, constant memory written from the host, templates, the
headers real code includes; and the compile cache, messages and CuPy parity such
code meets. The programs are tests/emulator_programs/{coop_groups,foreign}.cu; every
output is compared with NumPy, under every thread order and under ASan+UBSan."""

from __future__ import annotations

import functools
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cuconv import emulator as emu

PROGRAMS = Path(__file__).parent / "emulator_programs"
SANITIZE = "address,undefined"
MODES = [("forward", ""), ("reverse", ""), ("random", ""), ("forward", SANITIZE)]
MODE_IDS = ["forward", "reverse", "random", "sanitized"]


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mode(request):
    return request.param


@functools.lru_cache(maxsize=None)
def _module(program: str, sanitize: str, order: str, names: tuple = (), options: tuple = (), seed: int = 3):
    return emu.RawModule(path=str(PROGRAMS / program), options=options, name_expressions=names, sanitize=sanitize,
                         order=order, seed=seed).compile()


def poison(shape, dtype) -> np.ndarray:
    a = np.empty(shape, dtype)
    a.fill(np.nan if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min + 7)
    return a


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm((out - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-300))


# --- cooperative groups ----------------------------------------------------------------------------

CG_NAMES = ("tile_ops<1>", "tile_ops<4>", "tile_ops<8>", "tile_ops<16>", "tile_ops<32>", "tile_scans<4>",
            "tile_scans<16>", "tile_scans<32>")


def cg_program(mode) -> emu.RawModule:
    order, sanitize = mode
    return _module("coop_groups.cu", sanitize, order, CG_NAMES)


def test_cg_block_reduce(mode):
    rng = np.random.default_rng(40)
    n, grid, block = 1001, 5, 96
    x = rng.standard_normal(n).astype(np.float32)
    out = poison(grid, np.float32)
    cg_program(mode).get_function("block_reduce")(grid, block, (x, out, n))  # a Python int for `int n`
    idx = np.arange(n)
    ref = np.bincount((idx % (grid * block)) // block, weights=x.astype(np.float64), minlength=grid)
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("size", [1, 4, 8, 16, 32])
def test_cg_tile_operations(mode, size):
    rng = np.random.default_rng(41 + size)
    grid, block = 3, 64
    x = rng.integers(-999, 1000, grid * block).astype(np.int32)
    out = poison((grid * block, 14), np.int32)
    cg_program(mode).get_function(f"tile_ops<{size}>")(grid, block, (x, out))
    g = np.arange(grid * block)
    t, lane = g % block, g % 32
    base = g - lane + (lane & ~(size - 1))  # global index of the tile's rank 0
    r = lane - (lane & ~(size - 1))
    tiles = x.reshape(-1, size)
    tile_of = g // size
    ref = np.zeros((grid * block, 14), np.int64)
    ref[:, 0] = r
    ref[:, 1] = size
    ref[:, 2] = t // size
    ref[:, 3] = -(-block // size)
    ref[:, 4] = x[base + (1 % size)]
    ref[:, 5] = np.where(r + 1 < size, x[np.minimum(g + 1, len(x) - 1)], x)
    ref[:, 6] = np.where(r >= 2, x[np.maximum(g - 2, 0)], x)
    ref[:, 7] = x[base + (r ^ (size // 2))]
    ref[:, 8] = (tiles > 900).any(1)[tile_of]
    ref[:, 9] = (tiles > -500).all(1)[tile_of]
    bits = (1 << np.arange(size, dtype=np.int64))
    ref[:, 10] = (((tiles & 1) != 0) * bits).sum(1)[tile_of]
    ref[:, 11] = tiles.max(1)[tile_of]
    ref[:, 12] = tiles.min(1)[tile_of]
    same = (tiles[:, :, None] & 3) == (tiles[:, None, :] & 3)  # [tile, me, other]
    ref[:, 13] = (same * bits[None, None, :]).sum(2).reshape(-1)
    np.testing.assert_array_equal(out.astype(np.int64) & 0xFFFFFFFF, ref & 0xFFFFFFFF)


def _hillis_steele(v: np.ndarray, size: int, op) -> np.ndarray:
    """CUDA's scan order (tile-wise): after step i each rank holds op(own, rank - i)."""
    t = v.reshape(-1, size).copy()
    r = np.arange(size)
    i = 1
    while i < size:
        shifted = np.concatenate([t[:, :i], t[:, :-i]], axis=1)
        t = np.where(r >= i, op(t, shifted), t)
        i *= 2
    return t.reshape(-1)


@pytest.mark.parametrize("size", [4, 16, 32])
def test_cg_tile_scans(mode, size):
    rng = np.random.default_rng(50 + size)
    grid, block = 2, 96
    n = grid * block
    x = rng.integers(-50, 50, n).astype(np.int32)
    xf = rng.standard_normal(n).astype(np.float32)
    out, outf = poison((n, 4), np.int32), poison(n, np.float32)
    cg_program(mode).get_function(f"tile_scans<{size}>")(grid, block, (x, xf, out, outf))
    t = x.reshape(-1, size).astype(np.int64)
    inc = np.cumsum(t, 1)
    run_max = np.maximum.accumulate(t, 1)
    excl_max = np.concatenate([np.zeros((t.shape[0], 1), np.int64), run_max[:, :-1]], 1)  # rank 0 gets T{}
    np.testing.assert_array_equal(out[:, 0], inc.reshape(-1))
    np.testing.assert_array_equal(out[:, 1], (inc - t).reshape(-1))
    np.testing.assert_array_equal(out[:, 2], run_max.reshape(-1))
    np.testing.assert_array_equal(out[:, 3], excl_max.reshape(-1))
    # The float sums round exactly as CUDA's order of additions does.
    np.testing.assert_array_equal(outf, _hillis_steele(xf, size, np.add))


def test_cg_coalesced_groups_in_divergent_code(mode):
    """coalesced_threads() in a branch is the lanes that took it: the programming
    guide's aggregated atomic gives each positive element its own slot."""
    rng = np.random.default_rng(43)
    n, block = 1000, 128
    x = rng.standard_normal(n).astype(np.float32)
    kept = poison(n, np.float32)
    counter = np.zeros(1, np.int32)
    info = poison((n, 4), np.int32)
    cg_program(mode).get_function("filter_positive")(-(-n // block), block, (x, kept, counter, info, np.int32(n)))
    pos = x > 0
    assert counter[0] == pos.sum()
    np.testing.assert_array_equal(np.sort(kept[:counter[0]]), np.sort(x[pos]))
    assert np.isnan(kept[counter[0]:]).all()
    for w in range(-(-n // 32)):
        lanes = np.arange(w * 32, min(n, w * 32 + 32))
        active = lanes[pos[lanes]]
        big = x[active] > 1.0
        for rank, i in enumerate(active):
            assert info[i, 0] == len(active) and info[i, 1] == rank and info[i, 3] == len(active), (i, info[i])
            assert info[i, 2] == int((big * (1 << np.arange(len(active)))).sum()), (i, info[i])
    assert (info[~pos] == np.iinfo(np.int32).min + 7).all()


def test_cg_dynamic_and_labeled_partitions(mode):
    rng = np.random.default_rng(44)
    grid, block = 2, 64
    n = grid * block
    x = rng.integers(0, 100, n).astype(np.int32)
    out = poison((n, 7), np.int32)
    cg_program(mode).get_function("dynamic_tiles")(grid, block, (x, out))
    lane = np.arange(n) % 32
    np.testing.assert_array_equal(out[:, 0], lane % 8)
    np.testing.assert_array_equal(out[:, 1], 8)
    np.testing.assert_array_equal(out[:, 2], (lane % 16) // 4)
    t16 = x.reshape(-1, 16)
    for g in range(n):
        tile = t16[g // 16]
        mates = np.flatnonzero((tile & 1) == (x[g] & 1))
        assert out[g, 3] == len(mates) and out[g, 4] == list(mates).index(g % 16) and out[g, 5] == tile[mates].sum()
    np.testing.assert_array_equal(out[:, 6], lane % 4 + 40)


@pytest.mark.parametrize("cooperative", [False, True])
def test_cg_grid_group(mode, cooperative):
    rng = np.random.default_rng(45)
    n = 5000
    x = rng.standard_normal(n)
    total = np.zeros(1)
    info = np.zeros(5, np.uint64)
    cg_program(mode).get_function("grid_stride")(3, 64, (x, total, info, n), enable_cooperative_groups=cooperative)
    assert abs(total[0] - x.sum()) < 1e-9 * np.abs(x).sum()
    np.testing.assert_array_equal(info, [192, 3, int(cooperative), 3, 2])


def test_cg_grid_sync_one_block_and_refusals():
    mod = cg_program(("random", ""))
    fn = mod.get_function("grid_sync")
    data = np.arange(64, dtype=np.int32)
    fn(1, 64, (data,), enable_cooperative_groups=True)
    first = np.arange(64) + 1
    np.testing.assert_array_equal(data, first + np.roll(first, -1))
    with pytest.raises(emu.KernelFault, match=r"grid_group::sync\(\) at coop_groups.cu:\d+ .*without a "
                                              r"cooperative launch.*enable_cooperative_groups=True"):
        fn(1, 64, (np.zeros(64, np.int32),))
    with pytest.raises(emu.KernelFault, match=r"grid-wide synchronisation of more than one block is not emulated"):
        fn(2, 64, (np.zeros(128, np.int32),), enable_cooperative_groups=True)
    # A module (or RawKernel) made with enable_cooperative_groups=True launches cooperatively.
    coop = emu.RawKernel((PROGRAMS / "coop_groups.cu").read_text(), "grid_sync", enable_cooperative_groups=True)
    data = np.arange(64, dtype=np.int32)
    coop(1, 64, (data,))
    np.testing.assert_array_equal(data, first + np.roll(first, -1))


def test_cg_memcpy_async(mode):
    rng = np.random.default_rng(46)
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    out = poison(n, np.float32)
    cg_program(mode).get_function("staged_average")(-(-n // 128), 160, (x, out, n))
    ref = (x[:-2] + x[1:-1] + x[2:]) / np.float32(3)
    np.testing.assert_array_equal(out[:-2], ref)
    assert np.isnan(out[-2:]).all()


def test_cg_tile_larger_than_a_warp_is_a_clear_compile_error():
    code = textwrap.dedent("""\
        #include <cooperative_groups.h>
        namespace cg = cooperative_groups;
        extern "C" __global__ void k(int* out) {
            auto big = cg::tiled_partition<64>(cg::this_thread_block());
            out[threadIdx.x] = big.thread_rank();
        }
        """)
    with pytest.raises(emu.CompileError, match=r"(?s)user.cu:4:\d+: error: .*Size > 32 \(a multi-warp tile.*is not "
                                               r"emulated.*\n    .*tiled_partition<64>"):
        emu.RawModule(code=code, source_name="user.cu").compile()


# --- foreign.cu: cuComplex, constant memory, templates, curand, cuda::barrier ------------------------

FOREIGN_NAMES = ("reduce_rows<float, 128, Sum<float>>", "reduce_rows<int, 64, Max<int>>",
                 "reduce_rows<double, 256, Max<double>>")


def foreign(mode, options=()) -> emu.RawModule:
    order, sanitize = mode
    return _module("foreign.cu", sanitize, order, FOREIGN_NAMES, tuple(options))


def _round(exact, dtype):
    """An exact rational rounded to the nearest float32/float64, ties to even."""
    from fractions import Fraction
    with np.errstate(over="ignore"):
        f = np.array(float(exact)).astype(dtype)  # the double is correctly rounded; float32 may round twice
    if dtype == np.float64 or not np.isfinite(f):
        return dtype(f)
    best = None
    for c in (np.nextafter(f, dtype(-np.inf)), f, np.nextafter(f, dtype(np.inf))):
        err = abs(Fraction(float(c)) - exact)
        if best is None or err < best[0] or (err == best[0] and int(c.view(np.uint32)) % 2 == 0):
            best = (err, c)
    return dtype(best[1])


def _fma(a, b, c, dtype):
    """Elementwise fused multiply-add rounded once, as the GPU's FFMA/DFMA."""
    from fractions import Fraction
    a, b, c = (np.broadcast_to(np.asarray(v, dtype), np.broadcast(a, b, c).shape) for v in (a, b, c))
    out = np.empty(a.shape, dtype)
    for i in np.ndindex(a.shape):
        if not (np.isfinite(a[i]) and np.isfinite(b[i]) and np.isfinite(c[i])):
            with np.errstate(all="ignore"):
                out[i] = dtype(np.float64(a[i]) * np.float64(b[i]) + np.float64(c[i]))  # inf/nan propagate
            continue
        out[i] = _round(Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i])), dtype)
    return out


def _complex_reference(x, y, dtype, fmad: bool):
    """cuComplex's formulas with the FMAs nvcc places (from the SASS of sm_80), or none (--fmad=false)."""
    xr, xi, yr, yi = x.real.astype(dtype), x.imag.astype(dtype), y.real.astype(dtype), y.imag.astype(dtype)
    one = dtype(1)
    if fmad:
        mul_sub = lambda a, b, c, d: _fma(a, b, -(c * d), dtype)  # noqa: E731
        mul_add = lambda a, b, c, d: _fma(a, b, c * d, dtype)  # noqa: E731
        fma = lambda a, b, c: _fma(a, b, c, dtype)  # noqa: E731
    else:
        mul_sub = lambda a, b, c, d: a * b - c * d  # noqa: E731
        mul_add = lambda a, b, c, d: a * b + c * d  # noqa: E731
        fma = lambda a, b, c: a * b + c  # noqa: E731
    mul = (mul_sub(xr, yr, xi, yi), mul_add(xr, yi, xi, yr))
    s = np.abs(yr) + np.abs(yi)
    oos = one / s
    ars, ais, brs, bis = xr * oos, xi * oos, yr * oos, yi * oos
    oos2 = one / mul_add(brs, brs, bis, bis)
    div = (mul_add(ars, brs, ais, bis) * oos2, mul_sub(ais, brs, ars, bis) * oos2)
    a, b = np.abs(xr), np.abs(xi)
    v, w = np.maximum(a, b), np.minimum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = v * np.sqrt(fma(w / v, w / v, one))
    big = np.finfo(dtype).max
    mag = np.where((v == 0) | (v > big) | (w > big), v + w, t)
    return mul, div, mag, fma


def _pack(re, im, dtype):
    out = np.empty(re.shape + (2,), dtype)
    out[..., 0], out[..., 1] = re, im
    return out.view(np.complex64 if dtype == np.float32 else np.complex128)[..., 0]


@pytest.mark.parametrize("fmad", [True, False], ids=["fmad", "no-fmad"])
def test_cucomplex_float_matches_the_gpu_formulas(mode, fmad):
    rng = np.random.default_rng(60)
    n = 200
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    b = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    a[:3] = [0, 3e38 + 3e38j, 1e-30 + 2e-30j]  # cuCabsf's zero, overflow-avoiding and tiny cases
    out = np.full((n, 6), np.nan, np.complex64)
    mag = poison(n, np.float32)
    mod = foreign(mode, () if fmad else ("--fmad=false",))
    mod.get_function("complex_ops")(-(-n // 64), 64, (a, b, out, mag, n))
    with np.errstate(over="ignore", invalid="ignore"):
        mul, div, ref_mag, fma = _complex_reference(a, b, np.float32, fmad)
    f32 = np.float32
    xr, xi, yr, yi = a.real, a.imag, b.real, b.imag
    with np.errstate(over="ignore", invalid="ignore"):
        cfma = (fma(-xi, yi, fma(xr, yr, yr)), fma(xi, yr, fma(xr, yi, np.ones(n, f32))))
        ref = np.stack([a + b, a - b, _pack(*mul, f32), _pack(*div, f32), np.conj(a), _pack(*cfma, f32)], 1)
    np.testing.assert_array_equal(out.view(np.uint32), ref.astype(np.complex64).view(np.uint32))
    np.testing.assert_array_equal(mag.view(np.uint32), ref_mag.astype(f32).view(np.uint32))
    assert mag[0] == 0 and np.isinf(mag[1])  # |3e38 + 3e38i| = 4.2e38 overflows float, as on the GPU
    assert abs(mag[2] - np.hypot(1e-30, 2e-30)) < 1e-6 * mag[2]  # a tiny value keeps its digits


def test_cucomplex_double_and_casts(mode):
    rng = np.random.default_rng(61)
    n = 100
    a = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    b = rng.standard_normal(n) * 100 + 1j * rng.standard_normal(n)
    out = np.full((n, 4), np.nan, np.complex128)
    mag = poison(n, np.float64)
    down = np.full(n, np.nan, np.complex64)
    foreign(mode).get_function("complex_ops_double")(2, 64, (a, b, out, mag, down, n))
    mul, div, ref_mag, fma = _complex_reference(a, b, np.float64, True)
    xr, xi, yr, yi = a.real, a.imag, b.real, b.imag
    cfma = (fma(-xi, yi, fma(xr, yr, np.full(n, 1.0))), fma(xi, yr, fma(xr, yi, np.full(n, -2.0))))
    ref = np.stack([a + b, _pack(*mul, np.float64), _pack(*div, np.float64), _pack(*cfma, np.float64)], 1)
    np.testing.assert_array_equal(out.view(np.uint64), ref.view(np.uint64))
    np.testing.assert_array_equal(mag, ref_mag)
    np.testing.assert_array_equal(down, a.astype(np.complex64))


def test_complex_scalar_by_value(mode):
    rng = np.random.default_rng(62)
    n = 77
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    y = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    y0 = y.copy()
    foreign(mode).get_function("caxpy")(2, 64, (0.5 - 2j, x, y, n))  # a Python complex for cuFloatComplex
    ref = (np.complex128(0.5 - 2j) * x + y0)
    assert np.abs(y - ref).max() < 1e-5 * np.abs(ref).max()


def test_constant_memory_written_from_the_host(mode):
    rng = np.random.default_rng(63)
    rows, width, radius = 3, 301, 4
    x = rng.standard_normal((rows, width)).astype(np.float32)
    mod = foreign(mode)
    taps = mod.get_global("c_taps")
    assert taps.shape == (17,) and taps.dtype == np.float32 and taps.flags.writeable
    assert mod.get_global("c_taps") is taps
    calls = mod.get_global("d_calls")
    calls[()] = 0
    fn = mod.get_function("conv_row")
    block = 64
    grid = (-(-width // block), rows)
    for trial in range(2):  # a second write is what the second launch sees
        w = rng.standard_normal(2 * radius + 1).astype(np.float32)
        taps[:] = 0
        taps[:len(w)] = w
        mod.get_global("c_radius")[()] = radius
        out = poison((rows, width), np.float32)
        fn(grid, block, (x, out, width), shared_mem=4 * (block + 2 * radius))
        padded = np.pad(x.astype(np.float64), ((0, 0), (radius, radius)))
        ref = sum(w[k] * padded[:, k:k + width] for k in range(len(w)))
        assert rel_err(out, ref) < 1e-6
        assert calls[()] == (trial + 1) * grid[0] * grid[1]  # the kernel's atomicAdd, read back


def test_constant_array_in_a_namespace(mode):
    mod = foreign(mode)
    wts = mod.get_global("filters::c_weights")
    assert wts.shape == (2, 3) and wts.dtype == np.float64
    wts[...] = [[2.0, 1.0, 0.5], [-1.0, 3.0, 0.25]]
    x = np.random.default_rng(64).standard_normal(50)
    out = poison(50, np.float64)
    mod.get_function("weighted_pairs")(1, 64, (x, out, 50))
    i = np.arange(50) & 1
    np.testing.assert_allclose(out, wts[i, 0] * x + wts[i, 1] + wts[1, 2], rtol=1e-15)


def test_get_global_errors_and_initial_values():
    code = 'struct P { int a; float b; };\n__constant__ int c_init[3] = {7, 8, 9};\n__device__ P params;\n' \
           'extern "C" __global__ void k(int* o) { o[threadIdx.x] = c_init[threadIdx.x] + params.a; }\n'
    mod = emu.RawModule(code=code, source_name="globals.cu")
    np.testing.assert_array_equal(mod.get_global("c_init"), [7, 8, 9])  # the source's initial values
    params = mod.get_global("params")
    assert params.dtype == np.uint8 and params.shape == (8,)  # a struct: its bytes
    params[:4] = np.frombuffer(np.int32(100).tobytes(), np.uint8)
    out = poison(3, np.int32)
    mod.get_function("k")(1, 3, (out,))
    np.testing.assert_array_equal(out, [107, 108, 109])
    with pytest.raises(emu.CompileError, match=r"no __constant__ or __device__ variable 'c_nope' in globals.cu "
                                               r"\(its variables: c_init, params\)"):
        mod.get_global("c_nope")


@pytest.mark.parametrize("name,dtype,block,op", [("reduce_rows<float, 128, Sum<float>>", np.float32, 128, "sum"),
                                                 ("reduce_rows<int, 64, Max<int>>", np.int32, 64, "max"),
                                                 ("reduce_rows<double, 256, Max<double>>", np.float64, 256, "max")])
def test_class_templates_and_functors(mode, name, dtype, block, op):
    rng = np.random.default_rng(65)
    rows, cols = 5, 1003
    x = (rng.standard_normal((rows, cols)) * 100).astype(dtype)
    out = poison(rows, dtype)
    foreign(mode).get_function(name)(rows, block, (x, out, cols))
    ref = x.astype(np.float64).sum(1) if op == "sum" else x.max(1)
    if op == "sum":
        assert rel_err(out, ref) < 1e-5
    else:
        np.testing.assert_array_equal(out, ref)


class _Xorwow:
    """cuRAND's XORWOW in Python: init, skips (as GF(2) matrix powers) and draws."""
    M32 = 0xFFFFFFFF

    @staticmethod
    def step(v):
        t = v[0] ^ (v[0] >> 2)
        return [v[1], v[2], v[3], v[4], ((v[4] ^ (v[4] << 4)) ^ (t ^ (t << 1))) & _Xorwow.M32]

    @functools.cached_property
    def matrix(self):
        m = np.zeros((160, 160), np.uint8)
        for i in range(160):
            v = [0] * 5
            v[i // 32] = 1 << (i % 32)
            w = self.step(v)
            m[:, i] = [(w[k // 32] >> (k % 32)) & 1 for k in range(160)]
        return m

    @staticmethod
    def mat_pow(m, p):
        r = np.eye(160, dtype=np.uint8)
        while p:
            if p & 1:
                r = (r.astype(np.int64) @ m) % 2
            m = (m.astype(np.int64) @ m) % 2
            p >>= 1
        return r.astype(np.uint8)

    @functools.cached_property
    def seq_matrix(self):  # M^(2^67)
        m = self.matrix
        for _ in range(67):
            m = ((m.astype(np.int64) @ m) % 2).astype(np.uint8)
        return m

    @staticmethod
    def apply(m, v):
        bits = np.array([(v[k // 32] >> (k % 32)) & 1 for k in range(160)], np.int64)
        out = (m.astype(np.int64) @ bits) % 2
        return [int(sum(int(out[32 * w + b]) << b for b in range(32))) for w in range(5)]

    def init(self, seed, subsequence, offset):
        t0 = (1099087573 * ((seed & self.M32) ^ 0xaad26b49)) & self.M32
        t1 = (2591861531 * ((seed >> 32) ^ 0xf7dcefdd)) & self.M32
        d = (6615241 + t1 + t0) & self.M32
        v = [(123456789 + t0) & self.M32, 362436069 ^ t0, (521288629 + t1) & self.M32, 88675123 ^ t1,
             (5783321 + t0) & self.M32]
        v = self.apply(self.mat_pow(self.seq_matrix, subsequence), v)
        v = self.apply(self.mat_pow(self.matrix, offset), v)
        return [(d + 362437 * offset) & self.M32, v]

    def draw(self, state):
        state[1] = self.step(state[1])
        state[0] = (state[0] + 362437) & self.M32
        return (state[1][4] + state[0]) & self.M32


def _philox(ctr, key):
    m = 0xFFFFFFFF
    c, k = list(ctr), list(key)
    for r in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & m, p1 & m, ((p0 >> 32) ^ c[3] ^ k[1]) & m, p0 & m]
        k = [(k[0] + 0x9E3779B9) & m, (k[1] + 0xBB67AE85) & m]
    return c


def test_philox_reference_matches_random123_known_answers():
    """The Python Philox4x32-10 the curand tests trust, against Random123's KAT vectors."""
    assert _philox([0, 0, 0, 0], [0, 0]) == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    assert _philox([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]


def _uniform(x: np.ndarray) -> np.ndarray:
    """cuRAND's x * 2^-32f + 2^-33f, fused."""
    c = np.float32(2.3283064e-10)
    return _fma(x.astype(np.float32), c, c / np.float32(2), np.float32)


def test_curand_xorwow_bit_exact(mode):
    seed = 0x1234_5678_9ABC
    sub = np.array([0, 0, 1, 2, 5, 1000, 65537, 0], np.uint64)
    off = np.array([0, 7, 0, 3, 100, 1, 0, 2**33 + 5], np.uint64)
    n = len(sub)
    bits, uni, normal = poison((n, 3), np.uint32), poison(n, np.float32), poison((n, 2), np.float32)
    foreign(mode).get_function("xorwow_draws")(1, 32, (seed, sub, off, bits, uni, normal, n))
    gen = _Xorwow()
    ref_bits, ref_u, ref_n = [], [], []
    for i in range(n):
        s = gen.init(seed, int(sub[i]), int(off[i]))
        ref_bits.append([gen.draw(s) for _ in range(3)])
        ref_u.append(gen.draw(s))
        x, y = gen.draw(s), gen.draw(s)
        u = float(_uniform(np.array([x]))[0])
        v = (y * 2.0**-32 + 2.0**-33) * 2 * np.pi
        ref_n.append([np.sin(v) * np.sqrt(-2 * np.log(u)), np.cos(v) * np.sqrt(-2 * np.log(u))])
    np.testing.assert_array_equal(bits, np.array(ref_bits, np.uint32))
    np.testing.assert_array_equal(uni, _uniform(np.array(ref_u, np.uint32)))
    np.testing.assert_allclose(normal, ref_n, rtol=2e-5, atol=2e-6)  # libm, not the GPU's __sincosf


def test_curand_philox_bit_exact(mode):
    seed = 0xDEADBEEF_0BADF00D
    sub = np.array([0, 1, 3, 2**40, 7, 0], np.uint64)
    off = np.array([0, 1, 6, 11, 2**35 + 2, 3], np.uint64)
    n = len(sub)
    bits, uni4, uni_d = poison((n, 6), np.uint32), poison((n, 4), np.float32), poison(n, np.float64)
    foreign(mode).get_function("philox_draws")(1, 32, (seed, sub, off, bits, uni4, uni_d, n))
    key = [seed & 0xFFFFFFFF, seed >> 32]

    def stream(sub_i, off_i, count):  # the draws from position off_i of subsequence sub_i
        out = []
        pos = off_i
        while len(out) < count:
            ctr = pos // 4 + (sub_i << 64)
            block = _philox([(ctr >> (32 * j)) & 0xFFFFFFFF for j in range(4)], key)
            out.extend(block[pos % 4:])
            pos = (pos // 4 + 1) * 4
        return out[:count]

    for i in range(n):
        draws = stream(int(sub[i]), int(off[i]), 11)
        np.testing.assert_array_equal(bits[i], draws[:6], err_msg=f"thread {i}")
        np.testing.assert_array_equal(uni4[i], _uniform(np.array(draws[6:10], np.uint32)))
        ref_d = _fma(np.float64(draws[10]), 2.3283064365386963e-10, 2.3283064365386963e-10, np.float64)
        assert uni_d[i] == ref_d


def test_curand_states_in_global_memory(mode):
    threads, draws, seed = 64, 25, 99
    states = np.zeros(threads * 48, np.uint8)  # sizeof(curandState) is 48, as in CUDA
    inside = np.zeros(1, np.uint32)
    mod = foreign(mode)
    mod.get_function("setup_states")(2, 32, (states, seed))
    mod.get_function("count_inside")(2, 32, (states, inside, draws))
    gen = _Xorwow()
    hits = 0
    for i in range(threads):
        s = gen.init(seed, i, 0)
        u = _uniform(np.array([gen.draw(s) for _ in range(2 * draws)], np.uint32)).reshape(-1, 2)
        hits += int(((u[:, 0] * u[:, 0] + u[:, 1] * u[:, 1]) <= 1).sum())
        saved = states[i * 48:(i + 1) * 48].view(np.uint32)
        assert saved[0] == s[0] and list(saved[1:6]) == s[1], i  # the state after the draws was stored
    assert inside[0] == hits


def test_cuda_barrier_split_arrive_wait(mode):
    rng = np.random.default_rng(66)
    n, block = 500, 128
    x = rng.standard_normal(n).astype(np.float32)
    out = poison(n, np.float32)
    foreign(mode).get_function("barrier_stages")(-(-n // block), block, (x, out, n))
    xp = np.zeros(-(-n // block) * block, np.float32)
    xp[:n] = x
    t = xp.reshape(-1, block)
    ref = (2 * np.roll(t, -1, axis=1) + 2 * t).reshape(-1)[:n]
    np.testing.assert_array_equal(out, ref)


def test_get_global_of_a_variable_the_scan_misses_rebuilds_for_earlier_functions():
    code = ('#define DECLARE(name) __constant__ float name[4];\nDECLARE(c_hidden)\n'
            'extern "C" __global__ void k(float* o) { o[threadIdx.x] = c_hidden[threadIdx.x] * 2; }\n')
    mod = emu.RawModule(code=code)
    fn = mod.get_function("k")  # before the rebuild get_global needs
    mod.get_global("c_hidden")[:] = [1, 2, 3, 4]
    out = poison(4, np.float32)
    fn(1, 4, (out,))
    np.testing.assert_array_equal(out, [2, 4, 6, 8])


def test_cooperative_groups_and_barriers_are_race_free_under_tsan():
    """ThreadSanitizer sees the groups' collectives and cuda::barrier as synchronisation."""
    rng = np.random.default_rng(47)
    n = 300
    x = rng.standard_normal(n).astype(np.float32)
    kept, counter, info = poison(n, np.float32), np.zeros(1, np.int32), poison((n, 4), np.int32)
    cg = _module("coop_groups.cu", "thread", "random", ())
    cg.get_function("filter_positive")(-(-n // 128), 128, (x, kept, counter, info, n))
    assert counter[0] == (x > 0).sum()
    out = poison(n, np.float32)
    cg.get_function("staged_average")(-(-n // 128), 160, (x, out, n))
    np.testing.assert_array_equal(out[:-2], (x[:-2] + x[1:-1] + x[2:]) / np.float32(3))
    out = poison(n, np.float32)
    _module("foreign.cu", "thread", "random", ()).get_function("barrier_stages")(3, 128, (x, out, n))
    assert np.isfinite(out).all()


def test_cg_labeled_partition_of_a_coalesced_group(mode):
    """The CUDA samples' multi-bucket aggregated atomics: within each bucket the slots
    handed out are exactly 0..count-1."""
    rng = np.random.default_rng(48)
    n, buckets = 2000, 5
    bucket_of = rng.integers(0, buckets + 1, n).astype(np.int32)  # bucket 5 is skipped
    slot = np.full(n, -1, np.int32)
    counters = np.zeros(buckets, np.int32)
    cg_program(mode).get_function("map_to_buckets")(3, 64, (bucket_of, slot, counters, n, buckets))
    np.testing.assert_array_equal(counters, np.bincount(bucket_of, minlength=buckets + 1)[:buckets])
    for b in range(buckets):
        np.testing.assert_array_equal(np.sort(slot[bucket_of == b]), np.arange(counters[b]))
    assert (slot[bucket_of == buckets] == -1).all()
