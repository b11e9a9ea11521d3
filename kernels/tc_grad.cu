// tc_grad.cu — float16 / bfloat16 conv2d gradients on tensor cores (fp32 accumulation), NCHW
// activations with KCRS weights or NHWC with KRSC (each kernel's nhwc/krsc flag: element
// strides, no conversion). Own file because it needs the fp16/bf16 headers and the
// tensor-core layer (tc_tile.cuh), which the float/double gradient files do not.
//
// dgrad (dx) reuses the forward's tensor-core implicit GEMM (tc_conv.cu): per stride phase
// dx is a stride-1 convolution of dy with the sub-filter of the taps that reach the phase
// (cc_dgrad_taps), rotated by 180° and transposed, at dilation doff — no inserted zeros are
// multiplied; any padding (a negative one is a crop of dy, which the forward's bounds tests
// take). The kernels here are the glue (with conv_transpose2d's bias + activation epilogue):
//   tc_dgrad_filter<T>   w (K × Cg × R × S) -> the phase filter (C × Kg × cnt_h × cnt_w),
//                        a bit copy of the reaching taps in reversed order.
//   tc_dgrad_scatter<T>  the phase's dense result -> its positions in dx (zeros for a phase no
//                        tap reaches). At stride 1 the forward writes dx itself.
//   tc_dgrad_flags<T>, tc_dgrad_fixup<T>  torch's answer where a non-finite weight met the
//                        zeros a phase convolution pads dy with (below).
// wgrad (dW) and the bias gradient, simplest first:
//   tc_wgrad_simple<T>   ("analytic", like tc_conv_simple): 4 warps per block over a 32 × 16
//                        tile of one group, each warp a 16×8 mma tile with fragments gathered
//                        straight from global memory (cc_tc_warp_direct); the reduction over
//                        l = (n, p, q) split across gridDim.y, fp32 partials to a workspace.
//   tc_wgrad<T, BM, BN, BK, WM, WN, MINB>  adds block tiles through swizzled, double-buffered
//                        shared memory and warp tiles of several mma fed by ldmatrix
//                        (TcWarpMma), operands gathered in pairs into registers during the
//                        previous step's mma (same split-K partials).
//   tc_grad_reduce<T>    dW[i] = T(Σ_z ws[z][i]), z in order: one rounding, deterministic.
//   tc_bias_grad<T>      db[k] = T(Σ_{n,p,q} dy[n, k, p, q]) in fp32, one block per k, fixed tree.
// The gathers (each element with its bounds tests), not the mma, are tc_wgrad's cost: its
// tensor issue ceiling is low (`cuconv kernels --analyze --file tc_grad.cu`, docs/kernel_figures.md).
// Not built: a cp.async pipeline for wgrad (its operands are gathers; cp.async would need
// P·Q and the strided x rows to be contiguous and aligned, which only some layers are).
#include "tc_tile.cuh"

// wp is the phase convolution's filter in the layout the forward kernel reads: KCRS of
// (C × Kg × cnt_h × cnt_w) from KCRS w, or KRSC (C × cnt_h × cnt_w × Kg) from KRSC w (krsc).
template <typename T>
__global__ void __launch_bounds__(256) tc_dgrad_filter(const T* __restrict__ w, T* __restrict__ wp, int K, int Cg,
                                                       int R, int S, int groups, int r_first, int r_step,
                                                       int r_cnt, int s_first, int s_step, int s_cnt, int krsc) {
    const int Kg = K / groups;
    const int taps = r_cnt * s_cnt;
    const cc_index_t total = (cc_index_t)K * Cg * taps;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t i = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        int k, t, u;
        cc_index_t gc;                               // g·Cg + c
        if (krsc) {
            k = (int)(i % Kg);
            const cc_index_t tu = i / Kg;
            u = (int)(tu % s_cnt);
            t = (int)((tu / s_cnt) % r_cnt);
            gc = tu / taps;
        } else {
            u = (int)(i % s_cnt);
            t = (int)((i / s_cnt) % r_cnt);
            const cc_index_t ck = i / taps;           // (g·Cg + c)·Kg + k
            k = (int)(ck % Kg);
            gc = ck / Kg;
        }
        const int g = (int)(gc / Cg), c = (int)(gc - (cc_index_t)g * Cg);
        const int r = r_first + (r_cnt - 1 - t) * r_step, s = s_first + (s_cnt - 1 - u) * s_step;
        const cc_index_t kk = (cc_index_t)g * Kg + k;
        wp[i] = w[krsc ? ((kk * R + r) * S + s) * Cg + c : (kk * Cg + c) * R * S + r * S + s];
    }
}

