// gemm.cu — batched single- and double-precision GEMM with a fused epilogue, for im2col+GEMM,
// the 1x1 convolution and Winograd's element-wise stage.
//
//   C[b] (M x N) = act( A[b] (M x K) · B[b] (K x N) + bias[b][m] + residual[b] )
//
// Row-major with leading dimensions lda/ldb/ldc and 64-bit element strides between the batch's
// matrices (0 broadcasts one matrix). blockIdx.z is the batch, blockIdx.y the tile row,
// blockIdx.x the tile column; m_block0/batch0 let the host split a grid past gridDim.y/z's 65535.
// The residual has C's layout; bias is per row (per output channel). Optional pointers come
// with a has_* flag and are never dereferenced when it is 0.
//
// Variants, simplest to fastest (each correct for every M, N, K >= 0; the tests run each
// against the first and against a float64 reference):
//   1. gemm_naive<T, BM, BN>: one thread per output, the K loop straight from global memory
//      (2 loads per FMA). The always-correct reference variant; float or double.
//   2. gemm_tiled<T, TILE>: adds shared-memory tiles of A and B per K step (zero-filled at the
//      edges), so each global element is read once per block instead of TILE times; still one
//      output per thread: 1 FMA per 2 shared loads, bound by shared traffic and issue slots.
//   3. gemm_f32_regblock<BM, BN, BK, TM, TN>: adds 2-D register blocking — each thread keeps a
//      TM x TN micro-tile of accumulators and per k reads TM + TN operands (LDS.128) for TM·TN
//      FMAs; 16-byte global loads where the operands allow (else guarded scalar loads);
//      double-buffered shared tiles (one __syncthreads per K step, the next tile's global loads
//      in flight behind the FMAs); A stored transposed and each thread's rows split in groups
//      of 4 so a quarter-warp reads 8 consecutive float4s (no bank conflicts).
//      Main config 128x128x8 with 8x8 micro-tiles (256 threads, __launch_bounds__(256, 2)):
//      4 FMAs per float loaded from shared memory, 0.031 B/FLOP from global/L2; smaller tiles
//      (64x64x16 4x4, 32x128x16 4x8) serve the small or skinny GEMMs of convolutions.
//   4. gemm_f64_regblock<BM, BN, BK, TM, TN>: variant 3's idea for double (kept apart: variant 3
//      is built around float4): a strided TM x TN micro-tile per thread, double-buffered shared
//      tiles, scalar coalesced global loads; config 64x64x8 with 4x4 (2 FMAs per double loaded).
//
// Variants 3 and 4 share their main loop (register tile, double buffer, one barrier per K step)
// with the convolution kernels: regtile.cuh's; this file supplies the gathers (GemmF32Loader,
// GemmF64Loader). The reasoning behind each config: docs/kernel_design.md#gemmcu; the shared
// loop: docs/main_loops.md. Registers, spills, main-loop mix and issue ceiling per config and
// arch: `cuconv kernels --analyze --file gemm.cu` (docs/kernel_figures.md; the compile matrix
// checks 0 spills and the promised blocks/SM).
#include "regtile.cuh"

// Shared by every variant: one output element's fused epilogue, in cc_epilogue's order.
template <typename T>
__device__ __forceinline__ T gemm_epilogue(T acc, T bias_value, int has_bias, T residual_value,
                                           int has_residual, int act) {
    if (has_bias) acc += bias_value;
    if (has_residual) acc += residual_value;
    return cc_activate(acc, act);
}

// Bits of the `flags` argument, set by the op from the leading dimensions and batch strides
// (the kernel adds the base pointers' 16-byte alignment itself).
#define GEMM_VEC_A 1   // lda, stride_a allow 16-byte loads along k
#define GEMM_VEC_B 2   // ldb, stride_b allow 16-byte loads along n
#define GEMM_VEC_C 4   // ldc, stride_c allow 16-byte stores (and residual loads) along n

