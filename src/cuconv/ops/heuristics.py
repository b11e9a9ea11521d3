"""What ``algo="auto"`` runs, for every pass of a convolution: one ordered rule table per pass.

``auto`` walks the table of the call's pass (``RULES`` for the forward convolution,
``DGRAD_RULES`` for its data gradient, ``WGRAD_RULES`` for its weight gradient; ``RULES_BY_PASS``
holds the three) top to bottom; the first rule whose condition holds for the call and whose
algorithm can plan it (dtype, layout, limits, the workspace cap) wins. A rule whose algorithm
cannot plan the call is passed over, so a table reads as "prefer this, else that". Every rule
says why it sits where it does. The order follows operation counts and
memory traffic (the textbook's §8, cuconv.fft_math's FFT counts and the kernels' static
analysis); no GPU measurement backs it yet — ``cuconv bench algos`` on a device is how it will be checked, and a change of policy
shows up as a diff of ``tests/test_heuristics.py``'s golden table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import fft_math
from ..dtypes import TENSOR_CORE_DTYPES
from ._algorithm import DGRAD, FPROP, WGRAD, ConvSpec

# Winograd pays when the per-tile transforms (O(α²) per input and per output channel) are
# amortised over the K·C channel pairs whose multiplications it saves.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_F4_MIN_CHANNELS = 64
WINOGRAD_F4_MIN_OUTPUT = 8
# Below this many output channels per group a GEMM tile's N dimension is mostly idle.
GEMM_MIN_OUTPUT_CHANNELS = 8
# FFT convolution (a modelled choice: no GPU run has measured it yet). Its stages stream the
# spectra through global memory (cuFFT's transforms and the per-frequency channel GEMM are
# bandwidth-bound) where the tiled GEMMs reuse every load from shared memory and registers, so
# it is taken only when cuconv.fft_math counts at most FFT_MAX_FLOP_RATIO of the direct FLOPs,
# and never below 5x5 (3x3 is Winograd's).
FFT_MIN_TAPS = 25
FFT_MAX_FLOP_RATIO = 0.2


@dataclass(frozen=True)
class Rule:
    algo: str
    when: Callable[[ConvSpec], bool]
    reason: str


def _depthwise(s: ConvSpec) -> bool:
    return s.problem.groups == s.problem.C and s.problem.C > 1


def _tf32(s: ConvSpec) -> bool:
    return s.dtype == "float32" and s.allow_tf32 is True


def _half(s: ConvSpec) -> bool:
    return s.dtype in TENSOR_CORE_DTYPES


def _wide(s: ConvSpec) -> bool:
    return s.problem.K_per_group >= GEMM_MIN_OUTPUT_CHANNELS


def _nhwc_in_place_for_mma_sync_only(s: ConvSpec) -> bool:
    """NHWC with C/groups not a multiple of 8: mma.sync's 4-byte cp.async (2-byte element copies
    for odd counts) reads it in place, wgmma's 16-byte copies would need the NHWC pack (a
    conversion step of the plan)."""
    return s.layout == "NHWC" and s.problem.C_per_group % 8 != 0


def _pointwise_nhwc(s: ConvSpec) -> bool:
    p = s.problem
    return p.R == p.S == 1 and not (p.pad_h or p.pad_w or p.pad_bottom or p.pad_right)


def _winograd(s: ConvSpec, channels: int) -> bool:
    return s.problem.C >= channels and s.problem.K >= channels


def fft_choice(s: ConvSpec) -> str | None:
    """"fft" or "fft_tiling", whichever the cost model counts fewer FLOPs for (filter transforms
    included), when that is at most FFT_MAX_FLOP_RATIO of the direct count; else None."""
    p = s.problem
    if (s.dtype != "float32" or s.layout != "NCHW" or p.R * p.S < FFT_MIN_TAPS
            or fft_math.unsupported_reason(p) is not None):
        return None
    best = min(fft_math.ALGORITHMS, key=lambda a: fft_math.fft_flops(p, a))
    return best if fft_math.fft_flops(p, best) <= FFT_MAX_FLOP_RATIO * p.flops() else None


RULES: tuple[Rule, ...] = (
    Rule("depthwise", _depthwise,
         "groups == C: each input channel has its own filters; the depthwise kernels are built for "
         "this memory-bound per-channel stencil, where a GEMM tile would hold one useful row"),
    Rule("implicit_gemm_tf32", _tf32,
         "allow_tf32=True: tf32 tensor cores give several times the fp32 FMA rate (10-bit mantissa "
         "products, fp32 accumulation); taken only on opt-in, as PyTorch does"),
    Rule("implicit_gemm_tc_simple", _tf32,
         "allow_tf32=True and the fast tf32 kernel cannot run it (e.g. its NHWC pack does not fit "
         "the workspace cap): the analytic tensor-core kernel reads the layout in place"),
    Rule("implicit_gemm_tc",
         lambda s: _half(s) and _wide(s) and s.caps.cc == 90 and _nhwc_in_place_for_mma_sync_only(s),
         "float16/bfloat16 NHWC on sm_90 with C/groups not a multiple of 8 (EfficientNet's "
         "squeeze-excitation convolutions, 3-channel stems): wgmma's 16-byte copies would need the "
         "channels packed to 8 (two conversion launches and a workspace), mma.sync's 4-byte cp.async "
         "(one-element copies for odd counts) reads the layer in place"),
    Rule("implicit_gemm_wgmma", lambda s: _half(s) and _wide(s) and s.caps.cc == 90,
         "float16/bfloat16 on an sm_90 device (H100, H200): Hopper's full tensor-core rate is "
         "reached only by wgmma.mma_async (operands from shared memory, asynchronous), which "
         "mma.sync's register-fed HMMA stays far below; the warp-specialized TMA config where its "
         "tensor maps apply (its main loop's uncapped issue ratio is checked >= 6 by "
         "tests/test_wgmma_conv.py); modelled by the static SASS analysis, not measured"),
    Rule("implicit_gemm_tc", lambda s: _half(s) and _wide(s),
         "float16/bfloat16: the mma.sync tensor-core implicit GEMM, fp32 accumulation"),
    Rule("pointwise", lambda s: s.problem.is_pointwise or (s.layout == "NHWC" and _pointwise_nhwc(s)),
         "1x1, no padding (stride 1 in NCHW): the convolution is exactly a GEMM on the NCHW data (NHWC: "
         "over the input's pixels, any stride, on implicit_gemm's NHWC kernel), with no gather and no "
         "workspace"),
    Rule("fft", lambda s: fft_choice(s) == "fft",
         "stride 1, kernel >= 5x5, and the whole-image transforms count at most 1/5 of the direct "
         "FLOPs and fewer than fft_tiling's overlapping tiles (a kernel large for the image, or a "
         "batch that amortises the whole-image filter spectra): §8.4's O(C_out·C_in·HW·log HW); "
         "modelled, not measured"),
    Rule("fft_tiling", lambda s: fft_choice(s) is not None,
         "stride 1, kernel >= 5x5, and overlap-save tiles count at most 1/5 of the direct FLOPs "
         "(the filter spectra at tile size, a bounded workspace); also where whole-image FFT was "
         "cheaper but cannot run (the workspace cap); modelled, not measured"),
    Rule("winograd_f4x4_3x3",
         lambda s: _winograd(s, WINOGRAD_F4_MIN_CHANNELS)
         and min(s.problem.P, s.problem.Q) >= WINOGRAD_F4_MIN_OUTPUT,
         "3x3 stride 1, C and K >= 64, output >= 8x8: 4x fewer multiplications than direct, and "
         "large enough that the transforms and partial edge tiles are a small share (error ~5-10x "
         "F(2x2,3x3)'s, docs/winograd_accuracy.md)"),
    Rule("winograd_fused_f2x2_3x3", lambda s: _winograd(s, WINOGRAD_MIN_CHANNELS),
         "3x3 stride 1, C and K >= 16: 2.25x fewer multiplications, transforms amortised, and no "
         "V/M round trip through global memory"),
    Rule("implicit_gemm", _wide,
         "the default for dense and grouped layers: every loaded element is reused from shared "
         "memory and registers, no workspace, the input read once per N tile instead of writing "
         "and re-reading a k²-sized column matrix"),
    Rule("im2col_gemm", lambda s: s.layout == "NCHW" or _wide(s),
         "§8.3's general fallback above one-thread-per-output: the column matrix in a bounded "
         "workspace, then the tiled GEMM (NHWC: its GEMM is implicit_gemm's kernel, whose output "
         "channels are the tile's columns, so not below 8 channels per group)"),
    Rule("winograd_f2x2_3x3", lambda s: _winograd(s, WINOGRAD_MIN_CHANNELS),
         "3x3 stride 1 when neither the fused kernel nor the GEMMs can run it (limits, workspace)"),
    Rule("implicit_gemm_tc", _half,
         "float16/bfloat16 with few output channels per group: a 16-column warp tile is mostly "
         "idle, but nothing else in cuconv takes 16-bit inputs"),
    Rule("implicit_gemm_tc_simple", _half,
         "float16/bfloat16 when the fast kernel's NCHW -> NHWC pack does not fit the workspace "
         "cap: the analytic kernel reads NCHW in place, far slower"),
    Rule("direct", lambda s: True,
         "the always-correct fallback: it re-reads every input element C/g·R·S times from cache "
         "where the tiled algorithms stage tiles in shared memory"),
    Rule("implicit_gemm", lambda s: not _wide(s),
         "fewer than 8 output channels per group: the GEMM's N dimension fills under 1/8 of its "
         "tile, so direct, which computes only the real outputs, does less work"),
)


# --------------------------------------------------------------------------- the gradients
# Below this many channels per group on the GEMM's N side (dgrad: input channels C/groups) its
# 64-column tile is mostly idle and direct, which computes only real outputs, does less work.
DGRAD_GEMM_MIN_CHANNELS = 8

DGRAD_RULES: tuple[Rule, ...] = (
    Rule("depthwise", _depthwise,
         "groups == C > 1: a shared-memory tile of dy and the channels' filters, each warp visiting "
         "only the taps that reach its stride phase (when a tile fits the 15 KiB budget; NHWC: one "
         "thread per dx element along C), in every dtype (16-bit: fp32 accumulation) — before the "
         "tensor cores, whose GEMM would hold one useful row per channel, and with no workspace"),
    Rule("implicit_gemm_tc", _half,
         "float16/bfloat16: per stride phase the tensor-core forward convolution of dy with the "
         "phase's rotated sub-filter, fp32 accumulation, one rounding per element"),
    Rule("implicit_gemm_tc_simple", _half,
         "float16/bfloat16 when the tiled tensor-core kernel cannot run a phase: the analytic one"),
    Rule("implicit_gemm", lambda s: s.problem.C_per_group >= DGRAD_GEMM_MIN_CHANNELS,
         "C/groups >= 8: an implicit GEMM per group and stride phase over the phase's taps only (no "
         "inserted zeros), tiles reused from shared memory and registers"),
    Rule("direct", lambda s: True,
         "the always-correct fallback, one thread per dx element; below 8 input channels per group "
         "the GEMM's N dimension would fill under 1/8 of its tile"),
)

WGRAD_RULES: tuple[Rule, ...] = (
    Rule("depthwise", _depthwise,
         "groups == C > 1: a per-channel reduction over N·P·Q, 9 taps a block in registers, split "
         "across blocks with a deterministic second pass when the grid would not fill the GPU (16-bit: "
         "fp32 partials), in every dtype — before the tensor cores, whose GEMM would hold one useful row "
         "per channel"),
    Rule("implicit_gemm_tc", _half,
         "float16/bfloat16: the tiled tensor-core split-K wgrad, fp32 partials in a workspace, one "
         "rounding in the deterministic reduction (deterministic whatever deterministic= says)"),
    Rule("implicit_gemm_tc_simple", _half,
         "float16/bfloat16 when the tiled tensor-core wgrad cannot run it: the analytic kernel"),
    Rule("implicit_gemm", lambda s: s.deterministic,
         "the split-K implicit GEMM (M = K/groups, N = C/groups·R·S, reduction N·P·Q): partials in a "
         "bounded workspace summed in split order, bit-identical across runs"),
    Rule("implicit_gemm", lambda s: not s.deterministic,
         "deterministic=False: the split-K GEMM's splits atomicAdd into the zeroed dW (not "
         "deterministic: the last bits vary between runs), no workspace"),
    Rule("direct", lambda s: True,
         "the always-correct fallback, one thread per dW element, deterministic: when the GEMM's "
         "32-bit index limits do not hold"),
)

RULES_BY_PASS: dict[str, tuple[Rule, ...]] = {FPROP: RULES, DGRAD: DGRAD_RULES, WGRAD: WGRAD_RULES}


def candidates(spec: ConvSpec) -> list[Rule]:
    """The rules that apply to ``spec``, in the order ``auto`` tries their algorithms."""
    return [r for r in RULES_BY_PASS[spec.operator] if r.when(spec)]
