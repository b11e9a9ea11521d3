"""Small pieces shared by the backward-pass launchers (conv_dgrad, conv_wgrad,
depthwise_grad, pool_grad).

Each launcher keeps, per kernel, one function that computes a ``Launch`` — the kernel
file and name expression, grid, block, arguments and dynamic shared memory — from the
problem and the arrays, and a separate function that checks the arrays; ``run`` performs
a list of launches in order. That is the shape a plan stores (the plan layer can keep the
``Launch`` tuples with the arrays replaced by slots).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..compile import KernelEntry, register_kernel
from . import _common
from .implicit_gemm import sm_count  # noqa: F401  (SMs of the device; 132 on the emulator)

# The element types of the backward kernels: dtype name -> (C++ type, config-name tag).
CTYPES = {"float32": ("float", "f32"), "float64": ("double", "f64")}
DTYPES = tuple(CTYPES)
INT_MAX = 2 ** 31 - 1


class Launch(NamedTuple):
    file: str
    expression: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple
    shared_mem: int = 0


def ctype(dtype: str) -> str:
    return CTYPES[dtype][0]


def tag(dtype: str) -> str:
    return CTYPES[dtype][1]


def run(be, launches) -> None:
    """Perform ``launches`` in order on backend ``be`` (the current stream on the GPU)."""
    for ln in launches:
        be.launch(ln.file, ln.expression, ln.grid, ln.block, ln.args, ln.shared_mem)


def check_array(be, a, what: str, shape, dtype: str):
    """``a`` must be a C-contiguous array of the backend with exactly ``shape`` and ``dtype``."""
    a = _common.as_tensor(a, what, ndim=len(shape), dtypes=(dtype,), be=be)
    if tuple(int(d) for d in a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a


def check_output(be, out, what: str, shape, dtype: str, inputs=()):
    """An output array as ``check_array`` wants it, not overlapping any of ``inputs``."""
    out = check_array(be, out, what, shape, dtype)
    for name, a in inputs:
        if a is not None and _common._overlaps(out, a):
            raise ValueError(f"{what} overlaps {name}: the kernels read {name} while writing {what}")
    return out


def check_dtype(dtype: str, what: str = "dtype") -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in CTYPES:
        raise TypeError(f"{what} must be float32 or float64 for the backward kernels (float16 and "
                        f"bfloat16 go to the tensor-core ones), got {name}")
    return name



# --------------------------------------------------------------------------- split-K helpers
# kernels/conv_wgrad.cu's split reduction and zero fill, shared by conv_wgrad and
# depthwise_grad (both write split partials in the same [splits][n] layout).
REDUCE_FILE = "conv_wgrad.cu"
REDUCE_THREADS = 256
REDUCE_MAX_BLOCKS = 1 << 16


def reduce_name(dtype: str) -> str:
    return f"wgrad_splitk_reduce_{tag(dtype)}"


def zero_name(dtype: str) -> str:
    return f"wgrad_zero_{tag(dtype)}"


for _dt in DTYPES:
    register_kernel(KernelEntry(REDUCE_FILE, f"wgrad_splitk_reduce<{ctype(_dt)}>", reduce_name(_dt),
                                block_threads=REDUCE_THREADS, min_blocks_per_sm=4))
    register_kernel(KernelEntry(REDUCE_FILE, f"wgrad_zero<{ctype(_dt)}>", zero_name(_dt),
                                block_threads=REDUCE_THREADS, min_blocks_per_sm=4))


def splitk_reduce_launch(dtype: str, ws_w, ws_b, splits: int, n_w: int, n_b: int, dw, db) -> Launch:
    """dw[i] = Σ_z ws_w[z·n_w + i] and db[i] = Σ_z ws_b[z·n_b + i], z in order (n_b = 0: no db;
    ws_b and db are then any placeholder array)."""
    grid = _common.grid_1d(n_w + n_b, REDUCE_THREADS, REDUCE_MAX_BLOCKS)
    return Launch(REDUCE_FILE, f"wgrad_splitk_reduce<{ctype(dtype)}>", (grid, 1, 1),
                  (REDUCE_THREADS, 1, 1),
                  (ws_w, ws_b, np.int32(splits), np.int64(n_w), np.int64(n_b), dw, db))


def zero_launch(dtype: str, a, n_a: int, b, n_b: int) -> Launch:
    """a[:n_a] = 0 and b[:n_b] = 0 (the atomic variants accumulate into zeroed outputs)."""
    grid = _common.grid_1d(n_a + n_b, REDUCE_THREADS, REDUCE_MAX_BLOCKS)
    return Launch(REDUCE_FILE, f"wgrad_zero<{ctype(dtype)}>", (grid, 1, 1), (REDUCE_THREADS, 1, 1),
                  (a, np.int64(n_a), b, np.int64(n_b)))


def split_chunk(L: int, splits: int, align: int) -> tuple[int, int]:
    """(splits, chunk) covering L reduction indices with chunks that are multiples of
    ``align``, none empty: chunk = align·ceil(ceil(L / splits) / align), splits = ceil(L / chunk)."""
    splits = max(1, splits)
    chunk = -(-(-(-L // splits)) // align) * align
    return -(-L // chunk), chunk
