"""Hopper warpgroup tensor cores: implicit-GEMM convolution on ``wgmma.mma_async`` (sm_90a).

Kernels: ``kernels/wgmma_conv.cu`` (the convolution) and ``kernels/wgmma_probe.cu`` (probes of
the wgmma / mbarrier / async-proxy layer at the end of ``kernels/common.cuh``, used by
``tests/test_wgmma_conv.py``). The emulator's exact model of those instructions is
``cuconv/emulator/include/cuconv_emu/tensor_core.h``; the facts and their sources are in
``docs/wgmma.md``.

* conv2d algorithm ``"implicit_gemm_wgmma"``: float16 / bfloat16, fp32 accumulation, fused
  bias / residual / activation, NHWC activations with KRSC weights, or NCHW / KCRS (packed to
  NHWC with channels padded to a multiple of 8 by tc_conv.cu's ``tc_pack_nhwc`` first, as
  ``implicit_gemm_tc`` does). Needs an sm_90 device (H100, H200); the emulator counts as one.
  ``auto`` does not pick it from here (``auto_priority`` is None): the plan layer's rule table
  decides when it is preferred on sm_90 devices.
* ``conv_launch(be, problem, x, w, bias, act, residual, out, layout, config)`` launches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import emulator
from ..backend import current_backend
from ..compile import BASE_OPTIONS, KernelEntry, load_source, register_kernel, source_hash
from ..problem import Conv2dProblem
from . import _common
from . import tensor_core as tc
from ._common import i32
from .conv2d import ConvAlgorithm, register_algorithm

CONV_FILE = "wgmma_conv.cu"
PROBE_FILE = "wgmma_probe.cu"
ARCHS = ("sm_90a",)
BK = 64      # channels per K tile: 128 bytes of 16-bit data, one 128-byte swizzle row
VEC = 8      # channels per 16-byte cp.async; C/groups must be a multiple of it (else packed)
DTYPES = {"float16": ("f16", "__half"), "bfloat16": ("bf16", "__nv_bfloat16")}


@dataclass(frozen=True)
class WgmmaConvConfig:
    """One instantiation of ``wgmma_conv<T, BM, BN, STAGES, MINB>``: a BM x BN x 64 block tile,
    BM/64 warpgroups each issuing m64nBNk16 wgmmas, a STAGES-deep cp.async + mbarrier ring
    (1: the synchronous variant), MINB resident blocks per SM promised."""
    dtype: str
    bm: int
    bn: int
    stages: int
    min_blocks: int = 1
    main: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"wgmma_conv takes float16 or bfloat16, got {self.dtype!r}")
        if self.bm % 64 or self.bn not in (64, 128) or not (self.stages == 1 or self.stages >= 3):
            raise ValueError(f"inconsistent wgmma config {self.name}")

    @property
    def name(self) -> str:
        return f"wgmma_conv_{DTYPES[self.dtype][0]}_{self.bm}x{self.bn}x{BK}_s{self.stages}"

    @property
    def expression(self) -> str:
        return f"wgmma_conv<{DTYPES[self.dtype][1]}, {self.bm}, {self.bn}, {self.stages}, {self.min_blocks}>"

    @property
    def threads(self) -> int:
        return self.bm // 64 * 128

    @property
    def smem_bytes(self) -> int:
        """WgmmaConvShape::SMEM: 1 KiB to align the stages, the stages (or the epilogue's
        staging tile, whichever is larger), two mbarriers per stage."""
        stages = self.stages * (self.bm + self.bn) * 128
        staging = self.bm * (self.bn + 8) * 4
        return 1024 + max(stages, staging) + (16 * self.stages if self.stages > 1 else 0)

    def can_implement(self, problem: Conv2dProblem, cc: int = 90) -> str | None:
        """None if this config can run ``problem`` as the kernel sees it (NHWC, C/groups after
        any padding by the pack), else why not."""
        if problem.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {problem.dtype}"
        if problem.C_per_group % VEC:
            return (f"C/groups = {problem.C_per_group} is not a multiple of {VEC}: {self.name} copies {VEC} "
                    f"channels (16 bytes) of a pixel at a time")
        return _device_reason(cc) or tc._conv_limits(problem)

    def entry(self) -> KernelEntry:
        return KernelEntry(CONV_FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks, dynamic_smem=self.smem_bytes,
                           options=tc.cuda_include_options(), archs=ARCHS, main=self.main)


def _configs() -> tuple[WgmmaConvConfig, ...]:
    """Per dtype: the 128x128 main config (2 warpgroups, 4 stages, 1 block/SM), 64x128 for small
    M (2 blocks/SM), 64x64 for small M·K (4 blocks/SM) and the synchronous 64x64 variant.
    Occupancy reasoning in the kernel file's header."""
    out = []
    for dt in DTYPES:
        out += [WgmmaConvConfig(dt, 128, 128, 4, min_blocks=1, main=True),
                WgmmaConvConfig(dt, 64, 128, 4, min_blocks=2),
                WgmmaConvConfig(dt, 64, 64, 3, min_blocks=4),
                WgmmaConvConfig(dt, 64, 64, 1, min_blocks=4)]
    return tuple(out)


