// <cupy/carray.cuh> for the CPU emulator (translate_cucomplex=True prepends it, as
// CuPy does): what a RawKernel source can use of it. cupy::type_traits, CUPY_FOR
// (a grid-stride loop), _floor_divide (Python's // for integers, floor(x / y)
// for floats, 0 for an integer division by zero) and the names float16 and
// bfloat16 (declared, as there). CArray and CIndexer, the array types of CuPy's
// ElementwiseKernel/ReductionKernel, are not emulated: RawKernel passes arrays as
// plain pointers, and using one is a compile error saying so.
#pragma once

namespace cupy {
namespace type_traits {
template <bool B, class T, class F>
struct conditional : std::conditional<B, T, F> {};
template <bool B, class T = void>
struct enable_if : std::enable_if<B, T> {};
template <typename T, typename U>
struct is_same : std::is_same<T, U> {};
}  // namespace type_traits
}  // namespace cupy

class bfloat16;
class float16;

#define CUPY_FOR(i, n)                                                                           \
    for (ptrdiff_t i = static_cast<ptrdiff_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
         i += static_cast<ptrdiff_t>(blockDim.x) * gridDim.x)

template <typename T, int ndim, bool c_contiguous = false, bool use_32bit_indexing = false>
class CArray {
    static_assert(cuconv_emu::not_emulated<T>::value,
                  "cuconv emulator: CuPy's CArray (ElementwiseKernel's array type) is not emulated; a RawKernel "
                  "receives arrays as pointers");
};
template <int ndim, bool use_32bit_indexing = false>
class CIndexer {
    static_assert(cuconv_emu::not_emulated<CIndexer>::value,
                  "cuconv emulator: CuPy's CIndexer (ElementwiseKernel's index type) is not emulated");
};

namespace cuconv_emu {
template <typename T>
inline T floor_divide_int(T x, T y) {
    if (y == 0) return 0;
    T q = x / y;
    return q - (std::is_signed<T>::value && ((x < 0) != (y < 0)) && q * y != x);
}
}  // namespace cuconv_emu
static inline int _floor_divide(int x, int y) { return cuconv_emu::floor_divide_int(x, y); }
static inline long long _floor_divide(long long x, long long y) { return cuconv_emu::floor_divide_int(x, y); }
static inline unsigned _floor_divide(unsigned x, unsigned y) { return cuconv_emu::floor_divide_int(x, y); }
static inline unsigned long long _floor_divide(unsigned long long x, unsigned long long y) {
    return cuconv_emu::floor_divide_int(x, y);
}
static inline float _floor_divide(float x, float y) { return floorf(x / y); }
static inline double _floor_divide(double x, double y) { return floor(x / y); }
