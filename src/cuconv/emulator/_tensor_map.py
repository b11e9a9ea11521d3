"""The emulator's tensor-map encoder: cuTensorMapEncodeTiled / cuTensorMapEncodeIm2col with the
driver's arguments and the driver's documented requirements (cuda.h), producing 128 bytes in
the emulator's own format, which its TMA model (include/cuconv_emu/tensor_core.h) reads. The
format is opaque to kernels, as the driver's is; a kernel just passes the map's address to
``cp.async.bulk.tensor``.

The global address is a NumPy array (plus an optional byte offset into it) instead of a device
pointer: the map keeps the array, and a launch that receives the map carries the array to the
worker like a pointer argument and writes the worker's address of it into the map's address
field (_module.Function._marshal). The region the map describes must lie inside that array, so
a TMA load can never read outside it.
"""
from __future__ import annotations

import numbers
import struct

import numpy as np

MAGIC = 0x4D544343  # "CCTM"
VERSION = 1
SIZE = 128
ADDRESS_OFFSET = 16  # where the global address sits in the 128 bytes

# CUtensorMapDataType: element size in bytes (the packed 4/6-bit types are not emulated).
DATA_TYPE_SIZES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 5: 8, 6: 2, 7: 4, 8: 8, 9: 2, 10: 4, 11: 4, 12: 4}
FLOAT16, BFLOAT16, FLOAT32 = 6, 9, 7
# CUtensorMapSwizzle -> span in bytes (0: none); the 128B_ATOM_* variants are not emulated.
SWIZZLE_SPANS = {0: 0, 1: 32, 2: 64, 3: 128}
_FLOAT_TYPES = {6, 7, 8, 9, 10, 11, 12}


class TensorMap:
    """An encoded tensor map: ``data`` (128 bytes, the address field holding the host address
    of ``array``'s data plus ``offset``) and the array it describes."""
    __slots__ = ("data", "array", "offset")

    def __init__(self, data: bytes, array: np.ndarray, offset: int):
        self.data, self.array, self.offset = data, array, offset

    def __bytes__(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        mode = "im2col" if self.data[5] else "tiled"
        return f"<cuconv.emulator.TensorMap {mode} rank {self.data[6]} over {self.array.dtype} {self.array.shape}>"


def _err(what: str, msg: str) -> ValueError:
    return ValueError(f"{what}: {msg} (the driver returns CUDA_ERROR_INVALID_VALUE)")


def _ints(name: str, values, n: int, what: str) -> tuple[int, ...]:
    try:
        out = tuple(values)
    except TypeError:
        raise TypeError(f"{what}: {name} must be a sequence of {n} ints, got {values!r}") from None
    if len(out) != n or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in out):
        raise TypeError(f"{what}: {name} must be a sequence of {n} ints, got {values!r}")
    return tuple(int(v) for v in out)


def _common(what, data_type, rank, array, offset, dims, strides, element_strides, interleave, swizzle,
            l2_promotion, oob_fill, ranks):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what}: the global address must be a NumPy array on the emulator, got "
                        f"{type(array).__name__}")
    if data_type not in DATA_TYPE_SIZES:
        raise _err(what, f"data type {data_type!r} is not one the emulator encodes (0..12 of CUtensorMapDataType)")
    if rank not in ranks:
        raise _err(what, f"tensorRank {rank} must be one of {ranks}")
    if interleave != 0:
        raise _err(what, "interleaved layouts (CU_TENSOR_MAP_INTERLEAVE_16B/32B) are not emulated")
    if swizzle not in SWIZZLE_SPANS:
        raise _err(what, f"swizzle {swizzle!r} is not emulated (NONE, 32B, 64B, 128B are)")
    if l2_promotion not in (0, 1, 2, 3):
        raise _err(what, f"l2Promotion {l2_promotion!r} is not a CUtensorMapL2promotion")
    if oob_fill not in (0, 1) or (oob_fill == 1 and data_type not in _FLOAT_TYPES):
        raise _err(what, f"oobFill {oob_fill!r}: NAN_REQUEST_ZERO_FMA needs a floating-point data type")
    dims = _ints("globalDim", dims, rank, what)
    strides = _ints("globalStrides", strides, rank - 1, what)
    es = _ints("elementStrides", element_strides, rank, what)
    if not isinstance(offset, numbers.Integral) or offset < 0:
        raise TypeError(f"{what}: offset must be a non-negative int, got {offset!r}")
    address = array.__array_interface__["data"][0] + int(offset)
    if address % 16:
        raise _err(what, f"globalAddress {address:#x} must be 16-byte aligned")
    if any(d < 1 or d > 2**32 for d in dims):
        raise _err(what, f"globalDim {dims} must be in 1..2^32")
    if any(s % 16 or s >= 2**40 or s <= 0 for s in strides):
        raise _err(what, f"globalStrides {strides} must be positive multiples of 16 below 2^40")
    if any(e < 1 or e > 8 for e in es):
        raise _err(what, f"elementStrides {es} must be in 1..8")
    size = DATA_TYPE_SIZES[data_type]
    extent = dims[0] * size + sum((d - 1) * s for d, s in zip(dims[1:], strides))
    if not array.flags.c_contiguous or offset + extent > array.nbytes:
        raise ValueError(f"{what}: the tensor ({dims}, strides {strides} bytes) spans {extent} bytes from byte "
                         f"{offset}, past the {array.nbytes}-byte C-contiguous array it is encoded over")
    return dims, strides, es, size


