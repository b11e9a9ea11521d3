// wgmma_conv.cu — 2-D convolution as an implicit GEMM on Hopper's warpgroup tensor cores
// (wgmma.mma_async, sm_90a only): float16 / bfloat16 in, fp32 accumulation, fused epilogue
// act(acc + bias[k] + residual) converted to the input dtype. NHWC activations, KRSC weights
// (NCHW goes through tc_conv.cu's tc_pack_nhwc first, as for tc_conv); the GEMM per group is
// tc_conv.cu's: D[m, n] = Σ_kk A[m, kk] B[kk, n], m = output pixel, n = filter, kk = (r, s, c).
//
// Why a second tensor-core convolution: on Hopper mma.sync (HMMA) issues from registers at most
// at the A100 rate per SM; the full H100/H200 tensor rate is reached only by wgmma, which reads
// both operands from shared memory through matrix descriptors and runs asynchronously.
//
// Variants, simplest first (both are wgmma_conv<T, BM, BN, STAGES, MINB>):
// 1. STAGES == 1 ("synchronous"): per K tile every thread cp.async-copies its part of the A and
//    B tiles (WgmmaConvLoader: 16-byte copies of 8 channels, zero fill for padding and partial
//    tiles), waits, fence.proxy.async, __syncthreads; each warpgroup issues 4 wgmma (k = 16
//    each), commits and waits. No overlap of copies and math; the reference for variant 2.
// 2. STAGES >= 3 adds a ring of STAGES shared-memory stages with a "full" and an "empty"
//    mbarrier each: tile j is copied STAGES - 2 iterations before it is used, wgmma.wait_group 1
//    keeps one tile's wgmmas in flight while the next copies are issued, and the warpgroups
//    drift apart by up to a stage instead of meeting at a __syncthreads every tile.
//
// Shared memory: A tile BM rows x 64 channels and B tile BN rows x 64 channels, both K-major in
// the 128-byte swizzled layout (16-byte chunk c of row r at (c ^ r % 8)·16, Swizzle<3,4,3>),
// which the loader writes (cc_tc_smem_offset<128>) and the descriptors (swizzle mode 1, stride
// byte offset 1024) describe; stages 1024-byte aligned. Warpgroup g multiplies rows 64g..64g+63
// of A by all BN columns of B: one m64nBNk16 wgmma per 16 channels.
// TMA (cp.async.bulk.tensor) is not used: its tensor map needs the driver's cuTensorMapEncode*.
//
// Configs (smem = STAGES·(BM + BN)·128 B + 1 KiB alignment + the barriers): 128x128x64_s4 (2
// warpgroups, 1 block/SM), 64x128x64_s4 (2 blocks/SM, small M), 64x64x64_s3 (4 blocks/SM, small
// M·K, emulator tests), 64x64x64_s1 (variant 1).
// The ring's protocol step by step: docs/kernel_design.md#wgmma_convcu and docs/wgmma.md.
// Registers, spills and the issue ceiling: `cuconv kernels --analyze --arch sm_90a --file
// wgmma_conv.cu` (docs/kernel_figures.md).
#include "tc_tile.cuh"

template <typename T>
struct WgType;
template <>
struct WgType<__half> {
    static constexpr bool BF16 = false;
};
template <>
struct WgType<__nv_bfloat16> {
    static constexpr bool BF16 = true;
};

template <typename T, int BM, int BN, int STAGES>
struct WgmmaConvShape {
    static constexpr int BK = 64;                       // 64 16-bit channels = one 128-byte swizzle row
    static constexpr int WARPGROUPS = BM / 64, THREADS = WARPGROUPS * 128;
    static constexpr int A_STAGE = BM * 128, B_STAGE = BN * 128, STAGE = A_STAGE + B_STAGE;
    static constexpr int ACC_LD = BN + 8;                // the epilogue's staging rows (floats), padded against bank conflicts
    static constexpr int DATA = STAGES * STAGE > BM * ACC_LD * 4 ? STAGES * STAGE : BM * ACC_LD * 4;
    static constexpr int BARRIERS = STAGES > 1 ? 2 * STAGES : 0;
    static constexpr int SMEM = 1024 + DATA + 8 * BARRIERS;   // what the host must pass
    static_assert(BM % 64 == 0 && (BN == 64 || BN == 128), "tiles: BM a multiple of 64, BN 64 or 128");
    static_assert(sizeof(T) == 2, "wgmma_conv takes 16-bit types");
};

