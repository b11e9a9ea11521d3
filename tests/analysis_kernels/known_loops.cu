// Fixtures for tests/test_analysis.py: kernels whose main-loop bodies are known, so the
// static analyser's counts can be checked against them. They are compiled, never launched.
//
//   fma16_lds128     one loop: exactly 16 FFMA and 4 LDS.128 per iteration (+ loop control)
//   fma8_lds32       one loop: 8 FFMA and 8 LDS (32-bit) per iteration; issue-bound on sm_80 too
//   nested           an outer loop around an inner FFMA loop (depth 2) and a memory-only loop
//   vector_io        no loop; 128-bit global loads, 64-bit global stores, FMUL/FADD
//   barrier_loop     __syncthreads() twice per iteration, STS.64 + LDS.64
//   pressure         many live accumulators; with --maxrregcount=32 ptxas must spill
//   called_nest      a one-deep FFMA loop in the kernel and a deeper FFMA nest in a __noinline__
//                    function it calls on a cold path (the main loop is the kernel's own)
//
// `#pragma unroll 1` keeps one source iteration per SASS iteration; the loop index is masked
// into the shared tile so every address is in bounds for any trip count.

#define TILE 64

extern "C" __global__ void fma16_lds128(const float* __restrict__ in, float* __restrict__ out,
                                        float scale, int n) {
    __shared__ float4 tile[TILE * 4];
    for (int i = threadIdx.x; i < TILE * 4; i += blockDim.x)
        tile[i] = make_float4(in[4 * i], in[4 * i + 1], in[4 * i + 2], in[4 * i + 3]);
    __syncthreads();
    float acc[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j] = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        const float4* row = &tile[(i & (TILE - 1)) * 4];
        float4 a = row[0], b = row[1], c = row[2], d = row[3];
        acc[0] = fmaf(a.x, scale, acc[0]);   acc[1] = fmaf(a.y, scale, acc[1]);
        acc[2] = fmaf(a.z, scale, acc[2]);   acc[3] = fmaf(a.w, scale, acc[3]);
        acc[4] = fmaf(b.x, scale, acc[4]);   acc[5] = fmaf(b.y, scale, acc[5]);
        acc[6] = fmaf(b.z, scale, acc[6]);   acc[7] = fmaf(b.w, scale, acc[7]);
        acc[8] = fmaf(c.x, scale, acc[8]);   acc[9] = fmaf(c.y, scale, acc[9]);
        acc[10] = fmaf(c.z, scale, acc[10]); acc[11] = fmaf(c.w, scale, acc[11]);
        acc[12] = fmaf(d.x, scale, acc[12]); acc[13] = fmaf(d.y, scale, acc[13]);
        acc[14] = fmaf(d.z, scale, acc[14]); acc[15] = fmaf(d.w, scale, acc[15]);
    }
#pragma unroll
    for (int j = 0; j < 16; ++j) out[(long long)blockIdx.x * blockDim.x * 16 + threadIdx.x * 16 + j] = acc[j];
}

extern "C" __global__ void fma8_lds32(const float* __restrict__ in, float* __restrict__ out,
                                      float scale, int n) {
    __shared__ float tile[TILE * 8];
    for (int i = threadIdx.x; i < TILE * 8; i += blockDim.x) tile[i] = in[i];
    __syncthreads();
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        // A stride of 3 floats between loads keeps ptxas from merging them into wider ones.
        const float* row = &tile[(i & (TILE - 1)) * 8 - (i & (TILE - 1)) * 5 + threadIdx.x % 4];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j] = fmaf(row[3 * j], scale, acc[j]);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) out[(long long)blockIdx.x * blockDim.x * 8 + threadIdx.x * 8 + j] = acc[j];
}

extern "C" __global__ void nested(const float* __restrict__ in, float* __restrict__ out, int n, int m) {
    __shared__ float tile[TILE];
    if (threadIdx.x < TILE) tile[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        float x = in[(long long)i * blockDim.x + threadIdx.x];
#pragma unroll 1
        for (int k = 0; k < m; ++k) {
            float t = tile[(i + k) & (TILE - 1)];
            acc0 = fmaf(x, t, acc0);
            acc1 = fmaf(t, t, acc1);
        }
    }
    // A copy loop without math: deeper loops without math must not win the main-loop choice.
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i + 2 * blockDim.x] = in[i];
    out[threadIdx.x] = acc0;
    out[threadIdx.x + blockDim.x] = acc1;
}

extern "C" __global__ void vector_io(const float4* __restrict__ in, float2* __restrict__ out, float s) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    float4 v = in[i];
    out[i] = make_float2(v.x * s + v.y, v.z * s - v.w);
    out[i + gridDim.x * (long long)blockDim.x] = make_float2(v.x * v.y, v.z + v.w);
}

extern "C" __global__ void barrier_loop(const float2* __restrict__ in, float* __restrict__ out, int n) {
    __shared__ float2 buf[256];
    float acc = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        buf[threadIdx.x] = in[(long long)i * blockDim.x + threadIdx.x];
        __syncthreads();
        float2 v = buf[(threadIdx.x + 1) & 255];
        acc = fmaf(v.x, v.y, acc);
        __syncthreads();
    }
    out[threadIdx.x] = acc;
}

extern "C" __global__ void pressure(const float* __restrict__ in, float* __restrict__ out, int n) {
    float acc[48];
#pragma unroll
    for (int j = 0; j < 48; ++j) acc[j] = in[j * 32 + threadIdx.x];
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        float x = in[i * 64 + threadIdx.x];
#pragma unroll
        for (int j = 0; j < 48; ++j) acc[j] = fmaf(acc[(j + 1) % 48], x, acc[j]);
    }
#pragma unroll
    for (int j = 0; j < 48; ++j) out[j * 32 + threadIdx.x] = acc[j];
}

__device__ __noinline__ float cold_nest(const float* __restrict__ in, int n, int m) {
    float acc = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i)
#pragma unroll 1
        for (int k = 0; k < m; ++k) acc = fmaf(in[i * m + k], in[k], acc);
    return acc;
}

extern "C" __global__ void called_nest(const float* __restrict__ in, float* __restrict__ out, int n, int m) {
    float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        const float x = in[(long long)i * blockDim.x + threadIdx.x];
        acc0 = fmaf(x, x, acc0);
        acc1 = fmaf(x, acc0, acc1);
    }
    if (acc0 != acc0) acc1 = cold_nest(in, n, m);
    out[threadIdx.x] = acc0 + acc1;
}
