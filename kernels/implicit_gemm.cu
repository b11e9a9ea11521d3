// implicit_gemm.cu — 2-D convolution as a GEMM whose A operand is gathered from the input on
// the fly (no column matrix is ever written), NCHW / KCRS or NHWC / KRSC, fp32 or fp64, fused
// epilogue.
//
// The GEMM per group g (§8.3 turned on its side, as in cuDNN/CUTLASS "implicit GEMM"):
//   D[m, k] = Σ_kk A[m, kk] · B[kk, k]     M = N·P·Q (output pixels), N = K/groups,
//   A[m, kk] = x[n, g·C/g + c, p·sh − ph + r·dh, q·sw − pw + s·dw]  (0 in the padding)
//   B[kk, k] = w[g·K/g + k, c, r, s];  out[n, g·K/g + k, p, q] = act(D[m, k] + bias + residual)
// A block computes a BM×BN tile of D; the 1-D grid runs the N tiles of an M tile back to back
// (L2 reuse of the input tile they share). Every variant is a template on the element type T
// (float or double, everything in T) and on the layout (NHWC = true: NHWC / KRSC / NHWC),
// which changes only the strides of the gather and of the store.
//
// Variants, simplest first (the tests compare them with each other, with direct.cu and with
// the float64 reference):
//   1. implicit_gemm_simple<T, NHWC, BM, BN, BK> ("analytic"): one thread per output of the
//      tile, single-buffered shared tiles, the flat reduction order kk = (c·R + r)·S + s decoded
//      with a division per loaded element; 2 shared loads per FMA: shared-load bound.
//   2. implicit_gemm<T, NHWC, BM, BN, BK, TM, TN, MIN_BLOCKS> ("optimized") adds:
//      * a TM×TN register tile per thread, fragments read with ld.shared.v4 (32 FMAs per 12
//        loads for the 8x4 tile of the main config), conflict-free;
//      * the reduction ordered (r, s) outer, channels inner in chunks of BK: one padding test
//        per step and no division in the main loop (the price: a partly zero last chunk when
//        C/g is not a multiple of BK);
//      * coalesced staging (a warp's A loads are 32 consecutive output pixels) into padded rows;
//      * double-buffered shared memory, the next step's tiles loaded into registers behind the
//        FMAs (one __syncthreads per step);
//      * an epilogue through shared memory, so the output (bias, residual, activation applied)
//        is written with coalesced stores.
//      Its main loop (register tile, double buffer, one barrier per step) is regtile.cuh's,
//      shared with gemm.cu, conv_dgrad.cu and conv_wgrad.cu; this kernel supplies the gathers.
//   3. implicit_gemm<..., STAGES >= 2> (variant 2 with a single-path loader) adds:
//      * a STAGES-deep cp.async pipeline (regtile.cuh): no staging registers, so an 8x8 thread
//        tile fits; below sm_80 the copies are synchronous (the same kernel, no overlap);
//      * one path per step: each thread's addresses advance by one of three problem-constant
//        increments and the padding test is a per-thread mask of valid filter rows and columns
//        (CcConvAsyncLoader); R and S at most 16. Variant 2's reduction order: bit-identical.
// Configs (ops/implicit_gemm.py), NCHW and NHWC: simple 16x16x16; 64x64x8 4x4 (small grids,
// and the f64 config); 128x64x8 8x4 (main, 2 blocks/SM); 128x128x8 8x4 at 512 threads;
// variant 3: 128x128x8 8x8, 4 stages (1 block/SM), f64 64x64x8 8x8 at 64 threads.
// Index math: tensor offsets 64-bit (cc_index_t), GEMM extents int (can_implement checks).
//
// NHWC, traffic and register reasoning: docs/kernel_design.md#implicit_gemmcu; the shared main
// loop and the single-path loader: docs/main_loops.md. Registers, spills and main-loop figures:
// `cuconv kernels --analyze --file implicit_gemm.cu` (docs/kernel_figures.md).
#include "regtile.cuh"

// Arguments shared by both variants and by kernels/direct.cu (same order), so the op passes
// one tuple to any of them.
#define CC_CONV_PARAMS                                                                       \
    const T* __restrict__ x, const T* __restrict__ w,                                        \
    const T* __restrict__ bias, int has_bias,                                                \
    const T* __restrict__ residual, int has_residual,                                        \
    T* __restrict__ out,                                                                     \
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,                           \
    int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w,        \
    int groups, int act

