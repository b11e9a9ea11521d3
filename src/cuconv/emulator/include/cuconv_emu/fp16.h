// __half and __half2 (cuda_fp16.h) for the CPU emulator. Storage is the IEEE
// binary16 bit pattern; conversions round to nearest even (or as named);
// arithmetic is done in float and rounded once, which is exact for + - * / (a
// float holds every sum/product of two halves to within the double-rounding
// bound p' >= 2p + 2) and in double for fma.
#pragma once

namespace cuconv_emu {
// Round the binary number (mant * 2^exp2, mant != 0 as an unsigned integer)
// to binary16 with the given rounding (0 nearest-even, 1 toward zero, 2 up, 3 down).
inline unsigned short f16_from_parts(bool neg, unsigned long long mant, int exp2, int mode) {
    // Normalise so that mant has its top bit at position 63.
    int lz = __builtin_clzll(mant);
    mant <<= lz;
    exp2 -= lz;
    int e = exp2 + 63;  // value = 1.xxx * 2^e
    unsigned short sign = neg ? 0x8000 : 0;
    int shift;          // bits of mant to drop
    unsigned short biased;
    if (e >= -14) {
        biased = (unsigned short)(e + 15);
        shift = 63 - 10;
    } else {
        biased = 0;
        shift = 63 - 10 + (-14 - e);
    }
    unsigned long long kept, rest, half;
    if (shift >= 64) {
        kept = 0;
        rest = mant;  // all dropped; compare against half of one unit
        half = shift == 64 ? (1ull << 63) : 0;
        bool round_up = false;
        if (mode == 0) round_up = shift == 64 && mant > half;
        else if (mode == 2) round_up = !neg;
        else if (mode == 3) round_up = neg;
        unsigned short bits = round_up ? 1 : 0;
        return sign | bits;
    }
    kept = mant >> shift;
    rest = shift ? (mant << (64 - shift)) : 0;  // dropped bits, left-aligned
    half = 1ull << 63;
    bool up = false;
    if (mode == 0) up = rest > half || (rest == half && (kept & 1));
    else if (mode == 2) up = !neg && rest != 0;
    else if (mode == 3) up = neg && rest != 0;
    kept += up;
    unsigned bits;
    if (biased == 0) {
        bits = (unsigned)kept;  // subnormal; a carry into 0x400 makes it the smallest normal
    } else {
        if (kept >= 0x800) {  // mantissa overflowed into the next binade
            kept >>= 1;
            biased++;
        }
        bits = ((unsigned)biased << 10) | ((unsigned)kept & 0x3ff);
    }
    if (bits >= 0x7c00) {  // overflow
        bool to_inf = mode == 0 || (mode == 2 && !neg) || (mode == 3 && neg);
        bits = to_inf ? 0x7c00 : 0x7bff;
    }
    return sign | (unsigned short)bits;
}

inline unsigned short f16_from_double(double d, int mode) {
    unsigned long long b;
    memcpy(&b, &d, 8);
    bool neg = b >> 63;
    int e = (int)((b >> 52) & 0x7ff);
    unsigned long long m = b & ((1ull << 52) - 1);
    if (e == 0x7ff) return m ? 0x7fff : (unsigned short)(neg ? 0xfc00 : 0x7c00);
    if (e == 0 && m == 0) return neg ? 0x8000 : 0;
    if (e == 0) return f16_from_parts(neg, m, -1074, mode);
    return f16_from_parts(neg, m | (1ull << 52), e - 1075, mode);
}
inline unsigned short f16_from_float(float f, int mode) { return f16_from_double((double)f, mode); }

inline float f16_to_float(unsigned short h) {
    unsigned sign = (unsigned)(h & 0x8000) << 16;
    unsigned e = (h >> 10) & 0x1f, m = h & 0x3ff;
    unsigned bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e != 0) bits = sign | ((e + 112) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {
        float f = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return (h & 0x8000) ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
}  // namespace cuconv_emu

struct __half_raw {
    unsigned short x;
};

struct alignas(2) __half {
    static constexpr char cuconv_emu_dtype = 'f';
    unsigned short __x;

    __half() = default;
    constexpr __half(const __half_raw& r) : __x(r.x) {}
    __half(float f) : __x(cuconv_emu::f16_from_float(f, 0)) {}
    __half(double d) : __x(cuconv_emu::f16_from_double(d, 0)) {}
    __half(int v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(unsigned int v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(short v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(unsigned short v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(long v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(unsigned long v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(long long v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half(unsigned long long v) : __x(cuconv_emu::f16_from_double((double)v, 0)) {}
    __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
    __half& operator=(float f) { __x = cuconv_emu::f16_from_float(f, 0); return *this; }
    __half& operator=(double d) { __x = cuconv_emu::f16_from_double(d, 0); return *this; }
    // From an integer, rounded once (CUDA's __int2half_rn and siblings): `h = 0` compiles, as in CUDA.
    template <typename I, typename = std::enable_if_t<std::is_integral<I>::value && !std::is_same<I, bool>::value>>
    __half& operator=(I v) { __x = cuconv_emu::f16_from_double((double)v, 0); return *this; }
    operator float() const { return cuconv_emu::f16_to_float(__x); }
    operator __half_raw() const { return __half_raw{__x}; }
    explicit operator bool() const { return (__x & 0x7fff) != 0; }
};
typedef __half half;

struct alignas(4) __half2 {
    __half x, y;
    __half2() = default;
    constexpr __half2(const __half& a, const __half& b) : x(a), y(b) {}
};
typedef __half2 half2;
struct __half2_raw {
    unsigned short x, y;
};

static inline __half __cuconv_emu_h(unsigned short bits) { return __half(__half_raw{bits}); }

static inline __half __float2half(float f) { return __cuconv_emu_h(cuconv_emu::f16_from_float(f, 0)); }
static inline __half __float2half_rn(float f) { return __cuconv_emu_h(cuconv_emu::f16_from_float(f, 0)); }
static inline __half __float2half_rz(float f) { return __cuconv_emu_h(cuconv_emu::f16_from_float(f, 1)); }
static inline __half __float2half_ru(float f) { return __cuconv_emu_h(cuconv_emu::f16_from_float(f, 2)); }
static inline __half __float2half_rd(float f) { return __cuconv_emu_h(cuconv_emu::f16_from_float(f, 3)); }
static inline __half __double2half(double d) { return __cuconv_emu_h(cuconv_emu::f16_from_double(d, 0)); }
static inline float __half2float(__half h) { return cuconv_emu::f16_to_float(h.__x); }
static inline __half __int2half_rn(int v) { return __double2half((double)v); }
static inline __half __uint2half_rn(unsigned v) { return __double2half((double)v); }
static inline __half __short2half_rn(short v) { return __double2half((double)v); }
static inline __half __ll2half_rn(long long v) { return __double2half((double)v); }
static inline int __half2int_rn(__half h) { return __float2int_rn(__half2float(h)); }
static inline int __half2int_rz(__half h) { return __float2int_rz(__half2float(h)); }
static inline int __half2int_ru(__half h) { return __float2int_ru(__half2float(h)); }
static inline int __half2int_rd(__half h) { return __float2int_rd(__half2float(h)); }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __short_as_half(short v) { return __cuconv_emu_h((unsigned short)v); }
static inline __half __ushort_as_half(unsigned short v) { return __cuconv_emu_h(v); }

static inline __half __hadd(__half a, __half b) { return __float2half(__half2float(a) + __half2float(b)); }
static inline __half __hsub(__half a, __half b) { return __float2half(__half2float(a) - __half2float(b)); }
static inline __half __hmul(__half a, __half b) { return __float2half(__half2float(a) * __half2float(b)); }
static inline __half __hdiv(__half a, __half b) { return __float2half(__half2float(a) / __half2float(b)); }
static inline __half __hadd_rn(__half a, __half b) { return __hadd(a, b); }
static inline __half __hsub_rn(__half a, __half b) { return __hsub(a, b); }
static inline __half __hmul_rn(__half a, __half b) { return __hmul(a, b); }
static inline __half __hfma(__half a, __half b, __half c) {
    return __double2half((double)__half2float(a) * __half2float(b) + __half2float(c));
}
static inline __half __hsat(float f) { return __float2half(__saturatef(f)); }
static inline __half __hadd_sat(__half a, __half b) { return __hsat(__half2float(__hadd(a, b))); }
static inline __half __hmul_sat(__half a, __half b) { return __hsat(__half2float(__hmul(a, b))); }
static inline __half __hfma_sat(__half a, __half b, __half c) { return __hsat(__half2float(__hfma(a, b, c))); }
static inline __half __hneg(__half a) { return __cuconv_emu_h(a.__x ^ 0x8000); }
static inline __half __habs(__half a) { return __cuconv_emu_h(a.__x & 0x7fff); }
static inline bool __hisnan(__half a) { return (a.__x & 0x7fff) > 0x7c00; }
static inline int __hisinf(__half a) { return (a.__x & 0x7fff) == 0x7c00 ? ((a.__x & 0x8000) ? -1 : 1) : 0; }
static inline __half __hmax(__half a, __half b) {
    if (__hisnan(a)) return b;
    if (__hisnan(b)) return a;
    return __half2float(a) >= __half2float(b) ? a : b;
}
static inline __half __hmin(__half a, __half b) {
    if (__hisnan(a)) return b;
    if (__hisnan(b)) return a;
    return __half2float(a) <= __half2float(b) ? a : b;
}
static inline bool __heq(__half a, __half b) { return __half2float(a) == __half2float(b); }
static inline bool __hne(__half a, __half b) {
    return __half2float(a) != __half2float(b) && !__hisnan(a) && !__hisnan(b);
}
static inline bool __hlt(__half a, __half b) { return __half2float(a) < __half2float(b); }
static inline bool __hle(__half a, __half b) { return __half2float(a) <= __half2float(b); }
static inline bool __hgt(__half a, __half b) { return __half2float(a) > __half2float(b); }
static inline bool __hge(__half a, __half b) { return __half2float(a) >= __half2float(b); }
static inline __half hexp(__half a) { return __float2half(expf(__half2float(a))); }
static inline __half hlog(__half a) { return __float2half(logf(__half2float(a))); }
static inline __half hsqrt(__half a) { return __float2half(sqrtf(__half2float(a))); }
static inline __half hrsqrt(__half a) { return __float2half(1.0f / sqrtf(__half2float(a))); }
static inline __half hrcp(__half a) { return __float2half(1.0f / __half2float(a)); }
static inline __half htanh(__half a) { return __float2half(tanhf(__half2float(a))); }
static inline __half hfloor(__half a) { return __float2half(floorf(__half2float(a))); }
static inline __half hceil(__half a) { return __float2half(ceilf(__half2float(a))); }
static inline __half htrunc(__half a) { return __float2half(truncf(__half2float(a))); }

static inline __half operator+(const __half& a, const __half& b) { return __hadd(a, b); }
static inline __half operator-(const __half& a, const __half& b) { return __hsub(a, b); }
static inline __half operator*(const __half& a, const __half& b) { return __hmul(a, b); }
static inline __half operator/(const __half& a, const __half& b) { return __hdiv(a, b); }
static inline __half operator-(const __half& a) { return __hneg(a); }
static inline __half operator+(const __half& a) { return a; }
static inline __half& operator+=(__half& a, const __half& b) { return a = __hadd(a, b); }
static inline __half& operator-=(__half& a, const __half& b) { return a = __hsub(a, b); }
static inline __half& operator*=(__half& a, const __half& b) { return a = __hmul(a, b); }
static inline __half& operator/=(__half& a, const __half& b) { return a = __hdiv(a, b); }
static inline bool operator==(const __half& a, const __half& b) { return __heq(a, b); }
static inline bool operator!=(const __half& a, const __half& b) { return __hne(a, b); }
static inline bool operator<(const __half& a, const __half& b) { return __hlt(a, b); }
static inline bool operator<=(const __half& a, const __half& b) { return __hle(a, b); }
static inline bool operator>(const __half& a, const __half& b) { return __hgt(a, b); }
static inline bool operator>=(const __half& a, const __half& b) { return __hge(a, b); }

// __half2: the same, lane by lane.
static inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 __half2half2(__half a) { return __half2(a, a); }
static inline __half2 make_half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 __float2half2_rn(float f) { return __half2(__float2half(f), __float2half(f)); }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half(a), __float2half(b)); }
static inline __half2 __float22half2_rn(float2 f) { return __half2(__float2half(f.x), __float2half(f.y)); }
static inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline __half2 __low2half2(__half2 h) { return __half2(h.x, h.x); }
static inline __half2 __high2half2(__half2 h) { return __half2(h.y, h.y); }
static inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
static inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
static inline __half2 __lowhigh2highlow(__half2 h) { return __half2(h.y, h.x); }
static inline __half2 __hadd2(__half2 a, __half2 b) { return __half2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }
static inline __half2 __hsub2(__half2 a, __half2 b) { return __half2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }
static inline __half2 __hmul2(__half2 a, __half2 b) { return __half2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }
static inline __half2 __h2div(__half2 a, __half2 b) { return __half2(__hdiv(a.x, b.x), __hdiv(a.y, b.y)); }
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
    return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
static inline __half2 __hneg2(__half2 a) { return __half2(__hneg(a.x), __hneg(a.y)); }
static inline __half2 __habs2(__half2 a) { return __half2(__habs(a.x), __habs(a.y)); }
static inline __half2 __hmax2(__half2 a, __half2 b) { return __half2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }
static inline __half2 __hmin2(__half2 a, __half2 b) { return __half2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }
static inline __half2 operator+(const __half2& a, const __half2& b) { return __hadd2(a, b); }
static inline __half2 operator-(const __half2& a, const __half2& b) { return __hsub2(a, b); }
static inline __half2 operator*(const __half2& a, const __half2& b) { return __hmul2(a, b); }
static inline __half2 operator/(const __half2& a, const __half2& b) { return __h2div(a, b); }
static inline __half2& operator+=(__half2& a, const __half2& b) { return a = __hadd2(a, b); }
static inline __half2& operator-=(__half2& a, const __half2& b) { return a = __hsub2(a, b); }
static inline __half2& operator*=(__half2& a, const __half2& b) { return a = __hmul2(a, b); }

static inline __half atomicAdd(__half* address, __half val) {
    return cuconv_emu::atomic_rmw(address, [val](__half old) { return __hadd(old, val); });
}
static inline __half2 atomicAdd(__half2* address, __half2 val) {
    return cuconv_emu::atomic_rmw(address, [val](__half2 old) { return __hadd2(old, val); });
}
