// common.cuh — helpers shared by every cuconv kernel.
//
// cuconv.compile inlines this file into each kernel's source text, so the compile caches
// (keyed on the source text) see every edit of it.
//
// Everything here compiles two ways:
//   * NVRTC for the GPU (__CUDA_ARCH__ defined),
//   * g++ inside cuconv.emulator (CUCONV_EMULATOR defined, __CUDA_ARCH__ undefined),
// so inline PTX and intrinsics must stay behind the small device functions below, each
// with a plain C++ branch for the emulator.
#pragma once

// 64-bit index type for anything that can exceed 2**31 (element offsets of whole tensors).
typedef long long cc_index_t;

// Fused epilogue activations; the values match cuconv.ops._common.ACTIVATIONS.
enum CuconvActivation {
    CC_ACT_NONE = 0,
    CC_ACT_RELU = 1,
    CC_ACT_RELU6 = 2,
    CC_ACT_SILU = 3,
};

// The element type of the templated kernels is float or double: these overloads pick the
// single- or double-precision math function, so one kernel body serves both (a double
// kernel accumulates in double and calls exp, not expf, for SiLU; the backward kernels
// accumulate in their element type through cc_fma too).
__device__ __forceinline__ float cc_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double cc_fma(double a, double b, double c) { return fma(a, b, c); }
__device__ __forceinline__ float cc_exp(float a) { return expf(a); }
__device__ __forceinline__ double cc_exp(double a) { return exp(a); }

// T itself, in a context that does not take part in template argument deduction: the
// epilogue's element type comes from the accumulator alone, so a literal nullptr (or a
// `has ? p : nullptr`) may stand for an absent pointer.
template <typename T>
struct cc_same {
    typedef T type;
};

// The activations with torch's IEEE rules (docs/semantics.md): relu(NaN) = relu6(NaN) = NaN — a
// comparison is false for NaN, so the select keeps v, where fmaxf(NaN, 0) would give 0 —
// relu(±Inf) = Inf / 0, relu6(±Inf) = 6 / 0, silu(+Inf) = Inf, silu(−Inf) = −Inf/Inf = NaN (torch
// gives NaN too), silu(NaN) = NaN. SiLU with the accurate expf / exp, so GPU and emulator agree to a
// few ulps. An if-chain, not a switch: a switch's jump table (BRX) hides the loop structure of the
// kernels around it from the static analysis.
// max(v, b) (MAX) or min(v, b) that keeps NaN (fmaxf / fminf drop it): max.NaN / min.NaN on sm_80+,
// a compare-select elsewhere (a comparison with NaN is false: v itself is kept).
template <bool MAX>
__device__ __forceinline__ float cc_bound_nan(float v, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float r;
    if (MAX) asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(v), "f"(b));
    else asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(v), "f"(b));
    return r;
#else
    return (MAX ? v < b : v > b) ? b : v;
#endif
}
template <bool MAX>
__device__ __forceinline__ double cc_bound_nan(double v, double b) { return (MAX ? v < b : v > b) ? b : v; }

template <typename T>
__device__ __forceinline__ T cc_activate(T v, int act) {
    if (act == CC_ACT_RELU) return cc_bound_nan<true>(v, T(0));
    if (act == CC_ACT_RELU6) return cc_bound_nan<false>(cc_bound_nan<true>(v, T(0)), T(6));
    if (act == CC_ACT_SILU) return v / (T(1) + cc_exp(-v));
    return v;
}

// The whole fused epilogue for one output element: y = act(acc + bias[k] + residual[idx]),
// the order of a ResNet block (relu(bn(conv(x)) + x)) and of cuDNN's fused
// conv-bias-add-activation. bias and residual may be null.
template <typename T>
__device__ __forceinline__ T cc_epilogue(T acc, const typename cc_same<T>::type* __restrict__ bias, int k,
                                         const typename cc_same<T>::type* __restrict__ residual,
                                         cc_index_t out_idx, int act) {
    if (bias != nullptr) acc += bias[k];
    if (residual != nullptr) acc += residual[out_idx];
    return cc_activate(acc, act);
}

// Read-only cached load (LDG.E.CONSTANT on the GPU); a plain load in the emulator.
template <typename T>
__device__ __forceinline__ T cc_ldg(const T* p) {
#if defined(__CUDA_ARCH__)
    return __ldg(p);
#else
    return *p;
#endif
}

__device__ __forceinline__ int cc_div_up(int a, int b) { return (a + b - 1) / b; }

// Whether a float / double is finite (not ±Inf, not NaN), from its bits: exact whatever the
// compiler's floating-point flags.
__device__ __forceinline__ bool cc_is_finite(float v) {
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}
__device__ __forceinline__ bool cc_is_finite(double v) {
    return (static_cast<unsigned long long>(__double_as_longlong(v)) & 0x7ff0000000000000ull) !=
           0x7ff0000000000000ull;
}

// An element of storage type T as accumulator type A: a plain conversion for float and double;
// tc_tile.cuh adds float16 and bfloat16 to float.
template <typename A, typename T>
struct CcWiden {
    __device__ __forceinline__ static A of(T v) { return static_cast<A>(v); }
};

