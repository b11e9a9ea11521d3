"""Tensor-core kernels' shared pieces: dtypes, the config dataclass of tc_gemm.cu and tc_conv.cu,
the parameterless kernels (simple variants, layout pack), device and dtype rules.

Kernels: ``kernels/tc_gemm.cu`` (ops/tc_gemm.py), ``kernels/tc_conv.cu`` (ops/tc_conv.py), shared
pieces in ``kernels/tc_tile.cuh``, the PTX portability layer at the end of ``kernels/common.cuh``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..dtypes import DTYPES as VOCABULARY
from ..dtypes import INT32_MAX, ctype, tag
from ..plan import conversion_kernel
from ..problem import Conv2dProblem
from ..registry import ARCHS, KernelEntry, register_kernel, stem

GEMM_FILE = "tc_gemm.cu"
CONV_FILE = "tc_conv.cu"
GRID_YZ_MAX = 65535
MAX_CONV_TAPS = 16          # tc_conv's loader: 16 mask bits for the filter rows, 16 for the columns

# The tensor cores' element types (tf32: float32 storage) and their cp.async widths in
# elements (16, 8 and 4 bytes); names, C++ types and sizes are cuconv.dtypes'.
VEC_WIDTHS = {"float16": (8, 4, 2), "bfloat16": (8, 4, 2), "tf32": (4, 2, 1)}
# tc_conv's one-element copies (16-bit types): NHWC channel counts no cp.async width divides, read
# in place by synchronous 2-byte copies (tc_conv.cu's cc_copy_zfill) instead of packed.
ELEMENT_VEC = 1
ARCHS_SM80 = tuple(a for a in ARCHS if int(a[3:]) >= 80)


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class TcConfig:
    """One instantiation of ``tc_gemm`` or ``tc_conv``: a BM×BN×BK block tile split into WM×WN
    warp tiles, a STAGES-deep cp.async pipeline, cp.async copies of VEC elements."""
    op: str            # "gemm" | "conv"
    dtype: str         # "float16" | "bfloat16" | "tf32"
    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    stages: int
    vec: int
    min_blocks: int = 1
    main: bool = False

    def __post_init__(self):
        vecs = VEC_WIDTHS[self.dtype] + ((ELEMENT_VEC,) if self.op == "conv" else ())
        kstep = 8 if self.dtype == "tf32" else 16
        if self.op not in ("gemm", "conv"):
            raise ValueError(f"TcConfig.op must be 'gemm' or 'conv', got {self.op!r}")
        if (self.bm % self.wm or self.bn % self.wn or self.wm % 16 or self.wn % 16 or self.bk % kstep
                or self.vec not in vecs or self.stages < 2):
            raise ValueError(f"inconsistent tensor-core config {self.name}")

    @property
    def short(self) -> str:
        return tag(self.dtype)

    @property
    def ctype(self) -> str:
        return ctype(self.dtype)

    @property
    def esize(self) -> int:
        return VOCABULARY[self.dtype].itemsize

    @property
    def name(self) -> str:
        return (f"tc_{self.op}_{self.short}_{self.bm}x{self.bn}x{self.bk}_{self.wm}x{self.wn}"
                f"_s{self.stages}_v{self.vec}")

    @property
    def expression(self) -> str:
        kern = "tc_gemm" if self.op == "gemm" else "tc_conv"
        return (f"{kern}<{self.ctype}, {self.bm}, {self.bn}, {self.bk}, {self.wm}, {self.wn}, "
                f"{self.stages}, {self.vec}, {self.min_blocks}>")

    @property
    def threads(self) -> int:
        return (self.bm // self.wm) * (self.bn // self.wn) * 32

    @property
    def smem_bytes(self) -> int:
        return self.stages * (self.bm + self.bn) * self.bk * self.esize

    @property
    def archs(self) -> tuple[str, ...]:
        # bf16/tf32 mma and cp.async need sm_80; the 2-stage fp16 configs are the sm_75 path.
        if self.dtype == "float16" and self.stages == 2:
            return ARCHS
        return ARCHS_SM80

    def can_implement(self, problem: Conv2dProblem | None = None, *, M: int | None = None,
                      N: int | None = None, K: int | None = None, cc: int = 90) -> str | None:
        """None if this config can run the problem, else why not.

        conv: ``problem`` as the kernel sees it — NHWC input, C/groups channels per group (after
        any padding by the layout pack); gemm: ``M``, ``N``, ``K`` of row-major A and B. Pointer
        alignment (VEC·sizeof(T) bytes) is a property of the arrays, checked at launch.
        """
        if self.op == "conv":
            if problem is None:
                raise TypeError(f"{self.name}.can_implement needs the Conv2dProblem")
            if kernel_dtype(problem.dtype) != self.dtype:
                return f"{self.name} takes {self.dtype}, got {problem.dtype}"
            if problem.C_per_group % self.vec:
                return (f"C/groups = {problem.C_per_group} is not a multiple of {self.vec}: {self.name} copies "
                        f"{self.vec} channels ({self.vec * self.esize} bytes) of a pixel at a time")
            if max(problem.R, problem.S) > MAX_CONV_TAPS:
                return (f"{self.name} keeps a pixel's valid filter rows and columns in one 32-bit mask: R and S "
                        f"must be <= {MAX_CONV_TAPS}, got {problem.R}x{problem.S}")
            reason = conv_limits(problem)
            if reason:
                return reason
        else:
            if None in (M, N, K):
                raise TypeError(f"{self.name}.can_implement needs M, N and K")
            if K % self.vec or N % self.vec:
                return (f"K = {K} and N = {N} must be multiples of {self.vec}: {self.name} copies {self.vec} "
                        f"elements ({self.vec * self.esize} bytes) of a row at a time")
            if max(M, N, K) > INT32_MAX - 256:
                return f"M, N, K = {M}, {N}, {K}: the kernel indexes with 32-bit ints"
        if cc < 80 and self.stages > 2:
            return f"{self.name} needs cp.async (sm_80+); this device is sm_{cc}"
        return arch_reason(self.dtype, cc)

    def entry(self) -> KernelEntry:
        # Design: 2 blocks/SM on the big-shared-memory parts (sm_80, sm_90, sm_100); a 64 KiB
        # 4-stage pipeline fits once in the 100 KiB of sm_86/sm_89/sm_120 (48 KiB and less: twice).
        small_smem = () if self.smem_bytes <= 48 * 1024 else tuple(
            (a, 1) for a in ("sm_86", "sm_89", "sm_120") if a in self.archs)
        return KernelEntry(GEMM_FILE if self.op == "gemm" else CONV_FILE, self.expression, self.name,
                           block_threads=self.threads, min_blocks_per_sm=self.min_blocks,
                           dynamic_smem=self.smem_bytes, cuda_headers=True,
                           archs=self.archs, main=self.main, min_blocks_overrides=small_smem)


def _configs() -> tuple[TcConfig, ...]:
    """Every instantiation the ops can launch (the compile matrix builds each for every arch it
    lists). Per dtype and op: the 128x128 main config with 16-byte copies (for conv also with
    64x64 warp tiles), the 64x64 config with
    the widest and the narrowest copy (channels / K, N that only the narrow one divides run
    there), for fp16/bf16 GEMM the 128x256 big-GEMM config, and for fp16 the sm_75 path
    (2 stages). The reasoning per config is in the kernel files' headers."""
    out = []
    for dt in ("float16", "bfloat16", "tf32"):
        bk = 16 if dt == "tf32" else 32
        wide, narrow = VEC_WIDTHS[dt][0], VEC_WIDTHS[dt][-1]
        for op in ("gemm", "conv"):
            out.append(TcConfig(op, dt, 128, 128, bk, 64, 32, 4, wide, min_blocks=2, main=True))
            if op == "conv":   # 4 warps of 64x64: twice the mma per ldmatrix and per loop overhead
                out.append(TcConfig(op, dt, 128, 128, bk, 64, 64, 4, wide, min_blocks=2))
            out += [TcConfig(op, dt, 64, 64, bk, 32, 32, 3, v, min_blocks=2) for v in (wide, narrow)]
            if op == "conv" and dt != "tf32":   # odd channels per group (stems) in place
                out.append(TcConfig(op, dt, 64, 64, bk, 32, 32, 3, ELEMENT_VEC, min_blocks=2))
            if op == "gemm" and dt != "tf32":
                out.append(TcConfig(op, dt, 128, 256, bk, 64, 64, 3, wide, min_blocks=1, main=True))
            if dt == "float16":   # sm_75: no cp.async, 2 stages
                out.append(TcConfig(op, dt, 128, 128, bk, 64, 32, 2, wide, min_blocks=2))
                out += [TcConfig(op, dt, 64, 64, bk, 32, 32, 2, v, min_blocks=2)
                        for v in (wide, narrow) + ((ELEMENT_VEC,) if op == "conv" else ())]
    return tuple(out)


