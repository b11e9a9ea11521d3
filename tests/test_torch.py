"""``cuconv.torch`` (PyTorch autograd on cuconv's kernels), on CPU tensors through the emulator:
each layer's forward and gradients against PyTorch's own layers on awkward shapes,
``torch.autograd.gradcheck`` in float64 of every ``torch.ops.cuconv`` operator, a chained model
against the same model in plain PyTorch, the nn.Module drop-ins and ``convert``, that backward
computes only what ``needs_input_grad`` asks for and the forward saves only what it needs
(record backend), zero-copy bridging, the errors, the LeNet-5 training example, and that
``import cuconv`` never imports torch. Two tests run CUDA tensors (skipped with a reason
without a device). The operators' own checks (opcheck, channels_last, autocast) are in
tests/test_torch_ops.py, torch.compile and DDP in tests/test_torch_training.py.

float64 runs where cuconv's forward takes it for the case (probed on the record backend);
elsewhere float32 with a float32 tolerance. gradcheck needs a float64 forward: where cuconv's
lacks it, ``test_gradcheck_backward_float64`` pairs the operator's autograd formula, unchanged,
with PyTorch's float64 forward (``_backward_only``), and ``test_gradcheck_float64`` is skipped
with that reason."""
from __future__ import annotations

import copy
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="cuconv.torch needs PyTorch (pip install 'cuconv[torch]')")

import torch.nn.functional as TF  # noqa: E402
from torch import nn  # noqa: E402

import cuconv  # noqa: E402
import cuconv.torch as ct  # noqa: E402
from cuconv import grad as G  # noqa: E402
from torch_helpers import assert_close, gen, randn  # noqa: E402, F401

ROOT = pathlib.Path(__file__).resolve().parent.parent


def forward_dtype(call) -> torch.dtype:
    """float64 when cuconv's forward takes it for ``call(dtype)`` (tried on the record backend:
    the host path, nothing computed), else float32."""
    with cuconv.backend("record"):
        try:
            call(torch.float64)
        except (TypeError, ValueError):
            return torch.float32
    return torch.float64


def grads(y, inputs, dy):
    inputs = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(y, inputs, dy)