// One output of a convolution summed as direct.cu sums it: channels c, then filter rows r, then
// columns s, one cc_fma each, from 0. The window's top-left tap is at (h0, w0) of an H×W plane;
// x_c0 points at its first channel, whose elements are c·c_pitch + h·row_pitch + w·col_pitch apart
// (NCHW: H·W, W, 1); w_k at the filter's channels × R × S weights. A tap in the padding multiplies
// a zero, as torch's zero-padded input does, so a non-finite weight over the padding gives NaN
// (docs/semantics.md); x is addressed only inside the plane. The loops are not unrolled: the
// sum is one dependent chain of FMAs anyway, and the registers an unrolled copy takes cost the
// callers occupancy (the fused separable kernel its pointwise tile). The direct kernels
// (direct.cu, depthwise.cu) and the Winograd and FFT fix-ups all sum through this function, so a
// recomputed output equals direct convolution's bit for bit. A is the accumulator type (float for
// the 16-bit types: depthwise.cu), each element widened as it is read.
template <typename T, typename A = T>
__device__ __forceinline__ A cc_direct_sum(const T* __restrict__ x_c0, cc_index_t c_pitch, cc_index_t row_pitch,
                                           cc_index_t col_pitch, const T* __restrict__ w_k, int channels, int H,
                                           int W, int R, int S, int h0, int w0, int dil_h, int dil_w) {
    A acc = A(0);
#pragma unroll 1
    for (int c = 0; c < channels; ++c)
#pragma unroll 1
        for (int r = 0; r < R; ++r) {
            const int h = h0 + r * dil_h;
            const bool row_in = h >= 0 && h < H;
            const T* x_row = x_c0 + c * c_pitch + (row_in ? h : 0) * row_pitch;
#pragma unroll 1
            for (int s = 0; s < S; ++s) {
                const int ww = w0 + s * dil_w;
                const A xv =
                    row_in && ww >= 0 && ww < W ? CcWiden<A, T>::of(cc_ldg(x_row + ww * col_pitch)) : A(0);
                acc = cc_fma(xv, CcWiden<A, T>::of(cc_ldg(w_k + ((cc_index_t)c * R + r) * S + s)), acc);
            }
        }
    return acc;
}

// Whether a pointer is 16-byte aligned (float4 / 16-byte cp.async accesses are legal on it).
__device__ __forceinline__ bool cc_aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// a mod b in [0, b) for b > 0 and any sign of a (C++'s % keeps the sign of a).
__device__ __forceinline__ int cc_mod_pos(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }

// floor(a / b) for b > 0 and any sign of a.
__device__ __forceinline__ int cc_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The digits (hi, mid, lo) of a flat index i = (hi·mid_n + mid)·lo_n + lo (e.g. (n, p, q) of a
// reduction index over N·P·Q), advanced by a constant step without dividing: the step is split
// into digits once. Integer division by a runtime value costs ~20 instructions.
struct CcDigits3 {
    int lo, mid, hi;
    int d_lo, d_mid, d_hi;
    int lo_n, mid_n;

    __device__ __forceinline__ void init(long long i, int step, int lo_count, int mid_count) {
        lo_n = lo_count;
        mid_n = mid_count;
        lo = (int)(i % lo_n);
        mid = (int)((i / lo_n) % mid_n);
        hi = (int)(i / lo_n / mid_n);
        d_lo = step % lo_n;
        d_mid = (step / lo_n) % mid_n;
        d_hi = step / lo_n / mid_n;
    }
    __device__ __forceinline__ void advance() {
        lo += d_lo;
        int carry = lo >= lo_n;
        if (carry) lo -= lo_n;
        mid += d_mid + carry;             // < 2·mid_n: one correction suffices
        carry = mid >= mid_n;
        if (carry) mid -= mid_n;
        hi += d_hi + carry;
    }
};

// Where an implicit-GEMM convolution's reduction walk stands — tap row r, tap column s, first
// channel c0 of the current chunk — and one step of it (chunks of `chunk` of `channels`
// innermost, then the taps of a row, then the rows), by selects rather than branches; pick()
// chooses among three values by what the last step moved (the chunk, the tap column, the tap
// row), e.g. the matching address increment.
struct CcTapWalk {
    int c0, r, s;
    bool next_tap, next_row;

    __device__ __forceinline__ void step(int chunk, int channels, int taps_s) {
        c0 += chunk;
        next_tap = c0 >= channels;
        next_row = next_tap && s + 1 == taps_s;
        c0 = next_tap ? 0 : c0;
        s = next_row ? 0 : s + next_tap;
        r += next_row;
    }
    template <typename V>
    __device__ __forceinline__ V pick(V chunk, V tap_s, V tap_r) const {
        return next_tap ? (next_row ? tap_r : tap_s) : chunk;
    }
};

// The taps of one filter dimension that reach one stride phase of a data gradient (dgrad):
// tap r reaches input row h = phase + i·stride iff h + pad − r·dil is a multiple of stride,
// i.e. iff (phase + pad) − r·dil ≡ 0 (mod stride) — the same r for every row of the phase:
// r = first + t·step for t < count (step = stride / gcd(stride, dil)), and tap t sends the
// phase's row i to output row i + off0 − t·doff. base = phase + pad.
struct CcDgradTaps {
    int first, step, count, off0, doff;
};

__device__ __forceinline__ CcDgradTaps cc_dgrad_taps(int base, int R, int stride, int dil) {
    int a = stride, b = dil;              // gcd(stride, dil)
    while (b != 0) {
        const int t = a % b;
        a = b;
        b = t;
    }
    CcDgradTaps t;
    t.step = stride / a;
    // r·dil ≡ base (mod stride) is one residue class mod step: its least member is < step.
    t.first = R;
    for (int r = 0; r < t.step && r < R; ++r)
        if (cc_mod_pos(base - r * dil, stride) == 0) {
            t.first = r;
            break;
        }
    t.count = t.first < R ? (R - 1 - t.first) / t.step + 1 : 0;
    t.off0 = t.first < R ? (base - t.first * dil) / stride : 0;   // exact, any sign
    t.doff = t.step * dil / stride;                                 // exact: step·dil = lcm
    return t;
}

// One element dx[n, c, h, w] of a data gradient, summed as conv_dgrad.cu's dgrad_direct sums it:
// taps r, then s, then the Kg output channels k of c's group, one cc_fma each, from 0 — over the
// taps that reach a dy element only (h + pad_h − r·dil_h a multiple of stride_h with quotient p in
// [0, P), likewise for w): torch's col2im adds no other term, so a non-finite weight leaves the
// dx elements it does not reach finite. dy_g points at dy[n, g·Kg, 0, 0] (planes P·Q apart), w_g
// at the weight w[g·Kg, c_in_group, 0, 0] (filters w_k_pitch apart). The GEMM-shaped dgrad
// kernels multiply zeros for the taps that reach no dy element; where that made an output
// non-finite they recompute it with this (a finite GEMM output is right: it then had no
// non-finite term, and the extra terms were exact zeros). A is the accumulator type (float for
// the 16-bit types: tc_grad.cu). NHWC = true: the same sum, in the same order (the same bits),
// over NHWC dy (dy_g at dy[n, 0, 0, g·Kg]: output channels 1 apart, pixels K apart) and KRSC w
// (w_g at w[g·Kg, 0, 0, c_in_group]: filters w_k_pitch apart, taps Cg apart).
template <typename T, typename A = T, bool NHWC = false>
__device__ __forceinline__ A cc_dgrad_sum(const T* __restrict__ dy_g, const T* __restrict__ w_g, int Kg,
                                          cc_index_t w_k_pitch, int P, int Q, int R, int S, int h, int w,
                                          int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w,
                                          int K = 0, int Cg = 0) {
    const cc_index_t PQ = (cc_index_t)P * Q;
    A acc = A(0);
    for (int r = 0; r < R; ++r) {
        const int th = h + pad_h - r * dil_h;
        if (th < 0 || th % stride_h != 0) continue;
        const int p = th / stride_h;
        if (p >= P) continue;
        for (int s = 0; s < S; ++s) {
            const int tw = w + pad_w - s * dil_w;
            if (tw < 0 || tw % stride_w != 0) continue;
            const int q = tw / stride_w;
            if (q >= Q) continue;
#pragma unroll 1
            for (int k = 0; k < Kg; ++k) {
                const T* const dy_at = NHWC ? dy_g + k + ((cc_index_t)p * Q + q) * K
                                            : dy_g + k * PQ + (cc_index_t)p * Q + q;
                const T* const w_at = NHWC ? w_g + k * w_k_pitch + (r * S + s) * Cg
                                           : w_g + k * w_k_pitch + r * S + s;
                acc = cc_fma(CcWiden<A, T>::of(cc_ldg(dy_at)), CcWiden<A, T>::of(cc_ldg(w_at)), acc);
            }
        }
    }
    return acc;
}

// cc_dgrad_sum as a call, for the kernels that recompute an element off their main path: its
// registers then do not add to those live at the call site.
template <typename T, typename A = T, bool NHWC = false>
__device__ __noinline__ A cc_dgrad_sum_call(const T* __restrict__ dy_g, const T* __restrict__ w_g, int Kg,
                                            cc_index_t w_k_pitch, int P, int Q, int R, int S, int h, int w,
                                            int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                                            int dil_w, int K = 0, int Cg = 0) {
    return cc_dgrad_sum<T, A, NHWC>(dy_g, w_g, Kg, w_k_pitch, P, Q, R, S, h, w, stride_h, stride_w, pad_h, pad_w,
                                    dil_h, dil_w, K, Cg);
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), in a fixed tree
// (warp shuffles, then warp 0 over the warps' sums), so the result does not depend on the
// order threads run in. red: blockDim.x / 32 elements of shared memory. The total is returned
// in thread 0 (others get partial sums). Every thread of the block must call it.
template <typename T>
__device__ __forceinline__ T cc_block_sum(T v, T* red) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    __syncthreads();                      // red may still be read from a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? red[lane] : T(0);
#pragma unroll
        for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    }
    return v;
}

