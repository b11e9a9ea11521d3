// cuda_fp16.h for the CPU emulator.
#pragma once
#include "cuconv_emu/fp16.h"
