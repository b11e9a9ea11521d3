// curand_kernel.h for the CPU emulator: cuRAND's device API for its two common
// generators, XORWOW (curandState, the default) and Philox4_32_10, with the state
// layouts, seeding, subsequence/offset skips and bit streams of cuRAND, so that
// curand(), curand4(), curand_uniform*() give the GPU's values bit for bit.
// Normals use cuRAND's Box-Muller pairing (and its caching of the second value)
// over the host's logf/sinf/cosf, which round differently from the GPU's fast
// __sincosf: equal in distribution, not bit for bit. XORWOW skips are computed as
// powers of its 160x160 bit matrix (built once per process, ~0.4 MB), the same
// linear map cuRAND's precomputed tables hold.
//
// Not emulated (a compile error naming the function): MRG32k3a, MTGP32, the Sobol
// quasi-random generators, curand_poisson and curand_discrete.
#pragma once
#include "curand.h"

#define CURAND_2POW32_INV (2.3283064e-10f)
#define CURAND_2POW32_INV_DOUBLE (2.3283064365386963e-10)
#define CURAND_2POW53_INV_DOUBLE (1.1102230246251565e-16)
#define CURAND_2POW32_INV_2PI (2.3283064e-10f * 6.2831855f)
#define CURAND_2PI (6.2831855f)
#define CURAND_PI_DOUBLE (3.1415926535897932)

struct curandStateXORWOW {
    unsigned int d, v[5];
    int boxmuller_flag;
    int boxmuller_flag_double;
    float boxmuller_extra;
    double boxmuller_extra_double;
};
typedef struct curandStateXORWOW curandStateXORWOW_t;
typedef struct curandStateXORWOW curandState_t;
typedef struct curandStateXORWOW curandState;

struct curandStatePhilox4_32_10 {
    uint4 ctr;
    uint4 output;
    uint2 key;
    unsigned int STATE;
    int boxmuller_flag;
    int boxmuller_flag_double;
    float boxmuller_extra;
    double boxmuller_extra_double;
};
typedef struct curandStatePhilox4_32_10 curandStatePhilox4_32_10_t;

// Declared so that code naming them compiles; using them is a compile error.
struct curandStateMRG32k3a { unsigned int s1[3], s2[3]; int boxmuller_flag, boxmuller_flag_double;
                             float boxmuller_extra; double boxmuller_extra_double; };
typedef struct curandStateMRG32k3a curandStateMRG32k3a_t;
struct curandStateMtgp32 { int opaque; };
typedef struct curandStateMtgp32 curandStateMtgp32_t;
struct curandStateSobol32 { unsigned int i, x, c, direction_vectors[32]; };
typedef struct curandStateSobol32 curandStateSobol32_t;
struct curandStateScrambledSobol32 { unsigned int i, x, c, direction_vectors[32]; };
typedef struct curandStateScrambledSobol32 curandStateScrambledSobol32_t;
struct curandStateSobol64 { unsigned long long i, x, c, direction_vectors[64]; };
typedef struct curandStateSobol64 curandStateSobol64_t;
struct curandStateScrambledSobol64 { unsigned long long i, x, c, direction_vectors[64]; };
typedef struct curandStateScrambledSobol64 curandStateScrambledSobol64_t;

