// <cupy/complex.cuh> for the CPU emulator. CuPy puts its include directory on
// the compiler's path, so RawKernel sources include this header (and
// translate_cucomplex=True prepends it); it declares CuPy's `complex<T>`, a copy
// of Thrust's in namespace thrust, and brings it and its functions into the
// global namespace.
//
// The same type and interface as CuPy's: two T aligned to 2*sizeof(T); implicit
// construction from T, from (T, T) and from complex<U>; the operators with
// complex and with T on either side (no mixed complex<float> op complex<double>,
// which CuPy does not have either); ==, != and CuPy's lexicographic <, <=, >, >=.
// The same formulas, so results match the GPU's bit for bit where the GPU's
// are exact functions of their inputs:
//  * z*w and z/w: Thrust's formulas (the quotient scales both operands by
//    1/(|re|+|im|) of the divisor), with the FMAs where the GPU compiler puts
//    them (cuconv_emu/complex_math.h); -z is z * -1;
//  * abs: hypot; for complex<float> CUDA's hypotf bit for bit, for
//    complex<double> the host's hypot (the GPU's rounds through an approximate
//    reciprocal square root and can differ from it in the last bit);
//  * norm (with Thrust's rescaling of tiny values), arg (atan2), polar, proj,
//    log10 = log(z) / ln 10, pow(z, w) = exp(log(z) * w) with CuPy's overloads
//    and type promotion;
//  * exp, log, sqrt, sin, cos, tan, sinh, cosh, tanh, asin, acos, atan, asinh,
//    acosh, atanh of complex<float> and complex<double>: CuPy's are FreeBSD's
//    C99 functions; here the host's C99 functions (glibc), which follow the
//    same Annex G rules for infinities, NaNs and signed zeros; like every
//    transcendental function of the emulator they may differ from the GPU's
//    in the last bits.
#pragma once
#include <complex>
#include "../cuconv_emu/complex_math.h"

namespace thrust {

template <typename T>
struct alignas(2 * sizeof(T)) complex {
    typedef T value_type;

    complex(const T& re) : m_data{re, T()} {}  // NOLINT: implicit, as CuPy's
    complex(const T& re, const T& im) : m_data{re, im} {}
    complex() = default;
    complex(const complex<T>& z) = default;
    template <typename U>
    complex(const complex<U>& z) : m_data{T(z.real()), T(z.imag())} {}  // NOLINT: implicit, as CuPy's

    complex& operator=(const T& re) {
        m_data[0] = re;
        m_data[1] = T();
        return *this;
    }
    complex& operator=(const complex<T>& z) = default;
    template <typename U>
    complex& operator=(const complex<U>& z) {
        m_data[0] = T(z.real());
        m_data[1] = T(z.imag());
        return *this;
    }
    complex<T>& operator+=(const complex<T> z) { return *this = *this + z; }
    complex<T>& operator-=(const complex<T> z) { return *this = *this - z; }
    complex<T>& operator*=(const complex<T> z) { return *this = *this * z; }
    complex<T>& operator/=(const complex<T> z) { return *this = *this / z; }

    T real() const volatile { return m_data[0]; }
    T imag() const volatile { return m_data[1]; }
    T real() const { return m_data[0]; }
    T imag() const { return m_data[1]; }
    void real(T re) volatile { m_data[0] = re; }
    void imag(T im) volatile { m_data[1] = im; }
    void real(T re) { m_data[0] = re; }
    void imag(T im) { m_data[1] = im; }

