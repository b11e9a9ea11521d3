// Emulator conformance program: thread/block indices, qualifiers, templates,
// static and dynamic shared memory, barriers. Each kernel writes results that
// tests/test_emulator.py compares with NumPy. Compiled with -D TILE=<n>.
#include <cuda_runtime.h>
#include <stdint.h>

#ifndef TILE
#error "compile with -D TILE=<tile size>"
#endif

// Every built-in index, per thread, at the thread's global linear id.
extern "C" __global__ void __launch_bounds__(256) indices3d(int* __restrict__ out) {
    long long block = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
    long long tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    long long gid = block * (blockDim.x * blockDim.y * blockDim.z) + tid;
    int* o = out + gid * 8;
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x;  o[4] = blockIdx.y;  o[5] = blockIdx.z;
    o[6] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    o[7] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z;
}

// Tree reduction in a templated kernel: one partial sum per block.
template <int BLOCK, typename T>
__global__ void __launch_bounds__(BLOCK) block_sum(const T* __restrict__ x, T* __restrict__ partial, int n) {
    __shared__ T s[BLOCK];
    int i = blockIdx.x * BLOCK + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : T(0);
    __syncthreads();
#pragma unroll
    for (int stride = BLOCK / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// The address of a templated kernel's __shared__ array: distinct per instantiation.
template <int N>
__global__ void shared_address(unsigned long long* out) {
    __shared__ float s[N];
    if (threadIdx.x < N) s[threadIdx.x] = 1.0f;
    if (threadIdx.x == 0) out[0] = (unsigned long long)(uintptr_t)&s[0];
}

// 2-D shared tile (padded against bank conflicts), TILE x TILE threads.
extern "C" __global__ void transpose(const float* __restrict__ in, float* __restrict__ out, int rows, int cols) {
    __shared__ float tile[TILE][TILE + 1];
    int c = blockIdx.x * TILE + threadIdx.x, r = blockIdx.y * TILE + threadIdx.y;
    if (r < rows && c < cols) tile[threadIdx.y][threadIdx.x] = in[(long long)r * cols + c];
    __syncthreads();
    int oc = blockIdx.y * TILE + threadIdx.x, orow = blockIdx.x * TILE + threadIdx.y;
    if (orow < cols && oc < rows) out[(long long)orow * rows + oc] = tile[threadIdx.x][threadIdx.y];
}

// Dynamic shared memory: two extern declarations (different types) alias it.
__device__ float read_back(int j) {
    extern __shared__ __align__(16) int as_int[];
    return __int_as_float(as_int[j]);
}
extern "C" __global__ void reverse_dynamic(const float* in, float* out, int n) {
    extern __shared__ float buf[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? in[i] : -1.0f;
    __syncthreads();
    int j = blockDim.x - 1 - threadIdx.x;
    int src = blockIdx.x * blockDim.x + j;
    if (i < n && src < n) out[i] = read_back(j);
    else if (i < n) out[i] = 0.0f;
}

// __syncthreads_count/and/or.
extern "C" __global__ void sync_votes(const int* flags, int* out) {
    int f = flags[blockIdx.x * blockDim.x + threadIdx.x];
    int count = __syncthreads_count(f);
    int all = __syncthreads_and(f);
    int any = __syncthreads_or(f);
    if (threadIdx.x == 0) {
        out[blockIdx.x * 3 + 0] = count;
        out[blockIdx.x * 3 + 1] = all;
        out[blockIdx.x * 3 + 2] = any;
    }
}

// Qualifiers, __shared__ in a __device__ function, static __shared__, __CUDA_ARCH__.
__host__ __device__ inline int twice(int v) { return 2 * v; }
static __device__ __forceinline__ int plus_one(int v) { return v + 1; }
__device__ __noinline__ int squared(int v) { return v * v; }

__device__ int block_max(int v) {
    __shared__ int best[1];
    if (threadIdx.x == 0) best[0] = INT_MIN;
    __syncthreads();
    atomicMax(&best[0], v);
    __syncthreads();
    return best[0];
}

extern "C" __global__ void qualifiers(const int* x, int* out) {
    static __shared__ int staged[128];
    int t = threadIdx.x;
    staged[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    int v = staged[(t + 1) % blockDim.x];
#ifdef __CUDA_ARCH__
    int arch = 1;
#else
    int arch = 0;
#endif
#ifdef CUCONV_EMULATOR
    int emulated = 1;
#else
    int emulated = 0;
#endif
    int m = block_max(v);
    int* o = out + (blockIdx.x * blockDim.x + t) * 4;
    o[0] = plus_one(twice(v));
    o[1] = squared(v);
    o[2] = m;
    o[3] = arch * 10 + emulated;
}

// Scalars of every width by value (and a struct), 64-bit index math.
extern "C" __global__ void scalars(signed char i8, unsigned char u8, short i16, unsigned short u16, int i32,
                                   unsigned int u32, long long i64, unsigned long long u64, float f32, double f64,
                                   bool flag, float2 pair, double* out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    out[0] = i8; out[1] = u8; out[2] = i16; out[3] = u16; out[4] = i32; out[5] = u32;
    out[6] = (double)i64; out[7] = (double)u64; out[8] = f32; out[9] = f64; out[10] = flag ? 1.0 : 0.0;
    out[11] = pair.x; out[12] = pair.y;
    long long big = (long long)i32 * 3000000000LL;  // would overflow 32-bit math
    out[13] = (double)big;
}

// printf from the device.
extern "C" __global__ void hello(int v) {
    if (threadIdx.x == 0) printf("hello from block %d: %d\n", (int)blockIdx.x, v + (int)blockIdx.x);
}

// Shared-memory tiled SGEMM, C = A * B (row-major), one output per thread.
template <int T>
__global__ void sgemm_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M,
                            int N, int K) {
    __shared__ float As[T][T], Bs[T][T];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * T + ty, col = blockIdx.x * T + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += T) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[(long long)row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(long long)(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < T; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[(long long)row * N + col] = acc;
}
