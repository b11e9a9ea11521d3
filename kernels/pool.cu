// pool.cu — 2-D pooling with torch.nn.functional's semantics, NCHW or NHWC, in float32, float64,
// float16 or bfloat16 (T; pool.cuh: the 16-bit types accumulate in float, a max compares the
// stored values exactly and writes the stored element back).
//
//   max_pool2d<T> / max_pool2d_indices<T>                  NCHW: one thread per output
//   max_pool2d_nhwc<T, V> / max_pool2d_indices_nhwc<T, V>  NHWC: one thread per V consecutive
//       channels of an output pixel (consecutive threads along C: coalesced; V·sizeof(T) = 16 or
//       8 bytes per load where C and alignment allow, V = 1 otherwise).
//       The window is scanned row by row over the in-bounds positions only (padding acts as
//       -inf). PyTorch's update rule, kept exactly: a value replaces the running max when it is
//       strictly greater or NaN, so among equal maxima the first in scan order wins, a NaN
//       anywhere makes the output NaN (its index is the last NaN in scan order), and a window
//       whose values are all -inf keeps the first in-bounds position. The index is the flat
//       position ih·W + iw within the (n, c) plane in both layouts (int64, as PyTorch returns,
//       channels_last included); in NHWC the indices are laid out N, P, Q, C like the output.
//   avg_pool2d<T> / avg_pool2d_nhwc<T, V>
//       the divisor is divisor_override when nonzero, else the window clipped to the padded
//       input (count_include_pad) or to the input itself; a window with no input element gives
//       0, as in PyTorch. Sums in the accumulator type, rounded once.
//   global_avg_pool2d<T, THREADS_PER_PLANE>   NCHW: a block reduces 256 / THREADS_PER_PLANE
//       planes; each plane's threads stride over it and finish with a tree in shared memory
//       (fixed order: the result does not depend on scheduling). 32 threads per plane for
//       small planes, 256 for large ones.
//   global_avg_pool2d_nhwc<T, V>   NHWC: a block is 32 lanes along C (V channels each) by 8
//       rows that stride over the H·W pixels of one image; row 0 adds the 8 partial sums in
//       row order (fixed: no dependence on scheduling).
//
// These are memory-bound; the window loads of neighbouring outputs overlap and hit L1.
#include "pool.cuh"

#define CC_POOL_THREADS 256
#define CC_POOL_GAP_ROWS 8         // global_avg_pool2d_nhwc: rows of a block (32 lanes each)

// The max over the window of output (p, q) of V channels whose elements are pitch apart from
// pixel to pixel (NCHW: 1; NHWC: C), xp at the first channel's plane; the values into y, the
// flat indices into idx (−1: no element replaced −inf, the index is then `first`, the window's
// first position stepped out of the padding, which may lie past the plane: 64-bit; an element's
// index is < H·W <= 2**31 − 1, which the op checks).
template <typename T, int V>
__device__ __forceinline__ void max_pool2d_window(const T* __restrict__ xp, cc_index_t pitch, int p, int q,
                                                  int H, int W, int kh, int kw, int stride_h, int stride_w,
                                                  int pad_h, int pad_w, int dil_h, int dil_w,
                                                  PoolVec<T, V>& y, int (&idx)[V], long long& first) {
    typedef typename PoolType<T>::A A;
    int hstart = p * stride_h - pad_h;
    int wstart = q * stride_w - pad_w;
    const int hend = min(hstart + (kh - 1) * dil_h + 1, H);
    const int wend = min(wstart + (kw - 1) * dil_w + 1, W);
    while (hstart < 0) hstart += dil_h;
    while (wstart < 0) wstart += dil_w;
    first = (long long)hstart * W + wstart;
    A best[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
        best[j] = cc_neg_inf<A>();
        y.v[j] = PoolType<T>::narrow(best[j]);           // -inf, exact in every type
        idx[j] = -1;
    }
#pragma unroll 1
    for (int ih = hstart; ih < hend; ih += dil_h) {
#pragma unroll 1
        for (int iw = wstart; iw < wend; iw += dil_w) {
            const PoolVec<T, V> v = pool_load<T, V>(xp + ((cc_index_t)ih * W + iw) * pitch);
#pragma unroll
            for (int j = 0; j < V; ++j) {
                const A a = PoolType<T>::wide(v.v[j]);
                // a != a is the NaN test (no fast-math anywhere in cuconv).
                if (a > best[j] || a != a) {
                    best[j] = a;
                    y.v[j] = v.v[j];
                    idx[j] = ih * W + iw;
                }
            }
        }
    }
}

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
        PoolVec<T, 1> best;
        int best_idx[1];
        long long first;
        max_pool2d_window<T, 1>(x + plane * H * W, 1, p, q, H, W, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h,
                                dil_w, best, best_idx, first);
        y[idx] = best.v[0];
        if (WITH_INDICES) indices[idx] = best_idx[0] >= 0 ? best_idx[0] : first;
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