// Which (group, M tile, N tile) this block computes; N tile fastest.
struct ConvTile {
    int g, m0, n0;
};

__device__ __forceinline__ ConvTile cc_conv_tile(int m_tiles, int n_tiles, int BM, int BN) {
    const int n_tile = blockIdx.x % n_tiles;
    const int rest = blockIdx.x / n_tiles;
    const int m_tile = rest % m_tiles;
    ConvTile t;
    t.g = rest / m_tiles;
    t.m0 = m_tile * BM;
    t.n0 = n_tile * BN;
    return t;
}

// Write one finished accumulator of D[m, k] (group-local k) to out (NCHW, or NHWC where pixel
// m's K channels are contiguous) with the epilogue.
template <typename T, bool NHWC>
__device__ __forceinline__ void cc_conv_store(T acc, T* __restrict__ out, int m, int k_global,
                                              int K, int PQ, const T* bias, const T* residual,
                                              int act) {
    cc_index_t idx;
    if (NHWC) {
        idx = (cc_index_t)m * K + k_global;
    } else {
        const int n = m / PQ;
        const int pq = m - n * PQ;
        idx = ((cc_index_t)n * K + k_global) * PQ + pq;
    }
    out[idx] = cc_epilogue(acc, bias, k_global, residual, idx, act);
}

// --------------------------------------------------------------------------- 1. simple
template <typename T, bool NHWC, int BM, int BN, int BK>
__global__ void __launch_bounds__(BM * BN)
implicit_gemm_simple(CC_CONV_PARAMS) {
    constexpr int THREADS = BM * BN;
    __shared__ T As[BK][BM];
    __shared__ T Bs[BK][BN];

    const int Cg = C / groups, Kg = K / groups;
    const int RS = R * S, CRS = Cg * RS, PQ = P * Q;
    const int M = N * PQ;
    const cc_index_t HW = (cc_index_t)H * W;
    const ConvTile tile = cc_conv_tile(cc_div_up(M, BM), cc_div_up(Kg, BN), BM, BN);

    const int tid = threadIdx.x;
    const int tm = tid % BM, tn = tid / BM;
    T acc = T(0);

    for (int kk0 = 0; kk0 < CRS; kk0 += BK) {
        for (int e = tid; e < BM * BK; e += THREADS) {
            const int ml = e % BM, kl = e / BM;
            const int m = tile.m0 + ml, kk = kk0 + kl;
            T v = T(0);
            if (m < M && kk < CRS) {
                int c, r, s;
                if (NHWC) {      // kk = (r·S + s)·Cg + c
                    const int rs = kk / Cg;
                    c = kk - rs * Cg;
                    r = rs / S;
                    s = rs - r * S;
                } else {         // kk = (c·R + r)·S + s
                    c = kk / RS;
                    const int rs = kk - c * RS;
                    r = rs / S;
                    s = rs - r * S;
                }
                const int n = m / PQ, pq = m - n * PQ;
                const int p = pq / Q, q = pq - p * Q;
                const int h = p * stride_h - pad_h + r * dilation_h;
                const int ww = q * stride_w - pad_w + s * dilation_w;
                if (h >= 0 && h < H && ww >= 0 && ww < W) {
                    const cc_index_t off = NHWC
                        ? ((cc_index_t)n * HW + (cc_index_t)h * W + ww) * C + (cc_index_t)tile.g * Cg + c
                        : ((cc_index_t)n * C + (cc_index_t)tile.g * Cg + c) * HW + (cc_index_t)h * W + ww;
                    v = cc_ldg(x + off);
                }
            }
            As[kl][ml] = v;
        }
        for (int e = tid; e < BK * BN; e += THREADS) {
            const int kl = e % BK, nl = e / BK;   // kk fastest: the weights are contiguous in kk
            const int k = tile.n0 + nl, kk = kk0 + kl;
            T v = T(0);
            if (k < Kg && kk < CRS) v = cc_ldg(w + ((cc_index_t)tile.g * Kg + k) * CRS + kk);
            Bs[kl][nl] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kl = 0; kl < BK; ++kl) acc = cc_fma(As[kl][tm], Bs[kl][tn], acc);
        __syncthreads();
    }

    const int m = tile.m0 + tm, k = tile.n0 + tn;
    if (m < M && k < Kg)
        cc_conv_store<T, NHWC>(acc, out, m, tile.g * Kg + k, K, PQ, has_bias ? bias : nullptr,
                               has_residual ? residual : nullptr, act);
}

