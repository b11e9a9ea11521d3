// The emulator's worker process. Python (cuconv/emulator/_worker.py) starts one
// per sanitizer setting and sends it requests on stdin; it answers on the pipe
// whose file descriptor is argv[1].
// Kernels run here, not in the Python interpreter, so that a segfault, a
// sanitizer report (which aborts the process) or a kernel that never ends
// costs a worker, never the interpreter: Python sees the pipe close (or its
// deadline pass), reads this process's stderr and raises an exception.
//
// Array arguments travel through a shared-memory file that both processes map.
// Without ASan the kernel reads and writes that mapping directly (each group at
// its original address modulo 256); with ASan each group of overlapping arrays
// is copied into its own exactly-sized heap block (same address modulo 16), so
// that an access past an array's ends is a heap-buffer-overflow report.
//
// Requests and replies: u32 length, then the payload (little-endian):
//   DESCRIBE(1): str library            -> u32 status, str text
//   LAUNCH(2):   str library, u32 kernel, u32 grid[3], u32 block[3],
//                u64 shared_mem, u32 order, u64 seed, str shm_path, u64 shm_size,
//                u32 ngroups, {u64 offset, u64 size, u32 misalign, u32 write_back}*,
//                u32 nargs, {u32 kind=0, i32 group, u64 offset | u32 kind=1, u32 n, n bytes |
//                            u32 kind=2, u32 n, n bytes, i32 group, u64 offset, u32 at}*,
//                u32 nglobals, {u32 global, u32 group}*
//                -> u32 status, str kernel, i32 where[6], str message
//   READ_GLOBAL(3): str library, u32 global -> u32 status, str bytes
// A global binding copies the group into the library's variable before the
// launch and the variable back into the group after it (RawModule.get_global).
//   where str = u32 length + bytes.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define RUNNER_ASAN 1
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(RUNNER_UBSAN)
#include <sanitizer/common_interface_defs.h>
#define RUNNER_SANITIZER 1
#endif

extern "C" const char* __asan_default_options() {
    return "halt_on_error=1:abort_on_error=0:detect_leaks=0:detect_stack_use_after_return=0:"
           "detect_odr_violation=0:allocator_may_return_null=1:print_legend=0:handle_abort=0";
}
// abort_on_error: UBSan then dies through SIGABRT, whose handler here reports
// the kernel, block and thread (its own death callbacks are not ours to set
// when ASan's runtime is loaded too).
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1:abort_on_error=1"; }
extern "C" const char* __tsan_default_options() { return "halt_on_error=1:report_signal_unsafe=0"; }

