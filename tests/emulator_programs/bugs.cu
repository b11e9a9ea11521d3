// Planted bugs: every kernel here is wrong on purpose, and the emulator must
// say so (tests/test_emulator.py): an exception naming kernel, block and thread
// under sanitize="address,undefined", a wrong answer under order="reverse",
// or a BarrierDivergence / KernelTimeout instead of a hang.
#include <cassert>

// Out-of-bounds global write: no `if (i < n)` guard.
extern "C" __global__ void oob_write(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = (float)n;
}

// Out-of-bounds global read one element before the array.
extern "C" __global__ void oob_read_before(const float* x, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = x[i - 1];
}

// float4 load from x + 1: 4-byte aligned where 16 is required.
extern "C" __global__ void misaligned_float4(const float* x, float* out) {
    const float4* p = reinterpret_cast<const float4*>(x + 1);
    float4 v = p[threadIdx.x];
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// A static __shared__ array of 32 floats indexed by up to blockDim.x - 1.
extern "C" __global__ void static_shared_overrun(float* out) {
    __shared__ float s[32];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}

// Writes one float per thread into dynamic shared memory: overruns it when
// the launch gives fewer than 4 * blockDim.x bytes.
extern "C" __global__ void dynamic_shared_overrun(float* out) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = dyn[blockDim.x - 1 - threadIdx.x];
}

// Missing __syncthreads between writing s[t] and reading s[t - 1]. Forward
// order hides it (thread t - 1 has finished when t runs); reverse shows it.
extern "C" __global__ void missing_barrier(const float* x, float* out) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    // __syncthreads();  <- the bug
    out[blockIdx.x * blockDim.x + t] = t > 0 ? s[t - 1] : 0.0f;
}

// Early exit before a barrier the other threads wait at.
extern "C" __global__ void divergent_barrier_exit(const float* x, float* out, int n) {
    __shared__ float s[128];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    s[threadIdx.x] = x[i];
    __syncthreads();
    out[i] = s[blockDim.x - 1 - threadIdx.x];
}

// Two different __syncthreads in the two branches of an if.
extern "C" __global__ void divergent_barrier_branches(float* out) {
    if (threadIdx.x < 16) {
        out[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        out[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

// A shuffle whose full mask names lanes that returned early.
extern "C" __global__ void shuffle_exited_lane(const float* x, float* out, int n) {
    int i = threadIdx.x;
    if (i >= n) return;
    out[i] = __shfl_down_sync(0xffffffff, x[i], 1);
}

// Spins forever (volatile so the compiler keeps the loop).
extern "C" __global__ void endless(volatile int* flag) {
    while (*flag == 0) {
    }
}

// Segfault through a wild pointer (in an unsanitized run too).
extern "C" __global__ void wild_pointer(float* out) {
    float* p = reinterpret_cast<float*>((unsigned long long)16);
    out[threadIdx.x] = p[threadIdx.x];
}

// A failed assert() in device code.
extern "C" __global__ void asserts(const int* x) { assert(x[threadIdx.x] >= 0); }

// Unbounded recursion with 4 KiB frames overflows the fiber's stack.
__device__ int deep(int n) {
    volatile char frame[4096];
    frame[0] = (char)n;
    return n == 0 ? 0 : deep(n - 1) + frame[0];
}
extern "C" __global__ void stack_overflow(int* out) { out[threadIdx.x] = deep(1 << 30); }

// __trap() aborts the launch.
extern "C" __global__ void traps(int when) {
    if ((int)threadIdx.x == when) __trap();
}

// Half a warp waits at a shuffle for lanes that wait at __syncthreads for it.
extern "C" __global__ void deadlock(float* out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_sync(0xffffffff, v, 0);
    else __syncthreads();
    out[threadIdx.x] = v;
}