// ---------------------------------------------------------------- pooling (pool.cu)
// -inf, the identity of max pooling, which PyTorch outputs for a window with no input
// element. NVRTC has neither INFINITY nor __builtin_huge_valf.
template <typename T = float>
__device__ __forceinline__ T cc_neg_inf();
template <>
__device__ __forceinline__ float cc_neg_inf<float>() {
#if defined(__CUDA_ARCH__)
    return __int_as_float(0xff800000);
#else
    return -__builtin_huge_valf();
#endif
}
template <>
__device__ __forceinline__ double cc_neg_inf<double>() {
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
#else
    return -__builtin_huge_val();
#endif
}

// ======================================================================================
// ---------------------------------------------------------------- tensor cores (tc_gemm.cu, tc_conv.cu)
// The PTX portability layer for mma.sync, ldmatrix, cp.async and cvt.rna.tf32 (and, after it,
// fence.proxy.async, mbarrier and Hopper's wgmma; docs/wgmma.md). Fragments are
// the PTX registers (uint32 = two 16-bit elements, element 2i in bits 0..15), laid out as in
// the PTX ISA "Matrix Fragments for mma.m16n8k16 / mma.m16n8k8" (g = lane/4, t = lane%4):
//   m16n8k16 f16/bf16: a[0]=A[g][2t..2t+1] a[1]=A[g+8][2t..] a[2]=A[g][2t+8..] a[3]=A[g+8][2t+8..]
//                      b[0]=B[2t..2t+1][g] b[1]=B[2t+8..2t+9][g]
//   m16n8k8 f16:       a[0]=A[g][2t..] a[1]=A[g+8][2t..]            b[0]=B[2t..2t+1][g]
//   m16n8k8 tf32:      a[0]=A[g][t] a[1]=A[g+8][t] a[2]=A[g][t+4] a[3]=A[g+8][t+4]
//                      b[0]=B[t][g] b[1]=B[t+4][g]
//   C/D (all):         c[0]=C[g][2t] c[1]=C[g][2t+1] c[2]=C[g+8][2t] c[3]=C[g+8][2t+1]
// (/work/shared/research/tensor_cores.md §1-§4 has the sources.) d may alias c. All 32 lanes
// must call mma/ldmatrix with converged control flow: never predicate them per lane, zero-fill
// operands instead.
//
// Three implementations of each primitive:
//   * the GPU: inline PTX where the architecture has the instruction;
//   * a portable GPU fallback (warp shuffles + fmaf) where it does not (bf16/tf32 mma below
//     sm_80), also selected everywhere by -DCUCONV_PORTABLE_TC so the layouts can be
//     cross-checked against a second, independent encoding (on the GPU and in the emulator);
//   * the emulator (src/cuconv/emulator/include/cuconv_emu/tensor_core.h, namespace
//     cc_tc_emu): warp collectives that gather the 32 lanes' registers, multiply exactly in
//     double (f16/bf16/tf32 products are exact), round once to f32 per instruction, scatter.
//     cp.async there is *deferred* by default: the destination is filled with 0xFF bytes (NaN
//     in f16, bf16 and f32) at issue and the copy is done at the wait_group that covers it, so a
//     missing wait or barrier shows as NaN. -DCUCONV_EMU_CP_ASYNC_EAGER (or the environment
//     variable CUCONV_EMU_CP_ASYNC=eager) copies at issue instead.
//
// tf32: operands of the tf32 mma are read as float bits & 0xFFFFE000 (the hardware ignores the
// low 13 bits); kernels round first with cc_cvt_tf32 (cvt.rna: nearest, ties away from zero).
#if defined(__CUDA_ARCH__) || defined(CUCONV_EMULATOR)
__device__ __forceinline__ unsigned cc_cvt_tf32_bits(unsigned u) {
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffffffu : u;  // NaN, inf
    return (u + 0x1000u) & 0xffffe000u;  // sign-magnitude: adding half an ulp rounds ties away
}

