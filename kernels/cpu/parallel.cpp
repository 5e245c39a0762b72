// The CPU thread pool behind parallel_for (see parallel.h for the contract).
//
// Dispatch protocol of the pool (no locks on the fast path):
// - The submitter writes the job (fn, range, chunk count) into plain fields, then publishes it
//   with one release store of `state_` = [job id:32 | chunk count:16 | next chunk:16].
// - Everyone (workers and the submitter) claims chunks with a compare-and-swap on `state_` that
//   also checks the job id, so a worker that saw an older job can never claim a chunk of a newer
//   one; the job fields are read only after a successful claim (acquire), and the submitter
//   rewrites them only after every claimed chunk has been counted in `done_`.
// - Idle workers spin on `state_` for kSpin, then sleep on `sleep_cv_`; the submitter notifies
//   only when `sleepers_` says someone sleeps (seq_cst store/load pairs rule out a lost wakeup).
// - The submitter waits for `done_ == chunks` the same way (spin, then `done_cv_`).
#include "ember/kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(EMBER_USE_OPENMP)
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace ember::kernels::cpu {
namespace {

constexpr int kMaxThreads = 1 << 15;  // chunk indices live in 16 bits of the job word

thread_local bool t_in_parallel = false;

struct RegionGuard {
  bool saved;
  RegionGuard() : saved(t_in_parallel) { t_in_parallel = true; }
  ~RegionGuard() { t_in_parallel = saved; }
};

int default_threads() {
  if (const char* env = std::getenv("EMBER_NUM_THREADS")) {
    char* endp = nullptr;
    long v = std::strtol(env, &endp, 10);
    if (endp != env && *endp == '\0' && v > 0) return static_cast<int>(std::min<long>(v, kMaxThreads));
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(std::min<unsigned>(hc, kMaxThreads));
}

std::atomic<int>& configured_threads() {
  static std::atomic<int> n{default_threads()};
  return n;
}

// Splits n items into `chunks` near-equal contiguous pieces; returns the start of piece i.
inline int64_t chunk_start(int64_t begin, int64_t n, int64_t chunks, int64_t i) {
  const int64_t base = n / chunks, rem = n % chunks;
  return begin + i * base + std::min(i, rem);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::this_thread::yield();
#endif
}

long current_pid() {
#if defined(__unix__) || defined(__APPLE__)
  return static_cast<long>(::getpid());
#else
  return 0;
#endif
}

#if !defined(EMBER_USE_OPENMP)

class Pool {
 public:
  using Fn = FunctionRef<void(int64_t, int64_t)>;

  // Runs the job on the pool; returns false (having done nothing) when the pool is busy with
  // another thread's job, shut down, or unusable (forked child), so the caller runs inline.
  bool run(int64_t begin, int64_t end, int chunks, const Fn& fn) {
    std::unique_lock<std::mutex> submit(submit_mu_, std::try_to_lock);
    if (!submit.owns_lock() || shut_down_ || current_pid() != owner_pid_) return false;
    const int want_workers = configured_threads().load(std::memory_order_relaxed) - 1;
    if (static_cast<int>(workers_.size()) != want_workers) restart(want_workers);
    chunks = std::min(chunks, static_cast<int>(workers_.size()) + 1);
    if (chunks <= 1) return false;

    fn_ = &fn;
    begin_ = begin;
    n_ = end - begin;
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    job_id_ += 1;
    state_.store(pack(job_id_, static_cast<uint32_t>(chunks), 0), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lk(sleep_mu_); }
      sleep_cv_.notify_all();
    }

    {
      RegionGuard guard;
      work_on(job_id_);
    }
    wait_done(chunks);
    fn_ = nullptr;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return true;
  }

  // Stops and joins the workers; parallel_for runs inline from then on.
  void shutdown() {
    std::lock_guard<std::mutex> submit(submit_mu_);
    if (current_pid() != owner_pid_) {  // a forked child: the workers are not ours to join
      shut_down_ = true;
      return;
    }
    stop_workers();
    shut_down_ = true;
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(200);

  static uint64_t pack(uint32_t id, uint32_t chunks, uint32_t next) {
    return (static_cast<uint64_t>(id) << 32) | (static_cast<uint64_t>(chunks) << 16) | next;
  }
  static uint32_t id_of(uint64_t s) { return static_cast<uint32_t>(s >> 32); }

  void restart(int n) {
    stop_workers();
    stop_.store(false, std::memory_order_relaxed);
    workers_.reserve(n);
    const uint32_t seen = id_of(state_.load(std::memory_order_relaxed));
    for (int i = 0; i < n; ++i) workers_.emplace_back([this, seen] { worker_loop(seen); });
  }

  void stop_workers() {
    if (workers_.empty()) return;
    {
      std::lock_guard<std::mutex> lk(sleep_mu_);
      stop_.store(true, std::memory_order_seq_cst);
    }
    sleep_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  // Claims and runs chunks of job `id` until none is left (or a newer job is published).
  void work_on(uint32_t id) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (id_of(s) != id) return;
      const uint32_t chunks = static_cast<uint32_t>((s >> 16) & 0xffff);
      const uint32_t next = static_cast<uint32_t>(s & 0xffff);
      if (next >= chunks) return;
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      // The claim succeeded: the job fields are stable until our chunk is counted in done_.
      if (!failed_.load(std::memory_order_relaxed)) {
        const int64_t b = chunk_start(begin_, n_, chunks, next);
        const int64_t e = chunk_start(begin_, n_, chunks, next + 1);
        try {
          (*fn_)(b, e);
        } catch (...) {
          std::lock_guard<std::mutex> lk(error_mu_);
          if (!error_) error_ = std::current_exception();
          failed_.store(true, std::memory_order_relaxed);
        }
      }
      if (done_.fetch_add(1, std::memory_order_seq_cst) + 1 == static_cast<int>(chunks) &&
          submitter_sleeping_.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lk(done_mu_); }
        done_cv_.notify_one();
      }
      s = state_.load(std::memory_order_acquire);
    }
  }

  void wait_done(int chunks) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int spin = 0; done_.load(std::memory_order_acquire) < chunks; ++spin) {
      if ((spin & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) {
        submitter_sleeping_.store(true, std::memory_order_seq_cst);
        {
          std::unique_lock<std::mutex> lk(done_mu_);
          done_cv_.wait(lk, [&] { return done_.load(std::memory_order_seq_cst) >= chunks; });
        }
        submitter_sleeping_.store(false, std::memory_order_relaxed);
        break;
      }
      cpu_relax();
    }
  }

  void worker_loop(uint32_t seen) {
    t_in_parallel = true;  // a worker never starts nested jobs
    for (;;) {
      // Spin for a new job, then sleep.
      const auto t0 = std::chrono::steady_clock::now();
      bool got = false;
      for (int spin = 0;; ++spin) {
        if (id_of(state_.load(std::memory_order_acquire)) != seen || stop_.load(std::memory_order_relaxed)) {
          got = true;
          break;
        }
        if ((spin & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) break;
        cpu_relax();
      }
      if (!got) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        {
          std::unique_lock<std::mutex> lk(sleep_mu_);
          sleep_cv_.wait(lk, [&] {
            return id_of(state_.load(std::memory_order_seq_cst)) != seen || stop_.load(std::memory_order_seq_cst);
          });
        }
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = id_of(state_.load(std::memory_order_acquire));
      work_on(seen);
    }
  }

  // Touched only by the thread holding submit_mu_ (and by claimers after a successful claim).
  std::mutex submit_mu_;
  std::vector<std::thread> workers_;
  bool shut_down_ = false;
  const long owner_pid_ = current_pid();
  uint32_t job_id_ = 0;
  const Fn* fn_ = nullptr;
  int64_t begin_ = 0, n_ = 0;

  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> failed_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;

  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;

  std::atomic<bool> submitter_sleeping_{false};
  std::mutex done_mu_;
  std::condition_variable done_cv_;
};

// The pool lives for the whole process (never deleted, so a parallel_for from a late static
// destructor still finds it); the reaper joins its workers when static objects are destroyed.
struct PoolReaper {
  Pool* pool;
  ~PoolReaper() { pool->shutdown(); }
};

Pool& pool() {
  static Pool* p = new Pool();
  static PoolReaper reaper{p};
  return *p;
}

#endif  // !EMBER_USE_OPENMP

}  // namespace