namespace {

typedef int (*DescribeCount)();
typedef const char* (*DescribeFn)();
typedef int (*LaunchFn)(int, const unsigned*, const unsigned*, unsigned long long, void**, int, unsigned long long,
                        char*, unsigned long long, int*);
typedef int (*WhereFn)(char*, unsigned long long, int*, int*);
typedef int (*StackGuardFn)(const void*);
typedef void* (*GlobalFn)(int, unsigned long long*);

struct Library {
    void* handle = nullptr;
    DescribeFn describe = nullptr;
    LaunchFn launch = nullptr;
    WhereFn where = nullptr;
    StackGuardFn is_stack_guard = nullptr;
    GlobalFn global = nullptr;
};

std::map<std::string, Library> g_libraries;
volatile WhereFn g_where = nullptr;  // of the library running a launch, for crash reports
volatile StackGuardFn g_is_stack_guard = nullptr;

std::string g_shm_path;
unsigned char* g_shm = nullptr;
size_t g_shm_size = 0;

// --- async-signal-safe-ish reporting ----------------------------------------
void write_all(int fd, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

void report_where(const char* tag, const char* what) {
    char kernel[512] = "";
    int block[3] = {-1, -1, -1}, thread[3] = {-1, -1, -1};
    WhereFn where = g_where;
    int known = where ? where(kernel, sizeof kernel, block, thread) : 0;
    char line[1024];
    int n;
    if (known)
        n = snprintf(line, sizeof line, "\n%s %s kernel=%s block=%d,%d,%d thread=%d,%d,%d\n", tag, what, kernel,
                     block[0], block[1], block[2], thread[0], thread[1], thread[2]);
    else
        n = snprintf(line, sizeof line, "\n%s %s\n", tag, what);
    if (n > 0) write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

const char* signal_name(int sig) {
    switch (sig) {
        case SIGSEGV: return "SIGSEGV";
        case SIGBUS: return "SIGBUS";
        case SIGFPE: return "SIGFPE";
        case SIGILL: return "SIGILL";
        case SIGABRT: return "SIGABRT";
        case SIGTRAP: return "SIGTRAP";
        default: return "signal";
    }
}

void on_fatal_signal(int sig, siginfo_t* info, void*) {
    fflush(stdout);
    char what[128];
    void* addr = info ? info->si_addr : nullptr;
    StackGuardFn guard = g_is_stack_guard;
    if (sig == SIGSEGV && guard && guard(addr))
        snprintf(what, sizeof what, "signal=SIGSEGV(stack-overflow:raise-CUCONV_EMU_STACK_KB)");
    else if (sig == SIGSEGV || sig == SIGBUS)
        snprintf(what, sizeof what, "signal=%s(address=%p)", signal_name(sig), addr);
    else
        snprintf(what, sizeof what, "signal=%s", signal_name(sig));
    report_where("==CUCONV_EMU_FAULT==", what);
    _exit(128 + sig);
}

void on_where_signal(int) { report_where("==CUCONV_EMU_WHERE==", "running"); }

#ifdef RUNNER_SANITIZER
void on_sanitizer_death() {
    fflush(stdout);
    report_where("==CUCONV_EMU_FAULT==", "sanitizer");
}
#endif

void install_handlers() {
    static char altstack[1 << 16];
    stack_t ss{};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_ONSTACK | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    // The sanitizers report SEGV/BUS/FPE themselves (then call the death callback).
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE}) sigaction(sig, &sa, nullptr);
#endif
    for (int sig : {SIGILL, SIGABRT, SIGTRAP}) sigaction(sig, &sa, nullptr);
    struct sigaction su {};
    su.sa_handler = on_where_signal;
    su.sa_flags = SA_ONSTACK | SA_RESTART;
    sigemptyset(&su.sa_mask);
    sigaction(SIGUSR1, &su, nullptr);
#ifdef RUNNER_SANITIZER
    __sanitizer_set_death_callback(on_sanitizer_death);
#endif
}

// --- protocol ----------------------------------------------------------------
bool read_exact(int fd, void* p, size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

struct Reader {
    const unsigned char* p;
    const unsigned char* end;
    bool ok = true;
    template <typename T>
    T get() {
        T v{};
        if ((size_t)(end - p) < sizeof(T)) {
            ok = false;
            return v;
        }
        memcpy(&v, p, sizeof(T));
        p += sizeof(T);
        return v;
    }
    std::string str() {
        uint32_t n = get<uint32_t>();
        if (!ok || (size_t)(end - p) < n) {
            ok = false;
            return {};
        }
        std::string s(reinterpret_cast<const char*>(p), n);
        p += n;
        return s;
    }
    const unsigned char* bytes(uint32_t n) {
        if ((size_t)(end - p) < n) {
            ok = false;
            return nullptr;
        }
        const unsigned char* b = p;
        p += n;
        return b;
    }
};

struct Writer {
    std::string buf;
    template <typename T>
    void put(T v) {
        buf.append(reinterpret_cast<const char*>(&v), sizeof(T));
    }
    void str(const std::string& s) {
        put<uint32_t>((uint32_t)s.size());
        buf += s;
    }
};

int g_reply_fd = 3;

void reply(const Writer& w) {
    uint32_t n = (uint32_t)w.buf.size();
    write_all(g_reply_fd, &n, 4);
    write_all(g_reply_fd, w.buf.data(), w.buf.size());
}

void reply_error(uint32_t status, const std::string& message) {
    Writer w;
    w.put<uint32_t>(status);
    w.str("");
    for (int i = 0; i < 6; ++i) w.put<int32_t>(-1);
    w.str(message);
    reply(w);
}

enum { kStatusOk = 0, kStatusInternal = 4 };

Library* load(const std::string& path, std::string& err) {
    auto it = g_libraries.find(path);
    if (it != g_libraries.end()) return &it->second;
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        err = std::string("cannot load emulator library: ") + dlerror();
        return nullptr;
    }
    Library lib;
    lib.handle = h;
    lib.describe = (DescribeFn)dlsym(h, "cuconv_emu_describe");
    lib.launch = (LaunchFn)dlsym(h, "cuconv_emu_launch");
    lib.where = (WhereFn)dlsym(h, "cuconv_emu_where");
    lib.is_stack_guard = (StackGuardFn)dlsym(h, "cuconv_emu_is_stack_guard");
    lib.global = (GlobalFn)dlsym(h, "cuconv_emu_global_address");
    if (!lib.describe || !lib.launch || !lib.where) {
        err = "not an emulator library: " + path;
        return nullptr;
    }
    return &(g_libraries[path] = lib);
}

bool map_shm(const std::string& path, size_t size, std::string& err) {
    if (path == g_shm_path && size == g_shm_size) return true;
    if (g_shm) munmap(g_shm, g_shm_size);
    g_shm = nullptr;
    g_shm_size = 0;
    g_shm_path.clear();
    if (size == 0) return true;
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) {
        err = "cannot open shared memory " + path + ": " + strerror(errno);
        return false;
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        err = "cannot map shared memory " + path + ": " + strerror(errno);
        return false;
    }
    g_shm = static_cast<unsigned char*>(p);
    g_shm_size = size;
    g_shm_path = path;
    return true;
}

