// ember sgemm against OpenBLAS cblas_sgemm (when the build found it) on the same shapes and
// the same thread count. Reports GFLOP/s (2 M N K per product) as the counter "GFLOPS".
//
// Threads: EMBER_BENCH_THREADS (default: ember's num_threads(), i.e. EMBER_NUM_THREADS or the
// core count) for both libraries. Shapes: square 512 / 1024 / 2048, and the small products of
// the reference trainers: the DDE MLP (batch 2048, width 32: forward x W^T, backward dY W and
// dY^T X, and the 32 -> 1 output layer) and 100-row batches through 784->256 and 4096->256
// layers (as in nn.Linear, the weight is stored [out, in], hence B transposed).
//
//   EMBER_BENCH_THREADS=2 ./build/bench/ember_bench --benchmark_filter=Sgemm \
//       --benchmark_min_time=1 --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ember/kernels/cpu/gemm.h"
#include "ember/kernels/cpu/parallel.h"

#if defined(EMBER_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace {

using namespace ember::kernels::cpu;

int bench_threads() {
  if (const char* env = std::getenv("EMBER_BENCH_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return num_threads();
}

struct Operands {
  std::vector<float> a, b, c;
  Operands(int64_t M, int64_t N, int64_t K) : a(M * K), b(K * N), c(M * N) {
    std::mt19937 gen(42);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& x : a) x = u(gen);
    for (auto& x : b) x = u(gen);
    for (auto& x : c) x = u(gen);
  }
};

void set_counters(benchmark::State& state, int64_t M, int64_t N, int64_t K) {
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * M * N * K * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["threads"] = bench_threads();
}

struct Shape {
  int64_t M, N, K;
  bool ta, tb;
  const char* what;
};

void sgemm_ember(benchmark::State& state, Shape s) {
  set_num_threads(bench_threads());
  Operands x(s.M, s.N, s.K);
  for (auto _ : state) {
    sgemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, x.a.data(), s.ta ? s.M : s.K, x.b.data(), s.tb ? s.K : s.N, 0.0f,
          x.c.data(), s.N);
    benchmark::DoNotOptimize(x.c.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s.M, s.N, s.K);
  state.SetLabel(std::string(gemm_isa()) + ", " + s.what);
}

#if defined(EMBER_HAVE_OPENBLAS)
void sgemm_openblas(benchmark::State& state, Shape s) {
  openblas_set_num_threads(bench_threads());
  Operands x(s.M, s.N, s.K);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.M, s.N, s.K,
                1.0f, x.a.data(), s.ta ? s.M : s.K, x.b.data(), s.tb ? s.K : s.N, 0.0f, x.c.data(), s.N);
    benchmark::DoNotOptimize(x.c.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s.M, s.N, s.K);
  state.SetLabel(s.what);
}
#endif

const Shape kShapes[] = {
    {512, 512, 512, false, false, "square"},
    {1024, 1024, 1024, false, false, "square"},
    {2048, 2048, 2048, false, false, "square"},
    {2048, 32, 32, false, true, "DDE hidden layer forward x W^T"},
    {2048, 32, 32, false, false, "DDE backward to the input dY W"},
    {32, 32, 2048, true, false, "DDE weight gradient dY^T x"},
    {2048, 1, 32, false, true, "DDE output layer forward (32 -> 1)"},
    {100, 256, 784, false, true, "batch 100, 784 -> 256"},
    {100, 256, 4096, false, true, "batch 100, 4096 -> 256"},
};

// Registered in pairs, ember then OpenBLAS on each shape, so that drifting machine load hits
// both sides alike.
[[maybe_unused]] const int kRegistered = [] {
  for (const Shape& s : kShapes) {
    const std::string name = "M:" + std::to_string(s.M) + "/N:" + std::to_string(s.N) + "/K:" + std::to_string(s.K) +
                             "/" + (s.ta ? "T" : "N") + (s.tb ? "T" : "N");
    benchmark::RegisterBenchmark(("BM_SgemmEmber/" + name).c_str(), sgemm_ember, s)->UseRealTime();
#if defined(EMBER_HAVE_OPENBLAS)
    benchmark::RegisterBenchmark(("BM_SgemmOpenBLAS/" + name).c_str(), sgemm_openblas, s)->UseRealTime();
#endif
  }
  return 0;
}();

}  // namespace
