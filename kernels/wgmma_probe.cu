// wgmma_probe.cu — probes of the wgmma / mbarrier / async-proxy layer of common.cuh, used by
// tests/test_wgmma_probe.py (ops/wgmma_probe.py) on the emulator and, on an sm_90 device, on
// the GPU. Each probe runs one primitive on raw bytes so that the host can check it against the
// PTX ISA's definitions bit for bit:
//   * wgmma_probe_mma: the host lays A and B out in a shared-memory image by its own reading of
//     the canonical layouts and passes the two descriptors (start addresses relative to the
//     image); one warpgroup loads C from c[thread][i], runs one m64nNk16 wgmma, stores D the same
//     way. kind: bit 0 bf16, bit 1 N = 128 (else 64), bit 2 A M-major, bit 3 B N-major.
//     fill: 0 plain stores + fence.proxy.async, 1 cp.async + wait + fence.proxy.async.
//     Planted bugs (bug != 0, emulator only; each must be reported as a fault):
//       fill 2: cp.async + wait, no fence.proxy.async;  fill 3: cp.async, no wait;
//       bug 1: D read before wgmma.wait_group;  bug 2: no wgmma.fence;
//       bug 3: the A operand overwritten before the wait;  bug 4: warp 1 gives another descriptor;
//       bug 5: no commit_group before the wait;  bug 6: D written between wgmma.fence and the wgmma.
//   * wgmma_probe_mbarrier: arrive/wait over two phases; bug 1: one thread never arrives,
//     bug 2: no mbarrier.init.
// Runtime switches instead of template parameters: one module serves every case.
#include "common.cuh"

template <bool BF16, int N, int TA, int TB>
__device__ void wgmma_probe_run(int fill, int bug, const unsigned char* __restrict__ image, int image_bytes,
                                unsigned long long desc_a, unsigned long long desc_b, int scale_d,
                                const float* __restrict__ c, float* __restrict__ d) {
    extern __shared__ __align__(1024) unsigned char wg_probe_smem[];
    // The image starts at a 1024-byte boundary of the shared window, where the host's
    // descriptors assume the swizzle patterns start.
    unsigned char* const img = wg_probe_smem + ((1024u - (cc_smem_addr(wg_probe_smem) & 1023u)) & 1023u);
    const unsigned base = cc_smem_addr(img);
    const int tid = threadIdx.x;
    if (fill == 0) {
        for (int i = tid * 16; i < image_bytes; i += 128 * 16)
            *reinterpret_cast<uint4*>(img + i) = *reinterpret_cast<const uint4*>(image + i);
    } else {
        for (int i = tid * 16; i < image_bytes; i += 128 * 16) cc_cp_async_zfill<16>(img + i, image + i, 16);
        cc_cp_async_commit();
        if (fill != 3) cc_cp_async_wait<0>();
    }
    if (fill != 2 && fill != 3) cc_fence_proxy_async_shared();
    __syncthreads();
    const unsigned long long da = desc_a + ((base & 0x3ffffu) >> 4) + (bug == 4 && tid >= 32 && tid < 64 ? 2 : 0);
    const unsigned long long db = desc_b + ((base & 0x3ffffu) >> 4);

    CcWgmmaAcc<N> acc;
    for (int i = 0; i < N / 2; ++i) acc[i] = c[tid * (N / 2) + i];
    cc_wgmma_fence_operand(acc);
    if (bug != 2) cc_wgmma_fence();
    if (bug == 6) acc[0] = 0.0f;
    cc_wgmma_m64k16<BF16, N, TA, TB>(acc, da, db, scale_d);
    if (bug != 5) cc_wgmma_commit();
    if (bug == 1) d[tid * (N / 2)] = acc[0];
    if (bug == 3 && tid == 0) img[0] ^= 0x40;
    cc_wgmma_wait<0>();
    cc_wgmma_fence_operand(acc);
    for (int i = 0; i < N / 2; ++i) d[tid * (N / 2) + i] = acc[i];
    if (fill == 3) cc_cp_async_wait_all();
}

