// winograd.cu — Winograd minimal-filtering convolution F(2x2,3x3) and F(4x4,3x3), fp32, NCHW/KCRS.
//
// y = act(conv3x3_stride1(x, w) + bias + residual), computed tile by tile (Lavin & Gray, 2016):
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
// for each m×m output tile Y, its α×α input tile d (α = m + 2, overlapping its neighbours by 2,
// zero outside the image) and each 3×3 filter g. Summed over the input channels, the
// element-wise product becomes, for each of the α² transform positions ξ, a GEMM over channels:
// M[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T) — α²·K·C multiplications per tile instead of the direct
// m²·9·K·C: 16 vs 36 for F(2x2,3x3) (2.25×), 36 vs 144 for F(4x4,3x3) (4×).
//
// Kernels, simplest to fastest:
//   winograd_filter_transform<M>   U[ξ][k][c] = (G g Gᵀ)[ξ], in double, rounded once (computed
//                                  once per weight tensor; its error should not add to the data's).
//   winograd_input_transform<M>    V[ξ][c][t] = (Bᵀ d B)[ξ] for a chunk of tiles t.
//   winograd_multiply_simple       M[ξ] = U[ξ]·V[ξ], one thread per output element: the
//                                  always-correct reference for the element-wise stage (the op's
//                                  fast path hands the same product to the tiled GEMM, gemm.cu).
//   winograd_output_transform<M>   y = act(Aᵀ M[·][k][t] A + bias + residual), partial tiles clipped.
//   winograd_fused_f2x2_3x3<BK,BT,BC>  adds fusion: the whole data path of F(2x2,3x3) in one
//                                  kernel (input tiles transformed into shared memory, the 16
//                                  products accumulated in registers over C, the output
//                                  transform from shared memory); no V or M buffer, only U.
//   winograd_flags_init, winograd_fixup<M>  exact non-finite semantics: the transforms mix a
//                                  whole tile (one NaN poisons m² outputs, an Inf becomes NaN),
//                                  so the tiles and channels that hold a NaN/Inf are flagged and
//                                  recomputed from x and w in direct.cu's order and epilogue —
//                                  equal to direct convolution bit for bit. With finite data: one
//                                  pass over the weights, a flag test per tile, a launch that exits.
//
// Where Bᵀ, G and Aᵀ come from (Toom-Cook with the points 0, ±1, ∞ and 0, ±1, ±2, ∞, every
// denominator moved into G) and why ±2 rather than ±1/2: docs/kernel_design.md#winogradcu;
// ops/winograd.py derives the matrices in exact fractions and the tests check these kernels
// against it. Accuracy: docs/winograd_accuracy.md.
#include "common.cuh"

template <int M>
struct Winograd;

// Each *_1d applies a transform matrix to one column or row (elements `in[k*si]`, `out[k*so]`),
// written out with shared subexpressions; the 2-D transforms apply it to columns then rows.
template <>
struct Winograd<2> {
    static constexpr int ALPHA = 4;

    template <typename T>
    __device__ __forceinline__ static void input_1d(const T* d, int si, T* v, int so) {  // Bᵀ d
        v[0 * so] = d[0 * si] - d[2 * si];
        v[1 * so] = d[1 * si] + d[2 * si];
        v[2 * so] = d[2 * si] - d[1 * si];
        v[3 * so] = d[1 * si] - d[3 * si];
    }

    template <typename T>
    __device__ __forceinline__ static void filter_1d(const T* g, int si, T* u, int so) {  // G g
        const T half_sum_even = T(0.5) * (g[0 * si] + g[2 * si]);
        const T half_odd = T(0.5) * g[1 * si];
        u[0 * so] = g[0 * si];
        u[1 * so] = half_sum_even + half_odd;
        u[2 * so] = half_sum_even - half_odd;
        u[3 * so] = g[2 * si];
    }

