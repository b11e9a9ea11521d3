// regtile.cuh — the register-tile main loop of the SIMT GEMM-shaped kernels (gemm.cu,
// implicit_gemm.cu, conv_dgrad.cu, conv_wgrad.cu), written once with the operand gathers as a
// parameter.
//
// The block computes a BM×BN tile of D = A·B over a reduction split into steps of BK. Each
// thread keeps a TM×TN tile of accumulators (CcRegTile): its rows are runs of VM contiguous
// elements of the block tile, the runs THREADS_M·VM apart (columns likewise with VN,
// THREADS_N), so with VM = VN = 4 a float run is one 16-byte shared load and a quarter-warp
// reads 8 consecutive float4 (no bank conflict); V = 1 gives the strided tile of the double
// GEMM. Per reduction step the tile multiplies the shared tiles As[BK][A_PITCH] (A stored
// k-major, m contiguous) and Bs[BK][B_PITCH]: BK rank-1 updates, TM + TN shared loads for
// TM·TN FMAs each.
//
// Two pipelines move the operands from global to shared memory; the kernel's Loader (its
// gathers: where each element comes from, whether it exists) is the parameter:
//
//   cc_regtile_mainloop: two shared buffers, the next step's elements fetched into registers
//     while the current one is multiplied, then stored to the other buffer; one barrier per
//     step. Loader:
//       fetch()         this step's elements, global -> registers (0 where out of range)
//       advance(s)      to reduction step s (the previous one plus 1: a loader may keep its own
//                       incremental state instead of using s)
//       store(buf)      registers -> shared buffer buf (0 or 1)
//       a_tile(buf), b_tile(buf)  that buffer's As and Bs
//       consumed(buf)   after buffer buf's products, before it is refilled (wgrad sums its
//                       A tile there for the fused bias gradient; empty elsewhere)
//
//   cc_regtile_mainloop_async<STAGES>: STAGES shared stages filled by cp.async (sm_80+; below,
//     and in the emulator, through common.cuh's cc_cp_async_zfill and its fallbacks), the step
//     kt + STAGES − 1 issued while step kt is multiplied — no staging registers. Every
//     iteration issues its copies (those past the last step with src-size 0), so the loop is
//     one path; see the function. Loader:
//       copy(stage, live)  issue this step's cp.async into stage (0 .. STAGES−1); when !live
//                          every copy is zero-size (reads nothing)
//       advance(s)         to reduction step s, as above
//       a_tile(stage), b_tile(stage)  that stage's As and Bs
//       consumed(stage)    after that stage's products, before the next barrier (as above)
#pragma once
#include "common.cuh"

// Position of a thread's i-th row (or column) in the block tile: runs of V contiguous
// elements, the runs THREADS·V apart, thread t's run at t·V.
template <int V, int THREADS>
__device__ __forceinline__ int cc_regtile_pos(int i, int t) {
    return (i / V) * THREADS * V + t * V + i % V;
}

template <typename T, int TM, int TN, int VM, int VN, int THREADS_M, int THREADS_N>
struct CcRegTile {
    static_assert(TM % VM == 0 && TN % VN == 0, "the thread tile is whole runs");
    T acc[TM][TN];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
    }
    // Row (column) of the block tile that the thread's accumulator row i (column j) belongs to.
    __device__ __forceinline__ static int row(int i, int tm) { return cc_regtile_pos<VM, THREADS_M>(i, tm); }
    __device__ __forceinline__ static int col(int j, int tn) { return cc_regtile_pos<VN, THREADS_N>(j, tn); }

    // acc += As·Bs over the BK rows of one step.
    template <int BK, int A_PITCH, int B_PITCH>
    __device__ __forceinline__ void multiply(const T* As, const T* Bs, int tm, int tn) {
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            T a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[k * A_PITCH + row(i, tm)];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[k * B_PITCH + col(j, tn)];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = cc_fma(a[i], b[j], acc[i][j]);
        }
    }
};

// A Loader made of a kernel's lambdas (gathers that share the kernel's locals); each takes the
// argument of the method it stands for and may ignore it.
template <typename T, class Fetch, class Advance, class Store, class ATile, class BTile, class Consumed>
struct CcLambdaLoader {
    Fetch fetch_;
    Advance advance_;
    Store store_;
    ATile a_tile_;
    BTile b_tile_;
    Consumed consumed_;
    __device__ __forceinline__ void fetch() { fetch_(); }
    __device__ __forceinline__ void advance(int step) { advance_(step); }
    __device__ __forceinline__ void store(int buf) { store_(buf); }
    __device__ __forceinline__ const T* a_tile(int buf) { return a_tile_(buf); }
    __device__ __forceinline__ const T* b_tile(int buf) { return b_tile_(buf); }
    __device__ __forceinline__ void consumed(int buf) { consumed_(buf); }
};

template <typename T, class Fetch, class Advance, class Store, class ATile, class BTile, class Consumed>
__device__ __forceinline__ CcLambdaLoader<T, Fetch, Advance, Store, ATile, BTile, Consumed>
cc_lambda_loader(Fetch fetch, Advance advance, Store store, ATile a_tile, BTile b_tile, Consumed consumed) {
    return {fetch, advance, store, a_tile, b_tile, consumed};
}

