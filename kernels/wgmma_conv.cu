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
// Variants, simplest first (1-2 are wgmma_conv<T, BM, BN, STAGES, MINB>, 3 is wgmma_conv_tma<T, STAGES>):
// 1. STAGES == 1 ("synchronous"): per K tile every thread cp.async-copies its part of the A and
//    B tiles (WgmmaConvLoader: 16-byte copies of 8 channels, zero fill for padding and partial
//    tiles), waits, fence.proxy.async, __syncthreads; each warpgroup issues 4 wgmma (k = 16
//    each), commits and waits. No overlap of copies and math; the reference for variant 2.
// 2. STAGES >= 3 adds a ring of STAGES shared-memory stages with a "full" and an "empty"
//    mbarrier each: tile j is copied STAGES - 2 iterations before it is used, wgmma.wait_group 1
//    keeps one tile's wgmmas in flight while the next copies are issued, and the warpgroups
//    drift apart by up to a stage instead of meeting at a __syncthreads every tile.
// 3. wgmma_conv_tma: warp-specialized and persistent. A producer warpgroup (one thread) loads
//    each K tile with two TMA loads (cp.async.bulk.tensor) -- A in im2col mode (the tensor map's
//    bounding box does the padding, stride and dilation arithmetic and the zero fill), B in
//    tiled mode -- into a 7-stage ring, completion counted in bytes on the stage's mbarrier
//    (expect_tx/complete_tx); two consumer warpgroups take 128x128 tiles in turn (ping-pong), 8
//    wgmma per wait from uniform-register descriptors, and store their epilogue from registers
//    while the other's main loop runs; setmaxnreg moves registers from producer to consumers.
//    The main loop has no address arithmetic and no copies. The tensor maps come from the host
//    (cuconv/tensor_map.py: the driver's encoder on the GPU, the emulator's own on the CPU).
//
// Shared memory: A tile BM rows x 64 channels and B tile BN rows x 64 channels, both K-major in
// the 128-byte swizzled layout (16-byte chunk c of row r at (c ^ r % 8)·16, Swizzle<3,4,3>),
// which the loader / TMA writes (cc_tc_smem_offset<128>) and the descriptors (swizzle mode 1,
// stride byte offset 1024) describe; stages 1024-byte aligned. Warpgroup g multiplies rows
// 64g..64g+63 of A by all BN columns of B: one m64nBNk16 wgmma per 16 channels.
//
// Configs (smem = STAGES·(BM + BN)·128 B + 1 KiB alignment + the barriers): 128x128x64_tma_s7
// (variant 3, 3 warpgroups, 1 block/SM), 128x128x64_s4 (2 warpgroups, 1 block/SM), 64x128x64_s4
// (2 blocks/SM, small M), 64x64x64_s3 (4 blocks/SM, small M·K, emulator tests), 64x64x64_s1
// (variant 1). The ring's protocol step by step: docs/kernel_design.md#wgmma_convcu and
// docs/wgmma.md. Registers, spills and the issue ceiling: `cuconv kernels --analyze --arch
// sm_90a --file wgmma_conv.cu` (docs/kernel_figures.md).
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
            out[idx] = TcType<T>::from_float(cc_activate(v, act));   // common.cuh's activation (NaN rules)
        }
    }
}

// ================================================================== variant 3: warp-specialized TMA
// wgmma_conv_tma<T, STAGES>: 3 warpgroups (384 threads), persistent, one 128 x 128 tile per
// consumer warpgroup at a time (ping-pong):
//   * warpgroup 0, the producer, gives registers away (setmaxnreg.dec 40); one thread walks
//     the block's tiles (tile = blockIdx.x, + gridDim.x, ...) and their K tiles (r, s, c0) and,
//     per K tile: waits "empty" of the ring stage, arrive.expect_tx(32 KiB) on its "full"
//     barrier, and issues two TMA loads: the 128 x 64 A tile in im2col mode (128 output pixels
//     along the map's bounding box, 64 channels each, read at the tap's offsets (s·dw, r·dh);
//     padding, rows past M and channels past C come back as zeros) and the 128 x 64 B tile in
//     tiled mode (filters n0.., channels c0.. of tap (r, s) of the KRSC weights). Both land
//     128-byte swizzled, the layout the wgmma descriptors describe.
//   * warpgroups 1 and 2, the consumers (setmaxnreg.inc 232), take the block's tiles in turn
//     (j = 0, 2, 4, ... and 1, 3, 5, ...). Per K tile: wait "full", wgmma.fence, 8 wgmma
//     m64n128k16 (two 64-row halves x four 16-channel steps), commit, wait_group 1 (the
//     previous K tile's wgmmas are complete) and release that K tile's stage ("empty", 128
//     arrivals). After its main loop a consumer lets the other start its next tile ("order"
//     barriers: the ring's stages are consumed in the producer's order, and a consumer never
//     waits on a stage more than one phase ahead of it) and runs the epilogue — bias,
//     residual, activation (cc_activate), stores straight from the accumulator registers —
//     while the other consumer's main loop keeps the tensor cores busy.
// Shared memory: STAGES x 32 KiB + the barriers; 7 stages fit in 227 KiB.
template <int STAGES>
struct WgmmaTmaShape {
    static constexpr int BM = 128, BN = 128, BK = 64, THREADS = 384;
    static constexpr int A_STAGE = BM * 128, B_STAGE = BN * 128, STAGE = A_STAGE + B_STAGE;
    static constexpr int BARRIERS = 2 * STAGES + 2;
    static constexpr int SMEM = 1024 + STAGES * STAGE + 8 * BARRIERS;
    static constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
};

