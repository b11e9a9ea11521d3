"""The compile matrix: every kernel an op can launch, for every target arch, without a GPU.

Asserts for each registered KernelEntry and arch: NVRTC compiles it, ptxas reports
0 spill bytes, and the registers/shared memory let the design's ``min_blocks_per_sm``
blocks of ``block_threads`` threads be resident (so the launch configuration is legal
and the promised occupancy holds). The planted-error tests prove these checks can fail.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from cuconv.compile import (ALL_ARCHS, ARCHS, BASE_OPTIONS, KernelEntry, NVRTCError, compile_entry,
                            cuda_include_options, load_source, nvrtc_compile, parse_ptxas_log,
                            registered_kernels)


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


# --------------------------------------------------------------------------- one compile path
# The GPU loads the cubin of the same NVRTC build (file, options, arch) that the compile matrix,
# `cuconv kernels`, the static analysis and the bench's register columns read their figures from.
def _fake_gpu(monkeypatch):
    """cupy.cuda.function.Module and cupy.cuda.Device replaced: what the GPU backend would load."""
    import contextlib

    cupy = pytest.importorskip("cupy")
    loaded = []

    class FakeFunction(tuple):
        ptr = 0

    class FakeModule:
        def load(self, cubin):
            loaded.append(cubin)
            self.cubin = cubin

        def get_function(self, name):
            return FakeFunction(("function", self.cubin, name))
    monkeypatch.setattr(cupy.cuda.function, "Module", FakeModule)
    monkeypatch.setattr(cupy.cuda, "Device", lambda i: contextlib.nullcontext())
    monkeypatch.setattr(cupy.cuda.driver, "funcSetAttribute", lambda ptr, attr, value: loaded.append((attr, value)))
    return loaded


@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_loads_the_build_the_figures_come_from(arch, monkeypatch):
    """On a device of every compile-matrix arch, each kernel the GPU backend loads is the cubin,
    function and option list of the build its figures come from (`compile_entry` of the target
    `device_target` names: sm_90a for the wgmma kernels on sm_90), built with BASE_OPTIONS."""
    import cuconv.compile as cc

    import cupy

    loaded = _fake_gpu(monkeypatch)
    device, cap = 876543, int(arch[3:])
    try:
        for entry in registered_kernels():
            if not cc.runs_on(entry, cap):
                continue
            del loaded[:]
            _, cubin, name = cc.cupy_function(entry, device, cap)
            # Dynamic shared memory above the default is opted in once, to what the entry declares.
            opted = [x for x in loaded if isinstance(x, tuple)]
            assert opted == ([(cupy.cuda.driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, entry.dynamic_smem)]
                             if entry.dynamic_smem > cc.DEFAULT_MAX_SMEM_PER_BLOCK else []), entry.label
            target = cc.device_target(entry, arch)
            res = compile_entry(entry, target)
            assert (cubin, name) == (res.cubin, res.lowered_name), entry.label
            _, build = cc.cupy_module(entry.file, entry.options, entry.cuda_headers, device, cap)
            assert build is cc.build_module(entry.file, entry.options, entry.cuda_headers, target)
            assert build.nvrtc_options == [f"--gpu-architecture={target}", "-Xptxas=-v", *BASE_OPTIONS,
                                           *entry.options, *(cuda_include_options() if entry.cuda_headers else ())]
    finally:
        for key in [k for k in cc._MODULES if k[0] == device]:
            del cc._MODULES[key]


def test_gpu_build_and_figures_are_one_nvrtc_compile(monkeypatch, tmp_path):
    """With every cache empty, loading a file's module on the GPU and reading its kernels' figures
    is one NVRTC compile, with exactly BASE_OPTIONS (no -ftz=true after them)."""
    import cuconv.compile as cc
    from cupy.cuda import nvrtc

    loaded = _fake_gpu(monkeypatch)
    calls = []
    real = nvrtc.compileProgram
    monkeypatch.setattr(nvrtc, "compileProgram", lambda prog, opts: (calls.append(list(opts)), real(prog, opts))[1])
    monkeypatch.setenv("CUCONV_NO_DISK_CACHE", "1")
    cc._compile_group_cached.cache_clear()
    device = 765432
    try:
        entries = [e for e in registered_kernels() if e.file == "im2col.cu"]
        for e in entries:
            cc.cupy_function(e, device, 80)
        figures = [compile_entry(e, "sm_80") for e in entries]
    finally:
        for key in [k for k in cc._MODULES if k[0] == device]:
            del cc._MODULES[key]
        cc._compile_group_cached.cache_clear()
    assert calls == [["--gpu-architecture=sm_80", "-Xptxas=-v", *BASE_OPTIONS]]
    cubins = [x for x in loaded if isinstance(x, bytes)]
    assert cubins == [figures[0].cubin] and all(f.cubin == cubins[0] for f in figures)


def test_cupy_rawmodule_would_flush_subnormals():
    """Why the GPU modules are not compiled by cupy.RawModule(code=...): CuPy appends -ftz=true
    after the caller's options, and NVRTC takes the last -ftz it is given."""
    import inspect

    import cupy.cuda.compiler
    assert "options += ('-ftz=true',)" in inspect.getsource(cupy.cuda.compiler._compile_with_cache_cuda)
    src = 'extern "C" __global__ void k(float* a, const float* b) { a[threadIdx.x] = a[threadIdx.x] * b[0] + b[1]; }'
    ours = nvrtc_compile(src, ["k"], "sm_80", (), output="ptx")[0]
    cupys = nvrtc_compile(src, ["k"], "sm_80", ("-ftz=true",), output="ptx")[0]
    ours, cupys = (p.decode() if isinstance(p, bytes) else p for p in (ours, cupys))
    assert "fma.rn.f32" in ours and ".ftz" not in ours
    assert "fma.rn.ftz.f32" in cupys