def _pack(mode, rank, data_type, swizzle, l2, oob, cpp, ppc, dims, strides, box, es, lower, upper) -> bytes:
    b = struct.pack("<IBBBBBBBBHH", MAGIC, VERSION, mode, rank, data_type, 0, swizzle, l2, oob, cpp, ppc)
    b += struct.pack("<Q", 0)                                   # address: written below / at launch
    b += struct.pack("<5Q", *(list(dims) + [1] * (5 - len(dims))))
    b += struct.pack("<4Q", *(list(strides) + [0] * (4 - len(strides))))
    b += struct.pack("<5H", *(list(box) + [1] * (5 - len(box))))
    b += struct.pack("<5B", *(list(es) + [1] * (5 - len(es))))
    b += b"\0"
    b += struct.pack("<3h3h", *(list(lower) + [0] * (3 - len(lower))), *(list(upper) + [0] * (3 - len(upper))))
    b += b"\0" * (SIZE - len(b))
    assert len(b) == SIZE
    return b


def _finish(data: bytes, array: np.ndarray, offset: int) -> TensorMap:
    address = array.__array_interface__["data"][0] + int(offset)
    data = data[:ADDRESS_OFFSET] + struct.pack("<Q", address) + data[ADDRESS_OFFSET + 8:]
    return TensorMap(data, array, int(offset))


def encode_tiled(data_type: int, rank: int, array: np.ndarray, global_dim, global_strides, box_dim,
                 element_strides, interleave: int = 0, swizzle: int = 0, l2_promotion: int = 0,
                 oob_fill: int = 0, *, offset: int = 0) -> TensorMap:
    """cuTensorMapEncodeTiled on the emulator: ``array`` (+ ``offset`` bytes) is the global
    address; dims innermost first, strides (bytes) of dims 1..rank-1; enums as the driver's."""
    what = "cuTensorMapEncodeTiled (emulator)"
    dims, strides, es, size = _common(what, data_type, rank, array, offset, global_dim, global_strides,
                                      element_strides, interleave, swizzle, l2_promotion, oob_fill, (1, 2, 3, 4, 5))
    box = _ints("boxDim", box_dim, rank, what)
    if any(b < 1 or b > 256 for b in box):
        raise _err(what, f"boxDim {box} must be in 1..256")
    if box[0] * size % 16:
        raise _err(what, f"boxDim[0] · element size = {box[0] * size} bytes must be a multiple of 16")
    span = SWIZZLE_SPANS[swizzle]
    if span and box[0] * size > span:
        raise _err(what, f"the inner box dimension ({box[0] * size} bytes) exceeds the {span}-byte swizzle span")
    data = _pack(0, rank, data_type, swizzle, l2_promotion, oob_fill, 0, 0, dims, strides, box, es, (), ())
    return _finish(data, array, offset)


def encode_im2col(data_type: int, rank: int, array: np.ndarray, global_dim, global_strides,
                  pixel_box_lower_corner, pixel_box_upper_corner, channels_per_pixel: int, pixels_per_column: int,
                  element_strides, interleave: int = 0, swizzle: int = 0, l2_promotion: int = 0,
                  oob_fill: int = 0, *, offset: int = 0) -> TensorMap:
    """cuTensorMapEncodeIm2col on the emulator (NWC, NHWC, NDHWC: dims C, W[, H[, D]], N). The
    corner offsets are given W first (then H, D), as CUTLASS passes them to the driver."""
    what = "cuTensorMapEncodeIm2col (emulator)"
    dims, strides, es, size = _common(what, data_type, rank, array, offset, global_dim, global_strides,
                                      element_strides, interleave, swizzle, l2_promotion, oob_fill, (3, 4, 5))
    spatial = rank - 2
    lower = _ints("pixelBoxLowerCorner", pixel_box_lower_corner, spatial, what)
    upper = _ints("pixelBoxUpperCorner", pixel_box_upper_corner, spatial, what)
    lim = {3: 32768, 4: 128, 5: 16}[rank]
    if any(not -lim <= v < lim for v in lower + upper):
        raise _err(what, f"corner offsets {lower} / {upper} must be in [-{lim}, {lim - 1}] for rank {rank}")
    for i in range(spatial):
        if dims[1 + i] - 1 + upper[i] < lower[i]:
            raise _err(what, f"the bounding box of dimension {1 + i} ([{lower[i]}, {dims[1 + i] - 1 + upper[i]}]) "
                             f"is empty")
    if not isinstance(channels_per_pixel, numbers.Integral) or not 1 <= channels_per_pixel <= 256:
        raise _err(what, f"channelsPerPixel {channels_per_pixel!r} must be in 1..256")
    if not isinstance(pixels_per_column, numbers.Integral) or not 1 <= pixels_per_column <= 1024:
        raise _err(what, f"pixelsPerColumn {pixels_per_column!r} must be in 1..1024")
    if channels_per_pixel * size % 16:
        raise _err(what, f"channelsPerPixel · element size = {channels_per_pixel * size} bytes must be a multiple "
                         f"of 16")
    span = SWIZZLE_SPANS[swizzle]
    if span and channels_per_pixel * size > span:
        raise _err(what, f"the inner dimension ({channels_per_pixel * size} bytes) exceeds the {span}-byte "
                         f"swizzle span")
    data = _pack(1, rank, data_type, swizzle, l2_promotion, oob_fill, int(channels_per_pixel),
                 int(pixels_per_column), dims, strides, (), es, lower, upper)
    return _finish(data, array, offset)


__all__ = ["TensorMap", "encode_tiled", "encode_im2col", "FLOAT16", "BFLOAT16", "FLOAT32", "SWIZZLE_SPANS"]
