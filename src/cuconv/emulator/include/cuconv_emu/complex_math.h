// The arithmetic both complex libraries of the emulator share: cuComplex.h
// (CUDA's own, float2/double2) and <cupy/complex.cuh> (CuPy's complex<T>,
// Thrust's formulas, which translate_cucomplex maps cuComplex.h onto).
//
// With --fmad=true (the default, on the GPU and here) the GPU compiler fuses the
// products of a*b + c*d and a*b - c*d in one way, read off the SASS nvcc 13
// emits for sm_80 from both libraries: fma(a, b, c*d) and fma(a, b, -(c*d)).
// They are written out here, so that g++'s own contraction of the plain
// expressions cannot pick the other product; with --fmad=false they are the
// plain expressions (compiled with -ffp-contract=off).
#pragma once

namespace cuconv_emu {
namespace cx {

template <typename T>
inline T mul_add(T a, T b, T c, T d) {  // a*b + c*d
#if CUCONV_EMU_FMAD
    return std::fma(a, b, c * d);
#else
    return a * b + c * d;
#endif
}

template <typename T>
inline T mul_sub(T a, T b, T c, T d) {  // a*b - c*d
#if CUCONV_EMU_FMAD
    return std::fma(a, b, -(c * d));
#else
    return a * b - c * d;
#endif
}

template <typename T>
inline T fma(T a, T b, T c) {  // a*b + c as the GPU compiler emits it
#if CUCONV_EMU_FMAD
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}

// CUDA's hypotf (libdevice, as its SASS shows): both operands scaled by a power
// of two taken from the larger one's exponent, fma(v, v, w*w), a correctly
// rounded square root, the scale undone; the smaller operand zero gives the
// larger, an infinite one gives +inf (also beside a NaN). Bit for bit the GPU's;
// it differs from the host's hypotf (and NumPy's abs) in the last bit for about
// a third of random inputs. Not subject to --fmad: the fma is the library's own.
inline float gpu_hypotf(float x, float y) {
    unsigned a = bit_cast<unsigned>(std::fabs(x)), b = bit_cast<unsigned>(std::fabs(y));
    unsigned v = a > b ? a : b, w = a > b ? b : a;
    unsigned e = v & 0xfe000000u;
    float scale = bit_cast<float>(0x7e800000u - e), unscale = bit_cast<float>(e | 0x00800000u);
    float vf = bit_cast<float>(v), wf = bit_cast<float>(w);
    float ws = wf * scale, vs = vf * scale;
    float r = std::sqrt(std::fma(vs, vs, ws * ws));
    float out = wf != 0.0f ? unscale * r : vf;
    return wf != INFINITY ? out : INFINITY;
}

}  // namespace cx
}  // namespace cuconv_emu
