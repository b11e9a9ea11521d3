"""The probes of the wgmma / mbarrier / async-proxy layer (kernels/wgmma_probe.cu): plain
``extern "C"`` kernels that run one primitive (one m64nNk16 ``wgmma.mma_async`` through
descriptors the caller computes, an mbarrier over two phases, one TMA load through a tensor map
the caller encodes) on data the caller lays out, so
tests/test_wgmma_probe.py can check each against the PTX ISA's definitions bit for bit, and
the emulator's ordering checks against planted bugs. Built for sm_90a only (wgmma exists nowhere
else); on the emulator they run anywhere.
"""
from __future__ import annotations

from ..registry import KernelEntry, register_kernel

FILE = "wgmma_probe.cu"
ARCHS = ("sm_90a",)
PROBES = {"wgmma_probe_mma": 128, "wgmma_probe_mbarrier": 128, "wgmma_probe_tma": 128}
ENTRIES = {name: register_kernel(KernelEntry(FILE, name, name, block_threads=threads, archs=ARCHS))
           for name, threads in PROBES.items()}


def launch(be, name: str, grid, block, args, shared_mem: int = 0) -> None:
    """Launch probe ``name`` on backend ``be``; no checks: the tests lay out the data."""
    be.launch(ENTRIES[name], grid, block, args, shared_mem)
