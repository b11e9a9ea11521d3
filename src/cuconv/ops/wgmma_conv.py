"""Hopper warpgroup tensor cores: implicit-GEMM convolution on ``wgmma.mma_async`` (sm_90a).

Kernel: ``kernels/wgmma_conv.cu`` (its header tells the variants and the configs' occupancy).
The wgmma / mbarrier / async-proxy layer it uses sits at the end of ``kernels/common.cuh``; its
probes are ``kernels/wgmma_probe.cu`` (ops/wgmma_probe.py). The emulator's exact model of those
instructions is ``cuconv/emulator/include/cuconv_emu/tensor_core.h``; the facts and their
sources are in ``docs/wgmma.md``.

* conv2d algorithm ``"implicit_gemm_wgmma"``: float16 / bfloat16, fp32 accumulation, fused
  bias / residual / activation; ``config=`` names a config. NHWC activations with KRSC weights
  run in place when C/groups is a multiple of 8 and both arrays are 16-byte aligned; NCHW /
  KCRS input (and NHWC input that is not) is first packed to NHWC with channels padded to a
  multiple of 8 by tc_conv.cu's ``tc_pack_nhwc``, as ``implicit_gemm_tc`` does; the plan's
  workspace is exactly what its pack launches write. Only on sm_90 devices (H100, H200): the
  kernels are built for the arch-specific target sm_90a, and a plan for any other device is
  refused with the reason. ``auto`` prefers it there (ops/heuristics.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..dtypes import TENSOR_CORE_DTYPES, ctype, tag
from ..plan import Launch, PlanError, Ref, TensorMapArg, layout_buffers
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from ..tensor_map import TensorMapSpec
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32
from .tc_common import conv_limits
from .tc_conv import pack_launch, storage_dtype

CONV_FILE = "wgmma_conv.cu"
ARCHS = ("sm_90a",)
BK = 64      # channels per K tile: 128 bytes of 16-bit data, one 128-byte swizzle row
VEC = 8      # channels per 16-byte cp.async; C/groups must be a multiple of it (else packed)


@dataclass(frozen=True)
class WgmmaConvConfig:
    """One instantiation of ``wgmma_conv<T, BM, BN, STAGES, MINB>``: a BM x BN x 64 block tile,
    BM/64 warpgroups each issuing m64nBNk16 wgmmas, a STAGES-deep cp.async + mbarrier ring
    (1: the synchronous variant), MINB resident blocks per SM promised; or, with ``tma``,
    ``wgmma_conv_tma<T, STAGES>``: the warp-specialized persistent kernel (a TMA producer
    warpgroup, two ping-pong consumer warpgroups with a 128 x 128 tile each)."""
    dtype: str
    bm: int
    bn: int
    stages: int
    min_blocks: int = 1
    main: bool = False
    tma: bool = False

    def __post_init__(self):
        if self.dtype not in TENSOR_CORE_DTYPES:
            raise ValueError(f"wgmma_conv takes float16 or bfloat16, got {self.dtype!r}")
        if self.bm % 64 or self.bn not in (64, 128) or not (self.stages == 1 or self.stages >= 3):
            raise ValueError(f"inconsistent wgmma config {self.name}")
        if self.tma and (self.bm, self.bn, self.min_blocks) != (128, 128, 1):
            raise ValueError(f"the TMA kernel has 128 x 128 tiles and one block per SM: {self.name}")

    @property
    def name(self) -> str:
        return f"wgmma_conv_{tag(self.dtype)}_{self.bm}x{self.bn}x{BK}_{'tma_' if self.tma else ''}s{self.stages}"

    @property
    def expression(self) -> str:
        if self.tma:
            return f"wgmma_conv_tma<{ctype(self.dtype)}, {self.stages}>"
        return f"wgmma_conv<{ctype(self.dtype)}, {self.bm}, {self.bn}, {self.stages}, {self.min_blocks}>"

    @property
    def threads(self) -> int:
        return 384 if self.tma else self.bm // 64 * 128

    @property
    def smem_bytes(self) -> int:
        """WgmmaConvShape::SMEM: 1 KiB to align the stages, the stages (or the epilogue's
        staging tile, whichever is larger), two mbarriers per stage; WgmmaTmaShape::SMEM: the
        stages and 2·STAGES + 2 mbarriers (the epilogue stores from registers)."""
        stages = self.stages * (self.bm + self.bn) * 128
        if self.tma:
            return 1024 + stages + 8 * (2 * self.stages + 2)
        staging = self.bm * (self.bn + 8) * 4
        return 1024 + max(stages, staging) + (16 * self.stages if self.stages > 1 else 0)

    def can_implement(self, problem: Conv2dProblem, cc: int = 90) -> str | None:
        """None if this config can run ``problem`` as the kernel sees it (NHWC, C/groups after
        any padding by the pack) on a device of compute capability ``cc``, else why not."""
        if problem.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {problem.dtype}"
        if problem.C_per_group % VEC:
            return (f"C/groups = {problem.C_per_group} is not a multiple of {VEC}: {self.name} copies {VEC} "
                    f"channels (16 bytes) of a pixel at a time")
        return device_reason(cc) or conv_limits(problem) or (tma_reason(problem, self.name) if self.tma else None)

    def entry(self) -> KernelEntry:
        return KernelEntry(CONV_FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks, dynamic_smem=self.smem_bytes,
                           cuda_headers=True, archs=ARCHS, main=self.main)


TMA_STAGES = 7     # 7 x 32 KiB stages: what 227 KiB of shared memory holds
TMA_LIMIT = 128    # im2col corner offsets of a rank-4 map lie in [-128, 127] (cuTensorMapEncodeIm2col)


def tma_reason(p: Conv2dProblem, name: str = "the TMA kernel") -> str | None:
    """Why the TMA kernel cannot run ``p`` (NHWC, C/groups as the kernel sees it), or None: the
    im2col tensor map's limits (corners in [-128, 127], traversal strides <= 8) and groups whose
    64-channel boxes would reach into the next group."""
    lo = (-p.pad_w, -p.pad_h)
    hi = (p.pad_right - (p.S - 1) * p.dilation_w, p.pad_bottom - (p.R - 1) * p.dilation_h)
    if any(not -TMA_LIMIT <= v < TMA_LIMIT for v in lo + hi):
        return (f"{name}: the im2col bounding box's corners {lo} / {hi} (-padding, end padding - (filter-1)·"
                f"dilation) must lie in [-{TMA_LIMIT}, {TMA_LIMIT - 1}] (rank-4 tensor maps)")
    if p.stride_h > 8 or p.stride_w > 8:
        return f"{name}: stride {p.stride_h}x{p.stride_w} is above the tensor map's traversal stride limit 8"
    if p.groups > 1 and p.C_per_group % BK:
        return (f"{name}: with groups, C/groups = {p.C_per_group} must be a multiple of {BK} (a 64-channel box "
                f"would read the next group's channels)")
    return None


def _configs() -> tuple[WgmmaConvConfig, ...]:
    """Per dtype: the warp-specialized TMA config (the main one: 3 warpgroups, 7 stages, 1
    block/SM), the 128x128 cp.async config (2 warpgroups, 4 stages), 64x128 for small M (2
    blocks/SM), 64x64 for small M·K (4 blocks/SM) and the synchronous 64x64 variant. Occupancy
    reasoning in the kernel file's header."""
    out = []
    for dt in TENSOR_CORE_DTYPES:
        out += [WgmmaConvConfig(dt, 128, 128, TMA_STAGES, min_blocks=1, main=True, tma=True),
                WgmmaConvConfig(dt, 128, 128, 4, min_blocks=1, main=True),
                WgmmaConvConfig(dt, 64, 128, 4, min_blocks=2),
                WgmmaConvConfig(dt, 64, 64, 3, min_blocks=4),
                WgmmaConvConfig(dt, 64, 64, 1, min_blocks=4)]
    return tuple(out)


