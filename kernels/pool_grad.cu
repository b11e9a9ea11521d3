// pool_grad.cu — backward passes of 2-D pooling over NCHW, float or double, with PyTorch's
// semantics (pool.cu is the forward). Every kernel writes each dx element exactly once, in a
// fixed summation order: no atomics, bit-identical from run to run.
//
//   max_pool2d_backward_gather<T>   dx[h, w] = Σ dy[p, q] over the windows (p, q) whose int64
//       index is h·W + w — PyTorch's CUDA kernel's form: one thread per dx element enumerates the
//       taps r (s) with h + pad − r·dil ≡ 0 (mod stride), i.e. the windows that contain it, in
//       increasing (p, q): the output order; then the windows with no input element whose index
//       is h·W + w (PoolAxis below; torch's CPU backward routes their dy there too, its CUDA
//       gather drops it). Needs the window geometry (kernel, stride, padding, dilation, P, Q)
//       the forward ran with.
//   max_pool2d_backward_scatter<T>  the same sums from the indices alone (torch's
//       max_pool2d_with_indices_backward given only grad_output, indices and the input size):
//       one warp per (n, c) plane zeroes the plane, then walks its outputs 32 at a time; the
//       lanes whose indices coincide find each other with __match_any_sync and the lowest
//       of them adds their dy values, in lane order, to dx — so every dx element is the sum of
//       its dy values in output order, as the gather (and PyTorch's CPU loop) computes it, and
//       an index may point anywhere in its plane. Indices outside [0, H·W) are skipped and
//       counted in *bad (the op reports them).
//   avg_pool2d_backward<T>  dx[h, w] = Σ dy[p, q] / divisor(p, q) over the windows containing
//       (h, w), the divisor by the forward's rules (divisor_override; else the window clipped
//       to the padded input when count_include_pad — ceil_mode's overhang past it does not
//       count — or to the input).
//   global_avg_pool2d_backward<T>  dx[n, c, h, w] = dy[n, c] / (H·W).
#include "common.cuh"

#define CC_POOLG_THREADS 256

// A window with no input element (its taps step over the whole image: dilation), which the forward
// answers with −Inf and torch's CPU index: the window's start stepped by the dilation out of the
// padding, in each dimension — pool.cu's best_idx, hs·W + ws, which need not lie in the window nor
// the plane. Only a window that starts in the padding can be empty (a later one starts inside the
// input, the last one too: ceil_mode's rule), so only rows p < ceil(pad_h / stride_h) and columns
// q < ceil(pad_w / stride_w) hold empty windows.
struct PoolAxis {
    int stride, pad, dil, k, n;     // n: the input size along this axis
    __device__ __forceinline__ int start(int p) const {        // the stepped start hs(p)
        const int s = p * stride - pad;
        return s < 0 ? s + cc_div_up(-s, dil) * dil : s;
    }
    __device__ __forceinline__ bool empty(int p) const {
        return start(p) >= min(p * stride - pad + (k - 1) * dil + 1, n);
    }
    __device__ __forceinline__ int in_padding() const { return cc_div_up(pad, stride); }   // windows starting there
    // Calls f(p) for the outputs p < count whose stepped start is `target`: the few starting in the
    // padding one by one, the one later output p = (target + pad) / stride by division.
    template <typename F>
    __device__ __forceinline__ void each_with_start(long long target, int count, F f) const {
        const int first_inside = min(in_padding(), count);
        for (int p = 0; p < first_inside; ++p)
            if (start(p) == target) f(p);
        if (target >= 0 && target < n && (target + pad) % stride == 0) {
            const long long p = (target + pad) / stride;
            if (p >= first_inside && p < count) f((int)p);
        }
    }
};

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
        const long long me = (long long)h * W + ww;
        const T* dyp = dy + plane * PQ;
        const long long* ip = indices + plane * PQ;
        T acc = T(0);
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
                const cc_index_t o = (cc_index_t)p * Q + q;
                if (ip[o] == me) acc += cc_ldg(dyp + o);
            }
        }
        // The empty windows whose index is this element (none unless a window's taps step over
        // the image): those of the empty rows, then those of the empty columns in the other rows
        // — each in output order, after the windows that hold the element.
        const PoolAxis ax_h{stride_h, pad_h, dil_h, kh, H}, ax_w{stride_w, pad_w, dil_w, kw, W};
        auto add = [&](int p, int q) {
            const cc_index_t o = (cc_index_t)p * Q + q;
            if (ip[o] == me) acc += cc_ldg(dyp + o);
        };
        for (int p = 0; p < min(ax_h.in_padding(), P); ++p)
            if (ax_h.empty(p)) ax_w.each_with_start(me - (long long)ax_h.start(p) * W, Q, [&](int q) { add(p, q); });
        for (int q = 0; q < min(ax_w.in_padding(), Q); ++q) {
            const long long rest = me - ax_w.start(q);
            if (!ax_w.empty(q) || rest < 0 || rest % W != 0) continue;
            ax_h.each_with_start(rest / W, P, [&](int p) {
                if (!ax_h.empty(p)) add(p, q);
            });
        }
        dx[idx] = acc;
    }
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
    for (cc_index_t i = lane; i < HW; i += 32) dxp[i] = T(0);
    __syncwarp();
    unsigned long long my_bad = 0;
    for (cc_index_t base = 0; base < PQ; base += 32) {
        const cc_index_t o = base + lane;
        long long target = -1;
        T v = T(0);
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
            for (unsigned m = peers; m != 0; m &= m - 1) acc += vals[warp][__ffs(m) - 1];
            dxp[target] = acc;
        }
        __syncwarp();                     // dx updates and vals reads done before the next chunk
    }
    if (my_bad != 0) atomicAdd(bad, my_bad);   // an integer count: order-independent
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
        const T* dyp = dy + (idx / HW) * PQ;
        // Windows p with p·stride − pad <= h < p·stride − pad + kh (PyTorch's phstart/phend).
        const int p_begin = h + pad_h < kh ? 0 : (h + pad_h - kh) / stride_h + 1;
        const int p_end = min((h + pad_h) / stride_h + 1, P);
        const int q_begin = ww + pad_w < kw ? 0 : (ww + pad_w - kw) / stride_w + 1;
        const int q_end = min((ww + pad_w) / stride_w + 1, Q);
        T acc = T(0);
        for (int p = p_begin; p < p_end; ++p) {
            int hstart = p * stride_h - pad_h;
            int hend = min(hstart + kh, H + pad_h);
            const int rows_padded = hend - hstart;
            hstart = max(hstart, 0);
            hend = min(hend, H);
            for (int q = q_begin; q < q_end; ++q) {
                int wstart = q * stride_w - pad_w;
                int wend = min(wstart + kw, W + pad_w);
                const int cols_padded = wend - wstart;
                wstart = max(wstart, 0);
                wend = min(wend, W);
                int divisor;
                if (divisor_override != 0) divisor = divisor_override;
                else if (count_include_pad) divisor = rows_padded * cols_padded;
                else divisor = (hend - hstart) * (wend - wstart);
                acc += cc_ldg(dyp + (cc_index_t)p * Q + q) / (T)divisor;
            }
        }
        dx[idx] = acc;
    }
}

template <typename T>
__global__ void __launch_bounds__(CC_POOLG_THREADS, 4)
global_avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, long long planes,
                           long long HW) {
    const cc_index_t total = planes * HW;
    const cc_index_t step = (cc_index_t)gridDim.x * blockDim.x;
    const T count = (T)HW;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step)
        dx[idx] = cc_ldg(dy + idx / HW) / count;
}
