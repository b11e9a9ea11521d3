// Emulator conformance program: vector types, __ldg, math functions and
// intrinsics, conversions, bit intrinsics, min/max overloads, atomics on
// global and shared memory. tests/test_emulator.py checks against NumPy.
#include <math_constants.h>

// sizeof/alignof of the vector types must match CUDA's vector_types.h.
extern "C" __global__ void vector_layout(int* out) {
    if (threadIdx.x) return;
    int i = 0;
#define LAYOUT(T) out[i++] = sizeof(T); out[i++] = alignof(T);
    LAYOUT(char2) LAYOUT(char4) LAYOUT(uchar3) LAYOUT(short2) LAYOUT(short4) LAYOUT(int2) LAYOUT(int3)
    LAYOUT(int4) LAYOUT(uint4) LAYOUT(float2) LAYOUT(float3) LAYOUT(float4) LAYOUT(double2) LAYOUT(longlong2)
    LAYOUT(dim3) LAYOUT(uint3)
#undef LAYOUT
}

// float4 loads through __ldg and make_float4, int2/double2 through make_*.
extern "C" __global__ void vectors(const float* __restrict__ x, float* out, int n4) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
    float4 r = make_float4(v.w, v.z * 2.0f, v.y + 1.0f, v.x);
    reinterpret_cast<float4*>(out)[i] = r;
    int2 p = make_int2(i, -i);
    double2 d = make_double2(1.5, p.y);
    char4 c = make_char4(1, 2, 3, 4);
    out[4 * n4 + i] = (float)(p.x + d.x + c.w);
}

// Elementwise float math: one row of results per function.
extern "C" __global__ void math_f32(const float* __restrict__ x, const float* __restrict__ y, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = x[i], b = y[i];  // a in (0.1, 4), b in (-3, 3)
    float* o = out + i;
    int k = 0;
    o[n * k++] = expf(b);
    o[n * k++] = __expf(b);
    o[n * k++] = logf(a);
    o[n * k++] = __logf(a);
    o[n * k++] = sqrtf(a);
    o[n * k++] = rsqrtf(a);
    o[n * k++] = fmaxf(a, b);
    o[n * k++] = fminf(a, b);
    o[n * k++] = __fmaf_rn(a, b, 0.5f);
    o[n * k++] = fmaf(a, b, -0.25f);
    o[n * k++] = __fdividef(b, a);
    o[n * k++] = __saturatef(b);
    o[n * k++] = tanhf(b);
    o[n * k++] = __sinf(b) + __cosf(b);
    o[n * k++] = powf(a, b);
    o[n * k++] = fabsf(b) + floorf(b) + ceilf(a) + truncf(b) + roundf(a);
    o[n * k++] = max(a, b) - min(a, b);  // CUDA's float overloads
    o[n * k++] = erff(b) + expm1f(b * 0.1f) + log1pf(a);
    o[n * k++] = __frcp_rn(a) + __fsqrt_rn(a) + __fadd_rn(a, b) * __fmul_rn(a, b);
    o[n * k++] = isinf(CUDART_INF_F) + isinf(INFINITY) + isnan(CUDART_NAN_F) + (a < CUDART_INF_F);
}

// Conversions with rounding modes and saturation, bit casts.
extern "C" __global__ void conversions(const float* __restrict__ x, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    int* o = out + i * 8;
    o[0] = __float2int_rn(v);
    o[1] = __float2int_rz(v);
    o[2] = __float2int_ru(v);
    o[3] = __float2int_rd(v);
    o[4] = (int)__float2uint_rn(v);
    o[5] = __float_as_int(v);
    o[6] = __float_as_int(__int_as_float(__float_as_int(v)) * 1.0f) == __float_as_int(v);
    o[7] = __float_as_int(__int2float_rn(__float2int_rz(v)));
}

// Integer and bit intrinsics, integer min/max overloads.
extern "C" __global__ void bits(const unsigned* __restrict__ x, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned v = x[i], w = x[(i + 1) % n];
    unsigned* o = out + i * 10;
    o[0] = __popc(v);
    o[1] = __clz((int)v);
    o[2] = __ffs((int)v);
    o[3] = __brev(v);
    o[4] = __byte_perm(v, w, 0x5140);
    o[5] = __umulhi(v, w);
    o[6] = __popcll(((unsigned long long)v << 32) | w);
    o[7] = min(v, w);
    o[8] = (unsigned)max((int)v, (int)w);
    o[9] = __funnelshift_l(v, w, 5);
}

// Atomics: a histogram in shared memory merged into global, float sums,
// min/max/CAS/Exch/And/Or/Xor/Sub/Inc on global memory.
extern "C" __global__ void atomics(const int* __restrict__ keys, const float* __restrict__ vals, int n,
                                   int* hist, float* fsum, double* dsum, int* stats, unsigned* bitsout,
                                   unsigned long long* usum, float* fmax_out) {
    __shared__ int local_hist[16];
    int t = threadIdx.x;
    if (t < 16) local_hist[t] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) {
        int k = keys[i];
        float v = vals[i];
        atomicAdd(&local_hist[k & 15], 1);
        atomicAdd(fsum, v);
        atomicAdd(dsum, (double)v);
        atomicMax(&stats[0], k);
        atomicMin(&stats[1], k);
        atomicSub(&stats[2], k);
        atomicAdd(usum, (unsigned long long)k * 1000000007ull);
        atomicOr(&bitsout[0], 1u << (k & 31));
        atomicAnd(&bitsout[1], ~(1u << (k & 31)));
        atomicXor(&bitsout[2], (unsigned)k);
        atomicInc(&bitsout[3], 9u);  // counts modulo 10
        // float max with a CAS loop (the usual idiom)
        int* addr = reinterpret_cast<int*>(fmax_out);
        int old = *addr, assumed;
        do {
            assumed = old;
            if (__int_as_float(assumed) >= v) break;
            old = atomicCAS(addr, assumed, __float_as_int(v));
        } while (old != assumed);
        atomicExch(&stats[3], 12345);
    }
    __syncthreads();
    if (t < 16) atomicAdd(&hist[t], local_hist[t]);
}
