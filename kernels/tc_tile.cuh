// tc_tile.cuh — pieces shared by the tensor-core kernels (tc_gemm.cu, tc_conv.cu, wgmma_conv.cu):
//   * TcType<T>: the element types (float16, bfloat16, and float32 run as tf32) with their
//     mma instruction and conversions;
//   * the swizzled shared-memory tile layout;
//   * TcWarpMma: one warp's MI x NI grid of m16n8 accumulators fed from a staged tile by
//     ldmatrix (16-bit types) or 32-bit shared loads + cvt.rna.tf32 (tf32);
//   * cc_tc_mainloop: the multi-stage cp.async pipeline over the reduction, driven by a
//     loader object that knows the operand layout (GEMM rows, or the convolution's gather);
//   * cc_tc_warp_direct: the "simple" variants' warp tile, fragments loaded straight from
//     global memory element by element with the PTX fragment formulas (no shared memory).
// The instructions themselves are the portability layer at the end of common.cuh.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "common.cuh"

// ------------------------------------------------------------------ element types
template <typename T>
struct TcType;

template <>
struct TcType<__half> {
    static constexpr int KSTEP = 16;   // mma.m16n8k16.f32.f16.f16.f32
    __device__ __forceinline__ static unsigned short bits(__half v) { return __half_as_ushort(v); }
    __device__ __forceinline__ static float to_float(__half v) { return __half2float(v); }
    __device__ __forceinline__ static __half from_float(float v) { return __float2half_rn(v); }
    __device__ __forceinline__ static void mma(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
        cc_mma_m16n8k16_f16(d, a, b, c);
    }
};

template <>
struct TcType<__nv_bfloat16> {
    static constexpr int KSTEP = 16;   // mma.m16n8k16.f32.bf16.bf16.f32 (sm_80+)
    __device__ __forceinline__ static unsigned short bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
    __device__ __forceinline__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ __forceinline__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
    __device__ __forceinline__ static void mma(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
        cc_mma_m16n8k16_bf16(d, a, b, c);
    }
};

// float32 data multiplied on tf32 tensor cores: operands rounded by cvt.rna.tf32 (nearest,
// ties away; 10 explicit mantissa bits), products and sums in fp32.
template <>
struct TcType<float> {
    static constexpr int KSTEP = 8;    // mma.m16n8k8.f32.tf32.tf32.f32 (sm_80+)
    __device__ __forceinline__ static float to_float(float v) { return v; }
    __device__ __forceinline__ static float from_float(float v) { return v; }
    __device__ __forceinline__ static void mma(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
        cc_mma_m16n8k8_tf32(d, a, b, c);
    }
};

// The 16-bit storage types widened to float (common.cuh's CcWiden).
template <>
struct CcWiden<float, __half> {
    __device__ __forceinline__ static float of(__half v) { return TcType<__half>::to_float(v); }
};
template <>
struct CcWiden<float, __nv_bfloat16> {
    __device__ __forceinline__ static float of(__nv_bfloat16 v) { return TcType<__nv_bfloat16>::to_float(v); }
};

template <typename T>
__device__ __forceinline__ unsigned cc_tc_pack(T lo, T hi) {
    return static_cast<unsigned>(TcType<T>::bits(lo)) | (static_cast<unsigned>(TcType<T>::bits(hi)) << 16);
}

// ------------------------------------------------------------------ shared-memory tiles
// A tile is ROWS rows of ROW_BYTES bytes. The 16-byte chunks of a row are permuted by an XOR
// with a few bits of the row index, so that the 8 rows one ldmatrix reads (same logical
// chunk, consecutive rows), the 8 16-byte cp.async writes of consecutive threads, and the
// tf32 fragment loads (rows g, columns t) fall into different banks:
//   >= 128-byte rows: chunk ^ (row % 8);  64-byte rows: chunk ^ ((row / 2) % 4) (two rows per
//   128-byte bank period);  32-byte rows: chunk ^ ((row / 4) % 2).
// Every access stays inside its 16-byte chunk, so copies of 4 or 8 bytes work unchanged.
template <int ROW_BYTES>
__device__ __forceinline__ int cc_tc_smem_offset(int row, int col_byte) {
    constexpr int CPR = ROW_BYTES / 16;
    static_assert(ROW_BYTES % 16 == 0 && (CPR % 8 == 0 || CPR == 4 || CPR == 2 || CPR == 1),
                  "tile rows must be 16, 32, 64 or a multiple of 128 bytes");
    int x;
    if constexpr (CPR >= 8) x = row & 7;
    else if constexpr (CPR == 4) x = (row >> 1) & 3;
    else if constexpr (CPR == 2) x = (row >> 2) & 1;
    else x = 0;
    return row * ROW_BYTES + ((((col_byte >> 4) ^ x)) << 4) + (col_byte & 15);
}

