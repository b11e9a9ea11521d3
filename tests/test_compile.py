"""The compile matrix: every kernel an op can launch, for every target arch, without a GPU.

Asserts for each registered KernelEntry and arch: NVRTC compiles it, ptxas reports
0 spill bytes, and the registers/shared memory let the design's ``min_blocks_per_sm``
blocks of ``block_threads`` threads be resident (so the launch configuration is legal
and the promised occupancy holds). The planted-error tests prove these checks can fail.
"""
from __future__ import annotations

import pytest

from cuconv.compile import (ALL_ARCHS, KernelEntry, NVRTCError, compile_entry, load_source,
                            nvrtc_compile, parse_ptxas_log, registered_kernels)


def check_entry(entry: KernelEntry, arch: str) -> list[str]:
    """Problems with one kernel on one arch ([] when it is fine)."""
    try:
        res = compile_entry(entry, arch)
    except NVRTCError as exc:
        return [f"{entry.label} on {arch}: compile error: {str(exc)[:2000]}"]
    problems = []
    if res.spill_bytes:
        problems.append(f"{entry.label} on {arch}: {res.spill_store_bytes} bytes spill stores, "
                        f"{res.spill_load_bytes} bytes spill loads")
    occ = res.occupancy()
    if occ["blocks_per_sm"] < entry.min_blocks(arch):
        problems.append(f"{entry.label} on {arch}: {occ['blocks_per_sm']} blocks/SM fit "
                        f"({res.registers} registers, {res.static_smem_bytes + res.dynamic_smem} B smem, "
                        f"{entry.block_threads} threads; limited by {occ['limited_by']}), "
                        f"the design needs {entry.min_blocks(arch)}")
    return problems


def test_registry_is_not_empty():
    entries = registered_kernels()
    assert entries, "no kernel is registered: importing cuconv.ops should register every config"
    labels = [e.label for e in entries]
    assert len(labels) == len(set(labels))


def test_every_kernel_file_is_in_the_registry():
    from cuconv.compile import kernel_files
    used = {e.file for e in registered_kernels()}
    cu_files = {f for f in kernel_files() if f.endswith(".cu")}
    assert cu_files <= used, f"kernel files no op registers (never compiled or tested): {sorted(cu_files - used)}"


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_compile_matrix(arch):
    entries = [e for e in registered_kernels() if arch in e.archs]
    problems = [p for e in entries for p in check_entry(e, arch)]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the checks can fail
_PLANTED = r'''
template <int N>
__global__ void spills(const float* __restrict__ in, float* __restrict__ out, int idx) {
    float acc[N];                       // dynamically indexed: forced to local memory
    #pragma unroll 1
    for (int i = 0; i < N; ++i) acc[i] = in[i * 7 + threadIdx.x];
    out[threadIdx.x] = acc[idx % N];
}
extern "C" __global__ void broken(float* out) { out[threadIdx.x] = undeclared_name; }
'''


def test_planted_compile_error_is_reported(tmp_path, monkeypatch):
    with pytest.raises(NVRTCError, match="undeclared_name"):
        nvrtc_compile(_PLANTED, ["broken"], "sm_90")


def test_planted_spill_and_register_pressure_are_caught(monkeypatch):
    """A kernel with local-memory traffic or too many registers for its promised occupancy fails."""
    import cuconv.compile as cc

    src = _PLANTED.replace('extern "C" __global__ void broken(float* out) { out[threadIdx.x] = undeclared_name; }', "")
    monkeypatch.setattr(cc, "load_source", lambda file: src)
    entry = KernelEntry("planted.cu", "spills<64>", "planted_spills_64", block_threads=1024, min_blocks_per_sm=3)
    cc._compile_group_cached.cache_clear()
    try:
        res = compile_entry(entry, "sm_90")
        # The dynamically indexed array lives in local memory: a stack frame the matrix reports.
        assert res.stack_frame_bytes >= 64 * 4
        problems = check_entry(entry, "sm_90")
        # 3 blocks of 1024 threads never fit in 2048 threads per SM.
        assert any("blocks/SM" in p for p in problems), problems
    finally:
        cc._compile_group_cached.cache_clear()


def test_parse_ptxas_log_reads_spills():
    log = """ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
"""
    info = parse_ptxas_log(log)["_Z3fooPf"]
    assert info == dict(registers=255, spill_store=8, spill_load=12, stack=16, smem=4096, cmem=360)


def test_headers_are_inlined():
    src = load_source("common.cuh")
    assert "cc_epilogue" in src
    for f in {e.file for e in registered_kernels()}:
        text = load_source(f)
        assert '#include "common.cuh"' not in text, f"{f}: the project header was not inlined"