// cvt.rna.tf32.f32: f32 -> tf32 register (round to nearest, ties away from zero; low 13 bits 0).
__device__ __forceinline__ unsigned cc_cvt_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
#else
    return cc_cvt_tf32_bits(__float_as_uint(x));
#endif
}

// ------------------------------------------------------------------ emulator: the model
// The emulator's per-lane simulation (warp and warpgroup collectives, deferred cp.async,
// mbarrier, the async-proxy bookkeeping) lives with the emulator, in namespace cc_tc_emu of
// src/cuconv/emulator/include/cuconv_emu/tensor_core.h; the branches below only call it.
#if !defined(__CUDA_ARCH__) && defined(CUCONV_EMULATOR)
#include <cuconv_emu/tensor_core.h>
#endif

// ------------------------------------------------------------------ portable fallbacks (shuffles)
#if defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
__device__ __forceinline__ float cc_tc_f16_to_float(unsigned short h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
    return f;
#else
    return static_cast<float>(cc_tc_emu::f16_bits(h));
#endif
}
__device__ __forceinline__ float cc_tc_bf16_to_float(unsigned short h) {
    return __uint_as_float(static_cast<unsigned>(h) << 16);
}
// Element `half` (0 = bits 0..15) of a packed register as a float.
template <int KIND>  // 0 f16, 1 bf16
__device__ __forceinline__ float cc_tc_elem(unsigned r, int half) {
    const unsigned short h = static_cast<unsigned short>(half ? (r >> 16) : (r & 0xffffu));
    return KIND == 0 ? cc_tc_f16_to_float(h) : cc_tc_bf16_to_float(h);
}

