// cuda_bf16.h for the CPU emulator.
#pragma once
#include "cuconv_emu/bf16.h"
