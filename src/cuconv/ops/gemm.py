"""``cuconv.gemm`` and the GEMM launcher behind im2col+GEMM, the 1x1 convolution and Winograd.

Layering (ATen's): ``gemm(a, b, out=None, ...)`` checks every argument and allocates;
``gemm_launch(be, a, b, c, M, N, K, ...)`` checks nothing about user input, picks a
config and launches ``kernels/gemm.cu``. Other ops call ``gemm_launch`` directly.

Configs are frozen dataclasses (``GemmConfig``) whose generated ``label`` names the kernel
in the compile matrix, the resource report, the pytest ids and the bench. ``CONFIGS`` holds
every config the op can launch (each is registered with the compile matrix at import).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import current_backend
from ..compile import KernelEntry, register_kernel
from . import _common

KERNEL_FILE = "gemm.cu"
# Sizes stay below 2**31 with a tile to spare, so the kernels' 32-bit row/column indices
# (tile origin + offset in the tile) cannot overflow.
SIZE_MAX = 2 ** 31 - 256
_GRID_YZ_MAX = 65535          # gridDim.y and gridDim.z limit; bigger grids are split into launches

# Bits of the kernels' `flags` argument (GEMM_VEC_* in gemm.cu).
VEC_A, VEC_B, VEC_C = 1, 2, 4


@dataclass(frozen=True)
class GemmConfig:
    """One instantiation of a kernel in gemm.cu.

    ``kind``: "naive" (one thread per output; ``bm``/``bn`` is the block's output tile),
    "tiled" (shared-memory tiles of ``bm`` x ``bm``, one output per thread), or "regblock"
    (``bm`` x ``bn`` block tile, ``bk`` deep K step, ``tm`` x ``tn`` register micro-tile).
    """
    kind: str
    bm: int
    bn: int
    bk: int = 1
    tm: int = 1
    tn: int = 1

    def __post_init__(self):
        if self.kind not in ("naive", "tiled", "regblock"):
            raise ValueError(f"GemmConfig.kind must be 'naive', 'tiled' or 'regblock', got {self.kind!r}")
        if self.kind == "tiled" and not (self.bm == self.bn == self.bk):
            raise ValueError(f"a tiled GemmConfig has square tiles, got {self.bm}x{self.bn}x{self.bk}")
        if self.kind == "regblock" and (self.tm % 4 or self.tn % 4 or self.bm % self.tm
                                        or self.bn % self.tn or self.bk % 4):
            raise ValueError(f"regblock GemmConfig needs tm, tn, bk multiples of 4 dividing the tile, "
                             f"got {self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}")

    @property
    def label(self) -> str:
        if self.kind == "naive":
            return f"gemm_f32_naive_{self.bm}x{self.bn}"
        if self.kind == "tiled":
            return f"gemm_f32_tiled_{self.bm}x{self.bn}x{self.bk}"
        return f"gemm_f32_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"

    @property
    def expression(self) -> str:
        if self.kind == "naive":
            return f"gemm_f32_naive<{self.bm}, {self.bn}>"
        if self.kind == "tiled":
            return f"gemm_f32_tiled<{self.bm}>"
        return f"gemm_f32_regblock<{self.bm}, {self.bn}, {self.bk}, {self.tm}, {self.tn}>"

    @property
    def threads(self) -> int:
        if self.kind == "regblock":
            return (self.bm // self.tm) * (self.bn // self.tn)
        return self.bm * self.bn

    def can_implement(self, M: int, N: int, K: int, lda: int | None = None, ldb: int | None = None,
                      ldc: int | None = None) -> str | None:
        """None if this config can compute an M x N x K GEMM with these leading dimensions, else why not.

        Every config handles every size (edges are zero-filled / guarded); the limits are
        the 32-bit sizes and leading dimensions of the kernel arguments.
        """
        lda = K if lda is None else lda
        ldb = N if ldb is None else ldb
        ldc = N if ldc is None else ldc
        for name, v in (("M", M), ("N", N), ("K", K), ("lda", lda), ("ldb", ldb), ("ldc", ldc)):
            if v < 0 or v > SIZE_MAX:
                return f"{name}={v} is outside 0..2**31-256 (the kernels index with 32-bit ints)"
        if lda < K or ldb < N or ldc < N:
            return f"leading dimensions lda={lda}, ldb={ldb}, ldc={ldc} must be >= K={K}, N={N}, N={N}"
        return None


NAIVE = GemmConfig("naive", 16, 16)
TILED = GemmConfig("tiled", 16, 16, 16)
MAIN = GemmConfig("regblock", 128, 128, 8, 8, 8)      # large problems
SMALL = GemmConfig("regblock", 64, 64, 16, 4, 4)      # few 128x128 tiles: more, smaller blocks
SKINNY = GemmConfig("regblock", 32, 128, 16, 4, 8)    # M <= 32 (few output channels per group)

CONFIGS: tuple[GemmConfig, ...] = (NAIVE, TILED, MAIN, SMALL, SKINNY)
_BY_LABEL = {c.label: c for c in CONFIGS}

for _cfg in CONFIGS:
    # Every config promises 2 resident blocks per SM: the regblock kernels are compiled with
    # __launch_bounds__(threads, 2) (so at most 128 registers at 256 threads).
    register_kernel(KernelEntry(KERNEL_FILE, _cfg.expression, _cfg.label, _cfg.threads,
                                min_blocks_per_sm=2, main=(_cfg == MAIN)))

# An SM count to size the heuristic by (an H100 SXM has 132); a guess, not a measurement.
_TYPICAL_SMS = 132


def config_by_label(label: str) -> GemmConfig:
    if label not in _BY_LABEL:
        raise ValueError(f"unknown GEMM config {label!r}; known: {', '.join(_BY_LABEL)}")
    return _BY_LABEL[label]


def choose_config(M: int, N: int, K: int, batch: int = 1) -> GemmConfig:
    """The default config for a problem (a heuristic, not yet tuned by measurement).

    * M <= 32 (a convolution with few output channels per group): 32x128 tiles, so the
      block is not 3/4 idle rows;
    * enough 128x128 tiles to give every SM of a large GPU two blocks: the 128x128 main
      config (most reuse per byte);
    * otherwise 64x64 tiles, to spread a small problem over more SMs.
    """
    if M <= 32:
        return SKINNY
    tiles = math.ceil(M / 128) * math.ceil(N / 128) * max(batch, 1)
    if tiles >= 2 * _TYPICAL_SMS:
        return MAIN
    return SMALL


def _data_ptr(a) -> int:
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return int(a.data.ptr)


def _aligned16(a) -> bool:
    return _data_ptr(a) % 16 == 0


def vector_flags(a, b, c, residual, lda, ldb, ldc, stride_a, stride_b, stride_c) -> int:
    """Which operands allow 16-byte accesses: every row start of every batch 16-byte aligned."""
    flags = 0
    if _aligned16(a) and lda % 4 == 0 and stride_a % 4 == 0:
        flags |= VEC_A
    if _aligned16(b) and ldb % 4 == 0 and stride_b % 4 == 0:
        flags |= VEC_B
    if (_aligned16(c) and (residual is None or _aligned16(residual))
            and ldc % 4 == 0 and stride_c % 4 == 0):
        flags |= VEC_C
    return flags


def gemm_launch(be, a, b, c, M, N, K, *, lda=None, ldb=None, ldc=None, batch=1, stride_a=0,
                stride_b=0, stride_c=0, bias=None, act=0, residual=None, config=None,
                stride_bias=0) -> None:
    """C[i] = act(A[i] · B[i] + bias[i·stride_bias + m] + residual[i]) for i < batch (internal).

    ``a``, ``b``, ``c`` (and ``bias``, ``residual``) are arrays of the backend whose first
    element is the first matrix's (0, 0) (a flat view at an offset works); row-major with
    leading dimensions ``lda``/``ldb``/``ldc`` (default K, N, N) and element strides between
    batch matrices (0 broadcasts). ``residual`` has C's layout. ``act`` is an activation code
    (``_common.activation_code``). ``config``: a GemmConfig, a label, or None (heuristic).
    Checks nothing about the user's input; queues the kernel(s) on the current stream.
    """
    lda = K if lda is None else int(lda)
    ldb = N if ldb is None else int(ldb)
    ldc = N if ldc is None else int(ldc)
    M, N, K, batch = int(M), int(N), int(K), int(batch)
    if M == 0 or N == 0 or batch == 0:
        return
    if config is None:
        cfg = choose_config(M, N, K, batch)
    elif isinstance(config, str):
        cfg = config_by_label(config)
    else:
        cfg = config
    flags = vector_flags(a, b, c, residual, lda, ldb, ldc, stride_a, stride_b, stride_c)
    has_bias, has_res = bias is not None, residual is not None
    bias_arg = bias if has_bias else _common.placeholder(be, "float32")
    res_arg = residual if has_res else _common.placeholder(be, "float32")
    i32, i64 = _common.i32, _common.i64
    grid_x = math.ceil(N / cfg.bn)
    tiles_m = math.ceil(M / cfg.bm)
    for m_block0 in range(0, tiles_m, _GRID_YZ_MAX):
        for batch0 in range(0, batch, _GRID_YZ_MAX):
            grid = (grid_x, min(_GRID_YZ_MAX, tiles_m - m_block0), min(_GRID_YZ_MAX, batch - batch0))
            args = (a, b, c, i32(M), i32(N), i32(K), i32(lda), i32(ldb), i32(ldc),
                    i64(stride_a), i64(stride_b), i64(stride_c),
                    bias_arg, i32(has_bias), i64(stride_bias), res_arg, i32(has_res), i32(act),
                    i32(flags), i32(m_block0), i32(batch0))
            be.launch(KERNEL_FILE, cfg.expression, grid, (cfg.threads, 1, 1), args)


def _resolve_config(config) -> GemmConfig | None:
    if config is None or isinstance(config, GemmConfig):
        return config
    if isinstance(config, str):
        return config_by_label(config)
    raise TypeError(f"config must be None, a GemmConfig or a config label, got {type(config).__name__}")


def gemm(a, b, out=None, *, bias=None, activation=None, residual=None, config=None, allow_tf32=False):
    """``out = activation(a @ b + bias[:, None] + residual)``.

    float32 runs on the CUDA cores (the kernels of gemm.cu) unless ``allow_tf32=True``;
    float16 / bfloat16 (and float32 with ``allow_tf32=True``) run on the tensor cores
    (``cuconv.ops.tensor_core.tc_gemm``, fp32 accumulation, output in the input dtype).

    ``a``: (M, K) or (batch, M, K); ``b``: (K, N) or (batch, K, N); a 2-D operand is
    broadcast over the other's batch. ``bias``: (M,), added to every row m (per output
    channel, as in a convolution). ``residual``: the output's shape. ``activation``: None,
    "relu", "relu6" or "silu". ``config``: a ``GemmConfig`` or its label (default: a
    heuristic). Returns ``out`` ((M, N) or (batch, M, N)), allocated when None, on the
    current backend; queued on CuPy's current stream without synchronizing.
    """
    be = current_backend()
    dt = np.dtype(getattr(a, "dtype", np.float32)).name
    if dt in ("float16", "bfloat16") or (dt == "float32" and allow_tf32):
        from .tensor_core import tc_gemm  # noqa: PLC0415
        if config is not None:
            raise TypeError("config= names a gemm.cu config; the tensor-core GEMM picks its own "
                            "(call cuconv.ops.tensor_core.tc_gemm(..., config=) to choose one)")
        return tc_gemm(a, b, out, bias=bias, activation=activation, residual=residual,
                       allow_tf32=bool(allow_tf32))
    a = _common.as_tensor(a, "a", None, ("float32",), be)
    b = _common.as_tensor(b, "b", None, ("float32",), be)
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"a and b must be 2-D (M, K), (K, N) or 3-D batched, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    M, K = a.shape[-2:]
    K2, N = b.shape[-2:]
    if K != K2:
        raise ValueError(f"a's last dimension must equal b's second-to-last (the K of a @ b), "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    batched = a.ndim == 3 or b.ndim == 3
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else 1)
    for name, v in (("M", M), ("N", N), ("K", K)):
        if v > SIZE_MAX:
            raise ValueError(f"{name}={v} is larger than 2**31-256, the kernels' 32-bit index range "
                             f"(a {tuple(a.shape)}, b {tuple(b.shape)})")
    out_shape = (batch, M, N) if batched else (M, N)
    bias = _common.optional_tensor(bias, "bias", (M,), np.float32, be)
    residual = _common.optional_tensor(residual, "residual", out_shape, np.float32, be)
    act = _common.activation_code(activation)
    cfg = _resolve_config(config)
    _common.same_device(be, a=a, b=b, bias=bias, residual=residual, out=out)
    out = _common.prepare_out(out, out_shape, np.float32, be,
                              inputs=(("a", a), ("b", b), ("bias", bias), ("residual", residual)))
    gemm_launch(be, a, b, out, M, N, K, lda=K, ldb=N, ldc=N, batch=batch,
                stride_a=M * K if a.ndim == 3 else 0, stride_b=K * N if b.ndim == 3 else 0,
                stride_c=M * N, bias=bias, act=act, residual=residual, config=cfg)
    return out
