// PoolAllocator<T>: the allocator ember hands std::allocate_shared for the objects every op
// makes and drops: a TensorImpl per result and per view, a Storage per new buffer, a Node per
// recorded op. A training step makes thousands of each and frees them together when its graph
// dies, which overflows glibc's per-thread cache (7 blocks per size by default) into its
// locked arena: a third of the host time per op went to malloc and free (docs/performance.md,
// "Allocations per op"). Here a freed block goes on a per-thread free list of its size and the
// next object of that size takes it back: a few instructions, no lock.
//
// A list holds at most 1 MiB of blocks; beyond that blocks go back to operator delete. A block
// freed on another thread than the one that made it joins that thread's list (a loader thread's
// batches freed by the training loop). When a thread ends, its lists are freed. Under
// AddressSanitizer nothing is pooled, so a use after free of these objects is still reported.
#pragma once
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>

#include "ember/engine/asan.h"

namespace ember {

template <size_t BlockSize, size_t Align>
class BlockPool {
  static_assert(BlockSize >= sizeof(void*) && Align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);

 public:
  static void* allocate() {
    List& l = list;
    if (Block* b = l.head) {
      l.head = b->next;
      --l.count;
      return b;
    }
    arm_reaper();
    return ::operator new(BlockSize);
  }
  static void deallocate(void* p) noexcept {
    List& l = list;
    if (EMBER_ASAN || l.closed || l.count >= kMaxBlocks) {
      ::operator delete(p);
      return;
    }
    if (l.count == 0) arm_reaper();
    auto* b = static_cast<Block*>(p);
    b->next = l.head;
    l.head = b;
    ++l.count;
  }

 private:
  struct Block {
    Block* next;
  };
  // Trivially destructible, so it stays usable while the thread's other thread_locals (or, on
  // the main thread, statics) are destroyed after the reaper ran: frees then go to delete.
  struct List {
    Block* head = nullptr;
    size_t count = 0;
    bool closed = false;
  };
  struct Reaper {
    ~Reaper() {
      List& l = list;
      while (Block* b = l.head) {
        l.head = b->next;
        ::operator delete(b);
      }
      l.count = 0;
      l.closed = true;
    }
  };
  static void arm_reaper() noexcept { static thread_local Reaper reaper; }

  static constexpr size_t kMaxBlocks = std::max<size_t>(64, (size_t{1} << 20) / BlockSize);
  static inline thread_local List list;
};

template <typename T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() noexcept = default;
  template <typename U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}  // NOLINT: rebinding, as allocate_shared does

  T* allocate(size_t n) {
    if (n != 1) return std::allocator<T>().allocate(n);
    return static_cast<T*>(Pool::allocate());
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n != 1) return std::allocator<T>().deallocate(p, n);
    Pool::deallocate(p);
  }
  friend bool operator==(const PoolAllocator&, const PoolAllocator&) noexcept { return true; }

 private:
  // Sizes rounded to 16 bytes, so types of about one size share a list.
  using Pool = BlockPool<(sizeof(T) + 15) / 16 * 16, alignof(T)>;
};

// std::make_shared<T>(args...) with its block (object and counts) from the pool.
template <typename T, typename... Args>
std::shared_ptr<T> make_pooled(Args&&... args) {
  return std::allocate_shared<T>(PoolAllocator<T>(), std::forward<Args>(args)...);
}

}  // namespace ember
