// tensor_core.h — the emulator's model of the tensor-core PTX that kernels/common.cuh hides
// behind small device functions: mma.sync and ldmatrix (warp collectives), cp.async (per-thread
// deferred copies), fence.proxy.async, mbarrier, and wgmma (warpgroup collectives reading
// shared memory through matrix descriptors). common.cuh's emulator branches call into
// namespace cc_tc_emu; kernels never do. Sources of every rule: docs/wgmma.md and
// /work/shared/research/tensor_cores.md (the PTX ISA sections named there).
//
// Reached through one #include in common.cuh (only when CUCONV_EMULATOR is defined and
// __CUDA_ARCH__ is not), after the prelude: it uses the emulator's runtime (fault reporting,
// the block serial, the dynamic shared-memory window) and its __emu_* collective hooks.
#pragma once

namespace cc_tc_emu {
// The only places that touch the emulator's internals (runtime.h): reporting a fault, and
// telling launches and blocks apart for the per-thread cp.async queues.
[[noreturn]] inline void fault(int kind, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
[[noreturn]] inline void fault(int kind, const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cuconv_emu::fail(kind, cuconv_emu::format("%s", buf));
}
constexpr int kFault = cuconv_emu::kFault, kDivergence = cuconv_emu::kDivergence;
enum MmaKind { kF16k16 = 0, kBf16k16 = 1, kF16k8 = 2, kTf32k8 = 3 };

// Exact conversions on bits (no rounding anywhere: every f16/bf16/tf32 value is a double).
inline double f16_bits(unsigned short h) {
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0x1f) return m ? __builtin_nan("") : s * __builtin_inf();
    if (e == 0) return s * __builtin_ldexp(static_cast<double>(m), -24);          // subnormal
    return s * __builtin_ldexp(static_cast<double>(m | 0x400), e - 25);
}
inline double bits_f32(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return static_cast<double>(f);
}
inline double bf16_bits(unsigned short h) { return bits_f32(static_cast<unsigned>(h) << 16); }
inline double tf32_bits(unsigned u) { return bits_f32(u & 0xffffe000u); }
inline double half_of(unsigned r, int k, MmaKind kind) {
    const unsigned short h = static_cast<unsigned short>((k & 1) ? (r >> 16) : (r & 0xffffu));
    return kind == kBf16k16 ? bf16_bits(h) : f16_bits(h);
}

struct MmaLane {
    unsigned a[4], b[2];
    float c[4], d[4];
};

// A(m,k) and B(k,n) found through the inverse fragment maps (research note §1.2-§1.4).
template <MmaKind KIND>
inline double a_elem(MmaLane* const* L, int m, int k) {
    if (KIND == kTf32k8) return tf32_bits(L[4 * (m % 8) + k % 4]->a[m / 8 + 2 * (k / 4)]);
    if (KIND == kF16k8) return half_of(L[4 * (m % 8) + (k % 8) / 2]->a[m / 8], k, KIND);
    return half_of(L[4 * (m % 8) + (k % 8) / 2]->a[m / 8 + 2 * (k / 8)], k, KIND);
}
template <MmaKind KIND>
inline double b_elem(MmaLane* const* L, int k, int n) {
    if (KIND == kTf32k8) return tf32_bits(L[4 * n + k % 4]->b[k / 4]);
    if (KIND == kF16k8) return half_of(L[4 * n + k / 2]->b[0], k, KIND);
    return half_of(L[4 * n + (k % 8) / 2]->b[k / 8], k, KIND);
}

template <MmaKind KIND>
inline void mma_collective(void** lanes, void*) {
    MmaLane* const* L = reinterpret_cast<MmaLane* const*>(lanes);
    for (int l = 0; l < 32; ++l)
        if (!L[l])
            fault(kDivergence, "mma.sync in a partial warp: lane %d of warp %u does not exist (blockDim must be a "
                               "multiple of 32)", l, __emu_warp_id());
    constexpr int K = (KIND == kF16k16 || KIND == kBf16k16) ? 16 : 8;
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i) {
            const int m = g + 8 * (i >> 1), n = 2 * t + (i & 1);
            double s = L[l]->c[i];
            for (int k = 0; k < K; ++k) s += a_elem<KIND>(L, m, k) * b_elem<KIND>(L, k, n);
            L[l]->d[i] = static_cast<float>(s);   // one round-to-nearest-even per instruction
        }
    }
}

template <MmaKind KIND, int NA, int NB>
inline void mma(float d[4], const unsigned* a, const unsigned* b, const float c[4]) {
    MmaLane me{};
    for (int i = 0; i < NA; ++i) me.a[i] = a[i];
    for (int i = 0; i < NB; ++i) me.b[i] = b[i];
    for (int i = 0; i < 4; ++i) me.c[i] = c[i];   // read before d is written: d may alias c
    __emu_warp_collective(&me, &mma_collective<KIND>, nullptr);
    for (int i = 0; i < 4; ++i) d[i] = me.d[i];
}