// NHWC: thread (n, p, q, cv) computes channels cv·V ... cv·V + V − 1 of output pixel (n, p, q).
template <typename T, int V, bool WITH_INDICES>
__device__ __forceinline__ void max_pool2d_nhwc_body(const T* __restrict__ x, T* __restrict__ y,
                                                     long long* __restrict__ indices, long long N, int C, int H,
                                                     int W, int P, int Q, int kh, int kw, int stride_h,
                                                     int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    const int CV = C / V;
    const cc_index_t total = (cc_index_t)N * P * Q * CV;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const PoolPixel o = pool_pixel(idx, CV, P, Q);
        PoolVec<T, V> best;
        int best_idx[V];
        long long first;
        max_pool2d_window<T, V>(x + o.n * H * W * C + o.cv * V, C, o.row, o.col, H, W, kh, kw, stride_h, stride_w,
                                pad_h, pad_w, dil_h, dil_w, best, best_idx, first);
        pool_store<T, V>(y + idx * V, best);
        if (WITH_INDICES) {
#pragma unroll
            for (int j = 0; j < V; ++j) indices[idx * V + j] = best_idx[j] >= 0 ? best_idx[j] : first;
        }
    }
}

template <typename T, int V>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
max_pool2d_nhwc(const T* __restrict__ x, T* __restrict__ y, long long N, int C, int H, int W, int P, int Q,
                int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    max_pool2d_nhwc_body<T, V, false>(x, y, nullptr, N, C, H, W, P, Q, kh, kw, stride_h, stride_w, pad_h, pad_w,
                                      dil_h, dil_w);
}

template <typename T, int V>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
max_pool2d_indices_nhwc(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ indices, long long N,
                        int C, int H, int W, int P, int Q, int kh, int kw, int stride_h, int stride_w, int pad_h,
                        int pad_w, int dil_h, int dil_w) {
    max_pool2d_nhwc_body<T, V, true>(x, y, indices, N, C, H, W, P, Q, kh, kw, stride_h, stride_w, pad_h, pad_w,
                                     dil_h, dil_w);
}

// The average over the window of output (p, q) of V channels, pitch apart from pixel to pixel.
template <typename T, int V>
__device__ __forceinline__ PoolVec<T, V> avg_pool2d_window(const T* __restrict__ xp, cc_index_t pitch, int p,
                                                           int q, int H, int W, int kh, int kw, int stride_h,
                                                           int stride_w, int pad_h, int pad_w,
                                                           int count_include_pad, int divisor_override) {
    typedef typename PoolType<T>::A A;
    int hstart = p * stride_h - pad_h;
    int wstart = q * stride_w - pad_w;
    int hend = min(hstart + kh, H + pad_h);
    int wend = min(wstart + kw, W + pad_w);
    const int pool_size = (hend - hstart) * (wend - wstart);
    hstart = max(hstart, 0);
    wstart = max(wstart, 0);
    hend = min(hend, H);
    wend = min(wend, W);
    PoolVec<T, V> y;
    A sum[V];
#pragma unroll
    for (int j = 0; j < V; ++j) sum[j] = A(0);
    if (hstart >= hend || wstart >= wend) {
#pragma unroll
        for (int j = 0; j < V; ++j) y.v[j] = PoolType<T>::narrow(A(0));
        return y;
    }
#pragma unroll 1
    for (int ih = hstart; ih < hend; ++ih)
#pragma unroll 1
        for (int iw = wstart; iw < wend; ++iw) {
            const PoolVec<T, V> v = pool_load<T, V>(xp + ((cc_index_t)ih * W + iw) * pitch);
#pragma unroll
            for (int j = 0; j < V; ++j) sum[j] += PoolType<T>::wide(v.v[j]);
        }
    int divisor;
    if (divisor_override != 0) divisor = divisor_override;
    else if (count_include_pad) divisor = pool_size;
    else divisor = (hend - hstart) * (wend - wstart);
#pragma unroll
    for (int j = 0; j < V; ++j) y.v[j] = PoolType<T>::narrow(sum[j] / (A)divisor);
    return y;
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
        y[idx] = avg_pool2d_window<T, 1>(x + plane * H * W, 1, p, q, H, W, kh, kw, stride_h, stride_w, pad_h, pad_w,
                                         count_include_pad, divisor_override).v[0];
    }
}

