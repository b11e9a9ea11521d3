// libcu++'s cuda::std for the CPU emulator: the host's standard library under the
// cuda::std name (the emulator compiles device code as ordinary C++17/20).
#pragma once
namespace cuda {
namespace std {
using namespace ::std;
}  // namespace std
// Scopes of libcu++'s atomics and barriers; one fiber runs at a time here, so all are one.
enum thread_scope { thread_scope_system = 0, thread_scope_device = 1, thread_scope_block = 2, thread_scope_thread = 3 };
}  // namespace cuda
