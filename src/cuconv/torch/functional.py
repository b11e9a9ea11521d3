"""torch.nn.functional's signatures on ``torch.ops.cuconv`` (ops.py), and what each call runs.

The functions normalise the arguments as torch.nn.functional takes them (ints or pairs;
``padding`` "same"/"valid"; pooling ``stride`` None meaning the kernel size; unbatched 3-D
inputs) and call one operator. They are plain Python over the arguments, so ``torch.compile``
traces them without a graph break and records the operator call; cuconv's own code runs only
inside the operator. Gradients come from the operators' autograd formulas; autocast,
channels_last and the dtypes are the operators' (see ops.py and routes.py).

``plan_conv2d`` ... ``plan_adaptive_avg_pool2d`` return the cuconv ``Plan`` the same call runs,
its ``description`` extended with the route: the layout and dtype of the kernels and every
copy the operator adds around them (a channels_last tensor where cuconv has no NHWC kernel, a
float16 tensor where it has no float16 kernel).
"""
from __future__ import annotations

import numbers

import torch

from . import ops as O
from ._bridge import Call


def _tensors(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


INT64 = 2 ** 63


def _int(v, what: str) -> int:
    """An int argument as the operators' schema holds it (int64): TypeError for a non-int,
    ValueError beyond 64 bits (the dispatcher's own error would be a RuntimeError)."""
    if type(v) is not int and (not isinstance(v, numbers.Integral) or isinstance(v, bool)):
        raise TypeError(f"{what} must be an int, got {v!r}")
    if not -INT64 <= v < INT64:
        raise ValueError(f"{what} must fit in 64 bits, got {v}")
    return int(v)


def _pair(v, what: str) -> list:
    """An int or a pair of ints as the operators' int[2] (a list)."""
    if type(v) is int:
        return [_int(v, what)] * 2
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:     # a module's
        return [_int(v[0], what), _int(v[1], what)]
    if isinstance(v, (tuple, list)) and len(v) == 1:
        v = v[0]
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return [_int(v[0], what), _int(v[1], what)]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return [_int(v, what)] * 2
    raise TypeError(f"{what} must be an int or a pair of ints, got {v!r}")


def _unbatched(input, op: str) -> bool:  # noqa: A002
    if input.dim() not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W, unbatched) or 4-D (N, C, H, W), got shape "
                         f"{tuple(input.shape)}")
    return input.dim() == 3


def _conv2d_args(input, weight, bias, stride, padding, dilation, groups, activation, algo):  # noqa: A002
    _tensors("conv2d", input=input, weight=weight, bias=bias)
    same = isinstance(padding, str) and padding == "same"
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        padding = 0
    if activation not in O.ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, O.ACTIVATIONS))}, got {activation!r}")
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a str (a name from cuconv.algorithms, or 'auto'), got {algo!r}")
    return [weight, bias, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"),
            _int(groups, "groups"), same, activation, algo]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,  # noqa: A002
           algo="auto"):
    """torch.nn.functional.conv2d on cuconv (``padding`` may be "same" or "valid"): the operator
    ``torch.ops.cuconv.conv2d``. ``activation`` (None, "relu", "relu6", "silu") is fused into the
    output write; ``algo`` picks the forward algorithm (a name from ``cuconv.algorithms``)."""
    args = _conv2d_args(input, weight, bias, stride, padding, dilation, groups, activation, algo)
    if _unbatched(input, "conv2d"):
        return O.CONV2D(input.unsqueeze(0), *args).squeeze(0)
    return O.CONV2D(input, *args)


def _conv_transpose2d_args(input, weight, bias, stride, padding, output_padding, groups, dilation):  # noqa: A002
    _tensors("conv_transpose2d", input=input, weight=weight, bias=bias)
    return [weight, bias, _pair(stride, "stride"), _pair(padding, "padding"), _pair(output_padding, "output_padding"),
            _int(groups, "groups"), _pair(dilation, "dilation")]


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # noqa: A002
                     dilation=1):
    """torch.nn.functional.conv_transpose2d on cuconv: ``torch.ops.cuconv.conv_transpose2d``."""
    args = _conv_transpose2d_args(input, weight, bias, stride, padding, output_padding, groups, dilation)
    if _unbatched(input, "conv_transpose2d"):
        return O.CONV_TRANSPOSE2D(input.unsqueeze(0), *args).squeeze(0)
    return O.CONV_TRANSPOSE2D(input, *args)