namespace cuconv_emu {
namespace curand {

template <typename S>
struct unsupported : std::bool_constant<std::is_same_v<S, curandStateMRG32k3a_t> ||
                                        std::is_same_v<S, curandStateMtgp32_t> ||
                                        std::is_same_v<S, curandStateSobol32_t> ||
                                        std::is_same_v<S, curandStateScrambledSobol32_t> ||
                                        std::is_same_v<S, curandStateSobol64_t> ||
                                        std::is_same_v<S, curandStateScrambledSobol64_t>> {};
template <typename S>
using if_unsupported = std::enable_if_t<unsupported<S>::value, int>;

// --- XORWOW ------------------------------------------------------------------------------------
inline void xorwow_step(unsigned int v[5]) {
    unsigned int t = v[0] ^ (v[0] >> 2);
    v[0] = v[1];
    v[1] = v[2];
    v[2] = v[3];
    v[3] = v[4];
    v[4] = (v[4] ^ (v[4] << 4)) ^ (t ^ (t << 1));
}

// A linear map of the 160-bit state: column i is the image of state bit i.
struct BitMatrix {
    unsigned int col[160][5];
    void apply(unsigned int v[5]) const {
        unsigned int r[5] = {0, 0, 0, 0, 0};
        for (int i = 0; i < 160; ++i)
            if (v[i >> 5] >> (i & 31) & 1u)
                for (int k = 0; k < 5; ++k) r[k] ^= col[i][k];
        for (int k = 0; k < 5; ++k) v[k] = r[k];
    }
    void square(BitMatrix& out) const {
        for (int i = 0; i < 160; ++i) {
            unsigned int v[5];
            for (int k = 0; k < 5; ++k) v[k] = col[i][k];
            apply(v);
            for (int k = 0; k < 5; ++k) out.col[i][k] = v[k];
        }
    }
};

// powers[i] = M^(2^i) for i < 64 (offsets) and M^(2^(67 + i - 64)) for i >= 64 (subsequences).
inline const BitMatrix* xorwow_powers() {
    static BitMatrix powers[128];
    static bool built = false;
    if (!built) {
        BitMatrix m;
        for (int i = 0; i < 160; ++i) {
            unsigned int v[5] = {0, 0, 0, 0, 0};
            v[i >> 5] = 1u << (i & 31);
            xorwow_step(v);
            for (int k = 0; k < 5; ++k) m.col[i][k] = v[k];
        }
        powers[0] = m;
        for (int i = 1; i < 64; ++i) powers[i - 1].square(powers[i]);
        BitMatrix a = powers[63], b;
        for (int i = 64; i < 67; ++i) {  // M^(2^64) .. M^(2^66)
            a.square(b);
            a = b;
        }
        a.square(powers[64]);  // M^(2^67)
        for (int i = 65; i < 128; ++i) powers[i - 1].square(powers[i]);
        built = true;
    }
    return powers;
}

inline void xorwow_skip(curandStateXORWOW_t* s, unsigned long long n, int first) {
    const BitMatrix* p = xorwow_powers();
    for (int i = 0; i < 64; ++i)
        if (n >> i & 1ull) p[first + i].apply(s->v);
}

// --- Philox4x32-10 ---------------------------------------------------------------------------------
inline uint4 philox_round(uint4 c, uint2 k) {
    unsigned long long p0 = 0xD2511F53ull * c.x, p1 = 0xCD9E8D57ull * c.z;
    unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
    unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
    return uint4{hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0};
}
inline uint4 philox10(uint4 c, uint2 k) {
    for (int r = 0; r < 9; ++r) {
        c = philox_round(c, k);
        k.x += 0x9E3779B9u;
        k.y += 0xBB67AE85u;
    }
    return philox_round(c, k);
}
inline void philox_incr(curandStatePhilox4_32_10_t* s, unsigned long long n) {  // the 128-bit counter += n
    unsigned long long lo = ((unsigned long long)s->ctr.y << 32 | s->ctr.x), sum = lo + n;
    s->ctr.x = (unsigned int)sum;
    s->ctr.y = (unsigned int)(sum >> 32);
    if (sum < lo && ++s->ctr.z == 0) ++s->ctr.w;
}
inline void philox_incr_hi(curandStatePhilox4_32_10_t* s, unsigned long long n) {  // the upper 64 bits += n
    unsigned long long hi = ((unsigned long long)s->ctr.w << 32 | s->ctr.z) + n;
    s->ctr.z = (unsigned int)hi;
    s->ctr.w = (unsigned int)(hi >> 32);
}

// --- distributions (cuRAND's formulas; x * 2^-32 + 2^-33 fused as nvcc fuses it) ------------------
inline float uniform(unsigned int x) {
#if CUCONV_EMU_FMAD
    return fmaf((float)x, CURAND_2POW32_INV, CURAND_2POW32_INV / 2.0f);
#else
    return (float)x * CURAND_2POW32_INV + CURAND_2POW32_INV / 2.0f;
#endif
}
inline double uniform_double_hq(unsigned int x, unsigned int y) {
    unsigned long long z = (unsigned long long)x ^ ((unsigned long long)y << (53 - 32));
#if CUCONV_EMU_FMAD
    return fma((double)z, CURAND_2POW53_INV_DOUBLE, CURAND_2POW53_INV_DOUBLE / 2.0);
#else
    return (double)z * CURAND_2POW53_INV_DOUBLE + CURAND_2POW53_INV_DOUBLE / 2.0;
#endif
}
inline double uniform_double(unsigned int x) {
#if CUCONV_EMU_FMAD
    return fma((double)x, CURAND_2POW32_INV_DOUBLE, CURAND_2POW32_INV_DOUBLE);
#else
    return (double)x * CURAND_2POW32_INV_DOUBLE + CURAND_2POW32_INV_DOUBLE;
#endif
}
inline float2 box_muller(unsigned int x, unsigned int y) {
    float u = uniform(x);
#if CUCONV_EMU_FMAD
    float v = fmaf((float)y, CURAND_2POW32_INV_2PI, CURAND_2POW32_INV_2PI / 2.0f);
#else
    float v = (float)y * CURAND_2POW32_INV_2PI + CURAND_2POW32_INV_2PI / 2.0f;
#endif
    float s = sqrtf(-2.0f * logf(u));
    return float2{sinf(v) * s, cosf(v) * s};
}
inline double2 box_muller_double(unsigned int x0, unsigned int x1, unsigned int y0, unsigned int y1) {
    double u = uniform_double_hq(x0, x1);
    double v = uniform_double_hq(y0, y1);
    double s = sqrt(-2.0 * log(u));
    return double2{sin(2.0 * CURAND_PI_DOUBLE * v) * s, cos(2.0 * CURAND_PI_DOUBLE * v) * s};
}

}  // namespace curand
}  // namespace cuconv_emu

