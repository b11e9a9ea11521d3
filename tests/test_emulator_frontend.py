"""The emulator's front end as a user meets it (issue 19): the compile cache sees
every file a compile reads, messages speak of the user's file and line, CuPy's
arguments are honoured or refused with a reason, Python scalars convert per the
kernel's parameter types, kernels have CuPy's attributes and pickle, and the
README's table of what is emulated stays true."""

from __future__ import annotations

import os
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest

from cuconv import emulator as emu

ROOT = Path(__file__).resolve().parents[1]
EMU_README = ROOT / "src" / "cuconv" / "emulator" / "README.md"

HEADER_KERNEL = '#include "scale.h"\nextern "C" __global__ void k(float* x) { x[threadIdx.x] = SCALE * threadIdx.x; }\n'


def _run_scale(mod) -> np.ndarray:
    x = np.full(4, np.nan, np.float32)
    mod.get_function("k")(1, 4, (x,))
    return x


def _touch_later(path: Path, text: str) -> None:
    """Rewrite a file so that its size or mtime surely changes."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


# --- the compile cache ----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _own_cache_for_cache_tests(request, tmp_path, monkeypatch):
    """The cache tests build into a cache of their own (no leftovers in ~/.cache)."""
    if "include" in request.node.name or "header" in request.node.name:
        monkeypatch.setenv("CUCONV_CACHE_DIR", str(tmp_path / "cache"))


def test_user_header_through_include_path_is_tracked(tmp_path):
    inc = tmp_path / "inc"
    inc.mkdir()
    header = inc / "scale.h"
    header.write_text("#define SCALE 2.0f\n")
    opts = ("-I", str(inc))
    np.testing.assert_array_equal(_run_scale(emu.RawModule(code=HEADER_KERNEL, options=opts)), [0, 2, 4, 6])
    _touch_later(header, "#define SCALE 3.0f\n")  # same source, same options: only the header changed
    np.testing.assert_array_equal(_run_scale(emu.RawModule(code=HEADER_KERNEL, options=opts)), [0, 3, 6, 9])
    _touch_later(header, "#define SCALE 2.0f\n")  # back again: the first build is reused
    t0 = time.monotonic()
    np.testing.assert_array_equal(_run_scale(emu.RawModule(code=HEADER_KERNEL, options=opts)), [0, 2, 4, 6])
    assert time.monotonic() - t0 < 5


def test_header_relative_to_the_source_file_is_found_and_tracked(tmp_path):
    (tmp_path / "lib").mkdir()
    helper = tmp_path / "lib" / "helper.cuh"
    helper.write_text("__device__ int offset() { return 10; }\n")
    src = tmp_path / "k.cu"
    src.write_text('#include "lib/helper.cuh"\n'
                   'extern "C" __global__ void k(int* x) { x[threadIdx.x] = offset() + threadIdx.x; }\n')
    out = np.zeros(3, np.int32)
    emu.RawModule(path=str(src)).get_function("k")(1, 3, (out,))
    np.testing.assert_array_equal(out, [10, 11, 12])
    _touch_later(helper, "__device__ int offset() { return 20; }\n")
    emu.RawModule(path=str(src)).get_function("k")(1, 3, (out,))
    np.testing.assert_array_equal(out, [20, 21, 22])


def test_failed_build_is_retried_once_the_missing_header_exists(tmp_path):
    inc = tmp_path / "inc"
    inc.mkdir()
    opts = (f"-I{inc}",)
    with pytest.raises(emu.CompileError, match=r"kernel.cu:1:\d+: fatal error: scale.h: No such file"):
        emu.RawModule(code=HEADER_KERNEL, options=opts).compile()
    t0 = time.monotonic()
    with pytest.raises(emu.CompileError, match="scale.h"):  # unchanged: the cached failure, at once
        emu.RawModule(code=HEADER_KERNEL, options=opts).compile()
    assert time.monotonic() - t0 < 2
    (inc / "scale.h").write_text("#define SCALE 5.0f\n")
    np.testing.assert_array_equal(_run_scale(emu.RawModule(code=HEADER_KERNEL, options=opts)), [0, 5, 10, 15])


def test_failed_build_is_retried_once_a_header_it_read_changes(tmp_path):
    header = tmp_path / "scale.h"
    header.write_text("#define SCALE undeclared_name\n")
    opts = ("--include-path", str(tmp_path))
    with pytest.raises(emu.CompileError, match="undeclared_name"):
        emu.RawModule(code=HEADER_KERNEL, options=opts).compile()
    _touch_later(header, "#define SCALE 7.0f\n")
    np.testing.assert_array_equal(_run_scale(emu.RawModule(code=HEADER_KERNEL, options=opts)), [0, 7, 14, 21])


# --- messages in the user's terms -------------------------------------------------------------------

def _compile_error(code: str, **kw) -> str:
    with pytest.raises(emu.CompileError) as ei:
        emu.RawModule(code=code, source_name="user.cu", **kw).compile()
    return str(ei.value)


def test_unclosed_brace_is_reported_at_the_users_line():
    msg = _compile_error('extern "C" __global__ void k(float* x) {\n    if (x[0] > 0) {\n        x[0] = 1;\n'
                         '    \n}\n')
    first = msg.splitlines()[1]
    assert re.match(r"user.cu:1:40: error: this '\{' is never closed", first), msg
    assert "exports.h" not in first and "kernel-table" not in first


def test_syntax_errors_name_the_users_file_first():
    msg = _compile_error('extern "C" __global__ void k(float* x) {\n    x[0] = 1\n}\n')
    assert re.search(r"^user.cu:2:\d+: error: expected ';'", msg, re.M), msg
    msg = _compile_error('extern "C" __global__ void k(float* x) {\n    x[0] = 1;\n}\n}\n')
    assert re.search(r"^user.cu:4:1: error: expected declaration before '\}'", msg, re.M), msg
    assert "cuconv_emu" not in msg.splitlines()[1]


def test_dynamic_parallelism_and_dc_are_refused():
    msg = _compile_error('__global__ void child(float* x) { x[0] = 1; }\n'
                         'extern "C" __global__ void parent(float* x) {\n    child<<<1, 1>>>(x);\n}\n')
    assert "user.cu:3: dynamic parallelism is not emulated" in msg and "child<<<1, 1>>>(x);" in msg
    for opt in ("-dc", "--device-c", "-lcudadevrt"):
        with pytest.raises(ValueError, match="dynamic parallelism is not emulated"):
            emu.RawModule(code="", options=(opt,))
    emu.RawModule(code="", options=("-rdc=true",))  # whole-program either way: accepted


def test_inline_ptx_is_named():
    msg = _compile_error('extern "C" __global__ void k(unsigned* x) {\n    unsigned l;\n'
                         '    asm("mov.u32 %0, %%laneid;" : "=r"(l));\n    x[0] = l;\n}\n')
    assert "user.cu:3: inline PTX (asm) is not emulated" in msg, msg


def test_get_function_lists_the_kernels():
    mod = emu.RawModule(code='template <int N> __global__ void tiled(float* x) {}\n'
                             'extern "C" __global__ void alpha(float* x) {}\n'
                             'extern "C" __global__ void beta(int n) {}\n', source_name="m.cu")
    with pytest.raises(emu.CompileError, match=r"kernel 'no_such_kernel' is not in the source m.cu.*its kernels: "
                                               r"alpha, beta; template kernels \(ask for an instantiation.*\): tiled"):
        mod.get_function("no_such_kernel")
    assert mod.get_function("tiled<4>").name == "tiled<4>"  # an instantiation on demand
    with pytest.raises(emu.CompileError, match=r"name expression 'nope<3>' does not name a __global__ function"):
        emu.RawModule(code='extern "C" __global__ void a() {}\n', name_expressions=["nope<3>"]).compile()


def test_not_emulated_headers_say_so():
    msg = _compile_error('#include <cuda/pipeline>\nextern "C" __global__ void k() {}\n')
    assert "cuda::pipeline (<cuda/pipeline>) is not emulated" in msg
    msg = _compile_error('extern "C" __global__ void k(float* x, cudaTextureObject_t t) {\n'
                         '    x[0] = tex2D<float>(t, 0.5f, 0.5f);\n}\n')
    assert re.search(r"user.cu:2:\d+: error: .*tex2D\(\) is not emulated \(texture objects", msg), msg


@pytest.mark.parametrize("call,what", [("curand_init(1, 0, 0, &s);", r"curand_init\(\) of this generator"),
                                       ("curand_poisson(&p, 2.0);", r"curand_poisson\(\)")])
def test_curand_unsupported_generators_name_the_function(call, what):
    msg = _compile_error('#include <curand_kernel.h>\nextern "C" __global__ void k(unsigned* o) {\n'
                         '    curandStateMRG32k3a_t s; curandState p;\n'
                         f'    {call}\n    o[0] = 1;\n}}\n')
    assert re.search(r"user.cu:4:\d+: error: .*" + what + ".* is not emulated", msg), msg


def test_cuda_std_and_stand_in_headers():
    code = ('#include <cuda/std/cstdint>\n#include <cuda/std/limits>\n#include <cuda/std/type_traits>\n'
            '#include <cuda/std/utility>\n#include <cuda/std/array>\n#include <cuda/std/complex>\n'
            '#include <cuda/atomic>\n#include <cuda_profiler_api.h>\n#include <cublas_v2.h>\n'
            '#include <cooperative_groups/reduce.h>\n'
            'extern "C" __global__ void k(long long* o) {\n'
            '    cuda::std::array<cuda::std::int32_t, 3> a{1, 2, 3};\n'
            '    o[0] = cuda::std::numeric_limits<cuda::std::int16_t>::max();\n'
            '    o[1] = cuda::std::is_same<cuda::std::uint8_t, unsigned char>::value + a[2];\n'
            '    o[2] = (long long)cuda::std::abs(cuda::std::complex<float>(3.0f, 4.0f));\n'
            '    o[3] = CUBLAS_OP_T + 10 * (cudaProfilerStart() == cudaSuccess);\n'
            '    cuda::atomic<int, cuda::thread_scope_block> c{5}; o[4] = c.fetch_add(2) + c.load();\n}\n')
    out = np.zeros(5, np.int64)
    emu.RawKernel(code, "k")(1, 1, (out,))
    np.testing.assert_array_equal(out, [32767, 4, 5, 11, 12])


def test_cluster_of_one_block():
    code = ('#include <cooperative_groups.h>\nnamespace cg = cooperative_groups;\n'
            'extern "C" __global__ void k(int* o, int rank) {\n    cg::cluster_group c = cg::this_cluster();\n'
            '    c.sync();\n    o[threadIdx.x] = c.num_blocks() * 100 + c.block_rank() * 10 + (c.map_shared_rank(o, '
            'rank) == o);\n}\n')
    out = np.zeros(4, np.int32)
    k = emu.RawKernel(code, "k", source_name="cl.cu")
    k(1, 4, (out, 0))
    np.testing.assert_array_equal(out, [101] * 4)
    with pytest.raises(emu.KernelFault, match=r"map_shared_rank\(addr, 1\) at cl.cu:6: the cluster has one block"):
        k(1, 4, (out, 1))


def test_lanes_disagreeing_on_a_mask_are_reported():
    code = ('extern "C" __global__ void k(int* o) {\n    int v = threadIdx.x;\n'
            '    if (threadIdx.x < 16) v = __shfl_sync(0xffffffff, v, 0);\n'
            '    else v = __shfl_sync(0xffff0000, v, 16);\n    o[threadIdx.x] = v;\n}\n')
    # The upper half meets on its own mask and leaves; the lower half waits for it in vain.
    with pytest.raises(emu.BarrierDivergence, match=r"lane \d+ of warp 0 exited while lanes 0x0000ffff wait for "
                                                    r"it at __shfl_sync\(\) at kernel.cu:3 \(mask 0xffffffff\)"):
        emu.RawKernel(code, "k")(1, 32, (np.zeros(32, np.int32),))


# --- CuPy's arguments and parity ----------------------------------------------------------------------

SCALARS = ('extern "C" __global__ void k(double* o, int i, unsigned char u, float f, double d, bool b, '
           'long long ll) {\n    o[0] = i; o[1] = u; o[2] = f; o[3] = d; o[4] = b; o[5] = (double)ll;\n}\n')


def test_python_scalars_convert_per_parameter_type():
    k = emu.RawKernel(SCALARS, "k")
    out = np.zeros(6)
    k(1, 1, (out, -7, 200, 0.1, 0.1, True, 2**40))
    np.testing.assert_array_equal(out, [-7, 200, np.float32(0.1), 0.1, 1, 2**40])  # 0.1 rounded to float
    k(1, 1, (out, 3, 0, 5, 2, False, -1))  # a Python int for float/double parameters converts exactly
    np.testing.assert_array_equal(out, [3, 0, 5, 2, 0, -1])
    with pytest.raises(ValueError, match=r"argument 2 \(unsigned char\).*256 does not fit in uint8"):
        k(1, 1, (out, 1, 256, 0.0, 0.0, True, 0))
    with pytest.raises(ValueError, match=r"argument 1 \(int\).*2147483648 does not fit in int32"):
        k(1, 1, (out, 2**31, 0, 0.0, 0.0, True, 0))
    with pytest.raises(TypeError, match=r"argument 1 \(int\).*Python float \(1.5\) is ambiguous"):
        k(1, 1, (out, 1.5, 0, 0.0, 0.0, True, 0))
    with pytest.raises(ValueError, match=r"argument 3 \(float\).*1e\+300 overflows float32"):
        k(1, 1, (out, 1, 0, 1e300, 0.0, True, 0))
    with pytest.raises(TypeError, match=r"argument 3 \(float\).*numpy.float32.*numpy.float64"):
        k(1, 1, (out, 1, 0, np.float64(1), 0.0, True, 0))  # a NumPy scalar must be the exact type


def test_cupy_arguments_honoured_or_refused():
    code = 'extern "C" __global__ void k(float* x) { x[0] = 1; }\n'
    assert emu.RawModule(code=code, translate_cucomplex=True).translate_cucomplex
    assert emu.RawKernel(code, "k", enable_cooperative_groups=True).enable_cooperative_groups
    emu.RawModule(code=code, backend="nvcc")
    with pytest.raises(ValueError, match="backend must be 'nvrtc' or 'nvcc'"):
        emu.RawModule(code=code, backend="hiprtc")
    with pytest.raises(ValueError, match="jitify=True"):
        emu.RawModule(code=code, jitify=True)
    with pytest.raises(TypeError, match="enable_cooperative_groups must be a bool"):
        emu.RawModule(code=code, enable_cooperative_groups="yes")
    with pytest.raises(ValueError, match="not compiled GPU code"):
        emu.RawModule(path="kernels.cubin")


def test_kernel_attributes():
    code = '__constant__ float c_taps[10];\n__device__ int counter;\n' \
           'extern "C" __global__ void k(float* x) { x[0] = c_taps[0] + counter; }\n'
    k = emu.RawKernel(code, "k")
    attrs = k.attributes
    assert attrs["max_threads_per_block"] == 1024 and attrs["const_size_bytes"] == 44
    assert attrs["num_regs"] == -1 and attrs["local_size_bytes"] == -1 and attrs["binary_version"] == -1
    assert k.max_dynamic_shared_size_bytes == 232448 and k.num_regs == -1
    k.max_dynamic_shared_size_bytes = 100 * 1024
    k.preferred_shared_memory_carveout = 50
    assert k.attributes["max_dynamic_shared_size_bytes"] == 102400
    assert k.attributes["preferred_shared_memory_carveout"] == 50
    with pytest.raises(ValueError, match="max_dynamic_shared_size_bytes"):
        k.max_dynamic_shared_size_bytes = 300000
    with pytest.raises(AttributeError, match="read-only"):
        k.function.num_regs = 3


def test_pickling_modules_and_kernels():
    code = ('template <typename T> __global__ void add(T* x, T v) { x[threadIdx.x] += v; }\n'
            'extern "C" __global__ void twice(float* x) { x[threadIdx.x] *= 2; }\n')
    mod = emu.RawModule(code=code, name_expressions=["add<float>"], order="reverse", seed=5)
    mod.get_function("twice")
    mod2 = pickle.loads(pickle.dumps(mod))
    assert (mod2.code, mod2.name_expressions, mod2.order, mod2.seed) == (code, ("add<float>",), "reverse", 5)
    x = np.arange(4, dtype=np.float32)
    mod2.get_function("add<float>")(1, 4, (x, 1.5))
    np.testing.assert_array_equal(x, [1.5, 2.5, 3.5, 4.5])
    k = pickle.loads(pickle.dumps(emu.RawKernel(code, "twice")))
    k(1, 4, (x,))
    np.testing.assert_array_equal(x, [3, 5, 7, 9])
    fn = pickle.loads(pickle.dumps(mod.get_function("twice")))
    fn(1, 4, (x,))
    np.testing.assert_array_equal(x, [6, 10, 14, 18])


# --- the README's table ----------------------------------------------------------------------------------

def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def test_readme_table_of_what_is_emulated_names_passing_tests():
    """Every row of the table names the tests that check it, and each exists; so a row
    cannot claim more than the suite checks (and those tests run with the suite)."""
    rows = _table_rows(EMU_README.read_text(), "### What runs and what does not")
    assert len(rows) >= 15
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").glob("test_emulator*.py"))
    defined = set(re.findall(r"^def (test_\w+)", tests_text, re.M))
    for feature, status, checked in rows:
        assert status in ("emulated", "not emulated", "partly"), (feature, status)
        names = re.findall(r"`(test_\w+)`", checked)
        assert names, f"row {feature!r} names no test"
        missing = [n for n in names if n not in defined]
        assert not missing, f"row {feature!r} names tests that do not exist: {missing}"
    # The top-level README links this README instead of copying it: no row of the table there.
    top = (ROOT / "README.md").read_text()
    assert "(src/cuconv/emulator/README.md)" in top
    assert not any(feature in top for feature, _, _ in rows)


def test_cg_multi_grid_sync_is_refused():
    code = ('#include <cooperative_groups.h>\nextern "C" __global__ void k(int* o) {\n'
            '    auto mg = cooperative_groups::this_multi_grid();\n    o[threadIdx.x] = mg.is_valid();\n'
            '    mg.sync();\n}\n')
    with pytest.raises(emu.KernelFault, match=r"multi_grid_group::sync\(\) at mg.cu:5: multi-device "
                                              r"synchronisation is not emulated"):
        emu.RawKernel(code, "k", source_name="mg.cu")(1, 4, (np.zeros(4, np.int32),), enable_cooperative_groups=True)


def test_cupy_complex_header_and_complex_scalars():
    """CuPy's RawKernel sources include <cupy/complex.cuh> (complex<T>); NumPy complex
    scalars pass by value."""
    code = ('#include <cupy/complex.cuh>\n'
            'extern "C" __global__ void k(const complex<float>* x, complex<float>* y, complex<float> a, int n) {\n'
            '    int i = blockIdx.x * blockDim.x + threadIdx.x;\n'
            '    if (i < n) y[i] = a * x[i] + conj(x[i]) * abs(x[i]);\n}\n')
    rng = np.random.default_rng(70)
    n = 50
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    y = np.full(n, np.nan, np.complex64)
    emu.RawKernel(code, "k")(1, 64, (x, y, np.complex64(2 - 1j), n))
    ref = (2 - 1j) * x.astype(np.complex128) + np.conj(x) * np.abs(x)
    assert np.abs(y - ref).max() < 1e-5 * np.abs(ref).max()
    msg = _compile_error("#include <thrust/complex.h>\n")
    assert "user.cu:1:10: error: thrust/complex.h: No such file" in msg and "does not provide" in msg
