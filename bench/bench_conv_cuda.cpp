// 3x3 convolutions on the GPU (the implicit-GEMM kernels of kernels/cuda/conv_igemm.cu, through
// conv2d): forward alone and forward + backward (the input and weight gradients) on the shapes of
// issue 6 and ../shared/reference/torch_workloads.py: x [N, C, H, H], w [C, C, 3, 3], padding 1,
// no bias, in each precision: fp32 (`highest`, exact f32), tf32 (`high`) and bf16 (`medium`:
// BF16 operands, f32 tensors and accumulation; PyTorch's bf16 run uses bf16 tensors). The names
// are those of the side-by-side runner (bench/side_by_side.sh kernels): "kernels_" + the
// workload name of torch_workloads.py (without its "[..GF]" suffix) + "/" + its precision, e.g.
//   kernels_conv3x3_fwd(N128,C128,H32)/tf32, kernels_conv3x3_fwd+bwd(N128,C256,H8)/bf16, ...
// Reports TFLOP/s as "TFLOPS": 2 N C^2 9 H^2 per forward, 3x that for forward + backward (the
// backward-data and backward-weight passes are each a product of the same size). Every
// iteration ends with a device synchronisation. Without a usable GPU each entry is skipped
// with the reason.
//
//   ./build/bench/ember_bench --benchmark_filter=kernels_conv3x3
#include <benchmark/benchmark.h>

#include <cstdint>
#include <exception>
#include <string>

#include "ember/ember.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"
#include "ember/ops/conv.h"
#include "gpu_bench.h"

namespace {

using namespace ember;

struct ConvBenchShape {
  int64_t N, C, H;
};

void bench_conv3x3(benchmark::State& state, ConvBenchShape s, MatmulPrecision p, bool backward) {
  if (!bench::gpu_or_skip(state)) return;
  const Device gpu = Device::cuda(0);
  Generator gen(0);
  Tensor x = randn({s.N, s.C, s.H, s.H}, {}, &gen).to(gpu);
  Tensor w = mul(randn({s.C, s.C, 3, 3}, {}, &gen), 0.05).to(gpu);
  Tensor gy = randn({s.N, s.C, s.H, s.H}, {}, &gen).to(gpu);
  if (backward) {
    x.requires_grad_(true);
    w.requires_grad_(true);
  }
  auto step = [&] {
    if (backward) {
      Tensor y = conv2d(x, w, Tensor(), {1, 1}, {1, 1});
      TensorList g = grad({y}, {x, w}, {gy});
      benchmark::DoNotOptimize(g[0].device_data());
    } else {
      NoGrad no_grad;
      Tensor y = conv2d(x, w, Tensor(), {1, 1}, {1, 1});
      benchmark::DoNotOptimize(y.device_data());
    }
  };
  if (!bench::run_on_gpu(state, p, step)) return;
  const double flops = 2.0 * s.N * s.C * s.C * 9 * s.H * s.H * (backward ? 3.0 : 1.0);
  bench::rate_counter(state, "TFLOPS", flops, 1e12);
}

void register_all() {
  const ConvBenchShape shapes[] = {{128, 128, 32}, {128, 256, 16}, {128, 256, 8}};
  const std::pair<MatmulPrecision, const char*> precs[] = {
      {MatmulPrecision::highest, "fp32"}, {MatmulPrecision::high, "tf32"}, {MatmulPrecision::medium, "bf16"}};
  for (const auto& [p, pname] : precs)
    for (const ConvBenchShape& s : shapes)
      for (bool bwd : {false, true}) {
        const std::string name = std::string("kernels_conv3x3_") + (bwd ? "fwd+bwd" : "fwd") + "(N" +
                                 std::to_string(s.N) + ",C" + std::to_string(s.C) + ",H" + std::to_string(s.H) + ")/" +
                                 pname;
        benchmark::RegisterBenchmark(name.c_str(),
                                     [s, p = p, bwd](benchmark::State& st) { bench_conv3x3(st, s, p, bwd); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
}

const bool registered = (register_all(), true);

}  // namespace
