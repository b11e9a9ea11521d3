"""The ops. Importing this package registers every algorithm and kernel config.

One module per kernel file: ops/<op>.py launches kernels/<op>.cu and is tested by
tests/test_<op>.py.
"""
from __future__ import annotations

import importlib

# Order matters for `auto` ties: earlier registration wins.
_OP_MODULES = (
    "direct", "im2col", "gemm", "im2col_gemm", "implicit_gemm", "winograd",
    "depthwise", "separable", "pool", "conv_transpose", "tensor_core", "wgmma_conv",
)

for _name in _OP_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

from .conv2d import algorithm, algorithms, choose_algorithm, conv2d, register_algorithm  # noqa: E402,F401
