// depthwise.cu — depthwise convolution (groups == C, channel multiplier M: K = M·C output
// channels, output channel k filters input channel k / M), NCHW or NHWC, weights K×1×R×S
// (the same memory as K×R×S×1, the NHWC weight layout), with the fused epilogue
// y = act(conv + bias[k] + residual). Also the fused depthwise-separable block (fp32, NCHW).
// T is the element type: float or double (every sum accumulated in T), __half or __nv_bfloat16
// (fp32 accumulation, tiles staged as fp32, one rounding at the store; depthwise.cuh says where
// the paired 16-bit types are used and why their arithmetic is not).
//
// Variants, simplest to fastest:
//   depthwise_direct<T, NHWC>  one thread per output, every tap read from global memory; any
//                             R, S, stride, padding, dilation. The always-correct variant the
//                             others are tested against, and the fallback when a tile does not
//                             fit in shared memory (NHWC: channels fastest, loads coalesced).
//   depthwise_tiled<T,0,0,1>  (generic, NCHW) adds shared-memory staging: an input tile plus its
//                             halo for tile_c channels, and their filters, so each input element
//                             is read from global memory about once; runtime R, S, stride.
//   depthwise_tiled<T,KS,STRIDE,V>  adds compile-time kernel size (3, 5, 7) and stride (1, 2):
//                             each thread keeps its filter in registers and computes a vertical
//                             strip of V outputs, each staged row read once per strip.
//   depthwise_nhwc<T,KS,STRIDE,V>  NHWC: V horizontally adjacent outputs of one channel per
//                             thread, each filter row's input pixels loaded once per strip;
//                             channels fastest across threads, so every access of a warp is
//                             coalesced without shared memory. Dilation 1, square 3/5, stride 1/2.
//   depthwise_nhwc_vec<T,KS,STRIDE,V,VEC>  NHWC float16/bfloat16, multiplier 1, C % VEC == 0:
//                             VEC channels (one 16- or 8-byte access) × V columns per thread;
//                             inputs, residual and outputs as vectors, square 3/5/7, stride 1/2.
//   separable_fused_f32       depthwise then 1×1 pointwise in one kernel: a tile of 64 pixels ×
//                             32 depthwise channels goes through shared memory into a 32×64 slice
//                             of the pointwise weights; the intermediate never reaches global
//                             memory, and chunks of C accumulate in registers.
//
// Tile geometry (tile_c channels × tile_p rows × tile_q columns) is chosen per problem by
// cuconv.ops.depthwise; shared memory holds tile_c·in_rows·in_cols inputs + tile_c·M·R·S
// filter taps (docs/kernel_design.md#depthwisecu has the row count). The kernels are
// memory-bound by design (9 FMAs per output against one input read for 3×3): the ceiling that
// matters is DRAM. Figures: `cuconv kernels --analyze --file depthwise.cu` (docs/kernel_figures.md).
#include "depthwise.cuh"

#define CC_DW_THREADS 256

// The digits (outer, mid, inner) of a flat index i = (outer·mid_n + mid)·inner_n + inner,
// advanced by a constant step without dividing: the step is split into digits once. A block's
// loops walk their work this way (integer division by a runtime value costs ~20 instructions,
// as much as the arithmetic of an output).
struct DwCounter {
    int inner, mid, outer;
    int d_inner, d_mid, d_outer;
    int inner_n, mid_n;

    __device__ __forceinline__ void init(int i, int step, int inner_count, int mid_count) {
        inner_n = inner_count;
        mid_n = mid_count;
        inner = i % inner_n;
        mid = (i / inner_n) % mid_n;
        outer = i / inner_n / mid_n;
        d_inner = step % inner_n;
        d_mid = (step / inner_n) % mid_n;
        d_outer = step / inner_n / mid_n;
    }
    __device__ __forceinline__ void advance() {
        inner += d_inner;
        int carry = inner >= inner_n;
        if (carry) inner -= inner_n;
        mid += d_mid + carry;             // < 2·mid_n, so one correction suffices
        carry = mid >= mid_n;
        if (carry) mid -= mid_n;
        outer += d_outer + carry;
    }
};