template <typename T, int V>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
avg_pool2d_nhwc(const T* __restrict__ x, T* __restrict__ y, long long N, int C, int H, int W, int P, int Q,
                int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w, int count_include_pad,
                int divisor_override) {
    const int CV = C / V;
    const cc_index_t total = (cc_index_t)N * P * Q * CV;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const PoolPixel o = pool_pixel(idx, CV, P, Q);
        pool_store<T, V>(y + idx * V, avg_pool2d_window<T, V>(x + o.n * H * W * C + o.cv * V, C, o.row, o.col, H, W,
                                                              kh, kw, stride_h, stride_w, pad_h, pad_w,
                                                              count_include_pad, divisor_override));
    }
}

template <typename T, int THREADS_PER_PLANE>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
global_avg_pool2d(const T* __restrict__ x, T* __restrict__ y, long long planes, int HW) {
    typedef typename PoolType<T>::A A;
    static_assert(CC_POOL_THREADS % THREADS_PER_PLANE == 0, "a block holds whole planes");
    constexpr int PLANES_PER_BLOCK = CC_POOL_THREADS / THREADS_PER_PLANE;
    __shared__ A partial[CC_POOL_THREADS];
    const int tid = threadIdx.x;
    const int lane = tid % THREADS_PER_PLANE;
    const cc_index_t plane = (cc_index_t)blockIdx.x * PLANES_PER_BLOCK + tid / THREADS_PER_PLANE;
    A sum = A(0);
    if (plane < planes) {
        const T* xp = x + plane * HW;
        for (int i = lane; i < HW; i += THREADS_PER_PLANE) sum += PoolType<T>::wide(cc_ldg(xp + i));
    }
    partial[tid] = sum;
    __syncthreads();
#pragma unroll
    for (int half = THREADS_PER_PLANE / 2; half > 0; half /= 2) {
        if (lane < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    if (lane == 0 && plane < planes) y[plane] = PoolType<T>::narrow(partial[tid] / (A)HW);
}

// Grid: N · ceil(C / V / 32) blocks of 32 × CC_POOL_GAP_ROWS threads; block b sums lanes
// (b % cblocks)·32 + lane of image b / cblocks.
template <typename T, int V>
__global__ void __launch_bounds__(CC_POOL_THREADS, 4)
global_avg_pool2d_nhwc(const T* __restrict__ x, T* __restrict__ y, int C, int HW) {
    typedef typename PoolType<T>::A A;
    static_assert(32 * CC_POOL_GAP_ROWS == CC_POOL_THREADS, "32 lanes by CC_POOL_GAP_ROWS rows");
    __shared__ A partial[CC_POOL_GAP_ROWS][32][V];
    const int CV = C / V;
    const int cblocks = (CV + 31) / 32;
    const int lane = threadIdx.x % 32, row = threadIdx.x / 32;
    const cc_index_t n = blockIdx.x / cblocks;
    const int cv = (int)(blockIdx.x % cblocks) * 32 + lane;
    A sum[V];
#pragma unroll
    for (int j = 0; j < V; ++j) sum[j] = A(0);
    if (cv < CV) {
        const T* xp = x + n * HW * C + cv * V;
        for (int i = row; i < HW; i += CC_POOL_GAP_ROWS) {
            const PoolVec<T, V> v = pool_load<T, V>(xp + (cc_index_t)i * C);
#pragma unroll
            for (int j = 0; j < V; ++j) sum[j] += PoolType<T>::wide(v.v[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) partial[row][lane][j] = sum[j];
    __syncthreads();
    if (row == 0 && cv < CV) {
        PoolVec<T, V> out;
#pragma unroll
        for (int j = 0; j < V; ++j) {
            A s = partial[0][lane][j];
#pragma unroll
            for (int r = 1; r < CC_POOL_GAP_ROWS; ++r) s += partial[r][lane][j];
            out.v[j] = PoolType<T>::narrow(s / (A)HW);
        }
        pool_store<T, V>(y + n * C + cv * V, out);
    }
}
