// pool.cu — 2-D pooling over NCHW fp32 or fp64 with torch.nn.functional's semantics. Every
// kernel is a template on the element type T (float, double), sums accumulated in T.
//
//   max_pool2d<T> / max_pool2d_indices<T>
//       one thread per output (grid-stride); the window is scanned row by row over the
//       in-bounds positions only (padding acts as -inf). PyTorch's update rule, kept exactly:
//       a value replaces the running max when it is strictly greater or NaN, so among equal
//       maxima the first in scan order wins, a NaN anywhere makes the output NaN (its index is
//       the last NaN in scan order), and a window whose values are all -inf keeps the first
//       in-bounds position. The index is the flat position ih·W + iw within the (n, c) plane
//       (int64, as PyTorch returns).
//   avg_pool2d<T>
//       one thread per output; the divisor is divisor_override when nonzero, else the window
//       clipped to the padded input (count_include_pad) or to the input itself; a window with
//       no input element gives 0, as in PyTorch.
//   global_avg_pool2d<T, THREADS_PER_PLANE>
//       a block reduces 256 / THREADS_PER_PLANE planes; each plane's threads stride over it and
//       finish with a tree in shared memory (fixed order: the result does not depend on
//       scheduling). 32 threads per plane for small planes, 256 for large ones.
//
// These are memory-bound; the window loads of neighbouring outputs overlap and hit L1.
#include "common.cuh"

#define CC_POOL_THREADS 256

template <typename T, bool WITH_INDICES>
__device__ __forceinline__ void max_pool2d_body(const T* __restrict__ x, T* __restrict__ y,
                                                long long* __restrict__ indices, cc_index_t planes,
                                                int H, int W, int P, int Q, int kh, int kw,
                                                int stride_h, int stride_w, int pad_h, int pad_w,
                                                int dil_h, int dil_w) {
    const cc_index_t total = planes * P * Q;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int q = (int)(idx % Q);
        const int p = (int)((idx / Q) % P);
        const cc_index_t plane = idx / ((cc_index_t)P * Q);
        int hstart = p * stride_h - pad_h;
        int wstart = q * stride_w - pad_w;
        const int hend = min(hstart + (kh - 1) * dil_h + 1, H);
        const int wend = min(wstart + (kw - 1) * dil_w + 1, W);
        while (hstart < 0) hstart += dil_h;
        while (wstart < 0) wstart += dil_w;
        const T* xp = x + plane * H * W;
        T best = cc_neg_inf<T>();
        long long best_idx = (long long)hstart * W + wstart;
        for (int ih = hstart; ih < hend; ih += dil_h) {
            for (int iw = wstart; iw < wend; iw += dil_w) {
                const T v = cc_ldg(xp + (cc_index_t)ih * W + iw);
                // v != v is the NaN test (no fast-math anywhere in cuconv).
                if (v > best || v != v) {
                    best = v;
                    best_idx = (long long)ih * W + iw;
                }
            }
        }
        y[idx] = best;
        if (WITH_INDICES) indices[idx] = best_idx;
    }
}

template <typename T>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
max_pool2d(const T* __restrict__ x, T* __restrict__ y, long long planes, int H, int W,
           int P, int Q, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w,
           int dil_h, int dil_w) {
    max_pool2d_body<T, false>(x, y, nullptr, planes, H, W, P, Q, kh, kw, stride_h, stride_w, pad_h,
                              pad_w, dil_h, dil_w);
}

template <typename T>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
max_pool2d_indices(const T* __restrict__ x, T* __restrict__ y,
                   long long* __restrict__ indices, long long planes, int H, int W, int P,
                   int Q, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w,
                   int dil_h, int dil_w) {
    max_pool2d_body<T, true>(x, y, indices, planes, H, W, P, Q, kh, kw, stride_h, stride_w, pad_h,
                             pad_w, dil_h, dil_w);
}

template <typename T>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
avg_pool2d(const T* __restrict__ x, T* __restrict__ y, long long planes, int H, int W,
           int P, int Q, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w,
           int count_include_pad, int divisor_override) {
    const cc_index_t total = planes * P * Q;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int q = (int)(idx % Q);
        const int p = (int)((idx / Q) % P);
        const cc_index_t plane = idx / ((cc_index_t)P * Q);
        int hstart = p * stride_h - pad_h;
        int wstart = q * stride_w - pad_w;
        int hend = min(hstart + kh, H + pad_h);
        int wend = min(wstart + kw, W + pad_w);
        const int pool_size = (hend - hstart) * (wend - wstart);
        hstart = max(hstart, 0);
        wstart = max(wstart, 0);
        hend = min(hend, H);
        wend = min(wend, W);
        if (hstart >= hend || wstart >= wend) {
            y[idx] = T(0);
            continue;
        }
        const T* xp = x + plane * H * W;
        T sum = T(0);
        for (int ih = hstart; ih < hend; ++ih)
            for (int iw = wstart; iw < wend; ++iw) sum += cc_ldg(xp + (cc_index_t)ih * W + iw);
        int divisor;
        if (divisor_override != 0) divisor = divisor_override;
        else if (count_include_pad) divisor = pool_size;
        else divisor = (hend - hstart) * (wend - wstart);
        y[idx] = sum / (T)divisor;
    }
}

template <typename T, int THREADS_PER_PLANE>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
global_avg_pool2d(const T* __restrict__ x, T* __restrict__ y, long long planes, int HW) {
    static_assert(CC_POOL_THREADS % THREADS_PER_PLANE == 0, "a block holds whole planes");
    constexpr int PLANES_PER_BLOCK = CC_POOL_THREADS / THREADS_PER_PLANE;
    __shared__ T partial[CC_POOL_THREADS];
    const int tid = threadIdx.x;
    const int lane = tid % THREADS_PER_PLANE;
    const cc_index_t plane = (cc_index_t)blockIdx.x * PLANES_PER_BLOCK + tid / THREADS_PER_PLANE;
    T sum = T(0);
    if (plane < planes) {
        const T* xp = x + plane * HW;
        for (int i = lane; i < HW; i += THREADS_PER_PLANE) sum += cc_ldg(xp + i);
    }
    partial[tid] = sum;
    __syncthreads();
#pragma unroll
    for (int half = THREADS_PER_PLANE / 2; half > 0; half /= 2) {
        if (lane < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    if (lane == 0 && plane < planes) y[plane] = partial[tid] / (T)HW;
}
