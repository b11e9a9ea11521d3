// pool_grad.cu — backward passes of 2-D pooling, NCHW or NHWC, in float32, float64, float16 or
// bfloat16, with PyTorch's semantics (pool.cu is the forward; pool.cuh the element types: the
// 16-bit types sum in float). Every kernel writes each dx element exactly once, in a fixed
// summation order: no atomics, bit-identical from run to run.
//
//   max_pool2d_backward_gather<T> (NCHW) / _gather_nhwc<T, V> (NHWC, V channels a thread)
//       dx[h, w] = Σ dy[p, q] over the windows (p, q) whose int64 index is h·W + w — PyTorch's
//       CUDA kernel's form: one thread per dx element enumerates the taps r (s) with
//       h + pad − r·dil ≡ 0 (mod stride), i.e. the windows that contain it, in increasing
//       (p, q): the output order; then the windows with no input element whose index is h·W + w
//       (max_pool2d_empty_windows; torch's CPU backward routes their dy there too, its CUDA
//       gather drops it). Summed in the accumulator type, rounded once (torch CUDA's
//       accscalar_t). Needs the window geometry (kernel, stride, padding, dilation, P, Q) the
//       forward ran with.
//   max_pool2d_backward_scatter<T> (NCHW)  the same sums from the indices alone (torch's
//       max_pool2d_with_indices_backward given only grad_output, indices and the input size):
//       one warp per (n, c) plane zeroes the plane, then walks its outputs 32 at a time; the
//       lanes whose indices coincide find each other with __match_any_sync and the lowest
//       of them adds their dy values, in lane order, to dx — so every dx element is the sum of
//       its dy values in output order, as PyTorch's CPU loop computes it, and an index may point
//       anywhere in its plane. Indices outside [0, H·W) are skipped and counted in *bad (the op
//       reports them). Each addition is rounded to T (PyTorch's CPU kernel adds in the storage
//       type), so in float16/bfloat16 it may differ from the gather's single rounding when an
//       element is the maximum of three or more windows; in float32/float64 the two agree bit
//       for bit.
//   max_pool2d_backward_scatter_nhwc<T>  the scatter in NHWC: one thread per (n, c) column
//       (consecutive threads along C: coalesced) zeroes its column and walks its outputs in
//       order, dx[n, idx, c] += dy[n, p, q, c] — the NCHW scatter's sums, bit for bit.
//   avg_pool2d_backward<T> / _nhwc<T, V>  dx[h, w] = Σ dy[p, q] / divisor(p, q) over the windows
//       containing (h, w), the divisor by the forward's rules (divisor_override; else the window
//       clipped to the padded input when count_include_pad — ceil_mode's overhang past it does
//       not count — or to the input).
//   global_avg_pool2d_backward<T> / _nhwc<T, V>  dx[n, c, h, w] = dy[n, c] / (H·W).
#include "pool.cuh"

#define CC_POOLG_THREADS 256

// A window with no input element (its taps step over the whole image: dilation), which the
// forward answers with −Inf and torch's CPU index: the window's start stepped by the dilation out
// of the padding in each dimension, start(p)·W + start(q) (pool.cu's best_idx). The stepped start
// lies past the window only when it lies past the input (the steps stay within the window's k
// taps: pad <= k/2), and only a window that starts in the padding steps: so the empty windows are
// those with start(p) >= H — their index is outside the plane, skipped — or start(q) >= W,
// q < ceil(pad_w / stride_w), whose index start(p)·W + start(q) lands on another row.
__device__ __forceinline__ int pool_stepped_start(int p, int stride, int pad, int dil) {
    const int s = p * stride - pad;
    return s < 0 ? s + cc_div_up(-s, dil) * dil : s;
}

