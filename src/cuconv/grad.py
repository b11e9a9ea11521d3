"""``cuconv.grad``: the backward passes, following ``torch.nn.grad`` (ops/grad.py documents them).

    dx = cuconv.grad.conv2d_input(x.shape, w, dy, stride=2, padding=1)
    dw = cuconv.grad.conv2d_weight(x, w.shape, dy, stride=2, padding=1)
    db = cuconv.grad.conv2d_bias(dy)
    dx, dw, db = cuconv.grad.conv2d_backward(x, w, dy, stride=2, padding=1)   # one plan
"""
from .ops.grad import (  # noqa: F401
    AUTO_RULES,
    CONV_ALGOS,
    WHICH,
    algorithms,
    avg_pool2d,
    conv2d_backward,
    conv2d_bias,
    conv2d_input,
    conv2d_weight,
    conv_transpose2d_input,
    conv_transpose2d_weight,
    global_avg_pool2d,
    max_pool2d,
    plan_avg_pool2d,
    plan_conv2d_backward,
    plan_conv2d_bias,
    plan_conv2d_input,
    plan_conv2d_weight,
    plan_conv_transpose2d_input,
    plan_conv_transpose2d_weight,
    plan_global_avg_pool2d,
    plan_max_pool2d,
)

__all__ = [n for n in dir() if not n.startswith("_")]
