"""cuconv: hand-written CUDA C convolution kernels, run through CuPy on the GPU or through
cuconv's own emulator on the CPU, and a harness that measures them against theory.

    import cupy, cuconv
    y = cuconv.conv2d(x, w, bias, stride=1, padding=1, activation="relu")

    with cuconv.backend("emulator"):          # NumPy arrays, kernels executed on the CPU
        y = cuconv.conv2d(x_np, w_np, padding=1)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .backend import NoDeviceError, backend, current_backend, gpu_available  # noqa: E402,F401
from .problem import Conv2dProblem  # noqa: E402,F401

# Public names, resolved on first use so that `import cuconv` stays cheap and works
# without a GPU (nothing here imports CuPy).
_LAZY = {
    "conv2d": "cuconv.ops.conv2d",
    "algorithms": "cuconv.ops.conv2d",
    "find": "cuconv.ops.find",
    "gemm": "cuconv.ops.gemm",
    "im2col": "cuconv.ops.im2col",
    "winograd_filter_transform": "cuconv.ops.winograd",
    "depthwise_conv2d": "cuconv.ops.depthwise",
    "separable_conv2d": "cuconv.ops.separable",
    "max_pool2d": "cuconv.ops.pool",
    "avg_pool2d": "cuconv.ops.pool",
    "global_avg_pool2d": "cuconv.ops.pool",
    "conv_transpose2d": "cuconv.ops.conv_transpose",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cuconv' has no attribute {name!r}")
    importlib.import_module("cuconv.ops")  # register every algorithm first
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
