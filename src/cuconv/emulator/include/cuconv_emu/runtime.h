// The emulator's execution engine: runs a kernel's grid one block at a time on
// one OS thread, each CUDA thread of the block as a fiber (boost.context, or
// ucontext when boost is missing). A fiber runs until it blocks at a barrier or
// a warp collective, or exits; the scheduler then runs the next runnable fiber,
// in forward, reverse or seeded-random order. Because only one fiber runs at a
// time and never between two instructions of a built-in, __shared__ variables
// can be plain function-local statics and atomics plain read-modify-writes.
//
// Checks done here (reported back to Python as exceptions, never hangs):
//   - a barrier that not every live thread reaches (some exited, or wait at a
//     different __syncthreads) and deadlocks of barriers and warp collectives;
//   - warp collectives whose mask names an exited lane, omits the caller, or
//     whose lanes disagree on the mask (a deadlock, reported with both masks).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUCONV_EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define CUCONV_EMU_TSAN 1
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

#ifdef CUCONV_EMU_UCONTEXT
#include <ucontext.h>
#else
#include <boost/context/detail/fcontext.hpp>
#endif

namespace cuconv_emu {

// ----------------------------------------------------------------------------
// Built-in variables. The scheduler stores the running fiber's index before
// each switch, so threadIdx is an ordinary global read through a const
// reference (kernels cannot assign to it, as in CUDA).
inline uint3 g_thread_idx{0, 0, 0};
inline uint3 g_block_idx{0, 0, 0};
inline dim3 g_block_dim{1, 1, 1};
inline dim3 g_grid_dim{1, 1, 1};

// ----------------------------------------------------------------------------
// Kernel table entries: a type-erased call of a __global__ function from a
// void** argument array, and a description of its parameters for Python.
struct ParamInfo {
    char kind;              // 'p' pointer, 's' arithmetic scalar (or __half...), 'v' other value
    char dtype;             // 'i' 'u' 'f' 'b' (bool) 'B' (bfloat16) or 'V' (anything else)
    unsigned size;          // sizeof the parameter (scalars) or of the pointee (pointers; 0 for void)
    unsigned char is_const; // pointee is const
    const char* (*type_name)();
};

struct KernelEntry {
    const char* name;
    void (*invoke)(void** argv);
    int nparams;
    const ParamInfo* params;
};

// "const float*", from __PRETTY_FUNCTION__ = "... [with T = const float*]".
template <typename T>
const char* type_name() {
    static char name[256];
    if (!name[0]) {
        const char* pf = __PRETTY_FUNCTION__;
        const char* b = strstr(pf, "T = ");
        const char* e = strrchr(pf, ']');
        if (b && e && e > b) snprintf(name, sizeof name, "%.*s", (int)(e - b - 4), b + 4);
        else snprintf(name, sizeof name, "%s", pf);
    }
    return name;
}

template <typename T, typename = void>
struct has_emu_dtype : std::false_type {};
template <typename T>
struct has_emu_dtype<T, std::void_t<decltype(T::cuconv_emu_dtype)>> : std::true_type {};

template <typename T>
constexpr char dtype_code() {
    if constexpr (std::is_same_v<T, bool>) return 'b';
    else if constexpr (std::is_floating_point_v<T>) return 'f';
    else if constexpr (std::is_integral_v<T>) return std::is_signed_v<T> ? 'i' : 'u';
    else if constexpr (std::is_enum_v<T>) return std::is_signed_v<std::underlying_type_t<T>> ? 'i' : 'u';
    else if constexpr (has_emu_dtype<T>::value) return T::cuconv_emu_dtype;
    else return 'V';
}

template <typename T>
constexpr unsigned size_or_zero() {
    if constexpr (std::is_void_v<T> || std::is_function_v<T>) return 0;
    else return sizeof(T);
}

template <typename A>
constexpr ParamInfo param_info() {
    using T = std::remove_cv_t<A>;
    if constexpr (std::is_pointer_v<T>) {
        using P = std::remove_pointer_t<T>;
        return ParamInfo{'p', dtype_code<std::remove_cv_t<P>>(), size_or_zero<P>(),
                         (unsigned char)std::is_const_v<P>, &type_name<A>};
    } else {
        constexpr char code = dtype_code<T>();
        return ParamInfo{code == 'V' ? 'v' : 's', code, (unsigned)sizeof(T), 0, &type_name<A>};
    }
}

template <typename F, F K>
struct KernelThunk;

template <typename... A, void (*K)(A...)>
struct KernelThunk<void (*)(A...), K> {
    template <size_t... I>
    static void call(void** argv, std::index_sequence<I...>) {
        (void)argv;
        K(*static_cast<std::remove_cv_t<A>*>(argv[I])...);
    }
    static void invoke(void** argv) { call(argv, std::index_sequence_for<A...>{}); }
    static inline const ParamInfo params[sizeof...(A) + 1] = {param_info<A>()..., ParamInfo{}};
};

template <typename... A, void (*K)(A...) noexcept>
struct KernelThunk<void (*)(A...) noexcept, K> {
    template <size_t... I>
    static void call(void** argv, std::index_sequence<I...>) {
        (void)argv;
        K(*static_cast<std::remove_cv_t<A>*>(argv[I])...);
    }
    static void invoke(void** argv) { call(argv, std::index_sequence_for<A...>{}); }
    static inline const ParamInfo params[sizeof...(A) + 1] = {param_info<A>()..., ParamInfo{}};
};

template <typename F>
struct param_count;
template <typename... A>
struct param_count<void (*)(A...)> : std::integral_constant<int, sizeof...(A)> {};
template <typename... A>
struct param_count<void (*)(A...) noexcept> : std::integral_constant<int, sizeof...(A)> {};

template <auto K>
KernelEntry kernel_entry(const char* name) {
    static_assert(std::is_pointer_v<decltype(K)> && std::is_function_v<std::remove_pointer_t<decltype(K)>>,
                  "a kernel name must name a __global__ function returning void");
    using Thunk = KernelThunk<decltype(K), K>;
    return KernelEntry{name, &Thunk::invoke, param_count<decltype(K)>::value, Thunk::params};
}

// A __constant__ / __device__ variable the host may read and write
// (RawModule.get_global): its address, size and element type and shape.
struct GlobalEntry {
    const char* name;
    void* address;
    unsigned long long size;
    char dtype;         // as ParamInfo::dtype, of the element type
    unsigned itemsize;  // sizeof the element type
    unsigned rank;      // array dimensions (0 for a scalar or struct)
    unsigned long long extents[4];
};

template <typename T>
GlobalEntry global_entry(const char* name, const void* address) {
    using E = std::remove_cv_t<std::remove_all_extents_t<T>>;
    GlobalEntry g{name, const_cast<void*>(address), sizeof(T), dtype_code<E>(), (unsigned)sizeof(E),
                  (unsigned)std::rank_v<T>, {std::extent_v<T, 0>, std::extent_v<T, 1>, std::extent_v<T, 2>,
                                             std::extent_v<T, 3>}};
    if (g.rank > 4) g.rank = 0;  // described as flat bytes
    return g;
}

// ----------------------------------------------------------------------------
// Dynamic shared memory: one fixed buffer, so that `extern __shared__` arrays
// (rewritten to references bound to it) may live at namespace scope too. Its
// size is the largest any CUDA device allows per block; under ASan everything
// outside [base, base + shared_mem) is poisoned for the launch.
constexpr size_t kMaxDynamicShared = 232448;  // 227 KiB (sm_90 opt-in maximum)
constexpr size_t kSharedRedzone = 4096;
alignas(4096) inline unsigned char g_dynamic_shared_storage[kSharedRedzone + kMaxDynamicShared + kSharedRedzone];
inline void* dynamic_shared_memory() { return g_dynamic_shared_storage + kSharedRedzone; }

// ----------------------------------------------------------------------------
// Threads, warps, the block barrier.
// kAtConverge: at __activemask()/coalesced_threads(), waiting to learn which lanes of its warp
// got there too (see converge_arrive).
enum ThreadState : unsigned char { kRunnable, kAtBarrier, kAtWarp, kAtConverge, kExited };
enum ErrorKind : int { kOk = 0, kDivergence = 1, kFault = 2, kBadLaunch = 3 };

typedef void (*CollectiveFn)(void** lanes, void* ctx);

struct Fiber {
#ifdef CUCONV_EMU_UCONTEXT
    ucontext_t uc;
#else
    boost::context::detail::fcontext_t ctx = nullptr;
#endif
    char* stack_lo = nullptr;
    size_t stack_size = 0;
    void* asan_fake_stack = nullptr;
};

struct Thread {
    uint3 idx{0, 0, 0};
    unsigned linear = 0;
    ThreadState state = kRunnable;
    // What a blocked thread waits at (for error messages).
    const char* wait_name = nullptr;
    const char* wait_file = nullptr;
    unsigned wait_line = 0;
    unsigned wait_mask = 0;
    int barrier_result = 0;
    void* coll_data = nullptr;
    Fiber fiber;
};

struct Collective {
    unsigned mask;     // lanes that must arrive (requested mask & existing lanes)
    unsigned arrived;
    CollectiveFn fn;
    void* ctx;
    const char* name;
    const char* file;
    unsigned line;
};

struct Warp {
    unsigned exists = 0;
    unsigned exited = 0;
    int nopen = 0;
    Collective open[32];
};

// A growable array of trivially copyable elements (the runtime avoids <vector>
// and <string>, which would add a third to every kernel's compile time).
template <typename T>
struct Array {
    T* data = nullptr;
    size_t size = 0, capacity = 0;
    void resize(size_t n) {
        if (n > capacity) {
            void* p = realloc(data, n * sizeof(T));
            if (!p) abort();
            data = static_cast<T*>(p);
            capacity = n;
        }
        size = n;
    }
    T& operator[](size_t i) { return data[i]; }
    const T& operator[](size_t i) const { return data[i]; }
};

// A bounded message buffer.
struct Text {
    char buf[2048];
    size_t len = 0;
    Text() { buf[0] = 0; }
    Text& add(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf + len, sizeof buf - len, fmt, ap);
        va_end(ap);
        if (n > 0) len = len + (size_t)n < sizeof buf ? len + (size_t)n : sizeof buf - 1;
        return *this;
    }
    const char* c_str() const { return buf; }
};

