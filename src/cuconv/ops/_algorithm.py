"""What a conv2d algorithm is: a name, what it accepts, and ``plan(spec) -> Plan``.

``ConvSpec`` is the frozen description of one conv2d call — the problem, the layout, the
device's capabilities, the epilogue, allow_tf32, the workspace cap, the algorithm's own
options — everything a plan depends on. Each algorithm module (ops/direct.py,
ops/implicit_gemm.py, ...) defines one or more ``ConvAlgorithm``s; ops/conv2d.py lists them
explicitly and ops/heuristics.py says which one ``auto`` takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..backend import DeviceCaps
from ..plan import Output, Plan, PlanError, arch_refusal
from ..problem import Conv2dProblem, numpy_dtype

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ConvSpec:
    """One conv2d call, as far as planning is concerned."""
    problem: Conv2dProblem
    layout: str = "NCHW"
    caps: DeviceCaps = field(default_factory=DeviceCaps)
    device: object = None
    allow_tf32: bool | None = None
    max_workspace_bytes: int | None = None
    has_bias: bool = False
    has_residual: bool = False
    act: int = 0
    options: tuple = ()                  # (name, value) of the algorithm's own keyword arguments
    misaligned: frozenset = frozenset()  # roles whose pointers are not 16-byte aligned

    def option(self, name: str, default=None):
        for k, v in self.options:
            if k == name:
                return v
        return default

    @property
    def dtype(self) -> str:
        return self.problem.dtype

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        p = self.problem
        return p.output_shape if self.layout == "NCHW" else (p.N, p.P, p.Q, p.K)

    def aligned(self, role: str) -> bool:
        return role not in self.misaligned


@dataclass(frozen=True)
class ConvAlgorithm:
    """One way to compute a convolution.

    ``plan(spec) -> Plan`` returns the launches for ``spec`` or raises ``PlanError`` with the
    reason it cannot (CUTLASS's can_implement). ``dtypes`` are the input dtypes it accepts,
    ``layouts`` the activation layouts ("NCHW": KCRS weights; "NHWC": KRSC weights).
    ``tf32``: for float32 inputs it multiplies on tf32 tensor cores (10-bit mantissas), so it
    runs only when the caller allows tf32 (``auto`` only with ``allow_tf32=True``, PyTorch's
    opt-in habit). ``options`` are the extra keyword arguments conv2d passes through to it.
    """
    name: str
    plan: Callable[[ConvSpec], Plan]
    dtypes: tuple[str, ...] = ("float32",)
    layouts: tuple[str, ...] = ("NCHW",)
    tf32: bool = False
    options: tuple[str, ...] = ()
    description: str = ""

    def computes_tf32(self, dtype: str) -> bool:
        return self.tf32 and dtype == "float32"

    def refusal(self, spec: ConvSpec) -> str | None:
        """The reason this algorithm refuses ``spec`` before planning (dtype, layout, tf32,
        options), or None."""
        if spec.dtype not in self.dtypes:
            return f"dtype {spec.dtype} not supported (needs {' or '.join(self.dtypes)})"
        if spec.layout not in self.layouts:
            return f"layout {spec.layout} not supported (takes {' or '.join(self.layouts)})"
        if self.computes_tf32(spec.dtype) and spec.allow_tf32 is False:
            return "multiplies float32 as tf32, but allow_tf32=False"
        unknown = sorted(k for k, _ in spec.options if k not in self.options)
        if unknown:
            takes = f"takes only {', '.join(f'{o}=' for o in self.options)}" if self.options else "takes no extra arguments"
            return f"algo={self.name!r} {takes} as extra arguments, got {unknown}"
        return None

    def plan_or_raise(self, spec: ConvSpec) -> Plan:
        """The plan of an explicitly named algorithm: TypeError (dtype, extra arguments) or
        ValueError (layout, tf32, limits, workspace) saying why it cannot run the call."""
        name, p = self.name, spec.problem
        if spec.dtype not in self.dtypes:
            raise TypeError(f"algo={name!r} takes dtype {' or '.join(self.dtypes)}, got {spec.dtype}")
        unknown = sorted(k for k, _ in spec.options if k not in self.options)
        if unknown:
            if self.options:
                raise TypeError(f"algo={name!r} got unexpected keyword arguments {unknown}; it takes only "
                                f"{', '.join(o + '=' for o in self.options)}")
            raise TypeError(f"algo={name!r} takes no extra arguments, got unexpected keyword arguments {unknown}")
        if spec.layout not in self.layouts:
            raise ValueError(f"algo={name!r} takes layout {' or '.join(self.layouts)}, got {spec.layout}")
        if self.computes_tf32(spec.dtype) and spec.allow_tf32 is False:
            raise ValueError(f"algo={name!r} multiplies float32 as tf32, but allow_tf32=False was passed")
        try:
            return self.make_plan(spec)
        except PlanError as exc:
            raise ValueError(f"algo={name!r} cannot run {p.describe()}: {exc}") from None

    def make_plan(self, spec: ConvSpec) -> Plan:
        """The plan, or PlanError with the reason: a kernel not built for the device's compute
        capability (checked here for every algorithm, so no plan ever names one), or a workspace
        over the cap."""
        reason = self.refusal(spec)
        if reason is not None:
            raise PlanError(reason)
        if spec.problem.N == 0:      # an empty batch: an empty output, nothing to launch
            return conv_plan(spec, self.name, [])
        plan = self.plan(spec)
        reason = arch_refusal(plan.launches, spec.caps.cc)
        if reason is not None:
            raise PlanError(reason)
        cap = spec.max_workspace_bytes
        if cap is not None and plan.workspace_bytes > cap:
            raise PlanError(f"needs {plan.workspace_bytes} bytes of workspace, more than "
                            f"max_workspace_bytes={cap}")
        return plan


def conv_plan(spec: ConvSpec, algo: str, launches, *, workspace=(), extra_inputs=(), aligned=(),
              description: str = "") -> Plan:
    """A conv2d Plan: inputs x, w, bias, residual (+ ``extra_inputs``), output ``out``.
    ``workspace``: (buffers, total bytes) from ``plan.layout_buffers``; ``extra_inputs``:
    (role, shape) of further input arrays of the problem's dtype (Winograd's transformed weight),
    or (role, shape, dtype) (the FFT's complex64 filter spectra)."""
    buffers, nbytes = workspace if workspace else ((), 0)
    absent = {r for r, has in (("bias", spec.has_bias), ("residual", spec.has_residual)) if not has}
    extra = tuple(e[0] for e in extra_inputs)
    p = spec.problem
    dt = p.dtype
    if spec.layout == "NCHW":
        x_shape, w_shape = p.input_shape, p.weight_shape
    else:
        x_shape, w_shape = (p.N, p.H, p.W, p.C), (p.K, p.R, p.S, p.C_per_group)
    expected = (("x", x_shape, dt), ("w", w_shape, dt), ("bias", (p.K,), dt), ("residual", spec.out_shape, dt),
                *((e[0], tuple(e[1]), e[2] if len(e) > 2 else dt) for e in extra_inputs))
    return Plan(op="conv2d", algo=algo, problem=p, launches=tuple(launches),
                inputs=("x", "w", "bias", "residual", *extra),
                outputs=(Output("out", spec.out_shape, numpy_dtype(dt)),), device=spec.device,
                workspace_bytes=nbytes, buffers=buffers, aligned=tuple(aligned),
                absent=frozenset(absent), expected=expected, description=description)


__all__ = ["ConvSpec", "ConvAlgorithm", "PlanError", "conv_plan", "LAYOUTS"]
