// tc_probe.cu — probes of the tensor-core portability layer (common.cuh), used by
// tests/test_tc_layouts.py on the emulator and, when a device is lent, on the GPU. Each probe
// runs one primitive on raw registers or raw bytes so that the host can check every
// (lane, register, half) against the PTX ISA's tables bit for bit:
//   * tc_probe_mma: each lane loads its A/B/C registers from arrays laid out [warp][lane][reg],
//     runs one mma (kind 0: m16n8k16 f16, 1: m16n8k16 bf16, 2: m16n8k8 f16, 3: m16n8k8 tf32),
//     stores D the same way; one warp per test case (the one-hot probes run 256 at once);
//   * tc_probe_ldmatrix: shared memory filled with coded 16-bit values, every lane points at a
//     row of its choice, the raw registers come back;
//   * tc_probe_cvt_tf32: cvt.rna.tf32.f32 bit patterns;
//   * tc_probe_cp_async: zero fill for every src-size, and group completion order;
//   * tc_probe_pipeline: a two-stage cp.async pipeline with optional planted bugs (read before
//     the wait, no barrier after the wait, refill before everyone has read) that the emulator's
//     deferred copies must turn into NaN.
// Runtime switches instead of template parameters: one compiled module serves every case.
#include "common.cuh"

extern "C" __global__ void tc_probe_mma(int kind, const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                                        const float* __restrict__ c, float* __restrict__ d) {
    const cc_index_t lane = blockIdx.x * 32ll + (threadIdx.x & 31);
    unsigned ar[4], br[2];
    float cr[4], dr[4];
    for (int j = 0; j < 4; ++j) ar[j] = a[lane * 4 + j];
    for (int j = 0; j < 2; ++j) br[j] = b[lane * 2 + j];
    for (int j = 0; j < 4; ++j) cr[j] = c[lane * 4 + j];
    // `kind` is the same for every lane: the mma below is never divergent — except for
    // kind -1, a planted bug (only lanes 0-15 reach the mma) the emulator must report.
    if (kind < 0) {
        for (int j = 0; j < 4; ++j) dr[j] = cr[j];
        if ((threadIdx.x & 31) < 16) cc_mma_m16n8k16_f16(dr, ar, br, cr);
    } else if (kind == 0) cc_mma_m16n8k16_f16(dr, ar, br, cr);
    else if (kind == 1) cc_mma_m16n8k16_bf16(dr, ar, br, cr);
    else if (kind == 2) cc_mma_m16n8k8_f16(dr, ar, br, cr);
    else cc_mma_m16n8k8_tf32(dr, ar, br, cr);
    for (int j = 0; j < 4; ++j) d[lane * 4 + j] = dr[j];
}