# =========================================================================== conv2d
# (x shape, w shape, stride, padding, dilation, groups, bias)
CONV_CASES = {
    "stride2_C3": ((2, 3, 9, 7), (10, 3, 3, 3), 2, 1, 1, 1, True),
    "stride3": ((1, 5, 11, 10), (7, 5, 3, 3), 3, 1, 1, 1, True),
    "dilation2_groups2": ((2, 6, 9, 9), (6, 3, 3, 3), 1, 2, 2, 2, True),
    "depthwise_M2_stride2": ((2, 6, 9, 7), (12, 1, 3, 3), 2, 1, 1, 6, True),
    "depthwise_5x5": ((1, 4, 11, 9), (4, 1, 5, 5), 1, 2, 1, 4, False),
    "1x1_C20": ((2, 20, 7, 6), (9, 20, 1, 1), 1, 0, 1, 1, True),
    "stem_7x7_stride2": ((1, 3, 13, 11), (8, 3, 7, 7), 2, 3, 1, 1, True),
    "padding_larger_than_half_kernel": ((1, 4, 7, 7), (5, 4, 3, 3), 1, 3, 1, 1, True),
    "same_even_kernel": ((1, 4, 8, 9), (6, 4, 4, 2), 1, "same", 1, 1, True),
    "valid_C1": ((2, 1, 9, 8), (4, 1, 5, 3), 1, "valid", 1, 1, False),
    "C16_implicit_gemm": ((2, 16, 9, 8), (24, 16, 3, 3), 1, 1, 1, 1, True),
    "pairs": ((1, 3, 10, 9), (5, 3, 3, 2), (2, 1), (1, 0), (1, 2), 1, True),
    "unbatched": ((3, 9, 7), (4, 3, 3, 3), 2, 1, 1, 1, True),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, about its own copy
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_forward_and_gradients_match_torch(gen, case):
    xs, ws, stride, padding, dilation, groups, has_bias = case
    args = (stride, padding, dilation, groups)

    def call(dt):
        return ct.conv2d(torch.zeros(xs, dtype=dt), torch.zeros(ws, dtype=dt),
                         torch.zeros(ws[0], dtype=dt) if has_bias else None, *args)
    dt = forward_dtype(call)
    x, w = randn(gen, xs, dt, True), randn(gen, ws, dt, True)
    b = randn(gen, (ws[0],), dt, True) if has_bias else None
    y, ref = ct.conv2d(x, w, b, *args), TF.conv2d(x, w, b, *args)
    assert_close(y, ref, dt, "forward")
    dy = randn(gen, ref.shape, dt)
    for got, want, what in zip(grads(y, (x, w, b), dy), grads(ref, (x, w, b), dy), ("dx", "dw", "db")):
        assert_close(got, want, dt, what)


# =========================================================================== conv_transpose2d
# (x shape, w shape, stride, padding, output_padding, groups, dilation)
CONVT_CASES = {
    "stride2_output_padding1": ((2, 4, 5, 6), (4, 3, 3, 3), 2, 1, 1, 1, 1),
    "groups2": ((1, 6, 4, 5), (6, 2, 3, 3), 2, 0, 0, 2, 1),
    "dilation2": ((1, 3, 5, 4), (3, 5, 3, 2), 1, 1, 0, 1, 2),
    "stride3_4x4": ((2, 2, 4, 3), (2, 3, 4, 4), 3, 2, 2, 1, 1),
    "pairs": ((1, 3, 4, 5), (3, 2, 3, 5), (2, 1), (1, 2), (1, 0), 1, (1, 1)),
}


@pytest.mark.parametrize("case", CONVT_CASES.values(), ids=CONVT_CASES.keys())
def test_conv_transpose2d_forward_and_gradients_match_torch(gen, case):
    xs, ws, stride, padding, output_padding, groups, dilation = case
    args = (stride, padding, output_padding, groups, dilation)
    cout = ws[1] * groups

    def call(dt):
        return ct.conv_transpose2d(torch.zeros(xs, dtype=dt), torch.zeros(ws, dtype=dt), torch.zeros(cout, dtype=dt),
                                   *args)
    dt = forward_dtype(call)
    x, w, b = randn(gen, xs, dt, True), randn(gen, ws, dt, True), randn(gen, (cout,), dt, True)
    y, ref = ct.conv_transpose2d(x, w, b, *args), TF.conv_transpose2d(x, w, b, *args)
    assert_close(y, ref, dt, "forward")
    dy = randn(gen, ref.shape, dt)
    for got, want, what in zip(grads(y, (x, w, b), dy), grads(ref, (x, w, b), dy), ("dx", "dw", "db")):
        assert_close(got, want, dt, what)


# =========================================================================== pooling
# (x shape, kernel_size, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "3x3_stride2_overlapping": ((2, 3, 9, 7), 3, 2, 1, 1, False),
    "2x2_ceil": ((1, 4, 10, 9), 2, 2, 0, 1, True),
    "dilation2_ceil": ((1, 2, 11, 11), 3, 2, 1, 2, True),
    "pairs": ((2, 3, 8, 8), (3, 2), (2, 1), (1, 0), 1, False),
    "stride_none_ceil": ((1, 2, 7, 9), 3, None, 1, 1, True),
    "unbatched": ((3, 9, 7), 2, 2, 1, 1, False),
}


@pytest.mark.parametrize("case", MAX_CASES.values(), ids=MAX_CASES.keys())
def test_max_pool2d_forward_indices_and_gradient_match_torch(gen, case):
    xs, k, s, p, d, ceil = case
    dt = forward_dtype(lambda dt: ct.max_pool2d(torch.zeros(xs, dtype=dt), k, s, p, d, ceil))
    x = randn(gen, xs, dt, True)
    y, idx = ct.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert_close(y, ref, dt, "forward")
    assert idx.dtype == torch.int64 and torch.equal(idx, ref_idx)
    dy = randn(gen, ref.shape, dt)
    want = grads(ref, (x,), dy)[0]
    assert_close(grads(y, (x,), dy)[0], want, dt, "dx")
    # without return_indices: y alone, the same gradient
    y2 = ct.max_pool2d(x, k, s, p, d, ceil)
    assert torch.equal(y2, y)
    assert_close(grads(y2, (x,), dy)[0], want, dt, "dx")


# (x shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "3x3_stride2_pad1": ((2, 3, 9, 7), 3, 2, 1, False, True, None),
    "ceil_exclude_pad": ((1, 4, 10, 9), 3, 2, 1, True, False, None),
    "2x2_ceil": ((1, 2, 7, 8), 2, 2, 0, True, True, None),
    "divisor_override": ((2, 3, 8, 8), (3, 2), (2, 1), (1, 1), False, True, 5),
    "ceil_include_pad_clipped_window": ((1, 2, 9, 9), 3, 3, 1, True, True, None),
    "unbatched": ((3, 8, 7), 2, None, 0, False, True, None),
}


