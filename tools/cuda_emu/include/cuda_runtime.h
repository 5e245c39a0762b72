// Emulated CUDA: the runtime API (src/runtime.cpp) and the device language (emu/device.h).
#pragma once
#include <cuda_runtime_api.h>

#include "emu/device.h"
