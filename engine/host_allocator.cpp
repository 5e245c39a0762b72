// The host allocator (see host_allocator.h for the policy).
//
// Each block carries a 64-byte header holding its size class, so release() needs no lookup and
// the user's pointer keeps the 64-byte alignment. The state lives behind one mutex: an
// allocation is a hash lookup and a vector pop, far below an op's own cost, and tensors freed on
// other threads (the thread pool, a data loader) come back safely. The state is never destroyed,
// so tensors that die in static destructors after it still find it.
#include "ember/engine/host_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "ember/engine/asan.h"
#include "ember/engine/error.h"

namespace ember::host {
namespace {

constexpr size_t kAlign = 64;   // a cache line and an AVX-512 vector
constexpr size_t kHeader = 64;  // keeps the user pointer 64-byte aligned

size_t round_up(size_t n, size_t step) { return (n + step - 1) / step * step; }

// Multiples of 64 up to 512 bytes, then 8 classes per power of two (at most 12.5% over).
size_t size_class(size_t n) {
  if (n <= 512) return std::max(kAlign, round_up(n, kAlign));
  const size_t below = std::bit_floor(n - 1);  // below < n <= 2 * below
  return round_up(n, std::max(kAlign, below / 8));
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

size_t cache_limit_from_env() {
  size_t mb = 512;
  if (const char* v = std::getenv("EMBER_CPU_CACHE_LIMIT_MB")) {
    char* end = nullptr;
    const long long x = std::strtoll(v, &end, 10);
    if (end != v && *end == '\0' && x >= 0) mb = static_cast<size_t>(x);
  }
  return mb << 20;
}

struct Allocator {
  std::mutex mu;
  const bool caches = !EMBER_ASAN && !env_flag("EMBER_CPU_NO_CACHING");
  const size_t limit = cache_limit_from_env();
  std::unordered_map<size_t, std::vector<char*>> free_blocks;  // size class -> user pointers, LIFO
  size_t cached = 0;
  MemoryStats stats;

  void note_reserved_locked() { stats.peak_reserved = std::max(stats.peak_reserved, stats.reserved); }
  void note_allocated_locked(size_t size) {
    stats.allocated += size;
    stats.peak_allocated = std::max(stats.peak_allocated, stats.allocated);
  }

  // Takes every cached block out of the cache (the caller frees them outside the lock).
  std::vector<char*> take_all_locked() {
    std::vector<char*> out;
    for (auto& [size, blocks] : free_blocks) {
      out.insert(out.end(), blocks.begin(), blocks.end());
      stats.reserved -= size * blocks.size();
    }
    free_blocks.clear();
    cached = 0;
    return out;
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed (see the file comment)
  return *a;
}

size_t& size_of_block(char* user) { return *reinterpret_cast<size_t*>(user - kHeader); }

void free_to_system(char* user) { std::free(user - kHeader); }

void free_all(const std::vector<char*>& blocks) {
  for (char* b : blocks) free_to_system(b);
}

}  // namespace

void* allocate(size_t nbytes) {
  Allocator& a = allocator();
  const size_t size = a.caches ? size_class(nbytes) : std::max(kAlign, round_up(nbytes, kAlign));
  std::vector<char*> evicted;
  {
    std::lock_guard<std::mutex> lock(a.mu);
    if (a.caches) {
      auto it = a.free_blocks.find(size);
      if (it != a.free_blocks.end() && !it->second.empty()) {
        char* p = it->second.back();
        it->second.pop_back();
        a.cached -= size;
        a.stats.cache_hits += 1;
        a.note_allocated_locked(size);
        return p;
      }
      // A size the cache does not hold: keep live + cached memory within the limit's reach.
      if (a.cached > 0 && a.cached + size > a.limit) evicted = a.take_all_locked();
    }
  }
  free_all(evicted);
  char* raw = static_cast<char*>(std::aligned_alloc(kAlign, kHeader + size));
  if (!raw) {
    std::vector<char*> rest;
    {
      std::lock_guard<std::mutex> lock(a.mu);
      rest = a.take_all_locked();
    }
    free_all(rest);  // the cache may have held what the system now lacks: try once more
    raw = static_cast<char*>(std::aligned_alloc(kAlign, kHeader + size));
  }
  if (!raw) EMBER_FAIL("out of host memory allocating ", nbytes, " bytes");
  char* user = raw + kHeader;
  size_of_block(user) = size;
  std::lock_guard<std::mutex> lock(a.mu);
  a.stats.system_allocs += 1;
  a.stats.reserved += size;
  a.note_reserved_locked();
  a.note_allocated_locked(size);
  return user;
}

void release(void* p) {
  if (!p) return;
  Allocator& a = allocator();
  char* user = static_cast<char*>(p);
  const size_t size = size_of_block(user);
  {
    std::lock_guard<std::mutex> lock(a.mu);
    a.stats.allocated -= size;
    if (a.caches && a.cached + size <= a.limit) {
      a.free_blocks[size].push_back(user);
      a.cached += size;
      return;
    }
    a.stats.reserved -= size;
  }
  free_to_system(user);
}

MemoryStats memory_stats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.stats;
}

void reset_peak_memory_stats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  a.stats.peak_allocated = a.stats.allocated;
  a.stats.peak_reserved = a.stats.reserved;
}

void empty_cache() {
  Allocator& a = allocator();
  std::vector<char*> blocks;
  {
    std::lock_guard<std::mutex> lock(a.mu);
    blocks = a.take_all_locked();
  }
  free_all(blocks);
}

bool allocator_caches() { return allocator().caches; }

}  // namespace ember::host
