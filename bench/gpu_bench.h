// The loop every GPU kernel benchmark in bench/ shares: skip (saying why) without a GPU, run
// under a matmul precision, warm up (the allocator's cache, cuBLAS handles, kernel attributes),
// then time each iteration to the end of its GPU work, as the PyTorch reference does. An
// ember::Error raised by the step (a kernel failing) skips that entry instead of ending the run.
#pragma once
#include <benchmark/benchmark.h>

#include <exception>
#include <string>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"

namespace ember::bench {

// True where a GPU is usable; otherwise the entry is skipped with the reason (call it before
// making any GPU tensor).
inline bool gpu_or_skip(benchmark::State& state) {
  if (cuda::available()) return true;
  state.SkipWithError(("no GPU here: " + cuda::unavailable_reason()).c_str());
  return false;
}

// Runs `step` timed on cuda:0 under precision p; returns false when the entry was skipped.
template <typename Step>
bool run_on_gpu(benchmark::State& state, MatmulPrecision p, const Step& step) {
  if (!gpu_or_skip(state)) return false;
  const MatmulPrecision prev = matmul_precision();
  set_matmul_precision(p);
  bool ok = true;
  try {
    for (int i = 0; i < 3; ++i) step();
    cuda::synchronize(0);
    for (auto _ : state) {
      step();
      cuda::synchronize(0);
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    ok = false;
  }
  set_matmul_precision(prev);
  return ok;
}

// A rate counter: `amount` (flops, bytes) per iteration, scaled by `unit` (1e12: TFLOP/s).
inline void rate_counter(benchmark::State& state, const char* name, double amount, double unit) {
  state.counters[name] = benchmark::Counter(amount * static_cast<double>(state.iterations()) / unit,
                                            benchmark::Counter::kIsRate);
}

}  // namespace ember::bench