@pytest.mark.parametrize("case", AVG_CASES.values(), ids=AVG_CASES.keys())
def test_avg_pool2d_forward_and_gradient_match_torch(gen, case):
    xs, *args = case
    dt = forward_dtype(lambda dt: ct.avg_pool2d(torch.zeros(xs, dtype=dt), *args))
    x = randn(gen, xs, dt, True)
    y, ref = ct.avg_pool2d(x, *args), TF.avg_pool2d(x, *args)
    assert_close(y, ref, dt, "forward")
    dy = randn(gen, ref.shape, dt)
    assert_close(grads(y, (x,), dy)[0], grads(ref, (x,), dy)[0], dt, "dx")


@pytest.mark.parametrize("xs, output_size", [((2, 3, 7, 9), 1), ((1, 5, 1, 1), (1, 1)), ((4, 6, 5), 1),
                                              ((2, 3, 1, 6), (None, 1))])
def test_adaptive_avg_pool2d_output_size_1_matches_torch(gen, xs, output_size):
    dt = forward_dtype(lambda dt: ct.adaptive_avg_pool2d(torch.zeros(xs, dtype=dt), output_size))
    x = randn(gen, xs, dt, True)
    y, ref = ct.adaptive_avg_pool2d(x, output_size), TF.adaptive_avg_pool2d(x, output_size)
    assert_close(y, ref, dt, "forward")
    dy = randn(gen, ref.shape, dt)
    assert_close(grads(y, (x,), dy)[0], grads(ref, (x,), dy)[0], dt, "dx")


# =========================================================================== gradcheck
OPS = torch.ops.cuconv


def _conv_inputs(gen, dt, activation=None):
    x, w, b = randn(gen, (1, 2, 6, 5), dt, True), randn(gen, (3, 2, 3, 3), dt, True), randn(gen, (3,), dt, True)
    return (x, w, b, [2, 2], [1, 1], [1, 1], 1, False, activation, "auto")


def _convt_inputs(gen, dt):
    x, w, b = randn(gen, (1, 2, 3, 4), dt, True), randn(gen, (2, 3, 3, 3), dt, True), randn(gen, (3,), dt, True)
    return (x, w, b, [2, 2], [1, 1], [1, 1], 1, [1, 1])


def _torch_conv2d(x, w, b, stride, padding, dilation, groups, same, activation, algo):
    y = TF.conv2d(x, w, b, stride, "same" if same else padding, dilation, groups)
    return {None: y, "relu": TF.relu(y), "relu6": TF.relu6(y), "silu": TF.silu(y)}[activation]


# name -> (operator, torch's forward with the operator's arguments, inputs(gen, dtype))
GRADCHECK = {
    "conv2d": ("conv2d", _torch_conv2d, _conv_inputs),
    "conv2d_relu": ("conv2d", _torch_conv2d, lambda g, dt: _conv_inputs(g, dt, "relu")),
    "conv2d_silu": ("conv2d", _torch_conv2d, lambda g, dt: _conv_inputs(g, dt, "silu")),
    "conv2d_relu6_same": ("conv2d", _torch_conv2d,
                          lambda g, dt: (randn(g, (1, 2, 5, 6), dt, True), 3 * randn(g, (3, 2, 2, 3), dt, True), None,
                                         [1, 1], [0, 0], [1, 1], 1, True, "relu6", "auto")),
    "conv2d_depthwise": ("conv2d", _torch_conv2d,
                         lambda g, dt: (randn(g, (1, 3, 6, 5), dt, True), randn(g, (3, 1, 3, 3), dt, True), None,
                                        [1, 1], [1, 1], [2, 2], 3, False, None, "auto")),
    "conv_transpose2d": ("conv_transpose2d", lambda x, w, b, *a: TF.conv_transpose2d(x, w, b, *a), _convt_inputs),
    # dw and db alone: conv_transpose2d_weight is a wgrad (float64), dx a forward conv2d
    "conv_transpose2d_weight": ("conv_transpose2d", lambda x, w, b, *a: TF.conv_transpose2d(x, w, b, *a),
                                lambda g, dt: (_convt_inputs(g, dt)[0].requires_grad_(False),
                                               *_convt_inputs(g, dt)[1:])),
    "max_pool2d": ("max_pool2d_with_indices", lambda x, *a: TF.max_pool2d(x, *a, return_indices=True),
                   lambda g, dt: (randn(g, (1, 2, 7, 6), dt, True), [3, 3], [2, 2], [1, 1], [1, 1], True)),
    "max_pool2d_without_indices": ("max_pool2d", lambda x, *a: TF.max_pool2d(x, *a),
                                   lambda g, dt: (randn(g, (1, 2, 7, 6), dt, True), [3, 2], [2, 1], [1, 0], [1, 1],
                                                  False)),
    "avg_pool2d": ("avg_pool2d", lambda x, *a: TF.avg_pool2d(x, *a),
                   lambda g, dt: (randn(g, (1, 2, 7, 6), dt, True), [3, 3], [2, 2], [1, 1], True, False, None)),
    "global_avg_pool2d": ("adaptive_avg_pool2d", lambda x, size: TF.adaptive_avg_pool2d(x, size),
                          lambda g, dt: (randn(g, (2, 3, 4, 5), dt, True), [1, 1])),
}


