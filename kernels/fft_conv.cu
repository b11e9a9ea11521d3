// fft_conv.cu — FFT convolution (the textbook's §8.4), fp32 data, complex64 spectra, NCHW/KCRS.
//
// y = act(conv_stride1(x, w) + bias + residual) by the convolution theorem, one Lh×Lw transform
// size per problem (ops/fft_conv.py chooses it; the transforms are cuFFT's on the GPU and
// pocketfft's on the CPU backends, called by the plan between these kernels):
//   1. pack:     the zero-padded input tiles, and the filter spread by the dilation and placed
//                circularly reversed, so that its spectrum is the conjugate of w's (no conj in
//                the inner loop of the product below);
//   2. (FFT)     R2C of every packed plane;
//   3. multiply: Y[b][k][f] = Σ_{c in k's group} X[b][c][f] · Wf[k][c][f], a complex GEMM per
//                frequency (batch b × C_g) · (C_g × K_g);
//   4. (FFT)     C2R of every Y plane, unnormalised (cuFFT's convention);
//   5. crop:     the valid outputs of each tile / (Lh·Lw), fused epilogue (overlap-save).
//
// Kernels, simplest to fastest:
//   fft_pack_input            one thread per element of the packed planes: a gather, zero
//                             outside the image (the padding and the tile overhang).
//   fft_pack_filter           the same for a range of filter planes (K·C_g in passes).
//   fft_channel_gemm_simple   one thread per Y[b][k][f]: the always-correct reference for stage 3.
//   fft_channel_gemm<TB, TK>  adds register tiling: lanes over 32 consecutive frequencies
//                             (coalesced: the spectra are plane-major), each thread TB items ×
//                             TK channels in registers, TB + TK complex loads per TB·TK complex
//                             MACs; no shared memory (nothing is reused across frequencies).
//   fft_crop_epilogue         one thread per output element of a chunk of tiles, fused epilogue.
//   fft_flags_init, fft_fixup exact non-finite semantics: a transform mixes a whole plane, so the
//                             items and channels whose data hold a NaN/Inf (or whose spectra
//                             overflow from finite data) are flagged and recomputed from x and w
//                             in direct.cu's order and epilogue — direct convolution's values bit
//                             for bit; with finite data a register test per element and a
//                             fix-up launch that exits.
//
// The flag protocol and the channel GEMM's traffic: docs/kernel_design.md#fft_convcu. Figures:
// `cuconv kernels --analyze --file fft_conv.cu` (docs/kernel_figures.md). Accuracy:
// docs/fft_accuracy.md.
#include "common.cuh"

// --------------------------------------------------------------------------- non-finite flags
// Marks item b of the pass for the fix-up (and the "any item" word the fix-up tests first). The plain
// volatile read skips the atomics once the flag is set, so a plane full of NaN does not
// serialise on one address; a stale read only costs a redundant atomicOr.
__device__ __forceinline__ void fft_flag_item(int* item_flags, int* any_item, cc_index_t b) {
    if (*(volatile const int*)(item_flags + b) == 0) {
        atomicOr(item_flags + b, 1);
        atomicOr(any_item, 1);
    }
}

// --------------------------------------------------------------------------- packing
// Xr[b][c][i][j] (b < items, planes of Lh×Lw) = x[n][c][th·Th + i − pad_top][tw·Tw + j − pad_left],
// zero outside the image, for global item item_begin + b = (n·tiles_h + th)·tiles_w + tw. Sets
// item_flags[b] when the item's window holds a non-finite value.
__global__ void __launch_bounds__(256, 2) fft_pack_input(
        const float* __restrict__ x, float* __restrict__ xr, int C, int H, int W, int Lh, int Lw,
        int tiles_h, int tiles_w, int Th, int Tw, int pad_top, int pad_left, long long item_begin,
        int items, int* item_flags, int* any_item) {
    const cc_index_t plane = (cc_index_t)Lh * Lw;
    const cc_index_t total = (cc_index_t)items * C * plane;
    const cc_index_t tiles = (cc_index_t)tiles_h * tiles_w;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t bc = e / plane;
        const int ij = (int)(e - bc * plane);
        const int i = ij / Lw, j = ij - (ij / Lw) * Lw;
        const cc_index_t b = bc / C;
        const int c = (int)(bc - b * C);
        const cc_index_t item = item_begin + b;
        const cc_index_t n = item / tiles;
        const int t = (int)(item - n * tiles);
        const int th = t / tiles_w, tw = t - (t / tiles_w) * tiles_w;
        const int h = th * Th + i - pad_top, w = tw * Tw + j - pad_left;
        float v = 0.0f;
        if (h >= 0 && h < H && w >= 0 && w < W) v = cc_ldg(x + ((n * C + c) * H + h) * (cc_index_t)W + w);
        if (!cc_is_finite(v)) fft_flag_item(item_flags, any_item, b);
        xr[e] = v;
    }
}

