// The caching allocator behind every CUDA tensor.
//
// cudaMalloc and cudaFree synchronise the device and cost tens of microseconds: a training
// step that allocates a few hundred temporaries cannot afford them. So a freed block is not
// returned to the driver but kept in a bin of its size; the next request of that rounded size
// takes it back. Sizes are rounded to four bins per power of two (at most 25% slack), so a
// step's steady state finds every size it needs in the cache and calls cudaMalloc never.
//
// Stream safety: ember queues all work of a device on that device's one stream, in program
// order. A block freed by the host may still be in use by queued kernels, but any kernel that
// receives it next is queued after them on the same stream, so reuse without waiting is safe.
// (A second stream would need events recorded at free time; ember does not use one.)
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/error.h"

#if EMBER_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ember/kernels/cuda/check.h"
#endif

namespace ember::cuda {

#if EMBER_WITH_CUDA

namespace {

size_t round_size(size_t n) {
  if (n <= 512) return 512;
  const size_t p = std::bit_floor(n);
  if (n == p) return n;
  const size_t q = p / 4;
  return (n + q - 1) / q * q;
}

struct DeviceCache {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> live;                      // pointer -> rounded size
  MemoryStats stats;

  // Returns every cached block to the driver; the caller holds the mutex.
  void release_cached(int index) {
    set_device(index);
    for (auto& [size, blocks] : free_blocks) {
      for (void* p : blocks) {
        cudaFree(p);
        stats.reserved -= size;
      }
    }
    free_blocks.clear();
  }
};

// One cache per device, created on first use and never destroyed (tensors held by statics may
// be freed after main returns). Every allocation and free looks its cache up, so the common
// case is one atomic load; the mutex only guards creation.
std::mutex create_mutex;
std::array<std::atomic<DeviceCache*>, kMaxDevices> caches{};
DeviceCache& cache(int index) {
  EMBER_CHECK(index >= 0 && index < kMaxDevices, "cuda:", index, ": device indices go up to ", kMaxDevices - 1);
  DeviceCache* c = caches[index].load(std::memory_order_acquire);
  if (c) return *c;
  std::lock_guard<std::mutex> lock(create_mutex);
  c = caches[index].load(std::memory_order_relaxed);
  if (!c) {
    c = new DeviceCache();
    caches[index].store(c, std::memory_order_release);
  }
  return *c;
}

std::string mib(size_t b) { return std::to_string(b / (1024 * 1024)) + " MiB"; }

}  // namespace

void* device_alloc(size_t nbytes, int index) {
  set_device(index);
  DeviceCache& c = cache(index);
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(c.mutex);
  void* p = nullptr;
  auto it = c.free_blocks.find(size);
  if (it != c.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++c.stats.cache_hits;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back to the driver, then try once more
      cudaGetLastError();
      c.release_cached(index);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      EMBER_FAIL("CUDA out of memory on cuda:", index, " allocating ", mib(size), " (", nbytes, " bytes): ",
                 mib(c.stats.allocated), " in live tensors, ", mib(c.stats.reserved),
                 " reserved by ember (", cudaGetErrorString(e),
                 "). Use a smaller batch, free tensors you no longer need, or check other GPU processes.");
    }
    ++c.stats.device_mallocs;
    c.stats.reserved += size;
    c.stats.peak_reserved = std::max(c.stats.peak_reserved, c.stats.reserved);
  }
  c.live[p] = size;
  c.stats.allocated += size;
  c.stats.peak_allocated = std::max(c.stats.peak_allocated, c.stats.allocated);
  return p;
}

void device_free(void* p, int index) {
  if (!p) return;
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.live.find(p);
  if (it == c.live.end()) return;  // not ours; never happens for Storage-owned memory
  c.stats.allocated -= it->second;
  c.free_blocks[it->second].push_back(p);
  c.live.erase(it);
}

MemoryStats memory_stats(int index) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void reset_peak_memory_stats(int index) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.peak_allocated = c.stats.allocated;
  c.stats.peak_reserved = c.stats.reserved;
}

void empty_cache() {
  for (int i = 0; i < device_count(); ++i) {
    // Blocks freed by the host may still be read by queued kernels: let them finish first.
    synchronize(i);
    DeviceCache& c = cache(i);
    std::lock_guard<std::mutex> lock(c.mutex);
    c.release_cached(i);
  }
}

#else

void* device_alloc(size_t, int) {
  EMBER_FAIL("cannot allocate GPU memory: this ember was built without the CUDA backend (configure with "
             "-DEMBER_CUDA=AUTO where nvcc exists)");
}
void device_free(void*, int) {}
MemoryStats memory_stats(int) { return {}; }
void reset_peak_memory_stats(int) {}
void empty_cache() {}

#endif

}  // namespace ember::cuda