    template <typename T>
    __device__ __forceinline__ static void output_1d(const T* m, int si, T* y, int so) {  // Aᵀ m
        y[0 * so] = m[0 * si] + m[1 * si] + m[2 * si];
        y[1 * so] = m[1 * si] - m[2 * si] - m[3 * si];
    }
};

template <>
struct Winograd<4> {
    static constexpr int ALPHA = 6;

    template <typename T>
    __device__ __forceinline__ static void input_1d(const T* d, int si, T* v, int so) {  // Bᵀ d
        const T d0 = d[0 * si], d1 = d[1 * si], d2 = d[2 * si], d3 = d[3 * si], d4 = d[4 * si],
                d5 = d[5 * si];
        const T s12 = d1 + d2, s34 = d3 + d4;
        const T t12 = d1 - d2, t34 = d4 - d3;
        const T e = d4 - d2, f = d3 - d1;
        v[0 * so] = T(4) * d0 - T(5) * d2 + d4;
        v[1 * so] = s34 - T(4) * s12;
        v[2 * so] = t34 + T(4) * t12;
        v[3 * so] = e + T(2) * f;
        v[4 * so] = e - T(2) * f;
        v[5 * so] = T(4) * d1 - T(5) * d3 + d5;
    }

    template <typename T>
    __device__ __forceinline__ static void filter_1d(const T* g, int si, T* u, int so) {  // G g
        const T g0 = g[0 * si], g1 = g[1 * si], g2 = g[2 * si];
        u[0 * so] = g0 / T(4);
        u[1 * so] = -(g0 + g1 + g2) / T(6);
        u[2 * so] = -(g0 - g1 + g2) / T(6);
        u[3 * so] = g0 / T(24) + g1 / T(12) + g2 / T(6);
        u[4 * so] = g0 / T(24) - g1 / T(12) + g2 / T(6);
        u[5 * so] = g2;
    }

    template <typename T>
    __device__ __forceinline__ static void output_1d(const T* m, int si, T* y, int so) {  // Aᵀ m
        const T s12 = m[1 * si] + m[2 * si], t12 = m[1 * si] - m[2 * si];
        const T s34 = m[3 * si] + m[4 * si], t34 = m[3 * si] - m[4 * si];
        y[0 * so] = m[0 * si] + s12 + s34;
        y[1 * so] = t12 + T(2) * t34;
        y[2 * so] = s12 + T(4) * s34;
        y[3 * so] = t12 + T(8) * t34 + m[5 * si];
    }
};

// V = Bᵀ d B (α×α → α×α): columns first, then rows.
template <int M, typename T>
__device__ __forceinline__ void winograd_input_tile(const T* d, T* v) {
    constexpr int A = Winograd<M>::ALPHA;
    T tmp[A * A];
#pragma unroll
    for (int j = 0; j < A; ++j) Winograd<M>::input_1d(d + j, A, tmp + j, A);
#pragma unroll
    for (int i = 0; i < A; ++i) Winograd<M>::input_1d(tmp + i * A, 1, v + i * A, 1);
}

// U = G g Gᵀ (3×3 → α×α).
template <int M, typename T>
__device__ __forceinline__ void winograd_filter_tile(const T* g, T* u) {
    constexpr int A = Winograd<M>::ALPHA;
    T tmp[A * 3];
#pragma unroll
    for (int j = 0; j < 3; ++j) Winograd<M>::filter_1d(g + j, 3, tmp + j, 3);
#pragma unroll
    for (int i = 0; i < A; ++i) Winograd<M>::filter_1d(tmp + i * 3, 1, u + i * A, 1);
}

// Y = Aᵀ m A (α×α → M×M).
template <int M, typename T>
__device__ __forceinline__ void winograd_output_tile(const T* m, T* y) {
    constexpr int A = Winograd<M>::ALPHA;
    T tmp[M * A];
#pragma unroll
    for (int j = 0; j < A; ++j) Winograd<M>::output_1d(m + j, A, tmp + j, A);
#pragma unroll
    for (int i = 0; i < M; ++i) Winograd<M>::output_1d(tmp + i * A, 1, y + i * M, 1);
}

