"""TMA tensor maps (CUtensorMap) as plans name them, and their encoding on the GPU.

A kernel that loads with ``cp.async.bulk.tensor`` takes a 128-byte tensor map by value
(``const __grid_constant__ CcTensorMap``, kernels/common.cuh). The map holds the tensor's
address, so it is made per call: a plan's launch holds a ``TensorMapSpec`` (everything but the
address: mode, data type, dims, strides, box or im2col corners) and the array slot it describes;
the backend encodes it when the launch runs (``Backend.tensor_map``):

* GPU: the driver's ``cuTensorMapEncodeTiled`` / ``cuTensorMapEncodeIm2col`` through NVIDIA's
  ``cuda-bindings`` (``pip install cuda-bindings``, in cuconv's cuda12/cuda13 extras), the 128
  bytes passed as a NumPy void scalar (CuPy passes a scalar's bytes by value); memoized per
  (spec, device pointer), so a repeated call costs a dictionary lookup;
* emulator: ``cuconv.emulator.encode_tensor_map_*``, the same call with the emulator's own
  encoding (its TMA model reads it);
* record backend: the spec itself.

Enums are the driver's (cuda.h): data type FLOAT16 = 6, BFLOAT16 = 9; swizzle NONE 0, 32B 1,
64B 2, 128B 3. The im2col corners are given W first, as CUTLASS passes them.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import numpy as np

from . import emulator as _emulator

DATA_TYPES = {"uint8": 0, "uint16": 1, "uint32": 2, "int32": 3, "uint64": 4, "int64": 5, "float16": 6,
              "float32": 7, "float64": 8, "bfloat16": 9}
SWIZZLE_128B = 3


@dataclass(frozen=True)
class TensorMapSpec:
    """A tensor map without its address. ``dims`` innermost first; ``strides`` the byte strides
    of dims 1..rank-1; tiled mode: ``box``; im2col mode: ``lower``/``upper`` corners (W first),
    ``channels_per_pixel``, ``pixels_per_column``; ``element_strides`` in both."""
    mode: str                       # "tiled" or "im2col"
    dtype: str
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    element_strides: tuple[int, ...]
    box: tuple[int, ...] = ()
    lower: tuple[int, ...] = ()
    upper: tuple[int, ...] = ()
    channels_per_pixel: int = 0
    pixels_per_column: int = 0
    swizzle: int = SWIZZLE_128B

    def __post_init__(self):
        if self.mode not in ("tiled", "im2col"):
            raise ValueError(f"tensor map mode must be 'tiled' or 'im2col', got {self.mode!r}")
        if self.dtype not in DATA_TYPES:
            raise ValueError(f"no tensor-map data type for {self.dtype}")

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def data_type(self) -> int:
        return DATA_TYPES[self.dtype]

    @property
    def box_bytes(self) -> int:
        """The bytes one load of the box writes to shared memory (its transaction count)."""
        size = np.dtype(self.dtype if self.dtype != "bfloat16" else "uint16").itemsize
        if self.mode == "im2col":
            return self.channels_per_pixel * self.pixels_per_column * size
        n = self.box[0]
        for b, e in zip(self.box[1:], self.element_strides[1:]):
            n *= -(-b // e)
        return n * size

    def describe(self) -> str:
        if self.mode == "im2col":
            return (f"im2col map dims {self.dims} corners {self.lower}/{self.upper} "
                    f"{self.pixels_per_column}x{self.channels_per_pixel} strides {self.element_strides}")
        return f"tiled map dims {self.dims} box {self.box}"

    # --- encodings ----------------------------------------------------------------------
    def emulator_encode(self, array: np.ndarray):
        """The emulator's encoding over ``array`` (cuconv.emulator.encode_tensor_map_*)."""
        if self.mode == "im2col":
            return _emulator.encode_tensor_map_im2col(
                self.data_type, self.rank, array, self.dims, self.strides, self.lower, self.upper,
                self.channels_per_pixel, self.pixels_per_column, self.element_strides, 0, self.swizzle, 0, 0)
        return _emulator.encode_tensor_map_tiled(self.data_type, self.rank, array, self.dims, self.strides,
                                                self.box, self.element_strides, 0, self.swizzle, 0, 0)

    def driver_encode(self, address: int, driver=None) -> bytes:
        """The driver's 128 bytes for the tensor at device ``address`` (cuda-bindings; ``driver``
        replaces ``cuda.bindings.driver``, for tests)."""
        drv = driver if driver is not None else _driver()
        u32 = lambda v: [drv.cuuint32_t(x) for x in v]   # noqa: E731  (cuda-bindings wants its own ints in lists)
        head = (drv.CUtensorMapDataType(self.data_type), self.rank, address,
                [drv.cuuint64_t(x) for x in self.dims], [drv.cuuint64_t(x) for x in self.strides])
        tail = (u32(self.element_strides), drv.CUtensorMapInterleave(0), drv.CUtensorMapSwizzle(self.swizzle),
                drv.CUtensorMapL2promotion(2), drv.CUtensorMapFloatOOBfill(0))   # L2 promotion 128 B, zero fill
        if self.mode == "im2col":
            err, tmap = drv.cuTensorMapEncodeIm2col(*head, list(self.lower), list(self.upper),
                                                    self.channels_per_pixel, self.pixels_per_column, *tail)
        else:
            err, tmap = drv.cuTensorMapEncodeTiled(*head, u32(self.box), *tail)
        if int(err) != 0:
            raise RuntimeError(f"{'cuTensorMapEncodeIm2col' if self.mode == 'im2col' else 'cuTensorMapEncodeTiled'}"
                               f" failed ({err}) for {self.describe()} at {address:#x}")
        words = [int(w) for w in tmap.opaque]
        if self.mode == "im2col" and _driver_version(drv) <= 13010 and self._tensor_bytes() < 131072:
            # CUTLASS clears bit 21 of the second word of an im2col map for tensors under 128 KiB
            # on drivers up to 13.1 (include/cute/atom/copy_traits_sm90_im2col.hpp): a driver
            # encoding issue it works around; done the same way here.
            words[1] &= ~(1 << 21)
        return struct.pack("<16Q", *words)

    def _tensor_bytes(self) -> int:
        return self.strides[-1] * self.dims[-1] if self.strides else self.dims[0] * 2


