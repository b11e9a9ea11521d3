// conv_transpose.cu — transposed 2-D convolution (torch.nn.functional.conv_transpose2d),
// fp32 or fp64 (the templates' T; sums in T), with optional bias and activation: NCHW input
// with weight C_in × (C_out / groups) × R × S, or (nhwc) NHWC input and output with weight
// C_in × R × S × (C_out / groups), each read and written as it is (element strides,
// CcCtStrides). float16/bfloat16 run on tensor cores instead (ops/conv_transpose.py: the
// tensor-core data gradient, tc_grad.cu).
//
// The gradient-of-input form computed as a direct gather: output pixel (oh, ow) of channel co
// sums x[n, ci, ih, iw] · w[ci, co, r, s] over the input channels ci of co's group and the taps
// with oh = ih·stride_h − pad_h + r·dilation_h (and likewise for ow), i.e. those r for which
// oh + pad_h − r·dilation_h is a non-negative multiple of stride_h with quotient ih < H. No
// zero-inserted input is materialized and no atomics are needed: each output is written once.
// Output size (§9.7, with dilation): H_out = (H − 1)·stride_h − 2·pad_h + dilation_h·(R − 1)
// + output_padding_h + 1.
//
// Variants, simplest to fastest:
//   conv_transpose2d_simple<T>    one thread per output; every (r, s) is tested for the
//                                 divisibility above and the reachable ones summed over ci (the
//                                 data gradient's sum, cc_dgrad_sum). Always correct; the tests'
//                                 yardstick.
//   conv_transpose2d_phase<T, CO_TILE>
//                                 a block handles one output phase (oh mod stride_h,
//                                 ow mod stride_w) so the set of contributing taps is the same
//                                 for all its threads (no divergence, no wasted tap tests:
//                                 with stride 2, 3 of 4 tap tests fail in the simple kernel),
//                                 and each thread computes CO_TILE output channels of one pixel,
//                                 reusing every input load CO_TILE times; the weights are the
//                                 same across the block (broadcast loads).
#include "common.cuh"

#define CC_CT_THREADS 256

// Element strides of the three arrays in either layout (nhwc: x N×H×W×C_in, w C_in×R×S×C_out/g,
// y N×H_out×W_out×C_out; else NCHW and C_in×C_out/g×R×S): channel, row, column (images: C·H·W).
struct CcCtStrides {
    cc_index_t x_c, x_h, x_w, w_c, w_co, y_c, y_h, y_w;
    int w_r, w_s;
    __device__ __forceinline__ CcCtStrides(int nhwc, int Cin, int H, int W, int Cout, int Hout, int Wout, int R,
                                           int S, int cout_g) {
        x_c = nhwc ? 1 : (cc_index_t)H * W;
        x_h = nhwc ? (cc_index_t)W * Cin : W;
        x_w = nhwc ? Cin : 1;
        w_c = (cc_index_t)cout_g * R * S;            // between input channels ci
        w_co = nhwc ? 1 : R * S;                     // between output channels of a group
        w_r = nhwc ? S * cout_g : S;
        w_s = nhwc ? cout_g : 1;
        y_c = nhwc ? 1 : (cc_index_t)Hout * Wout;
        y_h = nhwc ? (cc_index_t)Wout * Cout : Wout;
        y_w = nhwc ? Cout : 1;
    }
};

template <typename T>
__global__ void __launch_bounds__(CC_CT_THREADS, 4)
conv_transpose2d_simple(const T* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ bias, T* __restrict__ y, int N, int Cin,
                        int H, int W, int Cout, int Hout, int Wout, int R, int S, int stride_h,
                        int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int groups,
                        int has_bias, int act, int nhwc) {
    const int cin_g = Cin / groups;
    const int cout_g = Cout / groups;
    const CcCtStrides st(nhwc, Cin, H, W, Cout, Hout, Wout, R, S, cout_g);
    const cc_index_t total = (cc_index_t)N * Cout * Hout * Wout;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        int ow, oh, co;
        cc_index_t n;
        if (nhwc) {            // idx = ((n·H_out + oh)·W_out + ow)·C_out + co
            co = (int)(idx % Cout);
            cc_index_t t = idx / Cout;
            ow = (int)(t % Wout);
            t /= Wout;
            oh = (int)(t % Hout);
            n = t / Hout;
        } else {               // idx = ((n·C_out + co)·H_out + oh)·W_out + ow
            ow = (int)(idx % Wout);
            cc_index_t t = idx / Wout;
            oh = (int)(t % Hout);
            t /= Hout;
            co = (int)(t % Cout);
            n = t / Cout;
        }
        const int g = co / cout_g;
        const int col = co - g * cout_g;
        // The data gradient's sum (common.cuh) with x as dy: taps r, then s, then the input
        // channels of the group — only the products that exist.
        const T* const x_g = x + n * Cin * H * W + (cc_index_t)g * cin_g * st.x_c;
        const T* const w_g = w + (cc_index_t)g * cin_g * st.w_c + col * st.w_co;
        const T acc = nhwc ? cc_dgrad_sum<T, T, true>(x_g, w_g, cin_g, st.w_c, H, W, R, S, oh, ow, stride_h, stride_w,
                                                      pad_h, pad_w, dil_h, dil_w, Cin, cout_g)
                           : cc_dgrad_sum<T>(x_g, w_g, cin_g, st.w_c, H, W, R, S, oh, ow, stride_h, stride_w, pad_h,
                                             pad_w, dil_h, dil_w);
        y[idx] = cc_epilogue(acc, has_bias ? bias : nullptr, co, nullptr, idx, act);
    }
}