struct Engine {
    const KernelEntry* kernel = nullptr;
    void** argv = nullptr;
    size_t shared_mem = 0;
    int order = 0;  // 0 forward, 1 reverse, 2 random
    bool cooperative = false;  // launched with enable_cooperative_groups=True (grid_group::is_valid)
    uint64_t rng = 0;
    bool in_launch = false;

    Array<Thread> threads;
    Array<Warp> warps;
    Array<unsigned> run_order;
    unsigned nthreads = 0, live = 0, exited = 0;
    const Thread* first_exited = nullptr;

    unsigned long long block_serial = 0;  // counts every block run, across launches
    unsigned long long launch_serial = 0; // counts launches (per-thread state of fallbacks tells them apart)
    unsigned barrier_arrived = 0, barrier_true = 0;
    const Thread* barrier_first = nullptr;

    Thread* current = nullptr;
#ifdef CUCONV_EMU_UCONTEXT
    ucontext_t sched_uc;
#else
    boost::context::detail::fcontext_t sched_ctx = nullptr;
#endif
    void* sched_fake_stack = nullptr;
    const void* sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
#ifdef CUCONV_EMU_TSAN
    void* sched_tsan_fiber = nullptr;
    struct TsanSlot {
        void* fiber;   // one TSan thread per fiber slot, reused by every block
        int ignoring;  // depth of InternalScope on it
        char name[64];
    };
    Array<TsanSlot> tsan;
    char block_start, block_end, barrier_sync;  // happens-before anchors (their addresses)
#endif

