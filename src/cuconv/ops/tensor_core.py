"""Tensor cores: fp16, bf16 and tf32 GEMM and implicit-GEMM convolution (fp32 accumulation).

Kernels: ``kernels/tc_gemm.cu``, ``kernels/tc_conv.cu`` (shared pieces in ``kernels/tc_tile.cuh``,
the PTX portability layer at the end of ``kernels/common.cuh``).

Public entry points:

* ``tc_gemm(a, b, out=None, *, bias=None, activation=None, residual=None, allow_tf32=False,
  config=None)`` — ``act(a @ b + bias[:, None] + residual)`` for float16/bfloat16 (and float32
  with ``allow_tf32=True``), output in the input dtype.
* ``tc_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NHWC",
  allow_tf32=False, activation=None, residual=None, out=None, config=None)`` — NHWC input with
  KRSC weights (the tensor-core layout), or NCHW / KCRS with ``layout="NCHW"``.
* conv2d algorithms registered here: ``"implicit_gemm_tc"`` (float16, bfloat16; ``auto`` picks
  it), ``"implicit_gemm_tc_simple"`` (the analytic variant; no workspace, any layout), and
  ``"implicit_gemm_tf32"`` (float32 on tf32 tensor cores; never picked by ``auto`` —
  float32 stays exact fp32 unless the caller opts in, PyTorch's ``allow_tf32=False`` habit).

Layout paths of the fast kernel (tc_conv): NHWC input whose per-group channel count Cg admits
a cp.async width (Cg even for 16-bit types) runs directly; NCHW input, and NHWC input with odd
Cg, are first packed by ``tc_pack_nhwc`` into an NHWC workspace with Cg padded to a multiple of
8 (16-bit) or 4 (tf32); the weights are packed the same way; the kernel then writes the output
in the caller's layout from its epilogue.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backend import current_backend
from ..compile import ARCHS, KernelEntry, register_kernel
from ..problem import Conv2dProblem
from . import _common
from ._common import i32, i64
from .conv2d import ConvAlgorithm, register_algorithm

GEMM_FILE = "tc_gemm.cu"
CONV_FILE = "tc_conv.cu"
INT_MAX = 2 ** 31 - 1
GRID_YZ_MAX = 65535

# dtype name -> (short name in labels, C++ type, element bytes, cp.async widths in elements)
DTYPES = {
    "float16": ("f16", "__half", 2, (8, 4, 2)),
    "bfloat16": ("bf16", "__nv_bfloat16", 2, (8, 4, 2)),
    "tf32": ("tf32", "float", 4, (4, 2, 1)),
}
ARCHS_SM80 = tuple(a for a in ARCHS if int(a[3:]) >= 80)


@functools.lru_cache(maxsize=None)
def cuda_include_options() -> tuple[str, ...]:
    """``-I`` for the CUDA headers (cuda_fp16.h, cuda_bf16.h) that NVRTC does not carry itself.

    Looked up in $CUDA_PATH, $CUDA_HOME, /usr/local/cuda and the nvidia-cuda-runtime wheels.
    Empty when none is found; the compile then fails with NVRTC's "cannot open cuda_fp16.h".
    """
    candidates = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    dirs = [Path(c) / "include" for c in candidates if c]
    try:
        import nvidia  # noqa: PLC0415  (namespace package of the CUDA wheels)
        for root in getattr(nvidia, "__path__", []):
            dirs += sorted(Path(root).glob("*/include"))
    except ImportError:
        pass
    for d in dirs:
        if (d / "cuda_fp16.h").is_file() and (d / "cuda_bf16.h").is_file():
            return (f"-I{d}",)
    return ()


def launch_options(be, *extra: str) -> tuple[str, ...]:
    """Compile options for a launch: the CUDA include path on the GPU only — the emulator has
    its own cuda_fp16.h / cuda_bf16.h, which an -I to the real headers would shadow."""
    return (*cuda_include_options(), *extra) if be.name == "cupy" else tuple(extra)


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
        short, _, esize, vecs = DTYPES[self.dtype]
        kstep = 8 if self.dtype == "tf32" else 16
        if self.op not in ("gemm", "conv"):
            raise ValueError(f"TcConfig.op must be 'gemm' or 'conv', got {self.op!r}")
        if (self.bm % self.wm or self.bn % self.wn or self.wm % 16 or self.wn % 16 or self.bk % kstep
                or self.vec not in vecs or self.stages < 2):
            raise ValueError(f"inconsistent tensor-core config {self.name}")

    @property
    def short(self) -> str:
        return DTYPES[self.dtype][0]

    @property
    def ctype(self) -> str:
        return DTYPES[self.dtype][1]

    @property
    def esize(self) -> int:
        return DTYPES[self.dtype][2]

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
            if _kernel_dtype(problem.dtype) != self.dtype:
                return f"{self.name} takes {self.dtype}, got {problem.dtype}"
            if problem.C_per_group % self.vec:
                return (f"C/groups = {problem.C_per_group} is not a multiple of {self.vec}: {self.name} copies "
                        f"{self.vec} channels ({self.vec * self.esize} bytes) of a pixel at a time")
            reason = _conv_limits(problem)
            if reason:
                return reason
        else:
            if None in (M, N, K):
                raise TypeError(f"{self.name}.can_implement needs M, N and K")
            if K % self.vec or N % self.vec:
                return (f"K = {K} and N = {N} must be multiples of {self.vec}: {self.name} copies {self.vec} "
                        f"elements ({self.vec * self.esize} bytes) of a row at a time")
            if max(M, N, K) > INT_MAX - 256:
                return f"M, N, K = {M}, {N}, {K}: the kernel indexes with 32-bit ints"
        if cc < 80 and self.stages > 2:
            return f"{self.name} needs cp.async (sm_80+); this device is sm_{cc}"
        return _arch_reason(self.dtype, cc)

    def entry(self) -> KernelEntry:
        # Design: 2 blocks/SM on the big-shared-memory parts (sm_80, sm_90, sm_100); a 64 KiB
        # 4-stage pipeline fits once in the 100 KiB of sm_86/sm_89/sm_120 (48 KiB and less: twice).
        small_smem = () if self.smem_bytes <= 48 * 1024 else tuple(
            (a, 1) for a in ("sm_86", "sm_89", "sm_120") if a in self.archs)
        return KernelEntry(GEMM_FILE if self.op == "gemm" else CONV_FILE, self.expression, self.name,
                           block_threads=self.threads, min_blocks_per_sm=self.min_blocks,
                           dynamic_smem=self.smem_bytes, options=cuda_include_options(),
                           archs=self.archs, main=self.main, min_blocks_overrides=small_smem)


def _configs() -> tuple[TcConfig, ...]:
    """Every instantiation the ops can launch (the compile matrix builds each for every arch it
    lists). Per dtype and op: the 128x128 main config with 16-byte copies, the 64x64 config with
    the widest and the narrowest copy (channels / K, N that only the narrow one divides run
    there), for fp16/bf16 GEMM the 128x256 big-GEMM config, and for fp16 the sm_75 path
    (2 stages). The reasoning per config is in the kernel files' headers."""
    out = []
    for dt in ("float16", "bfloat16", "tf32"):
        bk = 16 if dt == "tf32" else 32
        wide, narrow = DTYPES[dt][3][0], DTYPES[dt][3][-1]
        for op in ("gemm", "conv"):
            out.append(TcConfig(op, dt, 128, 128, bk, 64, 32, 4, wide, min_blocks=2, main=True))
            out += [TcConfig(op, dt, 64, 64, bk, 32, 32, 3, v, min_blocks=2) for v in (wide, narrow)]
            if op == "gemm" and dt != "tf32":
                out.append(TcConfig(op, dt, 128, 256, bk, 64, 64, 3, wide, min_blocks=1, main=True))
            if dt == "float16":   # sm_75: no cp.async, 2 stages
                out.append(TcConfig(op, dt, 128, 128, bk, 64, 32, 2, wide, min_blocks=2))
                out += [TcConfig(op, dt, 64, 64, bk, 32, 32, 2, v, min_blocks=2) for v in (wide, narrow)]
    return tuple(out)


