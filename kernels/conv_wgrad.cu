// conv_wgrad.cu — the weight and bias gradients of conv2d (the textbook's §9.8 (a) and (b),
// "wgrad"): dW as the correlation of the input with the upstream gradient, db as its sum.
// NCHW x and dy with KCRS dW, or (template flag NHWC) NHWC x and dy read in place with KRSC dW,
// float or double (accumulation in the element type), any stride, padding, dilation and groups:
//
//   dW[k, c, r, s] = Σ_{n, p, q} dy[n, k, p, q] · x[n, g·Cg + c, p·sh − ph + r·dh, q·sw − pw + s·dw]
//   db[k]          = Σ_{n, p, q} dy[n, k, p, q]                   (g = k / Kg; x is 0 outside,
//                                                                  and dy·0 is a term: NaN for dy = ±Inf)
//
// Variants, simplest to fastest:
//   1. wgrad_direct<T, BLOCK>: one thread per dW element, summing over n, p, q in order.
//      Always correct and deterministic; the tests' yardstick.
//   2. wgrad_implicit_gemm<T, BM, BN, BK, TM, TN, MINB, ATOMIC> adds, per group, a GEMM with
//      M = K/groups, N = Cg·R·S and the long reduction over l = (n, p, q) split across
//      gridDim.y blocks (split-K); a thread owns one reduction lane and walks (n, p, q) with
//      CcDigits3, no division in the loop. Tile machinery as in implicit_gemm.cu (regtile.cuh's
//      main loop).
//        ATOMIC = false (the default): each split writes its partial tile (to dW itself when
//        there is one split, else to a workspace [splits][K·Cg·R·S]) and wgrad_splitk_reduce
//        sums the splits in split order: bit-identical from run to run.
//        ATOMIC = true (deterministic=False): atomicAdd into dW zeroed by wgrad_zero; no
//        workspace, one pass, the low bits vary between runs.
//      db is fused when has_bias: the blocks of N tile 0 also sum their dy tiles per row.
//      STAGES >= 2: the same gathers issued as cp.async into regtile.cuh's STAGES-deep
//      pipeline (no staging registers: 8x8 thread tiles), the same order of products.
//   3. wgrad_splitk_reduce<T>: dW[i] = Σ_z ws_w[z][i] (and db likewise), z in order.
//   4. conv_bias_grad<T, THREADS>: db alone, one block per k, a fixed-tree block reduction (NHWC
//      dy: launched with N·P·Q images of one pixel, the same terms in the same order).
//   5. wgrad_zero<T>: zero-fill for the atomic variant.
//
// Configs (ops/conv_wgrad.py), each deterministic and atomic, NCHW and _nhwc, 256 threads: f32 64x64x8 4x4 and
// 128x64x8 8x4 (main), 2 blocks/SM; f64 64x64x8 4x4, 1 block/SM. With STAGES = 4: f32
// 128x128x8 8x8 (1 block/SM) and f64 64x64x8 8x8 (64 threads).
// Index math: whole-tensor offsets and the reduction index 64-bit; K/groups, Cg·R·S, P·Q and
// the block index int (can_implement checks).
//
// More on the split and the lane walk: docs/kernel_design.md#conv_wgradcu; the shared main
// loop: docs/main_loops.md. Registers, spills and main-loop figures:
// `cuconv kernels --analyze --file conv_wgrad.cu` (docs/kernel_figures.md).
#include "regtile.cuh"

