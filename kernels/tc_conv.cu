// tc_conv.cu — 2-D convolution as an implicit GEMM on tensor cores: float16 / bfloat16
// (mma.m16n8k16) or float32 multiplied as tf32 (mma.m16n8k8, operands rounded by
// cvt.rna.tf32), fp32 accumulation, fused epilogue act(acc + bias[k] + residual) converted to
// the input dtype.
//
// The GEMM per group g (NHWC activations, KRSC weights — the tensor-core layout, where the
// reduction index runs along contiguous channels of both operands):
//   D[m, n] = Σ_kk A[m, kk] · B[kk, n]      m = (img·P + p)·Q + q,  n < K/groups,
//   kk = (r, s, c) with c fastest,          A[m, kk] = x[img, p·sh − ph + r·dh, q·sw − pw + s·dw, g·Cg + c]
//                                            B[kk, n] = w[g·Kg + n, r, s, c]   (0 in the padding)
// and the output written NHWC (out[m, g·Kg + n]) or NCHW (out[img, g·Kg + n, p, q]).
//
// Variants, simplest first:
// 1. tc_conv_simple<T> ("analytic"): one warp per 16×8 output tile; each lane gathers its own
//    fragment elements from global memory (a division per element) with arbitrary strides, so
//    it reads NCHW or NHWC and KCRS or KRSC as they are, with no alignment requirement. The
//    reference for variant 2.
// 2. tc_conv<T, BM, BN, BK, WM, WN, STAGES, VEC, MINB> (NHWC/KRSC) adds what tc_gemm adds
//    (cp.async pipeline, ldmatrix, warp tiles, swizzled shared memory) plus the convolution's
//    gather in the loader: (r, s) outer and BK channels inner, so every copy is VEC contiguous
//    channels of one pixel — entirely in the image or entirely padding (zero fill, no read);
//    each thread decodes its pixels once into an address and a mask of the filter rows and
//    columns inside the image, a tile moves every address by one of three problem-constant
//    increments (selects, no branch) and tests padding with an AND: one path per tile (R and
//    S at most 16). Needs Cg a multiple of VEC (the op picks the largest VEC that holds); VEC = 1
//    (16-bit types: odd Cg, e.g. a 3-channel stem, or arrays not 4-byte aligned) copies one
//    element at a time, synchronously (cc_copy_zfill), so NHWC is never packed.
// 3. tc_pack_nhwc<T>: the NCHW path — a tiled transpose to NHWC (KCRS to KRSC) with each
//    group's channels zero-padded to a multiple of 8; variant 2 then runs on the packed
//    operands and writes the output NCHW from its epilogue. One read and write of x (and w).
//
// Configs (smem = STAGES·(BM + BN)·BK·sizeof(T)): 128x128x32, warps 2x4 of 64x32, 4 stages,
// 256 threads, 2 blocks/SM, while M gives every SM a tile; 128x128x32 as warps 2x2 of 64x64
// (128 threads; twice the mma per ldmatrix), chosen where two of its blocks fit an SM; else
// 64x64x32, warps 2x2 of 32x32, 3 stages, 128 threads, 4 blocks/SM (_v2: 2); *_s2 for sm_75
// (no cp.async); tf32 BK = 16.
// The epilogue writes each accumulator with a (not inlined) call; see cc_tc_store.
//
// The choice of tiles for ResNet-50's layers: docs/kernel_design.md#tc_convcu; the 64x64 warp
// tiles and the single-path loader: docs/main_loops.md. Registers, spills and the tensor issue
// ceiling: `cuconv kernels --analyze --file tc_conv.cu` (docs/kernel_figures.md); on sm_90,
// mma.sync cannot reach Hopper's peak (wgmma_conv.cu can).
#include "tc_tile.cuh"

