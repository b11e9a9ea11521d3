"""Launchability: will every launch cuconv plans for a model start on a given GPU?

``sweep`` plans the conv and pooling layers of cuconv.models' landmark CNNs — the forward
convolution (``auto``), its backward (dx, dW and db in one plan), the bias gradient alone, the
pools and their gradients — on the record backend for a device of each arch of the compile matrix,
and checks every launch of every plan as the CUDA driver would check it on that device
(``arch.launch_violations``): block and grid dimensions, threads per block, dynamic + static
shared memory against the default 48 KiB and the opted-in limit, registers × threads (static
shared memory and registers from the compile matrix's NVRTC build of the entry for that arch),
and that the kernel is built for the arch at all. It also checks that no ``auto`` plan's
workspace exceeds the device's default cap (a quarter of its memory) and that planning raises
nothing but ValueError/TypeError (a refusal, with its reason).

The devices are real ones per arch (a T4 for sm_75 ... an RTX 5090 for sm_120: SM counts and
memory decide split-K and the workspace cap). ``tests/test_launchability.py`` runs it in CI;
``cuconv check --launchability`` prints the report (bench/gpu_session.sh runs it for the lent
device's own arch first).
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import grad, models
from .arch import DEFAULT_MAX_SMEM_PER_BLOCK, launch_violations, table_arch
from .backend import backend, workspace_cap
from .compile import compile_entry, runs_on
from .dtypes import numpy_dtype
from .ops import pool as pool_ops
from .ops.conv2d import Shape, plan_conv2d
from .registry import ARCHS

# One device per arch of the compile matrix: (name, SMs, memory bytes). SM counts decide split-K
# and grid shapes, memory auto's workspace cap (the smallest memories bound it hardest).
DEVICES = {
    "sm_75": ("Tesla T4", 40, 16 << 30),
    "sm_80": ("A100 SXM 40GB", 108, 40 << 30),
    "sm_86": ("A10", 72, 24 << 30),
    "sm_89": ("L4", 58, 24 << 30),
    "sm_90": ("H100 SXM", 132, 80 << 30),
    "sm_100": ("B200", 148, 180 << 30),
    "sm_120": ("GeForce RTX 5090", 170, 32 << 30),
}
DTYPES = ("float32", "float16", "bfloat16", "float64")
BATCHES = (1, 32, 256)
CONV_TYPES = ("conv2d", "depthwise", "pointwise")


@dataclass
class Finding:
    """One thing wrong: a launch the device would refuse, a workspace over the cap, or an exception
    other than ValueError/TypeError while planning."""
    arch: str
    what: str
    reason: str


@dataclass
class Report:
    archs: tuple
    plans: int = 0
    launches: int = 0
    kernels: set = field(default_factory=set)
    refusals: Counter = field(default_factory=Counter)    # (arch, first line of the reason) -> count
    violations: list = field(default_factory=list)
    over_cap: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    no_resources: set = field(default_factory=set)         # (label, target) NVRTC could not build

    @property
    def ok(self) -> bool:
        return not (self.violations or self.over_cap or self.errors)

    def lines(self) -> list[str]:
        out = [f"launchability on {', '.join(self.archs)}: {self.plans} plans, {self.launches} launches of "
               f"{len(self.kernels)} kernels checked; {len(self.violations)} launch(es) a device would refuse, "
               f"{len(self.over_cap)} auto workspace(s) over the cap, {len(self.errors)} unexpected exception(s); "
               f"{sum(self.refusals.values())} call(s) refused with ValueError/TypeError"]
        for title, items in (("REFUSED LAUNCH", self.violations), ("OVER CAP", self.over_cap),
                             ("EXCEPTION", self.errors)):
            out += [f"{title} [{f.arch}] {f.what}: {f.reason}" for f in items[:50]]
        if self.no_resources:
            out.append(f"registers/static shared memory unchecked for {len(self.no_resources)} kernel build(s) "
                       f"NVRTC could not make: {sorted(self.no_resources)[:5]}")
        return out


def resource_target(entry, arch: str) -> str:
    """The build whose registers a device of ``arch`` runs: the arch-specific one (sm_90a) when the
    entry has only that for the arch (the GPU backend compiles its file for it), else the arch."""
    specific = arch + "a"
    return specific if specific in entry.archs and arch not in entry.archs else arch


class Checker:
    """Checks launches against one arch's limits, with each kernel's registers and static shared
    memory from its NVRTC build (memoized; ``resources=False`` skips the build)."""

    def __init__(self, arch: str, report: Report, resources: bool = True):
        self.arch, self.cc, self.report, self.resources = arch, int(arch[3:]), report, resources
        self._built: dict = {}
        self._seen: set = set()

    def _build(self, entry):
        target = resource_target(entry, self.arch)
        key = (entry.label, target)
        if key not in self._built:
            res = None
            if self.resources:
                try:
                    res = compile_entry(entry, target)
                except Exception:          # no NVRTC here: the dimension checks still run
                    self.report.no_resources.add(key)
            self._built[key] = res
        return self._built[key]

    def launch(self, ln, what: str) -> None:
        self.report.launches += 1
        if ln.entry is None:               # a library step (cuFFT): not ours to check
            return
        entry = ln.entry
        self.report.kernels.add(entry.label)
        key = (entry.label, ln.grid, ln.block, ln.shared_mem)
        if key in self._seen:
            return
        self._seen.add(key)
        if not runs_on(entry, self.cc):
            self.report.violations.append(Finding(self.arch, what, f"{entry.label} is not built for {self.arch} "
                                                                   f"(targets {', '.join(entry.archs)})"))
            return
        res = self._build(entry)
        opt_in = entry.dynamic_smem if entry.dynamic_smem > DEFAULT_MAX_SMEM_PER_BLOCK else 0
        reasons = launch_violations(self.arch, ln.grid, ln.block, ln.shared_mem, opt_in_smem=opt_in,
                                    static_smem=res.static_smem_bytes if res else 0,
                                    registers=res.registers if res else None)
        if ln.shared_mem > max(entry.dynamic_smem, DEFAULT_MAX_SMEM_PER_BLOCK):
            reasons.append(f"{ln.shared_mem} bytes of dynamic shared memory, more than the entry's registered "
                           f"{entry.dynamic_smem} (what the GPU backend opts in to)")
        for r in reasons:
            self.report.violations.append(Finding(self.arch, what, f"{entry.label} grid={ln.grid} "
                                                                   f"block={ln.block} smem={ln.shared_mem}: {r}"))


def _conv_calls(p, has_bias: bool):
    """(name, plan thunk) of a conv layer's forward, backward and bias-gradient plans."""
    dt = numpy_dtype(p.dtype)
    x, w = Shape(p.input_shape, dt), Shape(p.weight_shape, dt)
    b, dy = (Shape((p.K,), dt) if has_bias else None), Shape(p.output_shape, dt)
    kw = dict(stride=(p.stride_h, p.stride_w), padding=(p.pad_h, p.pad_w), dilation=(p.dilation_h, p.dilation_w),
              groups=p.groups)
    return [("forward", lambda: plan_conv2d(x, w, b, **kw)),
            ("backward", lambda: grad.plan_conv2d_backward(x, w, dy, output_mask=(True, True, has_bias), **kw)),
            ("bias gradient", lambda: grad.plan_conv2d_bias(dy))]


