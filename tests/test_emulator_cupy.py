"""The emulator against CuPy's RawModule/RawKernel (issue 26): translate_cucomplex as
CuPy does it, CuPy's complex<T> (<cupy/complex.cuh>) with Thrust's formulas, the
headers CuPy prepends with the flag, and the features CuPy's tests/cupy_tests/
core_tests/test_raw.py and its user guide's RawKernel examples use, restated as our
own kernels (src/cuconv/emulator/README.md has the table of that file's tests).
Every output is compared with NumPy, and with the GPU's formulas bit for bit where
the GPU's result is an exact function of its inputs; under every thread order and
under ASan+UBSan."""

from __future__ import annotations

import functools
import io
import pickle
import re

import numpy as np
import pytest
from test_emulator_foreign import MODE_IDS, MODES, PROGRAMS, SANITIZE, _complex_reference, _fma, _pack, poison

from cuconv import emulator as emu
from cuconv.emulator import _source

PLAIN_AND_SANITIZED = [("forward", ""), ("forward", SANITIZE)]


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mode(request):
    return request.param


@pytest.fixture(params=PLAIN_AND_SANITIZED, ids=["plain", "sanitized"])
def sanitize(request):
    return request.param[1]


@functools.lru_cache(maxsize=None)
def _translated(sanitize: str, order: str) -> emu.RawModule:
    return emu.RawModule(path=str(PROGRAMS / "cucomplex_cupy.cu"), translate_cucomplex=True, sanitize=sanitize,
                         order=order, seed=5).compile()