CONFIGS = _configs()
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
for _cfg in CONFIGS:
    register_kernel(_cfg.entry())


@dataclass(frozen=True)
class _Aux:
    """A kernel without tile parameters (the simple variants, the layout pack)."""
    file: str
    template: str
    dtype: str
    threads: int

    @property
    def name(self) -> str:
        return f"{self.template}_{DTYPES[self.dtype][0]}"

    @property
    def expression(self) -> str:
        return f"{self.template}<{DTYPES[self.dtype][1]}>"

    def entry(self) -> KernelEntry:
        archs = ARCHS if self.dtype == "float16" or self.template == "tc_pack_nhwc" else ARCHS_SM80
        return KernelEntry(self.file, self.expression, self.name, block_threads=self.threads,
                           options=cuda_include_options(), archs=archs)


AUX = {}
for _dt in DTYPES:
    for _aux in (_Aux(GEMM_FILE, "tc_gemm_simple", _dt, 128), _Aux(CONV_FILE, "tc_conv_simple", _dt, 128),
                 _Aux(CONV_FILE, "tc_pack_nhwc", _dt, 256)):
        AUX[(_aux.template, _dt)] = _aux
        register_kernel(_aux.entry())


# The probes of the portability layer (kernels/tc_probe.cu, used by tests/test_tc_layouts.py):
# plain extern "C" kernels; bf16/tf32 mma fall back to warp shuffles below sm_80.
PROBE_FILE = "tc_probe.cu"
PROBES = {"tc_probe_mma": 32, "tc_probe_ldmatrix": 32, "tc_probe_cvt_tf32": 256, "tc_probe_cp_async": 32,
          "tc_probe_pipeline": 64}