CONFIGS = _configs()
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}


def device_reason(cc: int) -> str | None:
    """Why a device of compute capability ``cc`` cannot run these kernels, or None (sm_90)."""
    if cc != 90:
        return (f"wgmma.mma_async exists only on sm_90a (H100, H200); this device is sm_{cc}: use "
                f"implicit_gemm_tc")
    return None


def choose_config(problem: Conv2dProblem, sms: int = 132) -> WgmmaConvConfig:
    """The default config (a heuristic, not yet tuned on a device): the warp-specialized TMA
    kernel when K/groups > 64 and its tensor maps can describe the problem (tma_reason); else the
    128x128 tile when K/groups > 64 and it gives every SM a block; else 64x128 when K/groups > 64;
    else 64x64. ``problem`` is the convolution as the kernel sees it (C/groups padded to 8)."""
    M = problem.N * problem.P * problem.Q
    Kg = problem.K_per_group
    big = math.ceil(M / 128) * math.ceil(Kg / 128) * problem.groups
    if Kg > 64 and tma_reason(problem) is None:
        return next(c for c in CONFIGS if c.tma and c.dtype == problem.dtype)
    if Kg > 64 and big >= sms:
        bm, bn, st = 128, 128, 4
    elif Kg > 64:
        bm, bn, st = 64, 128, 4
    else:
        bm, bn, st = 64, 64, 3
    return next(c for c in CONFIGS if (c.dtype, c.bm, c.bn, c.stages, c.tma) == (problem.dtype, bm, bn, st, False))


