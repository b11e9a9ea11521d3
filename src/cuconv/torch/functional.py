"""torch.autograd Functions on cuconv's forward ops and ``cuconv.grad``, and the functional forms.

Each Function's forward runs one cuconv op and saves what its backward needs; its backward
computes only the gradients ``ctx.needs_input_grad`` asks for, with as few ``cuconv.grad``
calls as the API allows: one ``conv2d_backward`` for a convolution's (dx, dw, db), its
output_mask set from needs_input_grad (db fused into the wgrad kernel); one pooling
backward (max pooling with the forward's window, so the gather kernel runs, and its int64
indices). Double backward is not supported: the backward passes are ``first_order``
(torch's ``once_differentiable``, extended to the saved tensors), so differentiating a
gradient they computed raises instead of silently treating it as a constant.

Dtypes are what cuconv's kernels take (cuconv raises its own TypeError otherwise); autocast is
not handled (inside ``torch.autocast`` these functions run in the tensors' own dtype).
"""
from __future__ import annotations

import functools

import torch

from .. import grad as G
from ..ops.conv2d import conv2d as _conv2d
from ..ops.conv_transpose import conv_transpose2d as _conv_transpose2d
from ..ops.pool import avg_pool2d as _avg_pool2d
from ..ops.pool import global_avg_pool2d as _global_avg_pool2d
from ..ops.pool import max_pool2d as _max_pool2d
from ._bridge import Call


def _hashable(v):
    """Lists (torch accepts them for pairs) as tuples: cuconv memoizes plans under the arguments."""
    return tuple(v) if isinstance(v, list) else v


def _shape(t) -> tuple:
    return tuple(t.shape)


DOUBLE_BACKWARD = ("cuconv.torch: double backward (differentiating a gradient computed by cuconv's backward "
                   "pass, e.g. with create_graph=True) is not supported")


class _NoDoubleBackward(torch.autograd.Function):
    """The identity on gradients, whose own backward raises: what differentiating them meets."""

    @staticmethod
    def forward(ctx, *grads):
        return tuple(g.view_as(g) for g in grads)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(DOUBLE_BACKWARD)


def first_order(backward):
    """A Function's backward run without building a graph (like ``once_differentiable``). When
    autograd is building the gradient's graph (``create_graph=True``) and the gradient depends
    on something requiring grad — the incoming gradients or, unlike once_differentiable, the
    saved tensors (a conv's dx depends on w) — the gradients are returned behind
    ``_NoDoubleBackward``, so a double backward raises instead of returning a wrong answer."""
    @functools.wraps(backward)
    def run(ctx, *grads):
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        if not torch.is_grad_enabled():
            return outputs
        if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in (*grads, *ctx.saved_tensors)):
            return outputs
        many = isinstance(outputs, tuple)
        outputs = list(outputs) if many else [outputs]
        present = [i for i, g in enumerate(outputs) if isinstance(g, torch.Tensor)]
        guarded = _NoDoubleBackward.apply(*[outputs[i].detach().requires_grad_() for i in present])
        for i, g in zip(present, guarded):
            outputs[i] = g
        return tuple(outputs) if many else outputs[0]
    return run