    Array<char*> stacks;
    size_t stack_size = 0, stack_guard = 0;
    bool stacks_dirty = false;

    int error_kind = kOk;
    Text error;
    bool error_has_thread = false;
    uint3 error_thread{0, 0, 0};
    uint3 error_block{0, 0, 0};
};

inline Engine g_engine;

// ThreadSanitizer (sanitize="thread"): every fiber is a TSan thread, so two
// threads of a block that touch the same memory with no barrier or warp
// collective between them make a data race report. Happens-before comes from
// barriers and warp collectives (release on arrival, acquire on leaving) and
// from the block boundaries: one block ends before the next starts, as the
// blocks reuse the same __shared__ memory here, so races between different
// blocks are not reported. The emulator's own bookkeeping is not watched
// (InternalScope): only the scheduler and the fibers touch it, one at a time.
#ifdef CUCONV_EMU_TSAN
struct InternalScope {
    int* depth;
    InternalScope();
    ~InternalScope() {
        if (depth) --*depth;
        __tsan_ignore_thread_end();
    }
};
#define CUCONV_EMU_INTERNAL ::cuconv_emu::InternalScope cuconv_emu_internal_scope_
// Functions a fiber never returns from are not instrumented: TSan would keep
// their frames on the slot's shadow stack, one more per block.
#define CUCONV_EMU_NO_TSAN __attribute__((no_sanitize_thread))
#else
#define CUCONV_EMU_INTERNAL
#define CUCONV_EMU_NO_TSAN
#endif