// ------------------------------------------------------------------ simple, always correct
template <typename T, bool NHWC>
__global__ void __launch_bounds__(CC_DW_THREADS, 4)
depthwise_direct(const T* __restrict__ x, const T* __restrict__ w,
                 const T* __restrict__ bias, const T* __restrict__ residual,
                 T* __restrict__ y, int N, int C, int H, int W, int M, int P, int Q,
                 int R, int S, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                 int dil_w, int has_bias, int has_residual, int act) {
    typedef typename DwAcc<T>::type A;
    const int K = C * M;
    const cc_index_t total = (cc_index_t)N * K * P * Q;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        int k, p, q;
        cc_index_t n;
        const T* xc;                              // input channel k / M of image n
        cc_index_t row_pitch, col_pitch;          // element strides of its rows and columns
        if (NHWC) {                               // idx = ((n·P + p)·Q + q)·K + k
            k = (int)(idx % K);
            cc_index_t t = idx / K;
            q = (int)(t % Q);
            t /= Q;
            p = (int)(t % P);
            n = t / P;
            xc = x + n * H * W * C + k / M;
            row_pitch = (cc_index_t)W * C;
            col_pitch = C;
        } else {                                  // idx = ((n·K + k)·P + p)·Q + q
            q = (int)(idx % Q);
            cc_index_t t = idx / Q;
            p = (int)(t % P);
            t /= P;                               // t = n·K + k
            k = (int)(t % K);
            n = t / K;
            xc = x + (n * C + k / M) * H * W;
            row_pitch = W;
            col_pitch = 1;
        }
        // direct.cu's sum (one channel): r, then s; a tap in the padding contributes 0·w.
        const A acc = cc_direct_sum<T, A>(xc, (cc_index_t)0, row_pitch, col_pitch, w + (cc_index_t)k * R * S, 1, H,
                                          W, R, S, p * stride_h - pad_h, q * stride_w - pad_w, dil_h, dil_w);
        y[idx] = dw_epilogue(acc, has_bias ? bias : nullptr, k, has_residual ? residual : nullptr, idx, act);
    }
}

// ------------------------------------------------------------------ NHWC strips
// The image n, output row p and first column q0 of strip item t = (n·P + p)·strips + strip (the
// NHWC kernels' items, with the channel or channel vector already divided out).
struct DwStrip {
    cc_index_t n;
    int p, q0;
    __device__ __forceinline__ DwStrip(cc_index_t t, int strips, int P, int V) {
        q0 = (int)(t % strips) * V;
        t /= strips;
        p = (int)(t % P);
        n = t / P;
    }
};