// acc + the dy of the empty windows whose index is `me`: for each column q < ceil(pad_w / stride_w)
// whose stepped start is past the input, the rows p with start(p) = (me − start(q)) / W — those
// starting in the padding one by one, the one later row by division. dyp and ip point at one
// channel's plane, its outputs pitch apart (NCHW: 1; NHWC: C).
template <typename T, typename A>
__device__ __forceinline__ A max_pool2d_empty_windows(A acc, const T* __restrict__ dyp,
                                                      const long long* __restrict__ ip, cc_index_t pitch,
                                                      long long me, int W, int P, int Q, int stride_h, int stride_w,
                                                      int pad_h, int pad_w, int dil_h, int dil_w) {
    const int p_pad = min(cc_div_up(pad_h, stride_h), P), q_pad = min(cc_div_up(pad_w, stride_w), Q);
#pragma unroll 1
    for (int q = 0; q < q_pad; ++q) {
        const int ws = pool_stepped_start(q, stride_w, pad_w, dil_w);
        if (ws < W || me < ws || (me - ws) % W != 0) continue;
        const int row = (int)((me - ws) / W);
        const int p_in = (row + pad_h) % stride_h == 0 ? (row + pad_h) / stride_h : -1;
#pragma unroll 1
        for (int p = 0; p <= p_pad; ++p) {          // p == p_pad: the row starting inside, if any
            const int pp = p < p_pad ? p : p_in;
            if (p < p_pad ? pool_stepped_start(p, stride_h, pad_h, dil_h) != row : pp < p_pad || pp >= P) continue;
            const cc_index_t o = ((cc_index_t)pp * Q + q) * pitch;
            if (ip[o] == me) acc += PoolType<T>::wide(cc_ldg(dyp + o));
        }
    }
    return acc;
}

// dx[h, w] of V channels by the gather (see the file comment): dyp / ip at the first channel's
// plane, outputs pitch apart.
template <typename T, int V>
__device__ __forceinline__ PoolVec<T, V> max_pool2d_gather(const T* __restrict__ dyp, const long long* __restrict__ ip,
                                                           cc_index_t pitch, int h, int ww, int W, int P, int Q,
                                                           int kh, int kw, int stride_h, int stride_w, int pad_h,
                                                           int pad_w, int dil_h, int dil_w) {
    typedef typename PoolType<T>::A A;
    const long long me = (long long)h * W + ww;
    A acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = A(0);
    // r descending: p = (h + pad − r·dil) / stride ascending.
    for (int r = kh - 1; r >= 0; --r) {
        const int th = h + pad_h - r * dil_h;
        if (th < 0 || th % stride_h != 0) continue;
        const int p = th / stride_h;
        if (p >= P) continue;
        for (int s = kw - 1; s >= 0; --s) {
            const int tw = ww + pad_w - s * dil_w;
            if (tw < 0 || tw % stride_w != 0) continue;
            const int q = tw / stride_w;
            if (q >= Q) continue;
            const cc_index_t o = ((cc_index_t)p * Q + q) * pitch;
            const PoolVec<long long, V> iv = pool_load<long long, V>(ip + o);
            const PoolVec<T, V> dv = pool_load<T, V>(dyp + o);
#pragma unroll
            for (int j = 0; j < V; ++j)
                if (iv.v[j] == me) acc[j] += PoolType<T>::wide(dv.v[j]);
        }
    }
    // The windows with no input element whose index is this element, after the windows that
    // hold it. Only dilation steps a window's taps over the whole image.
    if (dil_w > 1) {
#pragma unroll
        for (int j = 0; j < V; ++j)
            acc[j] = max_pool2d_empty_windows<T, A>(acc[j], dyp + j, ip + j, pitch, me, W, P, Q, stride_h, stride_w,
                                                    pad_h, pad_w, dil_h, dil_w);
    }
    PoolVec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = PoolType<T>::narrow(acc[j]);
    return out;
}

template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
max_pool2d_backward_gather(const T* __restrict__ dy, const long long* __restrict__ indices,
                           T* __restrict__ dx, long long planes, int H, int W, int P, int Q, int kh,
                           int kw, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h,
                           int dil_w) {
    const cc_index_t HW = (cc_index_t)H * W, PQ = (cc_index_t)P * Q;
    const cc_index_t total = planes * HW;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int ww = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const cc_index_t plane = idx / HW;
        dx[idx] = max_pool2d_gather<T, 1>(dy + plane * PQ, indices + plane * PQ, 1, h, ww, W, P, Q, kh, kw, stride_h,
                                          stride_w, pad_h, pad_w, dil_h, dil_w).v[0];
    }
}

// NHWC: thread (n, h, w, cv) computes channels cv·V ... cv·V + V − 1 of dx pixel (n, h, w).
template <typename T, int V>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
max_pool2d_backward_gather_nhwc(const T* __restrict__ dy, const long long* __restrict__ indices,
                                T* __restrict__ dx, long long N, int C, int H, int W, int P, int Q, int kh, int kw,
                                int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w) {
    const int CV = C / V;
    const cc_index_t total = (cc_index_t)N * H * W * CV;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const PoolPixel px = pool_pixel(idx, CV, H, W);
        const cc_index_t off = px.n * P * Q * C + px.cv * V;
        pool_store<T, V>(dx + idx * V, max_pool2d_gather<T, V>(dy + off, indices + off, C, px.row, px.col, W, P, Q,
                                                              kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w));
    }
}

