"""``cuconv.conv2d``: argument checks, the algorithm registry, and dispatch.

Each algorithm lives in its own module (ops/direct.py, ops/im2col_gemm.py,
ops/implicit_gemm.py, ops/winograd.py, ops/depthwise.py, ...) and registers a
``ConvAlgorithm`` here. This module checks every argument once, builds the
``Conv2dProblem``, picks the algorithm and hands over a checked output buffer:
one place checks, one place launches (ATen's layering).

``algo="auto"``: every algorithm states, through ``auto_priority(problem)``, how
strongly it wants a problem (None: not a candidate). Among the algorithms that
can implement the problem within ``max_workspace_bytes`` the highest priority
wins; ties go to registration order. Each module documents its rule next to its
``auto_priority``; ``cuconv.algorithms(problem)`` shows every priority and reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backend import current_backend
from ..problem import Conv2dProblem
from . import _common


@dataclass(frozen=True)
class ConvAlgorithm:
    """One way to compute a convolution.

    ``can_implement(problem) -> str | None``: None if it can, else the reason it cannot.
    ``run(be, problem, x, w, bias, act_code, residual, out, *, max_workspace_bytes, **extra)``
    writes the result into ``out`` (already allocated and checked) and returns None.
    ``workspace_bytes(problem, max_workspace_bytes)`` is the workspace it will allocate.
    ``auto_priority(problem) -> float | None`` ranks it for ``algo="auto"``.
    ``dtypes`` are the input dtypes it accepts; ``layouts`` the activation layouts
    ("NCHW": KCRS weights; "NHWC": KRSC weights) its ``run`` takes.
    ``tf32``: for float32 inputs it multiplies on tf32 tensor cores (10-bit mantissas), so
    ``auto`` considers it only with ``allow_tf32=True`` (PyTorch's opt-in habit).
    """
    name: str
    can_implement: Callable[[Conv2dProblem], str | None]
    run: Callable[..., None]
    workspace_bytes: Callable[..., int] = lambda problem, limit=None: 0
    auto_priority: Callable[[Conv2dProblem], float | None] = lambda problem: None
    dtypes: tuple[str, ...] = ("float32",)
    description: str = ""
    layouts: tuple[str, ...] = ("NCHW",)
    tf32: bool = False


_ALGORITHMS: dict[str, ConvAlgorithm] = {}


def register_algorithm(alg: ConvAlgorithm) -> ConvAlgorithm:
    _ALGORITHMS[alg.name] = alg
    return alg


def algorithm(name: str) -> ConvAlgorithm:
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; available: {', '.join(['auto', *_ALGORITHMS])}")
    return _ALGORITHMS[name]


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    ok: bool
    reason: str | None
    workspace_bytes: int | None
    auto_priority: float | None


# Under allow_tf32=True, a tf32 tensor-core algorithm (its auto_priority not None) outranks every exact fp32 algorithm
# for dense layers (tensor cores give ~7x the fp32 rate on an H100), but not depthwise (100),
# whose per-channel work a 16x8 mma tile would mostly waste.
TF32_PRIORITY = 95.0


def _is_tf32(alg: ConvAlgorithm, problem: Conv2dProblem) -> bool:
    return alg.tf32 and problem.dtype == "float32"


def algorithms(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
               layout: str = "NCHW", allow_tf32: bool | None = None) -> list[AlgorithmInfo]:
    """Every registered algorithm, whether it can run ``problem``, and why not.

    ``auto_priority`` is what ``algo="auto"`` ranks by (None: auto never picks it here).
    """
    infos = []
    for alg in _ALGORITHMS.values():
        reason = None
        if problem.dtype not in alg.dtypes:
            reason = f"dtype {problem.dtype} not supported (needs {' or '.join(alg.dtypes)})"
        elif layout not in alg.layouts:
            reason = f"layout {layout} not supported (takes {' or '.join(alg.layouts)})"
        elif _is_tf32(alg, problem) and allow_tf32 is False:
            reason = "multiplies float32 as tf32, but allow_tf32=False"
        if reason is None:
            reason = alg.can_implement(problem)
        ws = None
        if reason is None:
            ws = alg.workspace_bytes(problem, max_workspace_bytes)
            if max_workspace_bytes is not None and ws > max_workspace_bytes:
                reason = f"needs {ws} bytes of workspace, more than max_workspace_bytes={max_workspace_bytes}"
        prio = None
        if reason is None:
            prio = alg.auto_priority(problem)
            if _is_tf32(alg, problem):   # its own priority orders the tf32 algorithms among themselves
                prio = TF32_PRIORITY + prio / 100 if (allow_tf32 and prio is not None) else None
        infos.append(AlgorithmInfo(alg.name, reason is None, reason, ws, prio))
    return infos


def choose_algorithm(problem: Conv2dProblem, max_workspace_bytes: int | None = None, *,
                     layout: str = "NCHW", allow_tf32: bool | None = None) -> str:
    """The ``auto`` rule: the highest ``auto_priority`` among the algorithms that can run it."""
    infos = algorithms(problem, max_workspace_bytes, layout=layout, allow_tf32=allow_tf32)
    best, best_prio = None, None
    for info in infos:
        if info.ok and info.auto_priority is not None and (best_prio is None or info.auto_priority > best_prio):
            best, best_prio = info.name, info.auto_priority
    if best is None:
        reasons = "; ".join(f"{i.name}: {i.reason or 'auto never picks it'}" for i in infos)
        raise ValueError(f"no algorithm can run {problem.describe()} {problem.dtype} {layout} ({reasons})")
    return best


_LAYOUTS = ("NCHW", "NHWC")


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
           activation=None, residual=None, out=None, max_workspace_bytes=None, layout="NCHW",
           allow_tf32=None, **extra):
    """2-D convolution (cross-correlation, as in torch.nn.functional.conv2d).

    ``y = activation(conv(x, w) + bias + residual)``, with the epilogue fused into the
    output write. ``stride``, ``padding``, ``dilation``: int or pair; ``padding`` may also
    be "same" or "valid". ``algo``: "auto" or a name from ``cuconv.algorithms(problem)``.
    ``layout="NCHW"`` (x: N,C,H,W; w: K,C/g,R,S; out: N,K,P,Q) or ``"NHWC"`` (x: N,H,W,C;
    w: K,R,S,C/g; out and residual: N,P,Q,K), the tensor cores' natural layout.
    ``allow_tf32``: float32 inputs may run on tf32 tensor cores (default: not by ``auto``;
    naming a tf32 algorithm opts in; ``False`` forbids it). Extra keyword arguments go to the
    named algorithm (e.g. ``transformed_weight=`` for Winograd) and need an explicit ``algo``.
    Returns ``out`` (allocated when None) on the current backend (cupy.ndarray on the GPU,
    numpy.ndarray on the emulator); work is queued on CuPy's current stream, no sync.
    """
    be = current_backend()
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if allow_tf32 not in (None, True, False):
        raise TypeError(f"allow_tf32 must be True, False or None, got {allow_tf32!r}")
    x = _common.as_tensor(x, "input", ndim=4, dtypes=None, be=be)
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=None, be=be)
    dtype = np.dtype(x.dtype)
    if np.dtype(w.dtype) != dtype:
        raise TypeError(f"input and weight must have the same dtype, got {dtype.name} and {np.dtype(w.dtype).name}")
    if layout == "NHWC":   # describe the problem in NCHW/KCRS terms, the one definition
        x_shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
        w_shape = (w.shape[0], w.shape[3], w.shape[1], w.shape[2])
    else:
        x_shape, w_shape = x.shape, w.shape
    try:
        problem = Conv2dProblem.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, dtype.name)
    except ValueError as exc:
        if layout == "NCHW":
            raise
        raise ValueError(f"{exc} [layout NHWC: input {tuple(x.shape)} read as N,H,W,C and weight "
                         f"{tuple(w.shape)} as K,R,S,C/groups]") from None
    out_shape = problem.output_shape if layout == "NCHW" else (problem.N, problem.P, problem.Q, problem.K)
    bias = _common.optional_tensor(bias, "bias", (problem.K,), dtype, be)
    residual = _common.optional_tensor(residual, "residual", out_shape, dtype, be)
    act = _common.activation_code(activation)
    _common.same_device(be, input=x, weight=w, bias=bias, residual=residual, out=out)
    if max_workspace_bytes is not None and max_workspace_bytes < 0:
        raise ValueError(f"max_workspace_bytes must be >= 0, got {max_workspace_bytes}")

    if algo == "auto":
        if extra:
            raise TypeError(f"extra arguments {sorted(extra)} belong to one algorithm: pass algo= "
                            "explicitly with them (algo='auto' may pick another)")
        name = choose_algorithm(problem, max_workspace_bytes, layout=layout, allow_tf32=allow_tf32)
    else:
        name = algo
    alg = algorithm(name)
    if problem.dtype not in alg.dtypes:
        raise TypeError(f"algo={name!r} takes {' or '.join(alg.dtypes)}, got {problem.dtype}")
    if layout not in alg.layouts:
        raise ValueError(f"algo={name!r} takes layout {' or '.join(alg.layouts)}, got {layout}")
    tf32 = _is_tf32(alg, problem)
    if tf32 and allow_tf32 is False:
        raise ValueError(f"algo={name!r} multiplies float32 as tf32, but allow_tf32=False was passed")
    reason = alg.can_implement(problem)
    if reason is not None:
        raise ValueError(f"algo={name!r} cannot run {problem.describe()}: {reason}")
    ws = alg.workspace_bytes(problem, max_workspace_bytes)
    if max_workspace_bytes is not None and ws > max_workspace_bytes:
        raise ValueError(f"algo={name!r} needs {ws} bytes of workspace for {problem.describe()}, "
                         f"more than max_workspace_bytes={max_workspace_bytes}")
    out = _common.prepare_out(out, out_shape, dtype, be,
                              inputs=(("input", x), ("weight", w), ("bias", bias), ("residual", residual)))
    if layout != "NCHW":
        extra["layout"] = layout
    if tf32:
        extra["allow_tf32"] = True
    alg.run(be, problem, x, w, bias, act, residual, out, max_workspace_bytes=max_workspace_bytes, **extra)
    return out