struct LdsmLane {
    const unsigned char* row;
    unsigned r[4];
};

template <int NUM, bool TRANS>
inline void ldmatrix_collective(void** lanes, void*) {
    LdsmLane* const* L = reinterpret_cast<LdsmLane* const*>(lanes);
    for (int l = 0; l < 32; ++l)
        if (!L[l]) fault(kDivergence, "ldmatrix in a partial warp: lane %d of warp %u does not exist", l, __emu_warp_id());
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        for (int j = 0; j < NUM; ++j) {
            unsigned v;
            if (!TRANS) {
                memcpy(&v, L[8 * j + g]->row + 4 * t, 4);   // row g, columns 2t, 2t+1
            } else {
                unsigned short lo, hi;                        // column g, rows 2t, 2t+1
                memcpy(&lo, L[8 * j + 2 * t]->row + 2 * g, 2);
                memcpy(&hi, L[8 * j + 2 * t + 1]->row + 2 * g, 2);
                v = static_cast<unsigned>(lo) | (static_cast<unsigned>(hi) << 16);
            }
            L[l]->r[j] = v;
        }
    }
}

template <int NUM, bool TRANS>
inline void ldmatrix(unsigned* r, const void* row) {
    const unsigned lane = __emu_lane_id();
    // Only the lanes that supply a row address are checked (sm_80+ ignores the others).
    if (lane < 8u * NUM && (reinterpret_cast<size_t>(row) & 15u))
        fault(kFault, "ldmatrix: lane %u gives row address %p, which is not 16-byte aligned", lane, row);
    LdsmLane me{static_cast<const unsigned char*>(row), {0, 0, 0, 0}};
    __emu_warp_collective(&me, &ldmatrix_collective<NUM, TRANS>, nullptr);
    for (int j = 0; j < NUM; ++j) r[j] = me.r[j];
}

// ================================================================== shared memory, proxies
// The emulated shared-memory address space (what __cvta_generic_to_shared gives on the device,
// and what the start-address field of a wgmma matrix descriptor holds) is the offset into the
// block's dynamic shared memory; its base is 4096-byte aligned, so the swizzle patterns of
// wgmma (anchored at 256/512/1024-byte boundaries of that space) line up as on the device when
// the kernel aligns its tiles in that space. Static __shared__ arrays are outside it: they
// cannot hold wgmma operands here (the kernels keep operands in dynamic shared memory).
inline unsigned char* smem_base() { return static_cast<unsigned char*>(cuconv_emu::dynamic_shared_memory()); }
inline bool smem_offset(const void* p, size_t bytes, size_t* off) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (c < smem_base() || c + bytes > smem_base() + cuconv_emu::g_engine.shared_mem) return false;
    *off = static_cast<size_t>(c - smem_base());
    return true;
}
inline unsigned smem_addr(const void* p) {
    size_t off;
    if (!smem_offset(p, 1, &off))
        fault(kFault, "shared-memory address of %p requested, which is not inside this block's %zu bytes of dynamic "
                      "shared memory (the emulator's wgmma/mbarrier model covers dynamic shared memory only)",
              p, cuconv_emu::g_engine.shared_mem);
    return static_cast<unsigned>(off);
}

// Which generic-proxy writes the async proxy (wgmma) may not see yet, per byte of dynamic
// shared memory: 0 = nothing pending; 1 + t = written by a cp.async of thread t, which has not
// executed fence.proxy.async since; kInFlight | (1 + t) = a cp.async of thread t that has not
// completed (deferred mode). A wgmma.mma_async that reads a marked byte is a fault. Only
// cp.async writes are tracked; plain st.shared stores are not.
constexpr unsigned short kInFlight = 0x8000;
inline unsigned short g_shadow[cuconv_emu::kMaxDynamicShared];
inline unsigned long long g_shadow_block = ~0ull;
// The shadow and the warpgroup/operation records are the emulator's bookkeeping, shared by
// the fibers of a block with no happens-before TSan could see: CUCONV_EMU_INTERNAL hides their
// accesses from ThreadSanitizer (the kernel's own memory accesses stay visible).
inline void shadow_block() {
    CUCONV_EMU_INTERNAL;
    const unsigned long long serial = cuconv_emu::g_engine.block_serial;
    if (g_shadow_block != serial) {
        memset(g_shadow, 0, cuconv_emu::g_engine.shared_mem * sizeof(unsigned short));
        g_shadow_block = serial;
    }
}