// dx += v, rounded to T (the scatter's storage-type addition).
template <typename T>
__device__ __forceinline__ T pool_add(T a, T b) {
    return PoolType<T>::narrow(PoolType<T>::wide(a) + PoolType<T>::wide(b));
}

// Grid: one warp per plane, CC_POOLG_THREADS / 32 planes per block.
template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
max_pool2d_backward_scatter(const T* __restrict__ dy, const long long* __restrict__ indices,
                            T* __restrict__ dx, unsigned long long* __restrict__ bad,
                            long long planes, long long HW, long long PQ) {
    constexpr int WARPS = CC_POOLG_THREADS / 32;
    __shared__ T vals[WARPS][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const cc_index_t plane = (cc_index_t)blockIdx.x * WARPS + warp;
    if (plane >= planes) return;          // the whole warp: no block-wide barrier below
    T* dxp = dx + plane * HW;
    const T* dyp = dy + plane * PQ;
    const long long* ip = indices + plane * PQ;
    for (cc_index_t i = lane; i < HW; i += 32) dxp[i] = PoolType<T>::narrow(0);
    __syncwarp();
    unsigned long long my_bad = 0;
    for (cc_index_t base = 0; base < PQ; base += 32) {
        const cc_index_t o = base + lane;
        long long target = -1;
        T v = PoolType<T>::narrow(0);
        if (o < PQ) {
            target = ip[o];
            v = cc_ldg(dyp + o);
            if (target < 0 || target >= HW) {
                ++my_bad;
                target = -1;
            }
        }
        vals[warp][lane] = v;
        const unsigned peers = __match_any_sync(0xffffffffu, target);
        __syncwarp();                     // vals visible to the leaders
        if (target >= 0 && (peers & ((1u << lane) - 1u)) == 0) {   // the lowest lane of its peers
            T acc = dxp[target];
            for (unsigned m = peers; m != 0; m &= m - 1) acc = pool_add(acc, vals[warp][__ffs(m) - 1]);
            dxp[target] = acc;
        }
        __syncwarp();                     // dx updates and vals reads done before the next chunk
    }
    if (my_bad != 0) atomicAdd(bad, my_bad);   // an integer count: order-independent
}

// Grid-stride over the N·C columns (n, c), c fastest.
template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
max_pool2d_backward_scatter_nhwc(const T* __restrict__ dy, const long long* __restrict__ indices,
                                 T* __restrict__ dx, unsigned long long* __restrict__ bad, long long N, int C,
                                 long long HW, long long PQ) {
    const cc_index_t total = (cc_index_t)N * C;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    unsigned long long my_bad = 0;
    for (cc_index_t col = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; col < total; col += step) {
        const cc_index_t n = col / C, c = col % C;
        T* dxp = dx + n * HW * C + c;
        const T* dyp = dy + n * PQ * C + c;
        const long long* ip = indices + n * PQ * C + c;
    #pragma unroll 1
        for (cc_index_t i = 0; i < HW; ++i) dxp[i * C] = PoolType<T>::narrow(0);
    #pragma unroll 1
        for (cc_index_t o = 0; o < PQ; ++o) {
            const long long target = ip[o * C];
            if (target < 0 || target >= HW) {
                ++my_bad;
                continue;
            }
            dxp[target * C] = pool_add(dxp[target * C], cc_ldg(dyp + o * C));
        }
    }
    if (my_bad != 0) atomicAdd(bad, my_bad);
}

// The extent of an average pooling window starting at `start` (k taps) along a dimension of `size`
// padded by `pad` on each side: within the padded input (count_include_pad's count; a ceil_mode
// window's overhang past it does not count) and within the input itself.
struct PoolExtent {
    int padded, inside;
};
__device__ __forceinline__ PoolExtent pool_window_extent(int start, int k, int size, int pad) {
    const int end = min(start + k, size + pad);
    PoolExtent e;
    e.padded = end - start;
    e.inside = min(end, size) - max(start, 0);
    return e;
}

// dx[h, w] of V channels of avg pooling's gradient: dyp at the first channel's plane, outputs
// pitch apart.
template <typename T, int V>
__device__ __forceinline__ PoolVec<T, V> avg_pool2d_gather(const T* __restrict__ dyp, cc_index_t pitch, int h,
                                                           int ww, int H, int W, int P, int Q, int kh, int kw,
                                                           int stride_h, int stride_w, int pad_h, int pad_w,
                                                           int count_include_pad, int divisor_override) {
    typedef typename PoolType<T>::A A;
    // Windows p with p·stride − pad <= h < p·stride − pad + kh (PyTorch's phstart/phend).
    const int p_begin = h + pad_h < kh ? 0 : (h + pad_h - kh) / stride_h + 1;
    const int p_end = min((h + pad_h) / stride_h + 1, P);
    const int q_begin = ww + pad_w < kw ? 0 : (ww + pad_w - kw) / stride_w + 1;
    const int q_end = min((ww + pad_w) / stride_w + 1, Q);
    A acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = A(0);
#pragma unroll 1
    for (int p = p_begin; p < p_end; ++p) {
        const PoolExtent rows = pool_window_extent(p * stride_h - pad_h, kh, H, pad_h);
#pragma unroll 1
        for (int q = q_begin; q < q_end; ++q) {
            const PoolExtent cols = pool_window_extent(q * stride_w - pad_w, kw, W, pad_w);
            int divisor;
            if (divisor_override != 0) divisor = divisor_override;
            else if (count_include_pad) divisor = rows.padded * cols.padded;
            else divisor = rows.inside * cols.inside;
            const PoolVec<T, V> dv = pool_load<T, V>(dyp + ((cc_index_t)p * Q + q) * pitch);
#pragma unroll
            for (int j = 0; j < V; ++j) acc[j] += PoolType<T>::wide(dv.v[j]) / (A)divisor;
        }
    }
    PoolVec<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = PoolType<T>::narrow(acc[j]);
    return out;
}

template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, long long planes, int H, int W,
                    int P, int Q, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w,
                    int count_include_pad, int divisor_override) {
    const cc_index_t HW = (cc_index_t)H * W, PQ = (cc_index_t)P * Q;
    const cc_index_t total = planes * HW;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int ww = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        dx[idx] = avg_pool2d_gather<T, 1>(dy + (idx / HW) * PQ, 1, h, ww, H, W, P, Q, kh, kw, stride_h, stride_w,
                                          pad_h, pad_w, count_include_pad, divisor_override).v[0];
    }
}

