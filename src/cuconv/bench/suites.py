"""The bench suites: lists of cases built from the textbook and cuconv.models.

* ``seed``: the textbook's worked layers (§9.1's 64->128 3x3 at 56², batch 32; §9.4's
  bottleneck against the plain 3x3 it replaces; §9.5's depthwise-separable 128->128 at 56²
  against the standard conv; §8.3's im2col overhead for 3x3 vs 7x7). The default suite.
* ``resnet50``, ``vgg16``, ``mobilenet_v2`` (any name of ``cuconv.models.names()`` works):
  every distinct convolution, pooling and fully connected layer of the model, with how often
  it occurs (layers without a cuconv kernel, such as batch norm, are left out; ``cuconv bench
  model NAME`` lists every layer).
* ``gemm``: square and awkward sizes and the GEMMs inside convolutions, against cuBLAS.
* ``pools``: the distinct pooling layers of the landmark models (cuconv.models), each in NCHW and
  NHWC at the suite's dtype (``--dtype float16``: the 16-bit kernels), the NHWC rows the kernels
  that read channels_last directly; every row states its compulsory bytes per output.
* ``algos``: every registered conv2d algorithm on every seed and ResNet-50 layer it can run, and
  on §8.4's large-kernel comparison: 5x5, 7x7, 9x9, 11x11 stride-1 "same" convolutions 64->64 at
  56x56 (where the FFT algorithms compete with direct, im2col + GEMM and implicit GEMM).

``backward=True`` (``cuconv bench ... --backward``) follows each conv and pooling case with its
gradient cases (bench/grad_cases.py); ``train_cases`` is ``cuconv bench train MODEL``: a whole
training step, forward in network order then backward in reverse.
"""
from __future__ import annotations

from dataclasses import replace

from .. import models
from ..ops.conv2d import algorithms
from ..problem import Conv2dProblem
from .. import grad as _grad
from .cases import (
    Case,
    ConvCase,
    GemmCase,
    Im2colCase,
    LayerCase,
    PoolCase,
    SeparableCase,
    pool_case_from_layer,
)
from .grad_cases import BiasGradCase, DgradCase, LayerGradCase, LinearGradCase, PoolGradCase, WgradCase

SUITES = {
    "seed": "the textbook's worked layers (§8.3, §9.1, §9.4, §9.5)",
    "resnet50": "every distinct conv, pooling and FC layer of ResNet-50 (torchvision v1.5)",
    "vgg16": "every distinct conv, pooling and FC layer of VGG-16",
    "mobilenet_v2": "every distinct conv, pooling and FC layer of MobileNetV2",
    "gemm": "square, awkward and conv-shaped GEMMs against cuBLAS",
    "pools": "the distinct pooling layers of the landmark models, NCHW and NHWC (bytes per output stated)",
    "algos": "every conv2d algorithm on every seed and ResNet-50 layer it applies to, and on §8.4's "
             "5x5-11x11 stride-1 layers",
}
DEFAULT_SUITE = "seed"
DEFAULT_MODEL_BATCH = 32
LARGE_KERNELS = (5, 7, 9, 11)      # §8.4: "FFT-based ... large kernels (k >= 7)"


def _conv(n, c, h, w, k, r, s=None, stride=1, pad=0, groups=1, dtype="float32") -> Conv2dProblem:
    return Conv2dProblem(n, c, h, w, k, r, s or r, stride, stride, pad, pad, 1, 1, groups, dtype).validate()