// --------------------------------------------------------------------------- 1. direct
// NHWC = true: x N,H,W,C, dy N,P,Q,K, dW K,R,S,C/groups (idx in dW's own order); the same sum in
// the same order (n, p, q).
template <typename T, int BLOCK, bool NHWC = false>
__global__ void __launch_bounds__(BLOCK, 2)
wgrad_direct(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dw, int N, int C,
             int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h,
             int pad_w, int dil_h, int dil_w, int groups) {
    const int Cg = C / groups, Kg = K / groups, RS = R * S;
    const cc_index_t HW = (cc_index_t)H * W, PQ = (cc_index_t)P * Q;
    const cc_index_t total = (cc_index_t)K * Cg * RS;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    // Strides of dy between output channels and pixels, of x between pixels (a channel's offset:
    // x_c).
    const cc_index_t dy_k = NHWC ? 1 : PQ, dy_pix = NHWC ? (cc_index_t)K : 1, x_pix = NHWC ? (cc_index_t)C : 1;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        int c, r, s;
        if (NHWC) {
            c = (int)(idx % Cg);
            s = (int)((idx / Cg) % S);
            r = (int)((idx / ((cc_index_t)Cg * S)) % R);
        } else {
            s = (int)(idx % S);
            r = (int)((idx / S) % R);
            c = (int)((idx / RS) % Cg);
        }
        const int k = (int)(idx / ((cc_index_t)Cg * RS));
        const int g = k / Kg;
        const cc_index_t x_c = NHWC ? (cc_index_t)g * Cg + c : ((cc_index_t)g * Cg + c) * HW;
        T acc = T(0);
        for (int n = 0; n < N; ++n) {
            const T* dyk = dy + (cc_index_t)n * K * PQ + k * dy_k;
            const T* xc = x + (cc_index_t)n * C * HW + x_c;
#pragma unroll 1
            for (int p = 0; p < P; ++p) {
                const int h = p * stride_h - pad_h + r * dil_h;
                const bool row_in = h >= 0 && h < H;
#pragma unroll 1
                for (int q = 0; q < Q; ++q) {
                    const int ww = q * stride_w - pad_w + s * dil_w;
                    // A tap in the padding contributes dy·0 (NaN for a non-finite dy), as torch's.
                    const T xv = row_in && ww >= 0 && ww < W ? cc_ldg(xc + ((cc_index_t)h * W + ww) * x_pix) : T(0);
                    acc = cc_fma(cc_ldg(dyk + ((cc_index_t)p * Q + q) * dy_pix), xv, acc);
                }
            }
        }
        dw[idx] = acc;
    }
}

// --------------------------------------------------------------------------- 2. implicit GEMM
// Grid: x = groups · ceil(Kg / BM) · ceil(Cg·R·S / BN) (N tile fastest), y = splits.
// STAGES = 0: double buffering through registers; STAGES >= 2: the same gathers issued as
// cp.async into a STAGES-deep pipeline (regtile.cuh's cc_regtile_mainloop_async).
// NHWC = true: x N,H,W,C, dy N,P,Q,K read in place and dW written K,R,S,C/groups — the GEMM's
// columns taken in KRSC order ((r·S + s)·Cg + c), so dW is still the K × (Cg·R·S) row-major
// result; the same lanes and products in the same order (the same bits as NCHW).
template <typename T, int BM, int BN, int BK, int TM, int TN, int MIN_BLOCKS, bool ATOMIC, int STAGES = 0,
          bool NHWC = false>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)