// One item = (n, p, strip of V output columns, k), k fastest; a grid-stride loop over items.
// __launch_bounds__(256, 4): the strip's inputs, V accumulators and one filter row stay well
// inside 64 registers (double included).
template <typename T, int KS, int STRIDE, int V>
__global__ void __launch_bounds__(CC_DW_THREADS, 4)
depthwise_nhwc(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
               const T* __restrict__ residual, T* __restrict__ y, int N, int C, int H, int W, int M,
               int P, int Q, int pad_h, int pad_w, int has_bias, int has_residual, int act) {
    typedef typename DwAcc<T>::type A;
    constexpr int SPAN = (V - 1) * STRIDE + KS;   // input columns one strip reads
    const int K = C * M;
    const int strips = cc_div_up(Q, V);
    const cc_index_t total = (cc_index_t)N * P * strips * K;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    const T* bias_or_null = has_bias ? bias : nullptr;
    const T* residual_or_null = has_residual ? residual : nullptr;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int k = (int)(idx % K);
        const DwStrip at(idx / K, strips, P, V);
        const cc_index_t n = at.n;
        const int p = at.p, q0 = at.q0;
        const int iw0 = q0 * STRIDE - pad_w;
        const T* xc = x + n * H * W * C + k / M;
        const T* wk = w + (cc_index_t)k * KS * KS;
        A acc[V];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = A(0);
#pragma unroll
        for (int r = 0; r < KS; ++r) {
            const int ih = p * STRIDE - pad_h + r;
            if (ih < 0 || ih >= H) continue;      // a row of the padding: after the loop
            const T* row = xc + (cc_index_t)ih * W * C;
            A in[SPAN], wr[KS];
#pragma unroll
            for (int i = 0; i < SPAN; ++i) {
                const int iw = iw0 + i;
                in[i] = (iw >= 0 && iw < W) ? dw_ld(row + (cc_index_t)iw * C) : A(0);
            }
#pragma unroll
            for (int s = 0; s < KS; ++s) wr[s] = dw_ld(wk + r * KS + s);
            // Per output: r, then s, the direct kernel's order (padded columns add 0·w here).
#pragma unroll
            for (int v = 0; v < V; ++v)
#pragma unroll
                for (int s = 0; s < KS; ++s) acc[v] = cc_fma(in[v * STRIDE + s], wr[s], acc[v]);
        }
        // The rows in the padding contribute 0·w per tap (NaN for a non-finite weight; else
        // exactly nothing, so their place in the order does not matter). Not unrolled: it is
        // off the main loop's path.
#pragma unroll 1
        for (int r = 0; r < KS; ++r) {
            const int ih = p * STRIDE - pad_h + r;
            if (ih >= 0 && ih < H) continue;
#pragma unroll 1
            for (int s = 0; s < KS; ++s) {
                const A ws = dw_ld(wk + r * KS + s);
#pragma unroll
                for (int v = 0; v < V; ++v) acc[v] = cc_fma(A(0), ws, acc[v]);
            }
        }
#pragma unroll
        for (int v = 0; v < V; ++v) {
            const int q = q0 + v;
            if (q < Q) {
                const cc_index_t o = ((n * P + p) * Q + q) * K + k;
                y[o] = dw_epilogue(acc[v], bias_or_null, k, residual_or_null, o, act);
            }
        }
    }
}