// Grid (flat, the pixel block fastest): n, group, output-channel tile, phase, pixel block.
// A phase's outputs are oh = phase_h + stride_h·i, ow = phase_w + stride_w·j with
// i < ceil(H_out / stride_h), j < ceil(W_out / stride_w).
template <typename T, int CO_TILE>
__global__ void __launch_bounds__(CC_CT_THREADS, 4)
conv_transpose2d_phase(const T* __restrict__ x, const T* __restrict__ w,
                       const T* __restrict__ bias, T* __restrict__ y, int N, int Cin,
                       int H, int W, int Cout, int Hout, int Wout, int R, int S, int stride_h,
                       int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int groups,
                       int has_bias, int act, int nhwc) {
    const int cin_g = Cin / groups;
    const int cout_g = Cout / groups;
    const CcCtStrides st(nhwc, Cin, H, W, Cout, Hout, Wout, R, S, cout_g);
    const int co_tiles = cc_div_up(cout_g, CO_TILE);
    const int Hp = cc_div_up(Hout, stride_h);
    const int Wp = cc_div_up(Wout, stride_w);
    const int pix_blocks = cc_div_up(Hp * Wp, CC_CT_THREADS);
    cc_index_t b = blockIdx.x;
    const int pb = (int)(b % pix_blocks);
    b /= pix_blocks;
    const int phase = (int)(b % (stride_h * stride_w));
    b /= stride_h * stride_w;
    const int cot = (int)(b % co_tiles);
    b /= co_tiles;
    const int g = (int)(b % groups);
    const cc_index_t n = b / groups;
    const int phase_h = phase / stride_w;
    const int phase_w = phase % stride_w;

    const int i = pb * CC_CT_THREADS + threadIdx.x;
    const int ohi = i / Wp;
    const int owi = i % Wp;
    const int oh = phase_h + stride_h * ohi;
    const int ow = phase_w + stride_w * owi;
    if (i >= Hp * Wp || oh >= Hout || ow >= Wout) return;   // no barrier below: safe to leave
    const int co0 = cot * CO_TILE;

    T acc[CO_TILE];
#pragma unroll
    for (int j = 0; j < CO_TILE; ++j) acc[j] = T(0);
    // The last tile of a group may be partial: its missing channels read no weight.
    const int co_valid = min(CO_TILE, cout_g - co0);

    for (int cil = 0; cil < cin_g; ++cil) {
        const int ci = g * cin_g + cil;
        const T* xc = x + n * Cin * H * W + ci * st.x_c;
        const T* wc = w + ci * st.w_c + co0 * st.w_co;
        for (int r = 0; r < R; ++r) {
            const int th = phase_h + pad_h - r * dil_h;      // the same for the whole block
            if (th % stride_h != 0) continue;
            const int ih = ohi + th / stride_h;               // exact division, any sign
            if (ih < 0 || ih >= H) continue;
            for (int s = 0; s < S; ++s) {
                const int tw = phase_w + pad_w - s * dil_w;
                if (tw % stride_w != 0) continue;
                const int iw = owi + tw / stride_w;
                if (iw < 0 || iw >= W) continue;
                const T xv = cc_ldg(xc + ih * st.x_h + iw * st.x_w);
                const T* wt = wc + r * st.w_r + s * st.w_s;
#pragma unroll
                for (int j = 0; j < CO_TILE; ++j)
                    acc[j] = cc_fma(xv, j < co_valid ? cc_ldg(wt + j * st.w_co) : T(0), acc[j]);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < CO_TILE; ++j) {
        if (j >= co_valid) break;
        const int co = g * cout_g + co0 + j;
        const cc_index_t idx = n * Cout * Hout * Wout + co * st.y_c + oh * st.y_h + ow * st.y_w;
        y[idx] = cc_epilogue(acc[j], has_bias ? bias : nullptr, co, nullptr, idx, act);
    }
}
