// depthwise.cuh — element-type plumbing shared by depthwise.cu and depthwise_grad.cu.
//
// The depthwise kernels are templated on the storage type T (float, double, __half,
// __nv_bfloat16) and sum in DwAcc<T>::type: T itself for float and double, float for the 16-bit
// types (fp32 accumulation, one rounding to T at the store). Loads widen (dw_ld), stores narrow
// (dw_narrow); shared-memory tiles hold the widened values, so the inner loops are the fp32 ones.
//
// Where the paired types (__half2 / __nv_bfloat162) pay: only in the conversions of the
// vectorized NHWC kernels. Two fp32 results narrow in one cvt.rn.{f16x2,bf16x2}.f32 (sm_80+;
// cuda_bf16.h's software rounding on sm_75) and a 32-bit word of two inputs widens as a pair.
// The arithmetic itself is fp32 FMAs: half2 FMAs (__hfma2) would round every partial sum to 11
// bits, and the kernels are memory-bound (R·S FMAs per 2-byte input), so the doubled FMA rate
// would buy no time. bf16 is used for storage only, so sm_75 (no bf16 arithmetic) runs it too.
#pragma once
// tc_tile.cuh: cuda_fp16.h, cuda_bf16.h, CcWiden<float, 16-bit>, TcType<T>::from_float.
#include "tc_tile.cuh"

template <typename T>
struct DwAcc {
    typedef T type;
};
template <>
struct DwAcc<__half> {
    typedef float type;
};
template <>
struct DwAcc<__nv_bfloat16> {
    typedef float type;
};

// *p (read-only cached) widened to the accumulator type.
template <typename T>
__device__ __forceinline__ typename DwAcc<T>::type dw_ld(const T* p) {
    return CcWiden<typename DwAcc<T>::type, T>::of(cc_ldg(p));
}

// An accumulator value rounded (to nearest even) to the storage type O; O == A is the identity.
template <typename O, typename A>
struct DwNarrow {
    __device__ __forceinline__ static O of(A v) { return static_cast<O>(v); }
};
template <>
struct DwNarrow<__half, float> {
    __device__ __forceinline__ static __half of(float v) { return TcType<__half>::from_float(v); }
};
template <>
struct DwNarrow<__nv_bfloat16, float> {
    __device__ __forceinline__ static __nv_bfloat16 of(float v) { return TcType<__nv_bfloat16>::from_float(v); }
};
template <typename O, typename A>
__device__ __forceinline__ O dw_narrow(A v) {
    return DwNarrow<O, A>::of(v);
}

// common.cuh's fused epilogue in the accumulator type over storage-type bias and residual:
// y = T(act(acc + bias[k] + residual[idx])), one rounding. For float and double it is
// cc_epilogue exactly.
template <typename T>
__device__ __forceinline__ T dw_epilogue(typename DwAcc<T>::type acc, const T* __restrict__ bias, int k,
                                         const T* __restrict__ residual, cc_index_t idx, int act) {
    if (bias != nullptr) acc += dw_ld(bias + k);
    if (residual != nullptr) acc += dw_ld(residual + idx);
    return dw_narrow<T>(cc_activate(acc, act));
}

// ------------------------------------------------------------------ 16-bit pairs (NHWC vectors)
// Two 16-bit elements in a 32-bit word, element 0 in the low half (little-endian memory order).
template <typename T>
__device__ __forceinline__ float2 dw_widen2(unsigned u);
template <>
__device__ __forceinline__ float2 dw_widen2<__half>(unsigned u) {
    return make_float2(__half2float(__ushort_as_half((unsigned short)(u & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(u >> 16))));
}
template <>
__device__ __forceinline__ float2 dw_widen2<__nv_bfloat16>(unsigned u) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));   // exact
}
template <typename T>
__device__ __forceinline__ unsigned dw_narrow2(float a, float b);
template <>
__device__ __forceinline__ unsigned dw_narrow2<__half>(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return (unsigned)__half_as_ushort(__low2half(h)) | ((unsigned)__half_as_ushort(__high2half(h)) << 16);
}
template <>
__device__ __forceinline__ unsigned dw_narrow2<__nv_bfloat16>(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return (unsigned)__bfloat16_as_ushort(__low2bfloat16(h)) |
           ((unsigned)__bfloat16_as_ushort(__high2bfloat16(h)) << 16);
}

// VEC 16-bit elements (8: one 16-byte access, 4: one 8-byte access) as VEC/2 words; p must be
// VEC·2-byte aligned (the plans check C % VEC == 0 and 16-byte aligned arrays).
template <int VEC>
__device__ __forceinline__ void dw_load_vec(const void* p, unsigned (&u)[VEC / 2]) {
    static_assert(VEC == 8 || VEC == 4, "16- or 8-byte vectors");
    if constexpr (VEC == 8) {
        const uint4 v = cc_ldg(reinterpret_cast<const uint4*>(p));
        u[0] = v.x; u[1] = v.y; u[2] = v.z; u[3] = v.w;
    } else {
        const uint2 v = cc_ldg(reinterpret_cast<const uint2*>(p));
        u[0] = v.x; u[1] = v.y;
    }
}
template <int VEC>
__device__ __forceinline__ void dw_store_vec(void* p, const unsigned (&u)[VEC / 2]) {
    if constexpr (VEC == 8) *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
    else *reinterpret_cast<uint2*>(p) = make_uint2(u[0], u[1]);
}
