// cuda_pipeline.h for the CPU emulator: the __pipeline_* primitives are in the
// prelude (an async copy is a plain copy that completes at once).
#pragma once
