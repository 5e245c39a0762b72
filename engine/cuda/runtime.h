// The CUDA runtime as the engine sees it: devices, the one stream per device, memory
// statistics, synchronisation. No CUDA header is included here, so the API is the same in a
// CPU-only build, where device_count() is 0 and every call that needs a GPU says so.
//
// Ordering model (as PyTorch's default): every kernel, copy and cuBLAS call of ember on device
// N goes to that device's one stream, in program order. Host code that reads device memory
// (item(), to(cpu), printing) synchronises that stream first; nothing else blocks the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "ember/engine/device.h"

namespace ember::cuda {

constexpr int kMaxDevices = 64;  // device indices ember keeps per-device state for

bool built();                // this ember was compiled with the CUDA backend
int device_count();          // GPUs usable now: 0 without a driver or a GPU (never throws)
bool available();            // device_count() > 0
std::string unavailable_reason();  // why available() is false, in one sentence ("" if it is true)

// Throws an ember::Error naming `what` unless `d` is a CUDA device that exists here.
void check_device(const Device& d, const char* what);

// The stream every op on device `index` runs on (a cudaStream_t, as void*). Makes that
// device current on this thread first.
void* stream(int index);
// Makes `index` current on this thread (cheap when it already is).
void set_device(int index);
// Waits for all work queued on the device's stream (index -1: every device ember used).
// During a CUDA graph capture on that device it raises an ember::Error instead (a capture
// cannot be waited for).
void synchronize(int index = -1);

// Whether a CudaGraph (graph.h) is capturing on device `index` now (index -1: on any device).
// False in a CPU-only build. Never throws.
bool capturing(int index = -1);

// Copies n bytes between any two of host and device memory, queued on the device's stream;
// returns once a host destination holds the data (device -> host waits) and once a host source
// may be reused. Host -> device copies go through a pinned staging buffer of the device
// (cudaHostAlloc, reused, guarded by an event), so the host does not wait for the transfer.
// During a CUDA graph capture on the device, a copy with a host side raises an ember::Error
// naming the capture (the host cannot read or stage memory inside a captured step).
// dst_dev/src_dev say where each lives.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n);

// The caching allocator (engine/cuda/allocator.cpp): freed blocks are kept in size bins for
// reuse on the same stream, so a training step's steady state calls cudaMalloc never.
struct MemoryStats {
  size_t allocated = 0;        // bytes in live tensors (rounded block sizes)
  size_t reserved = 0;         // bytes obtained from cudaMalloc and not yet returned
  size_t peak_allocated = 0;   // since the start or the last reset_peak_memory_stats
  size_t peak_reserved = 0;
  uint64_t device_mallocs = 0; // cudaMalloc calls so far
  uint64_t cache_hits = 0;     // allocations served from the cache
};
MemoryStats memory_stats(int index = 0);
void reset_peak_memory_stats(int index = 0);
// Returns every cached, unused block to the driver (cudaFree). Live tensors are untouched.
void empty_cache();
// False when EMBER_CUDA_NO_CACHING=1 turned the cache off (allocator.cpp): exact sizes, a
// cudaMalloc per allocation and a cudaFree per free, for memory checkers.
bool allocator_caches();

// Device memory from the caching allocator, ordered on the device's stream; for Storage.
void* device_alloc(size_t nbytes, int index);
void device_free(void* p, int index);

}  // namespace ember::cuda