// --------------------------------------------------------------------------- 1. naive
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(BM * BN)
gemm_naive(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
           int M, int N, int K, int lda, int ldb, int ldc,
           long long stride_a, long long stride_b, long long stride_c,
           const T* __restrict__ bias, int has_bias, long long stride_bias,
           const T* __restrict__ residual, int has_residual, int act,
           int flags, int m_block0, int batch0) {
    const cc_index_t batch = (cc_index_t)blockIdx.z + batch0;
    const int m = (blockIdx.y + m_block0) * BM + (int)threadIdx.x / BN;
    const int n = blockIdx.x * BN + (int)threadIdx.x % BN;
    if (m >= M || n >= N) return;
    const T* a = A + batch * stride_a + (cc_index_t)m * lda;
    const T* b = B + batch * stride_b + n;
    T acc = T(0);
    for (int k = 0; k < K; ++k) acc = cc_fma(a[k], b[(cc_index_t)k * ldb], acc);
    const cc_index_t c_off = batch * stride_c + (cc_index_t)m * ldc + n;
    C[c_off] = gemm_epilogue(acc, has_bias ? bias[batch * stride_bias + m] : T(0), has_bias,
                             has_residual ? residual[c_off] : T(0), has_residual, act);
}

// --------------------------------------------------------------------------- 2. shared-memory tiled
template <typename T, int TILE>
__global__ void __launch_bounds__(TILE * TILE)
gemm_tiled(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
           int M, int N, int K, int lda, int ldb, int ldc,
           long long stride_a, long long stride_b, long long stride_c,
           const T* __restrict__ bias, int has_bias, long long stride_bias,
           const T* __restrict__ residual, int has_residual, int act,
           int flags, int m_block0, int batch0) {
    __shared__ T As[TILE][TILE + 1];   // +1: the column read As[ty][k] of a warp hits distinct banks
    __shared__ T Bs[TILE][TILE];
    const int tx = (int)threadIdx.x % TILE, ty = (int)threadIdx.x / TILE;
    const cc_index_t batch = (cc_index_t)blockIdx.z + batch0;
    const int m = (blockIdx.y + m_block0) * TILE + ty;
    const int n = blockIdx.x * TILE + tx;
    const T* a = A + batch * stride_a;
    const T* b = B + batch * stride_b;
    T acc = T(0);
    for (int k0 = 0; k0 < K; k0 += TILE) {
        // Zero-fill outside the matrices so the inner loop needs no bounds checks.
        As[ty][tx] = (m < M && k0 + tx < K) ? a[(cc_index_t)m * lda + k0 + tx] : T(0);
        Bs[ty][tx] = (k0 + ty < K && n < N) ? b[(cc_index_t)(k0 + ty) * ldb + n] : T(0);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc = cc_fma(As[ty][k], Bs[k][tx], acc);
        __syncthreads();
    }
    if (m >= M || n >= N) return;
    const cc_index_t c_off = batch * stride_c + (cc_index_t)m * ldc + n;
    C[c_off] = gemm_epilogue(acc, has_bias ? bias[batch * stride_bias + m] : T(0), has_bias,
                             has_residual ? residual[c_off] : T(0), has_residual, act);
}

// --------------------------------------------------------------------------- 3. register-blocked
__device__ __forceinline__ float4 gemm_load4(const float* p) {
    return *reinterpret_cast<const float4*>(p);
}

// Four consecutive elements p[0..3] of a row, those at column index >= limit read as 0.
__device__ __forceinline__ float4 gemm_load4_guarded(const float* row, int col, int limit, bool vec) {
    if (vec && col + 3 < limit) return gemm_load4(row + col);
    float4 v;
    v.x = col + 0 < limit ? row[col + 0] : 0.0f;
    v.y = col + 1 < limit ? row[col + 1] : 0.0f;
    v.z = col + 2 < limit ? row[col + 2] : 0.0f;
    v.w = col + 3 < limit ? row[col + 3] : 0.0f;
    return v;
}

// Variant 3's operand gathers (regtile.cuh's Loader): float4 loads along k of A (stored
// transposed, As[k][m]) and along n of B, each thread's prefetch addresses decoded once.
template <int BM, int BN, int BK, int THREADS>
struct GemmF32Loader {
    static constexpr int A_VECS = BM * BK / 4;         // float4s per A tile (along k)
    static constexpr int B_VECS = BK * BN / 4;         // float4s per B tile (along n)
    static constexpr int A_ITERS = (A_VECS + THREADS - 1) / THREADS;
    static constexpr int B_ITERS = (B_VECS + THREADS - 1) / THREADS;
    static constexpr int A_PITCH = BM + 4;             // keeps rows 16-byte aligned, spreads the transposed stores
    static constexpr int B_PITCH = BN;

