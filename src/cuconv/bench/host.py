"""The host cost of an op call: ``cuconv bench host``.

Every op's real host path — argument checks, the plan lookup, output and workspace
allocation, the per-device function table — runs on the record backend
(``cuconv.backend("record")``: NumPy arrays, every launch recorded, none executed), so what
is timed is exactly the Python a GPU call spends before CuPy's launch itself (which the
record backend replaces with appending a record). Two figures per call:

* ``cached``: the median over ``repeats`` batches of ``calls`` back-to-back calls with the
  same shapes (the plan is memoized): what a training or inference loop pays per layer;
* ``first``: a call with shapes never planned before (every plan cache cleared first): the
  validation and planning cost, paid once per shape.

When PyTorch is installed, rows for ``cuconv.torch`` too (op ``cuconv.torch.*``): the same
layers as CPU tensors through the ``torch.ops.cuconv`` operators (on the record backend, as
cuconv's own rows), forward without grad and forward + backward (``torch.autograd.grad``, which
accumulates nothing): the dispatcher, the autograd kernel, the tensor conversions and cuconv's op.
Their ``launches`` count the forward's and the backward's kernels. The first operator call of a
process also imports ``torch._dynamo`` (about a second, once); the rows are measured after it.

Beside them, PyTorch's eager ``torch.nn.functional.conv2d`` on a 1x1x1x1 CPU tensor, measured
in the same run (when torch is importable): the class of per-call overhead users expect.
A benchmark, not a test: nothing here asserts a time.
"""
from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass

import numpy as np

from .. import grad as grad_ops
from ..backend import backend
from ..ops.conv2d import algorithms, conv2d
from ..ops.depthwise import depthwise_conv2d
from ..ops.gemm import gemm
from ..ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d
from ..plan import clear_plan_caches
from ..problem import Conv2dProblem

