// Emulator conformance program: kernels in the styles of CuPy's RawModule tests,
// NVIDIA's CUDA samples and teaching repositories — cuComplex arithmetic, a
// constant-memory convolution filter the host fills (RawModule.get_global), a
// __device__ counter the host reads back, class and function templates with
// functors, curand's device generators, libcu++ (cuda::std) and cuda::barrier.
// tests/test_emulator_foreign.py compares every output with NumPy.
#include <cuComplex.h>
#include <cuda/barrier>
#include <cuda/std/limits>
#include <cuda/std/type_traits>
#include <cuda/std/utility>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <curand_kernel.h>

// --- cuComplex: every operation, float and double -----------------------------------------------
extern "C" __global__ void complex_ops(const cuFloatComplex* a, const cuFloatComplex* b, cuFloatComplex* out,
                                       float* mag, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    cuFloatComplex x = a[i], y = b[i];
    out[i * 6 + 0] = cuCaddf(x, y);
    out[i * 6 + 1] = cuCsubf(x, y);
    out[i * 6 + 2] = cuCmulf(x, y);
    out[i * 6 + 3] = cuCdivf(x, y);
    out[i * 6 + 4] = cuConjf(x);
    out[i * 6 + 5] = cuCfmaf(x, y, make_cuComplex(cuCrealf(y), 1.0f));
    mag[i] = cuCabsf(x);
}

extern "C" __global__ void complex_ops_double(const cuDoubleComplex* a, const cuDoubleComplex* b,
                                              cuDoubleComplex* out, double* mag, cuFloatComplex* down, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    cuDoubleComplex x = a[i], y = b[i];
    out[i * 4 + 0] = cuCadd(x, y);
    out[i * 4 + 1] = cuCmul(x, y);
    out[i * 4 + 2] = cuCdiv(x, y);
    out[i * 4 + 3] = cuCfma(x, y, cuComplexFloatToDouble(make_cuFloatComplex(1.0f, -2.0f)));
    mag[i] = cuCabs(x);
    down[i] = cuComplexDoubleToFloat(x);
}

// A complex scalar by value (cuFloatComplex alpha), as cuBLAS-style axpy kernels take it.
extern "C" __global__ void caxpy(cuFloatComplex alpha, const cuFloatComplex* x, cuFloatComplex* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cuCaddf(cuCmulf(alpha, x[i]), y[i]);
}

// --- constant memory written from the host --------------------------------------------------------
#define MAX_TAPS 17
__constant__ float c_taps[MAX_TAPS];
__constant__ int c_radius;
__device__ unsigned long long d_calls;  // counted by the kernel, read back by the host

// 1-D convolution with a filter in constant memory and the row tile in shared memory
// (the CUDA samples' convolutionSeparable, one row at a time).
extern "C" __global__ void conv_row(const float* __restrict__ in, float* __restrict__ out, int width) {
    extern __shared__ float row[];
    int r = c_radius, x = blockIdx.x * blockDim.x + threadIdx.x;
    int base = blockIdx.x * blockDim.x - r;
    for (int k = threadIdx.x; k < blockDim.x + 2 * r; k += blockDim.x) {
        int gx = base + k;
        row[k] = (gx >= 0 && gx < width) ? in[blockIdx.y * width + gx] : 0.0f;
    }
    __syncthreads();
    if (x < width) {
        float acc = 0.0f;
        for (int t = -r; t <= r; ++t) acc += c_taps[r + t] * row[threadIdx.x + r + t];
        out[blockIdx.y * width + x] = acc;
    }
    if (threadIdx.x == 0) atomicAdd(&d_calls, 1ull);
}

namespace filters {
__constant__ double c_weights[2][3];
}

extern "C" __global__ void weighted_pairs(const double* x, double* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = filters::c_weights[i & 1][0] * x[i] + filters::c_weights[i & 1][1] + filters::c_weights[1][2];
}

// --- templates: a class template accumulator and functors, instantiated by name -------------------
template <typename T>
struct Sum {
    __device__ T operator()(T a, T b) const { return a + b; }
    static constexpr T identity() { return T(0); }
};
template <typename T>
struct Max {
    __device__ T operator()(T a, T b) const { return a > b ? a : b; }
    static constexpr T identity() { return cuda::std::numeric_limits<T>::lowest(); }
};