def resolve_config(config, dtype: str) -> WgmmaConvConfig | None:
    """None, a config name or a WgmmaConvConfig -> the registered config (ValueError/TypeError)."""
    if config is None:
        return None
    if isinstance(config, str):
        cfg = CONFIGS_BY_NAME.get(config)
        if cfg is None:
            names = ", ".join(c.name for c in CONFIGS if c.dtype == dtype)
            raise ValueError(f"unknown wgmma config {config!r}; {dtype} configs: {names}")
        return cfg
    if not isinstance(config, WgmmaConvConfig):
        raise TypeError(f"config must be None, a config name or a WgmmaConvConfig, got {type(config).__name__}")
    if config not in ENTRIES:
        raise ValueError(f"wgmma config {config.name} is not a registered instantiation")
    return config


def wgmma_conv_plan(spec: ConvSpec, config=None):
    """The launches of the wgmma convolution for ``spec`` (config None: the heuristic's):
    the NHWC packs when the layout or the channels need them, then one wgmma_conv launch."""
    p, layout = spec.problem, spec.layout
    if p.dtype not in TENSOR_CORE_DTYPES:
        raise PlanError(f"wgmma takes float16 or bfloat16, got {p.dtype}")
    reason = device_reason(spec.caps.cc) or conv_limits(p)
    if reason:
        raise PlanError(reason)
    Cg = p.C_per_group
    pack = layout == "NCHW" or Cg % VEC != 0 or not (spec.aligned("x") and spec.aligned("w"))
    Cgp = -(-Cg // VEC) * VEC if pack else Cg
    cfg = resolve_config(config, p.dtype) or choose_config(p.with_(C=p.groups * Cgp), spec.caps.sms)
    reason = cfg.can_implement(p.with_(C=p.groups * Cgp), cc=spec.caps.cc)
    if reason:
        raise PlanError(f"config {cfg.name} cannot run {p.describe()} ({layout}): {reason}")
    sdt = storage_dtype(p.dtype)
    launches, workspace, xin, win = [], (), X, W
    if pack:
        HW, RS = p.H * p.W, p.R * p.S
        workspace = layout_buffers(("xp", sdt, p.N * HW * p.groups * Cgp), ("wp", sdt, p.K * RS * Cgp))
        xin, win = Ref("xp"), Ref("wp")
        strides = (p.C * HW, HW, 1) if layout == "NCHW" else (HW * p.C, 1, p.C)
        launches.append(pack_launch(p.dtype, X, xin, p.N, p.C, HW, p.groups, Cgp, strides))
        strides = (Cg * RS, RS, 1) if layout == "NCHW" else (RS * Cg, 1, Cg)
        launches.append(pack_launch(p.dtype, W, win, p.K, Cg, RS, 1, Cgp, strides))
    ph = Ref.absent(sdt)
    M = p.N * p.P * p.Q
    tiles = p.groups * math.ceil(M / cfg.bm) * math.ceil(p.K_per_group / cfg.bn)
    if cfg.tma:
        maps = tensor_maps(p, Cgp, p.dtype)
        grid = (min(tiles, spec.caps.sms), 1, 1)           # persistent: one block per SM at most
        args = (TensorMapArg(xin, maps[0]), TensorMapArg(win, maps[1]),
                Ref("bias") if spec.has_bias else ph, i32(spec.has_bias),
                Ref("residual") if spec.has_residual else ph, i32(spec.has_residual), OUT,
                i32(p.N), i32(p.K), i32(p.R), i32(p.S), i32(p.P), i32(p.Q), i32(p.stride_h), i32(p.stride_w),
                i32(p.pad_h), i32(p.pad_w), i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(Cgp),
                i32(spec.act), i32(layout == "NCHW"))
        launches.append(Launch(ENTRIES[cfg], grid, (cfg.threads, 1, 1), args, cfg.smem_bytes))
        return conv_plan(spec, "implicit_gemm_wgmma", launches, workspace=workspace,
                         aligned=() if pack else ("x", "w"))
    grid = (tiles, 1, 1)
    args = (xin, win, Ref("bias") if spec.has_bias else ph, i32(spec.has_bias),
            Ref("residual") if spec.has_residual else ph, i32(spec.has_residual), OUT,
            i32(p.N), i32(p.H), i32(p.W), i32(p.groups * Cgp), i32(p.K), i32(p.R), i32(p.S), i32(p.P), i32(p.Q),
            i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w), i32(p.dilation_h), i32(p.dilation_w),
            i32(p.groups), i32(spec.act), i32(layout == "NCHW"))
    launches.append(Launch(ENTRIES[cfg], grid, (cfg.threads, 1, 1), args, cfg.smem_bytes))
    return conv_plan(spec, "implicit_gemm_wgmma", launches, workspace=workspace,
                     aligned=() if pack else ("x", "w"))