// ------------------------------------------------------------------ NHWC 16-bit vectors
// depthwise_nhwc for float16/bfloat16 with channel multiplier 1 and C % VEC == 0: a thread owns
// VEC adjacent channels (one 16-byte access for VEC = 8, 8 bytes for VEC = 4) × V adjacent output
// columns of one row. Inputs, residual and outputs move as whole vectors (the plan checks the
// arrays are 16-byte aligned); the weights (KRSC with C/g = 1: each channel's R·S taps
// contiguous, so a tap's VEC channels are R·S apart) and the bias are gathered element by element
// from the read-only cache — they are C·R·S·2 bytes for the whole layer. Items (n, p, strip of V
// columns, channel vector), the vector fastest: a warp reads 32 consecutive vectors of a pixel
// row (512 bytes for VEC = 8). Sums as depthwise_nhwc: per output r, then s, in fp32.
// __launch_bounds__(256, 2): the strip's packed inputs ((V−1)·STRIDE + KS vectors), V·VEC fp32
// accumulators and a tap's VEC weights need more than 64 registers.
template <typename T, int KS, int STRIDE, int V, int VEC>
__global__ void __launch_bounds__(CC_DW_THREADS, 2)
depthwise_nhwc_vec(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                   const T* __restrict__ residual, T* __restrict__ y, int N, int C, int H, int W, int P, int Q,
                   int pad_h, int pad_w, int has_bias, int has_residual, int act) {
    constexpr int SPAN = (V - 1) * STRIDE + KS;
    constexpr int WORDS = VEC / 2;
    constexpr int TAPS = KS * KS;
    constexpr int R_UNROLL = KS > 5 ? 1 : KS;
    const int vecs = C / VEC;
    const int strips = cc_div_up(Q, V);
    const cc_index_t total = (cc_index_t)N * P * strips * vecs;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int c0 = (int)(idx % vecs) * VEC;
        const DwStrip at(idx / vecs, strips, P, V);
        const cc_index_t n = at.n;
        const int p = at.p, q0 = at.q0;
        const int iw0 = q0 * STRIDE - pad_w;
        const T* xc = x + n * H * W * C + c0;
        const T* wc = w + (cc_index_t)c0 * TAPS;
        float acc[V][VEC];
#pragma unroll
        for (int v = 0; v < V; ++v)
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[v][e] = 0.0f;
        // Rows unrolled up to 5x5; a 7x7 filter's unrolled rows (392 gathered weights) would let
        // the compiler hoist loads past the 128-register budget, so its row loop stays a loop.
#pragma unroll(R_UNROLL)
        for (int r = 0; r < KS; ++r) {
            const int ih = p * STRIDE - pad_h + r;
            if (ih < 0 || ih >= H) continue;      // a row of the padding: after the loop
            const T* row = xc + (cc_index_t)ih * W * C;
            unsigned in[SPAN][WORDS];             // zero words (+0.0) for the padded columns
#pragma unroll
            for (int i = 0; i < SPAN; ++i) {
                const int iw = iw0 + i;
                if (iw >= 0 && iw < W) {
                    dw_load_vec<VEC>(row + (cc_index_t)iw * C, in[i]);
                } else {
#pragma unroll
                    for (int j = 0; j < WORDS; ++j) in[i][j] = 0u;
                }
            }
#pragma unroll
            for (int s = 0; s < KS; ++s) {
                float wv[VEC];
#pragma unroll
                for (int e = 0; e < VEC; ++e) wv[e] = dw_ld(wc + e * TAPS + r * KS + s);
#pragma unroll
                for (int v = 0; v < V; ++v)
#pragma unroll
                    for (int j = 0; j < WORDS; ++j) {
                        const float2 f = dw_widen2<T>(in[v * STRIDE + s][j]);
                        acc[v][2 * j] = cc_fma(f.x, wv[2 * j], acc[v][2 * j]);
                        acc[v][2 * j + 1] = cc_fma(f.y, wv[2 * j + 1], acc[v][2 * j + 1]);
                    }
            }
        }
        // The padding's rows: 0·w per tap, as depthwise_nhwc (NaN for a non-finite weight).
#pragma unroll 1
        for (int r = 0; r < KS; ++r) {
            const int ih = p * STRIDE - pad_h + r;
            if (ih >= 0 && ih < H) continue;
#pragma unroll 1
            for (int s = 0; s < KS; ++s)
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    const float ws = dw_ld(wc + e * TAPS + r * KS + s);
#pragma unroll
                    for (int v = 0; v < V; ++v) acc[v][e] = cc_fma(0.0f, ws, acc[v][e]);
                }
        }
        float b[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) b[e] = has_bias ? dw_ld(bias + c0 + e) : 0.0f;
#pragma unroll
        for (int v = 0; v < V; ++v) {
            const int q = q0 + v;
            if (q >= Q) continue;
            const cc_index_t o = ((n * P + p) * Q + q) * C + c0;
            unsigned res[WORDS], out[WORDS];
            if (has_residual) dw_load_vec<VEC>(residual + o, res);
#pragma unroll
            for (int j = 0; j < WORDS; ++j) {
                float a0 = acc[v][2 * j], a1 = acc[v][2 * j + 1];
                if (has_bias) {                   // the epilogue's order: + bias, + residual, act
                    a0 += b[2 * j];
                    a1 += b[2 * j + 1];
                }
                if (has_residual) {
                    const float2 f = dw_widen2<T>(res[j]);
                    a0 += f.x;
                    a1 += f.y;
                }
                out[j] = dw_narrow2<T>(cc_activate(a0, act), cc_activate(a1, act));
            }
            dw_store_vec<VEC>(y + o, out);
        }
    }
}

