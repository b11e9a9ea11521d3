// __nv_bfloat16 and __nv_bfloat162 (cuda_bf16.h) for the CPU emulator: the top
// 16 bits of a float, converted with round-to-nearest-even; arithmetic in float
// (exact for + - * / by the same double-rounding bound as fp16.h: 24 >= 2*8+2).
#pragma once
#include "fp16.h"

namespace cuconv_emu {
inline unsigned short bf16_from_float(float f, int mode) {
    unsigned u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN
    unsigned rest = u & 0xffffu;
    unsigned kept = u >> 16;
    bool neg = u >> 31;
    bool up = false;
    if (mode == 0) up = rest > 0x8000u || (rest == 0x8000u && (kept & 1u));
    else if (mode == 2) up = !neg && rest;
    else if (mode == 3) up = neg && rest;
    return (unsigned short)(kept + up);
}
inline float bf16_to_float(unsigned short b) {
    unsigned u = (unsigned)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
}  // namespace cuconv_emu

struct __nv_bfloat16_raw {
    unsigned short x;
};

struct alignas(2) __nv_bfloat16 {
    static constexpr char cuconv_emu_dtype = 'B';
    unsigned short __x;
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(cuconv_emu::bf16_from_float(f, 0)) {}
    __nv_bfloat16(double d) : __x(cuconv_emu::bf16_from_float((float)d, 0)) {}
    __nv_bfloat16(int v) : __x(cuconv_emu::bf16_from_float((float)v, 0)) {}
    __nv_bfloat16& operator=(float f) { __x = cuconv_emu::bf16_from_float(f, 0); return *this; }
    operator float() const { return cuconv_emu::bf16_to_float(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};
typedef __nv_bfloat16 nv_bfloat16;

struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    constexpr __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
};
typedef __nv_bfloat162 nv_bfloat162;

static inline __nv_bfloat16 __cuconv_emu_bf(unsigned short bits) { return __nv_bfloat16(__nv_bfloat16_raw{bits}); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __cuconv_emu_bf(cuconv_emu::bf16_from_float(f, 0)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __cuconv_emu_bf(cuconv_emu::bf16_from_float(f, 0)); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __cuconv_emu_bf(cuconv_emu::bf16_from_float(f, 1)); }
static inline __nv_bfloat16 __float2bfloat16_ru(float f) { return __cuconv_emu_bf(cuconv_emu::bf16_from_float(f, 2)); }
static inline __nv_bfloat16 __float2bfloat16_rd(float f) { return __cuconv_emu_bf(cuconv_emu::bf16_from_float(f, 3)); }
static inline float __bfloat162float(__nv_bfloat16 b) { return cuconv_emu::bf16_to_float(b.__x); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short v) { return __cuconv_emu_bf(v); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162(__float2bfloat16(a), __float2bfloat16(b));
}
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) + __bfloat162float(b));
}
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) - __bfloat162float(b));
}
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) * __bfloat162float(b));
}
static inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) / __bfloat162float(b));
}
static inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    // a*b is exact in float (8+8 bits); one rounding of the sum in double, then to bf16 (53 >= 2*8+2).
    double s = (double)(__bfloat162float(a) * __bfloat162float(b)) + __bfloat162float(c);
    return __float2bfloat16((float)s);
}
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return __cuconv_emu_bf(a.__x ^ 0x8000); }
static inline __nv_bfloat16 __habs(__nv_bfloat16 a) { return __cuconv_emu_bf(a.__x & 0x7fff); }
static inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(fmaxf(__bfloat162float(a), __bfloat162float(b)));
}
static inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(fminf(__bfloat162float(a), __bfloat162float(b)));
}
static inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) {
    return __nv_bfloat162(__hadd(a.x, b.x), __hadd(a.y, b.y));
}
static inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) {
    return __nv_bfloat162(__hmul(a.x, b.x), __hmul(a.y, b.y));
}
static inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return __nv_bfloat162(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
static inline __nv_bfloat16 operator+(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hadd(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hsub(a, b); }
static inline __nv_bfloat16 operator*(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hmul(a, b); }
static inline __nv_bfloat16 operator/(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hdiv(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16& a) { return __hneg(a); }
static inline __nv_bfloat16& operator+=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = __hadd(a, b); }
static inline __nv_bfloat16& operator*=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = __hmul(a, b); }
static inline bool operator==(const __nv_bfloat16& a, const __nv_bfloat16& b) {
    return __bfloat162float(a) == __bfloat162float(b);
}
static inline bool operator<(const __nv_bfloat16& a, const __nv_bfloat16& b) {
    return __bfloat162float(a) < __bfloat162float(b);
}
static inline bool operator>(const __nv_bfloat16& a, const __nv_bfloat16& b) {
    return __bfloat162float(a) > __bfloat162float(b);
}
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 val) {
    return cuconv_emu::atomic_rmw(address, [val](__nv_bfloat16 old) { return __hadd(old, val); });
}