// --- XORWOW ------------------------------------------------------------------------------------------
static inline void skipahead(unsigned long long n, curandStateXORWOW_t* state) {
    cuconv_emu::curand::xorwow_skip(state, n, 0);
    state->d += 362437u * (unsigned int)n;
}
static inline void skipahead_sequence(unsigned long long n, curandStateXORWOW_t* state) {
    cuconv_emu::curand::xorwow_skip(state, n, 64);  // 2^67 steps each; d moves by a multiple of 2^32
}
static inline void curand_init(unsigned long long seed, unsigned long long subsequence, unsigned long long offset,
                               curandStateXORWOW_t* state) {
    unsigned int s0 = (unsigned int)seed ^ 0xaad26b49u, s1 = (unsigned int)(seed >> 32) ^ 0xf7dcefddu;
    unsigned int t0 = 1099087573u * s0, t1 = 2591861531u * s1;
    state->d = 6615241u + t1 + t0;
    state->v[0] = 123456789u + t0;
    state->v[1] = 362436069u ^ t0;
    state->v[2] = 521288629u + t1;
    state->v[3] = 88675123u ^ t1;
    state->v[4] = 5783321u + t0;
    skipahead_sequence(subsequence, state);
    skipahead(offset, state);
    state->boxmuller_flag = state->boxmuller_flag_double = 0;
    state->boxmuller_extra = 0.0f;
    state->boxmuller_extra_double = 0.0;
}
static inline unsigned int curand(curandStateXORWOW_t* state) {
    cuconv_emu::curand::xorwow_step(state->v);
    state->d += 362437u;
    return state->v[4] + state->d;
}