# IEEE fp32 in every module: no flush-to-zero, no approximate division or square root. The .ftz
# PTX instructions allowed are the cores of libdevice's accurate functions: ex2.approx.ftz.f32 in
# expf (the SiLU epilogue), applied to a range-reduced argument whose input and result are never
# subnormal, with plain fma.rn.f32 / mul.f32 scaling around it (with -ftz=true those become .ftz
# too), and rcp.approx.ftz.f64, the seed of a refined double reciprocal (none today).
_NOT_IEEE = re.compile(r"(?<![\w.])(?!ex2\.approx\.ftz\.f32\b|rcp\.approx\.ftz\.f64\b)[a-z0-9]+(?:\.[a-z0-9]+)*\.ftz\b[.\w]*"
                       r"|(?<![\w.])(?:div\.approx|div\.full|sqrt\.approx|rcp\.approx)\.(?:ftz\.)?f32\b")


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_module_keeps_ieee_fp32(arch):
    """Every module of the compile matrix (what the GPU loads for that target) is built with
    -ftz=false -prec-div=true -prec-sqrt=true -fmad=true, and its PTX shows it."""
    import cuconv.compile as cc

    groups = sorted({(e.file, e.options, e.cuda_headers) for e in registered_kernels() if arch in e.archs})
    assert groups
    for file, options, headers in groups:
        build = cc.build_module(file, options, headers, arch)
        opts = build.nvrtc_options
        for flag in ("-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true"):
            name = flag.split("=")[0]
            assert [o for o in opts if o.split("=")[0] == name] == [flag], (file, arch, opts)
        assert not any("fast_math" in o or "fast-math" in o for o in opts)
        bad = sorted(set(_NOT_IEEE.findall(build.ptx)))
        assert not bad, f"{file} for {arch}: non-IEEE fp32 instructions in the PTX: {bad}"


def test_ieee_check_catches_a_flushing_build():
    """The PTX check above fails on a module built the way CuPy's RawModule would build it."""
    src = load_source("gemm.cu")
    entries = [e for e in registered_kernels() if e.file == "gemm.cu" and "sm_80" in e.archs][:2]
    ptx = nvrtc_compile(src, [e.expression for e in entries], "sm_80", ("-ftz=true",), "gemm.cu", output="ptx")[0]
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert "fma.rn.ftz.f32" in _NOT_IEEE.findall(ptx)
    assert "div.approx.f32" in _NOT_IEEE.findall("\tdiv.approx.f32 \t%f3, %f2, %f1;")