for _name, _threads in PROBES.items():
    register_kernel(KernelEntry(PROBE_FILE, _name, _name, block_threads=_threads))


# --------------------------------------------------------------------------- launching
def emulator_group(file: str) -> tuple[str, ...]:
    """The instantiations of ``file`` compiled together into one emulator library.

    The emulator builds a library per module with g++, at a fixed cost of ~10-20 s plus ~2-3 s
    per instantiation, and the backend makes a module per name expression; so for the
    configs the emulator actually runs (every sm_80+ 64x64 config, the fp16 128x128 main
    config, the simple variants, the layout pack, the probes) one module per file holds them
    all. Anything else (the sm_75 and big-tile configs) still runs, through the backend's own
    one-kernel modules.
    """
    if file == PROBE_FILE:
        return tuple(PROBES)
    op = "gemm" if file == GEMM_FILE else "conv"
    names = [c.expression for c in CONFIGS
             if c.op == op and (c.stages == 3 or (c.main and c.dtype == "float16" and c.bn == 128))]
    names += [a.expression for a in AUX.values() if a.file == file]
    return tuple(names)


_EMU_MODULES: dict = {}


def launch(be, file: str, expression: str, grid, block, args, shared_mem: int = 0, options=()) -> None:
    """``be.launch`` with the CUDA include path on the GPU, and on the emulator (without
    sanitizers, whose runs use few kernels) one library per file for ``emulator_group(file)``."""
    options = launch_options(be, *options)
    if be.name != "emulator" or getattr(be, "sanitize", None) or expression not in emulator_group(file):
        be.launch(file, expression, grid, block, args, shared_mem=shared_mem, options=options)
        return
    from .. import emulator  # noqa: PLC0415
    from ..compile import BASE_OPTIONS, load_source, source_hash  # noqa: PLC0415
    source = load_source(file)
    settings = {k: getattr(be, k) for k in ("order", "seed", "timeout") if getattr(be, k, None) is not None}
    key = (file, tuple(options), source_hash(source), tuple(sorted(settings.items())))
    mod = _EMU_MODULES.get(key)
    if mod is None:
        mod = emulator.RawModule(code=source, options=(*BASE_OPTIONS, *options),
                                 name_expressions=list(emulator_group(file)), source_name=file, **settings)
        _EMU_MODULES[key] = mod
    mod.get_function(expression)(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


# --------------------------------------------------------------------------- device facts
@functools.lru_cache(maxsize=None)
def _device_facts(device_id: int) -> tuple[int, int]:
    import cupy  # noqa: PLC0415
    dev = cupy.cuda.Device(device_id)
    return int(dev.compute_capability), int(dev.attributes["MultiProcessorCount"])


def device_arch(be) -> tuple[int, int]:
    """(compute capability as 75/80/90..., SM count) of the current device. The emulator runs
    every instruction, so it counts as sm_90 with an H100's 132 SMs (only the choice of config
    depends on it there)."""
    if be is not None and be.name == "cupy":
        be.ensure_device()          # NoDeviceError with a clear message when there is none
        import cupy  # noqa: PLC0415
        return _device_facts(cupy.cuda.Device().id)
    return 90, 132


def _arch_reason(dtype: str, cc: int) -> str | None:
    if cc < 75:
        return f"tensor-core mma.sync needs sm_75 or newer; this device is sm_{cc}"
    if dtype != "float16" and cc < 80:
        return f"{dtype} mma needs sm_80 or newer; this device is sm_{cc}"
    return None


def _ptr(a) -> int:
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return int(a.data.ptr)


def _ptr_ok(a, nbytes: int) -> bool:
    return a is None or _ptr(a) % nbytes == 0


def _kernel_dtype(dtype: str) -> str:
    return "tf32" if dtype == "float32" else dtype


def _pick_vec(kdt: str, dims, arrays) -> int | None:
    """The widest cp.async width (elements) with configs that divides every dim with every
    pointer aligned: 16 bytes, else the narrowest (4 bytes); None if neither fits."""
    esize = DTYPES[kdt][2]
    for v in (DTYPES[kdt][3][0], DTYPES[kdt][3][-1]):
        if all(d % v == 0 for d in dims) and all(_ptr_ok(a, v * esize) for a in arrays):
            return v
    return None


def _find(op: str, kdt: str, bm: int, stages: int, vec: int, bn: int | None = None) -> TcConfig | None:
    for c in CONFIGS:
        if (c.op == op and c.dtype == kdt and c.bm == bm and c.stages == stages and c.vec == vec
                and (bn is None or c.bn == bn)):
            return c
    return None


def _resolve_named(config, op: str, kdt: str) -> TcConfig | str:
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


# --------------------------------------------------------------------------- GEMM
def choose_gemm_config(kdt: str, M: int, N: int, vec: int, cc: int = 90, sms: int = 132,
                       batch: int = 1) -> TcConfig:
    """The default GEMM config (a heuristic, not tuned by measurement yet).

    sm_75: the 2-stage fp16 configs. Otherwise, when every SM gets at least one 128x256 tile
    (and 16-byte copies are possible): 128x256 (most reuse); else 128x128 when every SM gets
    one; else 64x64 (more, smaller blocks). Misaligned operands take the 64x64 configs, which
    exist for every cp.async width.
    """
    stages_small = 2 if cc < 80 else 3
    full = DTYPES[kdt][3][0]
    tiles = lambda bm, bn: math.ceil(M / bm) * math.ceil(N / bn) * batch  # noqa: E731
    if vec == full:
        if cc >= 80 and kdt != "tf32" and tiles(128, 256) >= sms:
            return _find("gemm", kdt, 128, 3, vec, bn=256)
        if tiles(128, 128) >= sms:
            return _find("gemm", kdt, 128, 2 if cc < 80 else 4, vec, bn=128)
    return _find("gemm", kdt, 64, stages_small, vec)


def tc_gemm_launch(be, a, b, c, M, N, K, *, batch=1, stride_a=0, stride_b=0, stride_c=0, bias=None,
                   act=0, residual=None, config=None, kdt=None) -> None:
    """c[i] = act(a[i] @ b[i] + bias + residual[i]) on tensor cores (internal; no argument checks).

    ``a``: (M, K), ``b``: (K, N), ``c``: (M, N), row-major and contiguous per matrix, element
    strides between batch matrices (0 broadcasts). ``kdt``: "float16", "bfloat16" or "tf32".
    """
    M, N, K, batch = int(M), int(N), int(K), int(batch)
    if M == 0 or N == 0 or batch == 0:
        return
    cc, sms = device_arch(be)
    cfg = config
    if cfg is None:
        vec = _pick_vec(kdt, (K, N), (a, b))
        # No cp.async width fits (odd K or N, or misaligned pointers): the simple kernel.
        cfg = "simple" if vec is None else choose_gemm_config(kdt, M, N, vec, cc, sms, batch)
    if cfg != "simple":
        reason = cfg.can_implement(M=M, N=N, K=K, cc=cc)
        if reason is None and not (_ptr_ok(a, cfg.vec * cfg.esize) and _ptr_ok(b, cfg.vec * cfg.esize)):
            reason = f"a and b must be {cfg.vec * cfg.esize}-byte aligned"
        if reason:
            raise ValueError(f"config {cfg.name} cannot run a {M}x{N}x{K} GEMM: {reason}")
    has_bias, has_res = bias is not None, residual is not None
    ph = _common.placeholder(be, c.dtype)
    for b0 in range(0, batch, GRID_YZ_MAX):
        nb = min(GRID_YZ_MAX, batch - b0)
        av = a if b0 == 0 or stride_a == 0 else a.reshape(-1)[b0 * stride_a:]
        bv = b if b0 == 0 or stride_b == 0 else b.reshape(-1)[b0 * stride_b:]
        cv = c if b0 == 0 else c.reshape(-1)[b0 * stride_c:]
        rv = residual if (not has_res or b0 == 0) else residual.reshape(-1)[b0 * stride_c:]
        args = (av, bv, cv, i32(M), i32(N), i32(K), i32(K), i32(N), i32(N),
                i64(stride_a), i64(stride_b), i64(stride_c),
                bias if has_bias else ph, i32(has_bias), rv if has_res else ph, i32(has_res), i32(act))
        if cfg == "simple":
            aux = AUX[("tc_gemm_simple", kdt)]
            grid = (math.ceil(M / 32) * math.ceil(N / 16), nb, 1)
            launch(be, GEMM_FILE, aux.expression, grid, (128, 1, 1), args)
        else:
            grid = (math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn), nb, 1)
            launch(be, GEMM_FILE, cfg.expression, grid, (cfg.threads, 1, 1), args, shared_mem=cfg.smem_bytes)


