// im2col.cu — the textbook's §8.3 lowering of a convolution input to a column matrix.
//
// For `images` NCHW images x (contiguous, images x C x H x W) writes, per image, the
// (C·R·S) x (P·Q) matrix
//
//   cols[n][(c·R + r)·S + s][p·Q + q] = x[n][c][p·stride_h - pad_h + r·dil_h][q·stride_w - pad_w + s·dil_w]
//
// (0 where the tap falls in the padding), rows ordered (c, r, s) as in cuconv.reference's
// im2col_ref, so a convolution becomes W (K x C·R·S) · cols (C·R·S x P·Q) per image and group.
// Only the top/left paddings appear: the bottom/right ones are implied by P and Q.
//
// One variant, a template on the element type (im2col<float, BLOCK>, im2col<double, BLOCK>: a
// copy, exact in either). A thread owns one output position (p, q) of one input plane (n, c) and writes
// that position's R·S rows: consecutive threads take consecutive q, so every store of a warp
// is one contiguous run of the row (coalesced: the column matrix is R·S times the input, the
// §8.3 k² overhead, and writing it is the kernel's cost), and the loads of a warp walk a
// row of x with the convolution's stride (coalesced at stride 1, and served from L1/L2 for
// the R·S - 1 re-reads of each element). The (p, q) decode is one division per thread and
// the plane index is uniform per block, so the inner loops do no divisions at all.
// blockIdx.x covers P·Q in blocks of BLOCK; blockIdx.y walks the images·C planes with a
// grid stride (gridDim.y <= 65535). Every offset into x and cols is 64-bit.
//
// im2col_nhwc<T, BLOCK>: the NHWC lowering, for ops/im2col_gemm.py's NHWC path. For `images`
// NHWC images (images x H x W x C) it writes the (images·P·Q) x (R·S·C) row-major matrix
//
//   cols[(n·P + p)·Q + q][g·R·S·Cg + (r·S + s)·Cg + cg] = x[n][p·stride_h - pad_h + r·dil_h][q·stride_w - pad_w + s·dil_w][g·Cg + cg]
//
// (0 in the padding): per group its columns are ordered (r, s, c) as KRSC weights are, so the
// matrix is the NHWC input of a 1x1 convolution with R·S·C channels in the same groups, whose
// weights are the KRSC tensor itself (implicit_gemm's NHWC kernel then computes the output).
// A thread owns one (pixel, channel) element of the output pixels and writes its R·S taps:
// consecutive threads take consecutive channels, so a warp's loads are one contiguous run of a
// pixel's channels and its stores runs of Cg. A flat 64-bit index with a grid stride.
#include "common.cuh"

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
im2col(const T* __restrict__ x, T* __restrict__ cols, int images, int C, int H, int W,
           int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, int pad_w,
           int dil_h, int dil_w) {
    const cc_index_t PQ = (cc_index_t)P * Q;
    const cc_index_t pq = (cc_index_t)blockIdx.x * BLOCK + threadIdx.x;
    if (pq >= PQ) return;
    const int p = (int)(pq / Q), q = (int)(pq % Q);
    const int h0 = p * stride_h - pad_h, w0 = q * stride_w - pad_w;
    const cc_index_t HW = (cc_index_t)H * W;
    const cc_index_t planes = (cc_index_t)images * C;
    for (cc_index_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const T* xp = x + plane * HW;
        T* out = cols + plane * R * S * PQ + pq;    // row (c·R + 0)·S + 0 of image n
        for (int r = 0; r < R; ++r) {
            const int h = h0 + r * dil_h;
            const bool h_in = h >= 0 && h < H;
            for (int s = 0; s < S; ++s) {
                const int w = w0 + s * dil_w;
                out[(cc_index_t)(r * S + s) * PQ] =
                    (h_in && w >= 0 && w < W) ? cc_ldg(xp + (cc_index_t)h * W + w) : T(0);
            }
        }
    }
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols, int images, int C, int H, int W,
            int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, int pad_w,
            int dil_h, int dil_w, int groups) {
    const int Cg = C / groups;
    const cc_index_t total = (cc_index_t)images * P * Q * C;
    const cc_index_t row_len = (cc_index_t)R * S * C;
    for (cc_index_t idx = (cc_index_t)blockIdx.x * BLOCK + threadIdx.x; idx < total;
         idx += (cc_index_t)gridDim.x * BLOCK) {
        const cc_index_t m = idx / C;
        const int c = (int)(idx - m * C);
        const int q = (int)(m % Q);
        const cc_index_t np = m / Q;
        const int p = (int)(np % P);
        const cc_index_t n = np / P;
        const int g = c / Cg, cg = c - g * Cg;
        const int h0 = p * stride_h - pad_h, w0 = q * stride_w - pad_w;
        const T* xn = x + n * H * W * C + c;
        T* out = cols + m * row_len + (cc_index_t)g * R * S * Cg + cg;
        for (int r = 0; r < R; ++r) {
            const int h = h0 + r * dil_h;
            const bool h_in = h >= 0 && h < H;
            for (int s = 0; s < S; ++s) {
                const int w = w0 + s * dil_w;
                out[(cc_index_t)(r * S + s) * Cg] =
                    (h_in && w >= 0 && w < W) ? cc_ldg(xn + ((cc_index_t)h * W + w) * C) : T(0);
            }
        }
    }
}