// ------------------------------------------------------------------ warp tile from a stage
// A stage holds A as BM rows x BK (K contiguous) and B either as BN rows x BK (B_ROW = false:
// "col" B, K contiguous — convolution weights KRSC) or as BK rows x BN (B_ROW = true: N
// contiguous — the row-major B of a GEMM). The warp owns rows wm0..wm0+WM of A and columns
// wn0..wn0+WN of B, i.e. MI = WM/16 by NI = WN/8 mma tiles.
template <typename T, int BM, int BN, int BK, int WM, int WN, bool B_ROW>
struct TcWarpMma {
    static constexpr int MI = WM / 16, NI = WN / 8, KSTEP = TcType<T>::KSTEP;
    static constexpr int A_ROW_BYTES = BK * (int)sizeof(T);
    static constexpr int B_ROW_BYTES = (B_ROW ? BN : BK) * (int)sizeof(T);
    static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % KSTEP == 0, "warp tile must be a multiple of 16x16");

    __device__ __forceinline__ static void run(float (&acc)[MI][NI][4], const unsigned char* sA,
                                               const unsigned char* sB, int wm0, int wn0, int lane) {
        if constexpr (sizeof(T) == 2) {
#pragma unroll
            for (int ks = 0; ks < BK / 16; ++ks) {
                unsigned a[MI][4], b[NI][2];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    // lanes 0-15: rows 0-15 at k 0-7 (a[0], a[1]); lanes 16-31: the same rows at k 8-15 (a[2], a[3])
                    const int row = wm0 + mi * 16 + (lane & 15);
                    const int col = ks * 16 + (lane >> 4) * 8;
                    cc_ldmatrix<4, false>(a[mi], sA + cc_tc_smem_offset<A_ROW_BYTES>(row, col * 2));
                }
#pragma unroll
                for (int ni = 0; ni < NI; ni += 2) {
                    unsigned r[4];
                    if constexpr (!B_ROW) {
                        // matrices: (n-tile ni, k 0-7), (ni, k 8-15), (ni+1, k 0-7), (ni+1, k 8-15)
                        const int row = wn0 + ni * 8 + (lane >> 4) * 8 + (lane & 7);
                        const int col = ks * 16 + ((lane >> 3) & 1) * 8;
                        cc_ldmatrix<4, false>(r, sB + cc_tc_smem_offset<B_ROW_BYTES>(row, col * 2));
                    } else {
                        // the same four matrices read from K-major rows and transposed
                        const int row = ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
                        const int col = wn0 + ni * 8 + (lane >> 4) * 8;
                        cc_ldmatrix<4, true>(r, sB + cc_tc_smem_offset<B_ROW_BYTES>(row, col * 2));
                    }
                    b[ni][0] = r[0];
                    b[ni][1] = r[1];
                    b[ni + 1][0] = r[2];
                    b[ni + 1][1] = r[3];
                }
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) TcType<T>::mma(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
            }
        } else {
            // tf32: ldmatrix moves 16-bit elements only, so fragments come from 32-bit loads.
            const int g = lane >> 2, t = lane & 3;
#pragma unroll
            for (int ks = 0; ks < BK / 8; ++ks) {
                unsigned a[MI][4], b[NI][2];
                const int k = ks * 8 + t;
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    const int r0 = wm0 + mi * 16 + g;
                    a[mi][0] = cc_cvt_tf32(lds_f32<A_ROW_BYTES>(sA, r0, k));
                    a[mi][1] = cc_cvt_tf32(lds_f32<A_ROW_BYTES>(sA, r0 + 8, k));
                    a[mi][2] = cc_cvt_tf32(lds_f32<A_ROW_BYTES>(sA, r0, k + 4));
                    a[mi][3] = cc_cvt_tf32(lds_f32<A_ROW_BYTES>(sA, r0 + 8, k + 4));
                }
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) {
                    const int n = wn0 + ni * 8 + g;
                    if constexpr (!B_ROW) {
                        b[ni][0] = cc_cvt_tf32(lds_f32<B_ROW_BYTES>(sB, n, k));
                        b[ni][1] = cc_cvt_tf32(lds_f32<B_ROW_BYTES>(sB, n, k + 4));
                    } else {
                        b[ni][0] = cc_cvt_tf32(lds_f32<B_ROW_BYTES>(sB, k, n));
                        b[ni][1] = cc_cvt_tf32(lds_f32<B_ROW_BYTES>(sB, k + 4, n));
                    }
                }
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) TcType<T>::mma(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
            }
        }
    }

    template <int ROW_BYTES>
    __device__ __forceinline__ static float lds_f32(const unsigned char* s, int row, int col) {
        return *reinterpret_cast<const float*>(s + cc_tc_smem_offset<ROW_BYTES>(row, col * 4));
    }
};

