// depthwise_grad.cu — the gradients of a depthwise convolution (groups == C, channel multiplier
// M: K = M·C output channels, output channel k = c·M + m filters input channel c), NCHW or NHWC
// dy/x/dx, K×1×R×S w (= K×R×S×1, the NHWC weight), float or double (accumulation in the element
// type), float16 or bfloat16 (fp32 accumulation, one rounding to the output: depthwise.cuh).
//
// Given to the dense kernels (conv_dgrad.cu, conv_wgrad.cu) a depthwise layer is C tiny GEMMs
// (one column of a 64-column tile; M rows of 64); these kernels are built for the per-channel
// stencil instead, and share their staging and planning with the forward's depthwise.cu.
//
//   depthwise_dgrad_tiled<T, MINB>  dx — the forward's depthwise tile transposed: a block stages,
//       for tile_c input channels, the dy rows and columns that reach its tile of dx (all M
//       output channels of each input channel, zeros outside dy) and their filters in shared
//       memory, so each dy element is read from global memory about once. The tile origin is a
//       multiple of the stride and items are ordered by stride phase, so a warp shares one set
//       of taps (cc_dgrad_taps, once per phase in shared memory): no tap is tested and rejected,
//       no inserted zero multiplied (the zeros staged outside dy are: an element they made
//       non-finite, 0·Inf, is recomputed with cc_dgrad_sum). Accumulation order r, s, m —
//       dgrad_direct's, bit for bit.
//   depthwise_wgrad<T, TAPS, MINB>  dW (and db when asked) as a per-channel reduction: block
//       (k, tap chunk, split z) sums dy·x over its share of n·P·Q for TAPS taps held in
//       registers (each dy element read once per TAPS taps), then a fixed-tree block reduction
//       (cc_block_sum). Deterministic. With splits > 1 the partial sums go to a workspace that
//       conv_wgrad.cu's wgrad_splitk_reduce sums in split order; db is fused (tap chunk 0).
//
//   depthwise_dgrad_nhwc<T, MINB>  dx in NHWC, one thread per dx element, channels fastest across
//       threads (dy reads coalesced): the taps that reach dy only, r, s, m — dgrad_direct's order
//       and terms (no staged zeros, so nothing to recompute). The simple variant: no tile, each dy
//       element read from L1/L2 once per tap that reaches it.
//   depthwise_wgrad_nhwc<T, TAPS, MINB, O>  dW (+ db) in NHWC: block (32 channels, tap chunk,
//       split z); lane = channel (dy and x reads coalesced along C), the 8 warps stride over the
//       block's share of n·P·Q; TAPS accumulators per thread, then a fixed-order sum over the 8
//       warps through shared memory. Deterministic; splits as depthwise_wgrad.
// The wgrad kernels write O: T when one split writes dW directly, the accumulator type when the
// splits' partials go to the workspace (16-bit: fp32 partials, rounded once by the reduction).
//
// Shared memory of the dgrad tile: ops/depthwise_grad.py caps it at 15 KiB so that four
// 256-thread blocks fit on every target (the row count: docs/kernel_design.md#depthwise_gradcu).
// Blocks per SM promised (MINB): dgrad 4 for float, 3 for double; wgrad 4 for float, 2 for
// double. Figures: `cuconv kernels --analyze --file depthwise_grad.cu` (docs/kernel_figures.md).
#include "depthwise.cuh"

#define CC_DWG_THREADS 256
#define CC_DWG_MAX_STRIDE 16

// The input displacements (tap row·dil − pad, tap column·dil − pad) of the wgrad kernels' TAPS taps
// t0 ... t0 + nt − 1 (the unused ones repeat t0's).
template <int TAPS>
__device__ __forceinline__ void dwg_tap_offsets(int (&off_h)[TAPS], int (&off_w)[TAPS], int t0, int nt, int S,
                                                int dil_h, int dil_w, int pad_h, int pad_w) {
#pragma unroll
    for (int t = 0; t < TAPS; ++t) {
        const int tap = t < nt ? t0 + t : t0;
        off_h[t] = (tap / S) * dil_h - pad_h;
        off_w[t] = (tap % S) * dil_w - pad_w;
    }
}

