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
//
// CUDA graphs (graph.h): while a CudaGraph captures on a device, that device's allocations come
// from, and its frees go to, a private pool owned by the graph. The captured kernels keep the
// addresses they were given; replays write there again, so no block the graph touched may be
// handed to another tensor while the graph lives. A pool takes a block (i) from its own free
// list, (ii) from the device's cache — where the eager warm-up step a trainer runs before
// capturing left every size the step needs, so capture usually calls cudaMalloc never — or
// (iii) from cudaMalloc. cudaMalloc is an "unsafe" call during capture (it is not a stream
// operation and would invalidate a thread-local or global capture), so the allocator switches
// the thread to relaxed capture mode around it, as PyTorch's allocator does; cudaMalloc needs no
// stream order, so this is sound. A block allocated before the capture and freed during it is
// adopted by the pool (a captured kernel may read it). Pool blocks, free or live, stay reserved
// until the graph is destroyed; then the free ones return to the device's cache and the live
// ones (tensors that outlive the graph) return there when freed. memory_stats() counts pool
// blocks like any other: `allocated` while live, `reserved` always; empty_cache() leaves them.
//
// EMBER_CUDA_NO_CACHING=1 (read once, at the first allocation) turns the cache off: every
// allocation is a cudaMalloc of exactly the bytes asked for and every free a cudaFree, which
// synchronises the device. Slow; it is for compute-sanitizer memcheck (and AddressSanitizer
// under tools/cuda_emu), which see an access past a tensor's end only where its block ends.
// Graph pools keep their blocks as before (a captured kernel may use them on replay).
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ember/engine/cuda/graph_pool.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/error.h"

#if EMBER_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ember/kernels/cuda/check.h"
#endif

namespace ember::cuda {

#if EMBER_WITH_CUDA

namespace {

bool caching_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("EMBER_CUDA_NO_CACHING");
    return !(v && *v && std::strcmp(v, "0") != 0);
  }();
  return on;
}

size_t round_size(size_t n) {
  if (!caching_enabled()) return std::max<size_t>(n, 1);
  if (n <= 512) return 512;
  const size_t p = std::bit_floor(n);
  if (n == p) return n;
  const size_t q = p / 4;
  return (n + q - 1) / q * q;
}

struct Block {
  size_t size;    // rounded
  uint64_t pool;  // the graph pool that owns it; 0: the device's cache
};

using FreeLists = std::unordered_map<size_t, std::vector<void*>>;  // rounded size -> free blocks

struct DeviceCache {
  std::mutex mutex;
  FreeLists free_blocks;                          // the device's cache
  std::unordered_map<void*, Block> live;          // pointer -> its block
  // The map's nodes of freed blocks, reused for the next allocations: a node allocated and
  // freed per tensor was the GPU path's last malloc per op.
  std::vector<std::unordered_map<void*, Block>::node_type> spare_nodes;
  std::unordered_map<uint64_t, FreeLists> pools;  // graph pool id -> its free blocks
  uint64_t capturing_pool = 0;                    // the pool of the capture in progress (0: none)
  std::thread::id capturing_thread;               // the thread capturing: only its blocks use the pool

  // The pool an allocation or free by this thread belongs to now (0: the cache).
  uint64_t pool_of_this_thread() const {
    return capturing_pool && std::this_thread::get_id() == capturing_thread ? capturing_pool : 0;
  }
  uint64_t next_pool = 1;
  MemoryStats stats;