// Where output tile `tile` (global index over the batch) reads its input: image n and the
// top-left corner (h0, w0) of its α×α input tile, which may lie in the padding.
template <int M>
__device__ __forceinline__ void winograd_tile_origin(cc_index_t tile, int pad_h, int pad_w, int tiles_h,
                                                     int tiles_w, cc_index_t& n, int& h0, int& w0) {
    const cc_index_t tiles_per_image = (cc_index_t)tiles_h * tiles_w;
    n = tile / tiles_per_image;
    const int in_image = (int)(tile - n * tiles_per_image);
    h0 = (in_image / tiles_w) * M - pad_h;
    w0 = (in_image % tiles_w) * M - pad_w;
}

// The α×α input tile at (h0, w0) of one H×W channel plane, zero where it falls outside the image
// (padding, or beyond the last row/column for partial edge tiles).
template <int M>
__device__ __forceinline__ void winograd_load_tile(const float* __restrict__ plane, int h0, int w0, int H,
                                                   int W, float* d) {
    constexpr int A = Winograd<M>::ALPHA;
#pragma unroll
    for (int i = 0; i < A; ++i) {
        const int h = h0 + i;
#pragma unroll
        for (int j = 0; j < A; ++j) {
            const int w = w0 + j;
            d[i * A + j] = (h >= 0 && h < H && w >= 0 && w < W) ? cc_ldg(plane + (cc_index_t)h * W + w) : 0.0f;
        }
    }
}

// Marks tile `tile` for the fix-up when its input window d holds a non-finite value.
template <int M>
__device__ __forceinline__ void winograd_flag_tile(const float* d, int* __restrict__ tile_flags, cc_index_t tile) {
    constexpr int A = Winograd<M>::ALPHA;
    bool finite = true;
#pragma unroll
    for (int i = 0; i < A * A; ++i) finite = finite && cc_is_finite(d[i]);
    if (!finite) atomicOr(tile_flags + tile, 1);
}

// Writes the valid part of one M×M output tile with the fused epilogue.
template <int M>
__device__ __forceinline__ void winograd_store_output_tile(const float* yt, float* __restrict__ y, cc_index_t tile,
                                                           int k, int K, int P, int Q, int tiles_h, int tiles_w,
                                                           const float* __restrict__ bias,
                                                           const float* __restrict__ residual, int act) {
    const cc_index_t tiles_per_image = (cc_index_t)tiles_h * tiles_w;
    const cc_index_t n = tile / tiles_per_image;
    const int in_image = (int)(tile - n * tiles_per_image);
    const int p0 = (in_image / tiles_w) * M;
    const int q0 = (in_image % tiles_w) * M;
    const cc_index_t plane = (n * K + k) * (cc_index_t)P * Q;
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int j = 0; j < M; ++j) {
            const int p = p0 + i, q = q0 + j;
            if (p < P && q < Q) {
                const cc_index_t idx = plane + (cc_index_t)p * Q + q;
                y[idx] = cc_epilogue(yt[i * M + j], bias, k, residual, idx, act);
            }
        }
    }
}

// ------------------------------------------------------------------------------ non-fused pipeline
// U[ξ][k][c] for the K×C×3×3 filter w. One thread per (k, c).
template <int M>
__global__ void __launch_bounds__(256, 2) winograd_filter_transform(const float* __restrict__ w,
                                                                 float* __restrict__ U, int K, int C) {
    constexpr int A = Winograd<M>::ALPHA;
    const cc_index_t count = (cc_index_t)K * C;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < count;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        double g[9], u[A * A];
#pragma unroll
        for (int i = 0; i < 9; ++i) g[i] = (double)cc_ldg(w + e * 9 + i);
        winograd_filter_tile<M>(g, u);
#pragma unroll
        for (int xi = 0; xi < A * A; ++xi) U[xi * count + e] = (float)u[xi];
    }
}