// The same for cc_regtile_mainloop_async: copy(stage, live) instead of fetch and store.
template <typename T, class Copy, class Advance, class ATile, class BTile, class Consumed>
struct CcLambdaAsyncLoader {
    Copy copy_;
    Advance advance_;
    ATile a_tile_;
    BTile b_tile_;
    Consumed consumed_;
    __device__ __forceinline__ void copy(int stage, bool live) { copy_(stage, live); }
    __device__ __forceinline__ void advance(int step) { advance_(step); }
    __device__ __forceinline__ const T* a_tile(int stage) { return a_tile_(stage); }
    __device__ __forceinline__ const T* b_tile(int stage) { return b_tile_(stage); }
    __device__ __forceinline__ void consumed(int stage) { consumed_(stage); }
};

template <typename T, class Copy, class Advance, class ATile, class BTile, class Consumed>
__device__ __forceinline__ CcLambdaAsyncLoader<T, Copy, Advance, ATile, BTile, Consumed>
cc_lambda_async_loader(Copy copy, Advance advance, ATile a_tile, BTile b_tile, Consumed consumed) {
    return {copy, advance, a_tile, b_tile, consumed};
}

// Double buffering through registers (see the header). The barrier at the end of step s makes
// buffer s&1's stores visible and frees buffer (s−1)&1, which the next step's stores refill.
// NONEMPTY: the caller guarantees steps >= 1 (the prologue then needs no test). UNROLL: steps
// per loop iteration; with 2 each half knows its buffer at compile time (no buffer-offset
// arithmetic) and the loop control is shared by two steps — 3-9 % fewer issue slots per step
// on every tile (cuconv kernels --analyze), at a few registers more.
template <int BK, int A_PITCH, int B_PITCH, bool NONEMPTY = false, int UNROLL = 2, class Tile, class Loader>
__device__ __forceinline__ void cc_regtile_mainloop(Tile& tile, Loader& ld, int steps, int tm, int tn) {
    if (NONEMPTY || steps > 0) {
        ld.fetch();
        ld.store(0);
    }
    __syncthreads();
#pragma unroll UNROLL
    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1;
        const bool more = step + 1 < steps;
        if (more) {
            ld.advance(step + 1);
            ld.fetch();               // global loads in flight during the FMAs below
        }
        tile.template multiply<BK, A_PITCH, B_PITCH>(ld.a_tile(buf), ld.b_tile(buf), tm, tn);
        ld.consumed(buf);
        if (more) ld.store(buf ^ 1);  // the other buffer was last read before the previous barrier
        __syncthreads();
    }
}

// The cp.async pipeline (see the header). Step kt lives in stage kt % STAGES and is issued
// STAGES − 1 iterations before it is multiplied. One barrier per iteration does both jobs:
// after it (1) every thread's copies of step kt are complete and visible (each waited for its
// own: wait_group STAGES − 2) and (2) every thread has finished multiplying step kt − 1, whose
// stage the copies issued right after it refill. One commit per iteration, empty or not, keeps
// "STAGES − 2 groups in flight" exact. The copies past the last step are issued with live =
// false (zero-size: nothing read, a stage nobody reads again zeroed) instead of being skipped,
// so an iteration has no branch: the static analysis sees one path.
template <int STAGES, int BK, int A_PITCH, int B_PITCH, class Tile, class Loader>
__device__ __forceinline__ void cc_regtile_mainloop_async(Tile& tile, Loader& ld, int steps, int tm, int tn) {
    static_assert(STAGES >= 2, "the pipeline needs at least two stages");
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; ++s) {
        ld.copy(s, s < steps);
        cc_cp_async_commit();
        ld.advance(s + 1);
    }
    int read_stage = 0, write_stage = STAGES - 1;
#pragma unroll 1
    for (int kt = 0; kt < steps; ++kt) {
        cc_cp_async_wait<STAGES - 2>();
        __syncthreads();
        ld.copy(write_stage, kt + STAGES - 1 < steps);
        cc_cp_async_commit();
        ld.advance(kt + STAGES);
        tile.template multiply<BK, A_PITCH, B_PITCH>(ld.a_tile(read_stage), ld.b_tile(read_stage), tm, tn);
        ld.consumed(read_stage);
        read_stage = read_stage + 1 == STAGES ? 0 : read_stage + 1;
        write_stage = write_stage + 1 == STAGES ? 0 : write_stage + 1;
    }
    cc_cp_async_wait_all();   // only zero-size copies are left; none outlives the block
    __syncthreads();          // the caller may reuse the stages (an epilogue through shared memory)
}