// --- Philox4_32_10 ----------------------------------------------------------------------------------
static inline void skipahead(unsigned long long n, curandStatePhilox4_32_10_t* state) {
    state->STATE += (unsigned int)(n & 3);
    n /= 4;
    if (state->STATE > 3) {
        n += 1;
        state->STATE -= 4;
    }
    cuconv_emu::curand::philox_incr(state, n);
    state->output = cuconv_emu::curand::philox10(state->ctr, state->key);
}
static inline void skipahead_sequence(unsigned long long n, curandStatePhilox4_32_10_t* state) {
    cuconv_emu::curand::philox_incr_hi(state, n);
    state->output = cuconv_emu::curand::philox10(state->ctr, state->key);
}
static inline void curand_init(unsigned long long seed, unsigned long long subsequence, unsigned long long offset,
                               curandStatePhilox4_32_10_t* state) {
    state->ctr = make_uint4(0, 0, 0, 0);
    state->key.x = (unsigned int)seed;
    state->key.y = (unsigned int)(seed >> 32);
    state->STATE = 0;
    state->boxmuller_flag = state->boxmuller_flag_double = 0;
    state->boxmuller_extra = 0.0f;
    state->boxmuller_extra_double = 0.0;
    skipahead_sequence(subsequence, state);
    skipahead(offset, state);
}
static inline unsigned int curand(curandStatePhilox4_32_10_t* state) {
    const unsigned int* out = &state->output.x;
    unsigned int r = out[state->STATE & 3];
    if (++state->STATE == 4) {
        cuconv_emu::curand::philox_incr(state, 1);
        state->output = cuconv_emu::curand::philox10(state->ctr, state->key);
        state->STATE = 0;
    }
    return r;
}
static inline uint4 curand4(curandStatePhilox4_32_10_t* state) {
    uint4 old = state->output;
    cuconv_emu::curand::philox_incr(state, 1);
    state->output = cuconv_emu::curand::philox10(state->ctr, state->key);
    unsigned int both[8] = {old.x, old.y, old.z, old.w, state->output.x, state->output.y, state->output.z,
                            state->output.w};
    unsigned int k = state->STATE & 3;
    return make_uint4(both[k], both[k + 1], both[k + 2], both[k + 3]);
}

// --- distributions, for both generators -------------------------------------------------------------
#define CUCONV_EMU_CURAND_DISTRIBUTIONS(S)                                                                   \
    static inline float curand_uniform(S* state) { return cuconv_emu::curand::uniform(curand(state)); }     \
    static inline float curand_normal(S* state) {                                                           \
        if (state->boxmuller_flag != 1) {                                                                   \
            unsigned int x = curand(state), y = curand(state);                                              \
            float2 v = cuconv_emu::curand::box_muller(x, y);                                                \
            state->boxmuller_extra = v.y;                                                                   \
            state->boxmuller_flag = 1;                                                                      \
            return v.x;                                                                                     \
        }                                                                                                   \
        state->boxmuller_flag = 0;                                                                          \
        return state->boxmuller_extra;                                                                      \
    }                                                                                                       \
    static inline float2 curand_normal2(S* state) {                                                         \
        unsigned int x = curand(state), y = curand(state);                                                  \
        return cuconv_emu::curand::box_muller(x, y);                                                        \
    }                                                                                                       \
    static inline float curand_log_normal(S* state, float mean, float stddev) {                             \
        return expf(mean + stddev * curand_normal(state));                                                  \
    }                                                                                                       \
    static inline double curand_normal_double(S* state) {                                                   \
        if (state->boxmuller_flag_double != 1) {                                                            \
            unsigned int x0 = curand(state), x1 = curand(state), y0 = curand(state), y1 = curand(state);    \
            double2 v = cuconv_emu::curand::box_muller_double(x0, x1, y0, y1);                              \
            state->boxmuller_extra_double = v.y;                                                            \
            state->boxmuller_flag_double = 1;                                                               \
            return v.x;                                                                                     \
        }                                                                                                   \
        state->boxmuller_flag_double = 0;                                                                   \
        return state->boxmuller_extra_double;                                                               \
    }                                                                                                       \
    static inline double curand_log_normal_double(S* state, double mean, double stddev) {                   \
        return exp(mean + stddev * curand_normal_double(state));                                            \
    }
