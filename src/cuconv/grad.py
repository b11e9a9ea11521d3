"""``cuconv.grad``: the backward passes, following ``torch.nn.grad``.

    dx = cuconv.grad.conv2d_input(x.shape, w, dy, stride=2, padding=1)
    dw = cuconv.grad.conv2d_weight(x, w.shape, dy, stride=2, padding=1)
    db = cuconv.grad.conv2d_bias(dy)
    dx, dw, db = cuconv.grad.conv2d_backward(x, w, dy, stride=2, padding=1)   # one plan

The convolution gradients are ops/conv2d_grad.py, the transposed convolution's
ops/conv_transpose_grad.py, the pools' ops/pool_grad.py; ``plan_*`` returns the plan a call
runs, ``algorithms(problem, which)`` what can run a gradient and why the rest cannot.
"""
from .ops.conv2d_grad import (  # noqa: F401
    CONV_ALGOS,
    WHICH,
    algorithms,
    conv2d_backward,
    conv2d_bias,
    conv2d_input,
    conv2d_weight,
    plan_conv2d_backward,
    plan_conv2d_bias,
    plan_conv2d_input,
    plan_conv2d_weight,
)
from .ops.conv_transpose_grad import (  # noqa: F401
    conv_transpose2d_input,
    conv_transpose2d_weight,
    plan_conv_transpose2d_input,
    plan_conv_transpose2d_weight,
)
from .ops.pool_grad import (  # noqa: F401
    avg_pool2d,
    global_avg_pool2d,
    max_pool2d,
    plan_avg_pool2d,
    plan_global_avg_pool2d,
    plan_max_pool2d,
)

__all__ = [n for n in dir() if not n.startswith("_")]