def _pool_calls(kind: str, spec, x_shape, y_shape, dtype):
    """(name, plan thunk) of a pooling layer's forward and backward plans (adaptive pooling to sizes
    other than 1 has no kernel)."""
    dt = numpy_dtype(dtype)
    # The forward pools plan from arrays (np.empty: pages are only reserved, the record backend
    # touches none); the backward plans take shape stand-ins.
    x, y = np.empty(tuple(x_shape), dt), Shape(tuple(y_shape), dt)
    if kind == "maxpool":
        kw = dict(kernel_size=spec.kernel_size, stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                  ceil_mode=spec.ceil_mode)
        idx = Shape(tuple(y_shape), np.dtype(np.int64))
        return [("max_pool2d", lambda: pool_ops.plan_max_pool2d(x, return_indices=True, **kw)),
                ("max_pool2d backward", lambda: grad.plan_max_pool2d(y, idx, x.shape, **kw))]
    if kind == "avgpool":
        kw = dict(kernel_size=spec.kernel_size, stride=spec.stride, padding=spec.padding, ceil_mode=spec.ceil_mode,
                  count_include_pad=spec.count_include_pad)
        return [("avg_pool2d", lambda: pool_ops.plan_avg_pool2d(x, **kw)),
                ("avg_pool2d backward", lambda: grad.plan_avg_pool2d(y, x.shape, **kw))]
    return [("global_avg_pool2d", lambda: pool_ops.plan_global_avg_pool2d(x)),
            ("global_avg_pool2d backward", lambda: grad.plan_global_avg_pool2d(y, x.shape))]


