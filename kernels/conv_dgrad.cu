// conv_dgrad.cu — the data gradient of conv2d (the textbook's §9.8 (c), "dgrad"): dX as the
// full convolution of dY with the rotated filter, i.e. the transposed convolution. NCHW dy and
// dx with KCRS w, or (template flag NHWC) NHWC dy and dx with KRSC w read and written in place,
// float or double (accumulation in the element type), any stride, padding (the end padding
// only shapes P and Q, which the kernels are given), dilation and groups:
//
//   dx[n, g·Cg + c, h, w] = Σ_{k < Kg} Σ_{r, s} dy[n, g·Kg + k, p, q] · w[g·Kg + k, c, r, s]
//     over the taps with h + pad_h − r·dil_h = p·stride_h, 0 <= p < P, and likewise for
//     (w, s, q). Every dx element is written exactly once; no atomics, no zero-inserted dy.
//
// Variants, simplest to fastest:
//   1. dgrad_direct<T, BLOCK>: one thread per dx element (grid-stride); every (r, s) is tested
//      for the divisibility above and the reachable ones summed over k. Always correct: the
//      yardstick of the tests and the fallback for problems the GEMM's int math cannot hold.
//   2. dgrad_implicit_gemm<T, BM, BN, BK, TM, TN, MINB> adds CUTLASS's dgrad as an implicit GEMM
//      per group and per stride *phase* (h mod stride_h, w mod stride_w): within a phase the
//      taps that reach a pixel are the same for every pixel (an arithmetic progression of r
//      and of s), so each phase is a dense GEMM with no inserted zeros and no per-element tap
//      test — M = the phase's pixels, N = C/groups, reduction = K/groups × the phase's taps.
//      At stride 1 there is one phase with all R·S taps; a phase no tap reaches gets zeros.
//      The tile machinery is implicit_gemm.cu's (register tile, double-buffered shared memory,
//      the epilogue parked in shared memory; the main loop is regtile.cuh's); A is gathered
//      from dy, B from w at the tap.
//   3. dgrad_implicit_gemm<..., STAGES >= 2>: the same GEMM through regtile.cuh's STAGES-deep
//      cp.async pipeline and single-path loader (per-thread masks of the taps that hit dy,
//      three address increments chosen by selects; 8x8 thread tiles), in variant 2's order.
//   In variants 2 and 3 a tap whose dy row or column falls outside dy reads a zero, exact unless
//      the weight is non-finite (0·Inf = NaN, a term torch's col2im does not have): the epilogue
//      recomputes an output that came out non-finite over its true terms (cc_dgrad_sum,
//      dgrad_direct's sum).
// All variants sum the reachable taps in the same order (r, then s, then k), one fma each, so
// they agree bit for bit, in either layout (tests/test_conv_dgrad.py, test_grad_nhwc.py check it).
// NHWC changes only the strides of the gathers (dy: channels 1 apart, pixels K; w: channels 1,
// taps Cg) and the epilogue's order (consecutive threads take consecutive channel runs).
//
// Configs (ops/conv_dgrad.py; each also as an _nhwc config), 256 threads: f32 64x64x8 4x4 and 128x64x8 8x4 (main), 2
// blocks/SM; f64 64x64x8 4x4, 1 block/SM. Shared memory 2·BK·(BM + BN + 4)·sizeof(T) bytes.
// Variant 3: f32 128x128x8 8x8 (256 threads, 1 block/SM) and f64 64x64x8 8x8 (64 threads),
// 4 stages, filters up to 16x16 (the tap mask); shared memory STAGES·BK·(BM + BN + 4)·sizeof(T).
// Index math: whole-tensor offsets 64-bit (cc_index_t); the phase GEMM's M, the block index and
// weight offsets int (the op's can_implement rejects problems where they would not fit).
//
// The phase derivation: docs/kernel_design.md#conv_dgradcu; the shared main loop and the
// single-path loader: docs/main_loops.md. Registers, spills and main-loop figures:
// `cuconv kernels --analyze --file conv_dgrad.cu` (docs/kernel_figures.md).
#include "regtile.cuh"

#define CC_DGRAD_PARAMS(T)                                                                   \
    const T* __restrict__ w, const T* __restrict__ dy, T* __restrict__ dx,                   \
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,                           \
    int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w,        \
    int groups