def seed_cases(batch: int | None = None, dtype: str = "float32", algo: str = "auto") -> list[Case]:
    """The worked examples, at the textbook's batch (§9.1: 32, the others per image) unless
    ``batch`` is given."""
    def n(default):
        return batch or default

    s = "seed"
    cases: list[Case] = [
        ConvCase(s, "§9.1 conv 64->128 3x3 56x56", problem=_conv(n(32), 64, 56, 56, 128, 3, pad=1, dtype=dtype)),
        ConvCase(s, "§9.4 bottleneck 1x1 256->64", problem=_conv(n(1), 256, 56, 56, 64, 1, dtype=dtype)),
        ConvCase(s, "§9.4 bottleneck 3x3 64->64", problem=_conv(n(1), 64, 56, 56, 64, 3, pad=1, dtype=dtype)),
        ConvCase(s, "§9.4 bottleneck 1x1 64->256", problem=_conv(n(1), 64, 56, 56, 256, 1, dtype=dtype)),
        ConvCase(s, "§9.4 without bottleneck 3x3 256->256",
                 problem=_conv(n(1), 256, 56, 56, 256, 3, pad=1, dtype=dtype)),
        ConvCase(s, "§9.5 depthwise 3x3 128ch", problem=_conv(n(1), 128, 56, 56, 128, 3, pad=1, groups=128,
                                                               dtype=dtype)),
        ConvCase(s, "§9.5 pointwise 1x1 128->128", problem=_conv(n(1), 128, 56, 56, 128, 1, dtype=dtype)),
        SeparableCase(s, "§9.5 depthwise-separable 128->128 (one op)",
                      dw=_conv(n(1), 128, 56, 56, 128, 3, pad=1, groups=128, dtype=dtype), K=128),
        ConvCase(s, "§9.5 standard 3x3 128->128", problem=_conv(n(1), 128, 56, 56, 128, 3, pad=1, dtype=dtype)),
    ]
    for k, pad in ((3, 1), (7, 3)):
        p = _conv(n(1), 64, 56, 56, 64, k, pad=pad, dtype=dtype)
        cases.append(Im2colCase(s, f"§8.3 im2col {k}x{k} 64ch 56x56", problem=p))
        cases.append(ConvCase(s, f"§8.3 conv via im2col {k}x{k} 64->64", problem=p, algo="im2col_gemm"))
    if algo != "auto":
        cases = [replace(c, algo=algo) if isinstance(c, ConvCase) else c for c in cases]
    return cases


def _layer_names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} layers)" if len(names) > limit else "")


def model_layer_case(model_name: str, layer, suite: str, algo: str = "auto") -> Case:
    """The case of one model layer: conv2d, gemm for Linear, else a theory-only row."""
    kind = layer.cost.kind
    if layer.problem is not None and kind != "conv_transpose2d":
        return ConvCase(suite, layer.name, layer=layer.name, algo=algo, problem=layer.problem)
    if kind == "linear":
        (n, k), (_, m) = layer.input_shape, layer.output_shape
        return GemmCase(suite, layer.name, layer=layer.name, algo="gemm", M=n, N=m, K=k,
                        gemm_dtype=layer.cost.dtype)
    if kind in ("maxpool", "avgpool", "global_avgpool", "adaptive_avgpool"):
        case = pool_case_from_layer(suite, layer.name, layer.layer, layer.input_shape, layer.cost.dtype)
        if case is not None:
            return case
        return LayerCase(suite, layer.name, layer=layer.name, cost=layer.cost,
                         reason="not-built: cuconv has no op for adaptive average pooling to a size other than 1")
    return LayerCase(suite, layer.name, layer=layer.name, cost=layer.cost,
                     reason="no-kernel: no cuconv kernel for this layer type (at inference batch norm folds into "
                            "the convolution's weights and bias, activation and residual add fuse into "
                            "conv2d's epilogue); the convolutions are benchmarked without them")


# ----------------------------------------------------------------- backward (§9.8)
def needs_data_gradient(layer) -> bool:
    """False for a layer that reads only the network's input: nothing upstream takes its dx
    (a training step skips it; the cost model's totals count it)."""
    return tuple(layer.inputs) != ("input",)


def backward_cases(case: Case, *, bias: bool = True, data: bool = True) -> list[Case]:
    """The gradient cases of a forward conv or pooling case, named after it: dgrad (unless not
    ``data``) and wgrad with db fused when ``bias``; a pool's dx. Other cases have none here
    (a model's FC and no-kernel layers: layer_backward_cases)."""
    common = dict(suite=case.suite, layer=case.layer, count=case.count)
    if isinstance(case, ConvCase):
        out: list[Case] = []
        if data:
            out.append(DgradCase(name=f"{case.name} dgrad", problem=case.problem, **common))
        out.append(WgradCase(name=f"{case.name} wgrad", problem=case.problem, bias=bias, **common))
        return out
    if isinstance(case, PoolCase) and not isinstance(case, PoolGradCase) and data:
        fields = {f: getattr(case, f) for f in case.__dataclass_fields__}
        return [PoolGradCase(**{**fields, "name": f"{case.name} backward", "algo": "pool_grad"})]
    return []