// The tile `tile` of the persistent walk: group g, M tile tm, N tile tn (bands of 8 M tiles
// walked N tile by N tile, as the other variants).
__device__ __forceinline__ void cc_wgmma_tile_coords(int tile, int tiles_m, int tiles_n, int& g, int& tm, int& tn) {
    const int per_group = tiles_m * tiles_n;
    g = tile / per_group;
    const int id = tile - g * per_group;
    const int band = id / (8 * tiles_n), first = band * 8, rows = min(tiles_m - first, 8);
    const int in_band = id - band * 8 * tiles_n;
    tm = first + in_band % rows;
    tn = in_band / rows;
}

// The ring (dynamic shared memory, at namespace scope so that the consumers can take its address
// as a symbol: CC_SHARED_SYMBOL_ADDR).
extern __shared__ __align__(1024) unsigned char cc_wg_tma_smem[];

// What both consumer warpgroups need (kernel arguments and derived sizes).
template <typename T>
struct WgmmaTmaArgs {
    const T* __restrict__ bias;
    const T* __restrict__ residual;
    T* __restrict__ out;
    int has_bias, has_residual, act, out_nchw;
    int M, PQ, K, Kg, tiles_m, tiles_n, tiles, k_tiles;
};

// The fused epilogue of a consumer's 128 x 128 tile, from the registers: thread (warp wq of the
// warpgroup, lane 4·gr + t) holds D[64h + 16wq + gr + 8((i >> 1) & 1)][8(i >> 2) + 2t + (i & 1)]
// in register i of acc<h>. Sixteen passes of 8 columns-pairs: each stores registers 0-3 of both
// halves (rows r, r + 8, r + 64, r + 72; columns c, c + 1) and shifts the registers down by four,
// so the code is one pass long and every register index a constant (no local memory). Rows
// past M and columns past K/groups are not stored.
template <typename T>
__device__ __forceinline__ void cc_wgmma_tma_epilogue(CcWgmmaAcc<128>& acc0, CcWgmmaAcc<128>& acc1, int tile,
                                                      const WgmmaTmaArgs<T>& a) {
    int g, tm, tn;
    cc_wgmma_tile_coords(tile, a.tiles_m, a.tiles_n, g, tm, tn);
    const int lane = threadIdx.x & 31;
    const int row0 = tm * 128 + 16 * ((threadIdx.x >> 5) & 3) + (lane >> 2);
    int n = tn * 128 + 2 * (lane & 3);
    int flags = a.has_bias | a.has_residual << 1 | a.act << 2;
#pragma unroll 1
    for (int pass = 0; pass < 16; ++pass, n += 8) {
        // The flags pass through a shuffle each pass, so the compiler cannot unswitch the loop on
        // them (16 copies of it, one per combination, made the kernel ~15k instructions long).
        flags = __shfl_sync(0xffffffffu, flags, lane);
        const int has_bias = flags & 1, has_residual = flags & 2, act = flags >> 2;
        float v[8] = {acc0[0], acc0[1], acc0[2], acc0[3], acc1[0], acc1[1], acc1[2], acc1[3]};
#pragma unroll
        for (int i = 0; i < CcWgmmaAcc<128>::REGS - 4; ++i) {
            acc0[i] = acc0[i + 4];
            acc1[i] = acc1[i + 4];
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int m = row0 + 64 * (e >> 2) + 8 * ((e >> 1) & 1), col = n + (e & 1);
            if (m < a.M && col < a.Kg) {
                const int k = g * a.Kg + col;
                const cc_index_t idx = cc_tc_out_index(m, k, a.K, a.PQ, a.out_nchw);
                float y = v[e];
                if (has_bias) y += TcType<T>::to_float(a.bias[k]);
                if (has_residual) y += TcType<T>::to_float(a.residual[idx]);
                a.out[idx] = TcType<T>::from_float(cc_activate(y, act));
            }
        }
    }
}

