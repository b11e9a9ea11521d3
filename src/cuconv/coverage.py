"""Native coverage: which layers of the landmark CNNs cuconv runs natively (issue 25 item 6).

For each model of ``cuconv.models``, in float32 NCHW, float16 NHWC and bfloat16 NHWC (``COLUMNS``),
every convolution and pooling layer is planned on the record backend for a device of a given arch
(``DEVICES``: an H100 for sm_90, an A100 for sm_80), forward and backward:

* forward: ``conv2d`` (``auto``, with the layer's bias), the pool with its options (max pools
  with indices, as training keeps them);
* backward: the data gradient (``cuconv.grad.conv2d_input``), the weight gradient
  (``conv2d_weight``) and, for a layer with a bias, the bias gradient (``conv2d_bias``: of NHWC
  dy, viewed as its (N·P·Q, K) rows, no copy); a pool's gradient. A layer's backward is native
  when every one of its gradients is.

A plan runs *natively* when it was made (no refusal), has no conversion step
(``Plan.conversions``: no pack, transpose or copy of an operand into another layout or dtype)
and, for a depthwise convolution (groups = C), runs on a depthwise kernel with no workspace (a
depthwise layer on the implicit GEMM pads every group's channel; the depthwise weight gradient may
keep its bounded reduction partials). ``table`` gives the
share of native layers per model, column and pass; ``missing`` each layer that is not native,
with the reason (the refusal's message, the conversion steps, the workspace).
``cuconv coverage --markdown docs/coverage.md`` writes ``markdown``'s document;
tests/test_coverage.py checks that the file is current and that every column reads 100 %.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import grad, launchability, models
from .backend import backend
from .dtypes import numpy_dtype
from .ops import pool as pool_ops
from .ops.conv2d import Shape, plan_conv2d

COLUMNS = (("float32", "NCHW"), ("float16", "NHWC"), ("bfloat16", "NHWC"))
PASSES = ("forward", "backward")
ARCHS = ("sm_90", "sm_80")
DEVICES = dict(launchability.DEVICES)      # arch -> (device, SMs, memory bytes): an H100 for sm_90, an A100 for sm_80
BATCH = 32        # a training batch: split-K, tile and workspace choices depend on it


@dataclass(frozen=True)
class Verdict:
    """One layer's pass in one column on one arch: native or not, and why not."""
    model: str
    layer: str
    kind: str             # "conv2d", "depthwise", "pointwise", "maxpool", "avgpool", "global_avgpool"
    dtype: str
    layout: str
    pass_: str            # "forward" or "backward"
    arch: str
    reasons: tuple[str, ...] = ()     # empty: native

    @property
    def native(self) -> bool:
        return not self.reasons


def _nhwc(shape) -> tuple:
    n, c, h, w = shape
    return (n, h, w, c)


def _judge(what: str, fn, depthwise: bool = False) -> str | None:
    """None when the plan ``fn()`` makes runs natively, else why not."""
    try:
        plan = fn()
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0]
        if "unexpected keyword argument 'layout'" in text:
            text = "no NHWC variant (the op takes no layout=)"
        return f"{what}: refused: {text}"
    steps = plan.conversions
    if steps:
        counts: dict = {}
        for s in steps:
            counts[s.kernel] = counts.get(s.kernel, 0) + 1
        return f"{what}: {plan.algo} converts: " + ", ".join(k if n == 1 else f"{k} x{n}" for k, n in counts.items())
    if depthwise and plan.algo != "depthwise":
        return f"{what}: depthwise layer on {plan.algo} ({plan.workspace_bytes} bytes of workspace)"
    if depthwise and plan.workspace_bytes and what != "dW":
        return f"{what}: depthwise with {plan.workspace_bytes} bytes of workspace"
    return None


