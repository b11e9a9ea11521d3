// <cupy/float16.cuh> for the CPU emulator: CuPy's float16, a half that computes in
// float (many of CuPy's own RawModule sources include it). The same interface as
// CuPy's: implicit from float, explicit from the other arithmetic types, half and
// __half_raw (each rounded once to half, as cuda_fp16.h's constructors do);
// converts to float, so arithmetic is float arithmetic rounded back on
// assignment; compound assignment with any type; to_bits/from_bits; iszero,
// isnan, isinf, isfinite, signbit (members and functions); copysign and
// nextafter (with CuPy's rules: NaN for an infinite x); min, max, fmin, fmax.
#pragma once
#include "carray.cuh"
#include "../cuda_fp16.h"

class float16 {
 private:
    half data_;

    static half from_double(double v) { return half(v); }
    static int eq_nonan(float16 x, float16 y) {
        return x.to_bits() == y.to_bits() || ((x.to_bits() | y.to_bits()) & 0x7fffu) == 0;
    }

 public:
    float16() = default;
    float16(float v) : data_(v) {}  // NOLINT: implicit, as CuPy's
    explicit float16(bool v) : data_(float(v)) {}
    explicit float16(double v) : data_(v) {}
    explicit float16(int v) : data_(from_double(v)) {}
    explicit float16(unsigned int v) : data_(from_double(v)) {}
    explicit float16(long long v) : data_(from_double((double)v)) {}
    explicit float16(unsigned long long v) : data_(from_double((double)v)) {}
    explicit float16(const half& v) : data_(v) {}
    explicit float16(const __half_raw& v) : data_(v) {}
    template <typename T, typename = typename std::enable_if<std::is_same<T, bfloat16>::value>::type>
    explicit float16(T v) : data_(float(v)) {}

    operator float() const { return float(data_); }

    float16& operator=(const float16&) = default;
    template <typename T>
    float16& operator=(const T& rhs) {
        return *this = static_cast<float16>(rhs);
    }
    template <typename T>
    float16& operator+=(const T& rhs) { return *this = *this + rhs; }
    template <typename T>
    float16& operator-=(const T& rhs) { return *this = *this - rhs; }
    template <typename T>
    float16& operator*=(const T& rhs) { return *this = *this * rhs; }
    template <typename T>
    float16& operator/=(const T& rhs) { return *this = *this / rhs; }

    static const unsigned short nan = 0x7e00u;

    unsigned short to_bits() const { return __half_as_ushort(data_); }
    static float16 from_bits(unsigned short v) { return float16(__ushort_as_half(v)); }
    int iszero() const { return (to_bits() & 0x7fffu) == 0; }
    int isnan() const { return (to_bits() & 0x7c00u) == 0x7c00u && (to_bits() & 0x03ffu) != 0; }
    int isinf() const { return (to_bits() & 0x7fffu) == 0x7c00u; }
    int isfinite() const { return (to_bits() & 0x7c00u) != 0x7c00u; }
    int signbit() const { return (to_bits() & 0x8000u) != 0; }

    friend float16 copysign(float16 x, float16 y) {
        return from_bits((unsigned short)((x.to_bits() & 0x7fffu) | (y.to_bits() & 0x8000u)));
    }
    // One step from x towards y on the half grid (NaN when x is not finite or y is NaN).
    friend float16 nextafter(float16 x, float16 y) {
        unsigned short xb = x.to_bits(), yb = y.to_bits(), r;
        if (!x.isfinite() || y.isnan()) {
            r = nan;
        } else if (eq_nonan(x, y)) {
            r = xb;
        } else if (x.iszero()) {
            r = (unsigned short)((yb & 0x8000u) + 1);
        } else if (!(xb & 0x8000u)) {
            r = (unsigned short)((short)xb > (short)yb ? xb - 1 : xb + 1);
        } else if (!(yb & 0x8000u) || (xb & 0x7fffu) > (yb & 0x7fffu)) {
            r = (unsigned short)(xb - 1);
        } else {
            r = (unsigned short)(xb + 1);
        }
        return from_bits(r);
    }
};

static inline float16 min(float16 x, float16 y) { return float16(min(float(x), float(y))); }
static inline float16 max(float16 x, float16 y) { return float16(max(float(x), float(y))); }
static inline float16 fmin(float16 x, float16 y) { return float16(fminf(float(x), float(y))); }
static inline float16 fmax(float16 x, float16 y) { return float16(fmaxf(float(x), float(y))); }
static inline int iszero(float16 x) { return x.iszero(); }
static inline int isnan(float16 x) { return x.isnan(); }
static inline int isinf(float16 x) { return x.isinf(); }
static inline int isfinite(float16 x) { return x.isfinite(); }
static inline int signbit(float16 x) { return x.signbit(); }