// wr[q][i][j] for filter planes plane_begin + q = k·Cg + c (q < planes): w[k][c][r][s] at
// i = (−dil_h·r) mod Lh, j = (−dil_w·s) mod Lw, zero elsewhere (needs Lh >= dil_h·(R−1) + 1 and
// Lw >= dil_w·(S−1) + 1, so that no two taps share a position).
__global__ void __launch_bounds__(256, 2) fft_pack_filter(
        const float* __restrict__ w, float* __restrict__ wr, int R, int S, int dil_h, int dil_w, int Lh,
        int Lw, long long plane_begin, int planes) {
    const cc_index_t plane = (cc_index_t)Lh * Lw;
    const cc_index_t total = (cc_index_t)planes * plane;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t q = e / plane;
        const int ij = (int)(e - q * plane);
        const int i = ij / Lw, j = ij - (ij / Lw) * Lw;
        const int di = i == 0 ? 0 : Lh - i;     // = dil_h·r when a tap lands here
        const int dj = j == 0 ? 0 : Lw - j;
        float v = 0.0f;
        if (di % dil_h == 0 && dj % dil_w == 0) {
            const int r = di / dil_h, s = dj / dil_w;
            if (r < R && s < S) v = cc_ldg(w + ((plane_begin + q) * R + r) * (cc_index_t)S + s);
        }
        wr[e] = v;
    }
}

// --------------------------------------------------------------------------- the channel GEMM
__device__ __forceinline__ float2 cc_cmac(float2 acc, float2 a, float2 b) {
    acc.x = fmaf(a.x, b.x, fmaf(-a.y, b.y, acc.x));
    acc.y = fmaf(a.x, b.y, fmaf(a.y, b.x, acc.y));
    return acc;
}

// Y[b][k][f] = Σ_c X[b][g·Cg + c][f] · Wf[k][c][f], g = k / Kg. One thread per output value.
__global__ void __launch_bounds__(256, 2) fft_channel_gemm_simple(
        const float2* __restrict__ X, const float2* __restrict__ Wf, float2* __restrict__ Y, int items,
        int C, int K, int groups, int F) {
    const int Cg = C / groups, Kg = K / groups;
    const cc_index_t total = (cc_index_t)items * K * F;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t bk = e / F;
        const int f = (int)(e - bk * F);
        const cc_index_t b = bk / K;
        const int k = (int)(bk - b * K);
        const int g = k / Kg;
        const float2* xp = X + (b * C + (cc_index_t)g * Cg) * F + f;
        const float2* wp = Wf + (cc_index_t)k * Cg * F + f;
        float2 acc = make_float2(0.0f, 0.0f);
        for (int c = 0; c < Cg; ++c) acc = cc_cmac(acc, xp[(cc_index_t)c * F], wp[(cc_index_t)c * F]);
        Y[e] = acc;
    }
}

// Block (32, 8): threadIdx.x a frequency, threadIdx.y a run of TK output channels of the group.
// grid = (⌈F/32⌉, groups·⌈Kg/(8·TK)⌉, ⌈items/TB⌉). No barrier, so threads past F return early.
template <int TB, int TK>
__global__ void __launch_bounds__(256, 2) fft_channel_gemm(
        const float2* __restrict__ X, const float2* __restrict__ Wf, float2* __restrict__ Y, int items,
        int C, int K, int groups, int F) {
    const int Cg = C / groups, Kg = K / groups;
    const int f = blockIdx.x * 32 + threadIdx.x;
    if (f >= F) return;
    const int k_blocks = cc_div_up(Kg, 8 * TK);
    const int g = blockIdx.y / k_blocks;
    const int k0 = (blockIdx.y - g * k_blocks) * 8 * TK + threadIdx.y * TK;   // within the group
    const int b0 = blockIdx.z * TB;
    if (k0 >= Kg) return;
    const float2* xp[TB];
    const float2* wp[TK];
    bool b_ok[TB], k_ok[TK];
#pragma unroll
    for (int i = 0; i < TB; ++i) {
        b_ok[i] = b0 + i < items;
        // Out-of-range items read item b0's values (always valid) and are never stored.
        const cc_index_t b = b_ok[i] ? b0 + i : b0;
        xp[i] = X + (b * C + (cc_index_t)g * Cg) * F + f;
    }
#pragma unroll
    for (int j = 0; j < TK; ++j) {
        k_ok[j] = k0 + j < Kg;
        const cc_index_t k = (cc_index_t)g * Kg + (k_ok[j] ? k0 + j : k0);
        wp[j] = Wf + k * Cg * F + f;
    }
    float2 acc[TB][TK];
#pragma unroll
    for (int i = 0; i < TB; ++i)
#pragma unroll
        for (int j = 0; j < TK; ++j) acc[i][j] = make_float2(0.0f, 0.0f);
    for (int c = 0; c < Cg; ++c) {
        float2 xv[TB], wv[TK];
#pragma unroll
        for (int i = 0; i < TB; ++i) {
            xv[i] = cc_ldg(xp[i]);
            xp[i] += F;
        }
#pragma unroll
        for (int j = 0; j < TK; ++j) {
            wv[j] = cc_ldg(wp[j]);
            wp[j] += F;
        }
#pragma unroll
        for (int i = 0; i < TB; ++i)
#pragma unroll
            for (int j = 0; j < TK; ++j) acc[i][j] = cc_cmac(acc[i][j], xv[i], wv[j]);
    }
#pragma unroll
    for (int i = 0; i < TB; ++i) {
        if (!b_ok[i]) continue;
#pragma unroll
        for (int j = 0; j < TK; ++j) {
            if (!k_ok[j]) continue;
            Y[((cc_index_t)(b0 + i) * K + (cc_index_t)g * Kg + k0 + j) * F + f] = acc[i][j];
        }
    }
}

