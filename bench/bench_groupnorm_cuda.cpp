// The fused GroupNorm(32) + SiLU on the GPU (ops/norm.h's group_norm_silu, one kernel each way:
// kernels/cuda/group_norm.cu) on the shapes of issue 6 and ../shared/reference/torch_workloads.py:
// x [N, C, H, H] f32, 32 groups, the affine weight (ones) and bias (zeros) of nn.GroupNorm's
// initialisation, no per-sample bias; forward alone and forward + backward (dx for a given dy,
// as torch.autograd.grad(silu(g(x)), (x,), gy)).
//
// Names (the side-by-side runner's scheme, bench/side_by_side.sh kernels):
//   kernels_groupnorm32+silu_fwd(N128,C128,H32)/fp32, kernels_groupnorm32+silu_fwd+bwd(...)/fp32
// Only fp32 rows: ember has no bf16 GroupNorm kernel (in the `medium` precision the U-Net's
// norms run in f32, like autocast's), and the matmul precision setting does not touch a norm, so
// a tf32 or bf16 row would be the same f32 kernel under another name. The runner sets these f32
// times beside PyTorch's bf16 (bf16 tensors) row, marked as ember's f32.
//
// Counter "GB/s": the least memory traffic of the operation over the time, 4 bytes per element
// of each tensor that must be read or written: forward read x + write y (2 tensors), forward +
// backward: the forward's 2 plus read x and dy and write dx (3 more), 5 in all; the per-channel
// weight and bias are left out (C values against N C H W). Every iteration ends with a device
// synchronisation. Without a usable GPU each entry is skipped with the reason.
//
//   ./build/bench/ember_bench --benchmark_filter=kernels_groupnorm
#include <benchmark/benchmark.h>

#include <cstdint>
#include <exception>
#include <string>

#include "ember/ember.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/ops/norm.h"
#include "gpu_bench.h"

namespace {

using namespace ember;

struct GnShape {
  int64_t N, C, H;
};

void bench_group_norm_silu(benchmark::State& state, GnShape s, bool backward) {
  if (!bench::gpu_or_skip(state)) return;
  const Device gpu = Device::cuda(0);
  Generator gen(0);
  Tensor x = randn({s.N, s.C, s.H, s.H}, {}, &gen).to(gpu);
  Tensor dy = randn({s.N, s.C, s.H, s.H}, {}, &gen).to(gpu);
  Tensor weight = ones({s.C}, {.device = gpu}), bias = zeros({s.C}, {.device = gpu});
  if (backward) x.requires_grad_(true);
  auto step = [&] {
    if (backward) {
      Tensor y = group_norm_silu(x, 32, weight, bias);
      TensorList g = grad({y}, {x}, {dy});
      benchmark::DoNotOptimize(g[0].device_data());
    } else {
      NoGrad no_grad;
      Tensor y = group_norm_silu(x, 32, weight, bias);
      benchmark::DoNotOptimize(y.device_data());
    }
  };
  if (!bench::run_on_gpu(state, MatmulPrecision::highest, step)) return;
  const double bytes = 4.0 * static_cast<double>(s.N * s.C * s.H * s.H) * (backward ? 5 : 2);
  bench::rate_counter(state, "GB/s", bytes, 1e9);
}

void register_all() {
  const GnShape shapes[] = {{128, 128, 32}, {128, 256, 16}};
  for (const GnShape& s : shapes)
    for (bool bwd : {false, true}) {
      const std::string name = std::string("kernels_groupnorm32+silu_") + (bwd ? "fwd+bwd" : "fwd") + "(N" +
                               std::to_string(s.N) + ",C" + std::to_string(s.C) + ",H" + std::to_string(s.H) + ")/fp32";
      benchmark::RegisterBenchmark(name.c_str(), [s, bwd](benchmark::State& st) { bench_group_norm_silu(st, s, bwd); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
}

const bool registered = (register_all(), true);

}  // namespace
