// parallel_for: coverage of the range, chunking rules, exceptions, nesting, concurrent callers,
// thread-count changes, and many back-to-back small jobs (the dispatch path of a training step).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ember/kernels/cpu/parallel.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {

using namespace ember::kernels::cpu;

struct ThreadScope {
  int saved = num_threads();
  ~ThreadScope() { set_num_threads(saved); }
};

TEST(Parallel, NumThreadsIsPositiveAndSettable) {
  ThreadScope keep;
  EXPECT_GE(num_threads(), 1);
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  set_num_threads(0);  // clamped
  EXPECT_EQ(num_threads(), 1);
}

TEST(Parallel, EveryIndexOnceAndSums) {
  ThreadScope keep;
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100003}}) {
      for (int64_t grain : {int64_t{1}, int64_t{16}, int64_t{4096}}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> sum{0};
        parallel_for(5, 5 + n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LE(5, b);
          ASSERT_LT(b, e);
          ASSERT_LE(e, 5 + n);
          int64_t local = 0;
          for (int64_t i = b; i < e; ++i) {
            hits[static_cast<size_t>(i - 5)].fetch_add(1, std::memory_order_relaxed);
            local += i;
          }
          sum.fetch_add(local, std::memory_order_relaxed);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i;
        EXPECT_EQ(sum.load(), n * 5 + n * (n - 1) / 2) << "n=" << n << " grain=" << grain;
      }
    }
  }
}

TEST(Parallel, ChunksRespectGrainAndThreadCount) {
  ThreadScope keep;
  set_num_threads(4);
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  auto record = [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lk(mu);
    chunks.emplace_back(b, e);
  };
  parallel_for(0, 1000, 100, record);
  EXPECT_EQ(chunks.size(), 4u);  // at most one chunk a thread
  for (auto [b, e] : chunks) EXPECT_GE(e - b, 100);
  chunks.clear();
  parallel_for(0, 250, 100, record);  // room for two chunks of >= 100
  EXPECT_EQ(chunks.size(), 2u);
  for (auto [b, e] : chunks) EXPECT_GE(e - b, 100);
  chunks.clear();
  parallel_for(0, 99, 100, record);  // smaller than grain: one inline call
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0], std::make_pair(int64_t{0}, int64_t{99}));
  chunks.clear();
  parallel_for(10, 10, 1, record);  // empty
  parallel_for(10, 3, 1, record);   // reversed: empty
  EXPECT_TRUE(chunks.empty());
}

TEST(Parallel, RunsInlineBelowGrain) {
  ThreadScope keep;
  set_num_threads(4);
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  bool region = false;
  parallel_for(0, 10, 100, [&](int64_t, int64_t) {
    ran_on = std::this_thread::get_id();
    region = in_parallel_region();
  });
  EXPECT_EQ(ran_on, caller);
  EXPECT_FALSE(region);  // an inline call is no region: a nested call may still use the pool
}

TEST(Parallel, UsesSeveralThreads) {
  ThreadScope keep;
  set_num_threads(2);
  std::mutex mu;
  std::set<std::thread::id> ids;
  // Each chunk waits until both chunks have started, so both threads must be in the job at once.
  for (int attempt = 0; attempt < 5 && ids.size() < 2; ++attempt) {
    std::atomic<int> started{0};
    parallel_for(0, 2, 1, [&](int64_t, int64_t) {
      started.fetch_add(1);
      for (int spin = 0; started.load() < 2 && spin < 20000000; ++spin) std::this_thread::yield();
      std::lock_guard<std::mutex> lk(mu);
      ids.insert(std::this_thread::get_id());
    });
  }
  EXPECT_EQ(ids.size(), 2u);
}

TEST(Parallel, PropagatesTheFirstException) {
  ThreadScope keep;
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    EXPECT_THROW(parallel_for(0, 100, 1,
                              [&](int64_t b, int64_t) {
                                if (b == 0) throw std::runtime_error("chunk 0 failed");
                              }),
                 std::runtime_error);
    // a throw from every chunk: exactly one comes out
    try {
      parallel_for(0, 100, 1, [&](int64_t b, int64_t) { throw std::out_of_range(std::to_string(b)); });
      ADD_FAILURE() << "no exception";
    } catch (const std::out_of_range&) {
    }
    // the pool still works afterwards
    std::atomic<int64_t> sum{0};
    parallel_for(0, 1000, 10, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

TEST(Parallel, NestedCallsRunInline) {
  ThreadScope keep;
  set_num_threads(4);
  std::atomic<int64_t> sum{0};
  std::atomic<int> nested_off_thread{0};
  parallel_for(0, 8, 1, [&](int64_t b, int64_t e) {
    EXPECT_TRUE(in_parallel_region());
    const auto me = std::this_thread::get_id();
    for (int64_t i = b; i < e; ++i) {
      parallel_for(0, 100, 1, [&](int64_t ib, int64_t ie) {
        if (std::this_thread::get_id() != me) nested_off_thread++;
        EXPECT_EQ(ib, 0);  // one inline chunk
        EXPECT_EQ(ie, 100);
        for (int64_t j = ib; j < ie; ++j) sum += j;
      });
    }
  });
  EXPECT_EQ(nested_off_thread.load(), 0);
  EXPECT_EQ(sum.load(), 8 * (99 * 100 / 2));
  EXPECT_FALSE(in_parallel_region());
}

TEST(Parallel, ConcurrentCallersAllComplete) {
  // Several user threads share the pool: the one that gets it uses it, the others run inline.
  ThreadScope keep;
  set_num_threads(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> users;
  for (int u = 0; u < 4; ++u) {
    users.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep) {
        parallel_for(0, 64, 1, [&](int64_t b, int64_t e) { total += e - b; });
      }
    });
  }
  for (auto& t : users) t.join();
  EXPECT_EQ(total.load(), 4 * 200 * 64);
}

TEST(Parallel, ManySmallJobsAndResizing) {
  ThreadScope keep;
  std::vector<int> data(4096, 1);
  for (int threads : {2, 1, 3, 2}) {
    set_num_threads(threads);
    for (int rep = 0; rep < 2000; ++rep) {
      std::atomic<int64_t> sum{0};
      parallel_for(0, static_cast<int64_t>(data.size()), 256, [&](int64_t b, int64_t e) {
        sum += std::accumulate(data.begin() + b, data.begin() + e, int64_t{0});
      });
      ASSERT_EQ(sum.load(), 4096);
    }
  }
}

#if defined(__unix__) || defined(__APPLE__)
TEST(Parallel, ForkedChildRunsInline) {
  // The pool's workers do not exist in a forked child: its jobs must still complete.
  ThreadScope keep;
  set_num_threads(2);
  std::atomic<int64_t> warm{0};
  parallel_for(0, 100, 1, [&](int64_t b, int64_t e) { warm += e - b; });  // the pool is running
  ASSERT_EQ(warm.load(), 100);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int64_t sum = 0;  // plain: every chunk runs on this thread
    parallel_for(0, 1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    _exit(sum == 999 * 1000 / 2 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}
#endif

}  // namespace