_DRIVER = None
_DRIVER_VERSION = None
_lock = threading.Lock()


def _driver():
    """cuda.bindings.driver, initialised once; a clear error when cuda-bindings is missing."""
    global _DRIVER
    if _DRIVER is None:
        try:
            from cuda.bindings import driver  # noqa: PLC0415  (optional third-party package)
        except ImportError as exc:
            raise RuntimeError(
                f"TMA kernels need NVIDIA's cuda-bindings to encode tensor maps with the driver ({exc}); "
                "install cuconv[cuda13] (or `pip install cuda-bindings`), or use another algorithm/config") from None
        (err,) = driver.cuInit(0)
        if int(err) != 0:
            raise RuntimeError(f"cuInit failed ({err}): cannot encode tensor maps")
        _DRIVER = driver
    return _DRIVER


def _driver_version(drv) -> int:
    global _DRIVER_VERSION
    if _DRIVER_VERSION is None:
        err, version = drv.cuDriverGetVersion()
        _DRIVER_VERSION = int(version) if int(err) == 0 else 0
    return _DRIVER_VERSION


class DriverMapCache:
    """Driver-encoded maps by (device, spec, address), as NumPy void scalars ready to pass by
    value; the oldest dropped past ``limit``."""

    def __init__(self, limit: int = 1024):
        self._maps: dict = {}
        self._limit = limit

    def get(self, device, spec: TensorMapSpec, address: int):
        key = (device, spec, address)
        v = self._maps.get(key)
        if v is None:
            v = np.void(spec.driver_encode(address))
            with _lock:
                if len(self._maps) >= self._limit:
                    self._maps.pop(next(iter(self._maps)))
                self._maps[key] = v
        return v


__all__ = ["TensorMapSpec", "DriverMapCache", "DATA_TYPES", "SWIZZLE_128B"]
