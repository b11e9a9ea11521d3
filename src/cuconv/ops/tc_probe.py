"""The probes of the tensor-core portability layer (kernels/tc_probe.cu): plain ``extern "C"``
kernels that run one primitive (mma, ldmatrix, cvt.rna.tf32, cp.async, a pipeline) on data the
caller lays out, so tests/test_tc_layouts.py can check each primitive's exact semantics. bf16 and
tf32 mma fall back to warp shuffles below sm_80.

Each probe is registered twice: as written, and built with ``-DCUCONV_PORTABLE_TC`` (the
warp-shuffle mma, shuffle ldmatrix and synchronous cp.async that the GPU uses below sm_80), so
the two implementations of every layout can be compared.
"""
from __future__ import annotations

from ..registry import KernelEntry, register_kernel

FILE = "tc_probe.cu"
PORTABLE = ("-DCUCONV_PORTABLE_TC",)
PROBES = {"tc_probe_mma": 32, "tc_probe_ldmatrix": 32, "tc_probe_cvt_tf32": 256, "tc_probe_cp_async": 32,
          "tc_probe_pipeline": 64}
ENTRIES = {(name, portable): register_kernel(KernelEntry(
    FILE, name, name + ("_portable" if portable else ""), block_threads=threads,
    options=PORTABLE if portable else ()))
    for name, threads in PROBES.items() for portable in (False, True)}


def launch(be, name: str, grid, block, args, shared_mem: int = 0, portable: bool = False) -> None:
    """Launch probe ``name`` (its portable build with ``portable=True``) on backend ``be``; no
    checks: the tests lay out the data."""
    be.launch(ENTRIES[(name, portable)], grid, block, args, shared_mem)
