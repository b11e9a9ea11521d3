"""``cuconv.torch``: PyTorch autograd on cuconv's kernels (needs the ``torch`` extra).

    import cuconv.torch as ct
    conv = ct.Conv2d(3, 16, 3, padding=1)             # torch.nn.Conv2d's arguments and init
    y = ct.max_pool2d(conv(x), 2)                      # torch.nn.functional's signatures
    y.sum().backward()                                 # cuconv.grad computes the gradients
    model, report = ct.convert(torchvision_model)      # swap torch.nn layers in place

CUDA tensors run on cuconv's GPU backend (zero-copy through DLPack, on torch's current
stream); CPU tensors run on cuconv's CPU emulator (zero-copy NumPy views) — the same kernels,
slowly, which makes autograd testable without a GPU. Layers: ``Conv2d``, ``ConvTranspose2d``,
``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (output size 1); functions ``conv2d``,
``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d`` and their
``torch.autograd.Function``s. Each backward computes only the gradients autograd asks for.

Not handled: double backward (differentiating a gradient these backward passes computed raises
a RuntimeError, also where ``once_differentiable`` would let it through silently), autocast
(tensors run in their own dtype), padding modes other than 'zeros'. Dtypes are those cuconv's
kernels take (float32 everywhere; float64, float16 and bfloat16 where an algorithm takes them;
cuconv raises a TypeError otherwise). Importing ``cuconv`` never imports torch.
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
    AvgPool2dFunction,
    Conv2dFunction,
    ConvTranspose2dFunction,
    GlobalAvgPool2dFunction,
    MaxPool2dFunction,
    adaptive_avg_pool2d,
    avg_pool2d,
    conv2d,
    conv_transpose2d,
    max_pool2d,
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

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "AvgPool2dFunction", "Conv2d", "Conv2dFunction", "ConvTranspose2d",
           "ConvTranspose2dFunction", "ConvertReport", "GlobalAvgPool2dFunction", "MaxPool2d", "MaxPool2dFunction",
           "adaptive_avg_pool2d", "avg_pool2d", "conv2d", "conv_transpose2d", "convert", "from_array",
           "max_pool2d", "to_array"]