def _window(kernel_size, stride, padding) -> list:
    k = _pair(kernel_size, "kernel_size")
    # torch.nn.functional takes None or an empty list for "the kernel size"
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _pair(stride, "stride")
    return [k, s, _pair(padding, "padding")]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,  # noqa: A002
               return_indices=False):
    """torch.nn.functional.max_pool2d on cuconv: ``y``, or ``(y, indices)`` with
    ``return_indices`` (int64, ``ih·W + iw`` within each plane, as PyTorch's). The indices are
    computed (``torch.ops.cuconv.max_pool2d_with_indices``) only when asked for or when the
    input needs a gradient; otherwise ``torch.ops.cuconv.max_pool2d`` runs."""
    _tensors("max_pool2d", input=input)
    args = [*_window(kernel_size, stride, padding), _pair(dilation, "dilation"), ceil_mode]
    unbatched = _unbatched(input, "max_pool2d")
    x = input.unsqueeze(0) if unbatched else input
    if return_indices or (input.requires_grad and torch.is_grad_enabled()):
        y, indices = O.MAX_POOL2D_WITH_INDICES(x, *args)
        if unbatched:
            y, indices = y.squeeze(0), indices.squeeze(0)
        return (y, indices) if return_indices else y
    y = O.MAX_POOL2D(x, *args)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,  # noqa: A002
               divisor_override=None):
    """torch.nn.functional.avg_pool2d on cuconv: ``torch.ops.cuconv.avg_pool2d``."""
    _tensors("avg_pool2d", input=input)
    args = [*_window(kernel_size, stride, padding), ceil_mode, count_include_pad,
            None if divisor_override is None else _int(divisor_override, "divisor_override")]
    if _unbatched(input, "avg_pool2d"):
        return O.AVG_POOL2D(input.unsqueeze(0), *args).squeeze(0)
    return O.AVG_POOL2D(input, *args)


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
    pooling: ``torch.ops.cuconv.adaptive_avg_pool2d``); other output sizes raise
    NotImplementedError."""
    _tensors("adaptive_avg_pool2d", input=input)
    if not global_output_size(output_size, tuple(input.shape)):
        raise NotImplementedError(
            f"cuconv.torch.adaptive_avg_pool2d runs output size 1 only (global average pooling), got "
            f"output_size={output_size!r} for input {tuple(input.shape)}; use torch.nn.functional.adaptive_avg_pool2d")
    if _unbatched(input, "adaptive_avg_pool2d"):
        return O.ADAPTIVE_AVG_POOL2D(input.unsqueeze(0), [1, 1]).squeeze(0)
    return O.ADAPTIVE_AVG_POOL2D(input, [1, 1])


# =========================================================================== plans
def _batched(t):
    return t.unsqueeze(0) if isinstance(t, torch.Tensor) and t.dim() == 3 else t


def plan_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,  # noqa: A002
                algo="auto"):
    """The cuconv ``Plan`` that ``conv2d`` with these arguments runs (on these tensors' device
    and memory format), its description naming the layout, the dtype and the copies of its route."""
    weight, bias, *args = _conv2d_args(input, weight, bias, stride, padding, dilation, groups, activation, algo)
    x = _batched(input)
    with Call("conv2d", input=x, weight=weight, bias=bias):
        return O.conv2d_route(x, weight, bias, *args).annotated_plan()


def plan_conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # noqa: A002
                          dilation=1):
    """The cuconv ``Plan`` that ``conv_transpose2d`` runs, with its route in the description."""
    weight, bias, *args = _conv_transpose2d_args(input, weight, bias, stride, padding, output_padding, groups,
                                                 dilation)
    x = _batched(input)
    with Call("conv_transpose2d", input=x, weight=weight, bias=bias):
        return O.conv_transpose2d_route(x, weight, bias, *args).annotated_plan()


def plan_max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):  # noqa: A002
    """The cuconv ``Plan`` that ``max_pool2d`` runs (planned without indices), with its route."""
    x = _batched(input)
    with Call("max_pool2d", input=x):
        window = (*_window(kernel_size, stride, padding), _pair(dilation, "dilation"), ceil_mode)
        return O.max_pool2d_route(x, O.max_window(*window)).annotated_plan()


def plan_avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,  # noqa: A002
                    divisor_override=None):
    """The cuconv ``Plan`` that ``avg_pool2d`` runs, with its route."""
    x = _batched(input)
    with Call("avg_pool2d", input=x):
        window = (*_window(kernel_size, stride, padding), ceil_mode, count_include_pad, divisor_override)
        return O.avg_pool2d_route(x, O.avg_window(*window)).annotated_plan()


def plan_adaptive_avg_pool2d(input, output_size=1):  # noqa: A002
    """The cuconv ``Plan`` that ``adaptive_avg_pool2d`` (output size 1) runs, with its route."""
    x = _batched(input)
    if not global_output_size(output_size, tuple(x.shape)):
        raise NotImplementedError(f"cuconv.torch.adaptive_avg_pool2d runs output size 1 only, got {output_size!r}")
    with Call("adaptive_avg_pool2d", input=x):
        return O.adaptive_avg_pool2d_route(x).annotated_plan()


__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "conv2d", "conv_transpose2d", "global_output_size",
           "max_pool2d", "plan_adaptive_avg_pool2d", "plan_avg_pool2d", "plan_conv2d", "plan_conv_transpose2d",
           "plan_max_pool2d"]
