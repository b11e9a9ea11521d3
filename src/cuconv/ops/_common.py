"""Argument checks and launch helpers shared by every op.

Every check raises ValueError/TypeError naming the shapes and the rule broken,
before any kernel is launched (PyTorch's shape checks and CUTLASS's
``can_implement`` are the models).
"""
from __future__ import annotations

import numpy as np

from ..backend import current_backend

# Fused-epilogue activations; the codes match CuconvActivation in kernels/common.cuh.
ACTIVATIONS = {None: 0, "none": 0, "identity": 0, "relu": 1, "relu6": 2, "silu": 3}

# Scalar argument types for launches: the emulator checks them, CuPy converts them.
i32 = np.int32
i64 = np.int64
f32 = np.float32


def activation_code(activation) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of None, 'relu', 'relu6', 'silu', got {activation!r}")
    return ACTIVATIONS[activation]


def as_tensor(a, what: str, ndim: int | None = None, dtypes=("float32",), be=None):
    """Check ``a`` is an array of the current backend with the given rank and dtype, C-contiguous."""
    be = be or current_backend()
    a = be.as_array(a, what)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {tuple(a.shape)}")
    if dtypes is not None and np.dtype(a.dtype).name not in dtypes:
        raise TypeError(f"{what} must have dtype {' or '.join(dtypes)}, got {np.dtype(a.dtype).name} "
                        f"(shape {tuple(a.shape)})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous, got strides {a.strides} for shape {tuple(a.shape)}; "
                         "call .copy() (or ascontiguousarray) first")
    return a


def optional_tensor(a, what: str, shape, dtype, be=None):
    """None, or an array of exactly ``shape`` and ``dtype`` (contiguous) of the current backend."""
    if a is None:
        return None
    a = as_tensor(a, what, ndim=len(shape), dtypes=(np.dtype(dtype).name,), be=be)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a


def same_device(be, **arrays) -> None:
    devices = {name: be.device_of(a) for name, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        raise ValueError("arrays are on different devices: "
                         + ", ".join(f"{k} on device {v}" for k, v in devices.items()))


def prepare_out(out, shape, dtype, be, what: str = "out", inputs=()):
    """Allocate the output, or check a user-given ``out=`` (shape, dtype, contiguity, no aliasing)."""
    if out is None:
        return be.empty(tuple(shape), dtype)
    out = as_tensor(out, what, ndim=len(shape), dtypes=(np.dtype(dtype).name,), be=be)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    for name, a in inputs:
        if a is not None and _overlaps(out, a):
            raise ValueError(f"{what} overlaps {name}: the kernels read {name} while writing {what}")
    return out


def _overlaps(a, b) -> bool:
    try:
        a0 = _data_ptr(a)
        b0 = _data_ptr(b)
    except Exception:  # pragma: no cover - unknown array type
        return False
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


def _data_ptr(a) -> int:
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return int(a.data.ptr)


def pair(value, what: str) -> tuple[int, int]:
    from ..problem import _pair  # noqa: PLC0415
    return _pair(value, what)


def grid_1d(total: int, block: int, max_blocks: int = 2 ** 31 - 1) -> int:
    """Blocks for a 1-D grid over ``total`` items (grid-stride kernels cap it)."""
    return max(1, min((total + block - 1) // block, max_blocks))


_PLACEHOLDERS: dict = {}


def placeholder(be, dtype="float32"):
    """A 1-element array to pass for an absent optional pointer (its flag argument is 0)."""
    key = (be.name, id(be) if be.name == "cupy" else 0, np.dtype(dtype).name)
    if be.name == "cupy":
        import cupy  # noqa: PLC0415
        key = (*key, cupy.cuda.Device().id)
    a = _PLACEHOLDERS.get(key)
    if a is None:
        a = be.empty((1,), dtype)
        a[...] = 0
        _PLACEHOLDERS[key] = a
    return a


def optional_pointer_args(be, bias, residual, dtype="float32") -> tuple:
    """(bias, has_bias, residual, has_residual) as the fused-epilogue kernels take them."""
    ph = placeholder(be, dtype)
    return (bias if bias is not None else ph, i32(bias is not None),
            residual if residual is not None else ph, i32(residual is not None))


def conv_geometry_args(p) -> tuple:
    """The int32 problem arguments shared by the direct and implicit-GEMM kernels:
    N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups."""
    return tuple(i32(v) for v in (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w,
                                  p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups))
