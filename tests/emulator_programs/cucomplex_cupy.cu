// cuComplex.h code as CuPy users write it for RawModule(..., translate_cucomplex=True)
// (the style of CuPy's own complex-number test source): with the flag CuPy maps
// cuComplex.h's names onto its complex<T>, so cuCadd works on single precision
// too, cuCabs is hypot and cuCfma a product plus a sum. tests/test_emulator_cupy.py
// compiles this file with the flag and compares every output with NumPy and with
// the GPU's formulas.
#include <cuComplex.h>

extern "C" {

// Double precision: out holds 7 results per element.
__global__ void zops(const cuDoubleComplex* a, const cuDoubleComplex* b, const cuDoubleComplex* c,
                     cuDoubleComplex* out, double* mag, cuComplex* down, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= n) return;
    cuDoubleComplex x = a[i], y = b[i];
    out[7 * i + 0] = cuCadd(x, y);
    out[7 * i + 1] = cuCsub(x, y);
    out[7 * i + 2] = cuCmul(x, y);
    out[7 * i + 3] = cuCdiv(x, y);
    out[7 * i + 4] = cuConj(x);
    out[7 * i + 5] = cuCfma(x, y, c[i]);
    out[7 * i + 6] = make_cuDoubleComplex(cuCreal(x), -3. * cuCimag(x));
    mag[i] = cuCabs(x);
    down[i] = cuComplexDoubleToFloat(x);
}

// Single precision, with both spellings of the type.
__global__ void cops(const cuComplex* a, const cuFloatComplex* b, const cuComplex* c, cuFloatComplex* out,
                     float* mag, cuDoubleComplex* up, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= n) return;
    cuFloatComplex x = a[i], y = b[i];
    out[7 * i + 0] = cuCaddf(x, y);
    out[7 * i + 1] = cuCsubf(x, y);
    out[7 * i + 2] = cuCmulf(x, y);
    out[7 * i + 3] = cuCdivf(x, y);
    out[7 * i + 4] = cuConjf(x);
    out[7 * i + 5] = cuCfmaf(x, y, c[i]);
    out[7 * i + 6] = make_cuComplex(cuCrealf(x), -3.f * cuCimagf(x));
    mag[i] = cuCabsf(x);
    up[i] = cuComplexFloatToDouble(x);
}

// A complex scalar by value, and a double-precision name on single-precision
// values (one operator for both under the flag).
__global__ void shift(const cuComplex* a, cuComplex s, cuComplex* out, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) out[i] = cuCadd(a[i], s);
}

__global__ void shift_double(const cuDoubleComplex* a, cuDoubleComplex s, cuDoubleComplex* out, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) out[i] = cuCsub(a[i], s);
}

// The bridge's macros do not parenthesise their arguments (CuPy's do not):
// cuCmulf(x, y + y) is x * y + y.
__global__ void unparenthesised(const cuComplex* a, const cuComplex* b, cuComplex* out, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) out[i] = cuCmulf(a[i], b[i] + b[i]);
}

}
