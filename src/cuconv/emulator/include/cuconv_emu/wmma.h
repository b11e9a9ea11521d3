// nvcuda::wmma (mma.h) for the CPU emulator. A fragment's layout across the
// lanes of a warp is opaque in CUDA, so here every lane holds the whole tile
// (num_elements = rows * cols, row-major) and element-wise loops over x[]
// behave the same. load/store/mma are warp-synchronous as on the device: all
// lanes of the warp meet before each of them (a warp collective), so a lane
// that skips one is reported. mma_sync multiplies exactly (fp16/bf16/tf32
// products are exact in float) and accumulates in float, row by row.
#pragma once
#include "fp16.h"
#include "bf16.h"

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

namespace precision {
struct tf32 {};
struct s4 {};
struct u4 {};
struct b1 {};
}  // namespace precision
namespace experimental {
namespace precision = ::nvcuda::wmma::precision;
}

namespace detail {
template <typename Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};
template <typename T>
struct storage {
    using type = T;
};
template <>
struct storage<precision::tf32> {
    using type = float;
};
template <typename T>
inline float to_float(T v) {
    return (float)v;
}
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

inline void warp_sync(const char* name, const char* file, unsigned line) {
    cuconv_emu::warp_collective(0xffffffffu, nullptr, &cuconv_emu::syncwarp_fn, nullptr, name, file, line);
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
   public:
    using storage_element_type = typename detail::storage<T>::type;
    using element_type = storage_element_type;
    static constexpr int rows = detail::shape<Use, M, N, K>::rows;
    static constexpr int cols = detail::shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    storage_element_type x[num_elements];
    storage_element_type& at(int r, int c) { return x[r * cols + c]; }
    const storage_element_type& at(int r, int c) const { return x[r * cols + c]; }
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
    using E = typename fragment<Use, M, N, K, T, L>::storage_element_type;
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = E(v);
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm,
                             const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t argument");
    detail::warp_sync("wmma::load_matrix_sync()", file, line);
    constexpr bool row = std::is_same_v<L, row_major>;
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c) f.at(r, c) = row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K, typename T, typename P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const P* p, unsigned ldm, layout_t layout,
                             const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    detail::warp_sync("wmma::load_matrix_sync()", file, line);
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c)
            f.at(r, c) = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K, typename T, typename P>
inline void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout,
                              const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    detail::warp_sync("wmma::store_matrix_sync()", file, line);
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c) {
            P v = (P)f.at(r, c);
            if (layout == mem_row_major) p[(size_t)r * ldm + c] = v;
            else p[(size_t)c * ldm + r] = v;
        }
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC, typename TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c,
                     bool satf = false, const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    detail::warp_sync("wmma::mma_sync()", file, line);
    using E = typename fragment<accumulator, M, N, K, TD, void>::storage_element_type;
    constexpr bool integer = std::is_integral_v<E>;
    using Acc = std::conditional_t<integer, int, float>;
    E out[M * N];
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            Acc s = (Acc)detail::to_float(c.at(i, j));
            if constexpr (integer) {
                s = (Acc)c.at(i, j);
                for (int k = 0; k < K; ++k) s += (Acc)a.at(i, k) * (Acc)b.at(k, j);
            } else {
                for (int k = 0; k < K; ++k) s += detail::to_float(a.at(i, k)) * detail::to_float(b.at(k, j));
                if (satf) s = s != s ? 0.0f : (s < 0.0f ? 0.0f : (s > 1.0f ? 1.0f : s));
            }
            out[i * N + j] = E(s);
        }
    for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

// tf32: round a float to 10 mantissa bits, to nearest with ties away (cvt.rna.tf32.f32).
inline float __float_to_tf32(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&f, &u, 4);
    return f;
}

}  // namespace wmma
}  // namespace nvcuda