// m16n8k16 through shuffles: lane (g,t) fetches rows g, g+8 of A from lanes 4g+t' and columns
// 2t, 2t+1 of B from lanes 4(2t)+t', 4(2t+1)+t' (t' = 0..3), then 4 dot products of 16 in fmaf.
template <int KIND>
__device__ __forceinline__ void cc_mma_m16n8k16_shfl(float d[4], const unsigned a[4], const unsigned b[2],
                                                     const float c[4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
#pragma unroll
    for (int tp = 0; tp < 4; ++tp) {
        unsigned ar[4], b0[2], b1[2];
#pragma unroll
        for (int j = 0; j < 4; ++j) ar[j] = __shfl_sync(0xffffffffu, a[j], 4 * g + tp);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            b0[j] = __shfl_sync(0xffffffffu, b[j], 4 * (2 * t) + tp);
            b1[j] = __shfl_sync(0xffffffffu, b[j], 4 * (2 * t + 1) + tp);
        }
        // ar[0]: A[g][2tp..+1], ar[1]: A[g+8][2tp..], ar[2]: A[g][2tp+8..], ar[3]: A[g+8][2tp+8..]
        // bX[0]: B[2tp..+1][n], bX[1]: B[2tp+8..+9][n]
#pragma unroll
        for (int kh = 0; kh < 2; ++kh)      // k block: 0 -> k = 2tp.., 1 -> k = 2tp+8..
#pragma unroll
            for (int e = 0; e < 2; ++e) {   // element of the pair
                const float a_lo = cc_tc_elem<KIND>(ar[2 * kh], e), a_hi = cc_tc_elem<KIND>(ar[2 * kh + 1], e);
                const float bn0 = cc_tc_elem<KIND>(b0[kh], e), bn1 = cc_tc_elem<KIND>(b1[kh], e);
                acc[0] = fmaf(a_lo, bn0, acc[0]);
                acc[1] = fmaf(a_lo, bn1, acc[1]);
                acc[2] = fmaf(a_hi, bn0, acc[2]);
                acc[3] = fmaf(a_hi, bn1, acc[3]);
            }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = acc[i];
}

__device__ __forceinline__ void cc_mma_m16n8k8_f16_shfl(float d[4], const unsigned a[2], const unsigned b[1],
                                                        const float c[4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
#pragma unroll
    for (int tp = 0; tp < 4; ++tp) {
        const unsigned a0 = __shfl_sync(0xffffffffu, a[0], 4 * g + tp);
        const unsigned a1 = __shfl_sync(0xffffffffu, a[1], 4 * g + tp);
        const unsigned bn0 = __shfl_sync(0xffffffffu, b[0], 4 * (2 * t) + tp);
        const unsigned bn1 = __shfl_sync(0xffffffffu, b[0], 4 * (2 * t + 1) + tp);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const float lo = cc_tc_elem<0>(a0, e), hi = cc_tc_elem<0>(a1, e);
            const float x0 = cc_tc_elem<0>(bn0, e), x1 = cc_tc_elem<0>(bn1, e);
            acc[0] = fmaf(lo, x0, acc[0]);
            acc[1] = fmaf(lo, x1, acc[1]);
            acc[2] = fmaf(hi, x0, acc[2]);
            acc[3] = fmaf(hi, x1, acc[3]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = acc[i];
}

__device__ __forceinline__ void cc_mma_m16n8k8_tf32_shfl(float d[4], const unsigned a[4], const unsigned b[2],
                                                         const float c[4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
#pragma unroll
    for (int tp = 0; tp < 4; ++tp) {
        unsigned ar[4], b0[2], b1[2];
#pragma unroll
        for (int j = 0; j < 4; ++j) ar[j] = __shfl_sync(0xffffffffu, a[j], 4 * g + tp);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            b0[j] = __shfl_sync(0xffffffffu, b[j], 4 * (2 * t) + tp);
            b1[j] = __shfl_sync(0xffffffffu, b[j], 4 * (2 * t + 1) + tp);
        }
        // ar: A[g][tp], A[g+8][tp], A[g][tp+4], A[g+8][tp+4]; bX: B[tp][n], B[tp+4][n]
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
            const float lo = __uint_as_float(ar[2 * kh] & 0xffffe000u), hi = __uint_as_float(ar[2 * kh + 1] & 0xffffe000u);
            const float x0 = __uint_as_float(b0[kh] & 0xffffe000u), x1 = __uint_as_float(b1[kh] & 0xffffe000u);
            acc[0] = fmaf(lo, x0, acc[0]);
            acc[1] = fmaf(lo, x1, acc[1]);
            acc[2] = fmaf(hi, x0, acc[2]);
            acc[3] = fmaf(hi, x1, acc[3]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = acc[i];
}
#endif  // portable fallbacks

// ------------------------------------------------------------------ mma.sync
__device__ __forceinline__ void cc_mma_m16n8k8_f16(float d[4], const unsigned a[2], const unsigned b[1],
                                                   const float c[4]) {
#if defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#elif defined(__CUDA_ARCH__)
    cc_mma_m16n8k8_f16_shfl(d, a, b, c);
#elif defined(CUCONV_PORTABLE_TC)
    cc_mma_m16n8k8_f16_shfl(d, a, b, c);
#else  // CUCONV_EMULATOR
    cc_tc_emu::mma<cc_tc_emu::kF16k8, 2, 1>(d, a, b, c);
#endif
}

__device__ __forceinline__ void cc_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2],
                                                    const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#elif defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    // sm_75: m16n8k16 = two m16n8k8 (a[0..1], b[0] hold k = 0..7; a[2..3], b[1] k = 8..15).
    float tmp[4];
    const unsigned lo[2] = {a[0], a[1]}, hi[2] = {a[2], a[3]};
    cc_mma_m16n8k8_f16(tmp, lo, &b[0], c);
    cc_mma_m16n8k8_f16(d, hi, &b[1], tmp);
#elif defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
    cc_mma_m16n8k16_shfl<0>(d, a, b, c);
#else  // CUCONV_EMULATOR
    cc_tc_emu::mma<cc_tc_emu::kF16k16, 4, 2>(d, a, b, c);
#endif
}

__device__ __forceinline__ void cc_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2],
                                                     const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#elif defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
    cc_mma_m16n8k16_shfl<1>(d, a, b, c);   // bf16 mma needs sm_80
#else  // CUCONV_EMULATOR
    cc_tc_emu::mma<cc_tc_emu::kBf16k16, 4, 2>(d, a, b, c);
#endif
}

__device__ __forceinline__ void cc_mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2],
                                                    const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#elif defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
    cc_mma_m16n8k8_tf32_shfl(d, a, b, c);  // tf32 mma needs sm_80
#else  // CUCONV_EMULATOR
    cc_tc_emu::mma<cc_tc_emu::kTf32k8, 4, 2>(d, a, b, c);
#endif
}