CONFIGS = _configs()
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}


@dataclass(frozen=True)
class _Aux:
    """A kernel without tile parameters (the simple variants, the layout pack)."""
    file: str
    template: str
    dtype: str
    threads: int

    @property
    def name(self) -> str:
        """<template>_<dtype>, the template's name after the file's stem when it does not start
        with it (tc_pack_nhwc of tc_conv.cu: tc_conv_pack_nhwc_f16)."""
        head = stem(self.file)
        middle = self.template if self.template.startswith(head) else f"{head}_{self.template.removeprefix('tc_')}"
        return f"{middle}_{tag(self.dtype)}"

    @property
    def expression(self) -> str:
        return f"{self.template}<{ctype(self.dtype)}>"

    def entry(self) -> KernelEntry:
        archs = ARCHS if self.dtype == "float16" or self.template == "tc_pack_nhwc" else ARCHS_SM80
        return KernelEntry(self.file, self.expression, self.name, block_threads=self.threads,
                           cuda_headers=True, archs=archs)


AUX = {}
AUX_ENTRIES = {}
for _dt in VEC_WIDTHS:
    for _aux in (_Aux(GEMM_FILE, "tc_gemm_simple", _dt, 128), _Aux(CONV_FILE, "tc_conv_simple", _dt, 128),
                 _Aux(CONV_FILE, "tc_pack_nhwc", _dt, 256)):
        AUX[(_aux.template, _dt)] = _aux
        AUX_ENTRIES[(_aux.template, _dt)] = register_kernel(_aux.entry())
        if _aux.template == "tc_pack_nhwc":      # a layout conversion: listed by Plan.conversions
            conversion_kernel(AUX_ENTRIES[(_aux.template, _dt)])


