// cuda_profiler_api.h for the CPU emulator: the profiler controls are host calls
// that do nothing here (there is no profiler to start).
#pragma once
static inline cudaError_t cudaProfilerStart() { return cudaSuccess; }
static inline cudaError_t cudaProfilerStop() { return cudaSuccess; }
