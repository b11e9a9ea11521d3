// common.cuh — helpers shared by every cuconv kernel.
//
// cuconv.compile inlines this file into each kernel's source text (CuPy's disk cache key
// does not see -I headers, so an edited header would otherwise be ignored).
//
// Everything here compiles three ways:
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

__device__ __forceinline__ float cc_activate(float v, int act) {
    switch (act) {
        case CC_ACT_RELU: return fmaxf(v, 0.0f);
        case CC_ACT_RELU6: return fminf(fmaxf(v, 0.0f), 6.0f);
        // SiLU with the accurate expf, so GPU and emulator agree to a few ulps.
        case CC_ACT_SILU: return v / (1.0f + expf(-v));
        default: return v;
    }
}

// The whole fused epilogue for one output element: y = act(acc + bias[k] + residual[idx]),
// the order of a ResNet block (relu(bn(conv(x)) + x)) and of cuDNN's fused
// conv-bias-add-activation. bias and residual may be null.
__device__ __forceinline__ float cc_epilogue(float acc, const float* __restrict__ bias, int k,
                                             const float* __restrict__ residual, cc_index_t out_idx,
                                             int act) {
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