 private:
    T m_data[2];
};

// --- arithmetic --------------------------------------------------------------------------------
template <typename T>
inline complex<T> operator+(const complex<T>& a, const complex<T>& b) {
    return complex<T>(a.real() + b.real(), a.imag() + b.imag());
}
template <typename T>
inline complex<T> operator+(const volatile complex<T>& a, const volatile complex<T>& b) {
    return complex<T>(a.real() + b.real(), a.imag() + b.imag());
}
template <typename T>
inline complex<T> operator+(const complex<T>& a, const T& s) { return complex<T>(a.real() + s, a.imag()); }
template <typename T>
inline complex<T> operator+(const T& s, const complex<T>& a) { return complex<T>(a.real() + s, a.imag()); }
template <typename T>
inline complex<T> operator-(const complex<T>& a, const complex<T>& b) {
    return complex<T>(a.real() - b.real(), a.imag() - b.imag());
}
template <typename T>
inline complex<T> operator-(const complex<T>& a, const T& s) { return complex<T>(a.real() - s, a.imag()); }
template <typename T>
inline complex<T> operator-(const T& s, const complex<T>& a) { return complex<T>(s - a.real(), -a.imag()); }
template <typename T>
inline complex<T> operator*(const complex<T>& a, const complex<T>& b) {
    return complex<T>(cuconv_emu::cx::mul_sub(a.real(), b.real(), a.imag(), b.imag()),
                      cuconv_emu::cx::mul_add(a.real(), b.imag(), a.imag(), b.real()));
}
template <typename T>
inline complex<T> operator*(const complex<T>& a, const T& s) { return complex<T>(a.real() * s, a.imag() * s); }
template <typename T>
inline complex<T> operator*(const T& s, const complex<T>& a) { return complex<T>(a.real() * s, a.imag() * s); }
template <typename T>
inline complex<T> operator/(const complex<T>& a, const complex<T>& b) {
    T s = std::abs(b.real()) + std::abs(b.imag());
    T oos = T(1.0) / s;
    T ars = a.real() * oos, ais = a.imag() * oos, brs = b.real() * oos, bis = b.imag() * oos;
    s = cuconv_emu::cx::mul_add(brs, brs, bis, bis);
    oos = T(1.0) / s;
    return complex<T>(cuconv_emu::cx::mul_add(ars, brs, ais, bis) * oos,
                      cuconv_emu::cx::mul_sub(ais, brs, ars, bis) * oos);
}
template <typename T>
inline complex<T> operator/(const complex<T>& a, const T& s) { return complex<T>(a.real() / s, a.imag() / s); }
template <typename T>
inline complex<T> operator/(const T& s, const complex<T>& a) { return complex<T>(s) / a; }
template <typename T>
inline complex<T> operator+(const complex<T>& a) { return a; }
template <typename T>
inline complex<T> operator-(const complex<T>& a) { return a * -T(1); }

// --- comparisons: equality, and CuPy's lexicographic order (real part first) --------------------
template <typename T>
inline bool operator==(const complex<T>& a, const complex<T>& b) { return a.real() == b.real() && a.imag() == b.imag(); }
template <typename T>
inline bool operator==(const T& s, const complex<T>& a) { return s == a.real() && a.imag() == 0; }
template <typename T>
inline bool operator==(const complex<T>& a, const T& s) { return a.real() == s && a.imag() == 0; }
template <typename T>
inline bool operator!=(const complex<T>& a, const complex<T>& b) { return !(a == b); }
template <typename T>
inline bool operator!=(const T& s, const complex<T>& a) { return !(s == a); }
template <typename T>
inline bool operator!=(const complex<T>& a, const T& s) { return !(a == s); }
template <typename T>
inline bool operator<(const complex<T>& a, const complex<T>& b) {
    return !(a == b) && (a.real() < b.real() || (a.real() == b.real() && a.imag() < b.imag()));
}
template <typename T>
inline bool operator>(const complex<T>& a, const complex<T>& b) {
    return !(a == b) && (a.real() > b.real() || (a.real() == b.real() && a.imag() > b.imag()));
}
template <typename T>
inline bool operator<=(const complex<T>& a, const complex<T>& b) { return a == b || a < b; }
template <typename T>
inline bool operator>=(const complex<T>& a, const complex<T>& b) { return a == b || a > b; }
template <typename T>
inline bool operator<(const T& s, const complex<T>& a) { return complex<T>(s) < a; }
template <typename T>
inline bool operator>(const T& s, const complex<T>& a) { return complex<T>(s) > a; }
template <typename T>
inline bool operator<=(const T& s, const complex<T>& a) { return complex<T>(s) <= a; }
template <typename T>
inline bool operator>=(const T& s, const complex<T>& a) { return complex<T>(s) >= a; }
template <typename T>
inline bool operator<(const complex<T>& a, const T& s) { return a < complex<T>(s); }
template <typename T>
inline bool operator>(const complex<T>& a, const T& s) { return a > complex<T>(s); }
template <typename T>
inline bool operator<=(const complex<T>& a, const T& s) { return a <= complex<T>(s); }
template <typename T>
inline bool operator>=(const complex<T>& a, const T& s) { return a >= complex<T>(s); }

// --- magnitude, phase, parts -------------------------------------------------------------------
template <typename T>
inline T abs(const complex<T>& z) { return std::hypot(z.real(), z.imag()); }
template <>
inline float abs(const complex<float>& z) { return cuconv_emu::cx::gpu_hypotf(z.real(), z.imag()); }
template <typename T>
inline T arg(const complex<T>& z) { return std::atan2(z.imag(), z.real()); }
template <typename T>
inline T real(const complex<T>& z) { return z.real(); }
template <typename T>
inline T imag(const complex<T>& z) { return z.imag(); }
template <typename T>
inline complex<T> conj(const complex<T>& z) { return complex<T>(z.real(), -z.imag()); }
// |z|^2; for float and double, parts below sqrt(min normal) are scaled by 4 first
// (and the sum by 1/16), as Thrust does, so that tiny values keep their digits.
template <typename T>
inline T norm(const complex<T>& z) {
    T re = z.real(), im = z.imag();
    if (std::is_floating_point<T>::value && std::abs(re) < std::sqrt(std::numeric_limits<T>::min()) &&
        std::abs(im) < std::sqrt(std::numeric_limits<T>::min())) {
        re = re * T(4);
        im = im * T(4);
        return cuconv_emu::cx::mul_add(re, re, im, im) / T(16);
    }
    return cuconv_emu::cx::mul_add(re, re, im, im);
}
template <typename T>
inline complex<T> polar(const T& m, const T& theta = 0) {
    return complex<T>(m * std::cos(theta), m * std::sin(theta));
}
// The point at infinity for any infinite part (imaginary part: a zero of its sign).
template <typename T>
inline complex<T> proj(const complex<T>& z) {
    if (!std::isinf(z.real()) && !std::isinf(z.imag())) return z;
    return complex<T>(std::numeric_limits<T>::infinity(), std::copysign(T(0), z.imag()));
}

// --- the C99 functions, through the host's implementation --------------------------------------
#define CUCONV_EMU_CX_FUNCTION(NAME)                                                                       \
    template <typename T>                                                                                  \
    inline complex<T> NAME(const complex<T>& z) {                                                          \
        static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,                     \
                      "cuconv emulator: complex<T>'s " #NAME "() is emulated for float and double");       \
        std::complex<T> r = std::NAME(std::complex<T>(z.real(), z.imag()));                                \
        return complex<T>(r.real(), r.imag());                                                             \
    }
CUCONV_EMU_CX_FUNCTION(exp)
CUCONV_EMU_CX_FUNCTION(log)
CUCONV_EMU_CX_FUNCTION(sqrt)
CUCONV_EMU_CX_FUNCTION(sin)
CUCONV_EMU_CX_FUNCTION(cos)
CUCONV_EMU_CX_FUNCTION(tan)
CUCONV_EMU_CX_FUNCTION(sinh)
CUCONV_EMU_CX_FUNCTION(cosh)
CUCONV_EMU_CX_FUNCTION(tanh)
CUCONV_EMU_CX_FUNCTION(asin)
CUCONV_EMU_CX_FUNCTION(acos)
CUCONV_EMU_CX_FUNCTION(atan)
CUCONV_EMU_CX_FUNCTION(asinh)
CUCONV_EMU_CX_FUNCTION(acosh)
CUCONV_EMU_CX_FUNCTION(atanh)
#undef CUCONV_EMU_CX_FUNCTION

template <typename T>
inline complex<T> log10(const complex<T>& z) { return log(z) / T(2.30258509299404568402); }

// pow as CuPy has it: exp(log(base) * exponent), the base's log a real one for a
// real base; with a real operand of another type, both promoted to the larger.
template <typename T, typename U>
using promoted_t = typename std::conditional<(sizeof(T) > sizeof(U)), T, U>::type;
template <typename T>
inline complex<T> pow(const complex<T>& z, const complex<T>& w) { return exp(log(z) * w); }
template <typename T>
inline complex<T> pow(const complex<T>& z, const T& w) { return exp(log(z) * w); }
template <typename T>
inline complex<T> pow(const T& x, const complex<T>& w) { return exp(std::log(x) * w); }
template <typename T, typename U>
inline complex<promoted_t<T, U>> pow(const complex<T>& z, const U& w) {
    return pow(complex<promoted_t<T, U>>(z), promoted_t<T, U>(w));
}
template <typename T, typename U>
inline complex<promoted_t<T, U>> pow(const T& x, const complex<U>& w) {
    return pow(promoted_t<T, U>(x), complex<promoted_t<T, U>>(w));
}

}  // namespace thrust