def _check_dtype(dtype: str, allow_tf32: bool, what: str) -> str:
    """Kernel dtype for an input dtype; float32 only with allow_tf32=True."""
    if dtype in ("float16", "bfloat16"):
        return dtype
    if dtype == "float32":
        if not allow_tf32:
            raise TypeError(f"{what}: float32 inputs run on tensor cores only as tf32 (10-bit mantissa "
                            "products); pass allow_tf32=True to accept that, or use the fp32 algorithms")
        return "tf32"
    raise TypeError(f"{what}: tensor cores take float16, bfloat16 or float32 (with allow_tf32=True), got {dtype}")


def tc_gemm(a, b, out=None, *, bias=None, activation=None, residual=None, allow_tf32=False, config=None):
    """``out = activation(a @ b + bias[:, None] + residual)`` on tensor cores, fp32 accumulation.

    ``a``: (M, K) or (batch, M, K); ``b``: (K, N) or (batch, K, N), both float16, both bfloat16,
    or both float32 with ``allow_tf32=True`` (operands rounded to tf32). A 2-D operand is
    broadcast over the other's batch. ``bias``: (M,), ``residual``: the output's shape, both in
    the input dtype; the output has the input dtype. ``config``: None (heuristic), "simple" (the
    analytic kernel), or a config name / ``TcConfig`` from ``CONFIGS``.
    """
    be = current_backend()
    a = _common.as_tensor(a, "a", None, ("float16", "bfloat16", "float32"), be)
    b = _common.as_tensor(b, "b", None, ("float16", "bfloat16", "float32"), be)
    dtype = np.dtype(a.dtype)
    if np.dtype(b.dtype) != dtype:
        raise TypeError(f"a and b must have the same dtype, got {dtype.name} and {np.dtype(b.dtype).name}")
    kdt = _check_dtype(dtype.name, allow_tf32, "tc_gemm")
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"a and b must be 2-D (M, K), (K, N) or 3-D batched, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    M, K = a.shape[-2:]
    K2, N = b.shape[-2:]
    if K != K2:
        raise ValueError(f"a's last dimension must equal b's second-to-last (the K of a @ b), "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    batched = a.ndim == 3 or b.ndim == 3
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else 1)
    for name, v in (("M", M), ("N", N), ("K", K)):
        if v > INT_MAX - 256:
            raise ValueError(f"{name}={v} is larger than 2**31-256, the kernels' 32-bit index range "
                             f"(a {tuple(a.shape)}, b {tuple(b.shape)})")
    if math.ceil(M / 32) * math.ceil(N / 16) > INT_MAX:
        raise ValueError(f"a {M}x{N} output needs more than 2**31-1 blocks")
    out_shape = (batch, M, N) if batched else (M, N)
    bias = _common.optional_tensor(bias, "bias", (M,), dtype, be)
    residual = _common.optional_tensor(residual, "residual", out_shape, dtype, be)
    act = _common.activation_code(activation)
    cfg = None if config is None else _resolve_named(config, "gemm", kdt)
    reason = _arch_reason(kdt if kdt != "tf32" else "tf32", device_arch(be)[0])
    if reason:
        raise ValueError(f"tc_gemm cannot run here: {reason}")
    _common.same_device(be, a=a, b=b, bias=bias, residual=residual, out=out)
    out = _common.prepare_out(out, out_shape, dtype, be,
                              inputs=(("a", a), ("b", b), ("bias", bias), ("residual", residual)))
    tc_gemm_launch(be, a, b, out, M, N, K, batch=batch, stride_a=M * K if a.ndim == 3 else 0,
                   stride_b=K * N if b.ndim == 3 else 0, stride_c=M * N, bias=bias, act=act,
                   residual=residual, config=cfg, kdt=kdt)
    return out


