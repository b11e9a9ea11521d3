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