inline uint64_t next_random() {  // splitmix64
    uint64_t z = (g_engine.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline Text format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline Text format(const char* fmt, ...) {
    Text t;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t.buf, sizeof t.buf, fmt, ap);
    va_end(ap);
    t.len = n < 0 ? 0 : ((size_t)n < sizeof t.buf ? (size_t)n : sizeof t.buf - 1);
    return t;
}

inline Text describe(const uint3& v) { return format("(%u,%u,%u)", v.x, v.y, v.z); }
inline Text describe_at(const char* name, const char* file, unsigned line) {
    return format("%s at %s:%u", name ? name : "?", file ? file : "?", line);
}

#ifdef CUCONV_EMU_TSAN
inline InternalScope::InternalScope() : depth(nullptr) {
    __tsan_ignore_thread_begin();
    if (g_engine.current) {
        depth = &g_engine.tsan[g_engine.current->linear].ignoring;
        ++*depth;
    }
}
#endif

// ----------------------------------------------------------------------------
// Fiber switching.
inline void resume(Thread* t) {
    Engine& e = g_engine;
    e.current = t;
    g_thread_idx = t->idx;
#ifdef CUCONV_EMU_ASAN
    __sanitizer_start_switch_fiber(&e.sched_fake_stack, t->fiber.stack_lo, t->fiber.stack_size);
#endif
#ifdef CUCONV_EMU_TSAN
    __tsan_switch_to_fiber(e.tsan[t->linear].fiber, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUCONV_EMU_UCONTEXT
    swapcontext(&e.sched_uc, &t->fiber.uc);
#else
    boost::context::detail::transfer_t tr = boost::context::detail::jump_fcontext(t->fiber.ctx, t);
    t->fiber.ctx = tr.fctx;
#endif
#ifdef CUCONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(e.sched_fake_stack, nullptr, nullptr);
#endif
    e.current = nullptr;
}

// Called on a fiber: give control back to the scheduler. With `final` the
// fiber is never resumed (it exited or the launch failed).
CUCONV_EMU_NO_TSAN inline void switch_to_scheduler(bool final) {
    Engine& e = g_engine;
    Thread* t = e.current;
#ifdef CUCONV_EMU_ASAN
    __sanitizer_start_switch_fiber(final ? nullptr : &t->fiber.asan_fake_stack, e.sched_stack_bottom,
                                   e.sched_stack_size);
#endif
#ifdef CUCONV_EMU_TSAN
    if (final) {  // leave no ignore scope open on the slot's TSan thread, which the next block reuses
        Engine::TsanSlot& slot = e.tsan[t->linear];
        for (; slot.ignoring > 0; --slot.ignoring) __tsan_ignore_thread_end();
    }
    __tsan_switch_to_fiber(e.sched_tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUCONV_EMU_UCONTEXT
    swapcontext(&t->fiber.uc, &e.sched_uc);
#else
    boost::context::detail::transfer_t tr = boost::context::detail::jump_fcontext(e.sched_ctx, nullptr);
    CUCONV_EMU_INTERNAL;
    e.sched_ctx = tr.fctx;
#endif
#ifdef CUCONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(t->fiber.asan_fake_stack, &e.sched_stack_bottom, &e.sched_stack_size);
#endif
    (void)t;
    (void)final;
}

// Stop the launch with an error raised in Python. On a fiber it never returns.
// Out of line and cold: the hot paths that may fail (barriers, collectives)
// must keep small stack frames, or every fiber switch touches more pages.
[[noreturn]] __attribute__((noinline, cold)) inline void fail(int kind, const Text& message) {
    Engine& e = g_engine;
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&e.block_end);
#endif
    CUCONV_EMU_INTERNAL;
    if (e.error_kind == kOk) {
        e.error_kind = kind;
        e.error = message;
        e.error_block = g_block_idx;
        e.error_has_thread = e.current != nullptr;
        if (e.current) e.error_thread = e.current->idx;
    }
    if (e.current) {
        e.current->state = kExited;
        switch_to_scheduler(true);
    }
    // Only reachable outside a fiber, which fail() is never called from.
    abort();
}

// fail() with a printf-style message ("%s at %s:%u" for places, XYZ for indices).
[[noreturn]] __attribute__((noinline, cold, format(printf, 2, 3))) inline void failf(int kind, const char* fmt, ...) {
    Text t;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t.buf, sizeof t.buf, fmt, ap);
    va_end(ap);
    t.len = n < 0 ? 0 : ((size_t)n < sizeof t.buf ? (size_t)n : sizeof t.buf - 1);
    fail(kind, t);
}
#define CUCONV_EMU_XYZ "(%u,%u,%u)"
#define CUCONV_EMU_XYZ_ARGS(v) (v).x, (v).y, (v).z

inline void thread_exited(Thread* t) {
    Engine& e = g_engine;
    CUCONV_EMU_INTERNAL;
    t->state = kExited;
    e.live--;
    e.exited++;
    if (!e.first_exited) e.first_exited = t;
    Warp& w = e.warps[t->linear >> 5];
    unsigned bit = 1u << (t->linear & 31);
    w.exited |= bit;
    if (e.barrier_arrived > 0) {
        const Thread* b = e.barrier_first;
        failf(kDivergence,
              "divergent barrier: thread " CUCONV_EMU_XYZ " exited, but thread " CUCONV_EMU_XYZ
              " (and %u other(s)) wait at %s at %s:%u; every thread of the block must reach each __syncthreads()",
              CUCONV_EMU_XYZ_ARGS(t->idx), CUCONV_EMU_XYZ_ARGS(b->idx), e.barrier_arrived - 1, b->wait_name,
              b->wait_file, b->wait_line);
    }
    for (int i = 0; i < w.nopen; ++i) {
        const Collective& c = w.open[i];
        if (c.mask & bit)
            failf(kDivergence, "lane %u of warp %u exited while lanes 0x%08x wait for it at %s at %s:%u (mask 0x%08x)",
                  t->linear & 31, t->linear >> 5, c.arrived, c.name, c.file, c.line, c.mask);
    }
}

CUCONV_EMU_NO_TSAN inline void run_current_thread() {
    Engine& e = g_engine;
#ifdef CUCONV_EMU_TSAN
    __tsan_acquire(&e.block_start);
#endif
    e.kernel->invoke(e.argv);
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&e.block_end);
#endif
    thread_exited(e.current);
    switch_to_scheduler(true);
    abort();  // never resumed
}

#ifdef CUCONV_EMU_UCONTEXT
CUCONV_EMU_NO_TSAN inline void fiber_main_uc() {
#ifdef CUCONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_engine.sched_stack_bottom, &g_engine.sched_stack_size);
#endif
    run_current_thread();
}
#else
CUCONV_EMU_NO_TSAN inline void fiber_main(boost::context::detail::transfer_t tr) {
#ifdef CUCONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_engine.sched_stack_bottom, &g_engine.sched_stack_size);
#endif
    {
        CUCONV_EMU_INTERNAL;
        g_engine.sched_ctx = tr.fctx;
    }
    run_current_thread();
}
#endif

