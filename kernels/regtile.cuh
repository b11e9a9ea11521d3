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
// The pipeline moves the operands from global to shared memory; the kernel's Loader (its
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