// ------------------------------------------------------------------ ldmatrix
// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16: `row` is this lane's row address (a
// generic pointer into shared memory, 16-byte aligned); lane 8j+i gives row i of matrix j.
// Register j receives, without .trans, M_j[lane/4][2(lane%4) .. +1]; with .trans,
// M_j[2(lane%4)][lane/4] (low half) and M_j[2(lane%4)+1][lane/4] (high half).
template <int NUM, bool TRANS>
__device__ __forceinline__ void cc_ldmatrix(unsigned (&r)[NUM], const void* row) {
    static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if constexpr (NUM == 1 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr) : "memory");
    if constexpr (NUM == 1 && TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr) : "memory");
    if constexpr (NUM == 2 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(addr) : "memory");
    if constexpr (NUM == 2 && TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(addr) : "memory");
    if constexpr (NUM == 4 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
    if constexpr (NUM == 4 && TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
#elif defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
    // Portable: fetch the row addresses of the lanes that own this lane's elements.
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const unsigned long long mine = reinterpret_cast<unsigned long long>(row);
#pragma unroll
    for (int j = 0; j < NUM; ++j) {
        if (!TRANS) {
            const unsigned long long p = __shfl_sync(0xffffffffu, mine, 8 * j + g);
            r[j] = *reinterpret_cast<const unsigned*>(p + 4 * t);
        } else {
            const unsigned long long p0 = __shfl_sync(0xffffffffu, mine, 8 * j + 2 * t);
            const unsigned long long p1 = __shfl_sync(0xffffffffu, mine, 8 * j + 2 * t + 1);
            const unsigned lo = *reinterpret_cast<const unsigned short*>(p0 + 2 * g);
            const unsigned hi = *reinterpret_cast<const unsigned short*>(p1 + 2 * g);
            r[j] = lo | (hi << 16);
        }
    }
#else  // CUCONV_EMULATOR
    cc_tc_emu::ldmatrix<NUM, TRANS>(r, row);
#endif
}

// ------------------------------------------------------------------ cp.async
// cp.async.{ca,cg}.shared.global [dst], [src], BYTES, src_bytes: BYTES in {4, 8, 16}; the first
// src_bytes (0..BYTES) bytes are copied, the rest of dst is zero-filled; src is not read when
// src_bytes == 0 (callers still pass a valid, aligned address). Completion only through
// cc_cp_async_wait<N>() (then __syncthreads() before other threads read). Below sm_80 the copy
// is synchronous and commit/wait do nothing (legal: the copy may complete at any time).
template <int BYTES>
__device__ __forceinline__ void cc_cp_async_zfill(void* dst, const void* src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(addr), "l"(src), "r"(src_bytes) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" :: "r"(addr), "l"(src), "n"(BYTES), "r"(src_bytes)
                     : "memory");
#elif defined(__CUDA_ARCH__) || defined(CUCONV_PORTABLE_TC)
    unsigned char* d = static_cast<unsigned char*>(dst);
    const unsigned char* s = static_cast<const unsigned char*>(src);
    if (src_bytes == BYTES) {
        if constexpr (BYTES == 16) *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
        if constexpr (BYTES == 8) *reinterpret_cast<uint2*>(d) = *reinterpret_cast<const uint2*>(s);
        if constexpr (BYTES == 4) *reinterpret_cast<unsigned*>(d) = *reinterpret_cast<const unsigned*>(s);
    } else {
        for (int i = 0; i < BYTES; ++i) d[i] = i < src_bytes ? s[i] : 0;
    }
#else  // CUCONV_EMULATOR
    cc_tc_emu::cp_async<BYTES>(dst, src, src_bytes);
#endif
}

// A loader's copy of BYTES into shared memory, zero-filled past src_bytes (0 or BYTES): cp.async
// (cc_cp_async_zfill) for 4, 8 and 16 bytes; 2 bytes (one 16-bit element, for channel counts no
// wider copy divides: read in place instead of packed) is below cp.async's smallest copy, so a
// synchronous load and shared store. It lands in the stage the pipeline is filling, which no
// thread reads before the barrier that precedes the stage's use, as an async copy would.
template <int BYTES>
__device__ __forceinline__ void cc_copy_zfill(void* dst, const void* src, int src_bytes) {
    if constexpr (BYTES == 2)
        *static_cast<unsigned short*>(dst) = src_bytes ? *static_cast<const unsigned short*>(src) : (unsigned short)0;
    else
        cc_cp_async_zfill<BYTES>(dst, src, src_bytes);
}

__device__ __forceinline__ void cc_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif !defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    cc_tc_emu::commit();
#endif
}

// cp.async.wait_group N: all but the N most recently committed groups of this thread are complete.
template <int N>
__device__ __forceinline__ void cc_cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
#elif !defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    cc_tc_emu::wait_group(N);
#endif
}

// cp.async.wait_all = commit_group + wait_group 0.
__device__ __forceinline__ void cc_cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(CUCONV_PORTABLE_TC)
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#elif !defined(__CUDA_ARCH__) && !defined(CUCONV_PORTABLE_TC)
    cc_tc_emu::commit();
    cc_tc_emu::wait_group(0);
#endif
}

// ------------------------------------------------------------------ shared-memory addresses, async proxy
// The address of a shared-memory object in the shared window (what matrix descriptors and
// mbarrier instructions take). Emulator: the offset into the block's dynamic shared memory.
__device__ __forceinline__ unsigned cc_smem_addr(const void* p) {
#if defined(__CUDA_ARCH__)
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
#else
    return cc_tc_emu::smem_addr(p);
#endif
}

// CC_SHARED_SYMBOL_ADDR(var, sym): unsigned var = the shared-window address of the __shared__
// array `sym` declared at namespace scope (its name unmangled). On the GPU a `mov` of the symbol,
// a constant to ptxas: arithmetic on it (wgmma descriptors) stays in uniform registers, where
// cc_smem_addr of a generic pointer goes through the cluster window's per-thread registers.
#if defined(__CUDA_ARCH__)
#define CC_SHARED_SYMBOL_ADDR(var, sym) \
    unsigned var;                       \
    asm("mov.u32 %0, " #sym ";\n" : "=r"(var))
#else
#define CC_SHARED_SYMBOL_ADDR(var, sym) const unsigned var = cc_smem_addr(sym)
#endif

// fence.proxy.async.shared::cta: this thread's prior generic-proxy writes to shared memory
// (plain stores, completed cp.async copies) become visible to the async proxy (wgmma, TMA).
// Needed between filling an operand tile and a wgmma reading it (PTX ISA "Async Proxy").
__device__ __forceinline__ void cc_fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#elif !defined(__CUDA_ARCH__)
    cc_tc_emu::fence_proxy_async();
#endif
}

// ------------------------------------------------------------------ mbarrier (sm_80+)
// A 64-bit shared-memory barrier with an arrival count and a phase: init(count); each
// arrive() counts one arrival, the count-th completes the phase; wait_parity(P) returns once
// the phase with parity P (0, 1, 0, ... for phases 0, 1, 2, ...) has completed.
__device__ __forceinline__ void cc_mbarrier_init(unsigned long long* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(cc_smem_addr(bar)), "r"(count) : "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::mbarrier_init(bar, count);
#endif
}