wgrad_implicit_gemm(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ out_w,
                    long long w_split_stride, T* __restrict__ out_b, long long b_split_stride,
                    int has_bias, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                    int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                    int groups, long long chunk) {
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int THREADS_M = BM / TM;
    constexpr int THREADS_N = BN / TN;
    constexpr int VM = TM < 4 ? TM : 4;
    constexpr int VN = TN < 4 ? TN : 4;
    constexpr int A_LOADS = BM * BK / THREADS;
    constexpr int B_LOADS = BN * BK / THREADS;
    constexpr int LANE_STEP = THREADS / BK;        // rows (columns) between a thread's loads
    constexpr int BM_PAD = BM + 4, BN_PAD = BN + 4;
    static_assert(BM % TM == 0 && BN % TN == 0, "the thread tile must divide the block tile");
    static_assert(TM % VM == 0 && TN % VN == 0, "TM and TN are 1, 2 or multiples of 4");
    static_assert(THREADS % BK == 0 && BM % LANE_STEP == 0 && BN % LANE_STEP == 0,
                  "staging: each thread owns one reduction lane and whole rows / columns");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK, "whole tiles");
    static_assert(A_LOADS <= 32 && B_LOADS <= 32, "validity masks are 32 bits");
    static_assert(BM <= THREADS, "the fused bias sums one row per thread");
    constexpr int BUFFERS = STAGES == 0 ? 2 : STAGES;
    constexpr int A_ELEMS = BUFFERS * BK * BM_PAD, B_ELEMS = BUFFERS * BK * BN_PAD;

    __shared__ __align__(16) T smem[A_ELEMS + B_ELEMS];
    auto As = [&](int buf, int k, int m) -> T& { return smem[(buf * BK + k) * BM_PAD + m]; };
    auto Bs = [&](int buf, int k, int n) -> T& { return smem[A_ELEMS + (buf * BK + k) * BN_PAD + n]; };

    const int Cg = C / groups, Kg = K / groups;
    const int RS = R * S, CRS = Cg * RS, PQ = P * Q;
    const cc_index_t HW = (cc_index_t)H * W;
    // Layout strides: dy between output channels and between pixels, x between pixels.
    const cc_index_t dy_k = NHWC ? (cc_index_t)1 : (cc_index_t)PQ, dy_pix = NHWC ? (cc_index_t)K : (cc_index_t)1;
    const cc_index_t x_pix = NHWC ? (cc_index_t)C : (cc_index_t)1;
    const int n_tiles = cc_div_up(CRS, BN), m_tiles = cc_div_up(Kg, BM);
    const int n_tile = blockIdx.x % n_tiles;
    const int m_tile = (blockIdx.x / n_tiles) % m_tiles;
    const int g = blockIdx.x / n_tiles / m_tiles;
    const int m0 = m_tile * BM, n0 = n_tile * BN;
    const int z = blockIdx.y;
    const cc_index_t L = (cc_index_t)N * PQ;
    const cc_index_t l_begin = (cc_index_t)z * chunk;
    const cc_index_t l_end = l_begin + chunk < L ? l_begin + chunk : L;
    const int steps = l_end > l_begin ? (int)((l_end - l_begin + BK - 1) / BK) : 0;
    const bool do_bias = has_bias && n_tile == 0;
    const int tid = threadIdx.x;

    // ---- staging: reduction lane kl (l = l_begin + step·BK + kl), A rows a_r0 + j·LANE_STEP,
    // B columns b_c0 + j·LANE_STEP.
    const int kl = tid % BK;
    const int lane0 = tid / BK;
    unsigned a_ok = 0, b_ok = 0;
#pragma unroll
    for (int j = 0; j < A_LOADS; ++j)
        if (m0 + lane0 + j * LANE_STEP < Kg) a_ok |= 1u << j;
    const T* a_src = dy + ((cc_index_t)g * Kg + m0 + lane0) * dy_k;   // dereferenced only if valid
    cc_index_t col_x[B_LOADS];             // the offset of each B column's channel c (c·H·W; NHWC: c)
    int col_h[B_LOADS], col_w[B_LOADS];    // r·dh − ph, s·dw − pw