// ================================================================== per-thread state
// cp.async: a queue of pending copies, grouped by commit_group. wgmma: the fence epoch, the
// operations issued (and the wgmma-group each was committed to) and the accumulator fragments
// whose results are still pending.
struct PendingCopy {
    void* dst;
    const void* src;
    int bytes, src_bytes;
};
struct Range {
    unsigned off;
    unsigned short len;
};
struct AccState;
struct FragRef {           // an accumulator fragment with a pending result
    AccState* st;
    float* d;
    const float* pend;
    int nreg;
    int group;             // -1: not committed yet
};
struct OpRef {             // an issued wgmma.mma_async
    int warpgroup;
    unsigned long long serial;
    int group;
};
struct ThreadState {
    unsigned long long stamp_launch = ~0ull;   // which launch and block the state belongs to
    unsigned long long stamp_block = ~0ull;
    PendingCopy q[128];
    int n = 0;                            // queued copies (committed ones first)
    int group_end[64];                    // end index (into q) of each committed, pending group
    int ngroups = 0;
    Range unfenced[256];                  // ring: cp.async destinations not yet followed by fence.proxy.async
    int unfenced_head = 0, unfenced_n = 0;
    int fence_epoch = 0;                  // wgmma.fence executed so far in this block
    int wg_committed = 0;                 // wgmma-groups committed so far
    OpRef ops[64];
    int nops = 0;
    FragRef frags[32];
    int nfrags = 0;
};
inline ThreadState g_threads[1024];

inline unsigned my_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline ThreadState& mine() {
    const unsigned tid = my_tid();
    ThreadState& s = g_threads[tid & 1023u];
    const cuconv_emu::Engine& e = cuconv_emu::g_engine;
    if (s.stamp_block != e.block_serial) {
        // A new block. Copies left over from the previous block of the same launch were never
        // waited for: undefined on the device, an error here. (A launch that failed leaves
        // its state behind; the next launch just starts afresh.)
        if (s.n > 0 && s.stamp_launch == e.launch_serial)
            fault(kFault, "cp.async: thread %u of the previous block exited with %d copies not waited for "
                          "(cp.async.wait_group/wait_all missing)", tid, s.n);
        s.n = 0;
        s.ngroups = 0;
        s.unfenced_head = s.unfenced_n = 0;
        s.fence_epoch = 0;
        s.wg_committed = 0;
        s.nops = 0;
        s.nfrags = 0;
        s.stamp_launch = e.launch_serial;
        s.stamp_block = e.block_serial;
    }
    return s;
}

// ================================================================== cp.async
// Eager copies (at issue) with -DCUCONV_EMU_CP_ASYNC_EAGER, or CUCONV_EMU_CP_ASYNC=eager in the
// environment the emulator's worker process starts with; deferred otherwise.
inline bool eager_mode() {
#if defined(CUCONV_EMU_CP_ASYNC_EAGER)
    return true;
#else
    static const bool eager = [] {
        const char* m = getenv("CUCONV_EMU_CP_ASYNC");
        return m != nullptr && strcmp(m, "eager") == 0;
    }();
    return eager;
#endif
}

inline void mark(size_t off, int bytes, unsigned short v) {
    for (int i = 0; i < bytes; ++i) g_shadow[off + i] = v;
}

inline void perform(ThreadState& s, const PendingCopy& c) {
    if (c.src_bytes > 0) memcpy(c.dst, c.src, static_cast<size_t>(c.src_bytes));
    if (c.src_bytes < c.bytes) memset(static_cast<char*>(c.dst) + c.src_bytes, 0, static_cast<size_t>(c.bytes - c.src_bytes));
    size_t off;
    if (!smem_offset(c.dst, static_cast<size_t>(c.bytes), &off)) return;
    CUCONV_EMU_INTERNAL;
    shadow_block();
    const unsigned short me = static_cast<unsigned short>(1 + (&s - g_threads));
    mark(off, c.bytes, me);
    if (s.unfenced_n == 256) {   // forget the oldest range (a write 256 copies ago)
        const Range& r = s.unfenced[s.unfenced_head];
        for (unsigned i = 0; i < r.len; ++i)
            if (g_shadow[r.off + i] == me) g_shadow[r.off + i] = 0;
        s.unfenced_head = (s.unfenced_head + 1) & 255;
        --s.unfenced_n;
    }
    s.unfenced[(s.unfenced_head + s.unfenced_n++) & 255] = Range{static_cast<unsigned>(off), static_cast<unsigned short>(c.bytes)};
}

template <int BYTES>
inline void cp_async(void* dst, const void* src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    if (src_bytes < 0 || src_bytes > BYTES)
        fault(kFault, "cp.async: src-size %d outside 0..%d (cp-size)", src_bytes, BYTES);
    if ((reinterpret_cast<size_t>(dst) % BYTES) || (reinterpret_cast<size_t>(src) % BYTES))
        fault(kFault, "cp.async of %d bytes: dst %p / src %p not %d-byte aligned", BYTES, dst, src, BYTES);
    ThreadState& s = mine();
    const PendingCopy c{dst, src, BYTES, src_bytes};
    if (eager_mode()) {
        perform(s, c);
        return;
    }
    if (s.n == 128)
        fault(kFault, "cp.async: more than 128 copies pending in one thread (emulator limit)");
    memset(dst, 0xff, BYTES);   // poison: reading before the wait gives NaN
    size_t off;
    if (smem_offset(dst, BYTES, &off)) {
        CUCONV_EMU_INTERNAL;
        shadow_block();
        mark(off, BYTES, static_cast<unsigned short>(kInFlight | (1 + (&s - g_threads))));
    }
    s.q[s.n++] = c;
}