    float (*As)[BK][A_PITCH];
    float (*Bs)[BK][B_PITCH];
    int tid, K, k0;
    long long b_step;                                  // BK rows of B
    bool vec_a, vec_b;
    float4 a_next[A_ITERS], b_next[B_ITERS];
    // Each thread's A rows (a row past M or a copy past the tile reads nothing) and B rows,
    // whose pointers then advance by BK rows per tile.
    const float* a_row[A_ITERS];
    int a_kq[A_ITERS];
    bool a_in[A_ITERS];
    const float* b_row[B_ITERS];
    int b_krow[B_ITERS], b_cols[B_ITERS];   // the row within the tile; columns left in the matrix
    bool b_in[B_ITERS];

    __device__ __forceinline__ void init(float (*As_)[BK][A_PITCH], float (*Bs_)[BK][B_PITCH], const float* a,
                                         const float* b, int M, int N, int K_, int m0, int n0, int lda, int ldb) {
        As = As_;
        Bs = Bs_;
        tid = (int)threadIdx.x;
        K = K_;
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            const int row = idx / (BK / 4);
            a_kq[i] = (idx % (BK / 4)) * 4;
            a_in[i] = (A_VECS % THREADS == 0 || idx < A_VECS) && m0 + row < M;
            a_row[i] = a + (a_in[i] ? (cc_index_t)(m0 + row) * lda : 0);
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            const int nq = n0 + (idx % (BN / 4)) * 4;
            b_in[i] = B_VECS % THREADS == 0 || idx < B_VECS;
            b_krow[i] = idx / (BN / 4);
            b_cols[i] = N - nq;
            b_row[i] = b + (b_in[i] ? (cc_index_t)b_krow[i] * ldb + nq : 0);
        }
        b_step = (cc_index_t)BK * ldb;
        k0 = 0;
    }
    // Tile k0 (k0 advancing by BK from 0: the B pointers move along with it).
    __device__ __forceinline__ void fetch() {
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (a_in[i]) v = gemm_load4_guarded(a_row[i], k0 + a_kq[i], K, vec_a);
            a_next[i] = v;
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (b_in[i] && k0 + b_krow[i] < K) v = gemm_load4_guarded(b_row[i], 0, b_cols[i], vec_b);
            b_next[i] = v;
            b_row[i] += b_step;
        }
    }
    __device__ __forceinline__ void advance(int step) { k0 = step * BK; }
    __device__ __forceinline__ void store(int buf) {
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            if (A_VECS % THREADS == 0 || idx < A_VECS) {
                const int row = idx / (BK / 4), kq = (idx % (BK / 4)) * 4;
                As[buf][kq + 0][row] = a_next[i].x;
                As[buf][kq + 1][row] = a_next[i].y;
                As[buf][kq + 2][row] = a_next[i].z;
                As[buf][kq + 3][row] = a_next[i].w;
            }
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            if (B_VECS % THREADS == 0 || idx < B_VECS) {
                const int krow = idx / (BN / 4), nq = (idx % (BN / 4)) * 4;
                *reinterpret_cast<float4*>(&Bs[buf][krow][nq]) = b_next[i];
            }
        }
    }
    __device__ __forceinline__ const float* a_tile(int buf) const { return &As[buf][0][0]; }
    __device__ __forceinline__ const float* b_tile(int buf) const { return &Bs[buf][0][0]; }
    __device__ __forceinline__ void consumed(int) const {}
};