#pragma unroll
    for (int j = 0; j < B_LOADS; ++j) {
        const int col = n0 + lane0 + j * LANE_STEP;
        const int cc = col < CRS ? col : 0;
        if (col < CRS) b_ok |= 1u << j;
        const int c = NHWC ? cc % Cg : cc / RS, rs = NHWC ? cc / Cg : cc - (cc / RS) * RS;
        const int r = rs / S, s = rs - (rs / S) * S;
        col_x[j] = NHWC ? (cc_index_t)c : (cc_index_t)c * HW;
        col_h[j] = r * dil_h - pad_h;
        col_w[j] = s * dil_w - pad_w;
    }
    const T* b_src = x + (cc_index_t)g * Cg * (NHWC ? (cc_index_t)1 : HW);
    CcDigits3 at;                          // (n, p, q) of this thread's l
    at.init(l_begin + kl, BK, Q, P);
    // Lane kl exists in every step but the last, which holds l_end − l_begin − (steps − 1)·BK
    // (1 .. BK) lanes.
    const bool in_last = steps > 0 && kl < (int)(l_end - l_begin - (cc_index_t)(steps - 1) * BK);
    bool l_ok = steps > 1 || in_last;

    T a_stage[A_LOADS], b_stage[B_LOADS];
    auto load_step = [&]() {
        const int n = at.hi, p = at.mid, q = at.lo;
        const cc_index_t dy_off = (cc_index_t)n * K * PQ + ((cc_index_t)p * Q + q) * dy_pix;
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j)
            a_stage[j] = (l_ok && (a_ok >> j & 1u)) ? cc_ldg(a_src + (dy_off + (cc_index_t)j * LANE_STEP * dy_k))
                                                    : T(0);
        const cc_index_t x_off = (cc_index_t)n * C * HW;
        const int h0 = p * stride_h, w0 = q * stride_w;
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) {
            const int h = h0 + col_h[j], ww = w0 + col_w[j];
            b_stage[j] = (l_ok && (b_ok >> j & 1u) && h >= 0 && h < H && ww >= 0 && ww < W)
                             ? cc_ldg(b_src + (x_off + col_x[j] + ((cc_index_t)h * W + ww) * x_pix)) : T(0);
        }
    };
    auto next_step = [&](int step) {
        l_ok = step + 1 < steps || in_last;
        at.advance();
    };
    auto store_step = [&](int buf) {
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j) As(buf, kl, lane0 + j * LANE_STEP) = a_stage[j];
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) Bs(buf, kl, lane0 + j * LANE_STEP) = b_stage[j];
    };

    const int tm = tid % THREADS_M, tn = tid / THREADS_M;
    CcRegTile<T, TM, TN, VM, VN, THREADS_M, THREADS_N> rt;
    rt.zero();
    T bacc = T(0);                         // thread tid < BM: db partial of row m0 + tid
    auto sum_bias = [&](int buf) {
        if (do_bias && tid < BM) {
#pragma unroll
            for (int k = 0; k < BK; ++k) bacc += As(buf, k, tid);
        }
    };
    auto a_tile = [&](int buf) -> const T* { return &As(buf, 0, 0); };
    auto b_tile = [&](int buf) -> const T* { return &Bs(buf, 0, 0); };
    if constexpr (STAGES == 0) {
        auto ld = cc_lambda_loader<T>(load_step, next_step, store_step, a_tile, b_tile, sum_bias);
        // The atomic 8x4 tile's epilogue is heavier: unrolled, its loop spills on sm_120.
        cc_regtile_mainloop<BK, BM_PAD, BN_PAD, false, (ATOMIC && TM * TN >= 32) ? 1 : 2>(rt, ld, steps, tm, tn);
    } else {
        // The elements of load_step, each a cp.async into its place in the stage (zero-size where
        // load_step reads 0; the address is then pointer math only).
        constexpr int BYTES = (int)sizeof(T);
        auto copy = [&](int stage, bool live) {
            const bool ok = live && l_ok;
            const T* const dy_lane = a_src + ((cc_index_t)at.hi * K * PQ + ((cc_index_t)at.mid * Q + at.lo) * dy_pix);
            const T* const x_lane = b_src + (cc_index_t)at.hi * C * HW;
            const int h0 = at.mid * stride_h, w0 = at.lo * stride_w;
#pragma unroll
            for (int j = 0; j < A_LOADS; ++j)
                cc_cp_async_zfill<BYTES>(&As(stage, kl, lane0 + j * LANE_STEP),
                                         dy_lane + (cc_index_t)j * LANE_STEP * dy_k,
                                         ok && (a_ok >> j & 1u) ? BYTES : 0);
#pragma unroll
            for (int j = 0; j < B_LOADS; ++j) {
                const int h = h0 + col_h[j], ww = w0 + col_w[j];
                const bool in = ok && (b_ok >> j & 1u) && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W;
                cc_cp_async_zfill<BYTES>(&Bs(stage, kl, lane0 + j * LANE_STEP),
                                         x_lane + (col_x[j] + ((cc_index_t)h * W + ww) * x_pix),
                                         in ? BYTES : 0);
            }
        };
        auto ld = cc_lambda_async_loader<T>(copy, next_step, a_tile, b_tile, sum_bias);
        cc_regtile_mainloop_async<STAGES, BK, BM_PAD, BN_PAD>(rt, ld, steps, tm, tn);
    }

    // ---- epilogue: dW is K × (Cg·R·S) row-major, the GEMM's own layout (NHWC: columns in KRSC order).
    T* ow = out_w + (ATOMIC ? 0 : (cc_index_t)z * w_split_stride);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + rt.row(i, tm);
        if (m >= Kg) continue;
        T* row = ow + ((cc_index_t)g * Kg + m) * CRS;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int col = n0 + rt.col(j, tn);
            if (col >= CRS) continue;
            if (ATOMIC) atomicAdd(row + col, rt.acc[i][j]);
            else row[col] = rt.acc[i][j];
        }
    }
    if (do_bias && tid < BM && m0 + tid < Kg) {
        const cc_index_t k = (cc_index_t)g * Kg + m0 + tid;
        if (ATOMIC) atomicAdd(out_b + k, bacc);
        else out_b[(cc_index_t)z * b_split_stride + k] = bacc;
    }
}