def _conv_calls(p, bias: bool, layout: str):
    """(pass, what, plan thunk) of a conv layer (NCHW problem ``p``) in ``layout``."""
    dt = numpy_dtype(p.dtype)
    nhwc = layout == "NHWC"
    xs, ys = (_nhwc(p.input_shape), _nhwc(p.output_shape)) if nhwc else (p.input_shape, p.output_shape)
    ws = (p.K, p.R, p.S, p.C_per_group) if nhwc else p.weight_shape
    x, w, dy = Shape(xs, dt), Shape(ws, dt), Shape(ys, dt)
    b = Shape((p.K,), dt) if bias else None
    kw = dict(stride=(p.stride_h, p.stride_w), padding=(p.pad_h, p.pad_w), dilation=(p.dilation_h, p.dilation_w),
              groups=p.groups)
    calls = [("forward", "conv2d", lambda: plan_conv2d(x, w, b, layout=layout, **kw)),
             ("backward", "dx", lambda: grad.plan_conv2d_input(xs, w, dy, layout=layout, **kw)),
             ("backward", "dW", lambda: grad.plan_conv2d_weight(x, ws, dy, layout=layout, **kw))]
    if bias:
        rows = Shape((ys[0] * ys[1] * ys[2], ys[3]), dt) if nhwc else dy
        calls.append(("backward", "db", lambda: grad.plan_conv2d_bias(rows)))
    return calls


def _pool_calls(kind: str, spec, xs, ys, dtype: str, layout: str):
    """(pass, what, plan thunk) of a pooling layer in ``layout`` (``layout=`` passed only for NHWC)."""
    dt = numpy_dtype(dtype)
    lay = {}
    if layout == "NHWC":
        xs, ys, lay = _nhwc(xs), _nhwc(ys), {"layout": "NHWC"}
    # The forward pools plan from arrays (np.empty: pages are only reserved, the record backend
    # touches none); the backward plans take shape stand-ins.
    x, y = np.empty(tuple(xs), dt), Shape(tuple(ys), dt)
    if kind == "maxpool":
        kw = dict(kernel_size=spec.kernel_size, stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                  ceil_mode=spec.ceil_mode)
        idx = Shape(tuple(ys), np.dtype(np.int64))
        return [("forward", "max_pool2d", lambda: pool_ops.plan_max_pool2d(x, return_indices=True, **kw, **lay)),
                ("backward", "max_pool2d grad", lambda: grad.plan_max_pool2d(y, idx, x.shape, **kw, **lay))]
    if kind == "avgpool":
        kw = dict(kernel_size=spec.kernel_size, stride=spec.stride, padding=spec.padding, ceil_mode=spec.ceil_mode,
                  count_include_pad=spec.count_include_pad)
        return [("forward", "avg_pool2d", lambda: pool_ops.plan_avg_pool2d(x, **kw, **lay)),
                ("backward", "avg_pool2d grad", lambda: grad.plan_avg_pool2d(y, x.shape, **kw, **lay))]
    return [("forward", "global_avg_pool2d", lambda: pool_ops.plan_global_avg_pool2d(x, **lay)),
            ("backward", "global_avg_pool2d grad", lambda: grad.plan_global_avg_pool2d(y, x.shape, **lay))]


def _layer_key(layer, batch: int) -> tuple:
    if layer[0] == "conv":
        _, _, p, bias = layer
        return ("conv", p.with_(N=batch), bias)
    _, _, kind, spec, xs, ys = layer
    return ("pool", kind, repr(spec), (batch, *xs[1:]), (batch, *ys[1:]))


@functools.lru_cache(maxsize=None)
def _layer_reasons(key: tuple, spec_obj, dtype: str, layout: str, arch: str) -> dict:
    """pass -> reasons of one distinct layer (memoized: models share layers)."""
    _, sms, memory = DEVICES[arch]
    with backend("record", cc=int(arch[3:]), sms=sms, memory_bytes=memory):
        if key[0] == "conv":
            p = key[1].with_(dtype=dtype)
            calls = _conv_calls(p, key[2], layout)
            depthwise = p.groups == p.C and p.groups > 1
        else:
            calls = _pool_calls(key[1], spec_obj, key[3], key[4], dtype, layout)
            depthwise = False
        out: dict = {ps: [] for ps in PASSES}
        for ps, what, fn in calls:
            reason = _judge(what, fn, depthwise)
            if reason is not None:
                out[ps].append(reason)
    return {ps: tuple(r) for ps, r in out.items()}


def verdicts(model: str, arch: str = "sm_90", columns=COLUMNS, batch: int = BATCH) -> list[Verdict]:
    """Every conv and pooling layer of ``model``, in each column and pass, on ``arch``."""
    out = []
    for layer in launchability.model_layers(model):
        key = _layer_key(layer, batch)
        if layer[0] == "conv":
            p, spec = layer[2], None
            kind = "depthwise" if p.groups == p.C and p.groups > 1 else ("pointwise" if p.R == p.S == 1 else "conv2d")
        else:
            kind, spec = layer[2], layer[3]
        for dtype, layout in columns:
            reasons = _layer_reasons(key, spec, dtype, layout, arch)
            for ps in PASSES:
                out.append(Verdict(model, layer[1], kind, dtype, layout, ps, arch, reasons[ps]))
    return out