CUCONV_EMU_CURAND_DISTRIBUTIONS(curandStateXORWOW_t)
CUCONV_EMU_CURAND_DISTRIBUTIONS(curandStatePhilox4_32_10_t)
#undef CUCONV_EMU_CURAND_DISTRIBUTIONS

// XORWOW's double uses two draws; Philox's curand_uniform_double one (cuRAND's choices).
static inline double curand_uniform_double(curandStateXORWOW_t* state) {
    unsigned int x = curand(state), y = curand(state);
    return cuconv_emu::curand::uniform_double_hq(x, y);
}
static inline double curand_uniform_double(curandStatePhilox4_32_10_t* state) {
    return cuconv_emu::curand::uniform_double(curand(state));
}
static inline float4 curand_uniform4(curandStatePhilox4_32_10_t* state) {
    uint4 x = curand4(state);
    return make_float4(cuconv_emu::curand::uniform(x.x), cuconv_emu::curand::uniform(x.y),
                       cuconv_emu::curand::uniform(x.z), cuconv_emu::curand::uniform(x.w));
}
static inline double2 curand_uniform2_double(curandStatePhilox4_32_10_t* state) {
    uint4 x = curand4(state);
    return make_double2(cuconv_emu::curand::uniform_double_hq(x.x, x.y),
                        cuconv_emu::curand::uniform_double_hq(x.z, x.w));
}
static inline float4 curand_normal4(curandStatePhilox4_32_10_t* state) {
    uint4 x = curand4(state);
    float2 a = cuconv_emu::curand::box_muller(x.x, x.y), b = cuconv_emu::curand::box_muller(x.z, x.w);
    return make_float4(a.x, a.y, b.x, b.y);
}
static inline double2 curand_normal2_double(curandStatePhilox4_32_10_t* state) {
    uint4 x = curand4(state);
    return cuconv_emu::curand::box_muller_double(x.x, x.y, x.z, x.w);
}
static inline float4 curand_log_normal4(curandStatePhilox4_32_10_t* state, float mean, float stddev) {
    float4 n = curand_normal4(state);
    return make_float4(expf(mean + stddev * n.x), expf(mean + stddev * n.y), expf(mean + stddev * n.z),
                       expf(mean + stddev * n.w));
}

// --- what is not emulated: a compile error naming the function ------------------------------------------
#define CUCONV_EMU_CURAND_NOT_EMULATED(what) \
    static_assert(sizeof(S) == 0, "cuconv emulator: " what " is not emulated (only the XORWOW and Philox4_32_10 " \
                                  "generators are); use curandState or curandStatePhilox4_32_10_t")
template <typename S, cuconv_emu::curand::if_unsupported<S> = 0>
void curand_init(unsigned long long, unsigned long long, unsigned long long, S*) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_init() of this generator (MRG32k3a, MTGP32 or Sobol)");
}
template <typename S, typename... A>
void curand_init(unsigned int*, A..., S*) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_init() of a Sobol quasi-random generator");
}
template <typename S, cuconv_emu::curand::if_unsupported<S> = 0>
unsigned int curand(S*) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand() of this generator (MRG32k3a, MTGP32 or Sobol)");
    return 0;
}
template <typename S, cuconv_emu::curand::if_unsupported<S> = 0>
float curand_uniform(S*) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_uniform() of this generator (MRG32k3a, MTGP32 or Sobol)");
    return 0;
}
template <typename S, cuconv_emu::curand::if_unsupported<S> = 0>
float curand_normal(S*) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_normal() of this generator (MRG32k3a, MTGP32 or Sobol)");
    return 0;
}
template <typename S, typename L>
unsigned int curand_poisson(S*, L) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_poisson()");
    return 0;
}
template <typename S, typename D>
unsigned int curand_discrete(S*, D) {
    CUCONV_EMU_CURAND_NOT_EMULATED("curand_discrete()");
    return 0;
}
#undef CUCONV_EMU_CURAND_NOT_EMULATED