template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), ((BM / TM) * (BN / TN) <= 256 ? 2 : 1))
gemm_f32_regblock(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                  int M, int N, int K, int lda, int ldb, int ldc,
                  long long stride_a, long long stride_b, long long stride_c,
                  const float* __restrict__ bias, int has_bias, long long stride_bias,
                  const float* __restrict__ residual, int has_residual, int act,
                  int flags, int m_block0, int batch0) {
    constexpr int THREADS_N = BN / TN;          // threads along a tile row
    constexpr int THREADS_M = BM / TM;
    constexpr int THREADS = THREADS_M * THREADS_N;
    constexpr int GROUPS_N = TN / 4;            // a thread's columns: GROUPS_N runs of 4
    typedef GemmF32Loader<BM, BN, BK, THREADS> Loader;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tiles are runs of float4");
    static_assert(BM % TM == 0 && BN % TN == 0 && BK % 4 == 0, "tile sizes must divide");

    __shared__ __align__(16) float As[2][BK][Loader::A_PITCH];
    __shared__ __align__(16) float Bs[2][BK][Loader::B_PITCH];

    const int tid = (int)threadIdx.x;
    const int tx = tid % THREADS_N, ty = tid / THREADS_N;
    const cc_index_t batch = (cc_index_t)blockIdx.z + batch0;
    const int m0 = (blockIdx.y + m_block0) * BM;
    const int n0 = blockIdx.x * BN;
    // The op vouches for the leading dimensions and batch strides; the base pointers are checked
    // here, so a plan does not depend on where the caller's arrays happen to start (C's in the
    // epilogue: a flag live across the main loop costs the 128x128 config a spill on sm_100).
    Loader ld;
    ld.vec_a = (flags & GEMM_VEC_A) && cc_aligned16(A);
    ld.vec_b = (flags & GEMM_VEC_B) && cc_aligned16(B);
    ld.init(As, Bs, A + batch * stride_a, B + batch * stride_b, M, N, K, m0, n0, lda, ldb);

    CcRegTile<float, TM, TN, 4, 4, THREADS_M, THREADS_N> tile;
    tile.zero();
    cc_regtile_mainloop<BK, Loader::A_PITCH, Loader::B_PITCH>(tile, ld, (K + BK - 1) / BK, ty, tx);

    // Epilogue: bias, residual, activation applied as the tile is written (one pass over C).
    const bool vec_c = (flags & GEMM_VEC_C) && cc_aligned16(C) && (!has_residual || cc_aligned16(residual));
    float* c = C + batch * stride_c;
    const float* res = has_residual ? residual + batch * stride_c : nullptr;
    const float* bias_b = has_bias ? bias + batch * stride_bias : nullptr;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + tile.row(i, ty);
        if (m >= M) continue;
        const float bv = has_bias ? bias_b[m] : 0.0f;
        const cc_index_t row_off = (cc_index_t)m * ldc;
#pragma unroll
        for (int g = 0; g < GROUPS_N; ++g) {
            const int n = n0 + tile.col(g * 4, tx);
            const float* acc = tile.acc[i] + g * 4;
            if (vec_c && n + 3 < N) {
                float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (has_residual) r = gemm_load4(res + row_off + n);
                float4 y;
                y.x = gemm_epilogue(acc[0], bv, has_bias, r.x, has_residual, act);
                y.y = gemm_epilogue(acc[1], bv, has_bias, r.y, has_residual, act);
                y.z = gemm_epilogue(acc[2], bv, has_bias, r.z, has_residual, act);
                y.w = gemm_epilogue(acc[3], bv, has_bias, r.w, has_residual, act);
                *reinterpret_cast<float4*>(c + row_off + n) = y;
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (n + j < N) {
                        const float rv = has_residual ? res[row_off + n + j] : 0.0f;
                        c[row_off + n + j] = gemm_epilogue(acc[j], bv, has_bias, rv, has_residual, act);
                    }
                }
            }
        }
    }
}

// --------------------------------------------------------------------------- 4. register-blocked, double
// Variant 4's operand gathers (regtile.cuh's Loader): element idx of the A tile is (row
// idx / BK, k idx % BK): BK consecutive threads read one row's run; of the B tile (k idx / BN,
// column idx % BN): whole rows. A is stored transposed (As[k][m]), its rows padded by 1. Each
// thread's element pointers are decoded once; the B pointers advance by BK rows per step.
template <int BM, int BN, int BK, int THREADS>
struct GemmF64Loader {
    static constexpr int A_ITERS = (BM * BK + THREADS - 1) / THREADS;
    static constexpr int B_ITERS = (BK * BN + THREADS - 1) / THREADS;
    static constexpr int A_PITCH = BM + 1, B_PITCH = BN;

    double (*As)[BK][A_PITCH];
    double (*Bs)[BK][B_PITCH];
    int tid, K, k0;
    long long b_step;
    double a_next[A_ITERS], b_next[B_ITERS];
    const double* a_ptr[A_ITERS];
    const double* b_ptr[B_ITERS];
    bool a_in[A_ITERS], b_in[B_ITERS];