// V[ξ][c][t] for tiles tile_begin .. tile_begin + tile_count - 1 (a chunk of the batch's tiles;
// t is the index within the chunk). Rows are ldt >= tile_count long (a multiple of 4 lets the GEMM
// use 16-byte accesses); the pad columns get zeros. One thread per (c, t), t fastest so that the
// stores coalesce.
template <int M>
__global__ void __launch_bounds__(256, 2) winograd_input_transform(const float* __restrict__ x,
                                                                float* __restrict__ V, int C, int H, int W,
                                                                int pad_h, int pad_w, int tiles_h, int tiles_w,
                                                                long long tile_begin, int tile_count, int ldt,
                                                                int* __restrict__ tile_flags) {
    constexpr int A = Winograd<M>::ALPHA;
    const cc_index_t plane = (cc_index_t)C * ldt;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < plane;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e / ldt);
        const int t = (int)(e - (cc_index_t)c * ldt);
        float d[A * A], v[A * A];
        if (t < tile_count) {
            cc_index_t n;
            int h0, w0;
            winograd_tile_origin<M>(tile_begin + t, pad_h, pad_w, tiles_h, tiles_w, n, h0, w0);
            winograd_load_tile<M>(x + (n * C + c) * (cc_index_t)H * W, h0, w0, H, W, d);
            winograd_flag_tile<M>(d, tile_flags, tile_begin + t);
            winograd_input_tile<M>(d, v);
        } else {
#pragma unroll
            for (int xi = 0; xi < A * A; ++xi) v[xi] = 0.0f;
        }
#pragma unroll
        for (int xi = 0; xi < A * A; ++xi) V[xi * plane + e] = v[xi];
    }
}

// Mx[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T) for every ξ < batch. One thread per element of Mx: no
// reuse at all, but obviously right; the tests compare the tiled GEMM path against it.
__global__ void __launch_bounds__(256, 2) winograd_multiply_simple(const float* __restrict__ U,
                                                                const float* __restrict__ V,
                                                                float* __restrict__ Mx, int batch, int K,
                                                                int C, int T) {
    const cc_index_t count = (cc_index_t)batch * K * T;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < count;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t xi = e / ((cc_index_t)K * T);
        const cc_index_t rest = e - xi * K * T;
        const cc_index_t k = rest / T;
        const cc_index_t t = rest - k * T;
        const float* u = U + (xi * K + k) * C;
        const float* v = V + xi * (cc_index_t)C * T + t;
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) acc += u[c] * v[(cc_index_t)c * T];
        Mx[e] = acc;
    }
}

// y = act(Aᵀ Mx[·][k][t] A + bias[k] + residual) for the chunk's tiles (Mx rows ldt long).
// One thread per (k, t).
template <int M>
__global__ void __launch_bounds__(256, 2) winograd_output_transform(
        const float* __restrict__ Mx, float* __restrict__ y, const float* __restrict__ bias, int has_bias,
        const float* __restrict__ residual, int has_residual, int act, int K, int P, int Q, int tiles_h,
        int tiles_w, long long tile_begin, int tile_count, int ldt) {
    constexpr int A = Winograd<M>::ALPHA;
    const cc_index_t work = (cc_index_t)K * tile_count;
    const cc_index_t plane = (cc_index_t)K * ldt;
    const float* bias_or_null = has_bias ? bias : nullptr;
    const float* residual_or_null = has_residual ? residual : nullptr;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < work;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const int k = (int)(e / tile_count);
        const int t = (int)(e - (cc_index_t)k * tile_count);
        const float* mkt = Mx + (cc_index_t)k * ldt + t;
        float m[A * A], yt[M * M];
#pragma unroll
        for (int xi = 0; xi < A * A; ++xi) m[xi] = mkt[xi * plane];
        winograd_output_tile<M>(m, yt);
        winograd_store_output_tile<M>(yt, y, tile_begin + t, k, K, P, Q, tiles_h, tiles_w, bias_or_null,
                                      residual_or_null, act);
    }
}

