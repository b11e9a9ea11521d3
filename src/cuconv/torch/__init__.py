"""``cuconv.torch``: cuconv's kernels in PyTorch — custom operators, autograd, torch.compile.

    import cuconv.torch as ct
    conv = ct.Conv2d(3, 16, 3, padding=1)             # torch.nn.Conv2d's arguments and init
    y = ct.max_pool2d(conv(x), 2)                      # torch.nn.functional's signatures
    y.sum().backward()                                 # cuconv.grad computes the gradients
    model, report = ct.convert(torchvision_model)      # swap torch.nn layers in place
    torch.compile(model, fullgraph=True)               # no graph breaks: torch.ops.cuconv.* are opaque

Every function and layer calls one ``torch.ops.cuconv`` operator (ops.py): ``conv2d``,
``conv_transpose2d``, ``max_pool2d`` (``max_pool2d_with_indices``), ``avg_pool2d``,
``adaptive_avg_pool2d`` (output size 1) and their backward operators, each with a fake
implementation, an autograd formula that computes only the gradients asked for, and (the
convolutions) an autocast rule. CUDA tensors run on cuconv's GPU backend (zero-copy through
DLPack, on torch's current stream); CPU tensors on cuconv's CPU emulator (zero-copy NumPy
views) — the same kernels, slowly, which makes all of this testable without a GPU.
channels_last tensors stay channels_last, read as NHWC where cuconv has the kernel (routes.py;
``plan_conv2d`` ... say what a call runs and what it copies).

Not handled: double backward (RuntimeError), padding modes other than 'zeros', adaptive pooling
to sizes other than 1. Dtypes are those cuconv's kernels take (float32 everywhere; float64,
float16 and bfloat16 where an algorithm takes them; float16/bfloat16 pools and transposed
convolutions through float32 where cuconv has no such kernel). Importing ``cuconv`` never
imports torch.
"""
from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"cuconv.torch needs PyTorch, which is not installed ({exc}): install the extra with "
        "pip install 'cuconv[torch]' (for the CPU-only wheel: pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu)") from exc

from ._bridge import from_array, to_array  # noqa: E402, F401
from .functional import (  # noqa: E402, F401
    adaptive_avg_pool2d,
    avg_pool2d,
    conv2d,
    conv_transpose2d,
    max_pool2d,
    plan_adaptive_avg_pool2d,
    plan_avg_pool2d,
    plan_conv2d,
    plan_conv_transpose2d,
    plan_max_pool2d,
)
from .modules import (  # noqa: E402, F401
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    ConvertReport,
    ConvTranspose2d,
    MaxPool2d,
    convert,
)
from .ops import DOUBLE_BACKWARD  # noqa: E402, F401
from .routes import Route  # noqa: E402, F401

__all__ = ["DOUBLE_BACKWARD", "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "ConvTranspose2d", "ConvertReport",
           "MaxPool2d", "Route", "adaptive_avg_pool2d", "avg_pool2d", "conv2d", "conv_transpose2d", "convert",
           "from_array", "max_pool2d", "plan_adaptive_avg_pool2d", "plan_avg_pool2d", "plan_conv2d",
           "plan_conv_transpose2d", "plan_max_pool2d", "to_array"]