// ------------------------------------------------------------------ the multi-stage pipeline
// STAGES shared-memory stages; tile kt is loaded STAGES-1 iterations before it is used. One
// barrier per iteration does both jobs: after it, (1) every thread's copies of tile kt are
// complete and visible (each waited for its own, wait_group STAGES-2), and (2) every warp has
// finished reading tile kt-1, whose stage the copies issued right after it refill. A commit
// per iteration, even with nothing issued, keeps "STAGES-2 groups in flight" exact.
// Loader: load(sA, sB) issues the next tile's cp.async copies (in order 0, 1, 2, ...). With
// SINGLE_PATH, load(sA, sB, live) is called for every iteration, live = false past the last
// tile (the loader then issues zero-size copies): no branch in the loop.
template <typename T, int BM, int BN, int BK, int WM, int WN, int STAGES, bool B_ROW, class Loader,
          bool SINGLE_PATH = false>
__device__ __forceinline__ void cc_tc_mainloop(float (&acc)[WM / 16][WN / 8][4], unsigned char* smem, Loader& loader,
                                               int k_tiles, int wm0, int wn0, int lane) {
    static_assert(STAGES >= 2, "the pipeline needs at least two stages");
    constexpr int A_STAGE = BM * BK * (int)sizeof(T), B_STAGE = BN * BK * (int)sizeof(T);
    unsigned char* const sA = smem;
    unsigned char* const sB = smem + STAGES * A_STAGE;
    auto issue = [&](int stage, bool live) {
        if constexpr (SINGLE_PATH) loader.load(sA + stage * A_STAGE, sB + stage * B_STAGE, live);
        else if (live) loader.load(sA + stage * A_STAGE, sB + stage * B_STAGE);
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        issue(s, s < k_tiles);
        cc_cp_async_commit();
    }
    int read_stage = 0, write_stage = STAGES - 1;
#pragma unroll 1
    for (int kt = 0; kt < k_tiles; ++kt) {
        cc_cp_async_wait<STAGES - 2>();
        __syncthreads();
        issue(write_stage, kt + STAGES - 1 < k_tiles);
        cc_cp_async_commit();
        TcWarpMma<T, BM, BN, BK, WM, WN, B_ROW>::run(acc, sA + read_stage * A_STAGE, sB + read_stage * B_STAGE, wm0,
                                                     wn0, lane);
        read_stage = read_stage + 1 == STAGES ? 0 : read_stage + 1;
        write_stage = write_stage + 1 == STAGES ? 0 : write_stage + 1;
    }
    cc_cp_async_wait_all();   // only empty groups are left; no copy outlives the block
}