// ----------------------------------------------------------------------------
// Barrier: every live thread must arrive at the same __syncthreads (same source
// line); the scheduler releases them when the last one has arrived.
inline int barrier_arrive(const char* name, const char* file, unsigned line, int pred) {
    Engine& e = g_engine;
    Thread* t = e.current;
    if (!t) return pred ? 1 : 0;  // called outside a kernel launch
    CUCONV_EMU_INTERNAL;
    if (e.exited > 0) {
        const Thread* x = e.first_exited;
        failf(kDivergence,
              "divergent barrier: thread " CUCONV_EMU_XYZ " reached %s at %s:%u, but thread " CUCONV_EMU_XYZ
              " has exited; every thread of the block must reach each __syncthreads()",
              CUCONV_EMU_XYZ_ARGS(t->idx), name, file, line, CUCONV_EMU_XYZ_ARGS(x->idx));
    }
    if (e.barrier_arrived == 0) {
        e.barrier_first = t;
    } else {
        const Thread* b = e.barrier_first;
        if (b->wait_line != line || b->wait_name != name || (b->wait_file != file && strcmp(b->wait_file, file) != 0))
            failf(kDivergence,
                  "divergent barrier: thread " CUCONV_EMU_XYZ " reached %s at %s:%u while thread " CUCONV_EMU_XYZ
                  " waits at %s at %s:%u",
                  CUCONV_EMU_XYZ_ARGS(t->idx), name, file, line, CUCONV_EMU_XYZ_ARGS(b->idx), b->wait_name,
                  b->wait_file, b->wait_line);
    }
    e.barrier_arrived++;
    if (pred) e.barrier_true++;
    t->state = kAtBarrier;
    t->wait_name = name;
    t->wait_file = file;
    t->wait_line = line;
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&e.barrier_sync);
#endif
    switch_to_scheduler(false);
#ifdef CUCONV_EMU_TSAN
    __tsan_acquire(&e.barrier_sync);
#endif
    return t->barrier_result;
}

// ----------------------------------------------------------------------------
// Warp collectives. A warp is 32 consecutive linear thread ids. Every lane named
// in `mask` (that exists in the block) calls with its own `my_data`; the last to
// arrive runs fn(lanes, ctx) once, where lanes[i] is lane i's my_data (nullptr
// for lanes outside the mask), and every caller returns after fn has run.
inline unsigned lane_id() { return g_engine.current ? (g_engine.current->linear & 31) : 0; }
inline unsigned warp_id() { return g_engine.current ? (g_engine.current->linear >> 5) : 0; }

inline unsigned active_mask() {
    Engine& e = g_engine;
    if (!e.current) return 1u;
    const Warp& w = e.warps[e.current->linear >> 5];
    return w.exists & ~w.exited;
}

inline void warp_collective(unsigned mask, void* my_data, CollectiveFn fn, void* ctx, const char* name,
                            const char* file, unsigned line) {
    Engine& e = g_engine;
    Thread* t = e.current;
    if (!t) {  // outside a launch: a warp of one
        void* lanes[32] = {};
        lanes[0] = my_data;
        fn(lanes, ctx);
        return;
    }
    CUCONV_EMU_INTERNAL;
    unsigned lane = t->linear & 31, wid = t->linear >> 5;
    Warp& w = e.warps[wid];
    unsigned bit = 1u << lane;
    if (!(mask & bit))
        failf(kFault, "%s at %s:%u: mask 0x%08x does not include the calling lane %u (warp %u)", name, file, line,
              mask, lane, wid);
    unsigned need = mask & w.exists;
    if (need & w.exited) {
        unsigned gone = need & w.exited;
        failf(kDivergence, "%s at %s:%u: mask 0x%08x names lane %d of warp %u, which has exited", name, file, line,
              mask, __builtin_ctz(gone), wid);
    }
    // Join the open collective of the same kind and mask. One whose mask overlaps
    // but differs may still complete (lanes 0-7 wait at a mask of 16 lanes while
    // lanes 8-15 first meet at their own __syncwarp(0xff00)), so it is opened beside
    // it; lanes that truly disagree end in the deadlock report, which lists both.
    Collective* c = nullptr;
    for (int i = 0; i < w.nopen; ++i) {
        Collective& o = w.open[i];
        if (o.mask == need && o.fn == fn && !(o.arrived & bit)) {
            c = &o;
            break;
        }
    }
    if (!c) {
        c = &w.open[w.nopen++];
        *c = Collective{need, 0u, fn, ctx, name, file, line};
    }
    c->arrived |= bit;
    t->coll_data = my_data;
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&w);
#endif
    if (c->arrived == need) {
        void* lanes[32];
        Thread* base = &e.threads[wid * 32];
        for (unsigned l = 0; l < 32; ++l) lanes[l] = (need >> l & 1u) ? base[l].coll_data : nullptr;
        *c = w.open[--w.nopen];  // close it before fn, which may fail()
#ifdef CUCONV_EMU_TSAN
        __tsan_acquire(&w);
#endif
        fn(lanes, ctx);
#ifdef CUCONV_EMU_TSAN
        __tsan_release(&w);
#endif
        for (unsigned l = 0; l < 32; ++l)
            if ((need >> l & 1u) && l != lane) base[l].state = kRunnable;
        return;
    }
    t->state = kAtWarp;
    t->wait_name = name;
    t->wait_file = file;
    t->wait_line = line;
    t->wait_mask = mask;
    switch_to_scheduler(false);
#ifdef CUCONV_EMU_TSAN
    __tsan_acquire(&w);
#endif
}

// A convergence point: __activemask() and coalesced_threads(). The emulator has no
// program counter shared by a warp, so "the lanes active here" is defined as the
// lanes of the warp that reach this same call site (file and line) before blocking
// anywhere else: the caller waits until no thread of the block can run, then every
// lane waiting at the site learns the mask of them all (the scheduler releases
// them, release_convergence). Lanes that took another branch are blocked elsewhere
// or exited by then, so a divergent branch sees only its own lanes, as on the GPU.
inline unsigned converge_arrive(const char* name, const char* file, unsigned line) {
    Engine& e = g_engine;
    Thread* t = e.current;
    if (!t) return 1u;
    CUCONV_EMU_INTERNAL;
    t->state = kAtConverge;
    t->wait_name = name;
    t->wait_file = file;
    t->wait_line = line;
    t->wait_mask = 0;
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&e.warps[t->linear >> 5]);
#endif
    switch_to_scheduler(false);
