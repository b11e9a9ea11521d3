// What translate_cucomplex=True puts where a source has `#include <cuComplex.h>`
// (cuconv.emulator._source.translate_cucomplex, as CuPy does): cuComplex.h's
// names as macros for CuPy's complex<T> (<cupy/complex.cuh>, prepended to the
// source with the flag). The same mapping as CuPy's bridge header, so a source
// compiles and computes as it does there: cuCaddf/cuCadd... are the operators,
// overloaded for float and double alike; cuCabs is abs (hypot), cuCdiv Thrust's
// quotient, cuCfma a*b + c (a product and a sum, not cuComplex.h's chain of
// fused multiply-adds). As in CuPy's, the macro arguments are not parenthesised:
// cuCmulf(a, b + c) is a * b + c there and here.
#pragma once

#define cuFloatComplex complex<float>
#define cuComplex complex<float>
#define cuCrealf real
#define cuCimagf imag
#define make_cuFloatComplex(re, im) complex<float>(re, im)
#define make_cuComplex(re, im) complex<float>(re, im)
#define cuConjf conj
#define cuCaddf(x, y) (x + y)
#define cuCsubf(x, y) (x - y)
#define cuCmulf(x, y) (x * y)
#define cuCdivf(x, y) (x / y)
#define cuCabsf abs
#define cuComplexDoubleToFloat complex<float>
#define cuCfmaf(x, y, d) (x * y + d)

#define cuDoubleComplex complex<double>
#define cuCreal real
#define cuCimag imag
#define make_cuDoubleComplex(re, im) complex<double>(re, im)
#define cuConj conj
#define cuCadd(x, y) (x + y)
#define cuCsub(x, y) (x - y)
#define cuCmul(x, y) (x * y)
#define cuCdiv(x, y) (x / y)
#define cuCabs abs
#define cuComplexFloatToDouble complex<double>
#define cuCfma(x, y, d) (x * y + d)