template <typename T, int V>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
avg_pool2d_backward_nhwc(const T* __restrict__ dy, T* __restrict__ dx, long long N, int C, int H, int W, int P,
                         int Q, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w,
                         int count_include_pad, int divisor_override) {
    const int CV = C / V;
    const cc_index_t total = (cc_index_t)N * H * W * CV;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const PoolPixel px = pool_pixel(idx, CV, H, W);
        const cc_index_t off = px.n * P * Q * C + px.cv * V;
        pool_store<T, V>(dx + idx * V, avg_pool2d_gather<T, V>(dy + off, C, px.row, px.col, H, W, P, Q, kh, kw,
                                                              stride_h, stride_w, pad_h, pad_w, count_include_pad,
                                                              divisor_override));
    }
}

template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
global_avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, long long planes,
                           long long HW) {
    typedef typename PoolType<T>::A A;
    const cc_index_t total = planes * HW;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    const A count = (A)HW;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step)
        dx[idx] = PoolType<T>::narrow(PoolType<T>::wide(cc_ldg(dy + idx / HW)) / count);
}

template <typename T, int V>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
global_avg_pool2d_backward_nhwc(const T* __restrict__ dy, T* __restrict__ dx, long long N, int C, long long HW) {
    typedef typename PoolType<T>::A A;
    const int CV = C / V;
    const cc_index_t total = (cc_index_t)N * HW * CV;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    const A count = (A)HW;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int cv = (int)(idx % CV);
        const PoolVec<T, V> dv = pool_load<T, V>(dy + idx / ((cc_index_t)HW * CV) * C + cv * V);
        PoolVec<T, V> out;
#pragma unroll
        for (int j = 0; j < V; ++j) out.v[j] = PoolType<T>::narrow(PoolType<T>::wide(dv.v[j]) / count);
        pool_store<T, V>(dx + idx * V, out);
    }
}