// A: BM output pixels × BK channels of tap (r, s); B: BN filters × the same BK channels. One
// path per tile (CUTLASS's "optimized" iterators, for this layout): each thread's copies share
// one column (channel chunk col) and take rows row0 + i·ROWS; per A row the thread keeps the
// pixel's address at the current tap and chunk and a bit mask of the filter rows (bits 0-15)
// and columns (bits 16-31) whose input position is inside the image (0 for a row past M), so a
// tile's padding test is an AND and a compare per copy; the B rows are one address and a
// count of filters left. A tile advances every address by one of three increments fixed by the
// problem (next chunk, next filter column, next filter row), chosen by selects. Copies that
// fall outside (padding, channel or filter tails, tiles past the last) are zero-size.
template <typename T, int BM, int BN, int BK, int THREADS, int VEC>
struct TcConvLoader {
    static constexpr int BYTES = VEC * (int)sizeof(T);
    static constexpr int PER_ROW = BK / VEC;
    static constexpr int ROWS = THREADS / PER_ROW;   // rows one pass of the threads covers
    static constexpr int A_COPIES = BM / ROWS, B_COPIES = BN / ROWS;
    static_assert(THREADS % PER_ROW == 0 && BM % ROWS == 0 && BN % ROWS == 0,
                  "every thread issues the same number of copies, all in one column");
    static constexpr int ROW_BYTES = BK * (int)sizeof(T);

    const T* a_ptr[A_COPIES];
    unsigned a_mask[A_COPIES];
    const T* b_ptr;            // w at filter n0 + row0, the current tap and channel c0 + col
    int b_step, b_rows;        // between a thread's filters (ROWS·R·S·Cg); filters left from row0
    cc_index_t a_inc_c, a_inc_s, a_inc_r;
    int b_inc_c, b_inc_s;
    CcTapWalk at;
    int Cg, S, col, row0;

    __device__ __forceinline__ void init(const T* x, const T* w, int m0, int n0, int g, int M, int Kg, int P, int Q,
                                         int H, int W, int Cs, int R, int S_, int sh, int sw, int ph, int pw,
                                         int dh, int dw, int Cg_) {
        const int tid = threadIdx.x;
        Cg = Cg_;
        S = S_;
        at = CcTapWalk{0, 0, 0, false, false};
        col = (tid % PER_ROW) * VEC;
        row0 = tid / PER_ROW;
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            const int m = m0 + row0 + i * ROWS;
            a_mask[i] = 0;
            a_ptr[i] = x;
            if (m < M) {
                const int img = m / (P * Q), pq = m - img * (P * Q), p = pq / Q, q = pq - p * Q;
                const int ih0 = p * sh - ph, iw0 = q * sw - pw;
                for (int t = 0; t < R; ++t) a_mask[i] |= (unsigned)((unsigned)(ih0 + t * dh) < (unsigned)H) << t;
                for (int t = 0; t < S; ++t) a_mask[i] |= (unsigned)((unsigned)(iw0 + t * dw) < (unsigned)W) << (16 + t);
                // Pointer math only: the first tap may be padding (the mask guards every read).
                a_ptr[i] = x + (((cc_index_t)img * H + ih0) * W + iw0) * Cs + (cc_index_t)g * Cg + col;
            }
        }
        const int RSCg = R * S * Cg, chunks = (Cg + BK - 1) / BK;
        b_ptr = w + ((cc_index_t)g * Kg + n0 + row0) * RSCg + col;
        b_step = ROWS * RSCg;
        b_rows = Kg - n0 - row0;
        const cc_index_t back = (cc_index_t)(chunks - 1) * BK;   // the last chunk back to c0 = 0
        a_inc_c = BK;
        a_inc_s = (cc_index_t)dw * Cs - back;
        a_inc_r = ((cc_index_t)dh * W - (cc_index_t)(S - 1) * dw) * Cs - back;
        b_inc_c = BK;
        b_inc_s = Cg - (chunks - 1) * BK;   // KRSC: the next tap follows the last channel
    }

    __device__ __forceinline__ void load(unsigned char* sA, unsigned char* sB, bool live) {
        const bool cok = live && at.c0 + col < Cg;
        const unsigned need = (1u << at.r) | (1u << (16 + at.s));
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            const bool ok = cok && (a_mask[i] & need) == need;
            cc_copy_zfill<BYTES>(sA + cc_tc_smem_offset<ROW_BYTES>(row0 + i * ROWS, col * (int)sizeof(T)),
                                     a_ptr[i], ok ? BYTES : 0);
        }