def column_name(dtype: str, layout: str, pass_: str) -> str:
    return f"{dtype} {layout} {pass_}"


def table(archs=ARCHS, model_names=None, batch: int = BATCH) -> dict:
    """{arch: {model: {column name: (native layers, layers)}}} for every column and pass."""
    result = {}
    for arch in archs:
        rows = {}
        for model in (model_names or models.names()):
            cells: dict = {}
            for v in verdicts(model, arch, batch=batch):
                name = column_name(v.dtype, v.layout, v.pass_)
                native, total = cells.get(name, (0, 0))
                cells[name] = (native + v.native, total + 1)
            rows[model] = cells
        result[arch] = rows
    return result


def missing(archs=ARCHS, model_names=None, batch: int = BATCH) -> list[Verdict]:
    """Every layer pass that does not run natively, with its reasons."""
    return [v for arch in archs for model in (model_names or models.names())
            for v in verdicts(model, arch, batch=batch) if not v.native]


def _percent(native: int, total: int) -> str:
    if total == 0:
        return "–"
    share = 100 * native / total
    text = f"{share:.0f} %" if native in (0, total) else f"{min(share, 99.9):.1f} %"
    return text


def markdown(archs=ARCHS, batch: int = BATCH) -> str:
    """The coverage document (docs/coverage.md)."""
    cols = [column_name(dt, lay, ps) for dt, lay in COLUMNS for ps in PASSES]
    lines = ["<!-- Generated by `cuconv coverage --markdown docs/coverage.md`; do not edit by hand. -->", "",
             "# Native coverage of the landmark CNNs", "",
             "The share of each model's convolution and pooling layers whose plan runs natively: planned "
             "(not refused), with no conversion step (no pack, transpose or copy into another layout or "
             "dtype: `Plan.conversions`) and, for a depthwise layer, a depthwise kernel with no workspace (its dW may "
             "keep split-K partials, as the dense wgrad does). Forward: the layer "
             "(`auto`); backward: every gradient it has (dx, dW and db of a convolution, a pool's "
             "gradient). Planned on the record backend (no GPU: what the plans would launch) at batch "
             f"{batch} for the device named per table; `cuconv coverage --missing` lists each layer that is "
             "not native and why. Computed by `cuconv.coverage` (tests/test_coverage.py checks this "
             "file and the target: 100 % in every column).", ""]
    tab = table(archs, batch=batch)
    for arch in archs:
        name = DEVICES[arch][0]
        lines += [f"## {arch} ({name})", "",
                  "| model | layers | " + " | ".join(cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        totals = {c: [0, 0] for c in cols}
        for model, cells in tab[arch].items():
            n = cells[cols[0]][1] if cells else 0
            lines.append(f"| {model} | {n} | " + " | ".join(_percent(*cells[c]) for c in cols) + " |")
            for c in cols:
                totals[c][0] += cells[c][0]
                totals[c][1] += cells[c][1]
        lines.append("| **all** | " + str(totals[cols[0]][1]) + " | "
                     + " | ".join(f"**{_percent(*totals[c])}**" for c in cols) + " |")
        lines.append("")
    short = missing(archs, batch=batch)
    if short:
        counts: dict = {}
        for v in short:
            k = (column_name(v.dtype, v.layout, v.pass_), v.kind)
            counts.setdefault(k, dict.fromkeys(archs, 0))[v.arch] += 1
        lines += ["## What is not native", "",
                  "Layer passes that are not native, by column and layer kind "
                  "(`cuconv coverage --missing` gives each one with its reason):", "",
                  "| column | layer kind | " + " | ".join(archs) + " |", "|---|---|" + "---:|" * len(archs)]
        lines += [f"| {c} | {k} | " + " | ".join(str(n[a]) for a in archs) + " |"
                  for (c, k), n in sorted(counts.items())]
        lines.append("")
    return "\n".join(lines)


__all__ = ["ARCHS", "BATCH", "COLUMNS", "DEVICES", "PASSES", "Verdict", "markdown", "missing", "table", "verdicts"]