// The gather of one K tile (tap r, s; channels c0 .. c0+63) into a stage: 16-byte cp.async of
// 8 channels of one input pixel (A) or of one filter (B), zero-filled for padding, rows past M
// or Kg and channels past Cg. Against tc_conv's TcConvLoader, the per-copy work is cut to what
// the issue ceiling can afford (the main loop is 4 HGMMA against 8 copies per thread): each
// thread copies the same 16-byte chunk (tid % 8) of its rows, so the swizzled destination of
// copy i is the first one's plus i·THREADS·16; the source pointer of each row is decoded once
// (pixel origin and channel included), a tile only adds one uniform tap offset; a copy that
// zero-fills still gets an address of its row (cp.async reads nothing when src-size is 0, and
// the address is aligned), so no select of a dummy pointer is needed.
template <typename T, int BM, int BN, int THREADS>
struct WgmmaConvLoader {
    static constexpr int A_COPIES = BM * 8 / THREADS, B_COPIES = BN * 8 / THREADS;
    static_assert(BM * 8 % THREADS == 0 && BN * 8 % THREADS == 0 && THREADS % 64 == 0,
                  "every thread copies the same chunk of each of its rows");
    const T* a_src[A_COPIES];     // x at (img, p·sh - ph, q·sw - pw, g·Cg + chunk·8)
    int a_ih0[A_COPIES], a_iw0[A_COPIES];   // ih0 = -2^30: a row past M
    const T* b_src[B_COPIES];     // w at (g·Kg + n, 0, 0, chunk·8)
    unsigned b_ok;                // bit i: filter row of copy i < Kg
    unsigned dst0;                // byte offset of copy 0 in a stage (same in A and B)
    int col;                      // first channel of this thread's chunk
    int H, W, Cs, Cg, S, dh, dw;
    int r, s, c0;                 // the next tile

    __device__ __forceinline__ void init(const T* x, const T* w, int m0, int n0, int g, int M, int Kg, int P, int Q,
                                         int sh, int sw, int ph, int pw, int RSCg) {
        const int tid = threadIdx.x, chunk = tid & 7, row0 = tid >> 3;
        col = chunk * 8;
        dst0 = cc_tc_smem_offset<128>(row0, chunk * 16);
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            const int m = m0 + row0 + i * (THREADS / 8);
            if (m < M) {
                const int img = m / (P * Q), pq = m - img * (P * Q), p = pq / Q, q = pq - p * Q;
                a_ih0[i] = p * sh - ph;
                a_iw0[i] = q * sw - pw;
                a_src[i] = x + ((cc_index_t)img * H * W + (cc_index_t)a_ih0[i] * W + a_iw0[i]) * Cs +
                           (cc_index_t)g * Cg + col;
            } else {
                a_ih0[i] = -(1 << 30);
                a_iw0[i] = 0;
                a_src[i] = x;
            }
        }
        b_ok = 0;
#pragma unroll
        for (int i = 0; i < B_COPIES; ++i) {
            const int n = n0 + row0 + i * (THREADS / 8);
            b_src[i] = n < Kg ? w + ((cc_index_t)g * Kg + n) * RSCg + col : w;
            b_ok |= (n < Kg ? 1u : 0u) << i;
        }
        r = s = c0 = 0;
    }

    __device__ __forceinline__ void load(unsigned char* sA, unsigned char* sB) {
        const int rdh = r * dh, sdw = s * dw;
        const cc_index_t a_tap = ((cc_index_t)rdh * W + sdw) * Cs + c0;   // uniform
        const int b_tap = (r * S + s) * Cg + c0;
        const bool c_ok = c0 + col < Cg;
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            const bool ok = c_ok && (unsigned)(a_ih0[i] + rdh) < (unsigned)H && (unsigned)(a_iw0[i] + sdw) < (unsigned)W;
            cc_cp_async_zfill<16>(sA + dst0 + i * THREADS * 16, ok ? a_src[i] + a_tap : a_src[i], ok ? 16 : 0);
        }
#pragma unroll
        for (int i = 0; i < B_COPIES; ++i) {
            const bool ok = c_ok && (b_ok >> i & 1u);
            cc_cp_async_zfill<16>(sB + dst0 + i * THREADS * 16, b_src[i] + (ok ? b_tap : 0), ok ? 16 : 0);
        }
        c0 += 64;
        if (c0 >= Cg) {
            c0 = 0;
            if (++s == S) {
                s = 0;
                ++r;
            }
        }
    }
};