// --------------------------------------------------------------------------- crop + epilogue
// y[n][k][p][q] = act(scale·Yr[b][k][i][j] + bias[k] + residual[n][k][p][q]) for the chunk's items
// b (global item item_begin + b), i < crop_h = min(Th, P), j < crop_w = min(Tw, Q),
// p = th·Th + i < P, q = tw·Tw + j < Q. A non-finite convolution value (before the epilogue,
// which may hide it: relu(NaN) = 0) sets item_flags[b] for the fix-up unless channel k is flagged
// already (the fix-up recomputes all of k then).
__global__ void __launch_bounds__(256, 2) fft_crop_epilogue(
        const float* __restrict__ yr, float* __restrict__ y, const float* __restrict__ bias, int has_bias,
        const float* __restrict__ residual, int has_residual, int act, float scale, int K, int P, int Q,
        int Lh, int Lw, int tiles_h, int tiles_w, int Th, int Tw, int crop_h, int crop_w,
        long long item_begin, int items, int* item_flags, int* any_item, const int* __restrict__ k_flags) {
    const float* bias_or_null = has_bias ? bias : nullptr;
    const float* residual_or_null = has_residual ? residual : nullptr;
    const cc_index_t tile = (cc_index_t)crop_h * crop_w;
    const cc_index_t total = (cc_index_t)items * K * tile;
    const cc_index_t tiles = (cc_index_t)tiles_h * tiles_w;
    for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (cc_index_t)gridDim.x * blockDim.x) {
        const cc_index_t bk = e / tile;
        const int ij = (int)(e - bk * tile);
        const int i = ij / crop_w, j = ij - (ij / crop_w) * crop_w;
        const cc_index_t b = bk / K;
        const int k = (int)(bk - b * K);
        const cc_index_t item = item_begin + b;
        const cc_index_t n = item / tiles;
        const int t = (int)(item - n * tiles);
        const int th = t / tiles_w, tw = t - (t / tiles_w) * tiles_w;
        const int p = th * Th + i, q = tw * Tw + j;
        if (p >= P || q >= Q) continue;
        const float v = scale * yr[(bk * Lh + i) * (cc_index_t)Lw + j];
        if (!cc_is_finite(v) && !cc_ldg(k_flags + k)) fft_flag_item(item_flags, any_item, b);
        const cc_index_t out_idx = ((n * K + k) * P + p) * (cc_index_t)Q + q;
        y[out_idx] = cc_epilogue(v, bias_or_null, k, residual_or_null, out_idx, act);
    }
}

