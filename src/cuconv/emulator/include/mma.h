// mma.h (nvcuda::wmma) for the CPU emulator.
#pragma once
#include "cuconv_emu/wmma.h"
