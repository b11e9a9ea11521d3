"""float16 / bfloat16 conv2d gradients on tensor cores, fp32 accumulation (kernels/tc_grad.cu,
plus the forward's kernels/tc_conv.cu for dgrad).

* ``tc_conv2d_input_launch(be, problem, w, dy, dx, variant="auto"|"simple")`` — dx. Per stride
  phase: ``tc_dgrad_filter`` builds the phase's rotated, transposed sub-filter; the forward
  tensor-core convolution (ops/tc_conv.py's plan: the tiled cp.async kernel, or
  ``tc_conv_simple`` with ``variant="simple"``) runs dy through it at stride 1 and dilation
  doff; at stride > 1 ``tc_dgrad_scatter`` puts each phase's result at its positions in dx
  (zeros for phases no tap reaches). The phase convolution needs non-negative padding: problems
  whose padding exceeds the dilated filter's reach (``can_implement`` says so) are not built.
* ``tc_conv2d_weight_launch(be, problem, x, dy, dw, db=None, splits=None, variant="auto")`` —
  dW (and db): the tiled ``tc_wgrad_*_64x64x32_32x32`` (``variant="simple"``: ``tc_wgrad_simple``),
  split-K with fp32 partials in a workspace, + ``tc_grad_reduce`` (one rounding to the output
  dtype, deterministic); db by ``tc_bias_grad``.

Every kernel is registered with ``cuda_headers=True`` (the CUDA include path on the GPU).
"""
from __future__ import annotations

import math

import numpy as np

from ..plan import Launch, Ref, relabel
from ..problem import Conv2dProblem
from ..registry import ARCHS, KernelEntry, register_kernel
from . import _common, _grad, tc_conv
from ._algorithm import ConvSpec
from ._grad import INT_MAX, split_chunk
from .tc_common import ARCHS_SM80, CONV_FILE, arch_reason, conv_limits
from .tc_common import DTYPES as TC_DTYPES

FILE = "tc_grad.cu"
DTYPES = ("float16", "bfloat16")
KERNELS = {"tc_dgrad_filter": 256, "tc_dgrad_scatter": 256, "tc_wgrad_simple": 128, "tc_grad_reduce": 256,
           "tc_bias_grad": 256}
# Blocks per SM promised to the compile matrix (all fit on sm_75's 1024 threads per SM).
MIN_BLOCKS = {"tc_dgrad_filter": 4, "tc_dgrad_scatter": 4, "tc_wgrad_simple": 8, "tc_grad_reduce": 4,
              "tc_bias_grad": 4}
MAX_BLOCKS = 1 << 16
WGRAD_TILE_M, WGRAD_TILE_N = 32, 16     # tc_wgrad_simple's block tile
# The tiled wgrad: (BM, BN, BK, WM, WN, blocks per SM); 4 warps of 32x32, 128 threads.
TILED = (64, 64, 32, 32, 32, 2)
TARGET_BLOCKS_PER_SM = 2
MIN_SPLIT_LEN = 256               # reduction indices per wgrad split (16 mma k-steps)
DEFAULT_MAX_WORKSPACE_BYTES = 64 << 20


def name(kernel: str, dtype: str) -> str:
    return f"{kernel}_{TC_DTYPES[dtype][0]}"


def expression(kernel: str, dtype: str) -> str:
    return f"{kernel}<{TC_DTYPES[dtype][1]}>"


for _k, _threads in KERNELS.items():
    for _dt in DTYPES:
        # bf16 mma needs sm_80 (the project's convention for every bf16 tensor-core kernel)
        register_kernel(KernelEntry(FILE, expression(_k, _dt), name(_k, _dt), block_threads=_threads,
                                    min_blocks_per_sm=MIN_BLOCKS[_k], cuda_headers=True,
                                    archs=ARCHS if _dt == "float16" else ARCHS_SM80))


def tiled_name(dtype: str) -> str:
    bm, bn, bk, wm, wn, _ = TILED
    return f"tc_wgrad_{TC_DTYPES[dtype][0]}_{bm}x{bn}x{bk}_{wm}x{wn}"


def tiled_expression(dtype: str) -> str:
    return f"tc_wgrad<{TC_DTYPES[dtype][1]}, {', '.join(map(str, TILED))}>"


