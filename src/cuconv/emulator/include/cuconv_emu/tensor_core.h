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
    unsigned bar_inits[64];               // mbarrier.init of this thread not yet fenced for the async proxy
    int nbar_inits = 0;
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
        s.nbar_inits = 0;
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

inline void fence_mbarrier_init();
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
    fence_mbarrier_init();   // a proxy fence covers the thread's mbarrier.init too
}

// ================================================================== mbarrier
// An mbarrier is a 64-bit shared-memory object; its device encoding is opaque ("the contents
// of an mbarrier object are not accessible"), so here the word holds: pending arrivals (bits
// 0-19), expected arrivals (20-39), the current phase's parity (bit 55) and a tag (bits 56-63)
// that catches use of an uninitialised barrier. Its transaction count (tx-count, sm_90) lives
// beside it in BarSide, one per 8 bytes of dynamic shared memory. arrive: pending - 1;
// expect-tx(n): tx + n; complete-tx(n) (a TMA load that finished): tx - n. The phase completes
// when pending arrivals and tx-count are both 0 ("mbarrier": phase completion): parity flips,
// pending is reset to expected. test_wait.parity(P) is true once the phase with parity P has
// completed, i.e. while the current phase's parity differs from P.
constexpr unsigned long long kBarTag = 0xa5ull << 56, kBarPhase = 1ull << 55, kBarMask = (1ull << 20) - 1;
constexpr int kTxLimit = (1 << 20) - 1;   // tx-count range [-(2^20-1), 2^20-1] (PTX ISA "tx-count")
struct BarSide {
    int tx;                    // transaction count of the current phase
    unsigned short init_by;    // 1 + thread that ran mbarrier.init (0: not in this block)
    unsigned char unfenced;    // the init is not yet visible to the async proxy
    unsigned char pad;
};
inline BarSide g_bar_side[cuconv_emu::kMaxDynamicShared / 8];
inline unsigned long long g_bar_side_block = ~0ull;
// The side record of the barrier at `bar` (nullptr outside dynamic shared memory, where no TMA
// can signal it). Call inside a CUCONV_EMU_INTERNAL scope.
inline BarSide* bar_side(void* bar) {
    size_t off;
    if (!smem_offset(bar, 8, &off)) return nullptr;
    const unsigned long long serial = cuconv_emu::g_engine.block_serial;
    if (g_bar_side_block != serial) {
        memset(g_bar_side, 0, (cuconv_emu::g_engine.shared_mem / 8 + 1) * sizeof(BarSide));
        g_bar_side_block = serial;
    }
    return &g_bar_side[off / 8];
}
inline unsigned long long* bar_word(void* bar, const char* what) {
    if (reinterpret_cast<size_t>(bar) & 7) fault(kFault, "%s: mbarrier object %p is not 8-byte aligned", what, bar);
    return static_cast<unsigned long long*>(bar);
}
inline void mbarrier_init(void* bar, unsigned count) {
    unsigned long long* w = bar_word(bar, "mbarrier.init");
    if (count == 0 || count > kBarMask) fault(kFault, "mbarrier.init: count %u outside 1..2^20-1", count);
    {
        CUCONV_EMU_INTERNAL;
        if (BarSide* side = bar_side(bar)) {
            *side = BarSide{0, static_cast<unsigned short>(1 + my_tid()), 1, 0};
            ThreadState& me = mine();
            if (me.nbar_inits == 64)
                fault(kFault, "mbarrier.init: more than 64 unfenced inits in one thread (emulator limit)");
            me.bar_inits[me.nbar_inits++] = static_cast<unsigned>(side - g_bar_side);
        }
    }
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
inline int bar_tx(void* bar) {
    CUCONV_EMU_INTERNAL;
    const BarSide* side = bar_side(bar);
    return side ? side->tx : 0;
}
// One update of the barrier: `arrivals` arrive-on operations and `tx` added to the tx-count
// (expect-tx: +n, complete-tx: -n), the expect-tx first (PTX: mbarrier.arrive.expect_tx
// "performs an expect-tx operation prior to the arrive-on operation"). A read-modify-write
// with release semantics (an arrive "releases" the arriving thread's prior writes; a
// read-modify-write keeps every arrival in the release sequence the waiter acquires).
inline void mbarrier_update(void* bar, unsigned arrivals, long long tx, const char* what) {
    unsigned long long w = checked(bar, what);
    int now = 0;
    {
        CUCONV_EMU_INTERNAL;
        BarSide* side = bar_side(bar);
        if (tx != 0 && side == nullptr)
            fault(kFault, "%s: the mbarrier at %p is not in this block's dynamic shared memory (the emulator's "
                          "transaction counts cover dynamic shared memory only)", what, bar);
        if (side) {
            const long long next = side->tx + tx;
            if (next > kTxLimit || next < -kTxLimit)
                fault(kFault, "%s: the mbarrier's tx-count would become %lld, outside [-(2^20-1), 2^20-1]", what,
                      next);
            side->tx = static_cast<int>(next);
            now = side->tx;
        }
    }
    const unsigned long long expected = (w >> 20) & kBarMask;
    unsigned long long pending = w & kBarMask;
    if (arrivals > pending)
        fault(kFault, "%s: %u arrival(s) on an mbarrier whose current phase expects only %llu more (of %llu): more "
                      "arrivals than the count given to mbarrier.init", what, arrivals, pending, expected);
    pending -= arrivals;
    unsigned long long next = w;
    if (pending == 0 && now == 0 && (arrivals > 0 || tx != 0)) {
        next ^= kBarPhase;   // phase complete
        pending = expected;
    }
    next = (next & ~kBarMask) | pending;
    __atomic_exchange_n(static_cast<unsigned long long*>(bar), next, __ATOMIC_ACQ_REL);
}
inline void mbarrier_arrive(void* bar) { mbarrier_update(bar, 1, 0, "mbarrier.arrive"); }
inline void mbarrier_arrive_expect_tx(void* bar, unsigned bytes) {
    if (bytes > static_cast<unsigned>(kTxLimit))
        fault(kFault, "mbarrier.arrive.expect_tx: %u bytes outside the tx-count range (2^20-1)", bytes);
    mbarrier_update(bar, 1, bytes, "mbarrier.arrive.expect_tx");
}
inline void tma_complete_pending(void* bar);
// A waiter that finds its phase incomplete lands the TMA loads signalling the barrier (the
// latest moment they can land for it); a phase complete without them (an expect-tx missing)
// leaves them in flight, so the waiter reads the poisoned bytes.
inline bool mbarrier_test_wait_parity(void* bar, unsigned parity) {
    if (((checked(bar, "mbarrier.try_wait.parity") & kBarPhase) ? 1u : 0u) != (parity & 1u)) return true;
    tma_complete_pending(bar);
    const unsigned long long w = checked(bar, "mbarrier.try_wait.parity");
    return ((w & kBarPhase) ? 1u : 0u) != (parity & 1u);
}
// try_wait in a loop, letting the other threads run between tries. A phase that never
// completes (an arrival missing) would spin until the launch times out; stop it earlier.
inline void mbarrier_wait_parity(void* bar, unsigned parity) {
    for (long spins = 0; !mbarrier_test_wait_parity(bar, parity); ++spins) {
        if (spins > 400000)
            fault(kDivergence, "mbarrier wait (parity %u) at %p never completes: the phase is missing arrivals "
                               "(%llu of %llu still pending, tx-count %d) — an arrive skipped, an expect-tx without "
                               "its TMA load, or a wait for the wrong phase",
                  parity & 1u, bar, checked(bar, "mbarrier wait") & kBarMask,
                  (checked(bar, "mbarrier wait") >> 20) & kBarMask, bar_tx(bar));
        cuconv_emu::yield();
    }
}

// fence.mbarrier_init.release.cluster / fence.proxy.async: this thread's mbarrier.init become
// visible to the async proxy (a TMA load completing on the barrier). Without it a TMA load that
// signals the barrier is a fault (CUTLASS's pipelines run fence.mbarrier_init after init for
// this reason; the PTX ISA's "fence.mbarrier_init" orders prior mbarrier.init for "subsequent
// operations ... including asynchronous operations").
inline void fence_mbarrier_init() {
    ThreadState& s = mine();
    CUCONV_EMU_INTERNAL;
    const unsigned short me = static_cast<unsigned short>(1 + my_tid());
    if (g_bar_side_block == cuconv_emu::g_engine.block_serial)
        for (int i = 0; i < s.nbar_inits; ++i)
            if (g_bar_side[s.bar_inits[i]].init_by == me) g_bar_side[s.bar_inits[i]].unfenced = 0;
    s.nbar_inits = 0;
}

// ================================================================== TMA (cp.async.bulk.tensor)
// The tensor map is the emulator's own 128-byte encoding, written by cuconv.emulator's encoder
// (cuconv/emulator/_tensor_map.py: the same arguments as the driver's cuTensorMapEncodeTiled /
// cuTensorMapEncodeIm2col, the same checks), opaque to kernels as the driver's is; the launch
// path replaces its global address by the worker's copy of the array. Layout (little-endian):
//   0 u32 magic "CCTM" | 4 u8 version, mode (0 tiled, 1 im2col), rank, data type
//   8 u8 interleave, swizzle (0 none, 1 32 B, 2 64 B, 3 128 B), l2 promotion, oob fill
//  12 u16 channels per pixel, u16 pixels per column (im2col)
//  16 u64 global address | 24 u64 dims[5] | 64 u64 strides of dims 1..4 (bytes)
//  96 u16 box[5] (tiled) | 106 u8 element strides[5] | 112 i16 lower corner[3], 118 i16 upper[3]
//     (W, H, D order, as CUTLASS passes them to the driver)
// Semantics (PTX ISA "Tensors": "Tiled mode", "Im2col mode", "Bounding Box", "Traversal Stride",
// "Out of Bound Access"; docs/wgmma.md §9 has the details and what is assumed):
//   * tiled: box[i] elements along dimension i from coordinate c[i], every element-stride-th
//     one (ceil(box/es) elements; dimension 0 ignores its stride), dimension 0 fastest in shared
//     memory, rows of box[0] elements packed;
//   * im2col: pixels_per_column pixels, each channels_per_pixel channels from channel c; the
//     first pixel is at the instruction's (w, h, d, n); the next one is element-stride further
//     along W, wrapping at the bounding box's end (dim - 1 + upper corner) to its start (lower
//     corner) and stepping H (then D, then N) the same way; each pixel's element is read at its
//     coordinates plus the instruction's im2col offsets;
//   * an element at a coordinate outside [0, dim) in any dimension is zero in shared memory
//     (OOB fill NONE); the transaction count is the whole box's bytes, zero-filled ones included;
//   * swizzle: Swizzle<log2(span/16), 4, 3> on the shared address (as for wgmma), the box's
//     inner dimension exactly one span (other inner sizes are not modelled: a fault);
//   * asynchrony: at issue the destination is poisoned (0xFF) and marked "TMA in flight" for
//     the async-proxy checks; the copy (reading global memory then) and its complete-tx land
//     when a thread first polls the barrier (mbarrier.try_wait/test_wait), in issue order. A
//     wgmma reading the bytes before that is a fault; so is a second TMA load into bytes still
//     in flight, a load over unfenced generic-proxy writes, and a barrier whose mbarrier.init
//     was not fenced for the async proxy.
constexpr unsigned kMapMagic = 0x4d544343u;   // "CCTM"
struct MapView {
    unsigned char mode, rank, dtype, swizzle, oob;
    unsigned cpp, ppc;
    const unsigned char* base;
    unsigned long long dim[5], stride[5];   // stride[0] = the element size
    unsigned box[5], es[5];
    int lower[3], upper[3];
    unsigned esize;
};
inline MapView read_map(const void* map, const char* what) {
    if (reinterpret_cast<size_t>(map) & 63)
        fault(kFault, "%s: tensor map at %p is not 64-byte aligned", what, map);
    const unsigned char* b = static_cast<const unsigned char*>(map);
    unsigned magic;
    memcpy(&magic, b, 4);
    if (magic != kMapMagic || b[4] != 1)
        fault(kFault, "%s: the tensor map at %p was not made by cuconv.emulator's encoder (a driver-encoded "
                      "CUtensorMap, or bytes that are no tensor map: its format is opaque)", what, map);
    MapView m{};
    m.mode = b[5];
    m.rank = b[6];
    m.dtype = b[7];
    m.swizzle = b[9];
    m.oob = b[11];
    unsigned short u16;
    memcpy(&u16, b + 12, 2);
    m.cpp = u16;
    memcpy(&u16, b + 14, 2);
    m.ppc = u16;
    unsigned long long addr;
    memcpy(&addr, b + 16, 8);
    m.base = reinterpret_cast<const unsigned char*>(static_cast<size_t>(addr));
    static const unsigned sizes[13] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
    if (m.dtype > 12 || m.rank < 1 || m.rank > 5 || m.mode > 1)
        fault(kFault, "%s: corrupt tensor map at %p", what, map);
    m.esize = sizes[m.dtype];
    for (int i = 0; i < 5; ++i) memcpy(&m.dim[i], b + 24 + 8 * i, 8);
    m.stride[0] = m.esize;
    for (int i = 1; i < 5; ++i) memcpy(&m.stride[i], b + 64 + 8 * (i - 1), 8);
    for (int i = 0; i < 5; ++i) {
        memcpy(&u16, b + 96 + 2 * i, 2);
        m.box[i] = u16;
        m.es[i] = b[106 + i];
    }
    for (int i = 0; i < 3; ++i) {
        short v;
        memcpy(&v, b + 112 + 2 * i, 2);
        m.lower[i] = v;
        memcpy(&v, b + 118 + 2 * i, 2);
        m.upper[i] = v;
    }
    return m;
}

struct TmaOp {
    MapView map;
    int coord[5];
    int offs[3];
    unsigned dst;          // shared address (offset into dynamic shared memory)
    unsigned bytes;
    void* bar;
    bool im2col;
};
constexpr int kTmaInFlightLimit = 256;
inline TmaOp g_tma[kTmaInFlightLimit];
inline int g_tma_n = 0;
inline unsigned long long g_tma_block = ~0ull, g_tma_launch = ~0ull;
constexpr unsigned short kTmaMark = kInFlight | 0x7fff;   // shadow value: a TMA load in flight

inline void tma_block() {
    const cuconv_emu::Engine& e = cuconv_emu::g_engine;
    if (g_tma_block == e.block_serial) return;
    if (g_tma_n > 0 && g_tma_launch == e.launch_serial)
        fault(kFault, "cp.async.bulk.tensor: the previous block exited with %d TMA load(s) whose mbarrier no "
                      "thread waited for", g_tma_n);
    g_tma_n = 0;
    g_tma_block = e.block_serial;
    g_tma_launch = e.launch_serial;
}

// The box as rows of `row_bytes` (the inner dimension), in shared-memory order; calls
// row(r, element) for every element of the box with its global address, or nullptr when
// out of bounds.
template <typename F>
inline void tma_walk(const TmaOp& op, F&& emit) {
    const MapView& m = op.map;
    if (!op.im2col) {
        unsigned n[5];
        for (int i = 0; i < 5; ++i) n[i] = i < m.rank ? (i == 0 ? m.box[0] : (m.box[i] + m.es[i] - 1) / m.es[i]) : 1;
        unsigned long long e = 0;
        for (unsigned i4 = 0; i4 < n[4]; ++i4)
            for (unsigned i3 = 0; i3 < n[3]; ++i3)
                for (unsigned i2 = 0; i2 < n[2]; ++i2)
                    for (unsigned i1 = 0; i1 < n[1]; ++i1)
                        for (unsigned i0 = 0; i0 < n[0]; ++i0, ++e) {
                            const unsigned idx[5] = {i0, i1, i2, i3, i4};
                            const unsigned char* src = m.base;
                            bool in = true;
                            for (int d = 0; d < m.rank; ++d) {
                                const long long c = static_cast<long long>(op.coord[d]) +
                                                    static_cast<long long>(idx[d]) * (d == 0 ? 1 : m.es[d]);
                                if (c < 0 || c >= static_cast<long long>(m.dim[d])) in = false;
                                else src += static_cast<unsigned long long>(c) * m.stride[d];
                            }
                            emit(e, in ? src : nullptr);
                        }
        return;
    }
    const int spatial = m.rank - 2;
    long long pos[4];                      // W, H, D (spatial) then N
    for (int i = 0; i < spatial; ++i) pos[i] = op.coord[1 + i];
    pos[spatial] = op.coord[m.rank - 1];
    unsigned long long e = 0;
    for (unsigned p = 0; p < m.ppc; ++p) {
        if (p > 0) {
            int d = 0;
            for (; d < spatial; ++d) {
                pos[d] += m.es[1 + d];
                if (pos[d] <= static_cast<long long>(m.dim[1 + d]) - 1 + m.upper[d]) break;
                pos[d] = m.lower[d];
            }
            if (d == spatial) ++pos[spatial];
        }
        long long at[5];
        at[m.rank - 1] = pos[spatial];
        for (int i = 0; i < spatial; ++i) at[1 + i] = pos[i] + op.offs[i];
        for (unsigned ch = 0; ch < m.cpp; ++ch, ++e) {
            at[0] = static_cast<long long>(op.coord[0]) + ch;
            const unsigned char* src = m.base;
            bool in = true;
            for (int d = 0; d < m.rank; ++d) {
                if (at[d] < 0 || at[d] >= static_cast<long long>(m.dim[d])) in = false;
                else src += static_cast<unsigned long long>(at[d]) * m.stride[d];
            }
            emit(e, in ? src : nullptr);
        }
    }
}

inline unsigned tma_swizzle(unsigned addr, unsigned span) {
    return span ? addr ^ (((addr >> 7) & (span / 16 - 1)) << 4) : addr;
}
inline unsigned swizzle_span(unsigned char mode) {
    static const unsigned spans[4] = {0, 32, 64, 128};
    return mode < 4 ? spans[mode] : 0;
}

inline void tma_perform(const TmaOp& op) {
    CUCONV_EMU_INTERNAL;
    shadow_block();
    unsigned char* smem = smem_base();
    const unsigned esize = op.map.esize, span = swizzle_span(op.map.swizzle);
    tma_walk(op, [&](unsigned long long e, const unsigned char* src) {
        const unsigned a = tma_swizzle(op.dst + static_cast<unsigned>(e) * esize, span);
        if (src) memcpy(smem + a, src, esize);
        else memset(smem + a, 0, esize);
    });
    for (unsigned i = 0; i < op.bytes; ++i)
        if (g_shadow[op.dst + i] == kTmaMark) g_shadow[op.dst + i] = 0;
}

// Complete (in issue order) every TMA load in flight that signals `bar`.
inline void tma_complete_pending(void* bar) {
    TmaOp done[kTmaInFlightLimit];
    int nd = 0;
    {
        CUCONV_EMU_INTERNAL;
        if (g_tma_block != cuconv_emu::g_engine.block_serial || g_tma_n == 0) return;
        int j = 0;
        for (int i = 0; i < g_tma_n; ++i) {
            if (g_tma[i].bar == bar) done[nd++] = g_tma[i];
            else g_tma[j++] = g_tma[i];
        }
        g_tma_n = j;
    }
    for (int i = 0; i < nd; ++i) {
        tma_perform(done[i]);
        mbarrier_update(bar, 0, -static_cast<long long>(done[i].bytes), "cp.async.bulk.tensor complete-tx");
    }
}

inline void tma_load(void* dst, const void* map, void* bar, const int* coord, int ncoord, const int* offs, int noffs,
                     bool im2col) {
    const char* what = im2col ? "cp.async.bulk.tensor (im2col)" : "cp.async.bulk.tensor (tile)";
    const MapView m = read_map(map, what);
    if (m.rank != ncoord)
        fault(kFault, "%s.%dd with a rank-%d tensor map", what, ncoord, m.rank);
    if ((m.mode == 1) != im2col)
        fault(kFault, "%s with a tensor map encoded for %s mode", what, m.mode == 1 ? "im2col" : "tiled");
    if (im2col && noffs != m.rank - 2)
        fault(kFault, "%s.%dd takes %d im2col offsets, got %d", what, ncoord, m.rank - 2, noffs);
    if (m.oob != 0)
        fault(kFault, "%s: OOB fill NAN_REQUEST_ZERO_FMA is not modelled (its NaN's bits are not specified)", what);
    size_t dst_off;
    const unsigned row_elems = im2col ? m.cpp : m.box[0];
    unsigned long long elems = row_elems;
    if (im2col) elems *= m.ppc;
    else
        for (int i = 1; i < m.rank; ++i) elems *= (m.box[i] + m.es[i] - 1) / m.es[i];
    const unsigned long long bytes = elems * m.esize;
    const unsigned span = swizzle_span(m.swizzle);
    if (span && row_elems * m.esize != span)
        fault(kFault, "%s: the box's inner dimension is %u bytes; with a %u-byte swizzle the emulator models only "
                      "an inner dimension of exactly the span", what, row_elems * m.esize, span);
    if (!smem_offset(dst, static_cast<size_t>(bytes), &dst_off))
        fault(kFault, "%s: the %llu-byte destination at %p is not inside this block's %zu bytes of dynamic shared "
                      "memory", what, bytes, dst, cuconv_emu::g_engine.shared_mem);
    if (dst_off & 127)
        fault(kFault, "%s: shared-memory destination 0x%zx is not 128-byte aligned", what, dst_off);
    TmaOp op{};
    op.map = m;
    for (int i = 0; i < ncoord; ++i) op.coord[i] = coord[i];
    for (int i = 0; i < noffs; ++i) op.offs[i] = offs[i];
    op.dst = static_cast<unsigned>(dst_off);
    op.bytes = static_cast<unsigned>(bytes);
    op.bar = bar;
    op.im2col = im2col;
    if (im2col) {
        for (int i = 0; i < m.rank - 2; ++i) {
            const long long lo = m.lower[i], hi = static_cast<long long>(m.dim[1 + i]) - 1 + m.upper[i];
            const long long c = coord[1 + i];
            if (c < lo || c > hi || (c - lo) % m.es[1 + i] != 0)
                fault(kFault, "%s: start coordinate %lld of spatial dimension %d is not on the traversal grid of "
                              "the bounding box [%lld, %lld] (stride %u): not modelled", what, c, i, lo, hi,
                      m.es[1 + i]);
        }
    }
    checked(bar, what);
    {
        CUCONV_EMU_INTERNAL;
        const BarSide* side = bar_side(bar);
        if (side == nullptr)
            fault(kFault, "%s: its mbarrier %p is not in this block's dynamic shared memory", what, bar);
        if (side->unfenced)
            fault(kFault, "%s signals an mbarrier whose mbarrier.init (by thread %u) was not made visible to the "
                          "async proxy: fence.mbarrier_init.release.cluster (or fence.proxy.async) missing after "
                          "the init", what, side->init_by - 1u);
        tma_block();
        shadow_block();
        for (unsigned i = 0; i < op.bytes; ++i) {
            const unsigned short sh = g_shadow[op.dst + i];
            if (sh == kTmaMark)
                fault(kFault, "%s into shared address 0x%x, where an earlier TMA load is still in flight (its "
                              "mbarrier not waited for before the stage was refilled)", what, op.dst + i);
            if (sh)
                fault(kFault, "%s into shared address 0x%x, which a cp.async of thread %u wrote through the generic "
                              "proxy with no fence.proxy.async since (a cross-proxy write-after-write)", what,
                      op.dst + i, (sh & ~kInFlight) - 1u);
        }
        if (g_tma_n == kTmaInFlightLimit)
            fault(kFault, "cp.async.bulk.tensor: more than %d TMA loads in flight (emulator limit)", kTmaInFlightLimit);
        g_tma[g_tma_n++] = op;
        memset(smem_base() + op.dst, 0xff, op.bytes);   // poison: a read before the barrier completes sees NaN
        mark(op.dst, static_cast<int>(op.bytes), kTmaMark);
    }
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 N: N in 24..256, a multiple of 8, the same in every
// thread of the warpgroup (.sync.aligned); checked per warp (every lane, same value).
struct NregLane {
    int value, inc;
};
inline void setmaxnreg_collective(void** lanes, void*) {
    const NregLane* first = nullptr;
    for (int l = 0; l < 32; ++l) {
        const NregLane* me = static_cast<const NregLane*>(lanes[l]);
        if (!me)
            fault(kDivergence, "setmaxnreg in a partial warp: lane %d of warp %u does not execute it (.sync.aligned)",
                  l, __emu_warp_id());
        if (first && (me->value != first->value || me->inc != first->inc))
            fault(kDivergence, "setmaxnreg: lanes of warp %u disagree (%s %d vs %s %d)", __emu_warp_id(),
                  me->inc ? "inc" : "dec", me->value, first->inc ? "inc" : "dec", first->value);
        first = first ? first : me;
    }
}
inline void setmaxnreg(int regs, bool inc) {
    if (regs < 24 || regs > 256 || regs % 8)
        fault(kFault, "setmaxnreg %d: the register count must be a multiple of 8 in 24..256", regs);
    if (cuconv_emu::g_engine.warps.size % 4 != 0)
        fault(kDivergence, "setmaxnreg in a block of %zu warps: it is a warpgroup instruction (blockDim a multiple "
                           "of 128)", cuconv_emu::g_engine.warps.size);
    NregLane me{regs, inc ? 1 : 0};
    __emu_warp_collective(&me, &setmaxnreg_collective, nullptr);
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
            if (sh == kTmaMark)
                fault(kFault, "wgmma.mma_async (warpgroup %u) reads operand %s at shared address 0x%x, which a TMA "
                              "load (cp.async.bulk.tensor) has not completed yet (its mbarrier not waited for before "
                              "the wgmma)", warpgroup, which, a);
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
