// cuComplex.h for the CPU emulator: the types (float2 / double2, as in CUDA) and
// every function, computed with CUDA's formulas so that results match the GPU:
// cuCdivf scales both operands by 1/(|re|+|im|) of the divisor before dividing,
// cuCabsf divides by the larger component to avoid overflow and falls back to
// v + w for zero, infinite and NaN inputs. With --fmad=true (the default, on the
// GPU and here) the products are fused exactly where nvcc fuses them
// (cuconv_emu/complex_math.h). With CuPy's translate_cucomplex=True a source's
// `#include <cuComplex.h>` names <cupy/cuComplex_bridge.h> instead, which maps
// these names onto CuPy's complex<T>.
#pragma once
#include "cuconv_emu/complex_math.h"

typedef float2 cuFloatComplex;
typedef double2 cuDoubleComplex;
typedef cuFloatComplex cuComplex;

static inline float cuCrealf(cuFloatComplex x) { return x.x; }
static inline float cuCimagf(cuFloatComplex x) { return x.y; }
static inline cuFloatComplex make_cuFloatComplex(float r, float i) {
    cuFloatComplex z;
    z.x = r;
    z.y = i;
    return z;
}
static inline cuComplex make_cuComplex(float r, float i) { return make_cuFloatComplex(r, i); }
static inline cuFloatComplex cuConjf(cuFloatComplex x) { return make_cuFloatComplex(x.x, -x.y); }
static inline cuFloatComplex cuCaddf(cuFloatComplex x, cuFloatComplex y) {
    return make_cuFloatComplex(x.x + y.x, x.y + y.y);
}
static inline cuFloatComplex cuCsubf(cuFloatComplex x, cuFloatComplex y) {
    return make_cuFloatComplex(x.x - y.x, x.y - y.y);
}
static inline cuFloatComplex cuCmulf(cuFloatComplex x, cuFloatComplex y) {
    return make_cuFloatComplex(cuconv_emu::cx::mul_sub(x.x, y.x, x.y, y.y),
                               cuconv_emu::cx::mul_add(x.x, y.y, x.y, y.x));
}
static inline cuFloatComplex cuCdivf(cuFloatComplex x, cuFloatComplex y) {
    float s = fabsf(y.x) + fabsf(y.y);
    float oos = 1.0f / s;
    float ars = x.x * oos, ais = x.y * oos, brs = y.x * oos, bis = y.y * oos;
    s = cuconv_emu::cx::mul_add(brs, brs, bis, bis);
    oos = 1.0f / s;
    return make_cuFloatComplex(cuconv_emu::cx::mul_add(ars, brs, ais, bis) * oos,
                               cuconv_emu::cx::mul_sub(ais, brs, ars, bis) * oos);
}
static inline float cuCabsf(cuFloatComplex x) {
    float a = fabsf(x.x), b = fabsf(x.y);
    float v = a > b ? a : b, w = a > b ? b : a;
    float t = w / v;
    t = v * sqrtf(cuconv_emu::cx::fma(t, t, 1.0f));
    if (v == 0.0f || v > 3.402823466e38f || w > 3.402823466e38f) t = v + w;
    return t;
}
// x*y + d, accumulated as CUDA does: (xr*yr + dr) - xi*yi, (xr*yi + di) + xi*yr.
static inline cuFloatComplex cuCfmaf(cuFloatComplex x, cuFloatComplex y, cuFloatComplex d) {
    float re = cuconv_emu::cx::fma(x.x, y.x, d.x), im = cuconv_emu::cx::fma(x.x, y.y, d.y);
    re = cuconv_emu::cx::fma(-x.y, y.y, re);
    im = cuconv_emu::cx::fma(x.y, y.x, im);
    return make_cuFloatComplex(re, im);
}

static inline double cuCreal(cuDoubleComplex x) { return x.x; }
static inline double cuCimag(cuDoubleComplex x) { return x.y; }
static inline cuDoubleComplex make_cuDoubleComplex(double r, double i) {
    cuDoubleComplex z;
    z.x = r;
    z.y = i;
    return z;
}
static inline cuDoubleComplex cuConj(cuDoubleComplex x) { return make_cuDoubleComplex(x.x, -x.y); }
static inline cuDoubleComplex cuCadd(cuDoubleComplex x, cuDoubleComplex y) {
    return make_cuDoubleComplex(x.x + y.x, x.y + y.y);
}
static inline cuDoubleComplex cuCsub(cuDoubleComplex x, cuDoubleComplex y) {
    return make_cuDoubleComplex(x.x - y.x, x.y - y.y);
}
static inline cuDoubleComplex cuCmul(cuDoubleComplex x, cuDoubleComplex y) {
    return make_cuDoubleComplex(cuconv_emu::cx::mul_sub(x.x, y.x, x.y, y.y),
                                cuconv_emu::cx::mul_add(x.x, y.y, x.y, y.x));
}
static inline cuDoubleComplex cuCdiv(cuDoubleComplex x, cuDoubleComplex y) {
    double s = fabs(y.x) + fabs(y.y);
    double oos = 1.0 / s;
    double ars = x.x * oos, ais = x.y * oos, brs = y.x * oos, bis = y.y * oos;
    s = cuconv_emu::cx::mul_add(brs, brs, bis, bis);
    oos = 1.0 / s;
    return make_cuDoubleComplex(cuconv_emu::cx::mul_add(ars, brs, ais, bis) * oos,
                                cuconv_emu::cx::mul_sub(ais, brs, ars, bis) * oos);
}
static inline double cuCabs(cuDoubleComplex x) {
    double a = fabs(x.x), b = fabs(x.y);
    double v = a > b ? a : b, w = a > b ? b : a;
    double t = w / v;
    t = v * sqrt(cuconv_emu::cx::fma(t, t, 1.0));
    if (v == 0.0 || v > 1.79769313486231570e+308 || w > 1.79769313486231570e+308) t = v + w;
    return t;
}
static inline cuDoubleComplex cuCfma(cuDoubleComplex x, cuDoubleComplex y, cuDoubleComplex d) {
    double re = cuconv_emu::cx::fma(x.x, y.x, d.x), im = cuconv_emu::cx::fma(x.x, y.y, d.y);
    re = cuconv_emu::cx::fma(-x.y, y.y, re);
    im = cuconv_emu::cx::fma(x.y, y.x, im);
    return make_cuDoubleComplex(re, im);
}

static inline cuDoubleComplex cuComplexFloatToDouble(cuFloatComplex c) {
    return make_cuDoubleComplex((double)c.x, (double)c.y);
}
static inline cuFloatComplex cuComplexDoubleToFloat(cuDoubleComplex c) {
    return make_cuFloatComplex((float)c.x, (float)c.y);
}

