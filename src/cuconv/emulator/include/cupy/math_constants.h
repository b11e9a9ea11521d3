// <cupy/math_constants.h> for the CPU emulator: CuPy bundles CUDA's CUDART_INF_F,
// CUDART_NAN_F, CUDART_INF and CUDART_NAN; the emulator has all of math_constants.h.
#pragma once
#include "../math_constants.h"
