"""Argument checks and launch-argument helpers shared by every op.

Every check raises ValueError/TypeError naming the shapes and the rule broken, before any
kernel is launched (PyTorch's shape checks and CUTLASS's ``can_implement`` are the models).
"""
from __future__ import annotations

import numpy as np

from ..dtypes import INT32_MAX, name_of
from ..plan import PlanError, Ref, pointer

# Fused-epilogue activations; the codes match CuconvActivation in kernels/common.cuh.
ACTIVATIONS = {None: 0, "none": 0, "identity": 0, "relu": 1, "relu6": 2, "silu": 3}

# Scalar argument types for launches: the emulator checks them, CuPy converts them. A value a
# kernel's int argument cannot hold is a PlanError (a ValueError naming the limit: the algorithm
# refuses the problem and ``auto`` takes the next rule), never NumPy's OverflowError.
def i32(value, what: str = "a 32-bit kernel argument") -> np.int32:
    v = int(value)
    if not -INT32_MAX - 1 <= v <= INT32_MAX:
        raise PlanError(f"{what} = {v} does not fit the kernel's 32-bit int (at most 2**31-1 = {INT32_MAX})")
    return np.int32(v)


def i64(value, what: str = "a 64-bit kernel argument") -> np.int64:
    v = int(value)
    if not -2 ** 63 <= v < 2 ** 63:
        raise PlanError(f"{what} = {v} does not fit the kernel's 64-bit int")
    return np.int64(v)


f32 = np.float32

# The array slots of the conv plans' input and output.
X, W, OUT = Ref("x"), Ref("w"), Ref("out")


def activation_code(activation) -> int:
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of None, 'relu', 'relu6', 'silu', got {activation!r}") from None


def as_tensor(a, what: str, ndim: int | None = None, dtypes=("float32",), be=None, contiguous: bool = False):
    """Check ``a`` is an array of backend ``be`` with the given rank and dtype (C-contiguous only
    when ``contiguous``: an output; inputs may be any strided view — plans copy those to
    contiguous memory before their launches, see ``Plan.execute``)."""
    a = be.as_array(a, what)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {tuple(a.shape)}")
    if dtypes is not None and name_of(a.dtype) not in dtypes:
        raise TypeError(f"{what} must have dtype {' or '.join(dtypes)}, got {name_of(a.dtype)} "
                        f"(shape {tuple(a.shape)})")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous, got strides {a.strides} for shape {tuple(a.shape)}; "
                         "call .copy() (or ascontiguousarray) first")
    return a


def optional_tensor(a, what: str, shape, dtype, be=None):
    """None, or an array of exactly ``shape`` and ``dtype`` of backend ``be`` (any strides)."""
    if a is None:
        return None
    a = as_tensor(a, what, ndim=None, dtypes=(name_of(dtype),), be=be)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a


def same_device(be, **arrays) -> None:
    devices = {name: be.device_of(a) for name, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        raise ValueError("arrays are on different devices: "
                         + ", ".join(f"{k} on device {v}" for k, v in devices.items()))


def check_out(out, shape, dtype, be, what: str = "out"):
    """A user-given ``out=``: the backend's array, of exactly ``shape`` and ``dtype``, contiguous."""
    out = as_tensor(out, what, ndim=len(shape), dtypes=(name_of(dtype),), be=be, contiguous=True)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    return out


def check_no_overlap(out, inputs, what: str = "out") -> None:
    """``out`` must not share memory with an input the kernels read while writing it."""
    for name, a in inputs:
        if a is not None and overlaps(out, a):
            raise ValueError(f"{what} overlaps {name}: the kernels read {name} while writing {what}")


def overlaps(a, b) -> bool:
    try:
        a0, b0 = pointer(a), pointer(b)
    except Exception:  # pragma: no cover - unknown array type
        return False
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


def grid_1d(total: int, block: int, max_blocks: int = INT32_MAX) -> int:
    """Blocks for a 1-D grid over ``total`` items (grid-stride kernels cap it)."""
    return max(1, min((total + block - 1) // block, max_blocks))


def optional_ref(present: bool, role: str, dtype) -> Ref:
    """The slot of an optional pointer: the role's array, or the placeholder when absent."""
    return Ref(role) if present else Ref.absent(dtype)


def epilogue_refs(has_bias: bool, has_residual: bool, dtype="float32") -> tuple:
    """(bias, has_bias, residual, has_residual) as the fused-epilogue kernels take them."""
    return (optional_ref(has_bias, "bias", dtype), i32(has_bias),
            optional_ref(has_residual, "residual", dtype), i32(has_residual))


_GEOMETRY = ("N", "C", "H", "W", "K", "R", "S", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
             "dilation_w", "groups")


def conv_geometry_args(p) -> tuple:
    """The int32 problem arguments shared by the direct and implicit-GEMM kernels:
    N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups
    (PlanError naming the first that does not fit, as ``i32``; checked in one pass: planning
    pays no Python call per argument)."""
    v = (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h,
         p.dilation_w, p.groups)
    if max(v) > INT32_MAX or min(v) < -INT32_MAX - 1:
        for name, value in zip(_GEOMETRY, v):
            i32(value, name)
    return tuple(map(np.int32, v))


# --------------------------------------------------------------------------- the front ends' plan lookup
def native(be, a, what: str):
    """``a`` as the backend's array type (a no-op for its own arrays; DLPack and CUDA array
    interface objects are viewed without a copy); None stays None."""
    if a is None or be.is_array(a):
        return a
    return be.as_array(a, what)


def native_or_shape(be, a, what: str):
    """Like ``native``, but anything with ``.shape`` and ``.dtype`` is kept as it is (planning
    from shapes alone)."""
    if a is None or be.is_array(a) or (hasattr(a, "shape") and hasattr(a, "dtype")):
        return a
    return be.as_array(a, what)


def misaligned_roles(roles, env: dict, align: int = 16) -> frozenset:
    """The roles among ``roles`` whose arrays in ``env`` do not start ``align``-byte aligned."""
    return frozenset(r for r in roles if env.get(r) is not None and pointer(env[r]) % align)
