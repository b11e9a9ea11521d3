"""Every convolution algorithm of every pass, how ``auto`` picks one, and ``cuconv.conv2d``.

``ALGORITHMS_BY_PASS`` lists each pass's algorithms explicitly — the forward convolution
(``FPROP``, also ``ALGORITHMS``), its data gradient (``DGRAD``) and its weight gradient
(``WGRAD``) — one line per module that defines some. ``select(spec, algo)`` returns the memoized
``Plan`` of the named algorithm of the spec's pass, or for ``algo="auto"`` of the first rule of
ops/heuristics.py whose algorithm can plan the call. ``conv2d`` is validate → select →
``plan.run`` through the conv front end (ops/_conv_frontend.py; the gradients' ops are in
ops/conv2d_grad.py and ops/conv_transpose_grad.py); ``plan_conv2d`` returns the plan without
running it; ``algorithms`` (``infos`` for any pass) lists every algorithm's plan or the reason
it has none.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..backend import current_backend, planning_target, workspace_cap
from ..dtypes import numpy_dtype
from ..plan import Plan, PlanCache, PlanError
from ..problem import Conv2dProblem
from . import (
    conv_dgrad,
    conv_wgrad,
    depthwise,
    depthwise_grad,
    direct,
    fft_conv,
    heuristics,
    im2col_gemm,
    implicit_gemm,
    tc_conv,
    tc_grad,
    wgmma_conv,
    winograd,
)
from ._algorithm import DGRAD, FPROP, OPS, WGRAD, AlgorithmInfo, ConvAlgorithm, ConvSpec
from ._conv_frontend import ConvFrontEnd, check_layout, check_workspace_cap
from ._frontend import option_items, plan_of


def _table(*algorithms: ConvAlgorithm) -> dict[str, ConvAlgorithm]:
    return {a.name: a for a in algorithms}


# Every algorithm, by pass, in the listing order of cuconv.algorithms / cuconv.grad.algorithms;
# each line names the module that defines the algorithms on it.
ALGORITHMS_BY_PASS: dict[str, dict[str, ConvAlgorithm]] = {
    FPROP: _table(
        direct.ALGORITHM,                       # ops/direct.py: direct
        *im2col_gemm.ALGORITHMS,                # ops/im2col_gemm.py: im2col_gemm, pointwise (its 1x1 path)
        implicit_gemm.ALGORITHM,                # ops/implicit_gemm.py: implicit_gemm
        *winograd.ALGORITHMS,                   # ops/winograd.py: winograd_f2x2_3x3, _f4x4_3x3, _fused_f2x2_3x3
        *fft_conv.ALGORITHMS,                   # ops/fft_conv.py: fft, fft_tiling
        depthwise.ALGORITHM,                    # ops/depthwise.py: depthwise
        *tc_conv.ALGORITHMS,                    # ops/tc_conv.py: implicit_gemm_tc, _tc_simple, _tf32
        wgmma_conv.ALGORITHM,                   # ops/wgmma_conv.py: implicit_gemm_wgmma
    ),
    DGRAD: _table(
        *conv_dgrad.ALGORITHMS,                 # ops/conv_dgrad.py: direct, implicit_gemm
        depthwise_grad.DGRAD_ALGORITHM,         # ops/depthwise_grad.py: depthwise
        *tc_grad.DGRAD_ALGORITHMS,              # ops/tc_grad.py: implicit_gemm_tc, implicit_gemm_tc_simple
    ),
    WGRAD: _table(
        *conv_wgrad.ALGORITHMS,                 # ops/conv_wgrad.py: direct, implicit_gemm
        depthwise_grad.WGRAD_ALGORITHM,         # ops/depthwise_grad.py: depthwise
        *tc_grad.WGRAD_ALGORITHMS,              # ops/tc_grad.py: implicit_gemm_tc, implicit_gemm_tc_simple
    ),
}
ALGORITHMS = ALGORITHMS_BY_PASS[FPROP]


def algorithm(name: str, operator: str = FPROP) -> ConvAlgorithm:
    table = ALGORITHMS_BY_PASS[operator]
    if name not in table:
        raise ValueError(f"unknown algo {name!r}; available: {', '.join(['auto', *table])}")
    return table[name]


def auto_workspace_cap(spec: ConvSpec) -> tuple[int, str]:
    """(bytes, description) of the workspace ``auto`` plans ``spec`` within: the caller's
    max_workspace_bytes, else the device's default (backend.workspace_cap, a quarter of its
    memory), every pass alike. A weight gradient's split-K partials, which take whatever they are
    given, keep to their own default (conv_wgrad.DEFAULT_MAX_WORKSPACE_BYTES, 64 MiB) within the
    device's unless the caller gives max_workspace_bytes."""
    cap, how = workspace_cap(spec.caps, spec.max_workspace_bytes)
    splitk = conv_wgrad.DEFAULT_MAX_WORKSPACE_BYTES
    if spec.operator == WGRAD and spec.max_workspace_bytes is None and cap > splitk:
        cap, how = splitk, f"{how}, the split-K partials within {splitk >> 20} MiB"
    return cap, how


