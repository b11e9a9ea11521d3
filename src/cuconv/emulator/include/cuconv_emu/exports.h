// The C entry points of an emulator library, included after the generated
// kernel table `cuconv_emu_kernel_table` (and `cuconv_emu_kernel_table_size`) and the table of host-visible
// variables `cuconv_emu_global_table` (see cuconv/emulator/_build.py). The
// runner process (runner.cpp) calls these through dlsym.
#pragma once
#define CUCONV_EMU_EXPORT extern "C" __attribute__((visibility("default")))

CUCONV_EMU_EXPORT int cuconv_emu_abi_version() { return 1; }

CUCONV_EMU_EXPORT int cuconv_emu_kernel_count() {
    return cuconv_emu_kernel_table_size;
}

// One line per kernel "K\t<name>\t<nparams>" followed by one line per parameter
// "P\t<kind>\t<dtype>\t<size>\t<const>\t<C++ type>"; then one line per global variable
// "G\t<name>\t<size>\t<dtype>\t<itemsize>\t<rank>\t<extents>".
CUCONV_EMU_EXPORT const char* cuconv_emu_describe() {
    static char* text = nullptr;
    static size_t cap = 0, len = 0;
    len = 0;
    auto add = [](const char* fmt, ...) {
        for (;;) {
            va_list ap;
            va_start(ap, fmt);
            int n = vsnprintf(text ? text + len : nullptr, text ? cap - len : 0, fmt, ap);
            va_end(ap);
            if (n >= 0 && text && len + (size_t)n < cap) {
                len += (size_t)n;
                return;
            }
            cap = cap * 2 + (size_t)(n > 0 ? n : 0) + 4096;
            text = static_cast<char*>(realloc(text, cap));
            if (!text) abort();
        }
    };
    add("%s", "");
    for (int k = 0; k < cuconv_emu_kernel_count(); ++k) {
        const cuconv_emu::KernelEntry& e = cuconv_emu_kernel_table[k];
        add("K\t%s\t%d\n", e.name, e.nparams);
        for (int i = 0; i < e.nparams; ++i) {
            const cuconv_emu::ParamInfo& p = e.params[i];
            add("P\t%c\t%c\t%u\t%u\t%s\n", p.kind, p.dtype, p.size, (unsigned)p.is_const, p.type_name());
        }
    }
    for (int i = 0; i < cuconv_emu_global_table_size; ++i) {
        const cuconv_emu::GlobalEntry& g = cuconv_emu_global_table[i];
        add("G\t%s\t%llu\t%c\t%u\t%u\t%llu,%llu,%llu,%llu\n", g.name, g.size, g.dtype, g.itemsize, g.rank,
            g.extents[0], g.extents[1], g.extents[2], g.extents[3]);
    }
    return text;
}

// The address and size of global variable `index` of the table (RawModule.get_global).
CUCONV_EMU_EXPORT void* cuconv_emu_global_address(int index, unsigned long long* size) {
    if (index < 0 || index >= cuconv_emu_global_table_size) return nullptr;
    *size = cuconv_emu_global_table[index].size;
    return cuconv_emu_global_table[index].address;
}

// Runs kernel `index` over the grid. Returns 0, or an error kind (runtime.h)
// with a message in `err` and where it happened in block/thread (-1 if unknown).
CUCONV_EMU_EXPORT int cuconv_emu_launch(int index, const unsigned* grid, const unsigned* block,
                                        unsigned long long shared_mem, void** argv, int order,
                                        unsigned long long seed, char* err, unsigned long long err_len, int* where) {
    if (index < 0 || index >= cuconv_emu_kernel_count()) {
        snprintf(err, err_len, "no kernel #%d in this library", index);
        return cuconv_emu::kBadLaunch;
    }
    int status =
        cuconv_emu::launch(&cuconv_emu_kernel_table[index], grid, block, (size_t)shared_mem, argv, order, seed);
    const cuconv_emu::Engine& e = cuconv_emu::g_engine;
    if (status != 0) {
        snprintf(err, err_len, "%s", e.error.c_str());
        where[0] = (int)e.error_block.x;
        where[1] = (int)e.error_block.y;
        where[2] = (int)e.error_block.z;
        where[3] = e.error_has_thread ? (int)e.error_thread.x : -1;
        where[4] = e.error_has_thread ? (int)e.error_thread.y : -1;
        where[5] = e.error_has_thread ? (int)e.error_thread.z : -1;
    }
    return status;
}

CUCONV_EMU_EXPORT int cuconv_emu_where(char* kernel, unsigned long long kernel_len, int* block, int* thread) {
    return cuconv_emu::where(kernel, (size_t)kernel_len, block, thread) ? 1 : 0;
}

CUCONV_EMU_EXPORT void* cuconv_emu_dynamic_shared_base() { return cuconv_emu::dynamic_shared_memory(); }

// Whether a faulting address is in the guard page below a fiber's stack.
CUCONV_EMU_EXPORT int cuconv_emu_is_stack_guard(const void* address) {
    const cuconv_emu::Engine& e = cuconv_emu::g_engine;
    const char* a = static_cast<const char*>(address);
    for (size_t i = 0; i < e.stacks.size; ++i)
        if (a >= e.stacks[i] - e.stack_guard && a < e.stacks[i]) return 1;
    return 0;
}