# --------------------------------------------------------------------------- subnormals agree
# x = m * 2^-149 (|m| <= 200) and integer weights in [-3, 3]: every product and every partial sum
# of a 3x3x3 window is an exact fp32 subnormal, so an algorithm that keeps subnormals gives the
# float64 reference exactly, and one that flushes them gives zeros.
def _subnormal_problem(rng, C=3, K=5, groups=1):
    m = rng.integers(1, 201, size=(2, C, 7, 9)) * rng.choice([-1, 1], size=(2, C, 7, 9))
    x = (m * 2.0 ** -149).astype(np.float32)
    w = rng.integers(-3, 4, size=(K, C // groups, 3, 3)).astype(np.float32)
    w[..., 1, 1] = np.where(w[..., 1, 1] == 0, 1, w[..., 1, 1])
    return x, w


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm", "im2col_gemm", "depthwise"])
def test_subnormal_inputs_are_not_flushed(be, rng, algo):
    import cuconv
    from cuconv.reference import conv2d_ref
    from cuconv.testing import poison, to_numpy

    groups = 3 if algo == "depthwise" else 1
    x, w = _subnormal_problem(rng, C=3, K=6 if groups == 3 else 5, groups=groups)
    assert 0 < np.abs(x).max() < np.finfo(np.float32).tiny
    ref = conv2d_ref(x, w, padding=1, groups=groups)
    out = be.xp.empty(ref.shape, np.float32)
    poison(out)
    cuconv.conv2d(be.xp.asarray(x), be.xp.asarray(w), padding=1, groups=groups, algo=algo, out=out)
    got = to_numpy(out)
    assert np.count_nonzero(ref) > ref.size // 2 and np.abs(ref).max() < np.finfo(np.float32).tiny
    np.testing.assert_array_equal(got, ref.astype(np.float32))


def test_emulator_fp32_arithmetic_keeps_subnormals():
    """The CPU emulator's fp32 multiply, divide, square root, FMA and add on subnormals are IEEE
    (no flush, no denormals-are-zero): NumPy's float32 results, bit for bit."""
    from cuconv import emulator as emu

    code = r'''
    extern "C" __global__ void ops(const float* a, const float* b, float* out, int n) {
        int i = threadIdx.x;
        if (i >= n) return;
        out[5 * i + 0] = a[i] * b[i];
        out[5 * i + 1] = a[i] / b[i];
        out[5 * i + 2] = sqrtf(a[i]);
        out[5 * i + 3] = fmaf(a[i], b[i], a[i]);
        out[5 * i + 4] = a[i] + a[i];
    }'''
    rng = np.random.default_rng(1234)
    n = 64
    a = (rng.integers(1, 2 ** 22, n) * 2.0 ** -149).astype(np.float32)        # subnormals
    b = rng.uniform(0.25, 4.0, n).astype(np.float32)
    out = np.full(5 * n, np.nan, np.float32)
    fn = emu.RawModule(code=code, options=BASE_OPTIONS).get_function("ops")
    fn((1,), (n,), (a, b, out, np.int32(n)))
    with np.errstate(under="ignore"):
        want = np.stack([a * b, a / b, np.sqrt(a), (a.astype(np.float64) * b + a).astype(np.float32), a + a], 1)
    assert np.count_nonzero(np.abs(want) < np.finfo(np.float32).tiny) > n
    np.testing.assert_array_equal(out.reshape(n, 5), want)


# --------------------------------------------------------------------------- the bench's figures
def test_bench_figures_of_an_sm90_device_come_from_the_sm90a_build():
    """Issue 23 row 4: on sm_90 devices `auto`'s fp16 path is implicit_gemm_wgmma, whose kernels
    are built for sm_90a only; the bench's registers / spills / issue-ceiling columns are those of
    the sm_90a build an sm_90 device loads, not empty ("not built for sm_90")."""
    import cuconv
    from cuconv.analysis import bench_columns
    from cuconv.bench.record import kernel_resources, recorded_kernels

    x = np.empty((8, 64, 28, 28), np.float16)
    w = np.empty((64, 64, 3, 3), np.float16)
    kernels = recorded_kernels(lambda: cuconv.conv2d(x, w, padding=1), cc=90, sms=132)
    wgmma = [k for k in kernels if k["entry"] is not None and k["entry"].archs == ("sm_90a",)]
    assert wgmma, [k["label"] for k in kernels]          # auto took the wgmma kernel
    regs, spills, note = kernel_resources(kernels, "sm_90")
    assert note is None and regs > 0 and spills == 0
    for k in wgmma:
        res = compile_entry(k["entry"], "sm_90a")
        assert (k["registers"], k["spill_bytes"]) == (res.registers, res.spill_bytes) and k["registers"] > 0
        cols = bench_columns(k["entry"], "sm_90a")
        assert (k["issue_ceiling"], k["math_share"]) == (cols["issue_ceiling"], cols["math_share"])
    # A device that does not run them says so rather than filling a column from another build.
    _, _, note = kernel_resources([dict(label=k["label"], entry=k["entry"]) for k in wgmma], "sm_100")
    assert note and "not built for sm_100" in note