// ------------------------------------------------------------------ dgrad
template <typename T, int MIN_BLOCKS>
__global__ void __launch_bounds__(CC_DWG_THREADS, MIN_BLOCKS)
depthwise_dgrad_tiled(const T* __restrict__ w, const T* __restrict__ dy, T* __restrict__ dx,
                      int N, int C, int H, int W, int M, int P, int Q, int R, int S, int stride_h,
                      int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int tile_c,
                      int tile_h, int tile_w) {
    typedef typename DwAcc<T>::type A;
    const int K = C * M;
    const int RS = R * S;
    const int tiles_w = cc_div_up(W, tile_w);
    const int tiles_h = cc_div_up(H, tile_h);
    const int c_groups = cc_div_up(C, tile_c);
    cc_index_t b = blockIdx.x;
    const int tw_i = (int)(b % tiles_w);
    b /= tiles_w;
    const int th_i = (int)(b % tiles_h);
    b /= tiles_h;
    const int cg = (int)(b % c_groups);
    const cc_index_t n = b / c_groups;
    const int c0 = cg * tile_c;
    const int nc = min(tile_c, C - c0);
    const int h0 = th_i * tile_h, w0 = tw_i * tile_w;          // multiples of the stride
    const int p_lo = h0 / stride_h + cc_floor_div(pad_h - (R - 1) * dil_h, stride_h);
    const int q_lo = w0 / stride_w + cc_floor_div(pad_w - (S - 1) * dil_w, stride_w);
    const int rows = (h0 / stride_h + cc_floor_div(tile_h - 1 + pad_h, stride_h)) - p_lo + 1;
    const int cols = (w0 / stride_w + cc_floor_div(tile_w - 1 + pad_w, stride_w)) - q_lo + 1;

    extern __shared__ __align__(16) unsigned char cc_dwg_smem[];
    A* tile_dy = reinterpret_cast<A*>(cc_dwg_smem);             // [tile_c·M][rows][cols], widened
    A* tile_f = tile_dy + tile_c * M * rows * cols;             // [tile_c·M][R·S] filters
    __shared__ CcDgradTaps taps_h[CC_DWG_MAX_STRIDE], taps_w[CC_DWG_MAX_STRIDE];
    const int tid = threadIdx.x;
    if (tid < stride_h) taps_h[tid] = cc_dgrad_taps(tid + pad_h, R, stride_h, dil_h);
    if (tid < stride_w) taps_w[tid] = cc_dgrad_taps(tid + pad_w, S, stride_w, dil_w);

    {   // Stage dy (zeros outside it) walking (channel, row, column) without dividing.
        const int total = nc * M * rows * cols;
        CcDigits3 at;
        at.init(tid, CC_DWG_THREADS, cols, rows);
        const T* dyn = dy + (n * K + (cc_index_t)c0 * M) * P * Q;
        for (int i = tid; i < total; i += CC_DWG_THREADS, at.advance()) {
            const int p = p_lo + at.mid, q = q_lo + at.lo;
            tile_dy[i] = (p >= 0 && p < P && q >= 0 && q < Q)
                             ? dw_ld(dyn + ((cc_index_t)at.hi * P + p) * Q + q) : A(0);
        }
        // The filters of output channels c0·M ... (c0 + nc)·M − 1 are contiguous.
        const int wtotal = nc * M * RS;
        const T* wg = w + (cc_index_t)c0 * M * RS;
        for (int i = tid; i < wtotal; i += CC_DWG_THREADS) tile_f[i] = dw_ld(wg + i);
    }
    __syncthreads();

    // Items (local channel, phase_h, phase_w, i, j), j fastest: the phase's pixel (i, j) is
    // dx row h0 + phase_h + i·stride_h, column w0 + phase_w + j·stride_w.
    const int ph_rows = tile_h / stride_h, ph_cols = tile_w / stride_w;
    const int items = nc * tile_h * tile_w;
    for (int item = tid; item < items; item += CC_DWG_THREADS) {
        const int j = item % ph_cols;
        int t = item / ph_cols;
        const int i = t % ph_rows;
        t /= ph_rows;
        const int phase_w = t % stride_w;
        t /= stride_w;
        const int phase_h = t % stride_h;
        const int cl = t / stride_h;
        const int h = h0 + phase_h + i * stride_h, ww = w0 + phase_w + j * stride_w;
        if (h >= H || ww >= W) continue;
        const CcDgradTaps th = taps_h[phase_h], tw = taps_w[phase_w];
        // Tap t of the phase reads dy row h0/stride_h + i + off0 − t·doff = p_lo + row.
        const int row0 = h0 / stride_h + i + th.off0 - p_lo;
        const int col0 = w0 / stride_w + j + tw.off0 - q_lo;
        const A* dyc = tile_dy + cl * M * rows * cols;
        const A* wc = tile_f + cl * M * RS;
        A acc = A(0);
        for (int tr = 0; tr < th.count; ++tr) {
            const int r = th.first + tr * th.step, row = row0 - tr * th.doff;
            for (int ts = 0; ts < tw.count; ++ts) {
                const int s = tw.first + ts * tw.step, col = col0 - ts * tw.doff;
                for (int m = 0; m < M; ++m)
                    acc = cc_fma(dyc[(m * rows + row) * cols + col], wc[m * RS + r * S + s], acc);
            }
        }
        // Taps whose dy row or column lies outside dy multiplied staged zeros: exact, unless a
        // weight is non-finite (0·Inf = NaN); then the element is summed over its true terms.
        if (!cc_is_finite(acc))
            acc = cc_dgrad_sum_call<T, A>(dy + (n * K + (cc_index_t)(c0 + cl) * M) * P * Q,
                                    w + (cc_index_t)(c0 + cl) * M * RS, M, (cc_index_t)RS, P, Q, R, S, h, ww,
                                    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w);
        dx[((n * C + c0 + cl) * H + h) * W + ww] = dw_narrow<T>(acc);
    }
}