// --------------------------------------------------------------------------- 2. optimized
// STAGES = 0: variant 2 (double buffering through registers, the gathers above); STAGES >= 2:
// variant 3 (regtile.cuh's CcConvAsyncLoader: a STAGES-deep cp.async pipeline, one path per
// step; the reduction in variant 2's order, so both add the same products in the same order).
template <typename T, bool NHWC, int BM, int BN, int BK, int TM, int TN, int MIN_BLOCKS, int STAGES = 0>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)
implicit_gemm(CC_CONV_PARAMS) {
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int THREADS_M = BM / TM;             // threads along M in the compute layout
    constexpr int VM = TM < 4 ? TM : 4;            // fragment runs: up to 4 contiguous elements
    constexpr int VN = TN < 4 ? TN : 4;
    constexpr int A_LOADS = BM * BK / THREADS;     // A elements each thread stages per step
    constexpr int B_LOADS = BN * BK / THREADS;
    constexpr int A_K_STEP = THREADS / BM;         // k rows covered by one pass of the threads
    constexpr int B_N_STEP = THREADS / BK;
    constexpr int BN_PAD = BN + 4;                 // Bs row pitch: conflict-free k-fastest stores
    static_assert(BM % TM == 0 && BN % TN == 0, "the thread tile must divide the block tile");
    static_assert(TM % VM == 0 && TN % VN == 0, "TM and TN are 1, 2 or multiples of 4");
    static_assert(THREADS % BM == 0 && BK % A_K_STEP == 0, "A staging: each thread owns one pixel");
    static_assert(THREADS % BK == 0 && BN % B_N_STEP == 0, "B staging: each thread owns one channel");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK, "whole tiles");
    constexpr int THREADS_N = BN / TN;
    constexpr int A_FLOATS = 2 * BK * BM, B_FLOATS = 2 * BK * BN_PAD;
    constexpr int EPI_FLOATS = THREADS_N * BM;     // one epilogue pass: column j of every thread tile
    typedef CcConvAsyncLoader<T, BM, BN, BK, THREADS, STAGES> AsyncLoader;
    constexpr int MAIN_FLOATS = STAGES == 0 ? A_FLOATS + B_FLOATS : AsyncLoader::ELEMS;
    constexpr int SMEM_FLOATS = MAIN_FLOATS > EPI_FLOATS ? MAIN_FLOATS : EPI_FLOATS;

    // One buffer: As[2][BK][BM], then Bs[2][BK][BN_PAD]; the epilogue reuses all of it.
    __shared__ __align__(16) T smem[SMEM_FLOATS];
    auto As = [&](int buf, int k, int m) -> T& { return smem[(buf * BK + k) * BM + m]; };
    auto Bs = [&](int buf, int k, int n) -> T& { return smem[A_FLOATS + (buf * BK + k) * BN_PAD + n]; };

    const int Cg = C / groups, Kg = K / groups;
    const int RS = R * S, CRS = Cg * RS, PQ = P * Q;
    const int M = N * PQ;
    const cc_index_t HW = (cc_index_t)H * W;
    const ConvTile tile = cc_conv_tile(cc_div_up(M, BM), cc_div_up(Kg, BN), BM, BN);
    const int tid = threadIdx.x;
    // ---- compute layout: thread (tm, tn) owns rows m_local(i), columns n_local(j), in runs of
    // VM (VN) contiguous elements, the runs THREADS_M·VM apart.
    const int tm = tid % THREADS_M, tn = tid / THREADS_M;
    CcRegTile<T, TM, TN, VM, VN, THREADS_M, THREADS_N> rt;
    if constexpr (STAGES == 0) {
        // The layout as strides (elements): between channels of x (the pixel stride is 1 in NCHW,
        // C in NHWC), between channels and between taps of one filter. Offsets within the weight
        // tensor are int (the op checks they fit), offsets into x 64-bit.
        const cc_index_t x_c_stride = NHWC ? (cc_index_t)1 : HW;
        const int w_c_stride = NHWC ? 1 : RS;
        const int w_tap_stride = NHWC ? Cg : 1;

        // ---- A staging: this thread gathers pixel m (fixed) for channels c0 + a_k0 + j·A_K_STEP.
        const int a_ml = tid % BM;
        const int a_k0 = tid / BM;
        const int a_m = tile.m0 + a_ml;
        const bool a_m_ok = a_m < M;
        const int a_c_limit = Cg - a_k0;           // channel c0 + a_k0 + j·A_K_STEP exists iff c0 + j·A_K_STEP < this
        int a_h0 = 0, a_w0 = 0;
        const T* a_src = x;                        // (n, g·Cg + a_k0) at pixel (0, 0); dereferenced only if a_m_ok
        if (a_m_ok) {
            const int n = a_m / PQ, pq = a_m - n * PQ;
            const int p = pq / Q, q = pq - p * Q;
            a_h0 = p * stride_h - pad_h;
            a_w0 = q * stride_w - pad_w;
            a_src = x + ((cc_index_t)n * C * HW + (cc_index_t)(tile.g * Cg + a_k0) * x_c_stride);
        }
        // ---- B staging: this thread loads channel c0 + b_kl (fixed) of filters n0 + b_n0 + j·B_N_STEP.
        // The op checks that the weight tensor has fewer than 2**31 elements: int offsets.
        const int b_kl = tid % BK;
        const int b_n0 = tid / BK;
        const int b_c_limit = Cg - b_kl;
        const T* b_src = w + ((tile.g * Kg + tile.n0 + b_n0) * CRS + b_kl * w_c_stride);  // dereferenced only if valid
        unsigned b_k_ok = 0;                       // bit j: filter n0 + b_n0 + j·B_N_STEP exists
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j)
            if (tile.n0 + b_n0 + j * B_N_STEP < Kg) b_k_ok |= 1u << j;

        T a_stage[A_LOADS], b_stage[B_LOADS];

        // Reduction step state: tap (r, s) as its input displacement (tap_h, tap_w) and its filter
        // offset (r·S + s)·w_tap_stride, channel chunk c0 and that chunk's offsets into x
        // (c0·x_c_stride) and w (c0·w_c_stride).
        int tap_h = 0, tap_w = 0, s = 0, tap_rs = 0, c0 = 0, w_chunk = 0;
        cc_index_t x_chunk = 0;

        // Gather the tiles of the current step into registers; zero where out of range.
        auto load_step = [&]() {
            const int h = a_h0 + tap_h, ww = a_w0 + tap_w;
            const bool pix_ok = a_m_ok && h >= 0 && h < H && ww >= 0 && ww < W;
            // pointer math only, see pix_ok
            const T* a_pix = a_src + x_chunk + (NHWC ? (cc_index_t)(h * W + ww) * C : (cc_index_t)(h * W + ww));
#pragma unroll
            for (int j = 0; j < A_LOADS; ++j)
                a_stage[j] = (pix_ok && c0 + j * A_K_STEP < a_c_limit) ? cc_ldg(a_pix + j * A_K_STEP * x_c_stride) : T(0);
            const bool c_ok = c0 < b_c_limit;
#pragma unroll
            for (int j = 0; j < B_LOADS; ++j)
                b_stage[j] = (c_ok && (b_k_ok >> j & 1u)) ? cc_ldg(b_src + (j * B_N_STEP * CRS + w_chunk + tap_rs)) : T(0);
        };
        auto next_step = [&](int) {
            c0 += BK;
            x_chunk += BK * x_c_stride;
            w_chunk += BK * w_c_stride;
            if (c0 >= Cg) {
                c0 = 0;
                x_chunk = 0;
                w_chunk = 0;
                tap_rs += w_tap_stride;
                tap_w += dilation_w;
                if (++s == S) {
                    s = 0;
                    tap_w = 0;
                    tap_h += dilation_h;
                }
            }
        };
        auto store_step = [&](int buf) {
#pragma unroll
            for (int j = 0; j < A_LOADS; ++j) As(buf, a_k0 + j * A_K_STEP, a_ml) = a_stage[j];
#pragma unroll
            for (int j = 0; j < B_LOADS; ++j) Bs(buf, b_kl, b_n0 + j * B_N_STEP) = b_stage[j];
        };

        rt.zero();
        auto ld = cc_lambda_loader<T>(load_step, next_step, store_step, [&](int buf) -> const T* { return &As(buf, 0, 0); },
                                      [&](int buf) -> const T* { return &Bs(buf, 0, 0); }, [](int) {});
        cc_regtile_mainloop<BK, BM, BN_PAD, true>(rt, ld, RS * cc_div_up(Cg, BK), tm, tn);   // RS, Cg >= 1
    } else {
        // Variant 3: the reduction is (r < R) × (s < S) × (chunks of BK of the Cg channels).
        AsyncLoader ld;
        const cc_index_t pix_stride = NHWC ? (cc_index_t)C : 1;   // between neighbouring pixels of x
        const cc_index_t x_c_stride = NHWC ? (cc_index_t)1 : HW;  // between channels of x
        const int w_c_stride = NHWC ? 1 : RS, w_tap_stride = NHWC ? Cg : 1;
        const int chunks = cc_div_up(Cg, BK);
        const int a_m = tile.m0 + tid % BM, a_k0 = tid / BM, b_kl = tid % BK, b_n0 = tid / BK;
        ld.init(smem, Cg, S, tile.n0 + b_n0 < Kg ? Kg - tile.n0 - b_n0 : 0);
        ld.a_ptr = x;
        if (a_m < M) {
            const int n = a_m / PQ, pq = a_m - n * PQ;
            const int p = pq / Q, q = pq - p * Q;
            const int h0 = p * stride_h - pad_h, w0 = q * stride_w - pad_w;
            for (int r = 0; r < R; ++r) ld.set_row_valid(r, (unsigned)(h0 + r * dilation_h) < (unsigned)H);
            for (int t = 0; t < S; ++t) ld.set_col_valid(t, (unsigned)(w0 + t * dilation_w) < (unsigned)W);
            // Pointer math only: the first tap may be padding (the mask guards every read).
            ld.a_ptr = x + ((cc_index_t)n * C * HW + (cc_index_t)(tile.g * Cg + a_k0) * x_c_stride +
                            ((cc_index_t)h0 * W + w0) * pix_stride);
        }
        const cc_index_t back = (cc_index_t)(chunks - 1) * BK * x_c_stride;   // the last chunk back to c0 = 0
        ld.a_j = A_K_STEP * x_c_stride;
        ld.a_inc_c = BK * x_c_stride;
        ld.a_inc_s = dilation_w * pix_stride - back;
        ld.a_inc_r = ((cc_index_t)dilation_h * W - (cc_index_t)(S - 1) * dilation_w) * pix_stride - back;
        ld.b_ptr = w + ((tile.g * Kg + tile.n0 + b_n0) * CRS + b_kl * w_c_stride);
        ld.b_j = B_N_STEP * CRS;
        ld.b_inc_c = BK * w_c_stride;
        ld.b_inc_s = ld.b_inc_r = w_tap_stride - (chunks - 1) * BK * w_c_stride;
        rt.zero();
        cc_regtile_mainloop_async<STAGES, BK, AsyncLoader::A_PITCH, AsyncLoader::B_PITCH>(rt, ld, RS * chunks, tm, tn);
    }

    // ---- epilogue, one thread-tile column j per pass: every thread parks acc[·][j] in shared
    // memory (the main loop's last __syncthreads freed it), then the block writes the
    // THREADS_N × BM slab — with consecutive threads on consecutive m in NCHW (coalesced
    // stores along a row of the output plane), on consecutive columns in NHWC (where an output
    // pixel's channels are contiguous) — through one (not TM·TN inlined) copy of the epilogue.
    const T* bias_or_null = has_bias ? bias : nullptr;
    const T* residual_or_null = has_residual ? residual : nullptr;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int col0 = rt.col(j, 0);   // column of thread tn: col0 + tn·VN
#pragma unroll
        for (int i = 0; i < TM; ++i) smem[tn * BM + rt.row(i, tm)] = rt.acc[i][j];
        __syncthreads();
#pragma unroll 1
        for (int e = tid; e < EPI_FLOATS; e += THREADS) {
            const int ml = NHWC ? e / THREADS_N : e % BM;
            const int col = NHWC ? e % THREADS_N : e / BM;
            const int m = tile.m0 + ml, k = tile.n0 + col0 + col * VN;
            if (m < M && k < Kg)
                cc_conv_store<T, NHWC>(smem[col * BM + ml], out, m, tile.g * Kg + k, K, PQ, bias_or_null,
                                       residual_or_null, act);
        }
        __syncthreads();
    }
}