int num_threads() { return configured_threads().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  n = std::clamp(n, 1, kMaxThreads);
  configured_threads().store(n, std::memory_order_relaxed);  // the pool resizes on its next job
}

bool in_parallel_region() {
#if defined(EMBER_USE_OPENMP)
  if (omp_in_parallel()) return true;
#endif
  return t_in_parallel;
}

void parallel_for(int64_t begin, int64_t end, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (end <= begin) return;
  const int64_t n = end - begin;
  if (grain < 1) grain = 1;
  const int threads = num_threads();
  const int chunks = static_cast<int>(std::min<int64_t>(threads, n / grain));
  if (chunks <= 1 || in_parallel_region()) {
    fn(begin, end);
    return;
  }
#if defined(EMBER_USE_OPENMP)
  // libgomp's threads do not survive fork(), and a forked child that opens a parallel region
  // can hang: there, run inline.
  static const long owner_pid = current_pid();
  if (current_pid() != owner_pid) {
    fn(begin, end);
    return;
  }
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(chunks)
  {
    RegionGuard guard;
    const int team = omp_get_num_threads();
    for (int c = omp_get_thread_num(); c < chunks; c += team) {
      if (failed.load(std::memory_order_relaxed)) break;
      try {
        fn(chunk_start(begin, n, chunks, c), chunk_start(begin, n, chunks, c + 1));
      } catch (...) {
#pragma omp critical(ember_parallel_for_error)
        {
          if (!error) error = std::current_exception();
        }
        failed.store(true, std::memory_order_relaxed);
      }
    }
  }
  if (error) std::rethrow_exception(error);
#else
  if (!pool().run(begin, end, chunks, fn)) fn(begin, end);
#endif
}

}  // namespace ember::kernels::cpu
