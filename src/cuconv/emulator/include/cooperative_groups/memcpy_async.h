// <cooperative_groups/memcpy_async.h> for the CPU emulator: part of cooperative_groups.h.
#pragma once
#include "../cooperative_groups.h"