// --------------------------------------------------------------------------- 3. split reduction
template <typename T>
__global__ void __launch_bounds__(256, 4)
wgrad_splitk_reduce(const T* __restrict__ ws_w, const T* __restrict__ ws_b, int splits,
                    long long n_w, long long n_b, T* __restrict__ dw, T* __restrict__ db) {
    const cc_index_t total = n_w + n_b;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t i = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const bool is_w = i < n_w;
        const T* src = is_w ? ws_w + i : ws_b + (i - n_w);
        const cc_index_t stride = is_w ? n_w : n_b;
        T acc = T(0);
        for (int z = 0; z < splits; ++z) acc += src[(cc_index_t)z * stride];   // split order
        if (is_w) dw[i] = acc;
        else db[i - n_w] = acc;
    }
}

// --------------------------------------------------------------------------- 4. bias alone
template <typename T, int THREADS>
__global__ void __launch_bounds__(THREADS, 4)
conv_bias_grad(const T* __restrict__ dy, T* __restrict__ db, int N, int K, int PQ) {
    __shared__ T red[THREADS / 32];
    const int k = blockIdx.x;
    const cc_index_t L = (cc_index_t)N * PQ;
    CcDigits3 at;                          // (n, 0, pq) of l
    at.init(threadIdx.x, THREADS, PQ, 1);
    T acc = T(0);
    for (cc_index_t l = threadIdx.x; l < L; l += THREADS, at.advance())
        acc += cc_ldg(dy + ((cc_index_t)at.hi * K + k) * PQ + at.lo);
    acc = cc_block_sum(acc, red);
    if (threadIdx.x == 0) db[k] = acc;
}

// --------------------------------------------------------------------------- 5. zero fill
template <typename T>
__global__ void __launch_bounds__(256, 4)
wgrad_zero(T* __restrict__ a, long long n_a, T* __restrict__ b, long long n_b) {
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t i = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_a + n_b; i += step) {
        if (i < n_a) a[i] = T(0);
        else b[i - n_a] = T(0);
    }
}