def _first(op):
    """The operator's differentiable output (max pooling's indices are an integer output)."""
    def run(*args):
        out = op(*args)
        return out[0] if isinstance(out, tuple) else out
    return run


def _backward_only(name, torch_forward):
    """The operator's autograd formula (ops.FORMULAS: its setup_context and backward,
    unchanged) behind PyTorch's float64 forward, so gradcheck's finite differences (of torch's
    forward) check cuconv's float64 backward kernels."""
    setup, backward = ct.ops.FORMULAS[name]

    class BackwardOnly(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            out = torch_forward(*args)
            setup(ctx, args, out)
            if isinstance(out, tuple):
                ctx.mark_non_differentiable(out[1])
            return out

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)
    return BackwardOnly


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, about its own copy
@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_float64(gen, name):
    op_name, _, inputs = GRADCHECK[name]
    op = _first(getattr(OPS, op_name).default)
    with cuconv.backend("record"):
        try:
            op(*inputs(gen, torch.float64))
        except (TypeError, ValueError) as exc:
            pytest.skip(f"cuconv's {name} forward takes no float64 on this build ({str(exc)[:80]}...); "
                        "test_gradcheck_backward_float64 checks its backward")
    assert torch.autograd.gradcheck(op, inputs(gen, torch.float64), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, about its own copy
@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_backward_float64(gen, name):
    op_name, torch_forward, inputs = GRADCHECK[name]
    shim = _first(_backward_only(op_name, torch_forward).apply)
    args = inputs(gen, torch.float64)
    with cuconv.backend("record") as rec:       # the backward does launch cuconv's kernels
        y = shim(*args)
        try:
            y.backward(torch.ones_like(y))
        except (TypeError, ValueError) as exc:
            pytest.skip(f"cuconv's {name} backward takes no float64 on this build: {str(exc)[:160]}...")
    assert rec.launches
    assert torch.autograd.gradcheck(shim, inputs(gen, torch.float64), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_the_backward_only_shim_catches_a_wrong_backward(gen, monkeypatch):
    """Positive control: gradcheck through the shim fails when the backward is wrong."""
    setup, backward = ct.ops.FORMULAS["avg_pool2d"]

    def wrong(ctx, dy):
        dx, *rest = backward(ctx, dy)
        return (dx * 1.001, *rest)
    monkeypatch.setitem(ct.ops.FORMULAS, "avg_pool2d", (setup, wrong))
    shim = _backward_only("avg_pool2d", lambda x, *a: TF.avg_pool2d(x, *a)).apply
    args = GRADCHECK["avg_pool2d"][2](gen, torch.float64)
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        torch.autograd.gradcheck(shim, args, eps=1e-6, atol=1e-8, rtol=1e-6)


# =========================================================================== a chained model
def _chain(layers, dtype):
    return nn.Sequential(
        layers.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), layers.MaxPool2d(3, 2, 1, ceil_mode=True),
        layers.Conv2d(8, 12, 3, padding=2, dilation=2, groups=2), nn.Tanh(), layers.AvgPool2d(2, 1),
        layers.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), layers.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(12, 5)).to(dtype)


def test_chained_model_gradients_equal_plain_pytorch(gen):
    def call(dt):
        _chain(ct, dt)(torch.zeros(2, 3, 19, 17, dtype=dt))
    dt = forward_dtype(call)
    torch.manual_seed(7)
    reference = _chain(nn, dt)
    model = _chain(ct, dt)
    model.load_state_dict(reference.state_dict())
    x = randn(gen, (2, 3, 19, 17), dt, True)
    x_ref = x.detach().clone().requires_grad_()
    y, ref = model(x), reference(x_ref)
    assert_close(y, ref, dt, "output")
    dy = randn(gen, ref.shape, dt)
    y.backward(dy)
    ref.backward(dy)
    assert_close(x.grad, x_ref.grad, dt, "input gradient")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert_close(p.grad, q.grad, dt, name)