// ------------------------------------------------------------------ simple variants' warp tile
// One warp computes the 16x8 tile D[m0.., n0..] = sum_k A(m, k) B(k, n) straight from global
// memory: every lane loads the elements of its own fragments (the formulas at the top of the
// tensor-core section of common.cuh). a_at(m, k) and b_at(k, n) return the element, 0 outside.
template <typename T, class FA, class FB>
__device__ __forceinline__ void cc_tc_warp_direct(float acc[4], int K, const FA& a_at, const FB& b_at, int lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int k0 = 0; k0 < K; k0 += TcType<T>::KSTEP) {
        unsigned a[4], b[2];
        if constexpr (sizeof(T) == 2) {
            a[0] = cc_tc_pack<T>(a_at(g, k0 + 2 * t), a_at(g, k0 + 2 * t + 1));
            a[1] = cc_tc_pack<T>(a_at(g + 8, k0 + 2 * t), a_at(g + 8, k0 + 2 * t + 1));
            a[2] = cc_tc_pack<T>(a_at(g, k0 + 2 * t + 8), a_at(g, k0 + 2 * t + 9));
            a[3] = cc_tc_pack<T>(a_at(g + 8, k0 + 2 * t + 8), a_at(g + 8, k0 + 2 * t + 9));
            b[0] = cc_tc_pack<T>(b_at(k0 + 2 * t, g), b_at(k0 + 2 * t + 1, g));
            b[1] = cc_tc_pack<T>(b_at(k0 + 2 * t + 8, g), b_at(k0 + 2 * t + 9, g));
        } else {
            a[0] = cc_cvt_tf32(a_at(g, k0 + t));
            a[1] = cc_cvt_tf32(a_at(g + 8, k0 + t));
            a[2] = cc_cvt_tf32(a_at(g, k0 + t + 4));
            a[3] = cc_cvt_tf32(a_at(g + 8, k0 + t + 4));
            b[0] = cc_cvt_tf32(b_at(k0 + t, g));
            b[1] = cc_cvt_tf32(b_at(k0 + t + 4, g));
        }
        TcType<T>::mma(acc, a, b, acc);
    }
}

// out[idx] = act(acc + bias[bias_idx] + residual[idx]) for one output element, inputs in the
// storage type T, one rounding to T at the end. Not inlined on purpose: the kernels call it
// for each of their (WM/16)·(WN/8)·4 accumulators, and inlined the compiler unswitches the
// loop on has_bias / has_residual / act into ten copies of the SiLU-laden epilogue (5x the
// code of the main loop, and most of the compile time); a call per output element costs
// nothing next to the K/16 mma steps that produced it.
template <typename T>
__device__ __noinline__ void cc_tc_store(T* __restrict__ out, cc_index_t idx, float acc, const T* __restrict__ bias,
                                         int has_bias, int bias_idx, const T* __restrict__ residual,
                                         int has_residual, int act) {
    if (has_bias) acc += TcType<T>::to_float(bias[bias_idx]);
    if (has_residual) acc += TcType<T>::to_float(residual[idx]);
    out[idx] = TcType<T>::from_float(cc_activate(acc, act));
}

// ------------------------------------------------------------------ convolution arguments (tc_conv.cu, wgmma_conv.cu)
// Arguments of both convolution variants. x_s* / w_s* / out_s* are element strides (only the
// simple variant reads them; the fast one takes NHWC x with pixel stride x_c_total, KRSC w, and
// writes NHWC or NCHW by out_nchw).
#define CC_TC_CONV_PARAMS                                                                                  \
    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, int has_bias,           \
        const T* __restrict__ residual, int has_residual, T* __restrict__ out, int N, int H, int W,        \
        int C, int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, int pad_w,        \
        int dilation_h, int dilation_w, int groups, int act

// Output element offset of (m, channel k) in NHWC or NCHW.
__device__ __forceinline__ cc_index_t cc_tc_out_index(int m, int k, int K, int PQ, int out_nchw) {
    if (!out_nchw) return (cc_index_t)m * K + k;
    const int img = m / PQ;
    return ((cc_index_t)img * K + k) * PQ + (m - img * PQ);
}
