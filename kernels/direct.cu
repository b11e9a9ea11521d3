// direct.cu — 2-D convolution computed straight from its definition (§9.1), fp32 or fp64,
// NCHW / KCRS or NHWC / KRSC.
//
//   out[n,k,p,q] = act( Σ_{c<C/g, r<R, s<S} x[n, g·C/g + c, p·sh − ph + r·dh, q·sw − pw + s·dw]
//                                        · w[k, c, r, s]  + bias[k] + residual[n,k,p,q] )
//   with g = k / (K/groups); a tap that falls in the padding contributes 0·w (torch's zero-padded
//   input: a non-finite weight over the padding gives NaN; docs/semantics.md).
//
// Variant (there is one, on purpose):
//   direct_conv2d<T, NHWC, BLOCK>: one thread per output element, a grid-stride loop over a
//   64-bit flat output index in the output's memory order (q fastest in NCHW, k fastest in
//   NHWC), so that a warp writes consecutive addresses (and reads them: consecutive input
//   columns at stride 1 in NCHW, consecutive channels in NHWC, where the reduction also runs
//   channels innermost, over contiguous memory). Any stride, padding (including the asymmetric
//   end padding of padding="same": the host computes P and Q with it, the kernel only checks
//   0 <= h < H), dilation and groups (depthwise included). No shared memory, no tiling: every
//   input element is re-read from L1/L2 by each output that uses it, so it is slow
//   (C/g·R·S loads per output) but has no size limit and nothing to get wrong — the variant
//   every faster algorithm is checked against, on the emulator and on the device.
//   T is float or double; the accumulation is in T (fma), the epilogue cc_epilogue<T>.
#include "common.cuh"

template <typename T, bool NHWC, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
direct_conv2d(const T* __restrict__ x, const T* __restrict__ w,
              const T* __restrict__ bias, int has_bias,
              const T* __restrict__ residual, int has_residual,
              T* __restrict__ out,
              int N, int C, int H, int W, int K, int R, int S, int P, int Q,
              int stride_h, int stride_w, int pad_h, int pad_w,
              int dilation_h, int dilation_w, int groups, int act) {
    const int c_per_group = C / groups;
    const int k_per_group = K / groups;
    const cc_index_t plane = (cc_index_t)H * W;
    const cc_index_t total = (cc_index_t)N * K * P * Q;
    const T* bias_or_null = has_bias ? bias : nullptr;
    const T* residual_or_null = has_residual ? residual : nullptr;

    for (cc_index_t idx = (cc_index_t)blockIdx.x * BLOCK + threadIdx.x; idx < total;
         idx += (cc_index_t)gridDim.x * BLOCK) {
        int n, k, p, q;
        if (NHWC) {   // idx = ((n·P + p)·Q + q)·K + k
            k = (int)(idx % K);
            cc_index_t rest = idx / K;
            q = (int)(rest % Q);
            rest /= Q;
            p = (int)(rest % P);
            n = (int)(rest / P);
        } else {      // idx = ((n·K + k)·P + p)·Q + q
            q = (int)(idx % Q);
            cc_index_t rest = idx / Q;
            p = (int)(rest % P);
            rest /= P;
            k = (int)(rest % K);
            n = (int)(rest / K);
        }
        const int g = k / k_per_group;
        const int h0 = p * stride_h - pad_h;
        const int w0 = q * stride_w - pad_w;
        T acc = T(0);
        if (NHWC) {
            // x[n, h, w, g·C/g + c] and w[k, r, s, c]: channels innermost, contiguous in both.
            const T* x_img = x + (cc_index_t)n * plane * C + (cc_index_t)g * c_per_group;
            const T* w_k = w + (cc_index_t)k * R * S * c_per_group;
            for (int r = 0; r < R; ++r) {
                const int h = h0 + r * dilation_h;
                for (int s = 0; s < S; ++s) {
                    const int ww = w0 + s * dilation_w;
                    const T* w_rs = w_k + (cc_index_t)(r * S + s) * c_per_group;
                    if (h >= 0 && h < H && ww >= 0 && ww < W) {
                        const T* x_pix = x_img + ((cc_index_t)h * W + ww) * C;
#pragma unroll 4
                        for (int c = 0; c < c_per_group; ++c) acc = cc_fma(cc_ldg(x_pix + c), cc_ldg(w_rs + c), acc);
                    } else {      // a pixel of the padding: 0·w per channel
#pragma unroll 4
                        for (int c = 0; c < c_per_group; ++c) acc = cc_fma(T(0), cc_ldg(w_rs + c), acc);
                    }
                }
            }
        } else {
            acc = cc_direct_sum(x + ((cc_index_t)n * C + (cc_index_t)g * c_per_group) * plane, plane, (cc_index_t)W,
                                (cc_index_t)1, w + (cc_index_t)k * c_per_group * R * S, c_per_group, H, W, R, S, h0,
                                w0, dilation_h, dilation_w);
        }
        out[idx] = cc_epilogue(acc, bias_or_null, k, residual_or_null, idx, act);
    }
}