def tensor_maps(p: Conv2dProblem, Cg: int, dtype: str) -> tuple[TensorMapSpec, TensorMapSpec]:
    """The TMA kernel's two tensor maps for ``p`` with C/groups = ``Cg`` (NHWC x, KRSC w, 16-bit
    elements): x in im2col mode (dims C, W, H, N; bounding box corners (-pad, end pad - (filter-1)·
    dilation), so its rows are Q pixels wide, a cropped problem's too; traversal strides = the conv
    strides, 128 pixels x 64 channels a load), w tiled (dims C/groups, S, R, K; box 64 channels x
    1 x 1 x 128 filters); 128-byte swizzle."""
    e, C = 2, p.groups * Cg
    x = TensorMapSpec("im2col", dtype, (C, p.W, p.H, p.N), (C * e, p.W * C * e, p.H * p.W * C * e),
                      element_strides=(1, p.stride_w, p.stride_h, 1), lower=(-p.pad_w, -p.pad_h),
                      upper=(p.pad_right - (p.S - 1) * p.dilation_w, p.pad_bottom - (p.R - 1) * p.dilation_h),
                      channels_per_pixel=BK, pixels_per_column=128)
    w = TensorMapSpec("tiled", dtype, (Cg, p.S, p.R, p.K), (Cg * e, p.S * Cg * e, p.R * p.S * Cg * e),
                      element_strides=(1, 1, 1, 1), box=(BK, 1, 1, 128))
    return x, w


ALGORITHM = ConvAlgorithm(
    name="implicit_gemm_wgmma", plan=lambda spec: wgmma_conv_plan(spec, spec.option("config")),
    dtypes=TENSOR_CORE_DTYPES, layouts=("NCHW", "NHWC"), options=("config",), crops=True,
    description="Hopper tensor-core implicit GEMM (wgmma.mma_async from 128-byte-swizzled shared memory: a "
                "warp-specialized TMA kernel, or a cp.async + mbarrier ring), fp32 accumulation; sm_90 devices "
                "only; NCHW packed to NHWC")

__all__ = ["ALGORITHM", "CONFIGS", "CONFIGS_BY_NAME", "ENTRIES", "WgmmaConvConfig", "choose_config",
           "device_reason", "tensor_maps", "tma_reason", "wgmma_conv_plan"]
