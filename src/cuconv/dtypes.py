"""cuconv's vocabulary of element types and 32-bit limits, defined once.

An element type has one canonical name (``"float32"``, the key of every table: tolerances, plan
keys, ``Conv2dProblem.dtype``), a size, the short tag generated kernel labels carry
(``gemm_f32_...``), the C++ type of NVRTC name expressions (``gemm<float, ...>``) and the type
the kernels accumulate in. The groups say which kernels take which types:

* ``CUDA_CORE_DTYPES``: float32 and float64, the element types of the CUDA-core (SIMT) kernels
  (templated on ``T = float | double``; float64 accumulates in double);
* ``TENSOR_CORE_DTYPES``: float16 and bfloat16, the tensor-core kernels' inputs (fp32 accumulation);
* ``FLOAT_DTYPES``: every floating-point type an op takes (the two groups together).

``INT32_MAX`` is the kernels' index range: a size, offset or count beyond it needs 64-bit
integers, and an argument beyond it cannot be passed to a kernel at all (ValueError naming it).
A leaf module: it imports nothing of cuconv.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class DType:
    name: str          # canonical name
    itemsize: int      # bytes per element
    tag: str           # in generated kernel labels
    ctype: str         # the C++ type in name expressions
    accumulator: str   # the type the kernels accumulate in


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("float32", 4, "f32", "float", "float32"),
    DType("float64", 8, "f64", "double", "float64"),
    DType("float16", 2, "f16", "__half", "float32"),
    DType("bfloat16", 2, "bf16", "__nv_bfloat16", "float32"),
    # float32 storage multiplied on tensor cores with 10-bit mantissas (allow_tf32)
    DType("tf32", 4, "tf32", "float", "float32"),
    DType("int8", 1, "i8", "signed char", "int32"),
    DType("int32", 4, "i32", "int", "int32"),
)}
DTYPE_BYTES = {name: d.itemsize for name, d in DTYPES.items()}

CUDA_CORE_DTYPES = ("float32", "float64")
TENSOR_CORE_DTYPES = ("float16", "bfloat16")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

_ALIASES = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16", "half": "float16",
            "bf16": "bfloat16", "fp64": "float64", "double": "float64"}


def dtype_name(dtype) -> str:
    """Canonical dtype name ('float32', 'float16', 'bfloat16', ...) for a dtype-like."""
    if isinstance(dtype, str):
        name = _ALIASES.get(dtype, dtype)
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        return name
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {sorted(DTYPES)}")
    return name


_NAMES: dict = {}


def name_of(dtype) -> str:
    """``np.dtype(dtype).name``, memoized (NumPy computes a dtype's name in Python; the ops ask for
    it on every first call)."""
    name = _NAMES.get(dtype)
    if name is None:
        name = _NAMES[dtype] = np.dtype(dtype).name
    return name


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a dtype name ('bfloat16' through the optional ml_dtypes package)."""
    if name == "bfloat16":
        import ml_dtypes  # noqa: PLC0415  (optional third-party package, the bf16 extra)
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def tag(dtype: str) -> str:
    """The short name kernel labels carry for ``dtype``: 'f32', 'f64', 'f16', 'bf16', 'tf32'."""
    return DTYPES[dtype].tag


def ctype(dtype: str) -> str:
    """The C++ element type of ``dtype`` in name expressions: 'float', 'double', '__half', ..."""
    return DTYPES[dtype].ctype


def int32_reason(*named: tuple[str, int]) -> str | None:
    """Why one of the (name, value) pairs does not fit the kernels' 32-bit ints (|value| at most
    INT32_MAX), or None."""
    for name, value in named:
        if not -INT32_MAX <= value <= INT32_MAX:
            return f"{name}={value} does not fit a 32-bit int"
    return None