// --------------------------------------------------------------------------- 1. direct
// NHWC = true: dy N,P,Q,K, w K,R,S,C/groups, dx N,H,W,C (idx runs over dx in its own order, so
// consecutive threads write consecutive channels); the same sum in the same order.
template <typename T, int BLOCK, bool NHWC = false>
__global__ void __launch_bounds__(BLOCK, 2)
dgrad_direct(CC_DGRAD_PARAMS(T)) {
    const int Cg = C / groups, Kg = K / groups, RS = R * S;
    const cc_index_t HW = (cc_index_t)H * W, PQ = (cc_index_t)P * Q;
    const cc_index_t total = (cc_index_t)N * C * HW;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        if constexpr (NHWC) {
            const int c = (int)(idx % C);
            const cc_index_t pix = idx / C;
            const int ww = (int)(pix % W);
            const int h = (int)((pix / W) % H);
            const cc_index_t n = pix / HW;
            const int g = c / Cg, cl = c - g * Cg;
            dx[idx] = cc_dgrad_sum<T, T, true>(dy + n * PQ * K + (cc_index_t)g * Kg,
                                               w + (cc_index_t)g * Kg * RS * Cg + cl, Kg, (cc_index_t)RS * Cg, P, Q,
                                               R, S, h, ww, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                               K, Cg);
        } else {
            const int ww = (int)(idx % W);
            const int h = (int)((idx / W) % H);
            const cc_index_t nc = idx / HW;
            const int c = (int)(nc % C);
            const cc_index_t n = nc / C;
            const int g = c / Cg, cl = c - g * Cg;
            dx[idx] = cc_dgrad_sum(dy + (n * K + (cc_index_t)g * Kg) * PQ, w + ((cc_index_t)g * Kg * Cg + cl) * RS,
                                   Kg, (cc_index_t)Cg * RS, P, Q, R, S, h, ww, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w);
        }
    }
}