# =========================================================================== modules and convert
def test_drop_ins_are_torch_modules_with_the_same_parameters_and_init():
    for ours, theirs, args, kw in [(ct.Conv2d, nn.Conv2d, (3, 8, 3), dict(stride=2, padding=1, bias=True)),
                                   (ct.ConvTranspose2d, nn.ConvTranspose2d, (4, 6, 3), dict(stride=2, groups=2)),
                                   (ct.MaxPool2d, nn.MaxPool2d, (3,), dict(stride=2, ceil_mode=True)),
                                   (ct.AvgPool2d, nn.AvgPool2d, (2,), dict(count_include_pad=False)),
                                   (ct.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d, (1,), {})]:
        torch.manual_seed(3)
        a = ours(*args, **kw)
        torch.manual_seed(3)
        b = theirs(*args, **kw)
        assert isinstance(a, theirs)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)   # same init
        assert repr(a) == repr(b)


def test_conv_transpose2d_module_takes_output_size(gen):
    m = ct.ConvTranspose2d(3, 4, 3, stride=2, padding=1)
    ref = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)
    ref.load_state_dict(m.state_dict())
    x = randn(gen, (1, 3, 5, 6), torch.float32)
    y, r = m(x, output_size=(10, 12)), ref(x, output_size=(10, 12))
    assert y.shape == (1, 4, 10, 12)
    assert_close(y, r, torch.float32, "forward")


def test_max_pool2d_module_returns_indices(gen):
    x = randn(gen, (1, 2, 8, 7), torch.float32)
    y, idx = ct.MaxPool2d(3, 2, 1, return_indices=True)(x)
    r, ridx = nn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    assert torch.equal(y, r) and torch.equal(idx, ridx)


class _ConvSubclass(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def _small_model():
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"), _ConvSubclass(6, 6, 1)),
        nn.ConvTranspose2d(6, 4, 2, stride=2), nn.AvgPool2d(3, 2, 1),
        nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_convert_swaps_layers_in_place_sharing_parameters(gen):
    model = _small_model()
    reference = copy.deepcopy(model)
    params = {name: p for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)       # made before the conversion
    same, report = ct.convert(model)
    assert same is model
    kinds = [type(m) for m in model]
    assert kinds[0] is ct.Conv2d and kinds[2] is ct.MaxPool2d and kinds[4] is ct.ConvTranspose2d
    assert kinds[5] is ct.AvgPool2d and kinds[7] is ct.AdaptiveAvgPool2d
    assert type(model[3][0]) is nn.Conv2d and type(model[3][1]) is _ConvSubclass and type(model[6]) is nn.AdaptiveAvgPool2d
    assert [n for n, _ in report.converted] == ["0", "2", "4", "5", "7"]
    skipped = {n: why for n, _, why in report.skipped}
    assert set(skipped) == {"3.0", "3.1", "6"}
    assert "padding_mode" in skipped["3.0"] and "subclass" in skipped["3.1"] and "output_size" in skipped["6"]
    assert "3 skipped" in str(report)
    # the same Parameter objects, the same state_dict keys
    assert all(p is params[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    # the same function, and the optimizer made before still trains the converted layers
    x = randn(gen, (2, 3, 10, 9), torch.float32)
    y = model(x)
    assert_close(y, reference(x), torch.float32, "converted model")
    w0 = model[0].weight.detach().clone()
    y.square().sum().backward()
    opt.step()
    assert not torch.equal(model[0].weight, w0)


def test_convert_of_a_single_layer_and_of_shared_layers():
    conv = nn.Conv2d(2, 3, 3)
    new, report = ct.convert(conv)
    assert type(new) is ct.Conv2d and new.weight is conv.weight and report.converted == [("", "Conv2d")]
    shared = nn.MaxPool2d(2)
    model = nn.Sequential(shared, nn.Sequential(shared))
    ct.convert(model)
    assert type(model[0]) is ct.MaxPool2d and model[1][0] is model[0]
    _, again = ct.convert(model)               # converted layers stay
    assert again.converted == [] and again.skipped == []


def test_convert_torchvision_resnet18(gen):
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed")
    model = tv.models.resnet18(num_classes=10).eval()
    reference = copy.deepcopy(model)
    model, report = ct.convert(model)
    assert len(report.converted) == 20 + 1 + 1 and not report.skipped    # 20 convs, the stem pool, the head pool
    x = randn(gen, (1, 3, 32, 32), torch.float32)
    with torch.no_grad():
        assert_close(model(x), reference(x), torch.float32, "resnet18")


# =========================================================================== needs_input_grad
def _backward_kernels(module, x):
    with cuconv.backend("record") as rec:
        y = module(x)
        rec.clear()
        y.backward(torch.ones_like(y))
    return rec.kernels()


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, True), (False, False, True),
                                  (True, True, False)])
