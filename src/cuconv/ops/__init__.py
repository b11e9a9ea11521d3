"""The ops, one module per kernel file: ops/<op>.py plans and launches kernels/<op>.cu and is
tested by tests/test_<op>.py. This package imports every op module explicitly (their kernel
configs register themselves in ``cuconv.registry`` when imported); ``kernels()`` is then the
complete list, for the CLI, the analysis and the tests.
"""
from __future__ import annotations

from ..registry import KernelEntry, registered_kernels
from . import (  # noqa: F401
    conv2d,
    conv2d_grad,
    conv_dgrad,
    conv_transpose,
    conv_transpose_grad,
    conv_wgrad,
    depthwise,
    depthwise_grad,
    direct,
    fft_conv,
    find,
    gemm,
    heuristics,
    im2col,
    im2col_gemm,
    implicit_gemm,
    pool,
    pool_grad,
    separable,
    tc_common,
    tc_conv,
    tc_gemm,
    tc_grad,
    tc_probe,
    wgmma_conv,
    wgmma_probe,
    winograd,
)

OP_MODULES = (direct, im2col, gemm, im2col_gemm, implicit_gemm, winograd, fft_conv, depthwise, separable, pool,
              conv_transpose, tc_common, tc_gemm, tc_conv, tc_probe,
              conv_dgrad, conv_wgrad, depthwise_grad, pool_grad, tc_grad, wgmma_conv, wgmma_probe)


def kernels() -> list[KernelEntry]:
    """Every kernel instantiation any op can launch (every op module is imported above)."""
    return registered_kernels()