// ------------------------------------------------------------------ wgrad (+ bias)
// Grid: x = K · ceil(R·S / TAPS) (tap chunk fastest), y = splits. Split z sums the reduction
// indices l = (n·P + p)·Q + q in [z·chunk, min(N·P·Q, (z + 1)·chunk)).
template <typename T, int TAPS, int MIN_BLOCKS, typename O>
__global__ void __launch_bounds__(CC_DWG_THREADS, MIN_BLOCKS)
depthwise_wgrad(const T* __restrict__ x, const T* __restrict__ dy, O* __restrict__ out_w,
                long long w_split_stride, O* __restrict__ out_b, long long b_split_stride,
                int has_bias, int N, int C, int H, int W, int M, int P, int Q, int R, int S,
                int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                long long chunk) {
    typedef typename DwAcc<T>::type A;
    __shared__ A red[CC_DWG_THREADS / 32];
    const int K = C * M, RS = R * S, PQ = P * Q;
    const int tap_chunks = cc_div_up(RS, TAPS);
    const int k = blockIdx.x / tap_chunks, tc = blockIdx.x - (blockIdx.x / tap_chunks) * tap_chunks;
    const int z = blockIdx.y;
    const int t0 = tc * TAPS;
    const int nt = min(TAPS, RS - t0);
    const int c = k / M;
    const bool do_bias = has_bias && tc == 0;

    int off_h[TAPS], off_w[TAPS];         // the taps' input displacements
    dwg_tap_offsets(off_h, off_w, t0, nt, S, dil_h, dil_w, pad_h, pad_w);
    A acc[TAPS];
#pragma unroll
    for (int t = 0; t < TAPS; ++t) acc[t] = A(0);
    A bacc = A(0);

    const cc_index_t L = (cc_index_t)N * PQ;
    const cc_index_t l_begin = (cc_index_t)z * chunk;
    const cc_index_t l_end = l_begin + chunk < L ? l_begin + chunk : L;
    CcDigits3 at;                          // (n, p, q) of l
    at.init(l_begin + threadIdx.x, CC_DWG_THREADS, Q, P);
    const cc_index_t HW = (cc_index_t)H * W;
    for (cc_index_t l = l_begin + threadIdx.x; l < l_end; l += CC_DWG_THREADS, at.advance()) {
        const int n = at.hi, p = at.mid, q = at.lo;
        const A g = dw_ld(dy + ((cc_index_t)n * K + k) * PQ + p * Q + q);
        bacc += g;
        const T* xc = x + ((cc_index_t)n * C + c) * HW;
        const int h0 = p * stride_h, w0 = q * stride_w;
#pragma unroll
        for (int t = 0; t < TAPS; ++t) {
            const int h = h0 + off_h[t], ww = w0 + off_w[t];
            // A tap in the padding contributes dy·0 (NaN for a non-finite dy), as torch's.
            if (t < nt)
                acc[t] = cc_fma(g, h >= 0 && h < H && ww >= 0 && ww < W ? dw_ld(xc + (cc_index_t)h * W + ww) : A(0),
                                acc[t]);
        }
    }

    O* ow = out_w + (cc_index_t)z * w_split_stride + (cc_index_t)k * RS + t0;
#pragma unroll
    for (int t = 0; t < TAPS; ++t) {
        if (t >= nt) break;                // uniform across the block
        const A v = cc_block_sum(acc[t], red);
        if (threadIdx.x == 0) ow[t] = dw_narrow<O>(v);
    }
    if (do_bias) {
        const A v = cc_block_sum(bacc, red);
        if (threadIdx.x == 0) out_b[(cc_index_t)z * b_split_stride + k] = dw_narrow<O>(v);
    }
}