inline void commit() {
    ThreadState& s = mine();
    // Empty groups are kept: they count in wait_group N like any other group.
    if (s.ngroups == 64) fault(kFault, "cp.async: more than 64 groups pending (emulator limit)");
    s.group_end[s.ngroups++] = s.n;
}

// Complete every committed group except the `keep` most recent ones, in commit order.
inline void wait_group(int keep) {
    ThreadState& s = mine();
    if (s.ngroups <= keep) return;
    const int done = s.ngroups - keep;
    const int upto = s.group_end[done - 1];
    for (int i = 0; i < upto; ++i) perform(s, s.q[i]);
    for (int i = upto; i < s.n; ++i) s.q[i - upto] = s.q[i];
    s.n -= upto;
    for (int i = done; i < s.ngroups; ++i) s.group_end[i - done] = s.group_end[i] - upto;
    s.ngroups -= done;
}

// fence.proxy.async: this thread's completed generic-proxy writes (its cp.async copies) become
// visible to the async proxy. Copies still in flight are not covered (PTX: the fence orders
// the thread's *prior* memory accesses; an incomplete cp.async has not been performed yet).
inline void fence_proxy_async() {
    ThreadState& s = mine();
    CUCONV_EMU_INTERNAL;
    shadow_block();
    const unsigned short me = static_cast<unsigned short>(1 + (&s - g_threads));
    for (int k = 0; k < s.unfenced_n; ++k) {
        const Range& r = s.unfenced[(s.unfenced_head + k) & 255];
        for (unsigned i = 0; i < r.len; ++i)
            if (g_shadow[r.off + i] == me) g_shadow[r.off + i] = 0;
    }
    s.unfenced_head = s.unfenced_n = 0;
}