def test_conv_backward_launches_only_the_gradients_asked_for(monkeypatch, mask):
    calls = []
    for fn in ("conv2d_backward", "conv2d_input", "conv2d_bias"):
        real = getattr(G, fn)

        def spy(*args, _fn=fn, _real=real, **kw):
            calls.append((_fn, kw.get("output_mask")))
            return _real(*args, **kw)
        monkeypatch.setattr(ct.ops.G, fn, spy)
    conv = ct.Conv2d(16, 24, 3, padding=1, bias=True)
    x = torch.zeros(2, 16, 9, 8, requires_grad=mask[0])
    conv.weight.requires_grad_(mask[1])
    conv.bias.requires_grad_(mask[2])
    launched = _backward_kernels(conv, x)
    # one cuconv.grad.conv2d_backward call with autograd's mask when the weight needs a gradient
    # (db fused into its wgrad); otherwise the input was not saved: conv2d_input / conv2d_bias
    if mask[1]:
        assert calls == [("conv2d_backward", mask)]
    else:
        assert calls == [(fn, None) for fn, m in (("conv2d_input", mask[0]), ("conv2d_bias", mask[2])) if m]
    xn, wn, dyn = (np.zeros(s, np.float32) for s in ((2, 16, 9, 8), (24, 16, 3, 3), (2, 24, 9, 8)))
    with cuconv.backend("record"):
        want = G.plan_conv2d_backward(xn, wn, dyn, 1, 1, output_mask=mask)
    assert launched == want.kernels
    assert [o.role for o in want.outputs] == [r for r, m in zip(("dx", "dw", "db"), mask) if m]
    weight = [k for k in launched if "wgrad" in k and "bias" not in k]     # conv_wgrad.cu's bias kernel is db's
    assert ("dgrad" in " ".join(launched)) == mask[0] and bool(weight) == mask[1]


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, True), (False, False, True), (True, True, True)])
def test_conv_saves_only_what_its_backward_needs(gen, mask):
    """The input is kept for the backward only when the weight needs a gradient; the weight
    when the input or the weight does (cuconv.grad takes it with the input); nothing for db."""
    x = randn(gen, (2, 3, 7, 6), torch.float32, mask[0])
    w, b = randn(gen, (4, 3, 3, 3), torch.float32, mask[1]), randn(gen, (4,), torch.float32, mask[2])
    y = ct.conv2d(x, w, b, padding=1)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    want = ([x] if mask[1] else []) + ([w] if mask[0] or mask[1] else [])
    assert [t.data_ptr() for t in saved] == [t.data_ptr() for t in want]
    relu = ct.conv2d(x, w, b, padding=1, activation="relu")       # + the output, for relu's derivative
    assert [t.data_ptr() for t in relu.grad_fn.saved_tensors if t is not None] == \
        [t.data_ptr() for t in want] + [relu.data_ptr()]


def test_pool_forward_computes_indices_only_when_needed_and_backward_gathers():
    pool = ct.MaxPool2d(3, 2, 1)
    with cuconv.backend("record") as rec:
        pool(torch.zeros(1, 2, 9, 9))
        plain = rec.kernels()
        rec.clear()
        y = pool(torch.zeros(1, 2, 9, 9, requires_grad=True))
        with_indices = rec.kernels()
        rec.clear()
        y.backward(torch.ones_like(y))
        backward = rec.kernels()
    assert plain == ["pool_max_f32"] and with_indices == ["pool_max_indices_f32"]
    assert len(backward) == 1 and "gather" in backward[0]