// ------------------------------------------------------------------ convolution gathers, cp.async
// The operand gathers of an implicit-GEMM convolution for cc_regtile_mainloop_async: one path
// per step (CUTLASS's "optimized" iterator idea, written for this tile). The reduction walks
// (r < taps_r) × (s < S) × (chunks of BK of C reduction channels), chunks innermost. A: this
// thread's pixel (a_ptr: its address at the current tap and chunk) for channels
// c0 + a_k0 + j·A_K_STEP (a_j apart); B: channel c0 + b_kl of its filters (columns)
// n0 + b_n0 + j·B_N_STEP (b_j apart). Decoded once per thread:
//   * mask: bit r set iff the pixel's input row of tap row r is inside the image, bit 16 + s
//     iff its column of tap column s is (0 for a pixel past M): the padding test of a step is
//     two shifts and an AND (taps at most 16 each way; r passes taps_r − 1 only past the last
//     step, by at most STAGES − 1);
//   * b_n_left: how many of the block's filters from this thread's first one exist;
// and a step moves both addresses by one of three increments (next chunk, next tap column,
// next tap row) that depend only on the problem, chosen by selects, not branches. Copies
// outside the operands (padding, channel or filter tails, steps past the last) are zero-size
// cp.async: nothing read, zeros written. The kernel fills the addresses, strides and
// increments; init() the rest.
template <typename T, int BM, int BN, int BK, int THREADS, int STAGES>
struct CcConvAsyncLoader {
    static constexpr int A_LOADS = BM * BK / THREADS;
    static constexpr int B_LOADS = BN * BK / THREADS;
    static constexpr int A_K_STEP = THREADS / BM;
    static constexpr int B_N_STEP = THREADS / BK;
    static constexpr int A_PITCH = BM, B_PITCH = BN + 4;   // B: conflict-free k-fastest copies
    static constexpr int A_STAGE = BK * A_PITCH, B_STAGE = BK * B_PITCH;
    static constexpr int ELEMS = STAGES * (A_STAGE + B_STAGE);
    static constexpr int BYTES = (int)sizeof(T);
    static_assert(THREADS % BM == 0 && BK % A_K_STEP == 0, "A staging: each thread owns one pixel");
    static_assert(THREADS % BK == 0 && BN % B_N_STEP == 0, "B staging: each thread owns one channel");
    static_assert(STAGES <= 16, "r + STAGES stays below 32 in the tap mask's shifts");

    T* smem;                   // As[STAGES][BK][A_PITCH], then Bs[STAGES][BK][B_PITCH]
    const T* a_ptr;
    const T* b_ptr;
    cc_index_t a_j, a_inc_c, a_inc_s, a_inc_r;
    int b_j, b_inc_c, b_inc_s, b_inc_r;
    unsigned mask;
    int b_n_left;
    int a_dst, b_dst;          // this thread's first element in an A / B stage
    int a_c_limit, b_c_limit;  // channel j of this thread is in chunk c0 iff c0 + j·step < limit
    CcTapWalk at;
    int C, S;

    __device__ __forceinline__ void init(T* shared, int channels, int taps_s, int filters_left) {
        const int tid = threadIdx.x;
        smem = shared;
        C = channels;
        S = taps_s;
        at = CcTapWalk{0, 0, 0, false, false};
        mask = 0;
        b_n_left = filters_left;
        a_dst = tid;                                   // (a_k0, a_ml) = (tid / BM, tid % BM)
        b_dst = (tid % BK) * B_PITCH + tid / BK;
        a_c_limit = channels - tid / BM;
        b_c_limit = channels - tid % BK;
    }
    __device__ __forceinline__ void set_row_valid(int tap_r, bool ok) { mask |= (unsigned)ok << tap_r; }
    __device__ __forceinline__ void set_col_valid(int tap_s, bool ok) { mask |= (unsigned)ok << (16 + tap_s); }

    __device__ __forceinline__ void copy(int stage, bool live) {
        const bool pix = live && ((mask >> at.r) & (mask >> (16 + at.s)) & 1u);
        T* const as = smem + stage * A_STAGE + a_dst;
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j) {
            const bool ok = pix && at.c0 + j * A_K_STEP < a_c_limit;
            cc_cp_async_zfill<BYTES>(as + j * A_K_STEP * A_PITCH, a_ptr + j * a_j, ok ? BYTES : 0);
        }
        const bool cb = live && at.c0 < b_c_limit;
        T* const bs = smem + STAGES * A_STAGE + stage * B_STAGE + b_dst;
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) {
            const bool ok = cb && j * B_N_STEP < b_n_left;
            cc_cp_async_zfill<BYTES>(bs + j * B_N_STEP, b_ptr + j * b_j, ok ? BYTES : 0);
        }
    }
    __device__ __forceinline__ void advance(int) {
        at.step(BK, C, S);
        a_ptr += at.pick(a_inc_c, a_inc_s, a_inc_r);
        b_ptr += at.pick(b_inc_c, b_inc_s, b_inc_r);
    }
    __device__ __forceinline__ const T* a_tile(int stage) const { return smem + stage * A_STAGE; }
    __device__ __forceinline__ const T* b_tile(int stage) const { return smem + STAGES * A_STAGE + stage * B_STAGE; }
    __device__ __forceinline__ void consumed(int) const {}
};
