// The host allocator: CPU tensors' memory, 64-byte aligned, with a cache of freed blocks.
//
// Why a cache: a training step frees and allocates the same few dozen sizes every step. glibc's
// malloc hands large blocks back to the kernel (munmap, heap trimming) and takes them again as
// fresh pages, so every step pays page faults, and with several threads a lock in the kernel;
// how much depended on the order of allocations, so an unrelated change moved the DDE toy step
// by 7% on a 2-core guest. Here freed blocks wait in size bins and the next allocation of that
// size takes the most recently freed one (warm in cache): the steady state of a step calls
// malloc never, as the CUDA caching allocator does on the GPU (engine/cuda/runtime.h).
//
// Sizes are rounded up to a size class (a multiple of 64 bytes up to 512, then 8 classes per
// power of two: at most 12.5% over). The cache holds at most a limit of free bytes (512 MiB, or
// EMBER_CPU_CACHE_LIMIT_MB); a free beyond it goes back to the system, and an allocation the
// cache cannot serve that would take the cache past the limit empties it first. Set
// EMBER_CPU_NO_CACHING=1 for exact sizes and a malloc/free per tensor, for memory checkers;
// AddressSanitizer builds default to that.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ember::host {

// nbytes of 64-byte-aligned memory (nbytes 0 gives a valid, unique block); throws
// ember::Error when the system has none. Release with release().
void* allocate(size_t nbytes);
// Returns a block from allocate() to the cache (or to the system); nullptr does nothing.
void release(void* p);

struct MemoryStats {
  size_t allocated = 0;        // bytes in live blocks (rounded sizes)
  size_t reserved = 0;         // bytes obtained from the system and not yet returned (live + cached)
  size_t peak_allocated = 0;   // since the start or the last reset_peak_memory_stats
  size_t peak_reserved = 0;
  uint64_t system_allocs = 0;  // blocks obtained from the system so far
  uint64_t cache_hits = 0;     // allocations served from the cache
};
MemoryStats memory_stats();
void reset_peak_memory_stats();
// Returns every cached, unused block to the system. Live tensors are untouched.
void empty_cache();
// False when EMBER_CPU_NO_CACHING=1 (or an AddressSanitizer build) turned the cache off.
bool allocator_caches();

}  // namespace ember::host