# --------------------------------------------------------------------------- convolution
def _pad_to(c: int, kdt: str) -> int:
    v = DTYPES[kdt][3][0]
    return -(-c // v) * v


def _conv_limits(p: Conv2dProblem) -> str | None:
    M = p.N * p.P * p.Q
    if M > INT_MAX - 256:
        return f"M = N·P·Q = {M} is too large for 32-bit tile indices"
    if p.K > INT_MAX - 256 or p.C * p.R * p.S > INT_MAX - 256:
        return f"K = {p.K} or C·R·S = {p.C * p.R * p.S} is too large for 32-bit indices"
    if p.N > GRID_YZ_MAX or p.K > GRID_YZ_MAX:
        return f"N = {p.N} and K = {p.K} must be <= {GRID_YZ_MAX} (grid limit of the layout pack)"
    if p.H * p.W > GRID_YZ_MAX * 32:
        return f"H·W = {p.H * p.W} is above the layout pack's grid limit {GRID_YZ_MAX * 32}"
    blocks = p.groups * math.ceil(M / 32) * math.ceil(p.K_per_group / 16)
    if blocks > INT_MAX:
        return f"needs {blocks} blocks, more than a 1-D grid holds"
    return None


def choose_conv_config(kdt: str, p: Conv2dProblem, vec: int, cc: int = 90, sms: int = 132) -> TcConfig:
    """The default convolution config (a heuristic, not tuned by measurement yet): the
    128x128 tile when K/groups > 64, 16-byte copies are possible and it gives every SM a
    block; else 64x64 (small M·K/groups, misaligned channels, grouped layers). sm_75 takes
    the 2-stage fp16 configs."""
    M = p.N * p.P * p.Q
    full = DTYPES[kdt][3][0]
    big = math.ceil(M / 128) * math.ceil(p.K_per_group / 128) * p.groups
    if vec == full and p.K_per_group > 64 and big >= sms:
        return _find("conv", kdt, 128, 2 if cc < 80 else 4, vec)
    return _find("conv", kdt, 64, 2 if cc < 80 else 3, vec)


def conv_plan(be, p: Conv2dProblem, x, w, layout: str, kdt: str, config=None):
    """(config, pack, Cgp): which kernel runs, whether x and w are packed to NHWC/KRSC with
    Cg padded to Cgp first (NCHW input; NHWC input that no copy width fits), and Cgp."""
    if config == "simple":
        return "simple", False, p.C_per_group
    cc, sms = device_arch(be)
    Cg = p.C_per_group
    vec = _pick_vec(kdt, (Cg,), (x, w)) if layout == "NHWC" else None
    pack = vec is None
    Cgp = _pad_to(Cg, kdt) if pack else Cg
    if config is None:
        config = choose_conv_config(kdt, p, vec or DTYPES[kdt][3][0], cc, sms)
    reason = config.can_implement(p.with_(C=p.groups * Cgp), cc=cc)
    if reason is None and not pack and not (_ptr_ok(x, config.vec * config.esize)
                                            and _ptr_ok(w, config.vec * config.esize)):
        reason = f"{config.name} needs input and weight {config.vec * config.esize}-byte aligned"
    if reason:
        raise ValueError(f"config {config.name} cannot run {p.describe()} ({layout}): {reason}")
    return config, pack, Cgp


def conv_workspace_bytes(p: Conv2dProblem, layout: str = "NCHW") -> int:
    """Workspace of the packed path: x and w with channels padded (NCHW input always; NHWC only
    when no cp.async width divides C/groups — ``tc_conv2d`` decides that from the pointers too)."""
    kdt = _kernel_dtype(p.dtype)
    if kdt not in DTYPES:
        return 0
    Cgp = _pad_to(p.C_per_group, kdt)
    if layout == "NHWC" and p.C_per_group % DTYPES[kdt][3][-1] == 0:
        return 0
    return (p.N * p.H * p.W * p.groups * Cgp + p.K * p.R * p.S * Cgp) * DTYPES[kdt][2]


def _pack(be, src, n, C, HW, groups, Cgp, strides, kdt):
    """tc_pack_nhwc: (n, C, HW) with the given element strides -> NHWC, channels padded per group."""
    dst = be.empty((n * HW * groups * Cgp,), src.dtype)
    aux = AUX[("tc_pack_nhwc", kdt)]
    grid = (math.ceil(groups * Cgp / 32), math.ceil(HW / 32), n)
    launch(be, CONV_FILE, aux.expression, grid, (256, 1, 1),
           (src, dst, i32(n), i32(C), i32(HW), i32(groups), i32(Cgp), i64(strides[0]), i64(strides[1]),
            i64(strides[2])))
    return dst


def conv_launch(be, p: Conv2dProblem, x, w, bias, act, residual, out, *, layout: str, kdt: str,
                config=None) -> None:
    """Run the convolution (internal: arguments already checked, ``out`` allocated)."""
    cfg, pack, Cgp = conv_plan(be, p, x, w, layout, kdt, config)
    has_bias, has_res = bias is not None, residual is not None
    ph = _common.placeholder(be, out.dtype)
    common = (bias if has_bias else ph, i32(has_bias), residual if has_res else ph, i32(has_res), out,
              i32(p.N), i32(p.H), i32(p.W))
    geom = (i32(p.K), i32(p.R), i32(p.S), i32(p.P), i32(p.Q), i32(p.stride_h), i32(p.stride_w),
            i32(p.pad_h), i32(p.pad_w), i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(act))
    HW, Cg = p.H * p.W, p.C_per_group
    if cfg == "simple":
        if layout == "NCHW":
            xs = (p.C * HW, HW, p.W, 1)
            ws = (Cg * p.R * p.S, p.R * p.S, p.S, 1)
            os_ = (p.K * p.P * p.Q, p.P * p.Q, p.Q, 1)
        else:
            xs = (HW * p.C, 1, p.W * p.C, p.C)
            ws = (p.R * p.S * Cg, 1, p.S * Cg, Cg)
            os_ = (p.P * p.Q * p.K, 1, p.Q * p.K, p.K)
        aux = AUX[("tc_conv_simple", kdt)]
        grid = (p.groups * math.ceil(p.N * p.P * p.Q / 32) * math.ceil(p.K_per_group / 16), 1, 1)
        launch(be, CONV_FILE, aux.expression, grid, (128, 1, 1),
               (x, w, *common, i32(p.C), *geom, *(i64(v) for v in (*xs, *ws, *os_))))
        return
    if pack:
        strides = (p.C * HW, HW, 1) if layout == "NCHW" else (HW * p.C, 1, p.C)
        x = _pack(be, x, p.N, p.C, HW, p.groups, Cgp, strides, kdt)
        RS = p.R * p.S
        strides = (Cg * RS, RS, 1) if layout == "NCHW" else (RS * Cg, 1, Cg)
        w = _pack(be, w, p.K, Cg, RS, 1, Cgp, strides, kdt)
    M = p.N * p.P * p.Q
    grid = (p.groups * math.ceil(M / cfg.bm) * math.ceil(p.K_per_group / cfg.bn), 1, 1)
    launch(be, CONV_FILE, cfg.expression, grid, (cfg.threads, 1, 1),
           (x, w, *common, i32(p.groups * Cgp), *geom, i32(layout == "NCHW")), shared_mem=cfg.smem_bytes)


def tc_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NHWC",
              allow_tf32=False, activation=None, residual=None, out=None, config=None):
    """2-D convolution on tensor cores (cross-correlation, torch.nn.functional.conv2d's arguments).

    ``layout="NHWC"``: ``x`` is (N, H, W, C), ``w`` is (K, R, S, C/groups) (KRSC), the output
    and ``residual`` are (N, P, Q, K). ``layout="NCHW"``: x (N, C, H, W), w (K, C/groups, R, S),
    output (N, K, P, Q) — run through an NHWC workspace (see the module docstring).
    float16 / bfloat16, or float32 with ``allow_tf32=True``; fp32 accumulation; the output, bias
    (K,) and residual have the input dtype. ``config``: None, "simple" or a conv config name.
    """
    be = current_backend()
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    x = _common.as_tensor(x, "input", ndim=4, dtypes=("float16", "bfloat16", "float32"), be=be)
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=("float16", "bfloat16", "float32"), be=be)
    dtype = np.dtype(x.dtype)
    if np.dtype(w.dtype) != dtype:
        raise TypeError(f"input and weight must have the same dtype, got {dtype.name} and {np.dtype(w.dtype).name}")
    kdt = _check_dtype(dtype.name, allow_tf32, "tc_conv2d")
    if layout == "NHWC":
        n, h, wd, c = x.shape
        k, r, s, cg = w.shape
        x_shape, w_shape = (n, c, h, wd), (k, cg, r, s)
    else:
        x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    p = Conv2dProblem.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, dtype.name)
    out_shape = p.output_shape if layout == "NCHW" else (p.N, p.P, p.Q, p.K)
    bias = _common.optional_tensor(bias, "bias", (p.K,), dtype, be)
    residual = _common.optional_tensor(residual, "residual", out_shape, dtype, be)
    act = _common.activation_code(activation)
    cfg = None if config is None else _resolve_named(config, "conv", kdt)
    reason = _conv_limits(p) or _arch_reason(kdt, device_arch(be)[0])
    if reason:
        raise ValueError(f"tc_conv2d cannot run {p.describe()}: {reason}")
    _common.same_device(be, input=x, weight=w, bias=bias, residual=residual, out=out)
    out = _common.prepare_out(out, out_shape, dtype, be,
                              inputs=(("input", x), ("weight", w), ("bias", bias), ("residual", residual)))
    conv_launch(be, p, x, w, bias, act, residual, out, layout=layout, kdt=kdt, config=cfg)
    return out