// ------------------------------------------------------------------ shared-memory tiled
// KS = 0 and STRIDE = 0: the generic kernel (runtime R, S, stride, dilation; V must be 1).
// Otherwise R = S = KS, stride_h = stride_w = STRIDE and dilation 1 (the op checks this).
// __launch_bounds__(256, 4): four blocks per SM is the occupancy the compile matrix checks
// (50 % on sm_90, 100 % on sm_75), so ptxas keeps each thread within 64 registers.
template <typename T, int KS, int STRIDE, int V>
__global__ void __launch_bounds__(CC_DW_THREADS, 4)
depthwise_tiled(const T* __restrict__ x, const T* __restrict__ w,
                const T* __restrict__ bias, const T* __restrict__ residual,
                T* __restrict__ y, int N, int C, int H, int W, int M, int P, int Q,
                    int R_rt, int S_rt, int stride_h_rt, int stride_w_rt, int pad_h, int pad_w,
                    int dil_h_rt, int dil_w_rt, int tile_c, int tile_p, int tile_q,
                    int has_bias, int has_residual, int act) {
    static_assert(KS > 0 || (STRIDE == 0 && V == 1), "the generic variant computes one output per item");
    typedef typename DwAcc<T>::type A;
    const int R = KS > 0 ? KS : R_rt;
    const int S = KS > 0 ? KS : S_rt;
    const int stride_h = STRIDE > 0 ? STRIDE : stride_h_rt;
    const int stride_w = STRIDE > 0 ? STRIDE : stride_w_rt;
    const int dil_h = KS > 0 ? 1 : dil_h_rt;
    const int dil_w = KS > 0 ? 1 : dil_w_rt;
    const int K = C * M;

    // Block -> (n, channel group, row tile, column tile); the column tile varies fastest so
    // neighbouring blocks share halo rows through L2.
    const int tiles_q = cc_div_up(Q, tile_q);
    const int tiles_p = cc_div_up(P, tile_p);
    const int c_groups = cc_div_up(C, tile_c);
    cc_index_t b = blockIdx.x;
    const int tq = (int)(b % tiles_q);
    b /= tiles_q;
    const int tp = (int)(b % tiles_p);
    b /= tiles_p;
    const int cg = (int)(b % c_groups);
    const cc_index_t n = b / c_groups;
    const int c0 = cg * tile_c;
    const int nc = min(tile_c, C - c0);
    const int p0 = tp * tile_p;
    const int q0 = tq * tile_q;
    const int strips = cc_div_up(tile_p, V);
    const int in_rows = (strips * V - 1) * stride_h + (R - 1) * dil_h + 1;
    const int in_cols = (tile_q - 1) * stride_w + (S - 1) * dil_w + 1;
    const int ih0 = p0 * stride_h - pad_h;
    const int iw0 = q0 * stride_w - pad_w;

    // Dynamic shared memory is one array for every instantiation (its type cannot differ
    // between them), viewed as A: the tiles hold widened values (16-bit inputs as float).
    extern __shared__ __align__(16) unsigned char cc_dw_smem[];
    A* smem = reinterpret_cast<A*>(cc_dw_smem);
    A* tile_in = smem;                                       // [tile_c][in_rows][in_cols]
    A* tile_w = smem + tile_c * in_rows * in_cols;           // [tile_c·M][R·S]
    const int tid = threadIdx.x;

    // Stage the input tile, zero outside the image (that is the padding), walking the flat
    // index with a DwCounter (channel, row, column). Four loads are issued before their
    // stores, to keep bytes in flight.
    {
        const int total = nc * in_rows * in_cols;
        DwCounter at;
        at.init(tid, CC_DW_THREADS, in_cols, in_rows);
        const T* xn = x + (n * C + c0) * H * W;
        for (int base = tid; base < total; base += 4 * CC_DW_THREADS) {
            A v[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int ih = ih0 + at.mid;
                const int iw = iw0 + at.inner;
                v[u] = A(0);
                if (base + u * CC_DW_THREADS < total && ih >= 0 && ih < H && iw >= 0 && iw < W)
                    v[u] = dw_ld(xn + ((cc_index_t)at.outer * H + ih) * W + iw);
                at.advance();
            }
#pragma unroll
            for (int u = 0; u < 4; ++u)
                if (base + u * CC_DW_THREADS < total) tile_in[base + u * CC_DW_THREADS] = v[u];
        }
        // The filters of output channels c0·M ... (c0 + nc)·M − 1 are contiguous.
        const int wtotal = nc * M * R * S;
        const T* wg = w + (cc_index_t)c0 * M * R * S;
        for (int i = tid; i < wtotal; i += CC_DW_THREADS) tile_w[i] = dw_ld(wg + i);
    }
    __syncthreads();

    // Items: (local output channel, strip of V rows, column); the column varies fastest so a
    // warp writes consecutive outputs.
    const int items = nc * M * strips * tile_q;
    DwCounter it;
    it.init(tid, CC_DW_THREADS, tile_q, strips);
    for (int item = tid; item < items; item += CC_DW_THREADS, it.advance()) {
        const int col = it.inner;
        const int strip = it.mid;
        const int kl = it.outer;                            // local output channel
        const int cl = M == 1 ? kl : kl / M;                // its local input channel
        const int q = q0 + col;
        const int pbase = p0 + strip * V;
        if (q >= Q || pbase >= P) continue;
        const A* in = tile_in + (cl * in_rows + strip * V * stride_h) * in_cols + col * stride_w;
        const A* wk = tile_w + kl * R * S;
        A acc[V];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = A(0);

        if constexpr (KS > 0) {
            A wr[KS * KS];
#pragma unroll
            for (int i = 0; i < KS * KS; ++i) wr[i] = wk[i];
            // Slide down the (V−1)·STRIDE + KS staged rows once; row ir feeds output v through
            // filter row r = ir − v·STRIDE. Accumulation order per output is r, then s, as in
            // the direct kernel.
#pragma unroll
            for (int ir = 0; ir < (V - 1) * STRIDE + KS; ++ir) {
                A rowv[KS];
#pragma unroll
                for (int s = 0; s < KS; ++s) rowv[s] = in[ir * in_cols + s];
#pragma unroll
                for (int v = 0; v < V; ++v) {
                    const int r = ir - v * STRIDE;
                    if (r >= 0 && r < KS) {
#pragma unroll
                        for (int s = 0; s < KS; ++s) acc[v] = cc_fma(rowv[s], wr[r * KS + s], acc[v]);
                    }
                }
            }
        } else {
            for (int r = 0; r < R; ++r) {
                const A* inr = in + r * dil_h * in_cols;
                for (int s = 0; s < S; ++s) acc[0] = cc_fma(inr[s * dil_w], wk[r * S + s], acc[0]);
            }
        }

        const int k = c0 * M + kl;
#pragma unroll
        for (int v = 0; v < V; ++v) {
            const int p = pbase + v;
            if (p < P) {
                const cc_index_t idx = ((n * K + k) * P + p) * Q + q;
                y[idx] = dw_epilogue(acc[v], has_bias ? bias : nullptr, k,
                                     has_residual ? residual : nullptr, idx, act);
            }
        }
    }
}

