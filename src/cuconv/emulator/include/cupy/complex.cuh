// <cupy/complex.cuh> for the CPU emulator (CuPy puts its include directory on the
// NVRTC path, so RawKernel sources include this): CuPy's `complex<T>` is Thrust's;
// here it is std::complex<T>, the same layout (two T) and the same functions.
// Results may differ from Thrust's in the last bit (division, abs, transcendentals).
#pragma once
#include <complex>

using std::complex;
using std::conj;
using std::real;
using std::imag;
using std::arg;
using std::exp;
using std::log;
using std::log10;
using std::sin;
using std::cos;
using std::tan;
using std::sinh;
using std::cosh;
using std::tanh;
using std::asinh;
using std::acosh;
using std::atanh;
using std::asin;
using std::acos;
using std::atan;
using std::abs;
using std::norm;
using std::polar;
using std::pow;
using std::sqrt;
using std::proj;

template <typename T>
bool isnan(complex<T> x) { return std::isnan(x.real()) || std::isnan(x.imag()); }
template <typename T>
bool isinf(complex<T> x) { return std::isinf(x.real()) || std::isinf(x.imag()); }
template <typename T>
bool isfinite(complex<T> x) { return std::isfinite(x.real()) && std::isfinite(x.imag()); }
template <typename T>
complex<T> log1p(complex<T> x) { return log(x + T(1)); }
template <typename T>
complex<T> log2(complex<T> x) { return log(x) / log(T(2)); }
template <typename T>
complex<T> expm1(complex<T> x) { return exp(x) - T(1); }