// src: n_src 16-bit words copied to shared memory; lane l passes &smem[row_off[l]].
extern "C" __global__ void tc_probe_ldmatrix(int num, int trans, const unsigned short* __restrict__ src, int n_src,
                                             const int* __restrict__ row_off, unsigned* __restrict__ out) {
    __shared__ __align__(16) unsigned short smem[4096];
    const int lane = threadIdx.x & 31;
    for (int i = lane; i < 4096; i += 32) smem[i] = i < n_src ? src[i] : 0;
    __syncthreads();
    const unsigned short* row = smem + row_off[lane];
    unsigned r[4] = {0u, 0u, 0u, 0u};
    if (num == 1 && !trans) { unsigned x[1]; cc_ldmatrix<1, false>(x, row); r[0] = x[0]; }
    if (num == 1 && trans) { unsigned x[1]; cc_ldmatrix<1, true>(x, row); r[0] = x[0]; }
    if (num == 2 && !trans) { unsigned x[2]; cc_ldmatrix<2, false>(x, row); r[0] = x[0]; r[1] = x[1]; }
    if (num == 2 && trans) { unsigned x[2]; cc_ldmatrix<2, true>(x, row); r[0] = x[0]; r[1] = x[1]; }
    if (num == 4 && !trans) { unsigned x[4]; cc_ldmatrix<4, false>(x, row); for (int j = 0; j < 4; ++j) r[j] = x[j]; }
    if (num == 4 && trans) { unsigned x[4]; cc_ldmatrix<4, true>(x, row); for (int j = 0; j < 4; ++j) r[j] = x[j]; }
    for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

extern "C" __global__ void tc_probe_cvt_tf32(const float* __restrict__ in, unsigned* __restrict__ out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = cc_cvt_tf32(in[i]);
}

// mode 0 (zero fill): thread i copies `bytes` bytes into shared slot i (16 bytes, pre-filled with
//   0xAB) from src + i·16 with src_bytes[i]; src_bytes[i] == 0 passes src_end (one past the end
//   of src, never read); wait_all; out[i·16 ..] = the slot.
// mode 1 (groups): thread i issues three groups of one copy each (slots 3i, 3i+1, 3i+2 from
//   src + (3i+j)·16, full size), waits with wait_group 1 and copies out every slot: the first
//   two are complete, the third may still be pending (in the emulator's deferred mode it
//   still holds the 0xFF poison), then wait_all.
extern "C" __global__ void tc_probe_cp_async(int mode, int bytes, const unsigned char* __restrict__ src,
                                             const unsigned char* src_end, const int* __restrict__ src_bytes,
                                             unsigned char* __restrict__ out) {
    __shared__ __align__(16) unsigned char slots[3 * 32 * 16];
    const int i = threadIdx.x;
    for (int j = 0; j < 3 * 16; ++j) slots[i * 48 + j] = 0xAB;
    __syncthreads();
    if (mode == 0) {
        unsigned char* dst = slots + i * 16;
        const int n = src_bytes[i];
        const unsigned char* s = n == 0 ? src_end : src + i * 16;
        if (bytes == 4) cc_cp_async_zfill<4>(dst, s, n);
        if (bytes == 8) cc_cp_async_zfill<8>(dst, s, n);
        if (bytes == 16) cc_cp_async_zfill<16>(dst, s, n);
        cc_cp_async_wait_all();
        for (int j = 0; j < 16; ++j) out[i * 16 + j] = dst[j];
    } else {
        for (int j = 0; j < 3; ++j) {
            cc_cp_async_zfill<16>(slots + (3 * i + j) * 16, src + (3 * i + j) * 16, 16);
            cc_cp_async_commit();
        }
        cc_cp_async_wait<1>();
        for (int j = 0; j < 48; ++j) out[i * 48 + j] = slots[i * 48 + j];
        cc_cp_async_wait_all();
    }
}

// 64 threads; out[t] = Σ_tile src[tile·64 + (t+1) % 64], each element passing through a
// two-stage shared-memory pipeline filled by cp.async and read by the *neighbouring* thread.
// bug 1: no wait before the read; bug 2: no barrier between the wait and the read;
// bug 3: no barrier after the read, so a fast thread refills a stage a slow one still reads.
extern "C" __global__ void tc_probe_pipeline(int bug, const float* __restrict__ src, float* __restrict__ out,
                                             int tiles) {
    __shared__ __align__(16) float stage[2][64];
    const int t = threadIdx.x;
    stage[0][t] = __int_as_float(0x7fc00000);   // NaN: a slot read before its copy lands stays NaN
    stage[1][t] = __int_as_float(0x7fc00000);
    __syncthreads();
    cc_cp_async_zfill<4>(&stage[0][t], src + t, 4);
    cc_cp_async_commit();
    float acc = 0.0f;
    for (int k = 0; k < tiles; ++k) {
        if (k + 1 < tiles) cc_cp_async_zfill<4>(&stage[(k + 1) & 1][t], src + (k + 1) * 64 + t, 4);
        cc_cp_async_commit();
        if (bug != 1) cc_cp_async_wait<1>();
        if (bug != 2) __syncthreads();
        acc += stage[k & 1][(t + 1) & 63];
        if (bug != 3) __syncthreads();
    }
    cc_cp_async_wait_all();
    out[t] = acc;
}