// ------------------------------------------------------------------------------ fused F(2x2,3x3)
// One block computes BT tiles × BK output channels. For each chunk of BC input channels it
//   1. stages U[ξ][k][c] (from the filter transform) in shared memory as Us[ξ][c][k]: each
//      thread owns one (c, k) of the chunk and copies its 16 ξ values;
//   2. transforms the BC×BT input tiles straight into shared memory, Vs[ξ][c][t];
//   3. accumulates the 16 GEMMs in registers: thread (ξ, kq, tq) owns ξ's products for the
//      contiguous k = kq·BK/4 + i and t = tq·BT/4 + j, read with 128-bit shared loads;
// then parks the accumulators in shared memory (reusing Us/Vs) so that each (k, t) can gather its
// 16 values for the output transform and epilogue. 256 threads = 16 ξ × 4 kq × 4 tq.
template <int BK, int BT, int BC>
__global__ void __launch_bounds__(256, 2) winograd_fused_f2x2_3x3(
        const float* __restrict__ x, const float* __restrict__ U, float* __restrict__ y,
        const float* __restrict__ bias, int has_bias, const float* __restrict__ residual, int has_residual,
        int act, int N, int C, int H, int W, int K, int P, int Q, int pad_h, int pad_w, int tiles_h,
        int tiles_w, int* __restrict__ tile_flags) {
    constexpr int THREADS = 256;
    constexpr int XI = 16;          // α² for α = 4
    constexpr int KPT = BK / 4;     // output channels per thread
    constexpr int TPT = BT / 4;     // tiles per thread
    static_assert(KPT % 4 == 0 && TPT % 4 == 0, "per-thread k and t runs are read as float4");
    static_assert(BC * BK == THREADS, "one thread per (c, k) of a U chunk");
    static_assert((BK * BT) % THREADS == 0, "output pairs must split evenly over the block");
    static_assert(BC * BT <= THREADS, "one thread per input tile of the chunk");
    constexpr int U_ELEMS = XI * BC * BK;
    constexpr int V_ELEMS = XI * BC * BT;
    constexpr int M_ELEMS = XI * BK * BT;
    // During the channel loop: the U and V chunks and the block's tile origins; after it, the
    // products gathered for the output transform, in the same bytes.
    struct Staging {
        float u[U_ELEMS];                       // Us[ξ][c][k]
        float v[V_ELEMS];                       // Vs[ξ][c][t]
        cc_index_t tile_image_offset[BT];       // n·C·H·W of each tile's image
        int tile_h0[BT], tile_w0[BT];           // each tile's input corner (h0 = H: no tile)
    };
    union Shared {
        Staging staging;
        float m[M_ELEMS];                       // Ms[ξ][k][t]
    };
    __shared__ __align__(16) Shared smem;
    float* Us = smem.staging.u;
    float* Vs = smem.staging.v;
    float* Ms = smem.m;

    const int tid = threadIdx.x;
    const int xi = tid / 16, kq = (tid / 4) % 4, tq = tid % 4;
    const cc_index_t tiles = (cc_index_t)N * tiles_h * tiles_w;
    const cc_index_t tile_block = (cc_index_t)blockIdx.x * BT;
    const int k_block = blockIdx.y * BK;
    const cc_index_t kc = (cc_index_t)K * C;
    // This thread's (c, k) in every U chunk; c fastest so that a warp reads 4 runs of 8 floats.
    const int c_u = tid % BC, k_u = tid / BC;
    const int kg_u = k_block + k_u;
    // The block's BT input tiles are the same in every chunk: their origins (a 64-bit division)
    // are worked out once, into shared memory rather than registers live across the loop. A
    // tile past the last one gets h0 = H, so all its loads fall outside the image and read 0.
    cc_index_t* tile_image_offset = smem.staging.tile_image_offset;
    int* tile_h0 = smem.staging.tile_h0;
    int* tile_w0 = smem.staging.tile_w0;
    if (tid < BT) {
        cc_index_t n = 0;
        int h0 = H, w0 = 0;
        if (tile_block + tid < tiles) winograd_tile_origin<2>(tile_block + tid, pad_h, pad_w, tiles_h, tiles_w, n, h0, w0);
        tile_image_offset[tid] = n * C * (cc_index_t)H * W;
        tile_h0[tid] = h0;
        tile_w0[tid] = w0;
    }
    __syncthreads();
    const int c_in = tid / BT, t_in = tid % BT;    // this thread's input tile (threads < BC·BT)

    float acc[KPT][TPT];
#pragma unroll
    for (int i = 0; i < KPT; ++i)
#pragma unroll
        for (int j = 0; j < TPT; ++j) acc[i][j] = 0.0f;

    for (int c0 = 0; c0 < C; c0 += BC) {
        // 1. U chunk.
        {
            const int cg = c0 + c_u;
            const bool inside = cg < C && kg_u < K;
            const cc_index_t src = (cc_index_t)kg_u * C + cg;
#pragma unroll 4
            for (int x_i = 0; x_i < XI; ++x_i)
                Us[(x_i * BC + c_u) * BK + k_u] = inside ? cc_ldg(U + x_i * kc + src) : 0.0f;
        }
        // 2. input tiles of the chunk, transformed on the way into shared memory.
        if (tid < BC * BT) {
            const int cg = c0 + c_in;
            float d[XI], v[XI];
            if (cg < C) {
                winograd_load_tile<2>(x + tile_image_offset[t_in] + cg * (cc_index_t)H * W, tile_h0[t_in],
                                      tile_w0[t_in], H, W, d);
                if (tile_block + t_in < tiles) winograd_flag_tile<2>(d, tile_flags, tile_block + t_in);
                winograd_input_tile<2>(d, v);
            } else {
#pragma unroll
                for (int i = 0; i < XI; ++i) v[i] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < XI; ++i) Vs[(i * BC + c_in) * BT + t_in] = v[i];
        }
        __syncthreads();
        // 3. the element-wise stage, 16 independent rank-BC updates.
#pragma unroll
        for (int c = 0; c < BC; ++c) {
            float u[KPT], v[TPT];
            const float* us = Us + (xi * BC + c) * BK + kq * KPT;
            const float* vs = Vs + (xi * BC + c) * BT + tq * TPT;
#pragma unroll
            for (int i = 0; i < KPT; i += 4) {
                const float4 q = *reinterpret_cast<const float4*>(us + i);
                u[i] = q.x, u[i + 1] = q.y, u[i + 2] = q.z, u[i + 3] = q.w;
            }
#pragma unroll
            for (int j = 0; j < TPT; j += 4) {
                const float4 q = *reinterpret_cast<const float4*>(vs + j);
                v[j] = q.x, v[j + 1] = q.y, v[j + 2] = q.z, v[j + 3] = q.w;
            }
#pragma unroll
            for (int i = 0; i < KPT; ++i)
#pragma unroll
                for (int j = 0; j < TPT; ++j) acc[i][j] += u[i] * v[j];
        }
        __syncthreads();
    }

    // Gather the 16 products of each (k, t) through shared memory (Us/Vs are dead now).
#pragma unroll
    for (int i = 0; i < KPT; ++i)
#pragma unroll
        for (int j = 0; j < TPT; ++j) Ms[(xi * BK + kq * KPT + i) * BT + tq * TPT + j] = acc[i][j];
    __syncthreads();

    const float* bias_or_null = has_bias ? bias : nullptr;
    const float* residual_or_null = has_residual ? residual : nullptr;
#pragma unroll
    for (int it = 0; it < BK * BT / THREADS; ++it) {
        const int pair = tid + it * THREADS;
        const int k = pair / BT, t = pair % BT;
        const int kg = k_block + k;
        const cc_index_t tile = tile_block + t;
        if (kg < K && tile < tiles) {
            float m[XI], yt[4];
#pragma unroll
            for (int i = 0; i < XI; ++i) m[i] = Ms[(i * BK + k) * BT + t];
            winograd_output_tile<2>(m, yt);
            winograd_store_output_tile<2>(yt, y, tile, kg, K, P, Q, tiles_h, tiles_w, bias_or_null,
                                          residual_or_null, act);
        }
    }
}

