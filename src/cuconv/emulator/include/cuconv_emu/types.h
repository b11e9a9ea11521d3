// CUDA's built-in vector types (vector_types.h) for the CPU emulator: the same
// members, sizes and alignments as on the device, so that a reinterpret_cast to
// float4* from a 4-byte-aligned address is the same undefined behaviour (and
// UBSan reports it), and make_* constructors.
#pragma once

#define CUCONV_EMU_VEC1(T, N, A) \
    struct alignas(A) N##1 { T x; }; \
    static inline N##1 make_##N##1(T x) { N##1 v; v.x = x; return v; }
#define CUCONV_EMU_VEC2(T, N, A) \
    struct alignas(A) N##2 { T x, y; }; \
    static inline N##2 make_##N##2(T x, T y) { N##2 v; v.x = x; v.y = y; return v; }
#define CUCONV_EMU_VEC3(T, N, A) \
    struct alignas(A) N##3 { T x, y, z; }; \
    static inline N##3 make_##N##3(T x, T y, T z) { N##3 v; v.x = x; v.y = y; v.z = z; return v; }
#define CUCONV_EMU_VEC4(T, N, A) \
    struct alignas(A) N##4 { T x, y, z, w; }; \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
// Alignments from CUDA's vector_types.h: 2- and 4-vectors are aligned to their
// size (capped at 16), 1- and 3-vectors to their element.
#define CUCONV_EMU_VECS(T, N, S, A2, A4) \
    CUCONV_EMU_VEC1(T, N, S) CUCONV_EMU_VEC2(T, N, A2) CUCONV_EMU_VEC3(T, N, S) CUCONV_EMU_VEC4(T, N, A4)

CUCONV_EMU_VECS(signed char, char, 1, 2, 4)
CUCONV_EMU_VECS(unsigned char, uchar, 1, 2, 4)
CUCONV_EMU_VECS(short, short, 2, 4, 8)
CUCONV_EMU_VECS(unsigned short, ushort, 2, 4, 8)
CUCONV_EMU_VECS(int, int, 4, 8, 16)
CUCONV_EMU_VECS(unsigned int, uint, 4, 8, 16)
CUCONV_EMU_VECS(long, long, 8, 16, 16)
CUCONV_EMU_VECS(unsigned long, ulong, 8, 16, 16)
CUCONV_EMU_VECS(long long, longlong, 8, 16, 16)
CUCONV_EMU_VECS(unsigned long long, ulonglong, 8, 16, 16)
CUCONV_EMU_VECS(float, float, 4, 8, 16)
CUCONV_EMU_VECS(double, double, 8, 16, 16)

#undef CUCONV_EMU_VECS
#undef CUCONV_EMU_VEC1
#undef CUCONV_EMU_VEC2
#undef CUCONV_EMU_VEC3
#undef CUCONV_EMU_VEC4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

typedef struct CUstream_st* cudaStream_t;
typedef enum cudaError { cudaSuccess = 0, cudaErrorUnknown = 999 } cudaError_t;