  // Returns every cached block to the driver; the caller holds the mutex. Pool blocks stay.
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

// Takes a block of `size` from `lists`, or returns nullptr.
void* take(FreeLists& lists, size_t size) {
  auto it = lists.find(size);
  if (it == lists.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

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
  const uint64_t pool = c.pool_of_this_thread();
  void* p = pool ? take(c.pools[pool], size) : nullptr;
  if (!p) p = take(c.free_blocks, size);
  if (p) {
    ++c.stats.cache_hits;
  } else {
    cudaError_t e;
    if (pool) {
      // During capture: cudaMalloc in relaxed mode (see the top of this file). No retry after
      // emptying the cache: cudaFree synchronises the device, which a capture forbids.
      cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
      cudaThreadExchangeStreamCaptureMode(&mode);
      e = cudaMalloc(&p, size);
      cudaThreadExchangeStreamCaptureMode(&mode);
    } else {
      e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {  // give the cache back to the driver, then try once more
        cudaGetLastError();
        c.release_cached(index);
        e = cudaMalloc(&p, size);
      }
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      EMBER_FAIL("CUDA out of memory on cuda:", index, " allocating ", mib(size), " (", nbytes, " bytes)",
                 pool ? " during CUDA graph capture" : "", ": ", mib(c.stats.allocated), " in live tensors, ",
                 mib(c.stats.reserved), " reserved by ember (", cudaGetErrorString(e),
                 "). Use a smaller batch, free tensors you no longer need, or check other GPU processes.");
    }
    ++c.stats.device_mallocs;
    c.stats.reserved += size;
    c.stats.peak_reserved = std::max(c.stats.peak_reserved, c.stats.reserved);
  }
  if (c.spare_nodes.empty()) {
    c.live.emplace(p, Block{size, pool});
  } else {
    auto node = std::move(c.spare_nodes.back());
    c.spare_nodes.pop_back();
    node.key() = p;
    node.mapped() = Block{size, pool};
    c.live.insert(std::move(node));
  }
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
  const Block b = it->second;
  c.stats.allocated -= b.size;
  // A pool's block goes back to its pool; a cache block freed by the capturing thread during a
  // capture is adopted by the capturing pool (a captured kernel may read it on replay); any other
  // to the cache.
  const uint64_t owner = b.pool ? b.pool : c.pool_of_this_thread();
  c.spare_nodes.push_back(c.live.extract(it));
  if (!owner && !caching_enabled()) {
    set_device(index);
    cudaFree(p);  // synchronises the device: no queued kernel still reads the block
    c.stats.reserved -= b.size;
    return;
  }
  (owner ? c.pools[owner] : c.free_blocks)[b.size].push_back(p);
}

namespace detail {

uint64_t create_graph_pool(int index) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  const uint64_t id = c.next_pool++;
  c.pools[id];
  return id;
}

void begin_pool_capture(int index, uint64_t pool) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  EMBER_CHECK(c.capturing_pool == 0, "cuda:", index, ": a CUDA graph capture is already in progress (captures do not nest)");
  EMBER_CHECK(c.pools.count(pool), "cuda:", index, ": graph pool ", pool, " does not exist");
  c.capturing_pool = pool;
  c.capturing_thread = std::this_thread::get_id();
}

void end_pool_capture(int index) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.capturing_pool = 0;
}

void release_graph_pool(int index, uint64_t pool) {
  DeviceCache& c = cache(index);
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.capturing_pool == pool) c.capturing_pool = 0;
  auto it = c.pools.find(pool);
  if (it == c.pools.end()) return;
  for (auto& [size, blocks] : it->second) {
    auto& dst = c.free_blocks[size];
    dst.insert(dst.end(), blocks.begin(), blocks.end());
  }
  if (!caching_enabled()) c.release_cached(index);  // the cache held nothing else
  c.pools.erase(it);
  for (auto& [p, b] : c.live)  // tensors that outlive the graph: theirs go to the cache when freed
    if (b.pool == pool) b.pool = 0;
}

}  // namespace detail

bool allocator_caches() { return caching_enabled(); }

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
bool allocator_caches() { return true; }
void reset_peak_memory_stats(int) {}
void empty_cache() {}

namespace detail {
uint64_t create_graph_pool(int) { return 0; }
void begin_pool_capture(int, uint64_t) {}
void end_pool_capture(int) {}
void release_graph_pool(int, uint64_t) {}
}  // namespace detail

#endif

}  // namespace ember::cuda