// ------------------------------------------------------------------ NHWC dgrad
template <typename T, int MIN_BLOCKS>
__global__ void __launch_bounds__(CC_DWG_THREADS, MIN_BLOCKS)
depthwise_dgrad_nhwc(const T* __restrict__ w, const T* __restrict__ dy, T* __restrict__ dx, int N, int C, int H,
                     int W, int M, int P, int Q, int R, int S, int stride_h, int stride_w, int pad_h, int pad_w,
                     int dil_h, int dil_w) {
    typedef typename DwAcc<T>::type A;
    const int K = C * M, RS = R * S;
    const cc_index_t total = (cc_index_t)N * H * W * C;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int c = (int)(idx % C);            // idx = ((n·H + h)·W + w)·C + c
        cc_index_t t = idx / C;
        const int ww = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        const cc_index_t n = t / H;
        // dy element (m, p, q) of channel c at dy[((n·P + p)·Q + q)·K + c·M + m].
        const A acc = cc_dgrad_sum<T, A, true>(dy + n * P * Q * K + (cc_index_t)c * M, w + (cc_index_t)c * M * RS, M,
                                               RS, P, Q, R, S, h, ww, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, K, 1);
        dx[idx] = dw_narrow<T>(acc);
    }
}

// ------------------------------------------------------------------ NHWC wgrad (+ bias)
// Grid: x = ceil(K / 32) · ceil(R·S / TAPS) (tap chunk fastest), y = splits; split z sums
// l = (n·P + p)·Q + q in [z·chunk, min(N·P·Q, (z + 1)·chunk)), warp j of the block the l ≡ j (mod 8).
template <typename T, int TAPS, int MIN_BLOCKS, typename O>
__global__ void __launch_bounds__(CC_DWG_THREADS, MIN_BLOCKS)
depthwise_wgrad_nhwc(const T* __restrict__ x, const T* __restrict__ dy, O* __restrict__ out_w,
                     long long w_split_stride, O* __restrict__ out_b, long long b_split_stride,
                     int has_bias, int N, int C, int H, int W, int M, int P, int Q, int R, int S,
                     int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                     long long chunk) {
    typedef typename DwAcc<T>::type A;
    constexpr int ROWS = CC_DWG_THREADS / 32;
    __shared__ A red[ROWS][32];
    const int K = C * M, RS = R * S;
    const int tap_chunks = cc_div_up(RS, TAPS);
    const int kb = blockIdx.x / tap_chunks, tc = blockIdx.x - kb * tap_chunks;
    const int lane = threadIdx.x % 32, row = threadIdx.x / 32;
    const int k = kb * 32 + lane;
    const bool k_ok = k < K;
    const int c = (k_ok ? k : 0) / M;
    const int z = blockIdx.y;
    const int t0 = tc * TAPS;
    const int nt = min(TAPS, RS - t0);
    const bool do_bias = has_bias && tc == 0;

    int off_h[TAPS], off_w[TAPS];
    dwg_tap_offsets(off_h, off_w, t0, nt, S, dil_h, dil_w, pad_h, pad_w);
    A acc[TAPS];
#pragma unroll
    for (int t = 0; t < TAPS; ++t) acc[t] = A(0);
    A bacc = A(0);

    const cc_index_t L = (cc_index_t)N * P * Q;
    const cc_index_t l_begin = (cc_index_t)z * chunk;
    const cc_index_t l_end = l_begin + chunk < L ? l_begin + chunk : L;
    CcDigits3 at;                          // (n, p, q) of l
    at.init(l_begin + row, ROWS, Q, P);
    if (k_ok) {
        for (cc_index_t l = l_begin + row; l < l_end; l += ROWS, at.advance()) {
            const A g = dw_ld(dy + l * K + k);
            bacc += g;
            const T* xn = x + (cc_index_t)at.hi * H * W * C + c;
            const int h0 = at.mid * stride_h, w0 = at.lo * stride_w;
#pragma unroll
            for (int t = 0; t < TAPS; ++t) {
                const int h = h0 + off_h[t], ww = w0 + off_w[t];
                // A tap in the padding contributes dy·0 (NaN for a non-finite dy), as torch's.
                if (t < nt)
                    acc[t] = cc_fma(g, h >= 0 && h < H && ww >= 0 && ww < W ? dw_ld(xn + ((cc_index_t)h * W + ww) * C)
                                                                          : A(0), acc[t]);
            }
        }
    }

    // The 8 warps' sums of each tap, in warp order (fixed: deterministic).
    O* ow = out_w + (cc_index_t)z * w_split_stride + (cc_index_t)k * RS + t0;
#pragma unroll
    for (int t = 0; t <= TAPS; ++t) {
        if (t < TAPS && t >= nt) continue;     // uniform across the block
        if (t == TAPS && !do_bias) break;
        red[row][lane] = t < TAPS ? acc[t] : bacc;
        __syncthreads();
        if (row == 0 && k_ok) {
            A v = red[0][lane];
#pragma unroll
            for (int j = 1; j < ROWS; ++j) v += red[j][lane];
            if (t < TAPS) ow[t] = dw_narrow<O>(v);
            else out_b[(cc_index_t)z * b_split_stride + k] = dw_narrow<O>(v);
        }
        __syncthreads();
    }
}