// The fused epilogue of conv_transpose2d (the dgrad passes has_bias = act = 0, where it is the
// identity): act(v + bias[c]) in fp32, one rounding.
template <typename T>
__device__ __forceinline__ T tc_dgrad_epilogue(float v, const T* __restrict__ bias, int has_bias, int c, int act) {
    if (has_bias) v += TcType<T>::to_float(bias[c]);
    return TcType<T>::from_float(cc_activate(v, act));
}

// The phase's dense result (N × C × Hp × Wp, or N × Hp × Wp × C when nhwc) -> its positions in
// dx (zeros for a phase no tap reaches: has_src = 0), through the epilogue.
template <typename T>
__global__ void __launch_bounds__(256) tc_dgrad_scatter(const T* __restrict__ src, int has_src, T* __restrict__ dx,
                                                        const T* __restrict__ bias, int has_bias, int act, int N,
                                                        int C, int H, int W, int Hp, int Wp, int phase_h,
                                                        int phase_w, int stride_h, int stride_w, int nhwc) {
    const cc_index_t HWp = (cc_index_t)Hp * Wp;
    const cc_index_t total = (cc_index_t)N * C * HWp;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t i = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        int c, j, ii;
        cc_index_t n;
        if (nhwc) {
            c = (int)(i % C);
            const cc_index_t px = i / C;
            j = (int)(px % Wp);
            ii = (int)((px / Wp) % Hp);
            n = px / HWp;
        } else {
            j = (int)(i % Wp);
            ii = (int)((i / Wp) % Hp);
            const cc_index_t plane = i / HWp;
            c = (int)(plane % C);
            n = plane / C;
        }
        const cc_index_t h = phase_h + (cc_index_t)ii * stride_h, ww = phase_w + (cc_index_t)j * stride_w;
        const cc_index_t idx = nhwc ? ((n * H + h) * W + ww) * C + c : ((n * C + c) * H + h) * W + ww;
        dx[idx] = tc_dgrad_epilogue<T>(has_src ? TcType<T>::to_float(src[i]) : 0.0f, bias, has_bias, c, act);
    }
}

// Non-finite weights (docs/semantics.md). A phase convolution multiplies the zeros it pads dy
// with by the phase filter: exact, unless a weight is non-finite (0·Inf = NaN), where torch's dgrad
// has no such term. tc_dgrad_flags marks each input channel c whose weights w[g·Kg + k, c − g·Cg]
// hold a non-finite value (block b scans channels b, b + gridDim.x, ... with a block-wide OR and
// writes every flag: nothing to clear); after the phases, tc_dgrad_fixup recomputes, in the
// flagged channels only, the dx elements that came out non-finite, over their true terms in fp32
// (cc_dgrad_sum_call), through the epilogue, rounded once. A finite element is right as it is: it
// had no non-finite term and its extra terms were exact zeros; an element with a spurious term is
// NaN, and stays NaN through every activation. With finite weights: one pass over w, and a launch
// whose blocks read one flag per channel and exit. krsc / nhwc: the weight and activation layouts.
template <typename T>
__global__ void __launch_bounds__(256) tc_dgrad_flags(const T* __restrict__ w, int* __restrict__ c_flags, int K,
                                                      int C, int RS, int groups, int krsc) {
    const int Cg = C / groups, Kg = K / groups;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {   // the same trip count for the whole block
        const int g = c / Cg, cl = c - g * Cg;
        bool finite = true;
        for (int i = threadIdx.x; i < Kg * RS; i += blockDim.x) {
            const int k = i / RS, rs = i - k * RS;
            const cc_index_t kk = (cc_index_t)g * Kg + k;
            finite = finite && cc_is_finite(TcType<T>::to_float(w[krsc ? (kk * RS + rs) * Cg + cl
                                                                        : (kk * Cg + cl) * RS + rs]));
        }
        const int bad = __syncthreads_or(!finite);
        if (threadIdx.x == 0) c_flags[c] = bad;
    }
}