def layer_backward_cases(layer, case: Case) -> list[Case]:
    """The gradient cases of one model layer whose forward case is ``case``: its dx unless it
    reads only the network input, and its parameter gradients (conv: wgrad with db fused when
    the layer has a bias; FC: two GEMMs and a conv2d_bias; batch norm: a theory row)."""
    data = needs_data_gradient(layer)
    bias = bool(getattr(layer.layer, "bias", False))
    common = dict(suite=case.suite, layer=case.layer, count=case.count)
    if isinstance(case, (ConvCase, PoolCase)):
        return backward_cases(case, bias=bias, data=data)
    if isinstance(case, GemmCase):           # y = x·B: M = batch, N = out, K = in
        b, n_out, n_in = case.M, case.N, case.K
        out = []
        if data:
            out.append(LinearGradCase(name=f"{case.name} dgrad", algo="gemm", M=b, N=n_in, K=n_out,
                                      gemm_dtype=case.gemm_dtype, grad="data", **common))
        out.append(LinearGradCase(name=f"{case.name} wgrad", algo="gemm", M=n_in, N=n_out, K=b,
                                  gemm_dtype=case.gemm_dtype, grad="weight", **common))
        if bias:
            out.append(BiasGradCase(name=f"{case.name} db", algo="reduce", dy_shape=(b, n_out),
                                    bias_dtype=case.gemm_dtype, **common))
        return out
    if isinstance(case, LayerCase):
        out = []
        if data:
            out.append(LayerGradCase(name=f"{case.name} backward", cost=case.cost, grad="data", **common))
        if case.cost.backward_weight_flops:
            out.append(LayerGradCase(name=f"{case.name} backward (params)", cost=case.cost, grad="weight",
                                     **common))
        return out
    return []


def with_backward(cases: list[Case]) -> list[Case]:
    """``--backward`` on a suite of problems: each conv and pooling case followed by its gradient
    cases (wgrad with db fused: the textbook's layers have biases); a problem's gradients listed
    once even when the suite runs it with several forward algorithms."""
    out, seen = [], set()
    for c in cases:
        out.append(c)
        for b in backward_cases(c):
            key = (type(b).__name__, b.args(), b.dtype)
            if key not in seen:
                seen.add(key)
                out.append(b)
    return out


def train_cases(model_name: str, batch: int = DEFAULT_MODEL_BATCH, dtype: str = "float32") -> list[Case]:
    """One training step of a model, layer by layer: every layer's forward in network order, then
    the backward pass in reverse order (each layer's dx, except where it reads only the network
    input, and its parameter gradients)."""
    model = models.get(model_name, batch=batch, dtype=dtype)
    suite = f"train:{model.name}"
    forward = [model_layer_case(model.name, lay, suite) for lay in model.layers]
    backward = []
    for lay, case in reversed(list(zip(model.layers, forward))):
        backward += layer_backward_cases(lay, case)
    return forward + backward


def model_cases(model_name: str, batch: int = DEFAULT_MODEL_BATCH, dtype: str = "float32",
                algo: str = "auto", distinct: bool = True, backward: bool = False) -> list[Case]:
    """Cases of a model: each distinct conv / FC layer once with its count (``distinct``), or
    every layer in network order (the ``model`` command); ``backward``: each followed by its
    gradient cases (layer_backward_cases)."""
    model = models.get(model_name, batch=batch, dtype=dtype)
    suite = model.name if distinct else f"model:{model.name}"
    cases = []
    for lay in model.layers:
        case = model_layer_case(model.name, lay, suite, algo)
        cases.append(case)
        if backward:
            cases += layer_backward_cases(lay, case)
    if not distinct:
        return cases
    merged: dict[object, tuple[Case, list[str]]] = {}
    for c in cases:
        if isinstance(c, LayerCase):
            continue
        key = (type(c).__name__, c.op, c.grad_pass, c.args(), c.dtype)
        if key not in merged:
            merged[key] = (c, [])
        merged[key][1].append(c.layer)
    # the first occurrence's name: the layer's (forward) or "<layer> dgrad" and the like
    return [replace(c, layer=_layer_names(names), count=len(names)) for c, names in merged.values()]


def gemm_cases(dtype: str = "float32") -> list[Case]:
    s = "gemm"
    sizes = [(n, n, n) for n in (512, 1024, 2048, 4096)] + [(1000, 1000, 1000), (4097, 4095, 1023)]
    cases: list[Case] = [GemmCase(s, f"square {m}" if m == n == k else f"awkward {m}x{n}x{k}",
                                  M=m, N=n, K=k, gemm_dtype=dtype) for m, n, k in sizes]
    # The GEMM inside a convolution (§8.3): (C_out x C_in·k²) · (C_in·k² x N·P·Q).
    for name, (m, n, k) in (("§9.1 conv as GEMM (batch 32)", (128, 32 * 56 * 56, 64 * 9)),
                            ("§9.4 bottleneck 1x1 256->64 as GEMM", (64, 56 * 56, 256)),
                            ("ResNet-50 layer4 3x3 as GEMM (batch 32)", (512, 32 * 7 * 7, 512 * 9)),
                            ("ResNet-50 fc (batch 32)", (32, 1000, 2048))):
        cases.append(GemmCase(s, name, M=m, N=n, K=k, gemm_dtype=dtype))
    return cases


