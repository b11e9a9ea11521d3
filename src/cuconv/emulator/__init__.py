"""cuconv.emulator: run the project's CUDA C kernels, unchanged, on the CPU.

The API mirrors CuPy's ``RawModule`` / ``RawKernel``; arrays are NumPy arrays
(playing device memory, written in place) and scalars NumPy scalars of the
parameter's exact type::

    from cuconv import emulator
    mod = emulator.RawModule(code=src, options=("-DTILE=16",), name_expressions=["gemm<64, 64, 8>"],
                             sanitize="address,undefined", order="random", seed=1)
    mod.get_function("gemm<64, 64, 8>")((8, 8), (16, 16), (a, b, c, np.int32(n)), shared_mem=0)

See README.md next to this file for how it works and what it checks.
"""

from ._module import Function, RawKernel, RawModule
from ._options import ORDERS
from ._tensor_map import TensorMap
from ._tensor_map import encode_im2col as encode_tensor_map_im2col
from ._tensor_map import encode_tiled as encode_tensor_map_tiled
from .errors import (BarrierDivergence, CompileError, Deadlock, EmulatorError, KernelFault, KernelTimeout,
                     LaunchError)

__all__ = ["RawModule", "RawKernel", "Function", "EmulatorError", "CompileError", "LaunchError", "KernelFault",
           "BarrierDivergence", "Deadlock", "KernelTimeout", "ORDERS",
           "TensorMap", "encode_tensor_map_tiled", "encode_tensor_map_im2col"]