#ifdef CUCONV_EMU_TSAN
    __tsan_acquire(&e.warps[t->linear >> 5]);
#endif
    return t->wait_mask;
}

// Let the other threads run (a thread spinning on __nanosleep, for example).
inline void yield() {
    if (!g_engine.current) return;
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&g_engine.block_end);  // in case the launch fails before this thread exits
#endif
    switch_to_scheduler(false);
}

// ----------------------------------------------------------------------------
// The scheduler.
// At least 64 KiB of guard below each stack, padded so that stacks are an odd
// number of pages apart: the fibers' top-of-stack pages then spread over the
// TLB's sets (at a stride of 80 pages they all fell in one set, and every
// fiber switch missed the TLB: a 256^3 SGEMM ran 1.6x slower).
constexpr size_t kStackGuard = 64 * 1024;

inline size_t stack_bytes() {
    size_t kb = 256;
#if defined(CUCONV_EMU_ASAN) || defined(CUCONV_EMU_TSAN)
    kb = 1024;
#endif
    if (const char* s = getenv("CUCONV_EMU_STACK_KB")) {
        long v = atol(s);
        if (v >= 16) kb = (size_t)v;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (kb * 1024 + page - 1) / page * page;
}

inline bool ensure_stacks(unsigned n) {
    Engine& e = g_engine;
    if (e.stack_size == 0) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        e.stack_size = stack_bytes();
        e.stack_guard = kStackGuard;
        if ((e.stack_size + e.stack_guard) / page % 2 == 0) e.stack_guard += page;
    }
    while (e.stacks.size < n) {
        // A guard region below each stack turns an overflow into a SIGSEGV
        // (kernels are compiled with -fstack-clash-protection, so a large frame
        // cannot jump over it).
        void* p = mmap(nullptr, e.stack_size + e.stack_guard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        mprotect(p, e.stack_guard, PROT_NONE);
        e.stacks.resize(e.stacks.size + 1);
        e.stacks[e.stacks.size - 1] = static_cast<char*>(p) + e.stack_guard;
#ifdef CUCONV_EMU_TSAN
        e.tsan.resize(e.stacks.size);
        Engine::TsanSlot& slot = e.tsan[e.tsan.size - 1];
        slot.fiber = __tsan_create_fiber(0);
        slot.ignoring = 0;
        slot.name[0] = 0;
#endif
    }
    return true;
}

inline void init_fiber(Thread& t, char* stack) {
    Engine& e = g_engine;
    t.fiber.stack_lo = stack;
    t.fiber.stack_size = e.stack_size;
    t.fiber.asan_fake_stack = nullptr;
#ifdef CUCONV_EMU_UCONTEXT
    getcontext(&t.fiber.uc);
    t.fiber.uc.uc_stack.ss_sp = stack;
    t.fiber.uc.uc_stack.ss_size = e.stack_size;
    t.fiber.uc.uc_link = nullptr;
    makecontext(&t.fiber.uc, (void (*)())fiber_main_uc, 0);
#else
    // Stagger the stack tops so that the fibers' hot frames do not all map to
    // the same cache sets (they are otherwise a multiple of the page size apart).
    size_t color = (size_t)(t.linear % 61) * 64;
    t.fiber.ctx = boost::context::detail::make_fcontext(stack + e.stack_size - color, e.stack_size - color, fiber_main);
#endif
#ifdef CUCONV_EMU_TSAN
    Engine::TsanSlot& slot = e.tsan[t.linear];
    // Named after the CUDA thread, so that a race report says which threads raced.
    snprintf(slot.name, sizeof slot.name, "thread (%u,%u,%u) of block (%u,%u,%u)", t.idx.x, t.idx.y, t.idx.z,
             g_block_idx.x, g_block_idx.y, g_block_idx.z);
    __tsan_set_fiber_name(slot.fiber, slot.name);
#endif
}

__attribute__((noinline, cold)) inline Text describe_deadlock() {
    Engine& e = g_engine;
    Text out;
    out.add("deadlock: no thread of the block can make progress.");
    // Group blocked threads by what they wait at.
    static bool seen[1024];
    memset(seen, 0, sizeof seen);
    for (unsigned i = 0; i < e.nthreads; ++i) {
        const Thread& t = e.threads[i];
        if (seen[i] || t.state == kExited) continue;
        unsigned count = 0;
        for (unsigned j = i; j < e.nthreads; ++j) {
            const Thread& u = e.threads[j];
            if (!seen[j] && u.state == t.state && u.wait_line == t.wait_line && u.wait_name == t.wait_name &&
                u.wait_mask == t.wait_mask) {
                seen[j] = true;
                count++;
            }
        }
        out.add(" %u thread(s) wait at %s", count, describe_at(t.wait_name, t.wait_file, t.wait_line).c_str());
        if (t.state == kAtWarp) out.add(" (mask 0x%08x)", t.wait_mask);
        out.add(", the first is thread %s;", describe(t.idx).c_str());
    }
    if (e.exited) out.add(" %u thread(s) have exited.", e.exited);
    return out;
}

inline void shuffle_run_order() {
    Engine& e = g_engine;
    for (unsigned i = e.nthreads; i > 1; --i) {
        unsigned j = (unsigned)(next_random() % i);
        unsigned tmp = e.run_order[i - 1];
        e.run_order[i - 1] = e.run_order[j];
        e.run_order[j] = tmp;
    }
}

// Called when no thread can run: the lanes waiting at each convergence point
// learn their mask and run again. Returns whether any lane was released.
inline bool release_convergence() {
    Engine& e = g_engine;
    bool released = false;
    for (unsigned i = 0; i < e.nthreads; ++i) {
        Thread& t = e.threads[i];
        if (t.state != kAtConverge) continue;
        unsigned w = i >> 5, mask = 0;
        for (unsigned l = 0; l < 32 && w * 32 + l < e.nthreads; ++l) {
            const Thread& u = e.threads[w * 32 + l];
            if (u.state == kAtConverge && u.wait_line == t.wait_line &&
                (u.wait_file == t.wait_file || strcmp(u.wait_file, t.wait_file) == 0))
                mask |= 1u << l;
        }
        for (unsigned l = 0; l < 32; ++l)
            if (mask >> l & 1u) {
                Thread& u = e.threads[w * 32 + l];
                u.state = kRunnable;
                u.wait_mask = mask;
            }
        released = true;
    }
    return released;
}

inline int run_block() {
    Engine& e = g_engine;
    const unsigned n = e.nthreads;
    const dim3 bd = g_block_dim;
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = e.threads[i];
        t.linear = i;
        t.idx = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
        t.state = kRunnable;
        t.wait_name = nullptr;
        t.wait_file = nullptr;
        t.wait_line = 0;
        t.wait_mask = 0;
        t.coll_data = nullptr;
        init_fiber(t, e.stacks[i]);
    }
    for (size_t w = 0; w < e.warps.size; ++w) {
        unsigned lanes = n - (unsigned)w * 32u < 32u ? n - (unsigned)w * 32u : 32u;
        e.warps[w].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
        e.warps[w].exited = 0;
        e.warps[w].nopen = 0;
    }
    e.live = n;
    e.exited = 0;
    e.first_exited = nullptr;
    e.barrier_arrived = e.barrier_true = 0;
    e.barrier_first = nullptr;
    e.block_serial++;
    // Uninitialised dynamic shared memory reads as NaN (and -1 as integers).
    memset(dynamic_shared_memory(), 0xff, e.shared_mem);
#ifdef CUCONV_EMU_TSAN
    __tsan_release(&e.block_start);
#endif

    while (e.live > 0) {
        bool ran = false;
        if (e.order == 2) shuffle_run_order();
        for (unsigned k = 0; k < n; ++k) {
            unsigned i = e.order == 0 ? k : e.order == 1 ? n - 1 - k : e.run_order[k];
            Thread& t = e.threads[i];
            if (t.state != kRunnable) continue;
            resume(&t);
            ran = true;
            if (e.error_kind != kOk) return e.error_kind;
        }
        if (e.barrier_arrived > 0 && e.barrier_arrived == e.live) {
            int count = (int)e.barrier_true;
            for (unsigned i = 0; i < n; ++i) {
                Thread& t = e.threads[i];
                if (t.state == kAtBarrier) {
                    t.state = kRunnable;
                    t.barrier_result = count;
                }
            }
            e.barrier_arrived = e.barrier_true = 0;
            e.barrier_first = nullptr;
            continue;
        }
        if (!ran && release_convergence()) continue;
        if (!ran) {
            e.error_kind = kDivergence;
            e.error = describe_deadlock();
            e.error_block = g_block_idx;
            e.error_has_thread = false;
            return e.error_kind;
        }
    }
#ifdef CUCONV_EMU_TSAN
    __tsan_acquire(&e.block_end);
#endif
    return kOk;
}