template <typename T, int BLOCK>
struct BlockReducer {
    T* smem;
    template <typename Op>
    __device__ T reduce(T v, Op op) {
        smem[threadIdx.x] = v;
        __syncthreads();
        for (int s = BLOCK / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) smem[threadIdx.x] = op(smem[threadIdx.x], smem[threadIdx.x + s]);
            __syncthreads();
        }
        return smem[0];
    }
};

template <typename T, int BLOCK, typename Op>
__global__ void __launch_bounds__(BLOCK) reduce_rows(const T* __restrict__ x, T* __restrict__ out, int cols) {
    static_assert(cuda::std::is_arithmetic<T>::value, "arithmetic types only");
    __shared__ T smem[BLOCK];
    Op op;
    T acc = Op::identity();
    for (int c = threadIdx.x; c < cols; c += BLOCK) acc = op(acc, x[(long long)blockIdx.x * cols + c]);
    BlockReducer<T, BLOCK> r{smem};
    T total = r.reduce(acc, op);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// --- curand device generators ------------------------------------------------------------------------
extern "C" __global__ void xorwow_draws(unsigned long long seed, const unsigned long long* subsequence,
                                        const unsigned long long* offset, unsigned int* bits, float* uniform,
                                        float* normal, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    curandState s;
    curand_init(seed, subsequence[i], offset[i], &s);
    bits[i * 3 + 0] = curand(&s);
    bits[i * 3 + 1] = curand(&s);
    bits[i * 3 + 2] = curand(&s);
    uniform[i] = curand_uniform(&s);
    normal[i * 2 + 0] = curand_normal(&s);
    normal[i * 2 + 1] = curand_normal(&s);
}

extern "C" __global__ void philox_draws(unsigned long long seed, const unsigned long long* subsequence,
                                        const unsigned long long* offset, unsigned int* bits, float* uniform4,
                                        double* uniform_double, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    curandStatePhilox4_32_10_t s;
    curand_init(seed, subsequence[i], offset[i], &s);
    bits[i * 6 + 0] = curand(&s);
    bits[i * 6 + 1] = curand(&s);
    uint4 q = curand4(&s);
    bits[i * 6 + 2] = q.x;
    bits[i * 6 + 3] = q.y;
    bits[i * 6 + 4] = q.z;
    bits[i * 6 + 5] = q.w;
    float4 u = curand_uniform4(&s);
    uniform4[i * 4 + 0] = u.x;
    uniform4[i * 4 + 1] = u.y;
    uniform4[i * 4 + 2] = u.z;
    uniform4[i * 4 + 3] = u.w;
    uniform_double[i] = curand_uniform_double(&s);
}

// Monte Carlo estimate of pi, one XORWOW state per thread kept in global memory (the
// usual two-kernel setup / use pattern).
extern "C" __global__ void setup_states(curandState* states, unsigned long long seed) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    curand_init(seed, i, 0, &states[i]);
}
extern "C" __global__ void count_inside(curandState* states, unsigned int* inside, int draws) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    curandState s = states[i];
    unsigned int hits = 0;
    for (int k = 0; k < draws; ++k) {
        float x = curand_uniform(&s), y = curand_uniform(&s);
        hits += x * x + y * y <= 1.0f;
    }
    states[i] = s;
    atomicAdd(inside, hits);
}

// --- cuda::barrier: split arrive/wait between a producer warp and consumer warps ---------------------
extern "C" __global__ void barrier_stages(const float* __restrict__ x, float* __restrict__ out, int n) {
    __shared__ cuda::barrier<cuda::thread_scope_block> bar;
    __shared__ float stage[256];
    if (threadIdx.x == 0) init(&bar, blockDim.x);
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    stage[threadIdx.x] = i < n ? x[i] : 0.0f;
    auto token = bar.arrive();
    bar.wait(cuda::std::move(token));
    float right = stage[(threadIdx.x + 1) % blockDim.x];
    bar.arrive_and_wait();
    stage[threadIdx.x] = right * 2.0f;
    bar.arrive_and_wait();
    if (i < n) out[i] = stage[threadIdx.x] + stage[(threadIdx.x + blockDim.x - 1) % blockDim.x];
}