@functools.lru_cache(maxsize=None)
def model_layers(name: str) -> tuple:
    """The conv and pooling layers of model ``name`` at batch 1 in float32 (building a model costs its
    whole cost model; the sweep scales these): ("conv", layer name, problem, bias) and ("pool",
    layer name, kind, spec, input shape, output shape)."""
    model = models.get(name, batch=1)
    out = []
    for lay in model.layers:
        if lay.type in CONV_TYPES:
            out.append(("conv", lay.name, lay.problem, bool(getattr(lay.layer, "bias", False))))
        elif lay.type in ("maxpool", "avgpool", "global_avgpool"):
            out.append(("pool", lay.name, lay.type, lay.layer, tuple(lay.input_shape), tuple(lay.output_shape)))
    return tuple(out)


def layer_calls(name: str, batch: int, dtype: str, seen: set | None = None) -> list[tuple[str, object, bool]]:
    """(description, plan thunk, auto?) for every conv and pooling call of model ``name`` at ``batch``
    in ``dtype`` (plans are made on the current backend), each distinct call once (``seen``: the
    calls already listed, shared across models: ResNet-101 repeats ResNet-50's layers)."""
    seen = set() if seen is None else seen
    out = []
    for layer in model_layers(name):
        if layer[0] == "conv":
            _, lname, p, bias = layer
            p = p.with_(N=batch, dtype=dtype)
            key = ("conv", p, bias)
            calls = () if key in seen else _conv_calls(p, bias)
            desc = f"{p.describe()} {dtype}"
        else:
            _, lname, kind, spec, xs, ys = layer
            xs, ys = (batch, *xs[1:]), (batch, *ys[1:])
            key = ("pool", kind, repr(spec), xs, dtype)
            calls = () if key in seen else _pool_calls(kind, spec, xs, ys, dtype)
            desc = f"{xs} {dtype}"
        seen.add(key)
        out += [(f"{name} {lname} {what} {desc}", fn, what in ("forward", "backward")) for what, fn in calls]
    return out


def sample_batch(i_model: int, i_arch: int, i_dtype: int, batches=BATCHES) -> int:
    """The batch size a (model, arch, dtype) cell of the sweep plans: rotated so that every model
    meets every batch size across the archs and dtypes, at a third of the cost of all three."""
    return batches[(i_model + i_arch + i_dtype) % len(batches)]


def sweep(archs=ARCHS, model_names=None, dtypes=DTYPES, batches=BATCHES, *, all_batches: bool = False,
          resources: bool = True, devices=None) -> Report:
    """Plan and check (see the module docstring). ``all_batches``: every batch size for every
    (model, arch, dtype) instead of the rotation of ``sample_batch``. ``devices``: arch -> (name,
    SMs, memory bytes), default DEVICES."""
    devices = devices or DEVICES
    names = list(model_names or models.names())
    report = Report(tuple(archs))
    for ia, arch in enumerate(archs):
        name, sms, memory = devices[arch]
        checker = Checker(table_arch(arch), report, resources)
        seen: set = set()
        with backend("record", cc=int(arch[3:]), sms=sms, memory_bytes=memory) as be:
            cap, _ = workspace_cap(be.caps(), None)
            for im, mname in enumerate(names):
                for idt, dtype in enumerate(dtypes):
                    for batch in (batches if all_batches else (sample_batch(im, ia, idt, batches),)):
                        for what, fn, auto in layer_calls(mname, batch, dtype, seen):
                            _check_call(report, checker, arch, f"{what} [{name}]", fn, auto, cap)
    return report


def _check_call(report: Report, checker: Checker, arch: str, what: str, fn, auto: bool, cap: int) -> None:
    try:
        plan = fn()
    except (ValueError, TypeError) as exc:
        report.refusals[(arch, str(exc).splitlines()[0][:160])] += 1
        return
    except Exception as exc:       # noqa: BLE001 (anything else is a finding, not a crash of the sweep)
        report.errors.append(Finding(arch, what, f"{type(exc).__name__}: {exc}"))
        return
    report.plans += 1
    if auto and plan.workspace_bytes > cap:
        report.over_cap.append(Finding(arch, what, f"{plan.algo} needs {plan.workspace_bytes} bytes of workspace, "
                                                   f"more than the default cap {cap}"))
    for ln in plan.launches:
        checker.launch(ln, what)


__all__ = ["DEVICES", "DTYPES", "BATCHES", "Report", "Finding", "Checker", "sweep", "layer_calls",
           "sample_batch", "resource_target"]
