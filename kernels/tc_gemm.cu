// tc_gemm.cu — C = act(A·B + bias[m] + residual) on tensor cores: A (M×K) and B (K×N) row-major
// in float16 or bfloat16 (mma.m16n8k16), or float32 multiplied as tf32 (mma.m16n8k8, operands
// rounded by cvt.rna.tf32); always fp32 accumulation; C in the input dtype. Batched through
// blockIdx.y with element strides between matrices (0 broadcasts a matrix).
//
// Variants, simplest first:
//
// 1. tc_gemm_simple<T> ("analytic"): one warp per 16×8 output tile, 4 warps per block; every
//    lane loads its own A/B fragment elements straight from global memory with the PTX
//    fragment formulas (cc_tc_warp_direct) and issues one mma per k-step. No shared memory, no
//    alignment requirement, any M, N, K, lda, ldb: the layout reference for variant 2.
//
// 2. tc_gemm<T, BM, BN, BK, WM, WN, STAGES, VEC, MINB>, adds:
//    * block tiles staged through shared memory by a STAGES-deep cp.async pipeline (sm_80+;
//      synchronous copies on sm_75, with 2 stages); VEC-element copies (16, 8 or 4 bytes) with
//      zero fill at the edges, VEC the largest the operands' sizes and alignment allow;
//    * ldmatrix.x4 into fragments (tf32: 32-bit shared loads + cvt.rna);
//    * a (BM/WM)×(BN/WN) grid of warps, each a WM×WN tile of (WM/16)·(WN/8) mma per k-step, so
//      every A fragment is reused WN/8 times and every B fragment WM/16 times from registers;
//    * XOR-swizzled shared-memory rows (tc_tile.cuh): conflict-free ldmatrix and cp.async;
//    * blocks rasterised in bands of 8 M-tiles, so resident blocks share A and B in L2.
//
// Configs (smem = STAGES·(BM + BN)·BK·sizeof(T)):
//   128x256x32, warps 2x4 of 64x64, 3 stages, 256 threads: 1 block per SM, the most reuse
//     (32 mma per 4 + 4 ldmatrix.x4), for big GEMMs where every SM gets a tile;
//   128x128x32, warps 2x4 of 64x32, 4 stages, 256 threads, __launch_bounds__(256, 2): 2 blocks;
//   64x64x32, warps 2x2 of 32x32, 3 stages, 128 threads: 4 blocks (_v2, 4-byte copies: 2);
//   *_s2: 2 stages for sm_75; tf32: BK = 16 (the same 64-byte rows and smem bytes).
//
// The reasoning per config: docs/kernel_design.md#tc_gemmcu. Registers, spills and the tensor
// issue ceiling per config and arch: `cuconv kernels --analyze --file tc_gemm.cu`
// (docs/kernel_figures.md). Measured figures belong to the bench (bench/), never here.
#include "tc_tile.cuh"

// A BM×BK tile of A (K contiguous) and a BK×BN tile of B (N contiguous) per stage.
template <typename T, int BM, int BN, int BK, int THREADS, int VEC>
struct TcGemmLoader {
    static constexpr int VEC_A = VEC, VEC_B = VEC;
    static constexpr int A_BYTES = VEC_A * (int)sizeof(T), B_BYTES = VEC_B * (int)sizeof(T);
    static constexpr int A_PER_ROW = BK / VEC_A, B_PER_ROW = BN / VEC_B;
    static constexpr int A_COPIES = BM * A_PER_ROW / THREADS, B_COPIES = BK * B_PER_ROW / THREADS;
    static_assert(BM * A_PER_ROW % THREADS == 0 && BK * B_PER_ROW % THREADS == 0,
                  "every thread issues the same number of copies");
    static constexpr int A_ROW_BYTES = BK * (int)sizeof(T), B_ROW_BYTES = BN * (int)sizeof(T);

    const T* a;
    const T* b;
    int M, N, K, lda, ldb, m0, n0, k0;