// ================================================================== mbarrier
// An mbarrier is a 64-bit shared-memory object; its device encoding is opaque ("the contents
// of an mbarrier object are not accessible"), so here the word holds: pending arrivals (bits
// 0-19), expected arrivals (20-39), the current phase's parity (bit 55) and a tag (bits 56-63)
// that catches use of an uninitialised barrier. arrive: pending - 1; at 0 the phase completes:
// parity flips and pending is reset to expected. test_wait.parity(P) is true once the phase
// with parity P has completed, i.e. while the current phase's parity differs from P.
constexpr unsigned long long kBarTag = 0xa5ull << 56, kBarPhase = 1ull << 55, kBarMask = (1ull << 20) - 1;
inline unsigned long long* bar_word(void* bar, const char* what) {
    if (reinterpret_cast<size_t>(bar) & 7) fault(kFault, "%s: mbarrier object %p is not 8-byte aligned", what, bar);
    return static_cast<unsigned long long*>(bar);
}
inline void mbarrier_init(void* bar, unsigned count) {
    unsigned long long* w = bar_word(bar, "mbarrier.init");
    if (count == 0 || count > kBarMask) fault(kFault, "mbarrier.init: count %u outside 1..2^20-1", count);
    __atomic_store_n(w, kBarTag | (static_cast<unsigned long long>(count) << 20) | count, __ATOMIC_RELEASE);
}
inline unsigned long long checked(void* bar, const char* what) {
    unsigned long long* w = bar_word(bar, what);
    const unsigned long long v = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    if ((v & (0xffull << 56)) != kBarTag)
        fault(kFault, "%s on an mbarrier at %p that was not initialised (mbarrier.init missing, or the object was "
                      "overwritten)", what, bar);
    return v;
}
// A read-modify-write with release semantics (an arrive "releases" the arriving thread's prior
// writes; a read-modify-write keeps every arrival in the release sequence the waiter acquires).
inline void mbarrier_arrive(void* bar) {
    unsigned long long w = checked(bar, "mbarrier.arrive");
    unsigned long long next;
    do {
        const unsigned long long expected = (w >> 20) & kBarMask;
        unsigned long long pending = w & kBarMask;
        next = w;
        if (--pending == 0) {
            next ^= kBarPhase;
            pending = expected;
        }
        next = (next & ~kBarMask) | pending;
    } while (!__atomic_compare_exchange_n(static_cast<unsigned long long*>(bar), &w, next, false, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
}
inline bool mbarrier_test_wait_parity(void* bar, unsigned parity) {
    const unsigned long long w = checked(bar, "mbarrier.try_wait.parity");
    return ((w & kBarPhase) ? 1u : 0u) != (parity & 1u);
}
// try_wait in a loop, letting the other threads run between tries. A phase that never
// completes (an arrival missing) would spin until the launch times out; stop it earlier.
inline void mbarrier_wait_parity(void* bar, unsigned parity) {
    for (long spins = 0; !mbarrier_test_wait_parity(bar, parity); ++spins) {
        if (spins > 400000)
            fault(kDivergence, "mbarrier wait (parity %u) at %p never completes: the phase is missing arrivals "
                               "(%llu of %llu still pending) — an arrive skipped, or a wait for the wrong phase",
                  parity & 1u, bar, checked(bar, "mbarrier wait") & kBarMask,
                  (checked(bar, "mbarrier wait") >> 20) & kBarMask);
        cuconv_emu::yield();
    }
}

// ================================================================== wgmma (warpgroup MMA)
// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}: D (64 x N, f32) = A (64 x 16) B (16 x N)
// + D, A and B read from shared memory through matrix descriptors, D in the registers of the
// 128 threads of a warpgroup (4 consecutive warps, the first a multiple of 4). Semantics, with
// the PTX ISA sections they come from (docs/wgmma.md has the details):
//   * descriptor ("Matrix Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading-
//     dimension byte offset >> 4, 32-45 stride-dimension byte offset >> 4, 49-51 base offset,
//     62-63 swizzle (0 none, 1 128 B, 2 64 B, 3 32 B); other bits reserved (a fault here);
//   * canonical layouts ("Canonical Layouts", in bytes for 16-bit elements, T = 8):
//       K-major, no swizzle:  (row, k) -> start + (row/8)·SBO + (k/8)·LBO + (row%8)·16 + (k%8)·2
//       K-major, S-byte swizzle (S = 32/64/128): start + (row/8)·SBO + (row%8)·S + 2k (LBO unused)
//       MN-major, no swizzle: (mn, k) -> start + (mn%8)·2 + (mn/8)·SBO + (k%8)·16 + (k/8)·LBO
//       MN-major, swizzled:   start + (mn%8)·2 + ((mn/8)%(S/16))·16 + (mn/(8·S/16))·LBO + (k%8)·S + (k/8)·SBO
//     then the swizzle Swizzle<log2(S/16), 4, 3> on the byte address: bits 4.. ^= bits 7.. ;
//     the pattern is anchored at S·8-byte boundaries of the shared address space; a non-zero
//     base offset (for a pattern starting elsewhere) is not modelled and is a fault;
//   * accumulator ("Matrix Fragments for wgmma.mma_async.m64nNk16", CuTe CLayout_64xN): thread
//     (warp w of the warpgroup, lane g·4 + t) holds d[i] = D[16w + g + 8·((i>>1)&1)][8·(i>>2) + 2t + (i&1)];
//   * arithmetic: exact products, summed in double, one rounding to f32 per instruction (as the
//     mma.sync model above);
//   * ordering ("wgmma.fence", "wgmma.commit_group", "wgmma.wait_group", "Async Proxy"): a
//     wgmma.fence must precede the first wgmma and separate any register access to an
//     accumulator from a wgmma on it (chained wgmma of one shape excepted); the accumulator is
//     not accessible until a wgmma.wait_group covers the wgmma; the shared memory it reads must
//     have been made visible to the async proxy (fence.proxy.async after cp.async) and must not
//     change until that wait. Each of these is checked: accumulators are read through
//     CcWgmmaAcc::operator[] (common.cuh), which faults while a result is pending; the operand
//     bytes are snapshotted at issue and compared at each thread's covering wait_group.
// The products are computed at issue (from the snapshot), so the result is the same whenever
// the hardware would read; the result lands in the registers at the covering wait_group.
struct AccState {
    long long pending = -1;   // serial of the wgmma whose result the fragment waits for
    int access_epoch = -1;    // fence epoch of the last register access
};

enum WgType { kWgF16 = 0, kWgBf16 = 1 };
struct WgLane {
    // what every warp must agree on
    int type, n, trans_a, trans_b, scale_d;
    unsigned long long desc_a, desc_b;
    // this lane's registers
    float* d;
    float* pend;
    AccState* st;
    long long serial;         // out: the operation's serial
};

constexpr int kOpsInFlight = 32;
struct OpRecord {
    long long serial = -1;
    bool verified = false;
    int nchunks = 0;
    unsigned off[2 * (64 + 256)];
    unsigned char bytes[2 * (64 + 256)][16];
};
struct WarpgroupState {
    unsigned long long block = ~0ull;
    unsigned arrived = 0;        // warps (bits 0-3) that have deposited their lanes
    unsigned generation = 0;     // +1 per completed wgmma
    long long next_serial = 0;
    WgLane* lanes[128];
    OpRecord ops[kOpsInFlight];
};
inline WarpgroupState g_warpgroups[8];

inline WarpgroupState& warpgroup_of(unsigned warp) {
    CUCONV_EMU_INTERNAL;
    WarpgroupState& g = g_warpgroups[(warp >> 2) & 7u];
    if (g.block != cuconv_emu::g_engine.block_serial) {
        g.block = cuconv_emu::g_engine.block_serial;
        g.arrived = 0;
        g.next_serial = 0;
        for (OpRecord& r : g.ops) r.serial = -1;
    }
    return g;
}

struct Desc {
    unsigned start, lbo, sbo, base, swizzle;   // bytes; swizzle width in bytes (0: none)
};
inline Desc decode(unsigned long long d, const char* which) {
    const unsigned long long reserved = (3ull << 14) | (3ull << 30) | (7ull << 46) | (0x3ffull << 52);
    if (d & reserved)
        fault(kFault, "wgmma.mma_async: matrix descriptor %s = 0x%016llx sets reserved bits (0x%016llx)", which, d,
              d & reserved);
    static const unsigned widths[4] = {0, 128, 64, 32};
    Desc r{static_cast<unsigned>(d & 0x3fff) << 4, static_cast<unsigned>((d >> 16) & 0x3fff) << 4,
           static_cast<unsigned>((d >> 32) & 0x3fff) << 4, static_cast<unsigned>((d >> 49) & 7), widths[d >> 62]};
    if (r.base != 0 && r.swizzle != 0)
        fault(kFault, "wgmma.mma_async: descriptor %s has base offset %u; the emulator models only swizzle patterns "
                      "that start on their natural boundary (base offset 0): align the tile to %u bytes", which,
              r.base, r.swizzle * 8);
    return r;
}

// Shared address of the 16-bit element (row, k): row is M (for A) or N (for B), k in 0..15.
inline unsigned element_addr(const Desc& D, bool mn_major, int row, int k) {
    unsigned L;
    const unsigned S = D.swizzle;
    if (!mn_major) {
        if (S == 0) L = D.start + (row / 8) * D.sbo + (k / 8) * D.lbo + (row % 8) * 16 + (k % 8) * 2;
        else L = D.start + (row / 8) * D.sbo + (row % 8) * S + 2 * k;
    } else {
        if (S == 0) L = D.start + (row % 8) * 2 + (row / 8) * D.sbo + (k % 8) * 16 + (k / 8) * D.lbo;
        else {
            const unsigned per = S / 16;   // 16-byte chunks per swizzle row
            L = D.start + (row % 8) * 2 + ((row / 8) % per) * 16 + (row / (8 * per)) * D.lbo + (k % 8) * S +
                (k / 8) * D.sbo;
        }
    }
    if (S) L ^= ((L >> 7) & (S / 16 - 1)) << 4;
    return L & 0x3ffffu;
}

inline double elem16(unsigned short h, int type) { return type == kWgBf16 ? bf16_bits(h) : f16_bits(h); }

// Read one operand (rows x 16) through its descriptor, checking bounds and the proxy shadow,
// and record the 16-byte chunks it touched in the operation's snapshot.
inline void read_operand(double* out, int rows, const Desc& D, bool mn_major, int type, OpRecord& rec,
                         const char* which, unsigned warpgroup) {
    CUCONV_EMU_INTERNAL;
    const size_t limit = cuconv_emu::g_engine.shared_mem;
    shadow_block();
    unsigned char* base = smem_base();
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < 16; ++k) {
            const unsigned a = element_addr(D, mn_major, r, k);
            if (a + 2 > limit)
                fault(kFault, "wgmma.mma_async (warpgroup %u): operand %s element (%d, %d) at shared address 0x%x is "
                              "outside the block's %zu bytes of dynamic shared memory", warpgroup, which, r, k, a, limit);
            const unsigned short sh = g_shadow[a];
            if (sh & kInFlight)
                fault(kFault, "wgmma.mma_async (warpgroup %u) reads operand %s at shared address 0x%x, which a cp.async "
                              "of thread %u has not completed yet (cp.async.wait_group and a barrier missing before "
                              "the wgmma)", warpgroup, which, a, (sh & ~kInFlight) - 1u);
            if (sh)
                fault(kFault, "wgmma.mma_async (warpgroup %u) reads operand %s at shared address 0x%x, written by a "
                              "cp.async of thread %u that executed no fence.proxy.async afterwards: generic-proxy "
                              "writes are not visible to the async proxy without it", warpgroup, which, a, sh - 1u);
            unsigned short h;
            memcpy(&h, base + a, 2);
            out[r * 16 + k] = elem16(h, type);
            const unsigned chunk = a & ~15u;
            bool seen = false;
            for (int c = rec.nchunks - 1; c >= 0 && c >= rec.nchunks - 4; --c) seen |= rec.off[c] == chunk;
            if (!seen) {
                for (int c = 0; c < rec.nchunks && !seen; ++c) seen = rec.off[c] == chunk;
                if (!seen) {
                    if (rec.nchunks == 2 * (64 + 256)) fault(kFault, "wgmma emulation: operand snapshot overflow");
                    rec.off[rec.nchunks] = chunk;
                    memcpy(rec.bytes[rec.nchunks], base + chunk, 16);
                    ++rec.nchunks;
                }
            }
        }
}

inline void wgmma_compute(WarpgroupState& g, unsigned warpgroup) {
    const WgLane& op = *g.lanes[0];
    const long long serial = g.next_serial++;
    OpRecord& rec = g.ops[serial % kOpsInFlight];
    if (rec.serial >= 0 && !rec.verified)
        fault(kFault, "wgmma.mma_async: more than %d operations of warpgroup %u issued without a wgmma.wait_group "
                      "completing the oldest (emulator limit)", kOpsInFlight, warpgroup);
    rec.serial = serial;
    rec.verified = false;
    rec.nchunks = 0;
    const Desc da = decode(op.desc_a, "a-desc"), db = decode(op.desc_b, "b-desc");
    static double A[64 * 16], B[256 * 16];
    read_operand(A, 64, da, op.trans_a != 0, op.type, rec, "A", warpgroup);
    read_operand(B, op.n, db, op.trans_b != 0, op.type, rec, "B", warpgroup);
    for (int w = 0; w < 4; ++w)
        for (int l = 0; l < 32; ++l) {
            WgLane& me = *g.lanes[32 * w + l];
            const int gq = l >> 2, t = l & 3;
            const float* in = me.st->pending >= 0 ? me.pend : me.d;   // chained wgmma: the previous result
            for (int i = 0; i < op.n / 2; ++i) {
                const int m = 16 * w + gq + 8 * ((i >> 1) & 1), n = 8 * (i >> 2) + 2 * t + (i & 1);
                double s = op.scale_d ? static_cast<double>(in[i]) : 0.0;
                for (int k = 0; k < 16; ++k) s += A[m * 16 + k] * B[n * 16 + k];
                me.pend[i] = static_cast<float>(s);   // one round-to-nearest-even per instruction
            }
            me.st->pending = serial;
            me.serial = serial;
        }
}

// Runs once per warp (by its last lane): deposit the warp's 32 lanes; the fourth warp of the
// warpgroup to arrive computes.
inline void wgmma_deposit(void** lanes, void*) {
    CUCONV_EMU_INTERNAL;
    const unsigned warp = __emu_warp_id();
    WarpgroupState& g = warpgroup_of(warp);
    const unsigned wg = warp >> 2, w = warp & 3u;
    const cuconv_emu::Engine& e = cuconv_emu::g_engine;
    if ((wg + 1) * 4 > e.warps.size)
        fault(kDivergence, "wgmma.mma_async in warp %u, whose warpgroup (warps %u-%u) is incomplete: blockDim must be a "
                           "multiple of 128", warp, wg * 4, wg * 4 + 3);
    for (int l = 0; l < 32; ++l)
        if (!lanes[l])
            fault(kDivergence, "wgmma.mma_async in a partial warp: lane %d of warp %u does not exist", l, warp);
    for (unsigned o = 0; o < 4; ++o)
        if (e.warps[wg * 4 + o].exited)
            fault(kDivergence, "wgmma.mma_async reached by warp %u while warp %u of its warpgroup has exited lanes "
                               "(.aligned: every thread of the warpgroup must execute it)", warp, wg * 4 + o);
    WgLane* first = nullptr;
    for (unsigned o = 0; o < 4 && !first; ++o)
        if (g.arrived >> o & 1u) first = g.lanes[32 * o];
    for (int l = 0; l < 32; ++l) {
        WgLane* me = static_cast<WgLane*>(lanes[l]);
        const WgLane* ref = first ? first : static_cast<WgLane*>(lanes[0]);
        if (me->type != ref->type || me->n != ref->n || me->trans_a != ref->trans_a || me->trans_b != ref->trans_b ||
            me->scale_d != ref->scale_d || me->desc_a != ref->desc_a || me->desc_b != ref->desc_b)
            fault(kDivergence, "wgmma.mma_async: lane %d of warp %u (warpgroup %u) differs from the rest of the "
                               "warpgroup (shape/type/transpose/scale-d, or descriptors 0x%llx/0x%llx vs "
                               "0x%llx/0x%llx): descriptors must be the same across the warpgroup", l, warp, wg,
                  me->desc_a, me->desc_b, ref->desc_a, ref->desc_b);
        g.lanes[32 * w + l] = me;
    }
    if (g.arrived >> w & 1u) fault(kDivergence, "wgmma.mma_async: warp %u arrived twice", warp);
    g.arrived |= 1u << w;
    if (g.arrived == 15u) {
        g.arrived = 0;
        wgmma_compute(g, wg);
        __atomic_store_n(&g.generation, g.generation + 1, __ATOMIC_RELEASE);
    }
}

inline void wgmma(int type, int n, float* d, float* pend, AccState* st, unsigned long long desc_a,
                  unsigned long long desc_b, int scale_d, int trans_a, int trans_b) {
    ThreadState& s = mine();
    const unsigned warp = __emu_warp_id(), lane = __emu_lane_id();
    if (s.fence_epoch == 0)
        fault(kFault, "wgmma.mma_async in thread %u without a wgmma.fence before it (required before the first "
                      "wgmma.mma_async of a warpgroup)", my_tid());
    if (st->pending < 0 && st->access_epoch == s.fence_epoch)
        fault(kFault, "wgmma.mma_async in thread %u: its accumulator registers were accessed after the last "
                      "wgmma.fence (a wgmma.fence must separate register accesses from the wgmma that uses them)",
              my_tid());
    if (st->pending >= 0) {   // chained: must be one this thread issued and has not completed
        bool found = false;
        for (int i = 0; i < s.nfrags; ++i) found |= s.frags[i].st == st;
        if (!found) fault(kFault, "wgmma emulation: pending accumulator without a record");
    }
    WarpgroupState& g = warpgroup_of(warp);
    const unsigned gen = __atomic_load_n(&g.generation, __ATOMIC_ACQUIRE);
    WgLane me{type, n, trans_a, trans_b, scale_d, desc_a, desc_b, d, pend, st, -1};
    __emu_warp_collective(&me, &wgmma_deposit, nullptr);
    for (long spins = 0; __atomic_load_n(&g.generation, __ATOMIC_ACQUIRE) == gen; ++spins) {
        if (spins > 400000) {
            unsigned missing = 0;
            for (unsigned o = 0; o < 4; ++o)
                if (!(g.arrived >> o & 1u)) missing |= 1u << o;
            fault(kDivergence, "wgmma.mma_async: warp %u (lane %u) waits for the rest of warpgroup %u, but warps with "
                               "mask 0x%x (of the warpgroup) never reach the same wgmma (.aligned violated, or they "
                               "wait at a barrier)", warp, lane, warp >> 2, missing);
        }
        cuconv_emu::yield();
    }
    if (s.nops == 64) fault(kFault, "wgmma: more than 64 operations pending in one thread (emulator limit)");
    s.ops[s.nops++] = OpRef{static_cast<int>(warp >> 2), static_cast<unsigned long long>(me.serial), -1};
    int f = 0;
    while (f < s.nfrags && s.frags[f].st != st) ++f;
    if (f == s.nfrags) {
        if (s.nfrags == 32) fault(kFault, "wgmma: more than 32 accumulator fragments pending (emulator limit)");
        ++s.nfrags;
    }
    s.frags[f] = FragRef{st, d, pend, n / 2, -1};
}

inline void wgmma_fence() { ++mine().fence_epoch; }

inline void wgmma_commit() {
    ThreadState& s = mine();
    for (int i = 0; i < s.nops; ++i)
        if (s.ops[i].group < 0) s.ops[i].group = s.wg_committed;
    for (int i = 0; i < s.nfrags; ++i)
        if (s.frags[i].group < 0) s.frags[i].group = s.wg_committed;
    ++s.wg_committed;
}

// The operand bytes an operation read must be unchanged at every covering wait_group of every
// thread of its warpgroup: a thread may rewrite them only once the operation is complete for
// it (its own wait), or after a barrier that follows the waits of the others.
inline void verify(const OpRef& o) {
    CUCONV_EMU_INTERNAL;
    WarpgroupState& g = warpgroup_of(static_cast<unsigned>(o.warpgroup) * 4);
    OpRecord& rec = g.ops[o.serial % kOpsInFlight];
    if (rec.serial != static_cast<long long>(o.serial)) return;
    rec.verified = true;
    const unsigned char* base = smem_base();
    for (int c = 0; c < rec.nchunks; ++c)
        if (memcmp(base + rec.off[c], rec.bytes[c], 16) != 0)
            fault(kFault, "shared memory at 0x%x..0x%x, read by wgmma.mma_async #%llu of warpgroup %d, changed before "
                          "the wgmma.wait_group that completes it in thread %u: a pending wgmma's operand was "
                          "overwritten (a stage refilled before the wgmma reading it was waited for)",
                  rec.off[c], rec.off[c] + 15, static_cast<unsigned long long>(o.serial), o.warpgroup, my_tid());
}

// wgmma.wait_group N: every wgmma-group of this thread except the N most recent is complete.
inline void wgmma_wait(int keep) {
    ThreadState& s = mine();
    const int limit = s.wg_committed - keep;   // groups 0 .. limit-1 complete
    int j = 0;
    for (int i = 0; i < s.nops; ++i) {
        if (s.ops[i].group >= 0 && s.ops[i].group < limit) verify(s.ops[i]);
        else s.ops[j++] = s.ops[i];
    }
    s.nops = j;
    j = 0;
    for (int i = 0; i < s.nfrags; ++i) {
        FragRef& f = s.frags[i];
        if (f.group >= 0 && f.group < limit) {
            for (int r = 0; r < f.nreg; ++r) f.d[r] = f.pend[r];
            f.st->pending = -1;
        } else {
            s.frags[j++] = f;
        }
    }
    s.nfrags = j;
}

// Every register access to an accumulator fragment (CcWgmmaAcc::operator[]) comes here.
inline void acc_access(AccState& st) {
    if (st.pending >= 0)
        fault(kFault, "thread %u accesses an accumulator register of wgmma.mma_async #%lld before a "
                      "wgmma.wait_group covering it (commit_group + wait_group missing, or waiting too few groups)",
              my_tid(), st.pending);
    st.access_epoch = mine().fence_epoch;
}
}  // namespace cc_tc_emu