// A wgmma descriptor from its two 32-bit halves: the high half (stride-dimension offset 1024,
// 128-byte swizzle) is the same for every tile, so the main loop adds only to the low half
// (start address >> 4, leading-dimension offset).
__device__ __forceinline__ unsigned long long cc_wgmma_desc_of(unsigned lo) {
    return (static_cast<unsigned long long>((1024u >> 4) | (1u << 30)) << 32) | lo;
}

// Consumer warpgroup ME (0 or 1) of wgmma_conv_tma: its tiles j = ME, ME + 2, ... of the block's
// walk. A template on ME so that everything the main loop computes (stage, phase, descriptors)
// is warp-uniform to the compiler and lives in uniform registers.
template <typename T, int STAGES, int ME>
__device__ __forceinline__ void cc_wgmma_tma_consumer(unsigned char* smem, unsigned long long* full,
                                                      unsigned long long* empty, unsigned long long* order,
                                                      const WgmmaTmaArgs<T>& a) {
    using Sh = WgmmaTmaShape<STAGES>;
    // Low descriptor halves of stage 0: start address >> 4, leading-dimension offset 16 >> 4
    // (the same address as smem, from the symbol: a constant to ptxas).
    CC_SHARED_SYMBOL_ADDR(raw, cc_wg_tma_smem);
    const unsigned lo_a0 = (((raw + ((1024u - (raw & 1023u)) & 1023u)) & 0x3ffffu) >> 4) | (1u << 16);
    const unsigned lo_b0 = lo_a0 + (Sh::A_STAGE >> 4);
    int turn = 0;   // waits on order[ME] so far
    for (int j = ME; blockIdx.x + j * gridDim.x < a.tiles; j += 2) {
        const int tile = blockIdx.x + j * gridDim.x;
        if (j > 0) cc_mbarrier_wait_parity(&order[ME], (turn++) & 1);   // the other consumer's main loop of tile j-1 is done
        const long long pos = (long long)j * a.k_tiles;
        int stage = (int)(pos % STAGES), phase = (int)((pos / STAGES) & 1);
        CcWgmmaAcc<128> acc0, acc1;
#pragma unroll
        for (int i = 0; i < CcWgmmaAcc<128>::REGS; ++i) {
            acc0[i] = 0.0f;
            acc1[i] = 0.0f;
        }
        int prev = stage;
        for (int kt = 0; kt < a.k_tiles; ++kt) {
            cc_mbarrier_wait_parity(&full[stage], phase);
            const unsigned lo_a = lo_a0 + stage * (Sh::STAGE >> 4), lo_b = lo_b0 + stage * (Sh::STAGE >> 4);
            cc_wgmma_fence_operand(acc0);
            cc_wgmma_fence_operand(acc1);
            cc_wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {   // 16 channels = 32 bytes = 2 in the address field
                const unsigned long long db = cc_wgmma_desc_of(lo_b + 2 * ks);
                cc_wgmma_m64k16<WgType<T>::BF16, 128>(acc0, cc_wgmma_desc_of(lo_a + 2 * ks), db, 1);
                cc_wgmma_m64k16<WgType<T>::BF16, 128>(acc1, cc_wgmma_desc_of(lo_a + (Sh::A_STAGE / 2 >> 4) + 2 * ks),
                                                      db, 1);
            }
            cc_wgmma_commit();
            cc_wgmma_wait<1>();                   // K tile kt-1's wgmmas are complete: release its stage
            cc_wgmma_fence_operand(acc0);
            cc_wgmma_fence_operand(acc1);
            if (kt > 0) cc_mbarrier_arrive(&empty[prev]);
            prev = stage;
            if (++stage == STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
        cc_mbarrier_arrive(&order[1 - ME]);       // every stage of this tile was waited for: the other may go on
        cc_wgmma_wait<0>();
        cc_wgmma_fence_operand(acc0);
        cc_wgmma_fence_operand(acc1);
        cc_mbarrier_arrive(&empty[prev]);
        cc_wgmma_tma_epilogue(acc0, acc1, tile, a);   // overlaps the other consumer's main loop
    }
}

template <typename T, int STAGES>
__global__ void __launch_bounds__(384, 1)
    wgmma_conv_tma(const __grid_constant__ CcTensorMap map_x, const __grid_constant__ CcTensorMap map_w,
                   const T* __restrict__ bias, int has_bias, const T* __restrict__ residual, int has_residual,
                   T* __restrict__ out, int N, int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h,
                   int pad_w, int dilation_h, int dilation_w, int groups, int Cg, int act, int out_nchw) {
    using Sh = WgmmaTmaShape<STAGES>;
    unsigned char* const smem = cc_wg_tma_smem + ((1024u - (cc_smem_addr(cc_wg_tma_smem) & 1023u)) & 1023u);
    unsigned long long* const full = reinterpret_cast<unsigned long long*>(smem + STAGES * Sh::STAGE);
    unsigned long long* const empty = full + STAGES;
    unsigned long long* const order = empty + STAGES;   // order[w]: consumer w may start its next tile

    const int PQ = P * Q, M = N * PQ, Kg = K / groups;
    const int tiles_m = (M + Sh::BM - 1) / Sh::BM, tiles_n = (Kg + Sh::BN - 1) / Sh::BN;
    const WgmmaTmaArgs<T> a{bias, residual, out, has_bias, has_residual, act, out_nchw, M, PQ, K, Kg, tiles_m, tiles_n,
                            groups * tiles_m * tiles_n, R * S * ((Cg + Sh::BK - 1) / Sh::BK)};

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            cc_mbarrier_init(&full[s], 1);        // the producer's arrive.expect_tx + the TMA bytes
            cc_mbarrier_init(&empty[s], 128);     // every thread of the consuming warpgroup
        }
        cc_mbarrier_init(&order[0], 128);
        cc_mbarrier_init(&order[1], 128);
        cc_fence_mbarrier_init();                 // the inits are visible to the TMA unit (async proxy)
    }
    __syncthreads();

    // Broadcast from lane 0: the compiler then knows the warpgroup index is warp-uniform, and the
    // consumers' main loop (stage, phase, descriptors) can live in uniform registers.
    const int warpgroup = __shfl_sync(0xffffffffu, (int)(threadIdx.x >> 7), 0);
    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        cc_setmaxnreg<Sh::PRODUCER_REGS, false>();
        if (threadIdx.x != 0) return;
        int stage = 0, round = 0;
        for (int tile = blockIdx.x; tile < a.tiles; tile += gridDim.x) {
            int g, tm, tn;
            cc_wgmma_tile_coords(tile, a.tiles_m, a.tiles_n, g, tm, tn);
            const int m0 = tm * Sh::BM, img = m0 / a.PQ, pq = m0 - img * a.PQ, p0 = pq / Q, q0 = pq - p0 * Q;
            const int w0 = q0 * stride_w - pad_w, h0 = p0 * stride_h - pad_h, n0 = g * a.Kg + tn * Sh::BN;
            int r = 0, s = 0, c0 = 0;
            for (int kt = 0; kt < a.k_tiles; ++kt) {
                cc_mbarrier_wait_parity(&empty[stage], (round & 1) ^ 1);   // round 0 passes: nothing to release
                unsigned char* const sa = smem + stage * Sh::STAGE;
                cc_mbarrier_arrive_expect_tx(&full[stage], Sh::STAGE);
                cc_tma_load_im2col_4d(sa, &map_x, &full[stage], g * Cg + c0, w0, h0, img,
                                      (unsigned short)(s * dilation_w), (unsigned short)(r * dilation_h));
                cc_tma_load_tile_4d(sa + Sh::A_STAGE, &map_w, &full[stage], c0, s, r, n0);
                c0 += Sh::BK;
                if (c0 >= Cg) {
                    c0 = 0;
                    if (++s == S) {
                        s = 0;
                        ++r;
                    }
                }
                if (++stage == STAGES) {
                    stage = 0;
                    ++round;
                }
            }
        }
        return;
    }
    // -------------------------------------------------------------------- consumers
    cc_setmaxnreg<Sh::CONSUMER_REGS, true>();
    if (warpgroup == 1) cc_wgmma_tma_consumer<T, STAGES, 0>(smem, full, empty, order, a);
    else cc_wgmma_tma_consumer<T, STAGES, 1>(smem, full, empty, order, a);
}