#pragma unroll
        for (int i = 0; i < B_COPIES; ++i) {
            const bool ok = cok && i * ROWS < b_rows;
            cc_copy_zfill<BYTES>(sB + cc_tc_smem_offset<ROW_BYTES>(row0 + i * ROWS, col * (int)sizeof(T)),
                                     b_ptr + i * b_step, ok ? BYTES : 0);
        }
        at.step(BK, Cg, S);
        const cc_index_t a_inc = at.pick(a_inc_c, a_inc_s, a_inc_r);
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) a_ptr[i] += a_inc;
        b_ptr += at.pick(b_inc_c, b_inc_s, b_inc_s);
    }
};

// CC_TC_CONV_PARAMS (the arguments of both variants) and cc_tc_out_index are in tc_tile.cuh
// (wgmma_conv.cu takes the same arguments).

// Variant 2. C is the channel count of x's pixels (groups · Cg, Cg possibly padded by
// tc_pack_nhwc); grid: 1-D over (group, band of M tiles, N tile), see cc_tc_raster in tc_gemm.cu.
template <typename T, int BM, int BN, int BK, int WM, int WN, int STAGES, int VEC, int MINB>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB) tc_conv(CC_TC_CONV_PARAMS, int out_nchw) {
    constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
    constexpr int MI = WM / 16, NI = WN / 8;
    extern __shared__ __align__(128) unsigned char cc_tc_smem[];

    const int M = N * P * Q, Cg = C / groups, Kg = K / groups;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (Kg + BN - 1) / BN;
    const int per_group = tiles_m * tiles_n;
    const int g = blockIdx.x / per_group;
    // Bands of 8 M tiles, walked N tile by N tile (blocks resident together share x and w in L2).
    int tm, tn;
    {
        const int id = blockIdx.x - g * per_group;
        const int band = id / (8 * tiles_n), first = band * 8, rows = min(tiles_m - first, 8);
        const int in_band = id - band * 8 * tiles_n;
        tm = first + in_band % rows;
        tn = in_band / rows;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;

    TcConvLoader<T, BM, BN, BK, THREADS, VEC> loader;
    loader.init(x, w, tm * BM, tn * BN, g, M, Kg, P, Q, H, W, C, R, S, stride_h, stride_w, pad_h, pad_w, dilation_h,
                dilation_w, Cg);
    const int k_tiles = R * S * ((Cg + BK - 1) / BK);
    cc_tc_mainloop<T, BM, BN, BK, WM, WN, STAGES, false, TcConvLoader<T, BM, BN, BK, THREADS, VEC>, true>(
        acc, cc_tc_smem, loader, k_tiles, wm0, wn0, lane);

    const int gr = lane >> 2, t = lane & 3, PQ = P * Q;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int m = tm * BM + wm0 + mi * 16 + gr + 8 * (i >> 1);
                const int n = tn * BN + wn0 + ni * 8 + 2 * t + (i & 1);
                if (m < M && n < Kg) {
                    const int k = g * Kg + n;
                    const cc_index_t idx = cc_tc_out_index(m, k, K, PQ, out_nchw);
                    cc_tc_store<T>(out, idx, acc[mi][ni][i], bias, has_bias, k, residual, has_residual, act);
                }
            }
}