CONFIGS = _configs()
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
for _cfg in CONFIGS:
    register_kernel(_cfg.entry())

PROBES = {"wgmma_probe_mma": 128, "wgmma_probe_mbarrier": 128}
for _name, _threads in PROBES.items():
    register_kernel(KernelEntry(PROBE_FILE, _name, _name, block_threads=_threads, archs=ARCHS))


# --------------------------------------------------------------------------- planning
def _device_reason(cc: int) -> str | None:
    if cc != 90:
        return (f"wgmma.mma_async exists only on sm_90a (H100, H200); this device is sm_{cc}: use "
                f"implicit_gemm_tc")
    return None


def choose_config(problem: Conv2dProblem, sms: int = 132) -> WgmmaConvConfig:
    """The default config (a heuristic, not yet tuned on a device): the 128x128 tile when
    K/groups > 64 and it gives every SM a block; else 64x128 when K/groups > 64; else 64x64."""
    M = problem.N * problem.P * problem.Q
    Kg = problem.K_per_group
    big = math.ceil(M / 128) * math.ceil(Kg / 128) * problem.groups
    if Kg > 64 and big >= sms:
        bm, bn, st = 128, 128, 4
    elif Kg > 64:
        bm, bn, st = 64, 128, 4
    else:
        bm, bn, st = 64, 64, 3
    return next(c for c in CONFIGS if (c.dtype, c.bm, c.bn, c.stages) == (problem.dtype, bm, bn, st))


def _resolve(config, dtype: str) -> WgmmaConvConfig | None:
    if config is None or isinstance(config, WgmmaConvConfig):
        return config
    cfg = CONFIGS_BY_NAME.get(config)
    if cfg is None:
        names = ", ".join(c.name for c in CONFIGS if c.dtype == dtype)
        raise ValueError(f"unknown wgmma config {config!r}; {dtype} configs: {names}")
    return cfg


def needs_pack(problem: Conv2dProblem, layout: str, x=None, w=None) -> bool:
    """NCHW input always goes through the NHWC pack; NHWC input only when C/groups is not a
    multiple of 8 or the arrays are not 16-byte aligned."""
    if layout == "NCHW" or problem.C_per_group % VEC:
        return True
    return not (tc._ptr_ok(x, 16) and tc._ptr_ok(w, 16))