def _auto(spec: ConvSpec) -> Plan:
    """The first rule whose algorithm plans ``spec`` within the workspace cap (the caller's
    max_workspace_bytes, else the device's default: backend.workspace_cap); the plan's description
    names the rule and the cap."""
    if spec.options:
        raise TypeError(f"extra arguments {sorted(k for k, _ in spec.options)} belong to one algorithm: pass "
                        "algo= explicitly with them (algo='auto' may pick another)")
    cap, how = auto_workspace_cap(spec)
    capped = spec if spec.max_workspace_bytes == cap else replace(spec, max_workspace_bytes=cap)
    table = ALGORITHMS_BY_PASS[spec.operator]
    for rule in heuristics.candidates(capped):
        try:
            plan = table[rule.algo].make_plan(capped)
        except PlanError:
            continue
        return plan.described(f"auto: {rule.reason} [within the {how}]")
    spec = capped
    reasons = "; ".join(f"{i.name}: {i.reason or 'no auto rule applies'}" for i in infos(spec))
    p = spec.problem
    what = "" if spec.operator == FPROP else f"{OPS[spec.operator]} of "
    raise ValueError(f"no algorithm can run {what}{p.describe()} {p.dtype} {spec.layout} within the {how} "
                     f"({reasons})")


_SELECTED = PlanCache()


def select(spec: ConvSpec, algo: str = "auto") -> Plan:
    """The plan for ``spec``: of algorithm ``algo`` of the spec's pass, or the ``auto`` rule's.
    Memoized per spec (which holds the device)."""
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a string, got {algo!r}")
    key = (spec, algo)
    plan = _SELECTED.get(key)
    if plan is None:
        plan = _auto(spec) if algo == "auto" else algorithm(algo, spec.operator).plan_or_raise(spec)
        _SELECTED.put(key, plan)
    return plan


def infos(spec: ConvSpec) -> list[AlgorithmInfo]:
    """Every algorithm of the spec's pass on it: its plan or why it has none, and on the one
    ``auto`` takes, the rule that takes it."""
    rows = []
    for alg in ALGORITHMS_BY_PASS[spec.operator].values():
        try:
            plan, reason = alg.make_plan(spec), None
        except PlanError as exc:
            plan, reason = exc.plan, str(exc)
        rows.append((alg.name, reason, plan))
    ok = {name for name, reason, _ in rows if reason is None}
    chosen = None if spec.options else next((r for r in heuristics.candidates(spec) if r.algo in ok), None)
    return [AlgorithmInfo(name, reason is None, reason, None if plan is None else plan.workspace_bytes, plan,
                          chosen.reason if chosen is not None and chosen.algo == name else None)
            for name, reason, plan in rows]