# =========================================================================== convolution
class Conv2dFunction(torch.autograd.Function):
    """``y = conv2d(x, w) + b`` (cuconv.conv2d); backward: one ``cuconv.grad.conv2d_backward``."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, algo):  # noqa: A002
        with Call("conv2d", input=input, weight=weight, bias=bias) as c:
            y = c.tensor(_conv2d(c.array(input), c.array(weight), c.array(bias), stride, padding, dilation, groups,
                                 algo=algo))
        Conv2dFunction.save(ctx, input, weight, bias, stride, padding, dilation, groups)
        return y

    @staticmethod
    def save(ctx, input, weight, bias, stride, padding, dilation, groups):  # noqa: A002
        """What backward reads (shared with tests that pair this backward with another forward)."""
        ctx.save_for_backward(input, weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    @staticmethod
    @first_order
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = (bool(need[0]), bool(need[1]), bool(need[2]) and ctx.has_bias)
        dx = dw = db = None
        if any(mask):
            with Call("conv2d backward", grad_output=grad_output, input=x, weight=w) as c:
                dx, dw, db = (c.tensor(g) for g in G.conv2d_backward(
                    c.array(x), c.array(w), c.array(grad_output), *ctx.conv_args, output_mask=mask))
        return dx, dw, db, None, None, None, None, None


class ConvTranspose2dFunction(torch.autograd.Function):
    """``y = conv_transpose2d(x, w) + b`` (cuconv.conv_transpose2d); backward:
    ``conv_transpose2d_input`` / ``conv_transpose2d_weight`` / ``conv2d_bias``, each only when asked."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, output_padding, groups, dilation):  # noqa: A002
        with Call("conv_transpose2d", input=input, weight=weight, bias=bias) as c:
            y = c.tensor(_conv_transpose2d(c.array(input), c.array(weight), c.array(bias), stride, padding,
                                           output_padding, groups, dilation))
        ConvTranspose2dFunction.save(ctx, input, weight, bias, stride, padding, output_padding, groups, dilation)
        return y

    @staticmethod
    def save(ctx, input, weight, bias, stride, padding, output_padding, groups, dilation):  # noqa: A002
        ctx.save_for_backward(input, weight)
        ctx.conv_args = (stride, padding, output_padding, groups, dilation)
        ctx.has_bias = bias is not None

    @staticmethod
    @first_order
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx = dw = db = None
        with Call("conv_transpose2d backward", grad_output=grad_output, input=x, weight=w) as c:
            dy = c.array(grad_output)
            if need[0]:
                dx = c.tensor(G.conv_transpose2d_input(_shape(x), c.array(w), dy, *ctx.conv_args))
            if need[1]:
                dw = c.tensor(G.conv_transpose2d_weight(c.array(x), _shape(w), dy, *ctx.conv_args))
            if need[2] and ctx.has_bias:
                db = c.tensor(G.conv2d_bias(dy))
        return dx, dw, db, None, None, None, None, None


# =========================================================================== pooling
class MaxPool2dFunction(torch.autograd.Function):
    """Max pooling (cuconv.max_pool2d); the int64 indices are computed when the input needs a
    gradient or the caller asks for them; backward: ``cuconv.grad.max_pool2d`` with the window."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):  # noqa: A002
        want_indices = bool(return_indices) or bool(ctx.needs_input_grad[0])
        with Call("max_pool2d", input=input) as c:
            result = _max_pool2d(c.array(input), kernel_size, stride, padding, dilation, ceil_mode,
                                 return_indices=want_indices)
            y, indices = (c.tensor(r) for r in result) if want_indices else (c.tensor(result), None)
        MaxPool2dFunction.save(ctx, input, indices, kernel_size, stride, padding, dilation, ceil_mode)
        if return_indices:
            ctx.mark_non_differentiable(indices)
            return y, indices
        return y

    @staticmethod
    def save(ctx, input, indices, kernel_size, stride, padding, dilation, ceil_mode):  # noqa: A002
        if indices is not None:
            ctx.save_for_backward(indices)
        ctx.input_shape = _shape(input)
        ctx.window = (kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    @first_order
    def backward(ctx, grad_output, grad_indices=None):
        dx = None
        if ctx.needs_input_grad[0]:
            (indices,) = ctx.saved_tensors
            with Call("max_pool2d backward", grad_output=grad_output) as c:
                dx = c.tensor(G.max_pool2d(c.array(grad_output), c.array(indices), ctx.input_shape, *ctx.window))
        return dx, None, None, None, None, None, None


class AvgPool2dFunction(torch.autograd.Function):
    """Average pooling (cuconv.avg_pool2d, PyTorch's divisor rules); backward: ``cuconv.grad.avg_pool2d``."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad,  # noqa: A002
                divisor_override):
        with Call("avg_pool2d", input=input) as c:
            y = c.tensor(_avg_pool2d(c.array(input), kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override))
        AvgPool2dFunction.save(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                               divisor_override)
        return y

    @staticmethod
    def save(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):  # noqa: A002
        ctx.input_shape = _shape(input)
        ctx.window = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    @first_order
    def backward(ctx, grad_output):
        dx = None
        if ctx.needs_input_grad[0]:
            with Call("avg_pool2d backward", grad_output=grad_output) as c:
                dx = c.tensor(G.avg_pool2d(c.array(grad_output), ctx.input_shape, *ctx.window))
        return dx, None, None, None, None, None, None


