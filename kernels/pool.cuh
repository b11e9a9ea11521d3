// pool.cuh — what pool.cu and pool_grad.cu share: the element types and the NHWC vectors.
//
//   PoolType<T>   the storage type T (float, double, __half, __nv_bfloat16) with its accumulator A
//                 (T itself for float and double; float for the 16-bit types) and the exact
//                 widening / round-to-nearest narrowing between them. A widened 16-bit value
//                 compares exactly as the stored one (widening is exact), so a max pooled in the
//                 accumulator type keeps the storage type's order, and the stored element (its
//                 bits) is what the kernels write back.
//   PoolVec<T, V> V consecutive channels of an NHWC tensor, loaded and stored as one access of
//                 V·sizeof(T) bytes (16 or 8: LDG.128 / LDG.64) where the address is aligned for
//                 it, as V single accesses where it is not (an array that does not start
//                 aligned) — the plans pick V so that C is a multiple of it (ops/pool.py); V = 1
//                 is the scalar kernel.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "common.cuh"

template <typename T>
struct PoolType {
    typedef T A;
    __device__ __forceinline__ static A wide(T v) { return v; }
    __device__ __forceinline__ static T narrow(A v) { return v; }
};
template <>
struct PoolType<__half> {
    typedef float A;
    __device__ __forceinline__ static float wide(__half v) { return __half2float(v); }
    __device__ __forceinline__ static __half narrow(float v) { return __float2half_rn(v); }
};
template <>
struct PoolType<__nv_bfloat16> {
    typedef float A;
    __device__ __forceinline__ static float wide(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ __forceinline__ static __nv_bfloat16 narrow(float v) { return __float2bfloat16_rn(v); }
};

// The alignment of V elements of T accessed as one: their size, at most 16 bytes.
template <typename T, int V>
struct PoolVecAlign {
    static constexpr int value = sizeof(T) * V <= 16 ? (int)sizeof(T) * V : 16;
};

template <typename T, int V>
struct alignas(PoolVecAlign<T, V>::value) PoolVec {
    T v[V];
};

// Whether p may be accessed as one PoolVec (its address a multiple of the vector's alignment). The
// plans pick V so that C is a multiple of it, so all lanes of a warp agree whenever the arrays
// start aligned (what every allocator returns): a uniform branch, not a divergent one; an array
// that does not start aligned takes the V single accesses.
template <typename T, int V>
__device__ __forceinline__ bool pool_whole(const T* p) {
    return reinterpret_cast<unsigned long long>(p) % PoolVecAlign<T, V>::value == 0;
}

// V channels at p: one access of V·sizeof(T) bytes where p is aligned for it, else V.
template <typename T, int V>
__device__ __forceinline__ PoolVec<T, V> pool_load(const T* __restrict__ p) {
    if constexpr (V > 1) {
        if (pool_whole<T, V>(p)) return *reinterpret_cast<const PoolVec<T, V>*>(p);
    }
    PoolVec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = cc_ldg(p + j);
    return r;
}

template <typename T, int V>
__device__ __forceinline__ void pool_store(T* __restrict__ p, const PoolVec<T, V>& r) {
    if constexpr (V > 1) {
        if (pool_whole<T, V>(p)) {
            *reinterpret_cast<PoolVec<T, V>*>(p) = r;
            return;
        }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = r.v[j];
}

// Thread idx of an NHWC kernel with a thread per V channels of each pixel of an N × rows × cols
// image: channel group cv (channels cv·V ...), pixel (n, row, col).
struct PoolPixel {
    int cv, row, col;
    cc_index_t n;
};
__device__ __forceinline__ PoolPixel pool_pixel(cc_index_t idx, int CV, int rows, int cols) {
    PoolPixel px;
    px.cv = (int)(idx % CV);
    const cc_index_t pix = idx / CV;
    px.col = (int)(pix % cols);
    px.row = (int)((pix / cols) % rows);
    px.n = pix / ((cc_index_t)rows * cols);
    return px;
}
