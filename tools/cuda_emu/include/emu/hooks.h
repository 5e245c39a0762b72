// The seam between the emulated CUDA runtime (src/runtime.cpp) and the emulated kernels
// (emu/device.h): a kernel launch, a copy, a memset and a cuBLAS call are each one piece of
// stream-ordered host work, run now or, while its stream is being captured, at each replay of
// the graph being captured.
#pragma once
#include <functional>
#include <string>

#include <cuda_runtime_api.h>

namespace emu {

// Runs `work` in `stream`'s order: at once (every emulated stream is synchronous), or, when
// `stream` is capturing, appends it to the graph under capture so each cudaGraphLaunch of
// that graph runs it again. Returns cudaSuccess, or the error the capture state gives (an
// invalidated capture: cudaErrorStreamCaptureInvalidated).
cudaError_t submit(cudaStream_t stream, std::function<void()> work);

// Records a failed launch or a fault inside a kernel: prints `what` to stderr once, and makes
// the next cudaGetLastError / cudaStreamSynchronize / cudaDeviceSynchronize return `error`
// (cudaGetLastError clears it, like the real runtime's non-sticky errors).
void record_error(cudaError_t error, const std::string& what);

// The largest dynamic shared memory a launch of `kernel` may ask for: 48 KiB, or what
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n) allowed
// (at most 227 KiB, an H100's opt-in limit).
int max_dynamic_shared_bytes(const void* kernel);

// What this process has run so far: kernel grids, and all stream work (kernels, copies,
// memsets, cuBLAS calls, each node of a replayed graph). The difference of two readings is
// what the code between them costs in launches.
struct WorkCounts {
  uint64_t kernels = 0;
  uint64_t stream_work = 0;
};
WorkCounts work_counts();
void note_kernel_run();  // by the device side, as a grid starts

// EMBER_EMU_SKIP_KERNELS=1: launches and cuBLAS calls are checked and counted but not run (copies
// still are), so a benchmark times the host side of ember's GPU path alone. Results are garbage.
bool skip_device_work();

}  // namespace emu