class GlobalAvgPool2dFunction(torch.autograd.Function):
    """The mean over H and W (cuconv.global_avg_pool2d): adaptive_avg_pool2d with output size 1."""

    @staticmethod
    def forward(ctx, input):  # noqa: A002
        with Call("adaptive_avg_pool2d", input=input) as c:
            y = c.tensor(_global_avg_pool2d(c.array(input)))
        GlobalAvgPool2dFunction.save(ctx, input)
        return y

    @staticmethod
    def save(ctx, input):  # noqa: A002
        ctx.input_shape = _shape(input)

    @staticmethod
    @first_order
    def backward(ctx, grad_output):
        if not ctx.needs_input_grad[0]:
            return None
        with Call("adaptive_avg_pool2d backward", grad_output=grad_output) as c:
            return c.tensor(G.global_avg_pool2d(c.array(grad_output), ctx.input_shape))


# =========================================================================== functional forms
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):  # noqa: A002
    """torch.nn.functional.conv2d on cuconv (``padding`` may be "same" or "valid"); ``algo``
    picks the forward algorithm (a name from ``cuconv.algorithms``)."""
    return Conv2dFunction.apply(input, weight, bias, _hashable(stride), _hashable(padding), _hashable(dilation),
                                groups, algo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # noqa: A002
                     dilation=1):
    """torch.nn.functional.conv_transpose2d on cuconv."""
    return ConvTranspose2dFunction.apply(input, weight, bias, _hashable(stride), _hashable(padding),
                                         _hashable(output_padding), groups, _hashable(dilation))


def _stride(stride):
    # torch.nn.functional takes None or an empty list for "the kernel size"
    return None if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _hashable(stride)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,  # noqa: A002
               return_indices=False):
    """torch.nn.functional.max_pool2d on cuconv: ``y``, or ``(y, indices)`` with
    ``return_indices`` (int64, ``ih·W + iw`` within each plane, as PyTorch's)."""
    return MaxPool2dFunction.apply(input, _hashable(kernel_size), _stride(stride), _hashable(padding),
                                   _hashable(dilation), ceil_mode, return_indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,  # noqa: A002
               divisor_override=None):
    """torch.nn.functional.avg_pool2d on cuconv."""
    return AvgPool2dFunction.apply(input, _hashable(kernel_size), _stride(stride), _hashable(padding), ceil_mode,
                                   count_include_pad, divisor_override)


def global_output_size(output_size, input_shape=None) -> bool:
    """Whether adaptive_avg_pool2d's ``output_size`` is 1 × 1 (None entries keep the input's
    size; without ``input_shape`` they count as not 1)."""
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2:
        raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
    if input_shape is not None:
        sizes = tuple(input_shape[-2 + i] if s is None else s for i, s in enumerate(sizes))
    return all(s == 1 and not isinstance(s, bool) for s in sizes)


def adaptive_avg_pool2d(input, output_size):  # noqa: A002
    """torch.nn.functional.adaptive_avg_pool2d on cuconv, for ``output_size`` 1 (global average
    pooling); other output sizes raise NotImplementedError."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"adaptive_avg_pool2d: input must be a torch.Tensor, got {type(input).__name__}")
    if not global_output_size(output_size, tuple(input.shape)):
        raise NotImplementedError(
            f"cuconv.torch.adaptive_avg_pool2d runs output size 1 only (global average pooling), got "
            f"output_size={output_size!r} for input {tuple(input.shape)}; use torch.nn.functional.adaptive_avg_pool2d")
    return GlobalAvgPool2dFunction.apply(input)