for _dt in DTYPES:
    register_kernel(KernelEntry(FILE, tiled_expression(_dt), tiled_name(_dt), block_threads=128,
                                min_blocks_per_sm=TILED[5], cuda_headers=True,
                                archs=ARCHS if _dt == "float16" else ARCHS_SM80, main=_dt == "float16"))


def _launch(kernel, dtype, grid, block, args, expr=None) -> Launch:
    return Launch(_grad.entry_for(FILE, expr or expression(kernel, dtype)), grid, block, args)


def _phase_conv(caps, device, q: Conv2dProblem, dy: Ref, wp: Ref, out: Ref, config, prefix: str,
                misaligned=frozenset()):
    """(launches, workspace parts, aligned roles) of the forward tensor-core convolution of a
    dgrad phase: dy through the phase filter wp into out (ops/tc_conv.py's plan, relabelled)."""
    spec = ConvSpec(q, "NCHW", caps, device, misaligned=frozenset("x" for r in (dy.name,) if r in misaligned))
    plan = tc_conv.tc_conv_plan(spec, "implicit_gemm_tc_simple" if config == "simple" else "implicit_gemm_tc",
                                config)
    names = {"x": dy.name, "w": wp.name, "out": out.name}
    launches, parts = relabel(plan, names, prefix)
    return launches, parts, tuple(names[r] for r in plan.aligned if names.get(r) == dy.name)


# --------------------------------------------------------------------------- phases
def dgrad_taps(base: int, R: int, stride: int, dil: int) -> tuple[int, int, int, int, int]:
    """(first, step, count, off0, doff) — kernels/common.cuh's cc_dgrad_taps: the taps r with
    base − r·dil ≡ 0 (mod stride) are first + t·step, t < count; tap t sends phase row i to
    dy row i + off0 − t·doff."""
    step = stride // math.gcd(stride, dil)
    first = next((r for r in range(min(step, R)) if (base - r * dil) % stride == 0), R)
    count = (R - 1 - first) // step + 1 if first < R else 0
    off0 = (base - first * dil) // stride if first < R else 0
    return first, step, count, off0, step * dil // stride


