// Prelude of every translation unit the emulator compiles (passed with
// -include): the C++ standard library pieces CUDA device code expects to find,
// the CUDA built-ins, and last the CUDA keywords as macros. __CUDA_ARCH__ stays
// undefined and CUCONV_EMULATOR is defined, so device code can pick portable
// branches (e.g. a plain C++ version of an inline-PTX helper).
#pragma once
#define CUCONV_EMULATOR 1
// What nvcc and NVRTC define for device code besides __CUDA_ARCH__ (undefined here):
// code tests these to pick APIs (cooperative groups, cuda::barrier...).
#define __CUDACC__ 1
#define __CUDACC_VER_MAJOR__ 12
#define __CUDACC_VER_MINOR__ 0
#define CUDART_VERSION 12000
#define CUDA_VERSION 12000

// Standard headers first: <memory> uses __attribute__((__noinline__)), which
// the __noinline__ macro below would break if it came later. (The list is
// short on purpose: parsing <string>, <vector>... would cost every kernel a
// third more compile time.)
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <math.h>
#include <stdint.h>

#include "types.h"
#include "runtime.h"
#include "device.h"
#include "not_emulated.h"

#ifndef CUDART_INF_F
#include "../math_constants.h"
#endif

// CUDA's keywords. __shared__ variables become function-local statics: one
// block runs at a time, so a static is exactly "one per block". (`extern
// __shared__` and `static __shared__` declarations are rewritten by the Python
// side before compiling; see cuconv/emulator/_source.py.)
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __cluster_dims__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
#define __device_builtin__
#define __cudart_builtin__