// Variant 1: blocks of 4 warps over 32 output pixels × 16 channels of one group, any strides.
// The reduction index kk = (r·S + s)·Cg + c (the same order as variant 2).
template <typename T>
__global__ void __launch_bounds__(128) tc_conv_simple(CC_TC_CONV_PARAMS, long long x_sn, long long x_sc,
                                                      long long x_sh, long long x_sw, long long w_sk,
                                                      long long w_sc, long long w_sr, long long w_ss,
                                                      long long o_sn, long long o_sc, long long o_sh,
                                                      long long o_sw) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int M = N * P * Q, Cg = C / groups, Kg = K / groups, PQ = P * Q;
    const int tiles_n = (Kg + 15) / 16, tiles_m = (M + 31) / 32;
    const int g = blockIdx.x / (tiles_m * tiles_n);
    const int id = blockIdx.x - g * tiles_m * tiles_n;
    const int m0 = id / tiles_n * 32 + (warp >> 1) * 16;
    const int n0 = id % tiles_n * 16 + (warp & 1) * 8;
    const int Kred = R * S * Cg;
    const T zero = TcType<T>::from_float(0.0f);
    auto a_at = [&](int mm, int kk) {
        const int m = m0 + mm;
        if (m >= M || kk >= Kred) return zero;
        const int c = kk % Cg, rs = kk / Cg, r = rs / S, s = rs - r * S;
        const int img = m / PQ, pq = m - img * PQ, p = pq / Q, q = pq - p * Q;
        const int ih = p * stride_h - pad_h + r * dilation_h, iw = q * stride_w - pad_w + s * dilation_w;
        if ((unsigned)ih >= (unsigned)H || (unsigned)iw >= (unsigned)W) return zero;
        return x[img * x_sn + (cc_index_t)(g * Cg + c) * x_sc + ih * x_sh + iw * x_sw];
    };
    auto b_at = [&](int kk, int nn) {
        const int n = n0 + nn;
        if (n >= Kg || kk >= Kred) return zero;
        const int c = kk % Cg, rs = kk / Cg, r = rs / S, s = rs - r * S;
        return w[(cc_index_t)(g * Kg + n) * w_sk + c * w_sc + r * w_sr + s * w_ss];
    };
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    cc_tc_warp_direct<T>(acc, Kred, a_at, b_at, lane);
    const int gr = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + gr + 8 * (i >> 1), n = n0 + 2 * t + (i & 1);
        if (m < M && n < Kg) {
            const int k = g * Kg + n, img = m / PQ, pq = m - img * PQ, p = pq / Q, q = pq - p * Q;
            const cc_index_t idx = img * o_sn + k * o_sc + p * o_sh + q * o_sw;
            cc_tc_store<T>(out, idx, acc[i], bias, has_bias, k, residual, has_residual, act);
        }
    }
}

// Variant 3: dst[n][hw][g·Cgp + c] = c < Cg ? src[n·s_n + (g·Cg + c)·s_c + hw·s_hw] : 0, for the
// NCHW input (s_c = HW, s_hw = 1), KCRS weights (n = filter, C = Cg, HW = R·S, groups = 1) and
// NHWC input with padded channels (s_c = 1, s_hw = C). Block 32×8 over a 32 (channel) × 32
// (pixel) tile: reads run along pixels, writes along channels.
template <typename T>
__global__ void __launch_bounds__(256) tc_pack_nhwc(const T* __restrict__ src, T* __restrict__ dst, int N, int C,
                                                    int HW, int groups, int Cgp, long long s_n, long long s_c,
                                                    long long s_hw) {
    __shared__ T tile[32][33];   // +1 column: the transposed reads hit 32 different banks
    const int Cg = C / groups, Cout = groups * Cgp;
    const int n = blockIdx.z;
    const int c0 = blockIdx.x * 32, hw0 = blockIdx.y * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const T zero = TcType<T>::from_float(0.0f);
    for (int j = ty; j < 32; j += 8) {
        const int oc = c0 + j, hw = hw0 + tx;
        T v = zero;
        if (oc < Cout && hw < HW) {
            const int gi = oc / Cgp, c = oc - gi * Cgp;
            if (c < Cg) v = src[n * s_n + (cc_index_t)(gi * Cg + c) * s_c + hw * s_hw];
        }
        tile[j][tx] = v;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
        const int hw = hw0 + j, oc = c0 + tx;
        if (oc < Cout && hw < HW) dst[((cc_index_t)n * HW + hw) * Cout + oc] = tile[tx][j];
    }
}