// Grid (x, y): y over channels (c = blockIdx.y, + gridDim.y, ...), x a grid-stride loop over the
// N·H·W elements of a channel.
template <typename T>
__global__ void __launch_bounds__(256) tc_dgrad_fixup(const T* __restrict__ w, const T* __restrict__ dy,
                                                      T* __restrict__ dx, const int* __restrict__ c_flags,
                                                      const T* __restrict__ bias, int has_bias, int act, int nhwc,
                                                      int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                                                      int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                                                      int dil_w, int groups) {
    const int Cg = C / groups, Kg = K / groups, RS = R * S;
    const cc_index_t HW = (cc_index_t)H * W, PQ = (cc_index_t)P * Q, total = (cc_index_t)N * HW;
    const cc_index_t dy_k = nhwc ? 1 : PQ, w_k = (cc_index_t)Cg * RS;   // dy's channel pitch, w's filter pitch
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        if (!cc_ldg(c_flags + c)) continue;
        const int g = c / Cg, cl = c - g * Cg;
        const T* w_g = w + (cc_index_t)g * Kg * w_k + (nhwc ? cl : (cc_index_t)cl * RS);
        for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
             e += (cc_index_t)gridDim.x * blockDim.x) {
            const cc_index_t n = e / HW;
            const int hw = (int)(e - n * HW), h = hw / W, ww = hw - (hw / W) * W;
            const cc_index_t idx = nhwc ? (n * HW + hw) * C + c : (n * C + c) * HW + hw;
            if (cc_is_finite(TcType<T>::to_float(dx[idx]))) continue;
            const T* dy_g = dy + n * K * PQ + (cc_index_t)g * Kg * dy_k;
            const float v = nhwc ? cc_dgrad_sum_call<T, float, true>(dy_g, w_g, Kg, w_k, P, Q, R, S, h, ww, stride_h,
                                                                     stride_w, pad_h, pad_w, dil_h, dil_w, K, Cg)
                                 : cc_dgrad_sum_call<T, float>(dy_g, w_g, Kg, w_k, P, Q, R, S, h, ww, stride_h,
                                                               stride_w, pad_h, pad_w, dil_h, dil_w);
            dx[idx] = tc_dgrad_epilogue<T>(v, bias, has_bias, c, act);
        }
    }
}