def _gpu_hypotf(x, y):
    """CUDA's hypotf (libdevice's PTX: IEEE mul, fma.rn and sqrt.rn), restated in NumPy."""
    f32 = np.float32
    a, b = np.abs(np.asarray(x, f32)).view(np.uint32), np.abs(np.asarray(y, f32)).view(np.uint32)
    v, w = np.maximum(a, b), np.minimum(a, b)
    e = v & np.uint32(0xFE000000)
    scale = (np.uint32(0x7E800000) - e).view(f32)
    unscale = (e | np.uint32(0x00800000)).view(f32)
    vf, wf = v.view(f32), w.view(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        ws, vs = wf * scale, vf * scale
        r = unscale * np.sqrt(_fma(vs, vs, ws * ws, f32))
    return np.where(wf == np.inf, f32(np.inf), np.where(wf != 0, r, vf)).astype(f32)


def _ulps(a, b) -> int:
    """Largest distance in units in the last place between two float (or complex) arrays."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "c":
        a, b = np.stack([a.real, a.imag]), np.stack([b.real, b.imag])
    itype = np.int32 if a.dtype == np.float32 else np.int64
    return int(np.abs(a.view(itype).astype(np.int64) - b.view(itype).astype(np.int64)).max())


def _inputs(rng, n, dtype):
    real = np.float32 if dtype == np.complex64 else np.float64
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    b = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n) + 1j * rng.standard_normal(n)).astype(dtype)
    c = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    big = np.finfo(real).max * 0.75
    a[:3] = [0, big + 1j * big, 1e-30 + 2e-30j]  # abs's zero, overflowing and tiny cases
    return a, b, c


# --- translate_cucomplex=True --------------------------------------------------------------------

def _check_translated(out, mag, cast, a, b, c, real):
    with np.errstate(over="ignore", invalid="ignore"):
        mul, div, _, _ = _complex_reference(a, b, real, True)
        three = real(-3) * a.imag
        ref = np.stack([a + b, a - b, _pack(*mul, real), _pack(*div, real), np.conj(a), _pack(*mul, real) + c,
                        _pack(a.real, three, real)], 1)
    # Thrust's formulas with the GPU's FMAs, bit for bit (cuCfma: a product, then a sum).
    np.testing.assert_array_equal(out.view(real), ref.view(real))
    with np.errstate(over="ignore"):
        if real == np.float32:  # cuCabsf is CUDA's hypotf: the GPU's bits
            np.testing.assert_array_equal(mag.view(np.uint32), _gpu_hypotf(a.real, a.imag).view(np.uint32))
            np.testing.assert_array_equal(cast, a.astype(np.complex128))
        else:  # cuCabs is the host's hypot (the GPU's rounds through an approximate rsqrt)
            np.testing.assert_array_equal(mag, np.hypot(a.real, a.imag))
            np.testing.assert_array_equal(cast, a.astype(np.complex64))
    assert mag[0] == 0 and np.isinf(mag[1]) and mag[2] > 0  # |0.75 max (1 + i)| overflows, as on the GPU
    # NumPy's answers: exact where NumPy rounds the same way; where its quotient (Smith's)
    # and |z| formulas round differently from Thrust's, within a few units of rounding.
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(out[3:, [0, 1, 2, 4]], np.stack([a + b, a - b, a * b, np.conj(a)], 1)[3:])
        q = a[3:] / b[3:]
    assert (np.abs(out[3:, 3] - q) <= 4 * np.finfo(real).eps * np.abs(q)).all()
    assert _ulps(mag[2:], np.abs(a[2:])) <= 1
    np.testing.assert_allclose(out[3:, 5], a[3:] * b[3:] + c[3:], rtol=8 * np.finfo(real).eps)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["float", "double"])
def test_translate_cucomplex_gives_cupy_results(mode, dtype):
    """CuPy's complex-number RawModule source style compiles unchanged with
    translate_cucomplex=True and computes what CuPy computes on the GPU."""
    order, sanitize = mode
    rng = np.random.default_rng(80 if dtype == np.complex64 else 81)
    n = 203
    a, b, c = _inputs(rng, n, dtype)
    real = np.float32 if dtype == np.complex64 else np.float64
    out = np.full((n, 7), np.nan, dtype)
    mag = poison(n, real)
    cast = np.full(n, np.nan, np.complex128 if dtype == np.complex64 else np.complex64)
    kernel = "cops" if dtype == np.complex64 else "zops"
    _translated(sanitize, order).get_function(kernel)(-(-n // 64), 64, (a, b, c, out, mag, cast, n))
    _check_translated(out, mag, cast, a, b, c, real)


def test_translate_cucomplex_scalars_overloads_and_unparenthesised_macros(mode):
    order, sanitize = mode
    mod = _translated(sanitize, order)
    rng = np.random.default_rng(82)
    n = 70
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    z = (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    # A complex scalar by value: a NumPy scalar, a Python complex, a NumPy array of size one.
    for s in (np.complex64(2 - 3j), 0.5 + 1j, np.array([-1.25 + 4j], np.complex64)):
        out = np.full(n, np.nan, np.complex64)
        mod.get_function("shift")(2, 64, (a, s, out, n))  # cuCadd (double's name) on complex<float>
        np.testing.assert_array_equal(out, a + np.complex64(np.asarray(s).item()))
    out = np.full(n, np.nan, np.complex128)
    mod.get_function("shift_double")(2, 64, (z, 2 + 3j, out, n))
    np.testing.assert_array_equal(out, z - (2 + 3j))
    b = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    out = np.full(n, np.nan, np.complex64)
    mod.get_function("unparenthesised")(2, 64, (a, b, out, n))
    mul = _complex_reference(a, b, np.float32, True)[0]
    np.testing.assert_array_equal(out, _pack(*mul, np.float32) + b)  # cuCmulf(a, b + b) is a * b + b


def test_without_translate_cucomplex_cucomplex_h_is_cudas():
    """Without the flag the source meets CUDA's own cuComplex.h: CuPy's style does not
    compile (cuCadd takes cuDoubleComplex), and where a source compiles both ways the
    flag switches cuCabsf and cuCfmaf between CUDA's formulas and CuPy's."""
    with pytest.raises(emu.CompileError, match=r"(?s)cucomplex_cupy.cu:\d+:\d+: error: could not convert .*"
                                               r"cuDoubleComplex.*cuCadd\(a\[i\], s\)"):
        emu.RawModule(path=str(PROGRAMS / "cucomplex_cupy.cu")).compile()
    code = ('#include <cuComplex.h>\nextern "C" __global__ void k(const cuFloatComplex* a, const cuFloatComplex* b, '
            'cuFloatComplex* fma, float* mag, int n) {\n    int i = threadIdx.x;\n    if (i >= n) return;\n'
            '    fma[i] = cuCfmaf(a[i], b[i], a[i]);\n    mag[i] = cuCabsf(b[i]);\n}\n')
    rng = np.random.default_rng(83)
    n = 64
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    b = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    mul, _, cuda_mag, fma = _complex_reference(b, b, np.float32, True)
    xr, xi, yr, yi = a.real, a.imag, b.real, b.imag
    cuda_fma = _pack(fma(-xi, yi, fma(xr, yr, xr)), fma(xi, yr, fma(xr, yi, xi)), np.float32)
    thrust_fma = _pack(*_complex_reference(a, b, np.float32, True)[0], np.float32) + a
    for flag, ref_fma, ref_mag in ((False, cuda_fma, cuda_mag), (True, thrust_fma, _gpu_hypotf(yr, yi))):
        out, mag = np.full(n, np.nan, np.complex64), poison(n, np.float32)
        emu.RawKernel(code, "k", translate_cucomplex=flag)(1, n, (a, b, out, mag, n))
        np.testing.assert_array_equal(out.view(np.uint32), ref_fma.view(np.uint32))
        np.testing.assert_array_equal(mag.view(np.uint32), ref_mag.view(np.uint32))
    assert not np.array_equal(cuda_fma, thrust_fma) and not np.array_equal(cuda_mag, _gpu_hypotf(yr, yi))


def test_translate_cucomplex_rewrites_what_cupy_rewrites():
    src = ('#include <cuComplex.h>\n  #  include < cuComplex.h >  // twice\n#include "cuComplex.h"\n'
           '// #include <cuComplex.h>\n#include <cuComplex.hpp>\nint x;')
    out = _source.translate_cucomplex(src).splitlines()
    assert out[:2] == ["#include <cupy/cuComplex_bridge.h>  // translate_cucomplex"] * 2
    assert out[2:] == src.splitlines()[2:]  # quotes, comments and other names are left alone, as in CuPy
    # CuPy's headers go before the source and the lines stay the user's.
    msg = ""
    try:
        emu.RawModule(code='#include <cuComplex.h>\n\nextern "C" __global__ void k(cuComplex* z) {\n'
                           '    z[0] = cuCaddf(z[0]);\n}\n', translate_cucomplex=True, source_name="t.cu").compile()
    except emu.CompileError as e:
        msg = str(e)
    assert re.search(r"t.cu:4:\d+: error: macro \"cuCaddf\" requires 2 arguments", msg), msg


# --- CuPy's complex<T> (<cupy/complex.cuh>) ------------------------------------------------------

CX_SOURCE = r'''
#include <cupy/complex.cuh>

template <typename T>
__global__ void cx_ops(const complex<T>* a, const complex<T>* b, const T* s, complex<T>* out, T* re, int* flags,
                       int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    complex<T> x = a[i], y = b[i];
    T r = s[i];
    complex<T>* o = out + 12 * i;
    o[0] = x * r;
    o[1] = r * x;
    o[2] = x / r;
    o[3] = r / x;
    o[4] = x + r;
    o[5] = r - x;
    o[6] = -x;
    complex<T> z = x;
    z += y;
    z *= y;
    z -= r;
    z /= y;
    o[7] = z;
    o[8] = conj(x) + thrust::polar(abs(y), arg(y));
    o[9] = thrust::proj(x);
    o[10] = min(x, y);
    o[11] = max(x, y);
    re[3 * i + 0] = norm(x);
    re[3 * i + 1] = abs(x);
    re[3 * i + 2] = real(y) + imag(y);
    flags[i] = (x < y) | (x <= y) << 1 | (x > y) << 2 | (x >= y) << 3 | (x == y) << 4 | (x != y) << 5 |
               (x == r) << 6 | isnan(x) << 7 | isinf(x) << 8 | isfinite(x) << 9;
}

template <typename T>
__global__ void cx_functions(const complex<T>* a, const complex<T>* b, const T* s, complex<T>* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    complex<T> x = a[i], y = b[i];
    T r = s[i];
    complex<T>* o = out + 24 * i;
    o[0] = exp(x); o[1] = log(x); o[2] = log10(x); o[3] = sqrt(x);
    o[4] = sin(x); o[5] = cos(x); o[6] = tan(x); o[7] = sinh(x); o[8] = cosh(x); o[9] = tanh(x);
    o[10] = asin(x); o[11] = acos(x); o[12] = atan(x); o[13] = asinh(x); o[14] = acosh(x); o[15] = atanh(x);
    o[16] = pow(x, y); o[17] = pow(x, r); o[18] = pow(r, y); o[19] = pow(x, 2.0);
    o[20] = log1p(x); o[21] = expm1(x); o[22] = log2(x); o[23] = rint(x * T(10));
}

extern "C" __global__ void layout(int* out) {
    out[0] = sizeof(complex<float>); out[1] = alignof(complex<float>);
    out[2] = sizeof(thrust::complex<double>); out[3] = alignof(thrust::complex<double>);
}
'''
CX_NAMES = ("cx_ops<float>", "cx_ops<double>", "cx_functions<float>", "cx_functions<double>")


@functools.lru_cache(maxsize=None)
def _cx_module(sanitize: str) -> emu.RawModule:
    return emu.RawModule(code=CX_SOURCE, name_expressions=CX_NAMES, sanitize=sanitize, source_name="cx.cu").compile()


def _cx_inputs(rng, n, real):
    dtype = np.complex64 if real == np.float32 else np.complex128
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    b = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    s = (rng.random(n) + 0.5).astype(real)
    b[:4] = a[:4]  # equal values
    b[4:8] = a[4:8].real + 1j * rng.standard_normal(4)  # equal real parts: the imaginary parts decide
    a[8] = s[8]  # a real value equal to the scalar
    a[9] = 3e-21 - 1e-20j if real == np.float32 else 3e-160 - 1e-155j  # below sqrt(min normal): norm rescales
    a[10], a[11] = np.inf - 2j, complex(np.nan, 1)
    return a, b, s


def _lexicographic_less(x, y):
    return (x.real < y.real) | ((x.real == y.real) & (x.imag < y.imag))


@pytest.mark.parametrize("real", [np.float32, np.float64], ids=["float", "double"])
def test_cupy_complex_arithmetic_is_thrusts(sanitize, real):
    rng = np.random.default_rng(84)
    n = 130
    a, b, s = _cx_inputs(rng, n, real)
    dtype = a.dtype
    out, re, flags = np.full((n, 12), np.nan, dtype), poison((n, 3), real), poison(n, np.int32)
    name = "cx_ops<float>" if real == np.float32 else "cx_ops<double>"
    _cx_module(sanitize).get_function(name)(3, 64, (a, b, s, out, re, flags, n))
    x, y, r = a, b, s
    with np.errstate(all="ignore"):
        rdiv = _complex_reference(r.astype(dtype), x, real, True)[1]
        z = x + y
        z = _pack(*_complex_reference(z, y, real, True)[0], real)
        z = _pack(z.real - r, z.imag, real)
        z = _pack(*_complex_reference(z, y, real, True)[1], real)
        less, greater = _lexicographic_less(x, y), _lexicographic_less(y, x)
        lo = np.where(np.isnan(x), y, np.where(np.isnan(y), x, np.where(greater, y, x)))
        hi = np.where(np.isnan(x), y, np.where(np.isnan(y), x, np.where(less, y, x)))
        exact = np.stack([_pack(x.real * r, x.imag * r, real), _pack(x.real * r, x.imag * r, real),
                          _pack(x.real / r, x.imag / r, real), _pack(*rdiv, real), _pack(x.real + r, x.imag, real),
                          _pack(r - x.real, -x.imag, real), -x, z], 1)
        tiny = (np.abs(x.real) < np.sqrt(np.finfo(real).tiny)) & (np.abs(x.imag) < np.sqrt(np.finfo(real).tiny))
        k = np.where(tiny, real(4), real(1))
        norm = _fma(x.real * k, x.real * k, (x.imag * k) * (x.imag * k), real) / (k * k)
        mag = _gpu_hypotf(x.real, x.imag) if real == np.float32 else np.hypot(x.real, x.imag)
    np.testing.assert_array_equal(out[:, :8], exact)
    np.testing.assert_array_equal(out[:, 10], lo)
    np.testing.assert_array_equal(out[:, 11], hi)
    np.testing.assert_array_equal(re[:, 0], norm)
    assert tiny[9] and re[9, 0] > 0  # the rescaled tiny value keeps its digits
    np.testing.assert_array_equal(re[:, 1], mag)
    np.testing.assert_array_equal(re[:, 2], y.real + y.imag)
    eq = (x == y)
    want = (less & ~eq) | (less | eq) << 1 | (greater & ~eq) << 2 | (greater | eq) << 3 | eq << 4 | ~eq << 5
    want |= ((x.real == r) & (x.imag == 0)) << 6 | np.isnan(x) << 7 | np.isinf(x) << 8 | np.isfinite(x) << 9
    np.testing.assert_array_equal(flags, want.astype(np.int32))
    assert (flags[:4] >> 4 & 1).all() and flags[8] >> 6 & 1 and flags[10] >> 8 & 1 and flags[11] >> 7 & 1
    # polar(abs, arg) and proj: through the host's sin/cos/atan2, so within a few ulps
    finite = np.isfinite(x) & np.isfinite(y)
    np.testing.assert_allclose(out[finite, 8], np.conj(x[finite]) + y[finite], rtol=8 * np.finfo(real).eps,
                               atol=8 * np.finfo(real).eps)
    np.testing.assert_array_equal(out[finite, 9], x[finite])
    assert out[10, 9] == np.inf and np.signbit(out[10, 9].imag)  # proj(inf - 2i) = inf - 0i


@pytest.mark.parametrize("real", [np.float32, np.float64], ids=["float", "double"])
def test_cupy_complex_functions_match_numpy(sanitize, real):
    rng = np.random.default_rng(85)
    n = 100
    dtype = np.complex64 if real == np.float32 else np.complex128
    a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    b = (rng.standard_normal(n) * 0.5 + 1j * rng.standard_normal(n) * 0.5).astype(dtype)
    s = (rng.random(n) + 0.5).astype(real)
    out = np.full((n, 24), np.nan, dtype)
    name = "cx_functions<float>" if real == np.float32 else "cx_functions<double>"
    _cx_module(sanitize).get_function(name)(2, 64, (a, b, s, out, n))
    x, y, r = a.astype(np.complex128), b.astype(np.complex128), s.astype(np.float64)
    ref = np.stack([np.exp(x), np.log(x), np.log10(x), np.sqrt(x), np.sin(x), np.cos(x), np.tan(x), np.sinh(x),
                    np.cosh(x), np.tanh(x), np.arcsin(x), np.arccos(x), np.arctan(x), np.arcsinh(x), np.arccosh(x),
                    np.arctanh(x), x ** y, x ** r, r ** y, x ** 2, np.log1p(x), np.expm1(x), np.log2(x),
                    np.rint(a * real(10)).astype(np.complex128)], 1)
    tol = 4e-6 if real == np.float32 else 4e-14
    err = np.abs(out - ref) / np.maximum(np.abs(ref), 1)
    assert err.max() < tol, (np.unravel_index(err.argmax(), err.shape), err.max())
    np.testing.assert_array_equal(out[:, 23], np.rint(a * real(10)))


def test_cupy_complex_layout_and_names():
    out = np.zeros(4, np.int32)
    _cx_module("").get_function("layout")(1, 1, (out,))
    np.testing.assert_array_equal(out, [8, 8, 16, 16])  # two T, aligned to their size, as CuPy's
    for code in ("complex<float> z = polar(1.0f, 2.0f);",  # CuPy makes polar global only through thrust::
                 "complex<float> z = complex<float>(1, 2) + complex<double>(1, 2);"):  # no mixed precisions
        with pytest.raises(emu.CompileError):
            emu.RawKernel('#include <cupy/complex.cuh>\nextern "C" __global__ void k(complex<float>* o) {\n    '
                          + code + '\n    o[0] = z;\n}\n', "k").compile()


# --- the headers CuPy prepends with the flag -------------------------------------------------------

CUPY_HEADERS_SOURCE = r'''
extern "C" __global__ void k(int* q, float* fq, long long* total, float* fmax, double* dmax, int* misc, int n) {
    CUPY_FOR(i, n) {
        q[i] = _floor_divide(q[i], (int)(2 - i % 5));
        fq[i] = _floor_divide(fq[i], -1.5f);
        atomicAdd(total, (long long)(i % 5) - 7);
        atomicMax(fmax, fq[i]);
        atomicMin(fmax + 1, fq[i]);
        atomicMax(dmax, 1.0 + i * 1e-12);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        misc[0] = cupy::type_traits::is_same<cupy::type_traits::conditional<true, int, float>::type, int>::value;
        misc[1] = CUDART_INF_F == INFINITY && isinf(complex<float>(CUDART_INF_F, 0));
        misc[2] = _floor_divide(7u, 0u) + _floor_divide(-7, 0);
    }
}
'''


def test_translate_cucomplex_prepends_cupys_headers(sanitize):
    rng = np.random.default_rng(86)
    n = 300
    q = rng.integers(-50, 50, n).astype(np.int32)
    fq = rng.standard_normal(n).astype(np.float32) * 10
    total, fmax, dmax = np.zeros(1, np.int64), np.array([-np.inf, np.inf], np.float32), np.zeros(1)
    misc = poison(3, np.int32)
    q0, fq0 = q.copy(), fq.copy()
    k = emu.RawKernel(CUPY_HEADERS_SOURCE, "k", translate_cucomplex=True, sanitize=sanitize)
    k(2, 64, (q, fq, total, fmax, dmax, misc, n))
    d = 2 - np.arange(n) % 5
    np.testing.assert_array_equal(q, np.where(d == 0, 0, q0 // np.where(d == 0, 1, d)))  # Python's //, 0 for /0
    np.testing.assert_array_equal(fq, np.floor(fq0 / np.float32(-1.5)))
    assert total[0] == int(sum(i % 5 - 7 for i in range(n)))
    assert fmax[0] == fq.max() and fmax[1] == fq.min()
    assert dmax[0] == 1.0  # CuPy's double atomicMax goes through fmaxf: 1 + 299e-12 rounds to 1.0f
    np.testing.assert_array_equal(misc, [1, 1, 0])
    with pytest.raises(emu.CompileError, match="CArray .*is not emulated; a RawKernel receives arrays as pointers"):
        emu.RawKernel('extern "C" __global__ void k(float* x) { CArray<float, 1> a; }', "k",
                      translate_cucomplex=True).compile()
    with pytest.raises(emu.CompileError, match=r"cupy/bfloat16.cuh is a CuPy header the emulator does not provide"):
        emu.RawKernel('#include <cupy/bfloat16.cuh>\nextern "C" __global__ void k(float* x) {}', "k").compile()


FLOAT16_SOURCE = r"""
#include <cupy/float16.cuh>
#include <cupy/atomics.cuh>
#include <cupy/cuda_workaround.h>
extern "C" __global__ void f16(const float* x, const float* y, unsigned short* out, int* flags, float16* total,
                               int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float16 a = x[i], b(y[i]);
    float16 c = a;
    c += b;
    c *= 2;
    c -= 1.5;
    c /= b;
    half h;
    h = 3;  // an integer assigned to a half, as cuda_fp16.h allows
    out[5 * i + 0] = c.to_bits();
    out[5 * i + 1] = copysign(a, b).to_bits();
    out[5 * i + 2] = nextafter(a, b).to_bits();
    out[5 * i + 3] = max(a, b).to_bits();
    out[5 * i + 4] = __half_as_ushort(h);
    flags[i] = a.isnan() | isinf(a) << 1 | isfinite(a) << 2 | signbit(a) << 3 | iszero(a) << 4;
    atomicAdd(total, float16::from_bits(0x3c00));  // 1.0
}
"""


def test_cupy_float16_header(sanitize):
    """<cupy/float16.cuh>, which many of CuPy's own RawModule sources include: float16
    computes in float and rounds to half on assignment (from a double, once)."""
    rng = np.random.default_rng(91)
    n = 150
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    y = (rng.standard_normal(n) * 4).astype(np.float32)
    x[:4] = [0.0, -0.0, np.inf, 1e-7]
    y[:4] = [-2.0, 3.0, 1.0, 5.0]
    out, flags, total = np.zeros((n, 5), np.uint16), poison(n, np.int32), np.zeros(1, np.float16)
    emu.RawKernel(FLOAT16_SOURCE, "f16", sanitize=sanitize)(3, 64, (x, y, out, flags, total, n))
    h, f32 = np.float16, np.float32
    a, b = x.astype(h), y.astype(h)
    with np.errstate(all="ignore"):
        c = (a.astype(f32) + b.astype(f32)).astype(h)
        c = (c.astype(f32) * f32(2)).astype(h)
        c = (c.astype(np.float64) - 1.5).astype(h)  # a double operand: rounded once, from the double
        c = (c.astype(f32) / b.astype(f32)).astype(h)
    np.testing.assert_array_equal(out[:, 0], c.view(np.uint16))
    np.testing.assert_array_equal(out[:, 1], np.copysign(a, b).view(np.uint16))
    step = np.nextafter(a[3:], b[3:])
    np.testing.assert_array_equal(out[3:, 2], np.where(np.isinf(a[3:]), h(np.nan), step).view(np.uint16))
    assert out[0, 2] == 0x8001 and out[1, 2] == 0x0001 and out[2, 2] == 0x7E00  # +-0 step; NaN from inf, as CuPy
    np.testing.assert_array_equal(out[:, 3], np.fmax(a, b).view(np.uint16))
    assert (out[:, 4] == h(3).view(np.uint16)).all()
    want = np.isnan(a) | np.isinf(a) << 1 | np.isfinite(a) << 2 | np.signbit(a) << 3 | (a == 0) << 4
    np.testing.assert_array_equal(flags, want.astype(np.int32))
    assert total[0] == n  # atomicAdd on float16


# --- the other features of CuPy's RawModule tests ------------------------------------------------------

TWO_KERNELS = r'''
#ifndef PRECISION
#define PRECISION 2
#endif
#if PRECISION == 2
#define TYPE double
#elif PRECISION == 1
#define TYPE float
#else
#error this precision is not supported
#endif
extern "C" {
__global__ void add(const TYPE* x1, const TYPE* x2, TYPE* y, unsigned int n) {
    unsigned int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) y[i] = x1[i] + x2[i];
}
__global__ void mul(const TYPE* x1, const TYPE* x2, TYPE* y, unsigned int n) {
    unsigned int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) y[i] = x1[i] * x2[i];
}
__constant__ float scale[64];
__global__ void scaled(float* x, void* raw, int n) {
    int i = threadIdx.x + blockIdx.x * blockDim.x;
    if (i < n) {
        x[i] *= scale[i];
        ((double*)raw)[i] = 2.0 * ((double*)raw)[i] - 1.0;
    }
}
}
'''


def test_rawmodule_extern_c_block_macros_constant_memory_and_raw_pointers(sanitize):
    rng = np.random.default_rng(87)
    for precision, dtype in (("1", np.float32), ("2", np.float64)):
        mod = emu.RawModule(code=TWO_KERNELS, options=(f"-DPRECISION={precision}",), sanitize=sanitize)
        x1, x2 = rng.standard_normal((7, 9)).astype(dtype), rng.standard_normal((7, 9)).astype(dtype)
        for name, op in (("add", np.add), ("mul", np.multiply)):
            y = np.full((7, 9), np.nan, dtype)
            mod.get_function(name)((7,), (9,), (x1, x2, y, 63))  # a Python int for `unsigned int`
            np.testing.assert_array_equal(y, op(x1, x2))
    mod = emu.RawModule(code=TWO_KERNELS, sanitize=sanitize)
    scale = mod.get_global("scale")  # a __constant__ array inside extern "C" { }
    scale[...] = rng.standard_normal(64).astype(np.float32)
    x, raw = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50)
    x0, raw0 = x.copy(), raw.copy()
    mod.get_function("scaled")((1,), (64,), (x, raw, np.int32(50)))  # a float64 array for void*
    np.testing.assert_array_equal(x, x0 * scale[:50])
    np.testing.assert_array_equal(raw, 2.0 * raw0 - 1.0)
    with pytest.raises(emu.CompileError, match="#error this precision is not supported"):
        emu.RawModule(code=TWO_KERNELS, options=("-DPRECISION=3",)).get_function("add")
    with pytest.raises(emu.CompileError, match=r"'nope' is not in the source.*its kernels: add, mul, scaled"):
        mod.get_function("nope")


NAME_EXPRESSIONS = r'''
#include <cupy/complex.cuh>
namespace mylib { enum class Tag { A, B }; }
template <typename Tv, typename Tp> __global__ void two_types(int* o) { o[0] = 100 * sizeof(Tv) + sizeof(Tp); }
template <typename T> __global__ void pointer(T p, int* o) { o[0] = sizeof(*p) + 1000 * (p != nullptr); }
template <typename T, int N> __global__ void value(int* o) { o[0] = N * 100 + sizeof(T); }
template <mylib::Tag t> __global__ void tagged(int* o) { o[0] = 7 + (int)t; }
template <typename T> __global__ void square(T* x, int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= x[i];
}
'''
SPELLINGS = [("two_types<float, double>", 408), ("two_types<float,double>", 408), ("pointer<float *>", 4),
             ("pointer<double*>", 8), ("value<float, (int)3>", 304), ("value<double, 5>", 508),
             ("tagged<(mylib::Tag)1>", 8), ("tagged<mylib::Tag::A>", 7), ("two_types<size_t, char>", 801)]


def test_name_expressions_in_every_spelling_cupy_tests(sanitize):
    names = [n for n, _ in SPELLINGS] + ["square<int>", "square<complex<double>>", "square<thrust::complex<float>>"]
    mod = emu.RawModule(code=NAME_EXPRESSIONS, name_expressions=names, options=("-std=c++17",), sanitize=sanitize)
    for name, want in SPELLINGS:
        out = poison(1, np.int32)
        args = (None, out) if name.startswith("pointer") else (out,)
        mod.get_function(name)(1, 1, args)
        assert out[0] == want, name
    rng = np.random.default_rng(88)
    for name, x in (("square<int>", rng.integers(-99, 99, 10).astype(np.int32)),
                    ("square<complex<double>>", rng.standard_normal(10) + 1j * rng.standard_normal(10)),
                    ("square<thrust::complex<float>>",
                     (rng.standard_normal(10) + 1j * rng.standard_normal(10)).astype(np.complex64))):
        x0 = x.copy()
        mod.get_function(name)((1,), (10,), (x, 10))
        if x.dtype.kind == "c":
            real = x.real.dtype.type
            np.testing.assert_array_equal(x, _pack(*_complex_reference(x0, x0, real, True)[0], real))
        else:
            np.testing.assert_array_equal(x, x0 * x0)


def test_compile_log_stream_has_the_warnings():
    code = ('extern "C" __global__ void k(const float* x, float* y) {\n    int unused;\n'
            '    y[threadIdx.x] = x[threadIdx.x] + 1;\n}\n')
    for obj in (emu.RawKernel(code, "k", source_name="w.cu"), emu.RawModule(code=code, source_name="w.cu")):
        log = io.StringIO()
        assert obj.compile(log_stream=log) is obj
        assert re.search(r"w.cu:2:9: warning: unused variable 'unused'", log.getvalue()), log.getvalue()
        log = io.StringIO()
        obj.compile(log_stream=log)  # from the cache: the same messages
        assert "warning" in log.getvalue()
    log = io.StringIO()
    emu.RawModule(code=code.replace("    int unused;\n", "")).compile(log_stream=log)
    assert log.getvalue() == ""


def test_structs_and_size_one_arrays_by_value(sanitize):
    """The user guide's custom types: a float3 and a 5x5 float struct passed as NumPy
    arrays of size one (a structured dtype), as CuPy passes them."""
    code = ('struct float5x5 { float v[5][5]; };\n'
            'extern "C" __global__ void k(float3 v, float5x5 m, float* o) {\n'
            '    o[threadIdx.x] = m.v[threadIdx.x / 5][threadIdx.x % 5];\n'
            '    if (threadIdx.x < 3) o[25 + threadIdx.x] = threadIdx.x == 0 ? v.x : threadIdx.x == 1 ? v.y : v.z;\n'
            '}\n')
    rng = np.random.default_rng(89)
    float3 = np.dtype({"names": ["x", "y", "z"], "formats": [np.float32] * 3})
    v = rng.random(3).astype(np.float32).view(float3)  # shape (1,)
    v["x"] = 42.0
    m = rng.random(25).astype(np.float32).view(np.dtype({"names": ["d"], "formats": [(np.float32, (5, 5))]}))
    o = poison(28, np.float32)
    emu.RawKernel(code, "k", sanitize=sanitize)(1, 25, (v, m, o))
    np.testing.assert_array_equal(o, np.concatenate([m.view(np.float32), v.view(np.float32)]))
    assert o[25] == 42
    with pytest.raises(TypeError, match=r"argument 0 \(float3\).*size one.*not an array of shape \(2,\)"):
        emu.RawKernel(code, "k")(1, 25, (np.zeros(2, float3), m, o))


def test_user_guide_examples_restated(sanitize):
    """The user guide's complex<float> kernel (a float scalar times a complex array plus
    another: the GPU compiler fuses each part into one FMA, and so does g++ in a plain
    build; under ASan/UBSan it forms no FMA, within a rounding of it) and its template
    kernel compiled with -std=c++11 (which compiles as C++17)."""
    code = ('#include <cupy/complex.cuh>\n'
            'extern "C" __global__ void axpy(const complex<float>* x, const complex<float>* y, complex<float>* out,\n'
            '                                float a) {\n'
            '    int i = blockDim.x * blockIdx.x + threadIdx.x;\n    out[i] = y[i] + a * x[i];\n}\n'
            'template <typename T> __global__ void triple(T* v, int n) {\n'
            '    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n    if (i < n) v[i] = v[i] * 3;\n}\n')
    mod = emu.RawModule(code=code, options=("-std=c++11",), name_expressions=["triple<float>", "triple<double>"],
                        sanitize=sanitize)
    rng = np.random.default_rng(90)
    x = (rng.standard_normal(96) + 1j * rng.standard_normal(96)).astype(np.complex64)
    y = (rng.standard_normal(96) + 1j * rng.standard_normal(96)).astype(np.complex64)
    out = np.full(96, np.nan, np.complex64)
    a = np.float32(1.7)
    mod.get_function("axpy")((3,), (32,), (x, y, out, a))
    f32 = np.float32
    fused = _pack(_fma(x.real, a, y.real, f32), _fma(x.imag, a, y.imag, f32), f32)
    if sanitize:
        np.testing.assert_allclose(out, fused, rtol=2 * np.finfo(f32).eps, atol=1e-6)
    else:
        np.testing.assert_array_equal(out, fused)
    for name, dtype in (("triple<float>", np.float32), ("triple<double>", np.float64)):
        v = rng.standard_normal(10).astype(dtype)
        v0 = v.copy()
        mod.get_function(name)((1,), (10,), (v, 10))
        np.testing.assert_array_equal(v, v0 * 3)


def test_cupy_call_and_constructor_arguments():
    code = 'extern "C" __global__ void k(float* x) { x[threadIdx.x] += 1; }\n'
    x = np.zeros(4, np.float32)

    class Stream:  # what a launch reads of a cupy.cuda.Stream
        ptr = 0

    k = emu.RawKernel(code, "k", (), "nvcc")  # backend is RawKernel's fourth argument, as in CuPy
    k(1, 4, (x,), stream=Stream())
    k((1,), (4,), (x,), shared_mem=0, stream=None)
    with pytest.raises(TypeError, match="stream must be None or a stream object"):
        k(1, 4, (x,), stream="default")
    with pytest.raises(ValueError, match="zero dimension; CuPy's RawKernel would launch one block"):
        k((0,), 4, (x,))
    k.max_dynamic_shared_size_bytes = 1024  # honoured: CUDA refuses a launch with more
    k(1, 4, (x,), shared_mem=1024)
    with pytest.raises(ValueError, match="shared_mem=1025 exceeds this kernel's max_dynamic_shared_size_bytes=1024"):
        k(1, 4, (x,), shared_mem=1025)
    with pytest.raises(ValueError, match="name_expressions need backend='nvrtc'"):
        emu.RawModule(code=code, backend="nvcc", name_expressions=["k"])
    for jitify in (False, None):  # CuPy 14 deprecates the argument; False and None mean no Jitify
        emu.RawModule(code=code, jitify=jitify)
    mod = emu.RawModule(code=code, backend="nvcc", enable_cooperative_groups=True)
    fn = pickle.loads(pickle.dumps(mod.get_function("k")))
    assert fn.enable_cooperative_groups
    fn(1, 4, (x,))
    np.testing.assert_array_equal(x, [4, 4, 4, 4])  # each launch had finished when its call returned