# --------------------------------------------------------------------------- conv2d
_FRONT = ConvFrontEnd(select)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
           activation=None, residual=None, out=None, max_workspace_bytes=None, layout="NCHW",
           allow_tf32=None, **extra):
    """2-D convolution (cross-correlation, as in torch.nn.functional.conv2d).

    ``y = activation(conv(x, w) + bias + residual)``, with the epilogue fused into the
    output write. ``stride``, ``padding``, ``dilation``: int or pair; ``padding`` may also
    be "same" or "valid". ``algo``: "auto" or a name from ``cuconv.algorithms(problem)``.
    ``layout="NCHW"`` (x: N,C,H,W; w: K,C/g,R,S; out: N,K,P,Q) or ``"NHWC"`` (x: N,H,W,C;
    w: K,R,S,C/g; out and residual: N,P,Q,K), read natively by direct, implicit GEMM, depthwise
    and the tensor cores. float32 and float64 run on the CUDA-core algorithms (float64
    accumulates in double; Winograd and the tensor cores refuse it), float16/bfloat16 on the
    tensor cores.
    ``allow_tf32``: float32 inputs may run on tf32 tensor cores (default: not by ``auto``;
    naming a tf32 algorithm opts in; ``False`` forbids it). Extra keyword arguments go to the
    named algorithm (e.g. ``transformed_weight=`` for Winograd) and need an explicit ``algo``.
    Returns ``out`` (allocated when None) on the current backend (cupy.ndarray on the GPU,
    numpy.ndarray on the emulator); work is queued on CuPy's current stream, no sync.
    The plan is made once per argument shapes and device (``plan_conv2d`` returns it).
    """
    return _FRONT({"x": x, "w": w, "bias": bias, "residual": residual, "out": out},
                  (stride, padding, dilation, groups, algo, activation, max_workspace_bytes, layout, allow_tf32), extra)


plan_conv2d = plan_of(conv2d)


@dataclass(frozen=True)
class Shape:
    """A shape-and-dtype stand-in for an array (what the plan_* functions and algorithms() take)."""
    shape: tuple
    dtype: object

    @staticmethod
    def of(p: Conv2dProblem, layout: str = "NCHW"):
        """Stand-ins for the input and weight of ``p`` in ``layout``."""
        dt = numpy_dtype(p.dtype)
        if layout == "NHWC":
            return Shape((p.N, p.H, p.W, p.C), dt), Shape((p.K, p.R, p.S, p.C_per_group), dt)
        return Shape(p.input_shape, dt), Shape(p.weight_shape, dt)


def spec_of(problem: Conv2dProblem, operator: str = FPROP, *, max_workspace_bytes=None, layout="NCHW",
            allow_tf32=None, has_bias: bool = False, deterministic: bool = True, **options) -> ConvSpec:
    """The spec of a call on ``problem`` (no epilogue) for the pass ``operator``, on the current
    backend's device: what algorithms() and choose_algorithm() plan, and what a kernel test hands
    ``select`` with an algorithm's ``options`` (``config=``, ``splits=``)."""
    check_layout(layout)
    if allow_tf32 not in (None, True, False):
        raise TypeError(f"allow_tf32 must be True, False or None, got {allow_tf32!r}")
    check_workspace_cap(max_workspace_bytes)
    caps, device = planning_target(current_backend())
    return ConvSpec(problem.validate(), layout, caps, device, allow_tf32, max_workspace_bytes, has_bias,
                    options=option_items(options), operator=operator, deterministic=deterministic)


def algorithms(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
               layout: str = "NCHW", allow_tf32: bool | None = None) -> list[AlgorithmInfo]:
    """Every algorithm, whether it can run ``problem`` on the current backend's device, why not,
    and its plan (which names the exact kernels it launches)."""
    return infos(spec_of(problem, max_workspace_bytes=max_workspace_bytes, layout=layout, allow_tf32=allow_tf32))


def choose_algorithm(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
                     layout: str = "NCHW", allow_tf32: bool | None = None) -> str:
    """The algorithm ``auto`` runs for ``problem`` (ValueError listing every reason when none can)."""
    return select(spec_of(problem, max_workspace_bytes=max_workspace_bytes, layout=layout,
                          allow_tf32=allow_tf32)).algo