def test_frozen_first_layer_launches_no_gradient_kernels_for_it(gen):
    model = nn.Sequential(ct.Conv2d(3, 4, 3), ct.Conv2d(4, 2, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    with cuconv.backend("record") as rec:
        y = model(torch.zeros(1, 3, 8, 8))
        rec.clear()
        y.backward(torch.ones_like(y))
    xn, wn, dyn = (np.zeros(s, np.float32) for s in ((1, 4, 6, 6), (2, 4, 3, 3), (1, 2, 4, 4)))
    with cuconv.backend("record"):
        want = G.plan_conv2d_backward(xn, wn, dyn, output_mask=(False, True, True)).kernels
    assert rec.kernels() == want


# =========================================================================== bridging
def test_tensors_are_bridged_without_copies(gen):
    t = randn(gen, (2, 3, 4, 5), torch.float32, True)
    a = ct.to_array(t)
    assert isinstance(a, np.ndarray) and a.ctypes.data == t.data_ptr() and a.shape == tuple(t.shape)
    back = ct.from_array(a)
    assert back.data_ptr() == t.data_ptr()
    strided = t.transpose(2, 3)
    assert ct.to_array(strided).ctypes.data == t.data_ptr()
    if importlib.util.find_spec("ml_dtypes"):
        h = t.detach().bfloat16()
        ha = ct.to_array(h)
        assert ha.dtype.name == "bfloat16" and ha.ctypes.data == h.data_ptr()
        assert torch.equal(ct.from_array(ha), h)


def test_strided_and_expanded_tensors(gen):
    x = randn(gen, (2, 9, 7, 3), torch.float32).permute(0, 3, 1, 2).requires_grad_()   # channels-last view
    w = randn(gen, (5, 3, 3, 3), torch.float32, True)
    y, ref = ct.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1)
    assert_close(y, ref, torch.float32, "forward")
    y.sum().backward()                                # grad_output: an expanded (stride 0) tensor
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    ref.sum().backward()
    assert_close(gx, x.grad, torch.float32, "dx")
    assert_close(gw, w.grad, torch.float32, "dw")


def test_half_precision_on_the_emulator(gen):
    x, w = randn(gen, (1, 16, 8, 8), torch.float32), randn(gen, (16, 16, 3, 3), torch.float32)
    xh, wh = x.half().requires_grad_(), w.half().requires_grad_()
    y = ct.conv2d(xh, wh, padding=1)
    assert y.dtype == torch.float16
    x64, w64 = xh.detach().double().requires_grad_(), wh.detach().double().requires_grad_()
    ref = TF.conv2d(x64, w64, padding=1)
    err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-3
    dy = randn(gen, ref.shape, torch.float32).half()
    for got, want in zip(torch.autograd.grad(y, (xh, wh), dy), torch.autograd.grad(ref, (x64, w64), dy.double())):
        assert got.dtype == torch.float16
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 2e-3


CUDA = torch.cuda.is_available() and cuconv.gpu_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device seen by both torch and CuPy; none was found")


@pytest.mark.gpu
@requires_cuda
def test_cuda_tensors_run_on_the_gpu_on_torchs_current_stream(monkeypatch, gen):
    import cupy
    streams = []
    real = ct.ops.cuconv_conv2d

    def spy(*args, **kw):
        streams.append(cupy.cuda.get_current_stream().ptr)
        return real(*args, **kw)
    monkeypatch.setattr(ct.ops, "cuconv_conv2d", spy)
    x = randn(gen, (2, 16, 9, 8), torch.float32).cuda().requires_grad_()
    w = randn(gen, (24, 16, 3, 3), torch.float32).cuda().requires_grad_()
    b = randn(gen, (24,), torch.float32).cuda().requires_grad_()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = ct.conv2d(x, w, b, padding=1)
        ref = TF.conv2d(x, w, b, padding=1)
        dy = torch.randn_like(ref)
        got = torch.autograd.grad(y, (x, w, b), dy)
        want = torch.autograd.grad(ref, (x, w, b), dy)
    torch.cuda.current_stream().wait_stream(side)
    assert streams == [side.cuda_stream]
    assert y.device == x.device and y.data_ptr() != 0
    assert_close(y, ref, torch.float32, "forward")
    for g, r, what in zip(got, want, ("dx", "dw", "db")):
        assert_close(g, r, torch.float32, what)


@pytest.mark.gpu
@requires_cuda
def test_cuda_pools_and_half_precision(gen):
    x = randn(gen, (2, 3, 9, 7), torch.float32).cuda().requires_grad_()
    for ours, theirs in [(lambda t: ct.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1)),
                         (lambda t: ct.avg_pool2d(t, 3, 2, 1, True), lambda t: TF.avg_pool2d(t, 3, 2, 1, True)),
                         (lambda t: ct.adaptive_avg_pool2d(t, 1), lambda t: TF.adaptive_avg_pool2d(t, 1))]:
        y, ref = ours(x), theirs(x)
        assert_close(y, ref, torch.float32, "forward")
        dy = torch.randn_like(ref)
        assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(ref, x, dy)[0], torch.float32, "dx")
    xh = randn(gen, (1, 16, 8, 8), torch.float32).cuda().half().requires_grad_()
    wh = randn(gen, (16, 16, 3, 3), torch.float32).cuda().half().requires_grad_()
    y = ct.conv2d(xh, wh, padding=1)
    ref = TF.conv2d(xh.double(), wh.double(), padding=1)
    assert y.dtype == torch.float16 and ((y.double() - ref).abs().max() / ref.abs().max()).item() < 1e-3