// One K tile: 4 wgmma k-steps of 16 channels, A rows of this warpgroup, all BN rows of B.
// da / db describe the stage's tiles (K-major, 128-byte swizzle, 8-row groups 1024 bytes apart
// = the stride-dimension offset, leading-dimension offset unused); each k-step starts 32 bytes
// (16 channels) further into the rows: + 2 in the start-address field (address >> 4).
template <typename T, int BN>
__device__ __forceinline__ void cc_wgmma_conv_tile(CcWgmmaAcc<BN>& acc, unsigned long long da, unsigned long long db) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) cc_wgmma_m64k16<WgType<T>::BF16, BN>(acc, da + 2 * ks, db + 2 * ks, 1);
}

template <typename T, int BM, int BN, int STAGES, int MINB>
__global__ void __launch_bounds__((BM / 64) * 128, MINB) wgmma_conv(CC_TC_CONV_PARAMS, int out_nchw) {
    using Sh = WgmmaConvShape<T, BM, BN, STAGES>;
    constexpr int BK = Sh::BK, THREADS = Sh::THREADS;
    static_assert(STAGES == 1 || STAGES >= 3, "1 stage (synchronous) or a ring of at least 3");
    extern __shared__ __align__(1024) unsigned char cc_wg_smem_raw[];
    // Align the stages to 1024 bytes of the shared window (the 128-byte swizzle's period).
    unsigned char* const smem = cc_wg_smem_raw + ((1024u - (cc_smem_addr(cc_wg_smem_raw) & 1023u)) & 1023u);
    unsigned long long* const full = reinterpret_cast<unsigned long long*>(smem + Sh::DATA);
    unsigned long long* const empty = full + STAGES;

    const int M = N * P * Q, Cg = C / groups, Kg = K / groups;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (Kg + BN - 1) / BN;
    const int per_group = tiles_m * tiles_n;
    const int g = blockIdx.x / per_group;
    int tm, tn;   // bands of 8 M tiles walked N tile by N tile, as tc_conv
    {
        const int id = blockIdx.x - g * per_group;
        const int band = id / (8 * tiles_n), first = band * 8, rows = min(tiles_m - first, 8);
        const int in_band = id - band * 8 * tiles_n;
        tm = first + in_band % rows;
        tn = in_band / rows;
    }
    const int warpgroup = threadIdx.x >> 7;

    WgmmaConvLoader<T, BM, BN, THREADS> loader;
    loader.H = H;
    loader.W = W;
    loader.Cs = C;
    loader.Cg = Cg;
    loader.S = S;
    loader.dh = dilation_h;
    loader.dw = dilation_w;
    loader.init(x, w, tm * BM, tn * BN, g, M, Kg, P, Q, stride_h, stride_w, pad_h, pad_w, R * S * Cg);
    const int k_tiles = R * S * ((Cg + BK - 1) / BK);

    if constexpr (STAGES > 1) {
        if (threadIdx.x == 0)
            for (int s = 0; s < STAGES; ++s) {
                cc_mbarrier_init(&full[s], THREADS);
                cc_mbarrier_init(&empty[s], THREADS);
            }
        __syncthreads();   // the barriers are initialised before anyone uses them
    }

    CcWgmmaAcc<BN> acc;
#pragma unroll
    for (int i = 0; i < CcWgmmaAcc<BN>::REGS; ++i) acc[i] = 0.0f;
    const unsigned base = cc_smem_addr(smem);
    auto stage_a = [&](int s) { return smem + s * Sh::STAGE; };
    auto stage_b = [&](int s) { return smem + s * Sh::STAGE + Sh::A_STAGE; };
    // Descriptors of stage 0; stage s adds s·STAGE to the start address (field value s·STAGE/16,
    // no carry out of the 14-bit field: shared addresses stay below 256 KiB).
    const unsigned long long da0 = cc_wgmma_desc(base + warpgroup * 64 * 128, 16, 1024, 1);
    const unsigned long long db0 = cc_wgmma_desc(base + Sh::A_STAGE, 16, 1024, 1);
    auto desc_a = [&](int s) { return da0 + (unsigned)(s * (Sh::STAGE >> 4)); };
    auto desc_b = [&](int s) { return db0 + (unsigned)(s * (Sh::STAGE >> 4)); };

    if constexpr (STAGES == 1) {
        for (int kt = 0; kt < k_tiles; ++kt) {
            loader.load(stage_a(0), stage_b(0));
            cc_cp_async_wait_all();
            cc_fence_proxy_async_shared();
            __syncthreads();
            cc_wgmma_fence_operand(acc);
            cc_wgmma_fence();
            cc_wgmma_conv_tile<T, BN>(acc, da0, db0);
            cc_wgmma_commit();
            cc_wgmma_wait<0>();
            cc_wgmma_fence_operand(acc);
            __syncthreads();   // every warpgroup is done with the tile before it is overwritten
        }
    } else {
#pragma unroll
        for (int j = 0; j < STAGES - 2; ++j) {
            if (j < k_tiles) loader.load(stage_a(j), stage_b(j));
            cc_cp_async_commit();
        }
        int s = 0, phase = 0;               // stage and full-barrier parity of tile kt
        int ws = STAGES - 2, wround = 0;    // tile j = kt + STAGES - 2 = wround·STAGES + ws
        for (int kt = 0; kt < k_tiles; ++kt) {
            // (a) refill the stage whose previous tile (j - STAGES) every warpgroup has released
            const int j = kt + STAGES - 2;
            if (j < k_tiles) {
                if (wround > 0) cc_mbarrier_wait_parity(&empty[ws], (wround - 1) & 1);   // release of tile j - STAGES
                loader.load(stage_a(ws), stage_b(ws));
            }
            cc_cp_async_commit();
            // (b) this thread's copies of tile kt are complete: publish them to the async proxy
            cc_cp_async_wait<STAGES - 2>();
            cc_fence_proxy_async_shared();
            cc_mbarrier_arrive(&full[s]);
            // (c) everyone's copies of tile kt are visible: multiply
            cc_mbarrier_wait_parity(&full[s], phase);
            cc_wgmma_fence_operand(acc);
            cc_wgmma_fence();
            cc_wgmma_conv_tile<T, BN>(acc, desc_a(s), desc_b(s));
            cc_wgmma_commit();
            cc_wgmma_wait<1>();             // tile kt-1's wgmmas are complete
            cc_wgmma_fence_operand(acc);
            if (kt > 0) cc_mbarrier_arrive(&empty[s == 0 ? STAGES - 1 : s - 1]);
            if (++s == STAGES) {
                s = 0;
                phase ^= 1;
            }
            if (++ws == STAGES) {
                ws = 0;
                ++wround;
            }
        }
        cc_wgmma_wait<0>();
        cc_wgmma_fence_operand(acc);
        cc_cp_async_wait_all();             // only empty groups are left; no copy outlives the block
    }

    // Epilogue, in two steps. (1) Every thread puts its accumulators into shared memory (the
    // stages are free once every warpgroup's wgmmas and every copy are complete): thread (warp
    // wq of the warpgroup, lane 4gr + t) holds D[16wq + gr + 8((i >> 1) & 1)][8(i >> 2) + 2t + (i & 1)]
    // of its warpgroup's 64 x BN tile. (2) The block walks the BM x BN tile row by row (output
    // channels contiguous: coalesced NHWC stores) applying bias, residual and the activation.
    // Not a call per element as in tc_conv: a call anywhere in the kernel makes ptxas
    // serialize the wgmmas (each waits for the previous one); and not unrolled, so that the
    // compiler's unswitching on has_bias / has_residual / act copies a small loop.
    __syncthreads();
    float* const sacc = reinterpret_cast<float*>(smem);
    {
        const int lane = threadIdx.x & 31, wq = (threadIdx.x >> 5) & 3, gr = lane >> 2, t = lane & 3;
        const int row0 = warpgroup * 64 + 16 * wq + gr;
#pragma unroll
        for (int i = 0; i < CcWgmmaAcc<BN>::REGS; i += 2) {
            const int row = row0 + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * t;
            *reinterpret_cast<float2*>(sacc + row * Sh::ACC_LD + col) = make_float2(acc[i], acc[i + 1]);
        }
    }
    __syncthreads();
    const int PQ = P * Q;
#pragma unroll 1
    for (int e = threadIdx.x; e < BM * BN; e += THREADS) {
        const int row = e / BN, col = e - row * BN;
        const int m = tm * BM + row, n = tn * BN + col;
        if (m < M && n < Kg) {
            const int k = g * Kg + n;
            const cc_index_t idx = cc_tc_out_index(m, k, K, PQ, out_nchw);
            float v = sacc[row * Sh::ACC_LD + col];
            if (has_bias) v += TcType<T>::to_float(bias[k]);
            if (has_residual) v += TcType<T>::to_float(residual[idx]);
            // if-else, not cc_activate's switch: its jump table (BRX) hides the loop structure from
            // the SASS analysis
            if (act == CC_ACT_RELU) v = fmaxf(v, 0.0f);
            else if (act == CC_ACT_RELU6) v = fminf(fmaxf(v, 0.0f), 6.0f);
            else if (act == CC_ACT_SILU) v = v / (1.0f + expf(-v));
            out[idx] = TcType<T>::from_float(v);
        }
    }
}
