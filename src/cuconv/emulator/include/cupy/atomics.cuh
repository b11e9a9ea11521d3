// <cupy/atomics.cuh> for the CPU emulator (translate_cucomplex=True prepends it, as
// CuPy does): the atomics CuPy adds to CUDA's. atomicAdd on long long, and
// atomicMax/atomicMin on float and double, computed as CuPy's compare-and-swap
// loops compute them: fmaxf/fminf (a NaN loses to a number), for double too,
// which rounds a double's value through float there and here; atomicAdd on
// CuPy's float16 (<cupy/float16.cuh>), the sum rounded to half. (Its bfloat16 is
// not provided.)
#pragma once
#include "carray.cuh"

template <typename T, typename = typename std::enable_if<std::is_same<T, float16>::value>::type>
T atomicAdd(T* address, T val) {
    return cuconv_emu::atomic_rmw(address, [val](T old) { return T(float(old) + float(val)); });
}

static inline long long atomicAdd(long long* address, long long val) {
    return (long long)atomicAdd(reinterpret_cast<unsigned long long*>(address), (unsigned long long)val);
}
static inline float atomicMax(float* address, float val) {
    return cuconv_emu::atomic_rmw(address, [val](float old) { return fmaxf(val, old); });
}
static inline float atomicMin(float* address, float val) {
    return cuconv_emu::atomic_rmw(address, [val](float old) { return fminf(val, old); });
}
static inline double atomicMax(double* address, double val) {
    return cuconv_emu::atomic_rmw(address, [val](double old) { return (double)fmaxf((float)val, (float)old); });
}
static inline double atomicMin(double* address, double val) {
    return cuconv_emu::atomic_rmw(address, [val](double old) { return (double)fminf((float)val, (float)old); });
}