    __device__ __forceinline__ void init(double (*As_)[BK][A_PITCH], double (*Bs_)[BK][B_PITCH], const double* a,
                                         const double* b, int M, int N, int K_, int m0, int n0, int lda, int ldb) {
        As = As_;
        Bs = Bs_;
        tid = (int)threadIdx.x;
        K = K_;
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            const int row = idx / BK, kk = idx % BK;
            a_in[i] = ((BM * BK) % THREADS == 0 || idx < BM * BK) && m0 + row < M;
            a_ptr[i] = a + (a_in[i] ? (cc_index_t)(m0 + row) * lda + kk : 0);
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            const int kk = idx / BN, col = idx % BN;
            b_in[i] = ((BK * BN) % THREADS == 0 || idx < BK * BN) && n0 + col < N;
            b_ptr[i] = b + (b_in[i] ? (cc_index_t)kk * ldb + n0 + col : 0);
        }
        b_step = (cc_index_t)BK * ldb;
        k0 = 0;
    }
    __device__ __forceinline__ void fetch() {
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            const int kk = (tid + i * THREADS) % BK;
            a_next[i] = a_in[i] && k0 + kk < K ? a_ptr[i][k0] : 0.0;
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            const int kk = (tid + i * THREADS) / BN;
            b_next[i] = b_in[i] && k0 + kk < K ? *b_ptr[i] : 0.0;
            b_ptr[i] += b_step;
        }
    }
    __device__ __forceinline__ void advance(int step) { k0 = step * BK; }
    __device__ __forceinline__ void store(int buf) {
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            if ((BM * BK) % THREADS == 0 || idx < BM * BK) As[buf][idx % BK][idx / BK] = a_next[i];
        }
#pragma unroll
        for (int i = 0; i < B_ITERS; ++i) {
            const int idx = tid + i * THREADS;
            if ((BK * BN) % THREADS == 0 || idx < BK * BN) Bs[buf][idx / BN][idx % BN] = b_next[i];
        }
    }
    __device__ __forceinline__ const double* a_tile(int buf) const { return &As[buf][0][0]; }
    __device__ __forceinline__ const double* b_tile(int buf) const { return &Bs[buf][0][0]; }
    __device__ __forceinline__ void consumed(int) const {}
};

template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
gemm_f64_regblock(const double* __restrict__ A, const double* __restrict__ B, double* __restrict__ C,
                  int M, int N, int K, int lda, int ldb, int ldc,
                  long long stride_a, long long stride_b, long long stride_c,
                  const double* __restrict__ bias, int has_bias, long long stride_bias,
                  const double* __restrict__ residual, int has_residual, int act,
                  int flags, int m_block0, int batch0) {
    constexpr int THREADS_M = BM / TM;          // a thread's rows are ty + i·THREADS_M
    constexpr int THREADS_N = BN / TN;          // and its columns tx + j·THREADS_N
    constexpr int THREADS = THREADS_M * THREADS_N;
    typedef GemmF64Loader<BM, BN, BK, THREADS> Loader;
    static_assert(BM % TM == 0 && BN % TN == 0, "tile sizes must divide");

    __shared__ double As[2][BK][Loader::A_PITCH];
    __shared__ double Bs[2][BK][Loader::B_PITCH];

    const int tid = (int)threadIdx.x;
    const int tx = tid % THREADS_N, ty = tid / THREADS_N;
    const cc_index_t batch = (cc_index_t)blockIdx.z + batch0;
    const int m0 = (blockIdx.y + m_block0) * BM;
    const int n0 = blockIdx.x * BN;
    Loader ld;
    ld.init(As, Bs, A + batch * stride_a, B + batch * stride_b, M, N, K, m0, n0, lda, ldb);

    CcRegTile<double, TM, TN, 1, 1, THREADS_M, THREADS_N> tile;
    tile.zero();
    cc_regtile_mainloop<BK, Loader::A_PITCH, Loader::B_PITCH>(tile, ld, (K + BK - 1) / BK, ty, tx);

    double* c = C + batch * stride_c;
    const double* res = has_residual ? residual + batch * stride_c : nullptr;
    const double* bias_b = has_bias ? bias + batch * stride_bias : nullptr;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + tile.row(i, ty);
        if (m >= M) continue;
        const double bv = has_bias ? bias_b[m] : 0.0;
        const cc_index_t row_off = (cc_index_t)m * ldc;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tile.col(j, tx);
            if (n < N)
                c[row_off + n] = gemm_epilogue(tile.acc[i][j], bv, has_bias,
                                               has_residual ? res[row_off + n] : 0.0, has_residual, act);
        }
    }
}