// What CuPy's header makes global (the other functions are found through the
// argument's namespace, as there).
using thrust::complex;
using thrust::conj;
using thrust::real;
using thrust::imag;
using thrust::arg;
using thrust::exp;
using thrust::log;
using thrust::log10;
using thrust::sin;
using thrust::cos;
using thrust::tan;
using thrust::sinh;
using thrust::cosh;
using thrust::tanh;
using thrust::asinh;
using thrust::acosh;
using thrust::atanh;
using thrust::asin;
using thrust::acos;
using thrust::atan;

template <typename T>
inline bool isnan(complex<T> x) { return std::isnan(x.real()) || std::isnan(x.imag()); }
template <typename T>
inline bool isinf(complex<T> x) { return std::isinf(x.real()) || std::isinf(x.imag()); }
template <typename T>
inline bool isfinite(complex<T> x) { return std::isfinite(x.real()) && std::isfinite(x.imag()); }
template <typename T>
inline complex<T> log1p(complex<T> x) { return log(x += 1); }
template <typename T>
inline complex<T> log2(complex<T> x) { return log(x) /= log(T(2)); }
template <typename T>
inline complex<T> expm1(complex<T> x) { return exp(x) -= 1; }
// NaN-ignoring, lexicographic (real part first): CuPy's min/max of complex values.
template <typename T>
inline complex<T> min(complex<T> x, complex<T> y) {
    if (isnan(x)) return y;
    if (isnan(y)) return x;
    return (x.real() < y.real() || (x.real() == y.real() && x.imag() < y.imag())) ? x : y;
}
template <typename T>
inline complex<T> max(complex<T> x, complex<T> y) {
    if (isnan(x)) return y;
    if (isnan(y)) return x;
    return (x.real() > y.real() || (x.real() == y.real() && x.imag() >= y.imag())) ? x : y;
}
template <typename T>
inline complex<T> rint(complex<T> x) { return complex<T>(std::rint(x.real()), std::rint(x.imag())); }
