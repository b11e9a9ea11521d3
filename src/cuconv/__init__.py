"""cuconv: hand-written CUDA C convolution kernels, run through CuPy on the GPU or through
cuconv's own emulator on the CPU, and a harness that measures them against theory.

    import cupy, cuconv
    y = cuconv.conv2d(x, w, bias, stride=1, padding=1, activation="relu")
    plan = cuconv.plan_conv2d(x, w, bias, padding=1)     # what that call launches
    plan.algo, plan.workspace_bytes, [ln.kernel for ln in plan.launches]

    with cuconv.backend("emulator"):          # NumPy arrays, kernels executed on the CPU
        y = cuconv.conv2d(x_np, w_np, padding=1)

Importing cuconv imports no GPU library (CuPy is loaded on the first GPU call).
"""
from __future__ import annotations

from ._version import __version__  # noqa: F401
from .backend import (  # noqa: F401
                      NoDeviceError,
                      UnsupportedDeviceError,
                      backend,
                      current_backend,
                      gpu_available,
                      release_fft_plans,
)
from . import grad  # noqa: F401
from .ops.conv2d import algorithms, conv2d, plan_conv2d  # noqa: F401
from .ops.conv_transpose import conv_transpose2d, plan_conv_transpose2d  # noqa: F401
from .ops.depthwise import depthwise_conv2d, plan_depthwise_conv2d  # noqa: F401
from .ops.fft_conv import fft_filter_transform  # noqa: F401
from .ops.find import find  # noqa: F401
from .ops.gemm import gemm, plan_gemm  # noqa: F401
from .ops.im2col import im2col, plan_im2col  # noqa: F401
from .ops.pool import (  # noqa: F401
                       avg_pool2d,
                       global_avg_pool2d,
                       max_pool2d,
                       plan_avg_pool2d,
                       plan_global_avg_pool2d,
                       plan_max_pool2d,
)
from .ops.separable import plan_separable_conv2d, separable_conv2d  # noqa: F401
from .ops.winograd import winograd_filter_transform  # noqa: F401
from .plan import Plan, clear_plan_caches  # noqa: F401
from .problem import Conv2dProblem, ConvTransposeProblem, GemmProblem, PoolProblem  # noqa: F401
