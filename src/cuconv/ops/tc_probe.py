"""The probes of the tensor-core portability layer (kernels/tc_probe.cu): plain ``extern "C"``
kernels that run one primitive (mma, ldmatrix, cvt.rna.tf32, cp.async, a pipeline) on data the
caller lays out, so tests/test_tc_layouts.py can check each primitive's exact semantics. bf16 and
tf32 mma fall back to warp shuffles below sm_80.
"""
from __future__ import annotations

from ..registry import KernelEntry, register_kernel

FILE = "tc_probe.cu"
PROBES = {"tc_probe_mma": 32, "tc_probe_ldmatrix": 32, "tc_probe_cvt_tf32": 256, "tc_probe_cp_async": 32,
          "tc_probe_pipeline": 64}
ENTRIES = {name: register_kernel(KernelEntry(FILE, name, name, block_threads=threads))
           for name, threads in PROBES.items()}


def launch(be, name: str, grid, block, args, shared_mem: int = 0) -> None:
    """Launch probe ``name`` on backend ``be`` (no checks: the tests lay out the data)."""
    be.launch(ENTRIES[name], grid, block, args, shared_mem)