// Grid: x = groups · ceil(Kg / 32) · ceil(Cg·R·S / 16), y = splits; split z reduces
// l in [z·chunk, min(N·P·Q, (z + 1)·chunk)).
template <typename T>
__global__ void __launch_bounds__(128) tc_wgrad_simple(const T* __restrict__ x, const T* __restrict__ dy,
                                                       float* __restrict__ ws, int N, int C, int H, int W, int K,
                                                       int R, int S, int P, int Q, int stride_h, int stride_w,
                                                       int pad_h, int pad_w, int dil_h, int dil_w, int groups,
                                                       long long chunk, int nhwc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int Cg = C / groups, Kg = K / groups, RS = R * S, CRS = Cg * RS, PQ = P * Q;
    const int tiles_n = (CRS + 15) / 16, tiles_m = (Kg + 31) / 32;
    const int g = blockIdx.x / (tiles_m * tiles_n);
    const int id = blockIdx.x - g * tiles_m * tiles_n;
    const int m0 = id / tiles_n * 32 + (warp >> 1) * 16;
    const int n0 = id % tiles_n * 16 + (warp & 1) * 8;
    const cc_index_t L = (cc_index_t)N * PQ;
    const cc_index_t l0 = (cc_index_t)blockIdx.y * chunk;
    const cc_index_t l1 = l0 + chunk < L ? l0 + chunk : L;
    const int len = l1 > l0 ? (int)(l1 - l0) : 0;
    const cc_index_t HW = (cc_index_t)H * W;
    const T zero = TcType<T>::from_float(0.0f);
    auto a_at = [&](int mm, int kk) {
        const int m = m0 + mm;
        if (m >= Kg || kk >= len) return zero;
        const cc_index_t l = l0 + kk;
        const cc_index_t n = l / PQ, pq = l - n * PQ, k = (cc_index_t)g * Kg + m;
        return dy[nhwc ? l * K + k : (n * K + k) * PQ + pq];
    };
    auto b_at = [&](int kk, int nn) {
        const int col = n0 + nn;
        if (col >= CRS || kk >= len) return zero;
        const cc_index_t l = l0 + kk;
        const cc_index_t n = l / PQ;
        const int pq = (int)(l - n * PQ), p = pq / Q, q = pq - p * Q;
        const int c = nhwc ? col % Cg : col / RS, rs = nhwc ? col / Cg : col - c * RS, r = rs / S, s = rs - r * S;
        const int h = p * stride_h - pad_h + r * dil_h, ww = q * stride_w - pad_w + s * dil_w;
        if ((unsigned)h >= (unsigned)H || (unsigned)ww >= (unsigned)W) return zero;
        const cc_index_t ch = (cc_index_t)g * Cg + c, px = (cc_index_t)h * W + ww;
        return x[nhwc ? (n * HW + px) * C + ch : (n * C + ch) * HW + px];
    };
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    cc_tc_warp_direct<T>(acc, len, a_at, b_at, lane);
    const int gr = lane >> 2, t = lane & 3;
    float* out = ws + (cc_index_t)blockIdx.y * K * CRS;
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + gr + 8 * (i >> 1), col = n0 + 2 * t + (i & 1);
        if (m < Kg && col < CRS) out[((cc_index_t)g * Kg + m) * CRS + col] = acc[i];
    }
}