__device__ __forceinline__ void cc_mbarrier_arrive(unsigned long long* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(cc_smem_addr(bar)) : "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::mbarrier_arrive(bar);
#endif
}

__device__ __forceinline__ void cc_mbarrier_wait_parity(unsigned long long* bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned addr = cc_smem_addr(bar);
    unsigned done;
    do {
#if __CUDA_ARCH__ >= 900   // try_wait may suspend the thread for a while instead of spinning
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(addr), "r"(parity) : "memory");
#else
        asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(addr), "r"(parity) : "memory");
#endif
    } while (!done);
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::mbarrier_wait_parity(bar, parity);
#endif
}

// ------------------------------------------------------------------ TMA (sm_90)
// A tensor map (CUtensorMap): 128 opaque bytes encoded on the host (the driver's
// cuTensorMapEncodeTiled / cuTensorMapEncodeIm2col on the GPU, cuconv.emulator's encoder of
// the same name in the emulator), passed to the kernel as a `const __grid_constant__` parameter
// so that its address is a generic address the TMA unit may read. cuda.h's CUtensorMap is not
// available to NVRTC, hence this stand-in of the same size and alignment.
struct alignas(64) CcTensorMap {
    unsigned long long opaque[16];
};

// mbarrier.arrive.expect_tx: the calling thread's arrival, after adding `bytes` to the
// barrier's transaction count; the phase completes once every arrival is in and the TMA
// loads signalling the barrier have completed that many bytes (complete_tx).
__device__ __forceinline__ void cc_mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(cc_smem_addr(bar)), "r"(bytes)
                 : "memory");
#elif defined(__CUDA_ARCH__)
    (void)bar, (void)bytes;
    __trap();
#else
    cc_tc_emu::mbarrier_arrive_expect_tx(bar, bytes);
#endif
}

// fence.mbarrier_init.release.cluster: this thread's mbarrier.init are visible to the async
// proxy (a TMA load completing on the barrier) once the other threads synchronise with it.
__device__ __forceinline__ void cc_fence_mbarrier_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#elif !defined(__CUDA_ARCH__)
    cc_tc_emu::fence_mbarrier_init();
#endif
}

// cp.async.bulk.tensor.4d, tiled mode: the box of `map` at coordinates (c0, c1, c2, c3)
// (innermost first) into shared memory at dst (128-byte aligned), completing on `bar`.
__device__ __forceinline__ void cc_tma_load_tile_4d(void* dst, const CcTensorMap* map, unsigned long long* bar,
                                                    int c0, int c1, int c2, int c3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, "
        "%6}], [%2];\n" :: "r"(cc_smem_addr(dst)), "l"(reinterpret_cast<unsigned long long>(map)),
        "r"(cc_smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3) : "memory");
#elif defined(__CUDA_ARCH__)
    (void)dst, (void)map, (void)bar, (void)c0, (void)c1, (void)c2, (void)c3;
    __trap();
#else
    const int c[4] = {c0, c1, c2, c3};
    cc_tc_emu::tma_load(dst, map, bar, c, 4, nullptr, 0, false);
#endif
}

// cp.async.bulk.tensor.4d, im2col mode (NHWC: c, w, h, n): the map's pixels-per-column pixels
// from (w, h, n) along its bounding box, channels-per-pixel channels from c each, every pixel
// read at (w + off_w, h + off_h) — one filter tap of an implicit-GEMM A tile.
__device__ __forceinline__ void cc_tma_load_im2col_4d(void* dst, const CcTensorMap* map, unsigned long long* bar,
                                                      int c, int w, int h, int n, unsigned short off_w,
                                                      unsigned short off_h) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, "
        "%6}], [%2], {%7, %8};\n" :: "r"(cc_smem_addr(dst)), "l"(reinterpret_cast<unsigned long long>(map)),
        "r"(cc_smem_addr(bar)), "r"(c), "r"(w), "r"(h), "r"(n), "h"(off_w), "h"(off_h) : "memory");
#elif defined(__CUDA_ARCH__)
    (void)dst, (void)map, (void)bar, (void)c, (void)w, (void)h, (void)n, (void)off_w, (void)off_h;
    __trap();
#else
    const int co[4] = {c, w, h, n}, of[2] = {off_w, off_h};
    cc_tc_emu::tma_load(dst, map, bar, co, 4, of, 2, true);
#endif
}

// setmaxnreg.{inc (INC), dec}.sync.aligned.u32 REGS (sm_90a): the warpgroup's per-thread
// register budget moves to REGS, so a producer warpgroup can hand registers to the consumers.
// Every thread of the warpgroup executes it. A hint for the allocator: without the instruction (other
// GPUs) the kernel is still correct, so there it is nothing.
template <int REGS, bool INC>
__device__ __forceinline__ void cc_setmaxnreg() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (INC) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(REGS));
    else asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(REGS));
#elif !defined(__CUDA_ARCH__)
    cc_tc_emu::setmaxnreg(REGS, INC);
#endif
}