# (name, input NCHW, weight KCRS, stride, padding, groups): real layers at batch 1.
CONV_LAYERS = (
    ("ResNet-50 conv1 7x7/2", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1),
    ("ResNet-50 layer1 3x3", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    ("ResNet-50 layer1 1x1 64->256", (1, 64, 56, 56), (256, 64, 1, 1), 1, 0, 1),
    ("ResNet-50 layer2 1x1 256->128", (1, 256, 56, 56), (128, 256, 1, 1), 1, 0, 1),
    ("ResNet-50 layer2 3x3/2", (1, 128, 56, 56), (128, 128, 3, 3), 2, 1, 1),
    ("ResNet-50 layer4 3x3", (1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1),
    ("VGG-16 conv1_2 3x3", (1, 64, 224, 224), (64, 64, 3, 3), 1, 1, 1),
    ("AlexNet conv1 11x11/4", (1, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
    ("ResNeXt-50 grouped 3x3 g32", (1, 128, 56, 56), (128, 4, 3, 3), 1, 1, 32),
    ("MobileNetV2 depthwise 3x3", (1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 144),
    ("MobileNetV2 1x1 144->24", (1, 144, 56, 56), (24, 144, 1, 1), 1, 0, 1),
    ("EfficientNet-B0 depthwise 5x5/2", (1, 144, 56, 56), (144, 1, 5, 5), 2, 2, 144),
)


@dataclass
class HostTiming:
    op: str
    case: str
    algo: str
    launches: int
    cached_us: float
    cached_p20_us: float
    cached_p80_us: float
    first_us: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _time(fn, repeats: int, calls: int) -> tuple[float, float, float]:
    """Median, p20 and p80 microseconds per call over ``repeats`` batches of ``calls`` calls."""
    per_call = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t) / calls * 1e6)
    per_call.sort()
    q = statistics.quantiles(per_call, n=5) if len(per_call) >= 2 else per_call * 4
    return statistics.median(per_call), q[0], q[3]


def _measure(be, op: str, case: str, algo: str, call, repeats: int, calls: int) -> HostTiming:
    clear_plan_caches()
    be.clear()
    t = time.perf_counter()
    call()
    first = (time.perf_counter() - t) * 1e6
    launches = len(be.launches)

    def cached():
        call()
        be.launches.clear()
    cached()
    med, p20, p80 = _time(cached, repeats, calls)
    return HostTiming(op, case, algo, launches, med, p20, p80, first)


def torch_eager_us(repeats: int, calls: int) -> float | None:
    """PyTorch's eager F.conv2d on a 1x1x1x1 CPU tensor (median microseconds per call), or None
    without torch."""
    try:
        import torch  # noqa: PLC0415  (optional third-party package)
    except ImportError:
        return None
    x = torch.ones(1, 1, 1, 1)
    w = torch.ones(1, 1, 1, 1)
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        for _ in range(100):
            conv(x, w)
        return _time(lambda: conv(x, w), repeats, calls)[0]


def torch_rows(be, repeats: int, calls: int) -> list[HostTiming]:
    """The cuconv.torch rows (empty without PyTorch): CPU tensors through torch.ops.cuconv."""
    try:
        import torch  # noqa: PLC0415  (optional third-party package)
    except ImportError:
        return []
    # cuconv.torch imported here, on use, as cli.py imports its commands: every `cuconv bench`
    # command imports this module, and importing PyTorch costs seconds.
    ct = importlib.import_module("cuconv.torch")
    gen = torch.Generator().manual_seed(0)

    def tensor(*shape, grad=False, memory_format=torch.contiguous_format):
        t = torch.rand(shape, generator=gen).contiguous(memory_format=memory_format)
        return t.requires_grad_(grad)

    def backward(fn, *inputs):
        """forward + backward: the gradients of every input, nothing accumulated."""
        y = fn(*inputs)
        dy = torch.ones_like(y)
        return lambda: torch.autograd.grad(fn(*inputs), inputs, dy)

    # Paid once per process, not per shape: the first operator call imports torch._dynamo (the
    # kernels run behind torch._disable_dynamo), about a second. A small layer first, forward and
    # backward, so that each row's ``first`` is its validation and planning alone.
    backward(lambda *a: ct.conv2d(*a), tensor(1, 1, 4, 4, grad=True), tensor(1, 1, 1, 1, grad=True))()
    rows = []
    layer = "ResNet-50 layer1 3x3"
    for fmt, case in ((torch.contiguous_format, layer), (torch.channels_last, layer + " channels_last")):
        x, w, b = tensor(1, 64, 56, 56, memory_format=fmt), tensor(64, 64, 3, 3, memory_format=fmt), tensor(64)
        rows.append(_measure(be, "cuconv.torch.conv2d", case, "auto", lambda: ct.conv2d(x, w, b, 1, 1),
                             repeats, calls))
    x, w, b = tensor(1, 64, 56, 56, grad=True), tensor(64, 64, 3, 3, grad=True), tensor(64, grad=True)
    rows.append(_measure(be, "cuconv.torch.conv2d", layer, "forward+backward",
                         backward(lambda *a: ct.conv2d(*a, 1, 1), x, w, b), repeats, calls))
    x, w = tensor(1, 64, 28, 28), tensor(64, 32, 4, 4)
    rows.append(_measure(be, "cuconv.torch.conv_transpose2d", "decoder 4x4/2 64->32", "auto",
                         lambda: ct.conv_transpose2d(x, w, None, 2, 1), repeats, calls))
    x = tensor(1, 64, 112, 112)
    pool = "ResNet-50 maxpool 3x3/2"
    rows.append(_measure(be, "cuconv.torch.max_pool2d", pool, "pool", lambda: ct.max_pool2d(x, 3, 2, 1),
                         repeats, calls))
    rows.append(_measure(be, "cuconv.torch.max_pool2d", pool, "forward+backward",
                         backward(lambda a: ct.max_pool2d(a, 3, 2, 1), tensor(1, 64, 112, 112, grad=True)),
                         repeats, calls))
    rows.append(_measure(be, "cuconv.torch.avg_pool2d", "avg_pool2d 3x3/2 p1 (Inception)", "pool",
                         lambda: ct.avg_pool2d(x, 3, 2, 1), repeats, calls))
    y = tensor(1, 2048, 7, 7)
    rows.append(_measure(be, "cuconv.torch.adaptive_avg_pool2d", "ResNet-50 global pool", "pool",
                         lambda: ct.adaptive_avg_pool2d(y, 1), repeats, calls))
    return rows


def run(repeats: int = 15, calls: int = 200, all_algorithms: bool = True) -> dict:
    """Every layer of CONV_LAYERS through conv2d (auto, and each algorithm that can run it when
    ``all_algorithms``), depthwise_conv2d, the pools and gemm; returns the rows and torch's figure."""
    rows: list[HostTiming] = []
    rng = np.random.default_rng(0)
    with backend("record") as be:
        be.keep_args = False
        for name, xs, ws, stride, padding, groups in CONV_LAYERS:
            x = rng.random(xs, dtype=np.float32)
            w = rng.random(ws, dtype=np.float32)
            b = rng.random(ws[0], dtype=np.float32)
            p = Conv2dProblem.from_shapes(xs, ws, stride, padding, 1, groups)
            algos = ["auto"] + ([i.name for i in algorithms(p) if i.ok] if all_algorithms else [])
            for algo in algos:
                rows.append(_measure(be, "conv2d", name, algo, lambda: conv2d(
                    x, w, b, stride, padding, 1, groups, algo=algo, activation="relu"), repeats, calls))
            if groups == xs[1]:
                rows.append(_measure(be, "depthwise_conv2d", name, "depthwise", lambda: depthwise_conv2d(
                    x, w, b, stride, padding, activation="relu"), repeats, calls))
            if xs[1] > 3:     # the backward of each layer but the stems (which need no dx)
                dy = rng.random(p.output_shape, dtype=np.float32)
                rows.append(_measure(be, "grad.conv2d_backward", name, "auto", lambda: grad_ops.conv2d_backward(
                    x, w, dy, stride, padding, 1, groups), repeats, calls))
        x = rng.random((1, 64, 112, 112), dtype=np.float32)
        y, idx = max_pool2d(x, 3, 2, 1, return_indices=True)
        rows.append(_measure(be, "grad.max_pool2d", "ResNet-50 maxpool 3x3/2", "backward",
                             lambda: grad_ops.max_pool2d(y, idx, x.shape, 3, 2, 1), repeats, calls))
        rows.append(_measure(be, "max_pool2d", "ResNet-50 maxpool 3x3/2", "pool",
                             lambda: max_pool2d(x, 3, 2, 1), repeats, calls))
        rows.append(_measure(be, "avg_pool2d", "avg_pool2d 3x3/2 p1 (Inception)", "pool",
                             lambda: avg_pool2d(x, 3, 2, 1), repeats, calls))
        y = rng.random((1, 2048, 7, 7), dtype=np.float32)
        rows.append(_measure(be, "global_avg_pool2d", "ResNet-50 global pool", "pool",
                             lambda: global_avg_pool2d(y), repeats, calls))
        for m, n, k in ((64, 3136, 576), (1000, 1, 2048), (1024, 1024, 1024)):
            a = rng.random((m, k), dtype=np.float32)
            bb = rng.random((k, n), dtype=np.float32)
            rows.append(_measure(be, "gemm", f"{m}x{n}x{k}", "gemm", lambda: gemm(a, bb), repeats, calls))
        rows += torch_rows(be, repeats, calls)
    torch_us = torch_eager_us(repeats, calls)
    return dict(rows=[r.as_dict() for r in rows], torch_eager_conv2d_us=torch_us, repeats=repeats, calls=calls)


def markdown(result: dict) -> str:
    """The table ``cuconv bench host`` prints."""
    rows = result["rows"]
    torch_us = result["torch_eager_conv2d_us"]
    lines = ["| op | case | algo | launches | cached µs (p20–p80) | first call µs |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['case']} | {r['algo']} | {r['launches']} | {r['cached_us']:.1f} "
                     f"({r['cached_p20_us']:.1f}–{r['cached_p80_us']:.1f}) | {r['first_us']:.0f} |")
    conv = [r["cached_us"] for r in rows if r["op"] == "conv2d"]
    auto = [r["cached_us"] for r in rows if r["op"] == "conv2d" and r["algo"] == "auto"]
    first = [r["first_us"] for r in rows if r["op"] == "conv2d" and r["algo"] == "auto"]
    lines.append("")
    lines.append(f"conv2d cached, median over every row: {statistics.median(conv):.1f} µs; algo=auto: "
                 f"{statistics.median(auto):.1f} µs (max {max(auto):.1f}); first call (auto), median "
                 f"{statistics.median(first):.0f} µs (max {max(first):.0f})")
    torch_conv = [r for r in rows if r["op"] == "cuconv.torch.conv2d" and r["algo"] == "auto"]
    if torch_conv:
        raw = {r["case"]: r["cached_us"] for r in rows if r["op"] == "conv2d" and r["algo"] == "auto"}
        r = torch_conv[0]
        lines.append(f"cuconv.torch.conv2d cached ({r['case']}, CPU tensors, no grad): {r['cached_us']:.1f} µs; "
                     f"cuconv.conv2d on NumPy arrays, same layer (relu fused): {raw.get(r['case'], float('nan')):.1f} µs")
    if torch_us is None:
        lines.append("PyTorch is not installed: no eager F.conv2d figure in this run")
    else:
        lines.append(f"PyTorch eager F.conv2d on a 1x1x1x1 CPU tensor, same run: {torch_us:.1f} µs "
                     f"(conv2d auto median / torch = {statistics.median(auto) / torch_us:.2f})")
    return "\n".join(lines)
