// <cupy/cuda_workaround.h> for the CPU emulator. CuPy's fills namespace std from
// cuda::std under NVRTC (__CUDACC_RTC__), which has no C++ standard library; the
// emulator compiles with the host's, so there is nothing to add. (A source that
// defines a std name NVRTC lacks, such as std::is_same_v, collides with it here.)
#pragma once