    __device__ __forceinline__ void load(unsigned char* sA, unsigned char* sB) {
        const int tid = threadIdx.x;
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            const int c = tid + i * THREADS;
            const int row = c / A_PER_ROW, col = (c % A_PER_ROW) * VEC_A;
            const int m = m0 + row, k = k0 + col;
            const bool ok = m < M && k < K;   // K % VEC_A == 0: a copy is all in or all out
            const T* src = ok ? a + (cc_index_t)m * lda + k : a;
            cc_cp_async_zfill<A_BYTES>(sA + cc_tc_smem_offset<A_ROW_BYTES>(row, col * (int)sizeof(T)), src,
                                       ok ? A_BYTES : 0);
        }
#pragma unroll
        for (int i = 0; i < B_COPIES; ++i) {
            const int c = tid + i * THREADS;
            const int row = c / B_PER_ROW, col = (c % B_PER_ROW) * VEC_B;
            const int k = k0 + row, n = n0 + col;
            const bool ok = k < K && n < N;
            const T* src = ok ? b + (cc_index_t)k * ldb + n : b;
            cc_cp_async_zfill<B_BYTES>(sB + cc_tc_smem_offset<B_ROW_BYTES>(row, col * (int)sizeof(T)), src,
                                       ok ? B_BYTES : 0);
        }
        k0 += BK;
    }
};

// Block id -> (m tile, n tile), in bands of GROUP_M tile rows walked column by column.
__device__ __forceinline__ void cc_tc_raster(int id, int tiles_m, int tiles_n, int& tm, int& tn) {
    constexpr int GROUP_M = 8;
    const int band = id / (GROUP_M * tiles_n);
    const int first = band * GROUP_M;
    const int rows = min(tiles_m - first, GROUP_M);
    const int in_band = id - band * GROUP_M * tiles_n;
    tm = first + in_band % rows;
    tn = in_band / rows;
}

#define CC_TC_GEMM_PARAMS                                                                              \
    const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int M, int N, int K, int lda, \
        int ldb, int ldc, long long stride_a, long long stride_b, long long stride_c,                  \
        const T* __restrict__ bias, int has_bias, const T* __restrict__ residual, int has_residual, int act

template <typename T, int BM, int BN, int BK, int WM, int WN, int STAGES, int VEC, int MINB>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB) tc_gemm(CC_TC_GEMM_PARAMS) {
    constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
    constexpr int MI = WM / 16, NI = WN / 8;
    extern __shared__ __align__(128) unsigned char cc_tc_smem[];

    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN;
    int tm, tn;
    cc_tc_raster(blockIdx.x, tiles_m, tiles_n, tm, tn);
    const long long batch = blockIdx.y;
    a += batch * stride_a;
    b += batch * stride_b;
    c += batch * stride_c;
    if (has_residual) residual += batch * stride_c;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;

    TcGemmLoader<T, BM, BN, BK, THREADS, VEC> loader{a, b, M, N, K, lda, ldb, tm * BM, tn * BN, 0};
    cc_tc_mainloop<T, BM, BN, BK, WM, WN, STAGES, true>(acc, cc_tc_smem, loader, (K + BK - 1) / BK, wm0, wn0, lane);

    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int m = tm * BM + wm0 + mi * 16 + g + 8 * (i >> 1);
                const int n = tn * BN + wn0 + ni * 8 + 2 * t + (i & 1);
                if (m < M && n < N) {
                    const cc_index_t idx = (cc_index_t)m * ldc + n;
                    cc_tc_store<T>(c, idx, acc[mi][ni][i], bias, has_bias, m, residual, has_residual, act);
                }
            }
}

// Variant 1: a block of 4 warps covers 32×16 outputs (2×2 warps of 16×8).
template <typename T>
__global__ void __launch_bounds__(128) tc_gemm_simple(CC_TC_GEMM_PARAMS) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int m0 = blockIdx.x / ((N + 15) / 16) * 32 + (warp >> 1) * 16;
    const int n0 = blockIdx.x % ((N + 15) / 16) * 16 + (warp & 1) * 8;
    const long long batch = blockIdx.y;
    a += batch * stride_a;
    b += batch * stride_b;
    c += batch * stride_c;
    if (has_residual) residual += batch * stride_c;
    const T zero = TcType<T>::from_float(0.0f);
    auto a_at = [&](int m, int k) { return (m0 + m < M && k < K) ? a[(cc_index_t)(m0 + m) * lda + k] : zero; };
    auto b_at = [&](int k, int n) { return (k < K && n0 + n < N) ? b[(cc_index_t)k * ldb + n0 + n] : zero; };
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    cc_tc_warp_direct<T>(acc, K, a_at, b_at, lane);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + g + 8 * (i >> 1), n = n0 + 2 * t + (i & 1);
        if (m < M && n < N) {
            const cc_index_t idx = (cc_index_t)m * ldc + n;
            cc_tc_store<T>(c, idx, acc[i], bias, has_bias, m, residual, has_residual, act);
        }
    }
}