# =========================================================================== errors
def test_mixed_dtypes_devices_and_non_tensors_fail_before_any_launch():
    x, w = torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3)
    with cuconv.backend("record") as rec:
        with pytest.raises(TypeError, match=r"conv2d: tensors of different dtypes: input float32, weight float64"):
            ct.conv2d(x, w.double())
        with pytest.raises(ValueError, match=r"different devices: input on cpu, weight on meta"):
            ct.conv2d(x, w.to("meta"))
        with pytest.raises(ValueError, match=r"runs CPU tensors .* and CUDA tensors, got a tensor on meta"):
            ct.max_pool2d(x.to("meta"), 2)
        with pytest.raises(TypeError, match=r"weight must be a torch.Tensor, got ndarray"):
            ct.conv2d(x, np.zeros((4, 3, 3, 3), np.float32))
        with pytest.raises(TypeError, match=r"different dtypes: input float32, weight float32, bias float16"):
            ct.conv_transpose2d(x, torch.zeros(3, 2, 3, 3), torch.zeros(2, dtype=torch.float16))
        with pytest.raises(ValueError, match=r"weight"):          # cuconv's own shape check
            ct.conv2d(x, torch.zeros(4, 2, 3, 3))
        with pytest.raises(TypeError, match=r"float32"):          # cuconv's own dtype check (pools)
            ct.avg_pool2d(torch.zeros(1, 2, 4, 4, dtype=torch.int32), 2)
    assert rec.launches == []


def test_unsupported_options_fail_clearly():
    with pytest.raises(ValueError, match=r"padding_mode='reflect'"):
        ct.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"output_size=2 .*output size 1"):
        ct.AdaptiveAvgPool2d(2)
    with pytest.raises(NotImplementedError, match=r"output size 1 only .*output_size=\(2, 1\) for input \(1, 2, 6, 6\)"):
        ct.adaptive_avg_pool2d(torch.zeros(1, 2, 6, 6), (2, 1))
    with pytest.raises(TypeError, match=r"must be a torch.nn.Module"):
        ct.convert(object())


def test_double_backward_is_refused(gen):
    x = randn(gen, (1, 2, 6, 6), torch.float32, True)
    w = randn(gen, (2, 2, 3, 3), torch.float32, True)
    (gx,) = torch.autograd.grad(ct.conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        gx.sum().backward()


# =========================================================================== the example, the package
def test_lenet5_training_example_matches_plain_pytorch():
    spec = importlib.util.spec_from_file_location("lenet5_train", ROOT / "examples" / "lenet5_train.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    lines = []
    losses = example.train(steps=4, batch=8, log=lines.append)
    assert len(losses) == 4 and len(lines) == 4
    assert example.check(losses) == []
    ours = [a for a, _ in losses]
    assert all(b < a for a, b in zip(ours, ours[1:]))
    assert all(abs(a - b) <= example.LOSS_RTOL * abs(b) for a, b in losses)
    # the check can fail: a flat loss and a mismatch are reported
    assert len(example.check([(2.0, 2.0), (2.0, 2.1)])) == 2


def test_importing_cuconv_does_not_import_torch_and_cuconv_torch_needs_it():
    code = textwrap.dedent("""
        import sys
        import cuconv, cuconv.grad
        assert "torch" not in sys.modules, "import cuconv imported torch"
        sys.modules["torch"] = None          # as if torch were not installed
        try:
            import cuconv.torch
        except ImportError as exc:
            assert "pip install 'cuconv[torch]'" in str(exc), exc
            print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_conv_transpose_backward_when_output_padding_spans_a_stride():
    """Issue 22's reproducer through the module: x (1, 1, 3, 3), w (1, 1, 2, 2), stride 1,
    dilation 2, output_padding 1 — the backward ran into a ValueError; now torch's gradients."""
    gen = torch.Generator().manual_seed(22)
    m = ct.ConvTranspose2d(1, 1, 2, stride=1, output_padding=1, dilation=2).double()
    ref = nn.ConvTranspose2d(1, 1, 2, stride=1, output_padding=1, dilation=2).double()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with cuconv.backend("emulator"):
        m(xa).square().sum().backward()
    ref(xb).square().sum().backward()
    for a, b in ((xa.grad, xb.grad), (m.weight.grad, ref.weight.grad), (m.bias.grad, ref.bias.grad)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-11)