// The tiled wgrad: a BM (output channels) × BN (Cg·R·S columns) block tile of one group and one
// split, (BM/WM)·(BN/WN) warps of WM×WN (TcWarpMma: ldmatrix + mma from swizzled stages), BK
// reduction indices per step. Both operands are gathers (dy along l = (n, p, q) crosses image
// planes; x is strided and padded), so instead of cp.async each thread gathers pairs of
// consecutive l into registers during the previous step's mma (double-buffered shared memory,
// one barrier per step, as in the fp32 kernels) and stores each pair as one 32-bit word:
// thread j-th pair column (l0 + 2j, l0 + 2j + 1) of A rows lane_row + i·ROW_STEP and of B
// columns lane_row + i·ROW_STEP. (n, p, q) of the pair walk with CcDigits3 (no division in the
// loop), the (c, r, s) of the thread's B columns are decoded once. When P·Q is even (dy_pairs)
// an A pair is one aligned 32-bit load.
template <typename T, int BM, int BN, int BK, int WM, int WN, int MINB>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB)
tc_wgrad(const T* __restrict__ x, const T* __restrict__ dy, float* __restrict__ ws, int N, int C, int H, int W,
         int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
         int groups, long long chunk, int dy_pairs, int nhwc) {
    constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
    constexpr int PAIRS = BK / 2;                    // 32-bit words per tile row
    constexpr int ROW_STEP = THREADS / PAIRS;        // rows between a thread's words
    constexpr int A_WORDS = BM / ROW_STEP, B_WORDS = BN / ROW_STEP;
    constexpr int ROW_BYTES = BK * 2;
    constexpr int A_STAGE = BM * ROW_BYTES, B_STAGE = BN * ROW_BYTES;
    constexpr int MI = WM / 16, NI = WN / 8;
    static_assert(sizeof(T) == 2, "the tiled wgrad takes 16-bit elements");
    static_assert(THREADS % PAIRS == 0 && BM % ROW_STEP == 0 && BN % ROW_STEP == 0, "whole words per thread");
    static_assert(A_WORDS <= 32 && B_WORDS <= 32, "validity masks are 32 bits");
    __shared__ __align__(128) unsigned char smem[2 * (A_STAGE + B_STAGE)];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int Cg = C / groups, Kg = K / groups, RS = R * S, CRS = Cg * RS, PQ = P * Q, HW = H * W;
    const int tiles_n = (CRS + BN - 1) / BN, tiles_m = (Kg + BM - 1) / BM;
    const int g = blockIdx.x / (tiles_m * tiles_n);
    const int id = blockIdx.x - g * tiles_m * tiles_n;
    const int m0 = id / tiles_n * BM, n0 = id % tiles_n * BN;
    const cc_index_t L = (cc_index_t)N * PQ;
    const cc_index_t l_begin = (cc_index_t)blockIdx.y * chunk;
    const cc_index_t l_end = l_begin + chunk < L ? l_begin + chunk : L;
    const int steps = l_end > l_begin ? (int)((l_end - l_begin + BK - 1) / BK) : 0;

    const int pj = tid % PAIRS, row0 = tid / PAIRS;
    unsigned a_ok = 0, b_ok = 0;
    // NCHW: a pixel's channels are H·W (P·Q) apart; NHWC: adjacent, pixels C (K) apart.
    const int a_pix = nhwc ? K : 1, b_pix = nhwc ? C : 1;
    int a_off[A_WORDS];                               // (g·Kg + k)·P·Q of each A row (NHWC: g·Kg + k)
#pragma unroll
    for (int i = 0; i < A_WORDS; ++i) {
        const int k = m0 + row0 + i * ROW_STEP;
        if (k < Kg) a_ok |= 1u << i;
        a_off[i] = (g * Kg + (k < Kg ? k : 0)) * (nhwc ? 1 : PQ);
    }
    // (g·Cg + c)·H·W (NHWC: g·Cg + c), r·dh − ph, s·dw − pw; a column is (c, r, s), NHWC (r, s, c)
    int b_off[B_WORDS], b_dh[B_WORDS], b_dw[B_WORDS];
#pragma unroll
    for (int i = 0; i < B_WORDS; ++i) {
        const int col = n0 + row0 + i * ROW_STEP;
        const int cc = col < CRS ? col : 0;
        if (col < CRS) b_ok |= 1u << i;
        const int c = nhwc ? cc % Cg : cc / RS, rs = nhwc ? cc / Cg : cc - c * RS, r = rs / S, s = rs - r * S;
        b_off[i] = (g * Cg + c) * (nhwc ? 1 : HW);
        b_dh[i] = r * dil_h - pad_h;
        b_dw[i] = s * dil_w - pad_w;
    }
    cc_index_t l = l_begin + 2 * pj;                  // the pair's first reduction index
    CcDigits3 at;
    at.init(l, BK, Q, P);

    unsigned a_stage[A_WORDS], b_stage[B_WORDS];
    const T zero = TcType<T>::from_float(0.0f);
    auto load_step = [&]() {
        int n[2], p[2], q[2];
        bool ok[2];
        n[0] = at.hi, p[0] = at.mid, q[0] = at.lo;
        n[1] = n[0], p[1] = p[0], q[1] = q[0] + 1;    // l + 1
        if (q[1] == Q) {
            q[1] = 0;
            if (++p[1] == P) {
                p[1] = 0;
                ++n[1];
            }
        }
        ok[0] = l < l_end;
        ok[1] = l + 1 < l_end;
        T av[2], bv[2];
        if (dy_pairs) {
            // P·Q even (so the pair is one image's, and l_end is even) and dy 4-byte aligned:
            // the pair is one aligned 32-bit word of dy.
            const cc_index_t base = (cc_index_t)n[0] * K * PQ + p[0] * Q + q[0];
#pragma unroll
            for (int i = 0; i < A_WORDS; ++i)
                a_stage[i] = (ok[0] && (a_ok >> i & 1u))
                                 ? cc_ldg(reinterpret_cast<const unsigned*>(dy + (base + a_off[i]))) : 0u;
        } else {
#pragma unroll
            for (int i = 0; i < A_WORDS; ++i) {
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    av[e] = (ok[e] && (a_ok >> i & 1u))
                                ? cc_ldg(dy + ((cc_index_t)n[e] * K * PQ + a_off[i]
                                               + (cc_index_t)(p[e] * Q + q[e]) * a_pix)) : zero;
                a_stage[i] = cc_tc_pack<T>(av[0], av[1]);
            }
        }
#pragma unroll
        for (int i = 0; i < B_WORDS; ++i) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int h = p[e] * stride_h + b_dh[i], ww = q[e] * stride_w + b_dw[i];
                bv[e] = (ok[e] && (b_ok >> i & 1u) && (unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W)
                            ? cc_ldg(x + ((cc_index_t)n[e] * C * HW + b_off[i] + (cc_index_t)(h * W + ww) * b_pix))
                            : zero;
            }
            b_stage[i] = cc_tc_pack<T>(bv[0], bv[1]);
        }
    };
    auto store_step = [&](int buf) {
        unsigned char* sA = smem + buf * (A_STAGE + B_STAGE);
        unsigned char* sB = sA + A_STAGE;
#pragma unroll
        for (int i = 0; i < A_WORDS; ++i)
            *reinterpret_cast<unsigned*>(sA + cc_tc_smem_offset<ROW_BYTES>(row0 + i * ROW_STEP, 4 * pj)) = a_stage[i];
#pragma unroll
        for (int i = 0; i < B_WORDS; ++i)
            *reinterpret_cast<unsigned*>(sB + cc_tc_smem_offset<ROW_BYTES>(row0 + i * ROW_STEP, 4 * pj)) = b_stage[i];
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;

    if (steps > 0) {
        load_step();
        store_step(0);
    }
    __syncthreads();
#pragma unroll 1
    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1;
        const bool more = step + 1 < steps;
        if (more) {
            l += BK;
            at.advance();
            load_step();
        }
        const unsigned char* sA = smem + buf * (A_STAGE + B_STAGE);
        TcWarpMma<T, BM, BN, BK, WM, WN, false>::run(acc, sA, sA + A_STAGE, wm0, wn0, lane);
        if (more) store_step(buf ^ 1);
        __syncthreads();
    }

    float* out = ws + (cc_index_t)blockIdx.y * K * CRS;
    const int gr = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int m = m0 + wm0 + mi * 16 + gr + 8 * (i >> 1);
                const int col = n0 + wn0 + ni * 8 + 2 * t + (i & 1);
                if (m < Kg && col < CRS) out[((cc_index_t)g * Kg + m) * CRS + col] = acc[mi][ni][i];
            }
}

template <typename T>
__global__ void __launch_bounds__(256) tc_grad_reduce(const float* __restrict__ ws, int splits, long long n,
                                                      T* __restrict__ out) {
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t i = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        float acc = 0.0f;
        for (int z = 0; z < splits; ++z) acc += ws[(cc_index_t)z * n + i];
        out[i] = TcType<T>::from_float(acc);
    }
}

template <typename T>
__global__ void __launch_bounds__(256) tc_bias_grad(const T* __restrict__ dy, T* __restrict__ db, int N, int K,
                                                    int PQ) {
    __shared__ float red[256 / 32];
    const int k = blockIdx.x;
    const cc_index_t L = (cc_index_t)N * PQ;
    CcDigits3 at;
    at.init(threadIdx.x, 256, PQ, 1);
    float acc = 0.0f;
    for (cc_index_t l = threadIdx.x; l < L; l += 256, at.advance())
        acc += TcType<T>::to_float(dy[((cc_index_t)at.hi * K + k) * PQ + at.lo]);
    acc = cc_block_sum(acc, red);
    if (threadIdx.x == 0) db[k] = TcType<T>::from_float(acc);
}
