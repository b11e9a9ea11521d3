"""``cuconv.conv2d``: validate → select → ``plan.run``.

The algorithms are listed explicitly in ``ALGORITHMS`` (each lives in its own module:
ops/direct.py, ops/im2col_gemm.py, ops/implicit_gemm.py, ops/winograd.py, ops/fft_conv.py,
ops/depthwise.py, ops/tc_conv.py, ops/wgmma_conv.py). ``select(spec, algo)`` returns the memoized ``Plan`` of the named algorithm,
or for ``algo="auto"`` of the first rule of ops/heuristics.py whose algorithm can plan the
call. ``plan_conv2d`` returns that plan without running it; ``algorithms`` lists every
algorithm's plan or the reason it has none.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..backend import current_backend, workspace_cap
from ..plan import Plan, PlanCache, PlanError
from ..problem import Conv2dProblem, numpy_dtype
from . import (
    depthwise,
    direct,
    fft_conv,
    heuristics,
    im2col_gemm,
    implicit_gemm,
    tc_conv,
    wgmma_conv,
    winograd,
)
from ._algorithm import ConvAlgorithm, ConvSpec
from ._conv_frontend import ConvFrontEnd, build_spec

# Listing order of cuconv.algorithms.
ALGORITHMS: dict[str, ConvAlgorithm] = {a.name: a for a in (
    direct.ALGORITHM, *im2col_gemm.ALGORITHMS, implicit_gemm.ALGORITHM, *winograd.ALGORITHMS,
    *fft_conv.ALGORITHMS, depthwise.ALGORITHM, *tc_conv.ALGORITHMS, wgmma_conv.ALGORITHM)}


def algorithm(name: str) -> ConvAlgorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; available: {', '.join(['auto', *ALGORITHMS])}")
    return ALGORITHMS[name]


def _auto(spec: ConvSpec) -> Plan:
    """The first rule whose algorithm plans ``spec`` within the workspace cap (the caller's
    max_workspace_bytes, else the device's default: backend.workspace_cap); the plan's description
    names the rule and the cap."""
    if spec.options:
        raise TypeError(f"extra arguments {sorted(k for k, _ in spec.options)} belong to one algorithm: pass "
                        "algo= explicitly with them (algo='auto' may pick another)")
    cap, how = workspace_cap(spec.caps, spec.max_workspace_bytes)
    capped = replace(spec, max_workspace_bytes=cap)
    for rule in heuristics.candidates(capped):
        try:
            plan = ALGORITHMS[rule.algo].make_plan(capped)
        except PlanError:
            continue
        return replace(plan, description=f"auto: {rule.reason} [within the {how}]")
    spec = capped
    reasons = "; ".join(f"{i.name}: {i.reason or 'no auto rule applies'}" for i in _infos(spec))
    p = spec.problem
    raise ValueError(f"no algorithm can run {p.describe()} {p.dtype} {spec.layout} ({reasons})")


_SELECTED = PlanCache()


def select(spec: ConvSpec, algo: str = "auto") -> Plan:
    """The plan for ``spec``: of algorithm ``algo``, or the ``auto`` rule's. Memoized per spec
    (which holds the device)."""
    key = (spec, algo)
    plan = _SELECTED.get(key)
    if plan is None:
        plan = _auto(spec) if algo == "auto" else algorithm(algo).plan_or_raise(spec)
        _SELECTED.put(key, plan)
    return plan


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
    return _FRONT(x, w, bias, stride, padding, dilation, groups, algo, activation, residual, out,
                  max_workspace_bytes, layout, allow_tf32, extra)


def plan_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto", layout="NCHW",
                allow_tf32=None, max_workspace_bytes=None, activation=None, residual=None, out=None,
                **extra) -> Plan:
    """The ``Plan`` that ``conv2d`` with the same arguments runs: ``plan.algo``,
    ``plan.workspace_bytes``, ``plan.launches`` (kernel, grid, block, shared_mem), and
    ``plan.run(x, w, bias, residual, out=...)``. ``x``, ``w`` (and ``bias``, ``residual``) are
    arrays of the current backend or anything with ``.shape`` and ``.dtype``."""
    be = current_backend()
    return _FRONT.plan(be, x, w, bias, residual, out, stride, padding, dilation, groups, algo, activation,
                       max_workspace_bytes, layout, allow_tf32, extra, arrays_required=False)[0]


@dataclass(frozen=True)
class AlgorithmInfo:
    """One algorithm on one problem: whether it can run it (``ok``), why not (``reason``), its
    workspace and its ``plan`` (None when it cannot plan at all), and the ``auto`` rule that
    names it for this problem (None when no rule does)."""
    name: str
    ok: bool
    reason: str | None
    workspace_bytes: int | None
    plan: Plan | None = None
    auto_rule: str | None = None

    @property
    def kernels(self) -> list[str]:
        return self.plan.kernels if self.plan is not None else []


def _infos(spec: ConvSpec) -> list[AlgorithmInfo]:
    rules = {}
    for r in heuristics.candidates(spec):
        rules.setdefault(r.algo, r.reason)
    infos = []
    for alg in ALGORITHMS.values():
        reason, plan = alg.refusal(spec), None
        if reason is None:
            try:
                plan = alg.plan(spec)
            except PlanError as exc:
                reason = str(exc)
        ws = plan.workspace_bytes if plan is not None else None
        cap = spec.max_workspace_bytes
        if reason is None and cap is not None and ws > cap:
            reason = f"needs {ws} bytes of workspace, more than max_workspace_bytes={cap}"
        infos.append(AlgorithmInfo(alg.name, reason is None, reason, ws, plan, rules.get(alg.name)))
    return infos


def _spec_of(problem: Conv2dProblem, max_workspace_bytes=None, layout="NCHW", allow_tf32=None) -> ConvSpec:
    """The spec of a call on ``problem`` with no epilogue, on the current backend's device."""
    x, w = _Shape.of(problem, layout)
    return build_spec(current_backend(), x, w, None, None, None, (problem.stride_h, problem.stride_w),
                      _padding(problem), (problem.dilation_h, problem.dilation_w), problem.groups, None,
                      max_workspace_bytes, layout, allow_tf32, {}, float_only=False)


def algorithms(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
               layout: str = "NCHW", allow_tf32: bool | None = None) -> list[AlgorithmInfo]:
    """Every algorithm, whether it can run ``problem`` on the current backend's device, why not,
    and its plan (which names the exact kernels it launches)."""
    return _infos(_spec_of(problem, max_workspace_bytes, layout, allow_tf32))


def choose_algorithm(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
                     layout: str = "NCHW", allow_tf32: bool | None = None) -> str:
    """The algorithm ``auto`` runs for ``problem`` (ValueError listing every reason when none can)."""
    return select(_spec_of(problem, max_workspace_bytes, layout, allow_tf32)).algo


def _padding(p: Conv2dProblem):
    if p.pad_h_end is None and p.pad_w_end is None:
        return (p.pad_h, p.pad_w)
    same = Conv2dProblem.from_shapes(p.input_shape, p.weight_shape, (p.stride_h, p.stride_w), "same",
                                     (p.dilation_h, p.dilation_w), p.groups, p.dtype)
    if same != p:
        raise ValueError(f"{p.describe()}: asymmetric padding other than 'same' has no conv2d argument")
    return "same"


@dataclass(frozen=True)
class _Shape:
    """A shape-and-dtype stand-in for an array (what plan_conv2d and algorithms accept)."""
    shape: tuple
    dtype: object

    @staticmethod
    def of(p: Conv2dProblem, layout: str):
        dt = numpy_dtype(p.dtype)
        if layout == "NHWC":
            return _Shape((p.N, p.H, p.W, p.C), dt), _Shape((p.K, p.R, p.S, p.C_per_group), dt)
        return _Shape(p.input_shape, dt), _Shape(p.weight_shape, dt)