def phase_problems(p: Conv2dProblem):
    """For each stride phase (a, b) with pixels: (a, b, Hp, Wp, taps_h, taps_w, forward problem of
    the phase's stride-1 convolution of dy, or None when no tap reaches the phase)."""
    out = []
    for a in range(p.stride_h):
        Hp = -(-(p.H - a) // p.stride_h)
        for b in range(p.stride_w):
            Wp = -(-(p.W - b) // p.stride_w)
            if Hp <= 0 or Wp <= 0:
                continue
            th = dgrad_taps(a + p.pad_h, p.R, p.stride_h, p.dilation_h)
            tw = dgrad_taps(b + p.pad_w, p.S, p.stride_w, p.dilation_w)
            if th[2] == 0 or tw[2] == 0:
                out.append((a, b, Hp, Wp, th, tw, None))
                continue
            pt = (th[2] - 1) * th[4] - th[3]
            pl = (tw[2] - 1) * tw[4] - tw[3]
            pb = Hp - p.P + th[3]
            pr = Wp - p.Q + tw[3]
            q = Conv2dProblem(p.N, p.K, p.P, p.Q, p.C, th[2], tw[2], 1, 1, pt, pl, th[4], tw[4], p.groups,
                              p.dtype, pb, pr)
            out.append((a, b, Hp, Wp, th, tw, q))
    return out


def can_implement_input(p: Conv2dProblem) -> str | None:
    if p.dtype not in DTYPES:
        return f"the tensor-core gradients take float16 or bfloat16, got {p.dtype}"
    for *_, q in phase_problems(p):
        if q is None:
            continue
        if min(q.pad_h, q.pad_w, q.pad_bottom, q.pad_right) < 0:
            return (f"padding {(p.pad_h, p.pad_w)} (end {(p.pad_bottom, p.pad_right)}) reaches past the dilated "
                    f"filter: the phase convolution would need negative padding (not built)")
        if q.P <= 0 or q.Q <= 0:
            return "a phase convolution has no output"
        reason = conv_limits(q)
        if reason:
            return reason
    if p.N * p.C * p.H * p.W > INT_MAX * 4:
        return "dx too large"
    return None


def check_input_arrays(be, p: Conv2dProblem, w, dy, dx):
    dt = p.dtype
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=(dt,), be=be)
    dy = _common.as_tensor(dy, "grad_output", ndim=4, dtypes=(dt,), be=be)
    dx = _common.as_tensor(dx, "grad_input", ndim=4, dtypes=(dt,), be=be)
    for what, a, shape in (("weight", w, p.weight_shape), ("grad_output", dy, p.output_shape),
                           ("grad_input", dx, p.input_shape)):
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    for what, a in (("weight", w), ("grad_output", dy)):
        if _common.overlaps(dx, a):
            raise ValueError(f"grad_input overlaps {what}")
    _common.same_device(be, weight=w, grad_output=dy, grad_input=dx)
    return w, dy, dx


def dgrad_parts(p: Conv2dProblem, caps, device=None, variant: str = "auto", misaligned=frozenset()):
    """(launches, workspace parts, aligned roles) computing slot ``dx`` from ``w`` and ``dy`` on
    tensor cores. ``variant``: "auto" (the tiled forward kernel) or "simple" (tc_conv_simple).
    ValueError when it cannot run ``p`` on ``caps``."""
    if variant not in ("auto", "simple"):
        raise ValueError(f"variant must be 'auto' or 'simple', got {variant!r}")
    reason = can_implement_input(p)
    if reason:
        raise ValueError(f"tensor-core dgrad cannot run {p.describe()}: {reason}")
    reason = arch_reason(p.dtype, caps.cc)
    if reason:
        raise ValueError(f"tensor-core dgrad: {reason}")
    config = "simple" if variant == "simple" else None
    unit = p.stride_h == p.stride_w == 1
    planes = p.N * p.C
    dx, w, dy = Ref("dx"), Ref("w"), Ref("dy")
    launches, parts, aligned = [], [], set()
    for i, (a, b, Hp, Wp, th, tw, q) in enumerate(phase_problems(p)):
        geom = tuple(np.int32(v) for v in (p.H, p.W, Hp, Wp, a, b, p.stride_h, p.stride_w))
        if q is None:
            grid = _common.grid_1d(planes * Hp * Wp, 256, MAX_BLOCKS)
            launches.append(_launch("tc_dgrad_scatter", p.dtype, (grid, 1, 1), (256, 1, 1),
                                    (dx, np.int32(0), dx, np.int64(planes), *geom)))
            continue
        wp = Ref(f"wp{i}")
        n_wp = p.C * p.K_per_group * q.R * q.S
        parts.append((wp.name, p.dtype, n_wp))
        launches.append(_launch("tc_dgrad_filter", p.dtype, (_common.grid_1d(n_wp, 256, MAX_BLOCKS), 1, 1),
                                (256, 1, 1), (w, wp, *(np.int32(v) for v in (
                                    p.K, p.C_per_group, p.R, p.S, p.groups, th[0], th[1], th[2],
                                    tw[0], tw[1], tw[2])))))
        out = dx if unit else Ref(f"ph{i}")
        if not unit:
            parts.append((out.name, p.dtype, p.N * p.C * Hp * Wp))
        lns, sub_parts, sub_aligned = _phase_conv(caps, device, q, dy, wp, out, config, f"q{i}.", misaligned)
        launches += lns
        parts += sub_parts
        aligned.update(sub_aligned)
        if not unit:
            n = p.N * p.C * Hp * Wp
            launches.append(_launch("tc_dgrad_scatter", p.dtype, (_common.grid_1d(n, 256, MAX_BLOCKS), 1, 1),
                                    (256, 1, 1), (out, np.int32(1), dx, np.int64(planes), *geom)))
    return launches, parts, tuple(sorted(aligned))


def tc_conv2d_input_launch(be, p: Conv2dProblem, w, dy, dx, variant: str = "auto") -> str:
    """dx = ∂L/∂x for the float16/bfloat16 forward ``p`` on tensor cores (fp32 accumulation, one
    rounding per element), now (the kernel tests' entry; ``cuconv.grad`` plans the same
    launches). Returns the kernels run, "+"-joined."""
    w, dy, dx = check_input_arrays(be, p, w, dy, dx)
    env = {"w": w, "dy": dy, "dx": dx}
    launches, parts, _ = dgrad_parts(p, be.caps(), be.device_key(), variant,
                                     _common.misaligned_roles(("dy",), env))
    _grad.execute(be, launches, parts, env)
    if not any(ln.entry.file == CONV_FILE for ln in launches):
        return "tc_dgrad_scatter"
    return "tc_conv_simple" if variant == "simple" else "tc_conv"


# --------------------------------------------------------------------------- wgrad
def wgrad_tiles(p: Conv2dProblem, tiled: bool = True) -> int:
    """Blocks per split of the tiled (64x64) or simple (32x16) wgrad."""
    bm, bn = (TILED[0], TILED[1]) if tiled else (WGRAD_TILE_M, WGRAD_TILE_N)
    return p.groups * -(-p.K_per_group // bm) * -(-(p.C_per_group * p.R * p.S) // bn)


def choose_wgrad_splits(p: Conv2dProblem, sms: int = 132, max_workspace_bytes: int | None = None,
                        tiled: bool = True) -> int:
    """Splits of the N·P·Q reduction: enough for TARGET_BLOCKS_PER_SM blocks per SM, at least
    MIN_SPLIT_LEN reduction indices each, and the fp32 workspace splits·K·Cg·R·S·4 bytes within
    ``max_workspace_bytes`` (None: DEFAULT_MAX_WORKSPACE_BYTES). At least 1: the fp32 partials
    always go through the workspace (the output is rounded once, by the reduction)."""
    limit = DEFAULT_MAX_WORKSPACE_BYTES if max_workspace_bytes is None else max_workspace_bytes
    per_split = p.K * p.C_per_group * p.R * p.S * 4
    if limit < per_split:
        raise ValueError(f"the tensor-core wgrad needs at least {per_split} bytes of fp32 workspace "
                         f"(one split of K·Cg·R·S), max_workspace_bytes={limit}")
    L = p.N * p.P * p.Q
    splits = min(-(-(TARGET_BLOCKS_PER_SM * sms) // wgrad_tiles(p, tiled)), max(1, L // MIN_SPLIT_LEN), 65535,
                 limit // per_split)
    return max(1, splits)


def can_implement_weight(p: Conv2dProblem) -> str | None:
    if p.dtype not in DTYPES:
        return f"the tensor-core gradients take float16 or bfloat16, got {p.dtype}"
    if p.C_per_group * p.R * p.S > INT_MAX - 64 or p.K > INT_MAX - 64 or p.P * p.Q > INT_MAX:
        return "K, Cg·R·S or P·Q does not fit the kernel's 32-bit indices"
    if p.K * p.P * p.Q > INT_MAX or p.C * p.H * p.W > INT_MAX:
        return "an image of dy (K·P·Q) or of x (C·H·W) has more than 2**31-1 elements (32-bit offsets)"
    if wgrad_tiles(p) > INT_MAX:
        return "too many blocks for a 1-D grid"
    return None


def wgrad_splits(p: Conv2dProblem, sms: int, max_workspace_bytes: int | None, splits: int | None,
                 tiled: bool) -> tuple[int, int]:
    """(splits, chunk) of the tensor-core wgrad (``splits`` overrides the rule)."""
    n = choose_wgrad_splits(p, sms, max_workspace_bytes, tiled) if splits is None else splits
    if not 1 <= n <= 65535:
        raise ValueError(f"splits must be in 1..65535, got {n}")
    n, chunk = split_chunk(p.N * p.P * p.Q, n, TILED[2] if tiled else 16)
    if chunk > INT_MAX:
        raise ValueError(f"tensor-core wgrad: {chunk} reduction indices per split exceed the kernel's 32-bit "
                         f"reduction length; allow more splits")
    return n, chunk


def bias_launch(dtype: str, N: int, K: int, PQ: int, dy, db) -> Launch:
    """db[k] = Σ dy[n, k, :] over n and the P·Q outputs, fp32 accumulation (one block per channel)."""
    return _launch("tc_bias_grad", dtype, (K, 1, 1), (256, 1, 1),
                   (dy, db, _common.i32(N, "N"), _common.i32(K, "K"), _common.i32(PQ, "P·Q")))


def wgrad_parts(p: Conv2dProblem, caps, variant: str = "auto", bias: bool = False, splits: int | None = None,
                max_workspace_bytes: int | None = None, misaligned=frozenset()):
    """(launches, workspace parts, aligned roles, split count) computing slot ``dw`` (and ``db``
    when ``bias``) from ``x`` and ``dy``: fp32 split-K partials in the workspace, one rounding in
    the deterministic reduction. ``variant``: "auto" (the tiled tc_wgrad) or "simple"
    (tc_wgrad_simple). N = 0 gives zeros (the reduction over no splits)."""
    if variant not in ("auto", "simple"):
        raise ValueError(f"variant must be 'auto' or 'simple', got {variant!r}")
    tiled = variant == "auto"
    reason = can_implement_weight(p) or arch_reason(p.dtype, caps.cc)
    if reason:
        raise ValueError(f"tensor-core wgrad cannot run {p.describe()}: {reason}")
    dt = p.dtype
    x, dy, dw = Ref("x"), Ref("dy"), Ref("dw")
    n_w = p.K * p.C_per_group * p.R * p.S
    grid = (_common.grid_1d(n_w, 256, MAX_BLOCKS), 1, 1)
    tail = [bias_launch(dt, p.N, p.K, p.P * p.Q, dy, Ref("db"))] if bias else []
    if p.N == 0:
        return ([_launch("tc_grad_reduce", dt, grid, (256, 1, 1), (Ref.absent("float32"), np.int32(0),
                                                                   np.int64(n_w), dw)), *tail], [], (), 0)
    n, chunk = wgrad_splits(p, caps.sms, max_workspace_bytes, splits, tiled)
    ws = Ref("ws")
    args = (x, dy, ws, *_common.conv_geometry_args(p), np.int64(chunk))
    aligned = ()
    if tiled:
        # dy pairs as 32-bit words: P·Q even and dy aligned (a view may not be).
        pairs = (p.P * p.Q) % 2 == 0 and "dy" not in misaligned
        aligned = ("dy",) if pairs else ()
        main = _launch("tc_wgrad", dt, (wgrad_tiles(p, True), n, 1), (128, 1, 1), (*args, np.int32(pairs)),
                       tiled_expression(dt))
    else:
        main = _launch("tc_wgrad_simple", dt, (wgrad_tiles(p, False), n, 1), (128, 1, 1), args)
    reduce = _launch("tc_grad_reduce", dt, grid, (256, 1, 1), (ws, np.int32(n), np.int64(n_w), dw))
    return [main, reduce, *tail], [("ws", "float32", n * n_w)], aligned, n


def tc_conv2d_weight_launch(be, p: Conv2dProblem, x, dy, dw, db=None, splits: int | None = None,
                            max_workspace_bytes: int | None = None, variant: str = "auto") -> int:
    """dw (and db when given) for the float16/bfloat16 forward ``p``, now (the kernel tests'
    entry; ``cuconv.grad`` plans the same launches). Returns the split count."""
    dt = p.dtype
    x = _common.as_tensor(x, "input", ndim=4, dtypes=(dt,), be=be)
    dy = _common.as_tensor(dy, "grad_output", ndim=4, dtypes=(dt,), be=be)
    dw = _common.as_tensor(dw, "grad_weight", ndim=4, dtypes=(dt,), be=be)
    for what, a, shape in (("input", x, p.input_shape), ("grad_output", dy, p.output_shape),
                           ("grad_weight", dw, p.weight_shape)):
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if db is not None:
        db = _common.as_tensor(db, "grad_bias", ndim=1, dtypes=(dt,), be=be)
        if tuple(db.shape) != (p.K,):
            raise ValueError(f"grad_bias must have shape {(p.K,)}, got {tuple(db.shape)}")
    _common.same_device(be, input=x, grad_output=dy, grad_weight=dw, grad_bias=db)
    env = {"x": x, "dy": dy, "dw": dw, "db": db}
    launches, parts, _, n = wgrad_parts(p, be.caps(), variant, db is not None, splits, max_workspace_bytes,
                                        _common.misaligned_roles(("dy",), env))
    _grad.execute(be, launches, parts, env)
    return n