inline int launch(const KernelEntry* kernel, const unsigned grid[3], const unsigned block[3], size_t shared_mem,
                  void** argv, int order, unsigned long long seed) {
    Engine& e = g_engine;
    e.cooperative = (order >> 8) & 1;  // flags above the order code
    order &= 0xff;
    e.error_kind = kOk;
    e.error = Text();
    e.error_has_thread = false;
    unsigned long long nthreads = (unsigned long long)block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > 1024 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0 ||
        shared_mem > kMaxDynamicShared) {
        e.error_kind = kBadLaunch;
        e.error = format("invalid launch configuration: grid (%u,%u,%u), block (%u,%u,%u), shared_mem %zu", grid[0],
                         grid[1], grid[2], block[0], block[1], block[2], shared_mem);
        return e.error_kind;
    }
#ifdef CUCONV_EMU_TSAN
    __tsan_ignore_thread_begin();  // the scheduler only touches the emulator's bookkeeping
    struct EndIgnore {
        ~EndIgnore() { __tsan_ignore_thread_end(); }
    } end_ignore;
#endif
    if (!ensure_stacks((unsigned)nthreads)) {
        e.error_kind = kBadLaunch;
        e.error = format("could not allocate fiber stacks");
        return e.error_kind;
    }
#ifdef CUCONV_EMU_ASAN
    if (e.stacks_dirty)  // a failed launch abandoned fibers mid-call: their stack redzones are still poisoned
        for (size_t i = 0; i < e.stacks.size; ++i) __asan_unpoison_memory_region(e.stacks[i], e.stack_size);
    __asan_poison_memory_region(g_dynamic_shared_storage, sizeof g_dynamic_shared_storage);
    __asan_unpoison_memory_region(dynamic_shared_memory(), shared_mem);