// ------------------------------------------------------------------------------ non-finite fix-up
// k_flags[k] = 1 when filter k (C×3×3 weights) holds a non-finite weight, else 0; tile_flags[t] = 0
// for every tile t of the batch (the input transforms set them). One thread per k or tile.
__global__ void __launch_bounds__(256, 2) winograd_flags_init(const float* __restrict__ w, int* __restrict__ k_flags,
                                                           int* __restrict__ tile_flags, int K, int C,
                                                           long long tiles) {
    const cc_index_t count = (cc_index_t)K > tiles ? (cc_index_t)K : tiles;
    const cc_index_t per_filter = (cc_index_t)C * 9;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < count;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        if (e < tiles) tile_flags[e] = 0;
        if (e < K) {
            bool finite = true;
            const float* wk = w + e * per_filter;
            for (cc_index_t i = 0; i < per_filter; ++i) finite = finite && cc_is_finite(cc_ldg(wk + i));
            k_flags[e] = finite ? 0 : 1;
        }
    }
}

// The outputs of every flagged tile (all channels) and of every flagged channel (all tiles),
// recomputed as direct.cu computes them: taps in the padding skipped, (c, r, s) order, fmaf, the
// same epilogue — so they equal direct convolution's values bit for bit, NaN and Inf included.
// One thread per (tile, k), k fastest; threads of unflagged pairs return after two loads.
template <int M>
__global__ void __launch_bounds__(256, 2) winograd_fixup(
        const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
        const float* __restrict__ bias, int has_bias, const float* __restrict__ residual, int has_residual,
        int act, const int* __restrict__ tile_flags, const int* __restrict__ k_flags, int N, int C, int H,
        int W, int K, int P, int Q, int pad_h, int pad_w, int tiles_h, int tiles_w) {
    const cc_index_t tiles = (cc_index_t)N * tiles_h * tiles_w;
    const cc_index_t work = tiles * K;
    const cc_index_t plane = (cc_index_t)H * W;
    const float* bias_or_null = has_bias ? bias : nullptr;
    const float* residual_or_null = has_residual ? residual : nullptr;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < work;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t tile = e / K;
        const int k = (int)(e - tile * K);
        if (!(cc_ldg(tile_flags + tile) | cc_ldg(k_flags + k))) continue;
        const cc_index_t tiles_per_image = (cc_index_t)tiles_h * tiles_w;
        const cc_index_t n = tile / tiles_per_image;
        const int in_image = (int)(tile - n * tiles_per_image);
        const int p0 = (in_image / tiles_w) * M, q0 = (in_image % tiles_w) * M;
        const float* x_img = x + n * C * plane;
        const float* w_k = w + (cc_index_t)k * C * 9;
        for (int i = 0; i < M; ++i) {
            for (int j = 0; j < M; ++j) {
                const int p = p0 + i, q = q0 + j;
                if (p >= P || q >= Q) continue;
                const int h0 = p - pad_h, w0 = q - pad_w;
                float acc = 0.0f;
                for (int c = 0; c < C; ++c) {
                    const float* x_c = x_img + (cc_index_t)c * plane;
                    const float* w_c = w_k + c * 9;
                    for (int r = 0; r < 3; ++r) {
                        const int h = h0 + r;
                        if (h < 0 || h >= H) continue;
                        const float* x_row = x_c + (cc_index_t)h * W;
                        for (int s = 0; s < 3; ++s) {
                            const int ww = w0 + s;
                            if (ww < 0 || ww >= W) continue;
                            acc = fmaf(cc_ldg(x_row + ww), cc_ldg(w_c + r * 3 + s), acc);
                        }
                    }
                }
                const cc_index_t idx = ((n * K + k) * P + p) * (cc_index_t)Q + q;
                y[idx] = cc_epilogue(acc, bias_or_null, k, residual_or_null, idx, act);
            }
        }
    }
}