// --------------------------------------------------------------------------- non-finite fix-up
// Clears the flags of a pass: item_flags[0 .. items) = 0 and *any_item = 0 (the pack and crop
// kernels set them). With K > 0 (the first pass) also k_flags[k] = 1 when filter k
// (per_filter = C/g·R·S weights) holds a non-finite weight, else 0: block b scans filters b,
// b + gridDim.x, ... with all its threads (coalesced) and a block-wide OR. No atomics, so nothing
// here depends on the order of the blocks.
__global__ void __launch_bounds__(256, 2) fft_flags_init(
        const float* __restrict__ w, int* __restrict__ item_flags, int* __restrict__ any_item,
        int* __restrict__ k_flags, int K, long long per_filter, long long items) {
    const cc_index_t first = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (first == 0) *any_item = 0;
    for (cc_index_t e = first; e < items; e += (cc_index_t)gridDim.x * blockDim.x) item_flags[e] = 0;
    for (int k = blockIdx.x; k < K; k += gridDim.x) {      // the same trip count for the whole block
        const float* wk = w + (cc_index_t)k * per_filter;
        bool finite = true;
        for (cc_index_t i = threadIdx.x; i < per_filter; i += blockDim.x) finite = finite && cc_is_finite(cc_ldg(wk + i));
        const int bad = __syncthreads_or(!finite);
        if (threadIdx.x == 0) k_flags[k] = bad ? 1 : 0;
    }
}

// The outputs of the pass's flagged items (all channels) and of every flagged channel (within the
// pass's items), recomputed as direct.cu's direct_conv2d<float, NCHW> computes them: taps in the
// padding skipped, (c, r, s) order, cc_fma, the same epilogue — so they equal direct
// convolution's values bit for bit, NaN and Inf included. Grid (x, y): y over output channels
// (k = blockIdx.y, + gridDim.y, ...), x a grid-stride loop over the crop_h×crop_w outputs of each
// of the pass's items (j fastest, as fft_crop_epilogue). A block whose channel is not flagged and
// that finds no item flagged (one load each) skips the channel: all the work on finite data.
__global__ void __launch_bounds__(256, 2) fft_fixup(
        const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
        const float* __restrict__ bias, int has_bias, const float* __restrict__ residual, int has_residual,
        int act, const int* __restrict__ item_flags, const int* __restrict__ any_item,
        const int* __restrict__ k_flags, int N, int C, int H, int W, int K, int R, int S, int P, int Q,
        int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int groups,
        int tiles_h, int tiles_w, int Th, int Tw, int crop_h, int crop_w, long long item_begin, int items) {
    const int c_per_group = C / groups, k_per_group = K / groups;
    const cc_index_t plane = (cc_index_t)H * W;
    const cc_index_t tile = (cc_index_t)crop_h * crop_w;
    const cc_index_t outputs = (cc_index_t)items * tile;
    const cc_index_t tiles = (cc_index_t)tiles_h * tiles_w;
    const float* bias_or_null = has_bias ? bias : nullptr;
    const float* residual_or_null = has_residual ? residual : nullptr;
    const bool some_item = cc_ldg(any_item) != 0;
    for (int k = blockIdx.y; k < K; k += gridDim.y) {
        const bool whole_channel = cc_ldg(k_flags + k) != 0;
        if (!whole_channel && !some_item) continue;
        const int g = k / k_per_group;
        const float* w_k = w + (cc_index_t)k * c_per_group * R * S;
        for (cc_index_t e = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; e < outputs;
             e += (cc_index_t)gridDim.x * blockDim.x) {
            const cc_index_t b = e / tile;
            if (!whole_channel && !cc_ldg(item_flags + b)) continue;
            const int ij = (int)(e - b * tile);
            const int i = ij / crop_w, j = ij - (ij / crop_w) * crop_w;
            const cc_index_t item = item_begin + b;
            const cc_index_t n = item / tiles;
            const int t = (int)(item - n * tiles);
            const int p = (t / tiles_w) * Th + i, q = (t - (t / tiles_w) * tiles_w) * Tw + j;
            if (p >= P || q >= Q) continue;
            const int h0 = p * stride_h - pad_h;
            const int w0 = q * stride_w - pad_w;
            const float* x_img = x + (n * C + (cc_index_t)g * c_per_group) * plane;
            float acc = 0.0f;
            for (int c = 0; c < c_per_group; ++c) {
                const float* x_c = x_img + (cc_index_t)c * plane;
                const float* w_c = w_k + (cc_index_t)c * R * S;
                for (int r = 0; r < R; ++r) {
                    const int h = h0 + r * dilation_h;
                    if (h < 0 || h >= H) continue;
                    const float* x_row = x_c + (cc_index_t)h * W;
                    for (int s = 0; s < S; ++s) {
                        const int ww = w0 + s * dilation_w;
                        if (ww < 0 || ww >= W) continue;
                        acc = cc_fma(cc_ldg(x_row + ww), cc_ldg(w_c + r * S + s), acc);
                    }
                }
            }
            const cc_index_t idx = ((n * K + k) * P + p) * (cc_index_t)Q + q;
            y[idx] = cc_epilogue(acc, bias_or_null, k, residual_or_null, idx, act);
        }
    }
}
