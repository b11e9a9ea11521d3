// Fixture for tests/test_analysis.py (compiled for sm_80+, never launched): a loop of exactly
// 2 ldmatrix.x4 (LDSM .4: 128 bits per thread) and 4 mma.sync m16n8k16 fp16 -> fp32 (HMMA.16816.F32).
// The PTX is inline because this file only exists to check the analyser's tensor-core counts.

extern "C" __global__ void mma_loop(const unsigned* __restrict__ in, float* __restrict__ out, int n) {
    __shared__ unsigned tile[64 * 32];
    for (int i = threadIdx.x; i < 64 * 32; i += blockDim.x) tile[i] = in[i];
    __syncthreads();
    float acc[4][4] = {};
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        unsigned a[4], b[4];
        unsigned addr = (unsigned)__cvta_generic_to_shared(&tile[((i & 15) * 4 + (threadIdx.x & 3)) * 32 + (threadIdx.x >> 2) * 4]);
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3]) : "r"(addr + 4096));
#pragma unroll
        for (int t = 0; t < 4; ++t)
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                         "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                         : "+f"(acc[t][0]), "+f"(acc[t][1]), "+f"(acc[t][2]), "+f"(acc[t][3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[t % 4]), "r"(b[(t + 1) % 4]));
    }
#pragma unroll
    for (int t = 0; t < 4; ++t)
#pragma unroll
        for (int j = 0; j < 4; ++j) out[(threadIdx.x * 4 + t) * 4 + j] = acc[t][j];
}
