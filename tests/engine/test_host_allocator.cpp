// The host allocator (engine/host_allocator.h): alignment, reuse of freed blocks by size class,
// a training step's steady state without system allocations, the statistics, empty_cache, and
// (from their own CTest entries, tests/CMakeLists.txt) the cache limit and the switch that turns
// the cache off. Statistics are process-wide, so every check is a difference around its own work.
#include <gtest/gtest.h>

#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/engine/host_allocator.h"
#include "ember/nn/optim.h"

using namespace ember;

namespace {

bool aligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

}  // namespace

TEST(HostAllocator, BlocksAreAlignedAndWritable) {
  std::vector<void*> blocks;
  for (size_t n : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{513}, size_t{4097}, size_t{1} << 20}) {
    void* p = host::allocate(n);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(aligned64(p)) << n << " bytes";
    for (size_t i = 0; i < n; ++i) static_cast<unsigned char*>(p)[i] = static_cast<unsigned char>(i);
    blocks.push_back(p);
  }
  // distinct blocks, also for size 0
  for (size_t i = 0; i < blocks.size(); ++i)
    for (size_t j = i + 1; j < blocks.size(); ++j) EXPECT_NE(blocks[i], blocks[j]);
  for (void* p : blocks) host::release(p);
  host::release(nullptr);  // nothing
}

TEST(HostAllocator, FreedBlockServesTheNextAllocationOfItsSizeClass) {
  if (!host::allocator_caches()) GTEST_SKIP() << "the cache is off (EMBER_CPU_NO_CACHING or AddressSanitizer)";
  // 1000 and 1010 bytes round to the same class (1024); 5000 does not.
  void* a = host::allocate(1000);
  host::release(a);
  const auto before = host::memory_stats();
  void* b = host::allocate(1010);
  EXPECT_EQ(b, a) << "the most recently freed block of the class comes back";
  const auto after = host::memory_stats();
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(after.system_allocs, before.system_allocs);
  void* c = host::allocate(5000);
  EXPECT_NE(c, a);
  host::release(b);
  host::release(c);
}

TEST(HostAllocator, TrainingStepsReachASteadyStateWithoutSystemAllocations) {
  if (!host::allocator_caches()) GTEST_SKIP() << "the cache is off (EMBER_CPU_NO_CACHING or AddressSanitizer)";
  manual_seed(3);
  Tensor w = (randn({32, 5}) * 0.3).requires_grad_(), b = zeros({32}).requires_grad_();
  Tensor v = (randn({1, 32}) * 0.3).requires_grad_();
  nn::Adam opt({w, b, v}, {.lr = 1e-2});
  auto step = [&] {
    Tensor x = randn({300, 5});
    opt.zero_grad();
    Tensor loss = mean(square(matmul(softplus(linear(x, w, b)), v.t())));
    loss.backward();
    opt.step();
    return loss.item<double>();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: the cache learns the step's sizes
  const auto warm = host::memory_stats();
  double last = 0;
  for (int i = 0; i < 5; ++i) last = step();
  const auto after = host::memory_stats();
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_EQ(after.system_allocs, warm.system_allocs) << "the steady state allocates from the cache only";
  EXPECT_GT(after.cache_hits, warm.cache_hits + 5 * 10);
  EXPECT_EQ(after.allocated, warm.allocated) << "each step frees what it allocates";
}

TEST(HostAllocator, StatisticsFollowLiveAndCachedBytes) {
  const auto start = host::memory_stats();
  host::reset_peak_memory_stats();
  {
    Tensor t = Tensor::empty({1000}, {.dtype = DType::f64});  // 8000 bytes: class 8192
    const auto live = host::memory_stats();
    EXPECT_GE(live.allocated, start.allocated + 8000);
    EXPECT_LE(live.allocated, start.allocated + 8192);
    EXPECT_GE(live.reserved, live.allocated);
    EXPECT_GE(live.peak_allocated, live.allocated);
  }
  const auto freed = host::memory_stats();
  EXPECT_EQ(freed.allocated, start.allocated);
  EXPECT_GE(freed.peak_allocated, start.allocated + 8000) << "the peak remembers the tensor";
  host::reset_peak_memory_stats();
  EXPECT_EQ(host::memory_stats().peak_allocated, freed.allocated);
  host::empty_cache();
  const auto emptied = host::memory_stats();
  EXPECT_EQ(emptied.reserved, emptied.allocated) << "empty_cache returns every cached block";
  // live tensors survive empty_cache
  Tensor keep = full({257}, 1.5);
  host::empty_cache();
  EXPECT_EQ(keep.sum().item<double>(), 257 * 1.5);
}

TEST(HostAllocator, FreedMemoryIsNotAssumedZero) {
  // A reused block holds its old bytes: ops that promise zeros must write them.
  { Tensor dirty = full({4096}, 7.0); }
  EXPECT_EQ(zeros({4096}).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(zeros_like(full({64, 64}, 3.0)).abs().sum().item<double>(), 0.0);
}

// Run by their own CTest entries with the environment set (tests/CMakeLists.txt).
TEST(HostAllocatorEnv, CacheLimit) {
  const char* v = std::getenv("EMBER_CPU_CACHE_LIMIT_MB");
  if (!v || std::string(v) != "1") GTEST_SKIP() << "runs from its CTest entry with EMBER_CPU_CACHE_LIMIT_MB=1";
  ASSERT_TRUE(host::allocator_caches());
  host::empty_cache();
  // A 2 MiB block is beyond a 1 MiB cache: freeing it returns it to the system.
  const auto start = host::memory_stats();
  void* big = host::allocate(size_t{2} << 20);
  host::release(big);
  auto now = host::memory_stats();
  EXPECT_EQ(now.reserved, start.reserved) << "not cached";
  // Small blocks are cached up to the limit, then freed.
  std::vector<void*> blocks;
  for (int i = 0; i < 24; ++i) blocks.push_back(host::allocate(100 << 10));  // 24 x 100 KiB
  for (void* p : blocks) host::release(p);
  now = host::memory_stats();
  EXPECT_LE(now.reserved - now.allocated, size_t{1} << 20) << "the cache keeps at most the limit";
  EXPECT_GT(now.reserved - now.allocated, 0u);
}

TEST(HostAllocatorEnv, NoCaching) {
  const char* v = std::getenv("EMBER_CPU_NO_CACHING");
  if (!v || std::string(v) != "1") GTEST_SKIP() << "runs from its CTest entry with EMBER_CPU_NO_CACHING=1";
  EXPECT_FALSE(host::allocator_caches());
  const auto start = host::memory_stats();
  void* p = host::allocate(1000);
  EXPECT_EQ(host::memory_stats().allocated, start.allocated + 1024) << "exact size, rounded to 64 bytes";
  host::release(p);
  void* q = host::allocate(1000);
  host::release(q);
  const auto end = host::memory_stats();
  EXPECT_EQ(end.reserved, start.reserved) << "every block went back to the system";
  EXPECT_EQ(end.system_allocs, start.system_allocs + 2);
  EXPECT_EQ(end.cache_hits, start.cache_hits);
}