def workspace_bytes(problem: Conv2dProblem, limit=None, layout: str = "NCHW") -> int:
    """Bytes of the packed x and w (channels padded to a multiple of 8 per group), or 0 when
    NHWC input runs in place. ConvAlgorithm.workspace_bytes does not get the layout, so the
    registry sees the NCHW figure (the plan layer is to pass it)."""
    if not needs_pack(problem, layout):
        return 0
    cgp = -(-problem.C_per_group // VEC) * VEC
    return (problem.N * problem.H * problem.W * problem.groups * cgp + problem.K * problem.R * problem.S * cgp) * 2


# --------------------------------------------------------------------------- launching
def conv_launch(be, problem: Conv2dProblem, x, w, bias, act: int, residual, out, layout: str = "NHWC",
                config=None) -> None:
    """Run the convolution (arguments already checked, ``out`` allocated in ``layout``):
    pack to NHWC/KRSC when needed, then one wgmma_conv launch."""
    p = problem
    cfg = _resolve(config, p.dtype) or choose_config(p, tc.device_arch(be)[1])
    cc = tc.device_arch(be)[0]
    pack = needs_pack(p, layout, x, w)
    cgp = -(-p.C_per_group // VEC) * VEC if pack else p.C_per_group
    reason = cfg.can_implement(p.with_(C=p.groups * cgp), cc=cc)
    if reason:
        raise ValueError(f"config {cfg.name} cannot run {p.describe()} ({layout}): {reason}")
    HW, Cg, RS = p.H * p.W, p.C_per_group, p.R * p.S
    if pack:
        strides = (p.C * HW, HW, 1) if layout == "NCHW" else (HW * p.C, 1, p.C)
        x = tc._pack(be, x, p.N, p.C, HW, p.groups, cgp, strides, p.dtype)
        strides = (Cg * RS, RS, 1) if layout == "NCHW" else (RS * Cg, 1, Cg)
        w = tc._pack(be, w, p.K, Cg, RS, 1, cgp, strides, p.dtype)
    bias_a, has_bias, res_a, has_res = _common.optional_pointer_args(be, bias, residual, out.dtype)
    M = p.N * p.P * p.Q
    grid = (p.groups * math.ceil(M / cfg.bm) * math.ceil(p.K_per_group / cfg.bn), 1, 1)
    args = (x, w, bias_a, has_bias, res_a, has_res, out, i32(p.N), i32(p.H), i32(p.W), i32(p.groups * cgp),
            i32(p.K), i32(p.R), i32(p.S), i32(p.P), i32(p.Q), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h),
            i32(p.pad_w), i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(act), i32(layout == "NCHW"))
    launch(be, CONV_FILE, cfg.expression, grid, (cfg.threads, 1, 1), args, shared_mem=cfg.smem_bytes)


# --------------------------------------------------------------------------- conv2d algorithm
def _can_implement(problem: Conv2dProblem) -> str | None:
    if problem.dtype not in DTYPES:
        return f"wgmma takes float16 or bfloat16, got {problem.dtype}"
    reason = tc._conv_limits(problem)
    if reason is None:
        be = current_backend()
        try:
            cc = tc.device_arch(be)[0]
        except Exception:  # no device: the launch itself reports that, not the problem check
            return None
        reason = _device_reason(cc)
    return reason


def _run(be, problem, x, w, bias, act_code, residual, out, *, max_workspace_bytes=None, config=None,
         layout="NCHW", **extra) -> None:
    if extra:
        raise TypeError(f"algo='implicit_gemm_wgmma' takes config= and layout= as extra arguments, got {sorted(extra)}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"algo='implicit_gemm_wgmma': layout must be 'NCHW' or 'NHWC', got {layout!r}")
    conv_launch(be, problem, x, w, bias, act_code, residual, out, layout, config)


register_algorithm(ConvAlgorithm(
    name="implicit_gemm_wgmma",
    can_implement=_can_implement,
    run=_run,
    workspace_bytes=workspace_bytes,
    auto_priority=lambda problem: None,   # the plan layer's rule table decides (sm_90 devices)
    dtypes=tuple(DTYPES),
    layouts=("NCHW", "NHWC"),
    description="Hopper tensor-core implicit GEMM (wgmma.mma_async from 128-byte-swizzled shared memory, "
                "cp.async + mbarrier ring), fp32 accumulation; sm_90a only; NCHW packed to NHWC",
))


_EMU_MODULES: dict = {}


def launch_options(be) -> tuple[str, ...]:
    """On the GPU: the CUDA include path and -arch=sm_90a. CuPy's RawModule adds -arch=sm_90 for
    an sm_90 device, which lacks wgmma; NVRTC 13 given both builds for sm_90a (checked: with
    both options __CUDA_ARCH_FEAT_SM90_ALL is defined and wgmma assembles, with -arch=sm_90
    alone ptxas rejects it). The emulator takes neither."""
    return tc.launch_options(be, "-arch=sm_90a") if be.name == "cupy" else ()


def launch(be, file: str, expression: str, grid, block, args, shared_mem: int = 0) -> None:
    """``be.launch`` with the CUDA include path on the GPU. On the emulator without sanitizers,
    one library per file holding every config of it (a g++ build costs ~10 s + ~3 s per
    instantiation; the backend's own modules would rebuild once per new config, because the
    registered entries carry the GPU's include option)."""
    if be.name != "emulator" or getattr(be, "sanitize", None):
        be.launch(file, expression, grid, block, args, shared_mem=shared_mem, options=launch_options(be))
        return
    names = tuple(c.expression for c in CONFIGS) if file == CONV_FILE else tuple(PROBES)
    source = load_source(file)
    settings = {k: getattr(be, k) for k in ("order", "seed", "timeout") if getattr(be, k, None) is not None}
    key = (file, source_hash(source), tuple(sorted(settings.items())))
    mod = _EMU_MODULES.get(key)
    if mod is None:
        mod = emulator.RawModule(code=source, options=BASE_OPTIONS, name_expressions=list(names),
                                 source_name=file, **settings)
        _EMU_MODULES[key] = mod
    mod.get_function(expression)(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


__all__ = ["CONFIGS", "CONFIGS_BY_NAME", "WgmmaConvConfig", "choose_config", "conv_launch", "needs_pack",
           "workspace_bytes", "launch"]