// ------------------------------------------------------------------ fused separable block
// y[n,k,pix] = act(Σ_ci wp[k,ci] · act_d(dw(x)[n,ci,pix] + bd[ci]) + bp[k] + residual), with
// ci over the C·M depthwise channels. Block: 64 output pixels (flattened p·Q + q of one image)
// × 64 pointwise output channels; each of the 256 threads accumulates 4 channels × 4 pixels
// (pixels tx + 16·j, channels ty + 16·i, so shared-memory reads and global writes are
// consecutive across a warp).
#define CC_SEP_PIX 64
#define CC_SEP_K 64
#define CC_SEP_CHUNK 32

// __launch_bounds__(256, 2): the 16 accumulators and operands need more than 64 registers.
extern "C" __global__ void __launch_bounds__(CC_DW_THREADS, 2)
separable_fused_f32(const float* __restrict__ x, const float* __restrict__ wd,
                    const float* __restrict__ bd, const float* __restrict__ wp,
                    const float* __restrict__ bp, const float* __restrict__ residual,
                    float* __restrict__ y, int N, int C, int H, int W, int M, int P, int Q,
                    int R, int S, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                    int dil_w, int K, int has_bd, int act_d, int has_bp, int has_residual, int act) {
    __shared__ float dw_tile[CC_SEP_CHUNK][CC_SEP_PIX];
    // [channel][k], one float of padding per row so the transposing store is conflict-free.
    __shared__ float pw_tile[CC_SEP_CHUNK][CC_SEP_K + 1];

    const int CM = C * M;
    const int PQ = P * Q;
    const int k_tiles = cc_div_up(K, CC_SEP_K);
    const int pix_tiles = cc_div_up(PQ, CC_SEP_PIX);
    cc_index_t b = blockIdx.x;
    const int kt = (int)(b % k_tiles);        // k tiles of one pixel tile run side by side
    b /= k_tiles;
    const int pt = (int)(b % pix_tiles);
    const cc_index_t n = b / pix_tiles;
    const int k0 = kt * CC_SEP_K;
    const int pix0 = pt * CC_SEP_PIX;
    const int tid = threadIdx.x;

    // Depthwise role: one pixel, channels dc, dc + 4, ... of each chunk.
    const int dpix = tid % CC_SEP_PIX;
    const int dc = tid / CC_SEP_PIX;
    const int my_pix = pix0 + dpix;
    const bool pix_ok = my_pix < PQ;
    const int dp = pix_ok ? my_pix / Q : 0;
    const int dq = pix_ok ? my_pix % Q : 0;
    const float* xn = x + n * C * H * W;

    // Pointwise role.
    const int tx = tid % 16;
    const int ty = tid / 16;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int ch0 = 0; ch0 < CM; ch0 += CC_SEP_CHUNK) {
#pragma unroll 1
        for (int i = 0; i < CC_SEP_CHUNK / 4; ++i) {
            const int cl = dc + 4 * i;
            const int ci = ch0 + cl;
            float v = 0.0f;                   // absent channels/pixels contribute exact zeros
            if (pix_ok && ci < CM) {
                const float a = cc_direct_sum(xn + (cc_index_t)(ci / M) * H * W, (cc_index_t)0, (cc_index_t)W,
                                              (cc_index_t)1, wd + (cc_index_t)ci * R * S, 1, H, W, R, S,
                                              dp * stride_h - pad_h, dq * stride_w - pad_w, dil_h, dil_w);
                v = cc_epilogue(a, has_bd ? bd : nullptr, ci, nullptr, 0, act_d);
            }
            dw_tile[cl][dpix] = v;
        }
        // Pointwise weights wp[k][ch0 + c] -> pw_tile[c][k]: consecutive threads read
        // consecutive c of one row of wp.
        for (int i = tid; i < CC_SEP_CHUNK * CC_SEP_K; i += CC_DW_THREADS) {
            const int c = i % CC_SEP_CHUNK;
            const int kk = i / CC_SEP_CHUNK;
            const int ci = ch0 + c;
            const int k = k0 + kk;
            pw_tile[c][kk] = (ci < CM && k < K) ? cc_ldg(wp + (cc_index_t)k * CM + ci) : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < CC_SEP_CHUNK; ++c) {
            float a[4], d[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = pw_tile[c][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) d[j] = dw_tile[c][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], d[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int k = k0 + ty + 16 * i;
        if (k >= K) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int pix = pix0 + tx + 16 * j;
            if (pix >= PQ) continue;
            const cc_index_t idx = (n * K + k) * PQ + pix;
            y[idx] = cc_epilogue(acc[i][j], has_bp ? bp : nullptr, k, has_residual ? residual : nullptr,
                                 idx, act);
        }
    }
}