def arch_reason(dtype: str, cc: int) -> str | None:
    if cc < 75:
        return f"tensor-core mma.sync needs sm_75 or newer; this device is sm_{cc}"
    if dtype != "float16" and cc < 80:
        return f"{dtype} mma needs sm_80 or newer; this device is sm_{cc}"
    return None


def kernel_dtype(dtype: str) -> str:
    return "tf32" if dtype == "float32" else dtype


def pick_vec(kdt: str, dims, aligned: bool) -> int | None:
    """The widest cp.async width (elements) that has configs and divides every dim, for
    operands whose arrays start 16-byte aligned: 16 bytes, else the narrowest (4 bytes); None
    when neither fits or an operand is not 16-byte aligned (the caller then packs)."""
    if not aligned:
        return None
    for v in (VEC_WIDTHS[kdt][0], VEC_WIDTHS[kdt][-1]):
        if all(d % v == 0 for d in dims):
            return v
    return None


def find_config(op: str, kdt: str, bm: int, stages: int, vec: int, bn: int | None = None,
                wn: int | None = None) -> TcConfig | None:
    for c in CONFIGS:
        if (c.op == op and c.dtype == kdt and c.bm == bm and c.stages == stages and c.vec == vec
                and (bn is None or c.bn == bn) and (wn is None or c.wn == wn)):
            return c
    return None


def resolve_named(config, op: str, kdt: str) -> TcConfig | str:
    """A user-given config (name or TcConfig) checked against the op and dtype."""
    if isinstance(config, str):
        if config == "simple":
            return "simple"
        if config not in CONFIGS_BY_NAME:
            raise ValueError(f"unknown tensor-core config {config!r}; available: 'simple', "
                             + ", ".join(c.name for c in CONFIGS if c.op == op and c.dtype == kdt))
        config = CONFIGS_BY_NAME[config]
    if not isinstance(config, TcConfig):
        raise TypeError(f"config must be None, 'simple', a config name or a TcConfig, got {type(config).__name__}")
    if config not in CONFIGS:
        raise ValueError(f"tensor-core config {config.name} is not a registered instantiation")
    if config.op != op or config.dtype != kdt:
        raise ValueError(f"config {config.name} is a {config.dtype} {config.op} kernel; this call needs "
                         f"a {kdt} {op} kernel")
    return config


def check_dtype(dtype: str, allow_tf32: bool, what: str) -> str:
    """Kernel dtype for an input dtype; float32 only with allow_tf32=True."""
    if dtype in ("float16", "bfloat16"):
        return dtype
    if dtype == "float32":
        if not allow_tf32:
            raise TypeError(f"{what}: float32 inputs run on tensor cores only as tf32 (10-bit mantissa "
                            "products); pass allow_tf32=True to accept that, or use the fp32 algorithms")
        return "tf32"
    raise TypeError(f"{what}: tensor cores take float16, bfloat16 or float32 (with allow_tf32=True), got {dtype}")


def pad_to(c: int, kdt: str) -> int:
    v = VEC_WIDTHS[kdt][0]
    return -(-c // v) * v


def conv_limits(p: Conv2dProblem) -> str | None:
    M = p.N * p.P * p.Q
    if M > INT32_MAX - 256:
        return f"M = N·P·Q = {M} is too large for 32-bit tile indices"
    if p.K > INT32_MAX - 256 or p.C * p.R * p.S > INT32_MAX - 256:
        return f"K = {p.K} or C·R·S = {p.C * p.R * p.S} is too large for 32-bit indices"
    if p.N > GRID_YZ_MAX or p.K > GRID_YZ_MAX:
        return f"N = {p.N} and K = {p.K} must be <= {GRID_YZ_MAX} (grid limit of the layout pack)"
    if p.H * p.W > GRID_YZ_MAX * 32:
        return f"H·W = {p.H * p.W} is above the layout pack's grid limit {GRID_YZ_MAX * 32}"
    blocks = p.groups * math.ceil(M / 32) * math.ceil(p.K_per_group / 16)
    if blocks > INT32_MAX:
        return f"needs {blocks} blocks, more than a 1-D grid holds"
    return None