# --------------------------------------------------------------------------- conv2d algorithms
def _can_implement(problem: Conv2dProblem) -> str | None:
    kdt = _kernel_dtype(problem.dtype)
    if kdt not in DTYPES:
        return f"tensor cores take float16, bfloat16 or float32 (as tf32), got {problem.dtype}"
    reason = _conv_limits(problem)
    if reason is None:
        try:
            cc = device_arch(current_backend())[0]
        except Exception:  # no device: the launch itself reports that, not the problem check
            return None
        reason = _arch_reason(kdt, cc)
    return reason


def _run(be, problem, x, w, bias, act_code, residual, out, *, max_workspace_bytes=None, config=None,
         layout="NCHW", allow_tf32=None, algo_name="implicit_gemm_tc", **extra) -> None:
    if extra:
        raise TypeError(f"algo={algo_name!r} takes config=, layout= and allow_tf32= as extra arguments, "
                        f"got {sorted(extra)}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"algo={algo_name!r}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    kdt = _kernel_dtype(problem.dtype)
    if kdt == "tf32" and allow_tf32 is False:
        raise ValueError(f"algo={algo_name!r} multiplies float32 as tf32, but allow_tf32=False was passed")
    cfg = None if config is None else _resolve_named(config, "conv", kdt)
    if algo_name == "implicit_gemm_tc_simple":
        cfg = "simple"
    conv_launch(be, problem, x, w, bias, act_code, residual, out, layout=layout, kdt=kdt, config=cfg)


def _workspace(problem: Conv2dProblem, limit=None) -> int:
    return conv_workspace_bytes(problem, "NCHW")


def _auto_priority_tc(problem: Conv2dProblem) -> float | None:
    """``auto`` rule: 20 for float16/bfloat16 — the only fast path for these dtypes, and for
    dense layers with enough output channels per group (K/groups >= 8) it is the fastest kernel
    cuconv has. Depthwise-like layers (K/groups < 8) get 2: a 16-column warp tile would be
    mostly idle, but nothing else in cuconv takes 16-bit inputs."""
    if problem.dtype not in ("float16", "bfloat16"):
        return None
    return 20.0 if problem.K_per_group >= 8 else 2.0


def _auto_priority_simple(problem: Conv2dProblem) -> float | None:
    """``auto`` rule: 1 — only when the fast kernel's workspace (NCHW -> NHWC pack) does not
    fit in max_workspace_bytes; the simple kernel reads NCHW in place but is far slower."""
    return 1.0 if problem.dtype in ("float16", "bfloat16", "float32") else None


register_algorithm(ConvAlgorithm(
    name="implicit_gemm_tc",
    can_implement=_can_implement,
    run=functools.partial(_run, algo_name="implicit_gemm_tc"),
    workspace_bytes=_workspace,
    auto_priority=_auto_priority_tc,
    dtypes=("float16", "bfloat16"),
    layouts=("NCHW", "NHWC"),
    description="tensor-core implicit GEMM (mma.sync, ldmatrix, cp.async pipeline), fp32 accumulation; "
                "NCHW packed to NHWC in a workspace",
))
register_algorithm(ConvAlgorithm(
    name="implicit_gemm_tc_simple",
    can_implement=_can_implement,
    run=functools.partial(_run, algo_name="implicit_gemm_tc_simple"),
    auto_priority=_auto_priority_simple,
    dtypes=("float16", "bfloat16", "float32"),
    layouts=("NCHW", "NHWC"),
    tf32=True,
    description="tensor-core implicit GEMM, analytic variant: one warp per 16x8 tile, fragments "
                "gathered from global memory; any layout, no workspace (float32 runs as tf32)",
))
register_algorithm(ConvAlgorithm(
    name="implicit_gemm_tf32",
    can_implement=_can_implement,
    run=functools.partial(_run, algo_name="implicit_gemm_tf32"),
    workspace_bytes=_workspace,
    # For float32 cuconv.conv2d considers it only with allow_tf32=True (then above every exact
    # fp32 algorithm, see ops/conv2d.py TF32_PRIORITY); 20 orders it above the simple variant.
    auto_priority=lambda problem: 20.0 if problem.dtype == "float32" else None,
    dtypes=("float32",),
    layouts=("NCHW", "NHWC"),
    tf32=True,
    description="float32 convolution on tf32 tensor cores (operands rounded to 10-bit mantissas, "
                "fp32 accumulation); auto considers it only with allow_tf32=True",
))