// ------------------------------------------------------------------ wgmma (sm_90a)
// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}: a warpgroup (4 consecutive warps,
// 128 threads) computes D (64 x N, f32) += A (64 x 16) · B (16 x N) with A and B in shared
// memory, described by 64-bit matrix descriptors (PTX ISA "Matrix Descriptor Format"):
//   bits 0-13 start address >> 4, 16-29 leading-dimension byte offset >> 4, 32-45 stride-
//   dimension byte offset >> 4, 49-51 base offset, 62-63 swizzle (0 none, 1 128 B, 2 64 B, 3 32 B).
// Accumulator: thread (warp w of the warpgroup, lane 4g + t) holds, for i < N/2,
//   d[i] = D[16w + g + 8((i >> 1) & 1)][8(i >> 2) + 2t + (i & 1)]
// (PTX ISA "Matrix Fragments for wgmma.mma_async.m64nNk16"; CuTe's CLayout_64xN). Ordering:
// cc_wgmma_fence() before the first wgmma and between register accesses to D and a wgmma on
// it; cc_wgmma_commit() closes a wgmma-group; cc_wgmma_wait<N>() waits until at most N groups
// are pending — only then may D be read, or the shared memory the group read be rewritten.
// docs/wgmma.md has the sources; the emulator checks each rule (cuconv_emu/tensor_core.h).
// Only sm_90a has these instructions: elsewhere on the GPU they trap (no kernel for another
// arch uses them), in the emulator they run the exact model.
template <int N>
struct CcWgmmaAcc {
    static_assert(N == 64 || N == 128, "wgmma accumulators for N = 64 and 128 are provided");
    static constexpr int REGS = N / 2;
    float d[N / 2];
#if defined(__CUDA_ARCH__)
    __device__ __forceinline__ float& operator[](int i) { return d[i]; }
#else
    // Every access is checked: none while a wgmma on these registers is pending.
    float pend[N / 2];
    cc_tc_emu::AccState emu;
    float& operator[](int i) {
        cc_tc_emu::acc_access(emu);
        return d[i];
    }
#endif
};

// A descriptor for an operand tile at shared address `addr` (see above for the fields).
__device__ __forceinline__ unsigned long long cc_wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo, unsigned swizzle) {
    return static_cast<unsigned long long>((addr & 0x3ffffu) >> 4) |
           (static_cast<unsigned long long>((lbo & 0x3ffffu) >> 4) << 16) |
           (static_cast<unsigned long long>((sbo & 0x3ffffu) >> 4) << 32) |
           (static_cast<unsigned long long>(swizzle & 3u) << 62);
}

__device__ __forceinline__ void cc_wgmma_fence() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::wgmma_fence();
#endif
}

__device__ __forceinline__ void cc_wgmma_commit() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::wgmma_commit();
#endif
}

template <int PENDING>
__device__ __forceinline__ void cc_wgmma_wait() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(PENDING) : "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    cc_tc_emu::wgmma_wait(PENDING);
#endif
}

// Pins the accumulator registers at this point of the program: the compiler may not move a
// register access across it (a wgmma's "+f" operands alone do not stop it from hoisting a
// read of D above the wgmma.wait_group, which is invisible to it). No-op in the emulator.
template <int N>
__device__ __forceinline__ void cc_wgmma_fence_operand(CcWgmmaAcc<N>& acc) {
#if defined(__CUDA_ARCH__)
#pragma unroll
    for (int i = 0; i < N / 2; ++i) asm volatile("" : "+f"(acc.d[i]) :: "memory");
#else
    (void)acc;
#endif
}

#define CC_WG8(x, b) "+f"(x[b + 0]), "+f"(x[b + 1]), "+f"(x[b + 2]), "+f"(x[b + 3]), "+f"(x[b + 4]), "+f"(x[b + 5]), \
                     "+f"(x[b + 6]), "+f"(x[b + 7])
#define CC_WG32(x) CC_WG8(x, 0), CC_WG8(x, 8), CC_WG8(x, 16), CC_WG8(x, 24)
#define CC_WG64(x) CC_WG32(x), CC_WG8(x, 32), CC_WG8(x, 40), CC_WG8(x, 48), CC_WG8(x, 56)
#define CC_WGMMA_ASM(SHAPE, TYPES, REGLIST, IA, IB, IS, ITA, ITB, OPERANDS)                                   \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IS ", 0;\nwgmma.mma_async.sync.aligned." SHAPE ".f32." TYPES \
                 " " REGLIST ", %" IA ", %" IB ", p, 1, 1, %" ITA ", %" ITB ";\n}\n"                                  \
                 : OPERANDS                                                                                         \
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B))
#define CC_WG_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define CC_WG_REGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// D = A·B + (scale_d ? D : 0) for one m64nNk16 step; inputs f16 (BF16 = false) or bf16;
// TRANS_A / TRANS_B select M-/N-major operands (imm-trans-a/-b), 0 for K-major.
template <bool BF16, int N, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void cc_wgmma_m64k16(CcWgmmaAcc<N>& acc, unsigned long long desc_a,
                                                unsigned long long desc_b, int scale_d) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    float* x = acc.d;
    if constexpr (N == 64 && !BF16) CC_WGMMA_ASM("m64n64k16", "f16.f16", CC_WG_REGS32, "32", "33", "34", "35", "36", CC_WG32(x));
    if constexpr (N == 64 && BF16) CC_WGMMA_ASM("m64n64k16", "bf16.bf16", CC_WG_REGS32, "32", "33", "34", "35", "36", CC_WG32(x));
    if constexpr (N == 128 && !BF16) CC_WGMMA_ASM("m64n128k16", "f16.f16", CC_WG_REGS64, "64", "65", "66", "67", "68", CC_WG64(x));
    if constexpr (N == 128 && BF16) CC_WGMMA_ASM("m64n128k16", "bf16.bf16", CC_WG_REGS64, "64", "65", "66", "67", "68", CC_WG64(x));
#elif defined(__CUDA_ARCH__)
    (void)acc, (void)desc_a, (void)desc_b, (void)scale_d;
    __trap();
#else
    cc_tc_emu::wgmma(BF16 ? cc_tc_emu::kWgBf16 : cc_tc_emu::kWgF16, N, acc.d, acc.pend, &acc.emu, desc_a, desc_b,
                     scale_d, TRANS_A, TRANS_B);
#endif
}
#undef CC_WGMMA_ASM
#undef CC_WG64
#undef CC_WG32
#undef CC_WG8
#undef CC_WG_REGS32
#undef CC_WG_REGS64
#endif  // __CUDA_ARCH__ || CUCONV_EMULATOR
// ---------------------------------------------------------------- end of tensor cores
// ======================================================================================