extern "C" __global__ void __launch_bounds__(128) wgmma_probe_mma(int kind, int fill, int bug,
                                                                  const unsigned char* __restrict__ image,
                                                                  int image_bytes, unsigned long long desc_a,
                                                                  unsigned long long desc_b, int scale_d,
                                                                  const float* __restrict__ c, float* __restrict__ d) {
#define CC_PROBE_CASE(K, BF, NN, TA, TB) \
    case K: wgmma_probe_run<BF, NN, TA, TB>(fill, bug, image, image_bytes, desc_a, desc_b, scale_d, c, d); break;
    switch (kind) {
        CC_PROBE_CASE(0, false, 64, 0, 0) CC_PROBE_CASE(1, true, 64, 0, 0)
        CC_PROBE_CASE(2, false, 128, 0, 0) CC_PROBE_CASE(3, true, 128, 0, 0)
        CC_PROBE_CASE(4, false, 64, 1, 0) CC_PROBE_CASE(5, true, 64, 1, 0)
        CC_PROBE_CASE(6, false, 128, 1, 0) CC_PROBE_CASE(7, true, 128, 1, 0)
        CC_PROBE_CASE(8, false, 64, 0, 1) CC_PROBE_CASE(9, true, 64, 0, 1)
        CC_PROBE_CASE(10, false, 128, 0, 1) CC_PROBE_CASE(11, true, 128, 0, 1)
        CC_PROBE_CASE(12, false, 64, 1, 1) CC_PROBE_CASE(13, true, 64, 1, 1)
        CC_PROBE_CASE(14, false, 128, 1, 1) CC_PROBE_CASE(15, true, 128, 1, 1)
        default: break;
    }
#undef CC_PROBE_CASE
}

// out[tid] = 1 + (phases this thread saw complete); two phases, 128 arrivals each.
extern "C" __global__ void __launch_bounds__(128) wgmma_probe_mbarrier(int bug, int* __restrict__ out) {
    extern __shared__ __align__(16) unsigned long long wg_probe_bar[];
    const int tid = threadIdx.x;
    if (tid == 0 && bug != 2) cc_mbarrier_init(&wg_probe_bar[0], 128);
    __syncthreads();
    int seen = 1;
    for (int phase = 0; phase < 2; ++phase) {
        if (!(bug == 1 && tid == 5)) cc_mbarrier_arrive(&wg_probe_bar[0]);
        cc_mbarrier_wait_parity(&wg_probe_bar[0], phase);
        ++seen;
    }
    out[tid] = seen;
}

// One TMA load (cp.async.bulk.tensor.4d, tiled or im2col) of `map` into shared memory, completed
// through an mbarrier's transaction count, then copied byte for byte to out[0 .. bytes): the
// host checks the bytes against its own model of the tensor map. coord = (c0, c1, c2, c3);
// im2col offsets (off_w, off_h). Thread 0 inits the barrier (count 1), fences the init for the
// async proxy, expects `bytes` and issues the load; every thread waits for phase 0.
// Planted bugs (emulator only): 1 no fence.mbarrier_init; 2 a second load into the same
// destination before the wait; 3 expect 16 bytes more than the load brings (the phase never
// completes); 4 no expect-tx (the phase completes on the arrival alone: the bytes are read
// before the load lands).
extern "C" __global__ void __launch_bounds__(128) wgmma_probe_tma(const __grid_constant__ CcTensorMap map, int im2col,
                                                                  int c0, int c1, int c2, int c3, int off_w,
                                                                  int off_h, int bytes, int bug,
                                                                  unsigned char* __restrict__ out) {
    extern __shared__ __align__(1024) unsigned char wg_probe_tma_smem[];
    // The box starts at a 1024-byte boundary of the shared window (the 128-byte swizzle's period).
    unsigned char* const box = wg_probe_tma_smem + ((1024u - (cc_smem_addr(wg_probe_tma_smem) & 1023u)) & 1023u);
    unsigned long long* const bar = reinterpret_cast<unsigned long long*>(box + ((bytes + 1023) & ~1023));
    const int tid = threadIdx.x;
    if (tid == 0) {
        cc_mbarrier_init(bar, 1);
        if (bug != 1) cc_fence_mbarrier_init();
    }
    __syncthreads();
    if (tid == 0) {
        if (bug == 4) cc_mbarrier_arrive(bar);
        else cc_mbarrier_arrive_expect_tx(bar, bytes + (bug == 3 ? 16 : 0));
        for (int k = 0; k < (bug == 2 ? 2 : 1); ++k) {
            if (im2col)
                cc_tma_load_im2col_4d(box, &map, bar, c0, c1, c2, c3, (unsigned short)off_w, (unsigned short)off_h);
            else
                cc_tma_load_tile_4d(box, &map, bar, c0, c1, c2, c3);
        }
    }
    cc_mbarrier_wait_parity(bar, 0);
    for (int i = tid * 16; i < bytes; i += 128 * 16)
        *reinterpret_cast<uint4*>(out + i) = *reinterpret_cast<const uint4*>(box + i);
}