#endif
    e.stacks_dirty = false;
#ifdef CUCONV_EMU_TSAN
    if (!e.sched_tsan_fiber) e.sched_tsan_fiber = __tsan_get_current_fiber();
#endif
    e.kernel = kernel;
    e.argv = argv;
    e.launch_serial++;
    e.shared_mem = shared_mem;
    e.order = order;
    e.rng = seed;
    e.nthreads = (unsigned)nthreads;
    e.threads.resize(e.nthreads);
    for (unsigned i = 0; i < e.nthreads; ++i) e.threads[i] = Thread{};
    e.warps.resize((e.nthreads + 31) / 32);
    for (size_t w = 0; w < e.warps.size; ++w) e.warps[w] = Warp{};
    e.run_order.resize(e.nthreads);
    for (unsigned i = 0; i < e.nthreads; ++i) e.run_order[i] = i;
    g_grid_dim = dim3(grid[0], grid[1], grid[2]);
    g_block_dim = dim3(block[0], block[1], block[2]);

    const unsigned long long nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    // Random block order: a shuffled list for ordinary grids, an affine
    // permutation k -> (a*k + c) mod n for huge ones.
    static Array<unsigned> block_order;
    block_order.resize(0);
    unsigned long long aff_a = 1, aff_c = 0;
    if (order == 2) {
        if (nblocks <= (1ull << 22)) {
            block_order.resize(nblocks);
            for (unsigned long long k = 0; k < nblocks; ++k) block_order[k] = (unsigned)k;
            for (unsigned long long i = nblocks; i > 1; --i) {
                unsigned long long j = next_random() % i;
                unsigned tmp = block_order[i - 1];
                block_order[i - 1] = block_order[j];
                block_order[j] = tmp;
            }
        } else {
            auto gcd = [](unsigned long long a, unsigned long long b) {
                while (b) {
                    unsigned long long t = a % b;
                    a = b;
                    b = t;
                }
                return a;
            };
            do aff_a = next_random() % nblocks | 1; while (gcd(aff_a, nblocks) != 1);
            aff_c = next_random() % nblocks;
        }
    }
    e.in_launch = true;
    int status = kOk;
    for (unsigned long long k = 0; k < nblocks && status == kOk; ++k) {
        unsigned long long b;
        if (order == 0) b = k;
        else if (order == 1) b = nblocks - 1 - k;
        else if (block_order.size) b = block_order[k];
        else b = (unsigned long long)(((unsigned __int128)aff_a * k + aff_c) % nblocks);
        g_block_idx = uint3{(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]),
                            (unsigned)(b / ((unsigned long long)grid[0] * grid[1]))};
        status = run_block();
    }
    e.in_launch = false;
    e.current = nullptr;
    if (status != kOk) e.stacks_dirty = true;
#ifdef CUCONV_EMU_TSAN
    if (status != kOk) {
        // What the abandoned fibers did happened before what follows the launch:
        // each released one of these on its way into the scheduler.
        __tsan_acquire(&e.block_end);
        __tsan_acquire(&e.barrier_sync);
        for (size_t w = 0; w < e.warps.size; ++w) __tsan_acquire(&e.warps[w]);
    }
    if (status != kOk)  // fibers abandoned mid-call: start their slots afresh, with empty shadow stacks
        for (size_t i = 0; i < e.tsan.size; ++i) {
            Engine::TsanSlot& slot = e.tsan[i];
            if (slot.ignoring) {  // close its open ignore scopes first (TSan checks, on its own thread)
                __tsan_switch_to_fiber(slot.fiber, __tsan_switch_to_fiber_no_sync);
                for (; slot.ignoring > 0; --slot.ignoring) __tsan_ignore_thread_end();
                __tsan_switch_to_fiber(e.sched_tsan_fiber, __tsan_switch_to_fiber_no_sync);
            }
            __tsan_destroy_fiber(slot.fiber);
            slot.fiber = __tsan_create_fiber(0);
        }
#endif
#ifdef CUCONV_EMU_ASAN
    __asan_unpoison_memory_region(g_dynamic_shared_storage, sizeof g_dynamic_shared_storage);
#endif
    return status;
}

// "kernel 'k', block (1,0,0), thread (5,0,0)" for crash reports; false outside a launch.
inline bool where(char* kernel, size_t kernel_len, int block[3], int thread[3]) {
    Engine& e = g_engine;
    if (!e.in_launch || !e.kernel) return false;
    snprintf(kernel, kernel_len, "%s", e.kernel->name);
    block[0] = (int)g_block_idx.x;
    block[1] = (int)g_block_idx.y;
    block[2] = (int)g_block_idx.z;
    if (e.current) {
        thread[0] = (int)e.current->idx.x;
        thread[1] = (int)e.current->idx.y;
        thread[2] = (int)e.current->idx.z;
    } else {
        thread[0] = thread[1] = thread[2] = -1;
    }
    return true;
}

}  // namespace cuconv_emu