void handle_describe(Reader& r) {
    std::string path = r.str();
    std::string err;
    Library* lib = r.ok ? load(path, err) : nullptr;
    if (!lib) return reply_error(kStatusInternal, r.ok ? err : "malformed request");
    Writer w;
    w.put<uint32_t>(kStatusOk);
    w.str(lib->describe());
    reply(w);
}

void handle_read_global(Reader& r) {
    std::string path = r.str();
    uint32_t index = r.get<uint32_t>();
    std::string err;
    Library* lib = r.ok ? load(path, err) : nullptr;
    if (!lib) return reply_error(kStatusInternal, r.ok ? err : "malformed request");
    unsigned long long size = 0;
    void* address = lib->global ? lib->global((int)index, &size) : nullptr;
    if (!address) return reply_error(kStatusInternal, "no such global variable in the library");
    Writer w;
    w.put<uint32_t>(kStatusOk);
    w.str(std::string(static_cast<const char*>(address), size));
    reply(w);
}

struct Group {
    uint64_t offset, size;
    uint32_t misalign, write_back;
    unsigned char* data;  // where the kernel sees it
    void* block;          // heap block under ASan
};

void handle_launch(Reader& r) {
    std::string path = r.str();
    uint32_t index = r.get<uint32_t>();
    unsigned grid[3], block[3];
    for (unsigned& g : grid) g = r.get<uint32_t>();
    for (unsigned& b : block) b = r.get<uint32_t>();
    uint64_t shared_mem = r.get<uint64_t>();
    uint32_t order = r.get<uint32_t>();
    uint64_t seed = r.get<uint64_t>();
    std::string shm_path = r.str();
    uint64_t shm_size = r.get<uint64_t>();
    uint32_t ngroups = r.get<uint32_t>();
    if (!r.ok || ngroups > (1u << 20)) return reply_error(kStatusInternal, "malformed launch request");
    std::string err;
    Library* lib = load(path, err);
    if (!lib) return reply_error(kStatusInternal, err);
    if (!map_shm(shm_path, shm_size, err)) return reply_error(kStatusInternal, err);

    std::vector<Group> groups(ngroups);
    for (Group& g : groups) {
        g.offset = r.get<uint64_t>();
        g.size = r.get<uint64_t>();
        g.misalign = r.get<uint32_t>();
        g.write_back = r.get<uint32_t>();
        g.block = nullptr;
        if (!r.ok || g.offset + g.size > g_shm_size) return reply_error(kStatusInternal, "bad array group");
    }
    uint32_t nargs = r.get<uint32_t>();
    if (!r.ok || nargs > 4096) return reply_error(kStatusInternal, "malformed argument list");
    // 16-byte slots: each argument's value as the kernel's parameter receives it.
    std::vector<unsigned char> storage;
    std::vector<size_t> slot(nargs);
    struct Pending {
        uint32_t arg;
        int32_t group;
        uint64_t offset;
    };
    std::vector<Pending> pointers;
    std::vector<std::pair<size_t, std::string>> values;
    struct Embedded {  // kind 2: a value (a tensor map) holding a group's address at byte `at`
        size_t slot;
        uint32_t at;
        int32_t group;
        uint64_t offset;
    };
    std::vector<Embedded> embedded;
    size_t used = 0;
    for (uint32_t i = 0; i < nargs; ++i) {
        uint32_t kind = r.get<uint32_t>();
        if (kind == 0) {
            int32_t g = r.get<int32_t>();
            uint64_t off = r.get<uint64_t>();
            if (g >= (int32_t)ngroups) return reply_error(kStatusInternal, "bad group index");
            slot[i] = used;
            used += 16;
            pointers.push_back({i, g, off});
        } else {
            uint32_t n = r.get<uint32_t>();
            const unsigned char* b = r.bytes(n);
            if (!r.ok) return reply_error(kStatusInternal, "malformed scalar");
            // Values of 64 bytes or more start 64-byte aligned (a CUtensorMap is alignas(64)).
            if (n >= 64) used = (used + 63) / 64 * 64;
            slot[i] = used;
            used += (n + 15) / 16 * 16 + 16;
            values.emplace_back(slot[i], std::string(reinterpret_cast<const char*>(b), n));
            if (kind == 2) {
                int32_t g = r.get<int32_t>();
                uint64_t off = r.get<uint64_t>();
                uint32_t at = r.get<uint32_t>();
                if (!r.ok || g < 0 || g >= (int32_t)ngroups || (uint64_t)at + 8 > n)
                    return reply_error(kStatusInternal, "bad embedded address");
                embedded.push_back({slot[i], at, g, off});
            }
        }
        if (!r.ok) return reply_error(kStatusInternal, "malformed argument");
    }
    uint32_t nglobals = r.get<uint32_t>();
    if (!r.ok || nglobals > 4096) return reply_error(kStatusInternal, "malformed global list");
    struct Binding {
        void* address;
        uint64_t size;
        uint32_t group;
    };
    std::vector<Binding> bindings;
    for (uint32_t i = 0; i < nglobals; ++i) {
        uint32_t index = r.get<uint32_t>(), group = r.get<uint32_t>();
        unsigned long long size = 0;
        void* address = lib->global ? lib->global((int)index, &size) : nullptr;
        if (!r.ok || !address || group >= ngroups || groups[group].size != size)
            return reply_error(kStatusInternal, "bad global binding");
        bindings.push_back({address, size, group});
    }
    // Slots are 16-byte aligned inside a 64-byte aligned buffer.
    std::vector<unsigned char> raw(used + 64);
    unsigned char* base = raw.data() + (64 - (reinterpret_cast<uintptr_t>(raw.data()) & 63)) % 64;
    for (auto& v : values) memcpy(base + v.first, v.second.data(), v.second.size());

    for (Group& g : groups) {
#ifdef RUNNER_ASAN
        // Keep the address modulo 16 (what vector loads care about); for the
        // usual 16-aligned array the block starts exactly at the array, so a
        // read before it is a heap-buffer-overflow too.
        g.misalign %= 16;
        void* blk = nullptr;
        if (posix_memalign(&blk, 16, g.misalign + g.size) != 0 || !blk)
            return reply_error(kStatusInternal, "out of memory copying arrays");
        g.block = blk;
        g.data = static_cast<unsigned char*>(blk) + g.misalign;
        if (g.misalign) __asan_poison_memory_region(blk, g.misalign);
        memcpy(g.data, g_shm + g.offset, g.size);
#else
        g.data = g_shm + g.offset;
#endif
    }
    std::vector<void*> argv(nargs);
    for (uint32_t i = 0; i < nargs; ++i) argv[i] = base + slot[i];
    for (const Pending& p : pointers) {
        void* ptr = p.group < 0 ? nullptr : groups[p.group].data + p.offset;
        memcpy(base + slot[p.arg], &ptr, sizeof ptr);
    }
    for (const Embedded& m : embedded) {
        unsigned long long addr = (unsigned long long)(uintptr_t)(groups[m.group].data + m.offset);
        memcpy(base + m.slot + m.at, &addr, sizeof addr);
    }

    for (const Binding& b : bindings) memcpy(b.address, groups[b.group].data, b.size);

    char message[4096] = "";
    int where[6] = {-1, -1, -1, -1, -1, -1};
    g_where = lib->where;
    g_is_stack_guard = lib->is_stack_guard;
    int status = lib->launch((int)index, grid, block, shared_mem, argv.data(), (int)order, seed, message,
                             sizeof message, where);
    g_where = nullptr;
    fflush(stdout);
    fflush(stderr);
    for (const Binding& b : bindings) memcpy(groups[b.group].data, b.address, b.size);

    for (Group& g : groups) {
#ifdef RUNNER_ASAN
        if (g.write_back) memcpy(g_shm + g.offset, g.data, g.size);
        if (g.misalign) __asan_unpoison_memory_region(g.block, g.misalign);
        free(g.block);
#endif
        (void)g;
    }
    Writer w;
    w.put<uint32_t>((uint32_t)status);
    std::string kernel_name;
    {
        // The kernel's name, for the exception (from the library's table).
        const char* text = lib->describe();
        int k = -1;
        for (const char* line = text; *line;) {
            const char* nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            if (len > 2 && line[0] == 'K' && line[1] == '\t' && ++k == (int)index) {
                const char* tab = static_cast<const char*>(memchr(line + 2, '\t', len - 2));
                kernel_name.assign(line + 2, tab ? (size_t)(tab - line - 2) : len - 2);
                break;
            }
            if (!nl) break;
            line = nl + 1;
        }
    }
    w.str(kernel_name);
    for (int i = 0; i < 6; ++i) w.put<int32_t>(where[i]);
    w.str(status ? message : "");
    reply(w);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1) g_reply_fd = atoi(argv[1]);  // the pipe Python reads replies from
    setvbuf(stdout, nullptr, _IOLBF, 0);
    install_handlers();
    for (;;) {
        uint32_t n;
        if (!read_exact(0, &n, 4)) return 0;  // Python closed the pipe
        std::vector<unsigned char> msg(n);
        if (!read_exact(0, msg.data(), n)) return 0;
        Reader r{msg.data(), msg.data() + n};
        uint32_t cmd = r.get<uint32_t>();
        if (cmd == 1) handle_describe(r);
        else if (cmd == 2) handle_launch(r);
        else if (cmd == 3) handle_read_global(r);
        else reply_error(kStatusInternal, "unknown request");
    }
}
