"""``cuconv.gemm`` and the GEMM launches behind im2col+GEMM, the 1x1 convolution and Winograd.

Layering (ATen's): ``gemm(a, b, out=None, ...)`` checks every argument and allocates;
``gemm_launches(a, b, c, M, N, K, ...)`` checks nothing about user input, picks a config and
returns the ``Launch``es of ``kernels/gemm.cu`` for a plan. Other ops put those launches in
their own plans.

Configs are frozen dataclasses (``GemmConfig``) whose generated ``label`` names the kernel
in the compile matrix, the resource report, the pytest ids and the bench. ``CONFIGS`` holds
every config the op can launch (each is registered with the compile matrix at import).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Output, Plan, Ref
from ..problem import GemmProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from . import tc_gemm as _tc
from ._frontend import FrontEnd, plan_of

KERNEL_FILE = "gemm.cu"
# Sizes stay below 2**31 with a tile to spare, so the kernels' 32-bit row/column indices
# (tile origin + offset in the tile) cannot overflow.
SIZE_MAX = INT32_MAX + 1 - 256
_GRID_YZ_MAX = 65535          # gridDim.y and gridDim.z limit; bigger grids are split into launches

# Bits of the kernels' `flags` argument (GEMM_VEC_* in gemm.cu).
VEC_A, VEC_B, VEC_C = 1, 2, 4


@dataclass(frozen=True)
class GemmConfig:
    """One instantiation of a kernel in gemm.cu.

    ``kind``: "naive" (one thread per output; ``bm``/``bn`` is the block's output tile),
    "tiled" (shared-memory tiles of ``bm`` x ``bm``, one output per thread), or "regblock"
    (``bm`` x ``bn`` block tile, ``bk`` deep K step, ``tm`` x ``tn`` register micro-tile:
    gemm_f32_regblock for float32, gemm_f64_regblock for float64). ``dtype``: the element
    type, float32 or float64.
    """
    kind: str
    bm: int
    bn: int
    bk: int = 1
    tm: int = 1
    tn: int = 1
    dtype: str = "float32"

    def __post_init__(self):
        if self.kind not in ("naive", "tiled", "regblock"):
            raise ValueError(f"GemmConfig.kind must be 'naive', 'tiled' or 'regblock', got {self.kind!r}")
        if self.kind == "tiled" and not (self.bm == self.bn == self.bk):
            raise ValueError(f"a tiled GemmConfig has square tiles, got {self.bm}x{self.bn}x{self.bk}")
        if self.dtype not in CUDA_CORE_DTYPES:
            raise ValueError(f"GemmConfig.dtype must be float32 or float64, got {self.dtype!r}")
        if self.kind == "regblock" and (self.tm % 4 or self.tn % 4 or self.bm % self.tm
                                        or self.bn % self.tn or self.bk % 4):
            raise ValueError(f"regblock GemmConfig needs tm, tn, bk multiples of 4 dividing the tile, "
                             f"got {self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}")

    @property
    def label(self) -> str:
        short = tag(self.dtype)
        if self.kind == "naive":
            return f"gemm_{short}_naive_{self.bm}x{self.bn}"
        if self.kind == "tiled":
            return f"gemm_{short}_tiled_{self.bm}x{self.bn}x{self.bk}"
        return f"gemm_{short}_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"

    @property
    def expression(self) -> str:
        t = ctype(self.dtype)
        if self.kind == "naive":
            return f"gemm_naive<{t}, {self.bm}, {self.bn}>"
        if self.kind == "tiled":
            return f"gemm_tiled<{t}, {self.bm}>"
        return f"gemm_{tag(self.dtype)}_regblock<{self.bm}, {self.bn}, {self.bk}, {self.tm}, {self.tn}>"

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

# float64: the naive and tiled variants and one register-blocked tile (gemm_f64_regblock).
NAIVE_F64 = GemmConfig("naive", 16, 16, dtype="float64")
TILED_F64 = GemmConfig("tiled", 16, 16, 16, dtype="float64")
MAIN_F64 = GemmConfig("regblock", 64, 64, 8, 4, 4, dtype="float64")

CONFIGS: tuple[GemmConfig, ...] = (NAIVE, TILED, MAIN, SMALL, SKINNY, NAIVE_F64, TILED_F64, MAIN_F64)
_BY_LABEL = {c.label: c for c in CONFIGS}

# Every config promises 2 resident blocks per SM: the regblock kernels are compiled with
# __launch_bounds__(threads, 2) (so at most 128 registers at 256 threads), the naive and tiled
# ones need far fewer.
ENTRIES = {c: register_kernel(KernelEntry(KERNEL_FILE, c.expression, c.label, c.threads,
                                          min_blocks_per_sm=2, main=(c == MAIN)))
           for c in CONFIGS}

# An SM count to size the heuristic by (an H100 SXM has 132); a guess, not a measurement.
_TYPICAL_SMS = 132


def config_by_label(label: str) -> GemmConfig:
    if label not in _BY_LABEL:
        raise ValueError(f"unknown GEMM config {label!r}; known: {', '.join(_BY_LABEL)}")
    return _BY_LABEL[label]


def choose_config(M: int, N: int, K: int, batch: int = 1, dtype: str = "float32") -> GemmConfig:
    """The default config for a problem (a heuristic, not yet tuned by measurement).

    float32:
    * M <= 32 (a convolution with few output channels per group): 32x128 tiles, so the
      block is not 3/4 idle rows;
    * enough 128x128 tiles to give every SM of a large GPU two blocks: the 128x128 main
      config (most reuse per byte);
    * otherwise 64x64 tiles, to spread a small problem over more SMs.
    float64: the one double register-blocked config (64x64x8, 4x4).
    """
    if dtype == "float64":
        return MAIN_F64
    if M <= 32:
        return SKINNY
    tiles = math.ceil(M / 128) * math.ceil(N / 128) * max(batch, 1)
    if tiles >= 2 * _TYPICAL_SMS:
        return MAIN
    return SMALL


def vector_flags(lda, ldb, ldc, stride_a, stride_b, stride_c) -> int:
    """Which operands allow 16-byte accesses as far as the leading dimensions and batch strides
    go (multiples of 4 floats); the kernel adds each base pointer's 16-byte alignment itself, so
    no plan depends on where the caller's arrays start."""
    flags = 0
    if lda % 4 == 0 and stride_a % 4 == 0:
        flags |= VEC_A
    if ldb % 4 == 0 and stride_b % 4 == 0:
        flags |= VEC_B
    if ldc % 4 == 0 and stride_c % 4 == 0:
        flags |= VEC_C
    return flags


def gemm_launches(a: Ref, b: Ref, c: Ref, M, N, K, *, lda=None, ldb=None, ldc=None, batch=1,
                  stride_a=0, stride_b=0, stride_c=0, bias: Ref | None = None, act=0,
                  residual: Ref | None = None, config=None, stride_bias=0, dtype="float32") -> list[Launch]:
    """The launches of C[i] = act(A[i] · B[i] + bias[i·stride_bias + m] + residual[i]), i < batch.

    ``a``, ``b``, ``c`` (and ``bias``, ``residual``) are array slots whose first element is the
    first matrix's (0, 0); row-major with leading dimensions ``lda``/``ldb``/``ldc`` (default K,
    N, N) and element strides between batch matrices (0 broadcasts). ``residual`` has C's
    layout. ``act`` is an activation code. ``config``: a GemmConfig, a label, or None
    (heuristic), of ``dtype`` (float32 or float64; ValueError for another dtype's config).
    Checks nothing about the user's input.
    """
    lda = K if lda is None else int(lda)
    ldb = N if ldb is None else int(ldb)
    ldc = N if ldc is None else int(ldc)
    M, N, K, batch = int(M), int(N), int(K), int(batch)
    if M == 0 or N == 0 or batch == 0:
        return []
    cfg = resolve_config(config, dtype) or choose_config(M, N, K, batch, dtype)
    entry = ENTRIES[cfg]
    flags = vector_flags(lda, ldb, ldc, stride_a, stride_b, stride_c)
    bias_arg = bias if bias is not None else Ref.absent(dtype)
    res_arg = residual if residual is not None else Ref.absent(dtype)
    i32, i64 = _common.i32, _common.i64
    grid_x = math.ceil(N / cfg.bn)
    tiles_m = math.ceil(M / cfg.bm)
    launches = []
    for m_block0 in range(0, tiles_m, _GRID_YZ_MAX):
        for batch0 in range(0, batch, _GRID_YZ_MAX):
            grid = (grid_x, min(_GRID_YZ_MAX, tiles_m - m_block0), min(_GRID_YZ_MAX, batch - batch0))
            args = (a, b, c, i32(M), i32(N), i32(K), i32(lda), i32(ldb), i32(ldc),
                    i64(stride_a), i64(stride_b), i64(stride_c),
                    bias_arg, i32(bias is not None), i64(stride_bias), res_arg, i32(residual is not None),
                    i32(act), i32(flags), i32(m_block0), i32(batch0))
            launches.append(Launch(entry, grid, (cfg.threads, 1, 1), args))
    return launches


def resolve_config(config, dtype: str | None = None) -> GemmConfig | None:
    """None, or the registered config ``config`` names; with ``dtype``, it must be of that dtype."""
    if config is None:
        return None
    if isinstance(config, GemmConfig):
        if config not in ENTRIES:
            raise ValueError(f"GEMM config {config.label} is not a registered instantiation; "
                             f"known: {', '.join(_BY_LABEL)}")
        cfg = config
    elif isinstance(config, str):
        cfg = config_by_label(config)
    else:
        raise TypeError(f"config must be None, a GemmConfig or a config label, got {type(config).__name__}")
    if dtype is not None and cfg.dtype != dtype:
        raise ValueError(f"GEMM config {cfg.label} computes {cfg.dtype}, the operands are {dtype}; "
                         f"{dtype} configs: {', '.join(c.label for c in CONFIGS if c.dtype == dtype)}")
    return cfg


# --------------------------------------------------------------------------- cuconv.gemm
A, B, C = Ref("a"), Ref("b"), Ref("out")


def _gemm_plan(be, a, b, bias, residual, out, activation, config, allow_tf32, misaligned) -> Plan:
    """Validate every argument (clear errors, nothing launched) and plan the GEMM."""
    dt = np.dtype(a.dtype).name
    if dt in ("float16", "bfloat16") or (dt == "float32" and allow_tf32):
        if config is not None:
            raise TypeError("config= names a gemm.cu config; the tensor-core GEMM picks its own "
                            "(call cuconv.ops.tc_gemm.tc_gemm(..., config=) to choose one)")
        return _tc.gemm_plan(be, a, b, bias, residual, out, activation, None, bool(allow_tf32), misaligned)
    if dt not in CUDA_CORE_DTYPES or np.dtype(b.dtype).name != dt:
        raise TypeError(f"a and b must both have dtype float32 or float64 (or float16/bfloat16, or float32 "
                        f"with allow_tf32=True), got {dt} and {np.dtype(b.dtype).name}")
    _common.as_tensor(a, "a", None, (dt,), be)
    _common.as_tensor(b, "b", None, (dt,), be)
    prob = GemmProblem.from_shapes(a.shape, b.shape, dt)
    M, N, K, batch = prob.M, prob.N, prob.K, prob.batch
    for name, v in (("M", M), ("N", N), ("K", K)):
        if v > SIZE_MAX:
            raise ValueError(f"{name}={v} is larger than 2**31-256, the kernels' 32-bit index range "
                             f"(a {tuple(a.shape)}, b {tuple(b.shape)})")
    _common.optional_tensor(bias, "bias", (M,), dt, be)
    _common.optional_tensor(residual, "residual", prob.output_shape, dt, be)
    act = _common.activation_code(activation)
    cfg = resolve_config(config, dt)
    _common.same_device(be, a=a, b=b, bias=bias, residual=residual, out=out)
    if out is not None:
        _common.check_out(out, prob.output_shape, dt, be)
    launches = gemm_launches(
        A, B, C, M, N, K, lda=K, ldb=N, ldc=N, batch=batch, stride_a=M * K if prob.a_batched else 0,
        stride_b=K * N if prob.b_batched else 0, stride_c=M * N,
        bias=Ref("bias") if bias is not None else None, act=act,
        residual=Ref("residual") if residual is not None else None, config=cfg, dtype=dt)
    absent = frozenset(r for r, v in (("bias", bias), ("residual", residual)) if v is None)
    return Plan("gemm", cfg.label if cfg else (launches[0].kernel if launches else "gemm"), prob,
                tuple(launches), ("a", "b", "bias", "residual"),
                (Output("out", prob.output_shape, np.dtype(dt)),), be.device_key(), absent=absent,
                expected=(("a", tuple(a.shape), dt), ("b", tuple(b.shape), dt),
                          ("bias", (M,), dt), ("residual", prob.output_shape, dt)))


_FRONT = FrontEnd("gemm", ("a", "b", "bias", "residual", "out"), lambda be, env, args, extra, misaligned: _gemm_plan(
    be, env["a"], env["b"], env["bias"], env["residual"], env["out"], *args, misaligned))


def gemm(a, b, out=None, *, bias=None, activation=None, residual=None, config=None, allow_tf32=False):
    """``out = activation(a @ b + bias[:, None] + residual)``.

    float32 runs on the CUDA cores (the kernels of gemm.cu) unless ``allow_tf32=True``;
    float64 runs on the CUDA cores in double (``allow_tf32`` does not apply to it);
    float16 / bfloat16 (and float32 with ``allow_tf32=True``) run on the tensor cores
    (``cuconv.ops.tc_gemm``, fp32 accumulation, output in the input dtype).

    ``a``: (M, K) or (batch, M, K); ``b``: (K, N) or (batch, K, N); a 2-D operand is
    broadcast over the other's batch. ``bias``: (M,), added to every row m (per output
    channel, as in a convolution). ``residual``: the output's shape. ``activation``: None,
    "relu", "relu6" or "silu". ``config``: a ``GemmConfig`` or its label (default: a
    heuristic). Returns ``out`` ((M, N) or (batch, M, N)), allocated when None, on the
    current backend; queued on CuPy's current stream without synchronizing.
    """
    return _FRONT({"a": a, "b": b, "bias": bias, "residual": residual, "out": out}, (activation, config, allow_tf32))


plan_gemm = plan_of(gemm)