// --------------------------------------------------------------------------- 2. implicit GEMM
// The tap progressions per phase: cc_dgrad_taps in common.cuh.
// STAGES = 0: double buffering through registers (the gathers below); STAGES >= 2: variant 3,
// regtile.cuh's cp.async pipeline with its single-path CcConvAsyncLoader (the same reduction
// order: taps outer, chunks of output channels inner).
// NHWC = true: dy N,P,Q,K, w K,R,S,C/groups, dx N,H,W,C read and written in place — the same
// gathers with the layout's strides (dy_k, dy_pix, w_c, w_tap below), the same products in the
// same order (the same bits as NCHW); the epilogue hands consecutive threads consecutive
// channel runs instead of consecutive pixels.
template <typename T, int BM, int BN, int BK, int TM, int TN, int MIN_BLOCKS, int STAGES = 0, bool NHWC = false>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)
dgrad_implicit_gemm(CC_DGRAD_PARAMS(T)) {
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int THREADS_M = BM / TM;
    constexpr int THREADS_N = BN / TN;
    constexpr int VM = TM < 4 ? TM : 4;
    constexpr int VN = TN < 4 ? TN : 4;
    constexpr int A_LOADS = BM * BK / THREADS;
    constexpr int B_LOADS = BN * BK / THREADS;
    constexpr int A_K_STEP = THREADS / BM;
    constexpr int B_N_STEP = THREADS / BK;
    constexpr int BN_PAD = BN + 4;
    static_assert(BM % TM == 0 && BN % TN == 0, "the thread tile must divide the block tile");
    static_assert(TM % VM == 0 && TN % VN == 0, "TM and TN are 1, 2 or multiples of 4");
    static_assert(THREADS % BM == 0 && BK % A_K_STEP == 0, "A staging: each thread owns one pixel");
    static_assert(THREADS % BK == 0 && BN % B_N_STEP == 0, "B staging: each thread owns one channel k");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK, "whole tiles");
    static_assert(B_LOADS <= 32, "the B validity mask is 32 bits");
    constexpr int A_ELEMS = 2 * BK * BM, B_ELEMS = 2 * BK * BN_PAD;
    constexpr int EPI_ELEMS = THREADS_N * BM;
    typedef CcConvAsyncLoader<T, BM, BN, BK, THREADS, STAGES> AsyncLoader;
    constexpr int MAIN_ELEMS = STAGES == 0 ? A_ELEMS + B_ELEMS : AsyncLoader::ELEMS;
    constexpr int SMEM_ELEMS = MAIN_ELEMS > EPI_ELEMS ? MAIN_ELEMS : EPI_ELEMS;

    __shared__ __align__(16) T smem[SMEM_ELEMS];
    __shared__ int non_finite;       // set by the epilogue when it stored a non-finite value
    auto As = [&](int buf, int k, int m) -> T& { return smem[(buf * BK + k) * BM + m]; };
    auto Bs = [&](int buf, int k, int n) -> T& { return smem[A_ELEMS + (buf * BK + k) * BN_PAD + n]; };

    const int Cg = C / groups, Kg = K / groups;
    const int RS = R * S, PQ = P * Q;
    // Layout strides: dy between output channels and between pixels, w between input channels
    // and between taps (NCHW: PQ, 1, RS, 1; NHWC: 1, K, 1, Cg).
    const cc_index_t dy_k = NHWC ? (cc_index_t)1 : (cc_index_t)PQ, dy_pix = NHWC ? (cc_index_t)K : (cc_index_t)1;
    const int w_c = NHWC ? 1 : RS, w_tap = NHWC ? Cg : 1;
    // Block -> (group, phase, M tile, N tile), N tile fastest. Every phase gets the M tiles of
    // the largest one (phase 0); the surplus tiles of smaller phases leave at once.
    const int m_tiles = cc_div_up(N * cc_div_up(H, stride_h) * cc_div_up(W, stride_w), BM);
    const int n_tiles = cc_div_up(Cg, BN);
    const int phases = stride_h * stride_w;
    int blk = blockIdx.x;
    const int n_tile = blk % n_tiles;
    blk /= n_tiles;
    const int m_tile = blk % m_tiles;
    blk /= m_tiles;
    const int phase = blk % phases;
    const int g = blk / phases;
    const int phase_h = phase / stride_w, phase_w = phase - (phase / stride_w) * stride_w;
    const int Hp = cc_div_up(H - phase_h, stride_h), Wp = cc_div_up(W - phase_w, stride_w);
    const int HWp = Hp * Wp;
    const int M = N * HWp;
    const int m0 = m_tile * BM, n0 = n_tile * BN;
    if (m0 >= M) return;   // uniform across the block, before any barrier

    const CcDgradTaps th = cc_dgrad_taps(phase_h + pad_h, R, stride_h, dilation_h);
    const CcDgradTaps tw = cc_dgrad_taps(phase_w + pad_w, S, stride_w, dilation_w);
    const int tid = threadIdx.x;

    const int tm = tid % THREADS_M, tn = tid / THREADS_M;
    CcRegTile<T, TM, TN, VM, VN, THREADS_M, THREADS_N> rt;
    if (tid == 0) non_finite = 0;        // read after the epilogue's barriers
    if constexpr (STAGES == 0) {
        // ---- A staging: this thread gathers phase pixel a_m for channels k0 + a_k0 + j·A_K_STEP.
        const int a_ml = tid % BM;
        const int a_k0 = tid / BM;
        const int a_m = m0 + a_ml;
        const bool a_m_ok = a_m < M;
        const int a_k_limit = Kg - a_k0;
        int a_p0 = 0, a_q0 = 0;                   // dy row and column of the first tap
        const T* a_src = dy;                      // dy[n, g·Kg + a_k0, 0, 0]; dereferenced only if a_m_ok
        if (a_m_ok) {
            const int n = a_m / HWp, rem = a_m - n * HWp;
            const int i = rem / Wp, j = rem - i * Wp;
            a_p0 = i + th.off0;
            a_q0 = j + tw.off0;
            a_src = dy + (cc_index_t)n * K * PQ + ((cc_index_t)g * Kg + a_k0) * dy_k;
        }
        // ---- B staging: this thread loads output channel k0 + b_kl of input channels
        // n0 + b_n0 + j·B_N_STEP. The op checks that w has fewer than 2**31 elements: int offsets.
        const int b_kl = tid % BK;
        const int b_n0 = tid / BK;
        const int b_k_limit = Kg - b_kl;
        const int CgRS = Cg * RS;
        const T* b_src = w + ((g * Kg + b_kl) * CgRS + (n0 + b_n0) * w_c);   // dereferenced only if valid
        unsigned b_c_ok = 0;
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j)
            if (n0 + b_n0 + j * B_N_STEP < Cg) b_c_ok |= 1u << j;

        T a_stage[A_LOADS], b_stage[B_LOADS];

        // Reduction step state: tap ranks (tr, ts), the filter tap (r, s), the dy displacement of
        // the tap (tap_p, tap_q), channel chunk k0 and its offsets into dy (k0·P·Q) and w (k0·Cg·R·S).
        int tr = 0, ts = 0, r = th.first, s = tw.first, tap_p = 0, tap_q = 0, k0 = 0, w_chunk = 0;
        cc_index_t dy_chunk = 0;

        auto load_step = [&]() {
            const int p = a_p0 + tap_p, q = a_q0 + tap_q;
            const bool pix_ok = a_m_ok && p >= 0 && p < P && q >= 0 && q < Q;
            const T* a_pix = a_src + dy_chunk;    // pointer math only, see pix_ok
#pragma unroll
            for (int j = 0; j < A_LOADS; ++j)
                a_stage[j] = (pix_ok && k0 + j * A_K_STEP < a_k_limit)
                                 ? cc_ldg(a_pix + ((cc_index_t)j * A_K_STEP * dy_k + ((cc_index_t)p * Q + q) * dy_pix))
                                 : T(0);
            const bool k_ok = k0 < b_k_limit;
            const int tap = (r * S + s) * w_tap;
#pragma unroll
            for (int j = 0; j < B_LOADS; ++j)
                b_stage[j] = (k_ok && (b_c_ok >> j & 1u)) ? cc_ldg(b_src + (w_chunk + j * B_N_STEP * w_c + tap)) : T(0);
        };
        auto next_step = [&](int) {
            k0 += BK;
            dy_chunk += (cc_index_t)BK * dy_k;
            w_chunk += BK * CgRS;
            if (k0 >= Kg) {
                k0 = 0;
                dy_chunk = 0;
                w_chunk = 0;
                ++ts;
                s += tw.step;
                tap_q -= tw.doff;
                if (ts == tw.count) {
                    ts = 0;
                    s = tw.first;
                    tap_q = 0;
                    ++tr;
                    r += th.step;
                    tap_p -= th.doff;
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
        cc_regtile_mainloop<BK, BM, BN_PAD>(rt, ld, th.count * tw.count * cc_div_up(Kg, BK), tm, tn);
    } else {
        // Variant 3: the reduction is (tap rows tr < th.count) × (tap columns ts < tw.count) ×
        // (chunks of BK of the Kg output channels); the pixel's dy row of tap row tr is
        // i + off0 − tr·doff, its filter row first + tr·step (likewise for columns).
        AsyncLoader ld;
        const int chunks = cc_div_up(Kg, BK), CgRS = Cg * RS;
        const int a_m = m0 + tid % BM, a_k0 = tid / BM, b_kl = tid % BK, b_n0 = tid / BK;
        ld.init(smem, Kg, tw.count, n0 + b_n0 < Cg ? Cg - n0 - b_n0 : 0);
        ld.a_ptr = dy;
        if (a_m < M) {
            const int n = a_m / HWp, rem = a_m - n * HWp;
            const int i = rem / Wp, j = rem - i * Wp;
            const int p0 = i + th.off0, q0 = j + tw.off0;
            for (int t = 0; t < th.count; ++t) ld.set_row_valid(t, (unsigned)(p0 - t * th.doff) < (unsigned)P);
            for (int t = 0; t < tw.count; ++t) ld.set_col_valid(t, (unsigned)(q0 - t * tw.doff) < (unsigned)Q);
            // Pointer math only: the first tap may miss dy (the mask guards every read).
            ld.a_ptr = dy + ((cc_index_t)n * K * PQ + ((cc_index_t)g * Kg + a_k0) * dy_k +
                             ((cc_index_t)p0 * Q + q0) * dy_pix);
        }
        const cc_index_t back = (cc_index_t)(chunks - 1) * BK * dy_k;     // the last chunk back to k0 = 0
        ld.a_j = (cc_index_t)A_K_STEP * dy_k;
        ld.a_inc_c = (cc_index_t)BK * dy_k;
        ld.a_inc_s = -(cc_index_t)tw.doff * dy_pix - back;
        ld.a_inc_r = (-(cc_index_t)th.doff * Q + (cc_index_t)(tw.count - 1) * tw.doff) * dy_pix - back;
        // The op checks that w has fewer than 2**31 elements: int offsets and increments.
        const int wback = (chunks - 1) * BK * CgRS;
        ld.b_ptr = w + ((g * Kg + b_kl) * CgRS + (n0 + b_n0) * w_c + (th.first * S + tw.first) * w_tap);
        ld.b_j = B_N_STEP * w_c;
        ld.b_inc_c = BK * CgRS;
        ld.b_inc_s = tw.step * w_tap - wback;
        ld.b_inc_r = (th.step * S - (tw.count - 1) * tw.step) * w_tap - wback;
        rt.zero();
        cc_regtile_mainloop_async<STAGES, BK, AsyncLoader::A_PITCH, AsyncLoader::B_PITCH>(
            rt, ld, th.count * tw.count * chunks, tm, tn);
    }

    // ---- epilogue: one thread-tile column per pass through shared memory; consecutive threads
    // write consecutive phase pixels (stride_w apart in dx), in NHWC consecutive channel runs.
    const cc_index_t HW = (cc_index_t)H * W;
    // Element e of the pass of thread-tile column run col0 (shared element tn·BM + pixel): its
    // dx image n, channel c (in the group), row h and column ww, or false when it lies outside dx.
    auto slot = [&](int e) { return NHWC ? (e % THREADS_N) * BM + e / THREADS_N : e; };
    auto locate = [&](int e, int col0, int& n, int& c, int& h, int& ww) {
        const int at = slot(e);
        const int m = m0 + at % BM;
        c = n0 + col0 + (at / BM) * VN;
        if (m >= M || c >= Cg) return false;
        n = m / HWp;
        const int rem = m - n * HWp, i = rem / Wp;
        h = phase_h + i * stride_h;
        ww = phase_w + (rem - i * Wp) * stride_w;
        return true;
    };
    auto dx_at = [&](int n, int c, int h, int ww) -> cc_index_t {
        return NHWC ? ((cc_index_t)n * HW + (cc_index_t)h * W + ww) * C + (cc_index_t)g * Cg + c
                    : ((cc_index_t)n * C + (cc_index_t)g * Cg + c) * HW + (cc_index_t)h * W + ww;
    };
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int col0 = rt.col(j, 0);
#pragma unroll
        for (int i = 0; i < TM; ++i) smem[tn * BM + rt.row(i, tm)] = rt.acc[i][j];
        __syncthreads();
#pragma unroll 1
        for (int e = tid; e < EPI_ELEMS; e += THREADS) {
            int n, c, h, ww;
            if (locate(e, col0, n, c, h, ww)) {
                const T v = smem[slot(e)];
                if (!cc_is_finite(v)) non_finite = 1;
                dx[dx_at(n, c, h, ww)] = v;
            }
        }
        __syncthreads();
    }
    // The taps whose dy row or column lies outside dy multiplied zeros: exact, unless a weight is
    // non-finite (0·Inf = NaN, a term torch's col2im does not have). A block that stored a
    // non-finite value re-reads its outputs (each thread its own stores) and sums the non-finite
    // ones over their true terms. (The last barrier above made the flag visible.)
    if (non_finite) {
#pragma unroll 1
        for (int j = 0; j < TN; ++j) {
            const int col0 = rt.col(j, 0);
#pragma unroll 1
            for (int e = tid; e < EPI_ELEMS; e += THREADS) {
                int n, c, h, ww;
                if (!locate(e, col0, n, c, h, ww)) continue;
                const cc_index_t at = dx_at(n, c, h, ww);
                if (!cc_is_finite(dx[at]))
                    dx[at] = cc_dgrad_sum_call<T, T, NHWC>(dy + (cc_index_t)n * K * PQ + (cc_index_t)g * Kg * dy_k,
                                                           w + (cc_index_t)g * Kg * Cg * RS + (cc_index_t)c * w_c, Kg,
                                                           (cc_index_t)Cg * RS, P, Q, R, S, h, ww, stride_h, stride_w,
                                                           pad_h, pad_w, dilation_h, dilation_w, K, Cg);
            }
        }
    }
}
