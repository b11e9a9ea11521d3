// device_launch_parameters.h for the CPU emulator: everything it declares on the device is already
// provided by the emulator's prelude (cuconv_emu/prelude.h).
#pragma once
