"""What a convolution algorithm is: a name, what it accepts, and ``plan(spec) -> Plan``.

``ConvSpec`` is the frozen description of one convolution call — the forward problem, which pass
(``operator``: the forward convolution, its data gradient or its weight gradient, as CUTLASS makes
the conv operator a parameter), the layout, the device's capabilities, the epilogue, allow_tf32,
the workspace cap, determinism, the algorithm's own options — everything a plan depends on. Each
algorithm module (ops/direct.py, ops/implicit_gemm.py, ops/conv_dgrad.py, ...) defines one or more
``ConvAlgorithm``s; ops/conv2d.py lists every pass's explicitly and ops/heuristics.py says which one
``auto`` takes.

The passes' array roles (``conv_plan`` builds the Plan with them):

* ``FPROP`` (``conv2d``): inputs x, w, bias, residual; output out = act(conv(x, w) + bias + residual);
* ``DGRAD`` (``conv2d_input``): inputs w, dy; output dx (the forward's input gradient);
* ``WGRAD`` (``conv2d_weight``): inputs x, dy; output dw, and db (the bias gradient) when
  ``has_bias``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..backend import DeviceCaps
from ..dtypes import numpy_dtype
from ..plan import Output, Plan, PlanError, arch_refusal
from ..problem import Conv2dProblem

LAYOUTS = ("NCHW", "NHWC")
FPROP, DGRAD, WGRAD = "fprop", "dgrad", "wgrad"
OPERATORS = (FPROP, DGRAD, WGRAD)
# The op each pass's plans are made for (Plan.op).
OPS = {FPROP: "conv2d", DGRAD: "conv2d_input", WGRAD: "conv2d_weight"}


@dataclass(frozen=True)
class ConvSpec:
    """One convolution call, as far as planning is concerned. ``problem`` is the forward
    convolution whatever the pass; ``has_bias`` asks a weight gradient for db too."""
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
    operator: str = FPROP                # FPROP, DGRAD or WGRAD
    deterministic: bool = True           # WGRAD: False permits accumulating with atomicAdd

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
        """The forward output's shape in the spec's layout (out, residual, and dy)."""
        p = self.problem
        return p.output_shape if self.layout == "NCHW" else (p.N, p.P, p.Q, p.K)

    def aligned(self, role: str) -> bool:
        return role not in self.misaligned


@dataclass(frozen=True)
class ConvAlgorithm:
    """One way to compute a pass of a convolution.

    ``plan(spec) -> Plan`` returns the launches for ``spec`` or raises ``PlanError`` with the
    reason it cannot (CUTLASS's can_implement). ``operator`` is the pass it computes, ``dtypes``
    the input dtypes it accepts, ``layouts`` the activation layouts ("NCHW": KCRS weights;
    "NHWC": KRSC weights). ``tf32``: for float32 inputs it multiplies on tf32 tensor cores
    (10-bit mantissas), so it runs only when the caller allows tf32 (``auto`` only with
    ``allow_tf32=True``, PyTorch's opt-in habit). ``options`` are the extra keyword arguments the
    op passes through to it. ``crops``: it takes a problem with a negative end padding (the
    convolution stops short of the input's end: ConvTransposeProblem.as_conv2d's, for the
    transposed convolution's gradients when output_padding spans a stride), its kernels bounding
    every output by P and Q and reading no input row past them.
    """
    name: str
    plan: Callable[[ConvSpec], Plan]
    dtypes: tuple[str, ...] = ("float32",)
    layouts: tuple[str, ...] = ("NCHW",)
    tf32: bool = False
    options: tuple[str, ...] = ()
    description: str = ""
    operator: str = FPROP
    crops: bool = False

    def computes_tf32(self, dtype: str) -> bool:
        return self.tf32 and dtype == "float32"

    def refusal(self, spec: ConvSpec) -> str | None:
        """The reason this algorithm refuses ``spec`` before planning (pass, dtype, layout, tf32,
        options), or None."""
        if spec.operator != self.operator:
            return f"computes {OPS[self.operator]}, not {OPS[spec.operator]}"
        if spec.dtype not in self.dtypes:
            return f"dtype {spec.dtype} not supported (needs {' or '.join(self.dtypes)})"
        if spec.layout not in self.layouts:
            return f"layout {spec.layout} not supported (takes {' or '.join(self.layouts)})"
        if self.computes_tf32(spec.dtype) and spec.allow_tf32 is False:
            return "multiplies float32 as tf32, but allow_tf32=False"
        if not self.crops and min(spec.problem.pad_bottom, spec.problem.pad_right) < 0:
            return ("negative end padding (a transposed convolution's output_padding spanning a stride) "
                    f"is not built for {self.name}")
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
        capability (checked here for every pass and every algorithm, so no plan ever names one), or
        a workspace over the cap (the error then carries the plan)."""
        reason = self.refusal(spec)
        if reason is not None:
            raise PlanError(reason)
        if spec.problem.N == 0 and spec.operator != WGRAD:
            return conv_plan(spec, self.name, [])     # an empty batch: an empty output, nothing to launch
        plan = self.plan(spec)                        # (a weight gradient over no images is zeros: planned)
        reason = arch_refusal(plan.launches, spec.caps.cc)
        if reason is not None:
            raise PlanError(reason)
        cap = spec.max_workspace_bytes
        if cap is not None and plan.workspace_bytes > cap:
            raise PlanError(f"needs {plan.workspace_bytes} bytes of workspace, more than "
                            f"max_workspace_bytes={cap}", plan)
        return plan


@dataclass(frozen=True)
class AlgorithmInfo:
    """One algorithm on one problem: whether it can run it (``ok``), why not (``reason``), its
    workspace and its ``plan`` (None when it cannot plan at all), and, on the algorithm ``auto``
    takes, the reason of the rule that takes it (None on the others)."""
    name: str
    ok: bool
    reason: str | None
    workspace_bytes: int | None
    plan: Plan | None = None
    auto_rule: str | None = None

    @property
    def kernels(self) -> list[str]:
        return self.plan.kernels if self.plan is not None else []


def conv_plan(spec: ConvSpec, algo: str, launches, *, workspace=(), extra_inputs=(), aligned=(),
              description: str = "") -> Plan:
    """The Plan of a convolution pass with the pass's roles (see the module docstring).
    ``workspace``: (buffers, total bytes) from ``plan.layout_buffers``; ``extra_inputs``: (role,
    shape) of further forward input arrays of the problem's dtype (Winograd's transformed weight),
    or (role, shape, dtype) (the FFT's complex64 filter spectra)."""
    buffers, nbytes = workspace if workspace else ((), 0)
    p = spec.problem
    dt = p.dtype
    ndt = numpy_dtype(dt)
    if spec.layout == "NCHW":
        x_shape, w_shape = p.input_shape, p.weight_shape
    else:
        x_shape, w_shape = (p.N, p.H, p.W, p.C), (p.K, p.R, p.S, p.C_per_group)
    absent = frozenset()
    if spec.operator == FPROP:
        inputs = ("x", "w", "bias", "residual", *(e[0] for e in extra_inputs))
        outputs = (Output("out", spec.out_shape, ndt),)
        absent = frozenset(r for r, has in (("bias", spec.has_bias), ("residual", spec.has_residual)) if not has)
        expected = (("x", x_shape, dt), ("w", w_shape, dt), ("bias", (p.K,), dt), ("residual", spec.out_shape, dt),
                    *((e[0], tuple(e[1]), e[2] if len(e) > 2 else dt) for e in extra_inputs))
    elif spec.operator == DGRAD:
        inputs, outputs = ("w", "dy"), (Output("dx", x_shape, ndt),)
        expected = (("w", w_shape, dt), ("dy", spec.out_shape, dt))
    else:
        inputs = ("x", "dy")
        outputs = (Output("dw", w_shape, ndt), *((Output("db", (p.K,), ndt),) if spec.has_bias else ()))
        expected = (("x", x_shape, dt), ("dy", spec.out_shape, dt))
    return Plan(op=OPS[spec.operator], algo=algo, problem=p, launches=tuple(launches), inputs=inputs,
                outputs=outputs, device=spec.device, workspace_bytes=nbytes, buffers=buffers,
                aligned=tuple(aligned), absent=absent, expected=expected, description=description)


__all__ = ["ConvSpec", "ConvAlgorithm", "AlgorithmInfo", "PlanError", "conv_plan", "LAYOUTS", "FPROP", "DGRAD",
           "WGRAD", "OPERATORS", "OPS"]
