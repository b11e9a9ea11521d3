"""Small pieces shared by the backward-pass launchers (conv_dgrad, conv_wgrad,
depthwise_grad, pool_grad, tc_grad).

Each launcher keeps, per kernel, one function that computes its ``Launch``es — kernel, grid,
block, arguments and dynamic shared memory — from the problem and the array slots, and a
separate function that checks arrays. The slots are ``Ref``s when ops/grad.py builds a plan
(the public ``cuconv.grad`` API), or the arrays themselves for the internal ``*_launch(be, ...)``
entries the kernel tests call; ``run`` performs a list of launches in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import plan as _plan
from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag  # noqa: F401
from ..registry import KernelEntry, file_group, register_kernel
from . import _common

# The element types of the backward CUDA-core kernels.
DTYPES = CUDA_CORE_DTYPES
INT_MAX = INT32_MAX


_ENTRIES: dict = {}


def entry_for(file: str, expression: str) -> KernelEntry:
    """The registered entry of (file, expression)."""
    entry = _ENTRIES.get((file, expression))
    if entry is None:
        for e in file_group(file):
            _ENTRIES[(e.file, e.expression)] = e
        entry = _ENTRIES.get((file, expression))
        if entry is None:
            raise KeyError(f"no registered kernel {expression!r} in {file}")
    return entry


def Launch(file: str, expression: str, grid, block, args, shared_mem: int = 0) -> _plan.Launch:  # noqa: N802
    """A plan Launch of the registered kernel (file, expression)."""
    return _plan.Launch(entry_for(file, expression), grid, block, args, shared_mem)


def sm_count(be) -> int:
    """SMs of the backend's device (132, an H100 SXM's, on the CPU backends)."""
    return be.caps().sms


def run(be, launches) -> None:
    """Perform ``launches`` (their arguments are arrays) in order on backend ``be`` (the current
    stream on the GPU)."""
    for ln in launches:
        be.launch(ln.entry, ln.grid, ln.block, ln.args, ln.shared_mem)


def execute(be, launches, parts, env: dict) -> None:
    """Perform ``launches`` now with the arrays of ``env`` (slot -> array) and a workspace laid
    out from ``parts`` ((name, dtype, elements), as plan.layout_buffers takes them) from the
    backend's allocator: the internal ``*_launch(be, ...)`` entries."""
    buffers, nbytes = _plan.layout_buffers(*parts)
    _plan.Plan("grad", "", None, tuple(launches), tuple(env), (), workspace_bytes=nbytes,
               buffers=buffers).execute(be, env)


def check_array(be, a, what: str, shape, dtype: str):
    """``a`` must be an array of the backend with exactly ``shape`` and ``dtype`` (an input: any
    strides; the internal launchers take it contiguous, the cuconv.grad front end copies views)."""
    a = _common.as_tensor(a, what, ndim=len(shape), dtypes=(dtype,), be=be)
    if tuple(int(d) for d in a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        a = be.contiguous(a)
    return a


def check_output(be, out, what: str, shape, dtype: str, inputs=()):
    """An output array: C-contiguous, exactly ``shape`` and ``dtype``, not overlapping ``inputs``."""
    out = _common.check_out(out, shape, dtype, be, what)
    _common.check_no_overlap(out, inputs, what)
    return out


def int32_reason(p, *products) -> str | None:
    """Why ``p``'s sizes (N, C, H, W, K, R, S, P, Q and the (label, value) ``products``) do not fit
    the kernels' 32-bit ints, or None."""
    for name in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
        if getattr(p, name) > INT_MAX:
            return f"{name}={getattr(p, name)} does not fit a 32-bit int"
    for label, value in products:
        if value > INT_MAX:
            return f"{label}={value} does not fit a 32-bit int"
    return None


@dataclass(frozen=True)
class DirectConfig:
    """``<KIND>_direct<T, BLOCK>`` of ``FILE``: one thread per output element, the always-correct
    variant (conv_dgrad's dx, conv_wgrad's dW)."""
    KIND: ClassVar[str] = ""
    FILE: ClassVar[str] = ""
    dtype: str = "float32"
    block: int = 256

    @property
    def name(self) -> str:
        return f"{self.KIND}_direct_{tag(self.dtype)}_{self.block}"

    @property
    def expression(self) -> str:
        return f"{self.KIND}_direct<{ctype(self.dtype)}, {self.block}>"

    def can_implement(self, p) -> str | None:
        if p.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {p.dtype}"
        return int32_reason(p, ("R·S", p.R * p.S))

    def entry(self) -> KernelEntry:
        return KernelEntry(self.FILE, self.expression, self.name, block_threads=self.block, min_blocks_per_sm=2)


def check_dtype(dtype: str, what: str = "dtype") -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
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
