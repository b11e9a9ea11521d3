// Emulator conformance program: __half and __half2 (cuda_fp16.h), bfloat16
// (cuda_bf16.h) and nvcuda::wmma (mma.h) fp16 tensor-core tiles.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>

// float -> half -> float conversions (all four roundings) and half arithmetic.
extern "C" __global__ void half_ops(const float* __restrict__ x, const __half* __restrict__ a,
                                    const __half* __restrict__ b, __half* out_h, float* out_f, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half* o = out_h + i * 10;
    o[0] = __float2half(x[i]);
    o[1] = __float2half_rn(x[i]);
    o[2] = __float2half_rz(x[i]);
    o[3] = __float2half_ru(x[i]);
    o[4] = __float2half_rd(x[i]);
    o[5] = __hadd(a[i], b[i]);
    o[6] = __hmul(a[i], b[i]);
    o[7] = __hfma(a[i], b[i], o[1]);
    o[8] = a[i] - b[i] * a[i];  // operators
    __half2 p = __halves2half2(a[i], b[i]);
    __half2 q = __hmul2(p, __float2half2_rn(2.0f));
    o[9] = __hadd(__low2half(q), __high2half(q));
    out_f[i * 2] = __half2float(a[i]);
    out_f[i * 2 + 1] = __low2float(__hfma2(p, p, p)) + __high2float(__hadd2(p, p));
}

extern "C" __global__ void bf16_ops(const float* __restrict__ x, __nv_bfloat16* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __nv_bfloat16 h = __float2bfloat16(x[i]);
    out[i * 3] = h;
    out[i * 3 + 1] = __float2bfloat16(__bfloat162float(h) * 3.0f);
    out[i * 3 + 2] = __hmul(h, h);
}

// C[M x N] = A[M x K] (row-major) * B[K x N] (column-major), fp16 in, fp32
// out; one warp per 16x16 tile of C, staged through shared memory for the
// accumulator store (the usual epilogue).
using namespace nvcuda;
extern "C" __global__ void wmma_gemm(const __half* __restrict__ A, const __half* __restrict__ B, float* C, int M,
                                     int N, int K, float beta) {
    __shared__ float stage[4][16 * 16];
    int warp = threadIdx.x / 32;
    int tile = blockIdx.x * 4 + warp;
    int tiles_n = N / 16;
    if (tile >= (M / 16) * tiles_n) return;  // whole warps leave together
    int tm = tile / tiles_n, tn = tile % tiles_n;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc, c;
    wmma::fill_fragment(acc, 0.0f);
    for (int k = 0; k < K; k += 16) {
        wmma::load_matrix_sync(a, A + (size_t)tm * 16 * K + k, K);
        wmma::load_matrix_sync(b, B + (size_t)tn * 16 * K + k, K);
        wmma::mma_sync(acc, a, b, acc);
    }
    wmma::load_matrix_sync(c, C + (size_t)tm * 16 * N + tn * 16, N, wmma::mem_row_major);
    for (int i = 0; i < acc.num_elements; ++i) acc.x[i] += beta * c.x[i];
    wmma::store_matrix_sync(stage[warp], acc, 16, wmma::mem_col_major);
    __syncwarp();
    int lane = threadIdx.x % 32;
    for (int e = lane; e < 256; e += 32) {
        int r = e % 16, col = e / 16;  // stage is column-major
        C[(size_t)(tm * 16 + r) * N + tn * 16 + col] = stage[warp][e];
    }
}
