// cublas_api.h for the CPU emulator: the same stand-in as cublas_v2.h (cuBLAS's types and
// enums only; device code cannot call cuBLAS, so a call is an ordinary "not declared" error).
#pragma once
#include "cublas_v2.h"
