// conv2d on the CPU (im2col + GEMM): a 3x3, padding 1 convolution of a [8, 64, 32, 32] f32
// batch with 64 output channels and a bias, forward alone and forward + backward (input,
// weight and bias gradients). Reports GFLOP/s as "GFLOPS": 2 N Cout Cin kh kw OH OW per
// forward, three times that for forward + backward (the two backward products cost one
// forward each).
//
//   ./build/bench/ember_bench --benchmark_filter=Conv2d
//   EMBER_NUM_THREADS=1 ./build/bench/ember_bench --benchmark_filter=Conv2d
#include <benchmark/benchmark.h>

#include <cstdint>

#include "ember/ember.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/conv.h"

namespace {

using namespace ember;

constexpr int64_t kN = 8, kC = 64, kH = 32, kW = 32, kK = 3;

struct ConvOperands {
  Tensor x, w, b, gy;
  explicit ConvOperands(bool requires_grad) {
    Generator gen(42);
    x = randn({kN, kC, kH, kW}, {}, &gen);
    w = mul(randn({kC, kC, kK, kK}, {}, &gen), 1.0 / 24.0);  // about 1 / sqrt(fan_in)
    b = randn({kC}, {}, &gen);
    gy = randn({kN, kC, kH, kW}, {}, &gen);
    if (requires_grad) {
      x.requires_grad_(true);
      w.requires_grad_(true);
      b.requires_grad_(true);
    }
  }
};

void set_counters(benchmark::State& state, double passes) {
  const double flops = 2.0 * kN * kC * kC * kK * kK * kH * kW * passes;
  state.counters["GFLOPS"] = benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["threads"] = kernels::cpu::num_threads();
}

void BM_Conv2dForward_3x3_N8_C64_32x32_f32(benchmark::State& state) {
  ConvOperands op(false);
  NoGrad no_grad;
  for (auto _ : state) {
    Tensor y = conv2d(op.x, op.w, op.b, {1, 1}, {1, 1});
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_counters(state, 1.0);
}
BENCHMARK(BM_Conv2dForward_3x3_N8_C64_32x32_f32)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Conv2dForwardBackward_3x3_N8_C64_32x32_f32(benchmark::State& state) {
  ConvOperands op(true);
  for (auto _ : state) {
    Tensor y = conv2d(op.x, op.w, op.b, {1, 1}, {1, 1});
    TensorList g = grad({y}, {op.x, op.w, op.b}, {op.gy});
    benchmark::DoNotOptimize(g[0].raw_data());
    benchmark::DoNotOptimize(g[1].raw_data());
  }
  set_counters(state, 3.0);
}
BENCHMARK(BM_Conv2dForwardBackward_3x3_N8_C64_32x32_f32)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