def large_kernel_cases(batch: int | None = None, dtype: str = "float32") -> list[Case]:
    """§8.4's table on one layer shape: 64->64 at 56x56, stride 1, "same" padding, k = 5 ... 11
    (batch 1 unless ``batch``): direct and GEMM FLOPs grow with k², the FFT's barely."""
    return [ConvCase("algos", f"§8.4 large kernel {k}x{k} 64->64 56x56 stride 1",
                     problem=_conv(batch or 1, 64, 56, 56, 64, k, pad=k // 2, dtype=dtype)) for k in LARGE_KERNELS]


def pool_cases(batch: int | None = None, dtype: str = "float32") -> list[Case]:
    """``pools``: every distinct pooling layer of cuconv.models' landmark models, NCHW then NHWC."""
    cases, seen = [], set()
    for name in models.names():
        for c in model_cases(name, batch or DEFAULT_MODEL_BATCH, dtype):
            if isinstance(c, PoolCase) and (c.op, c.args()) not in seen:
                seen.add((c.op, c.args()))
                cases += [replace(c, suite="pools", name=f"{name} {c.name}"),
                          replace(c, suite="pools", name=f"{name} {c.name} NHWC", layout="NHWC")]
    return cases


def algos_cases(batch: int | None = None, dtype: str = "float32") -> list[Case]:
    """Every registered algorithm on every seed conv and distinct ResNet-50 conv it can run."""
    problems = [c for c in seed_cases(batch, dtype) if isinstance(c, ConvCase) and c.algo == "auto"]
    problems += [c for c in model_cases("resnet50", batch or DEFAULT_MODEL_BATCH, dtype)
                 if isinstance(c, ConvCase)]
    problems += large_kernel_cases(batch, dtype)
    cases: list[Case] = []
    for c in problems:
        names = [i.name for i in algorithms(c.problem) if i.ok]
        if not names:    # nothing registered or nothing applies: one row says why
            cases.append(replace(c, suite="algos"))
        cases.extend(replace(c, suite="algos", algo=a) for a in names)
    return cases


def _gradient_algorithms(c: Case) -> list[str]:
    which = "input" if isinstance(c, DgradCase) else "weight"
    return [i.name for i in _grad.algorithms(c.problem, which, bias=getattr(c, "bias", False)) if i.ok]


def expand_all_algorithms(cases: list[Case]) -> list[Case]:
    """``--algo all``: each conv case (forward, dgrad, wgrad) once per algorithm that can run it."""
    out: list[Case] = []
    for c in cases:
        if isinstance(c, ConvCase):
            names = [i.name for i in algorithms(c.problem) if i.ok]
        elif isinstance(c, (DgradCase, WgradCase)):
            names = _gradient_algorithms(c)
        else:
            out.append(c)
            continue
        out.extend([replace(c, algo=a) for a in names] or [c])
    return out


def build_suite(name: str, batch: int | None = None, dtype: str = "float32", algo: str = "auto",
                backward: bool = False) -> list[Case]:
    """The cases of suite ``name`` (a SUITES key or any cuconv.models name); ``backward``: each
    conv and pooling case (and a model's FC and other layers) followed by its gradient cases.
    ``algo`` is the forward convolutions' (gradients run "auto"), except "all", which expands
    every conv case, forward and backward, to each algorithm that can run it."""
    base = "auto" if algo == "all" else algo
    if name == "seed":
        cases = seed_cases(batch, dtype, base)
        cases = with_backward(cases) if backward else cases
    elif name == "gemm":
        cases = gemm_cases(dtype)          # not layers: no gradients
    elif name == "pools":
        cases = pool_cases(batch, dtype)
        cases = with_backward(cases) if backward else cases
    elif name == "algos":
        cases = algos_cases(batch, dtype)      # the forward cases are expanded already
        if backward:
            cases = [e for c in with_backward(cases)
                     for e in (expand_all_algorithms([c]) if isinstance(c, (DgradCase, WgradCase)) else [c])]
        return cases
    else:
        try:
            models.info(name)
        except ValueError:
            raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}, or a model name: "
                             f"{', '.join(models.names())}") from None
        cases = model_cases(name, batch or DEFAULT_MODEL_BATCH, dtype, base, backward=backward)
    return expand_all_algorithms(cases) if algo == "all" else cases
