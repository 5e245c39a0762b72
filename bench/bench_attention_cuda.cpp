// Fused (flash) attention on the GPU: forward alone and forward + backward (dq, dk, dv) on the
// shapes of issue 6 and ../shared/reference/torch_workloads.py (q, k, v [B, 1, T, D], one head,
// no mask, scale 1/sqrt(D)), in each precision: fp32 (`highest`, exact f32), tf32 (`high`) and
// bf16 (`medium`: BF16 operands, f32 tensors and accumulation; PyTorch's bf16 run uses bf16
// tensors). The names are those of the side-by-side runner (bench/side_by_side.sh kernels):
// "kernels_" + the workload name of torch_workloads.py + "/" + its precision, e.g.
//   kernels_sdpa_fwd(B128,T256,D256)/bf16, kernels_sdpa_fwd+bwd(B128,T1024,D128)/tf32, ...
// Reports TFLOP/s as "TFLOPS": 4 B T^2 D per forward (two products), 2.5x that for forward +
// backward (five products). Every iteration ends with a device synchronisation. Without a
// usable GPU each entry is skipped with the reason.
// In tf32 and bf16 there are two sets of kernels (ops/attention.h, AttentionKernel): the plain
// names run the default (accumulators in registers), the variant ".../<prec>/shared_accumulators"
// the first set (accumulators in shared memory), so that one run compares them. At D = 256 the
// backward is the shared-memory one in both.
//
//   ./build/bench/ember_bench --benchmark_filter=kernels_sdpa
#include <benchmark/benchmark.h>

#include <cstdint>
#include <exception>
#include <string>

#include "ember/ember.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"
#include "ember/ops/attention.h"
#include "gpu_bench.h"

namespace {

using namespace ember;

struct AttnShape {
  int64_t B, T, D;
};

// Sets the kernels for one benchmark and restores the default after it.
struct KernelChoice {
  explicit KernelChoice(AttentionKernel k) { set_attention_kernel(k); }
  ~KernelChoice() { set_attention_kernel(AttentionKernel::register_accumulators); }
};

void bench_sdpa(benchmark::State& state, AttnShape s, MatmulPrecision p, bool backward, AttentionKernel fk) {
  if (!bench::gpu_or_skip(state)) return;
  KernelChoice choice(fk);
  const Device gpu = Device::cuda(0);
  Generator gen(0);
  Tensor q = randn({s.B, 1, s.T, s.D}, {}, &gen).to(gpu);
  Tensor k = randn({s.B, 1, s.T, s.D}, {}, &gen).to(gpu);
  Tensor v = randn({s.B, 1, s.T, s.D}, {}, &gen).to(gpu);
  Tensor go = randn({s.B, 1, s.T, s.D}, {}, &gen).to(gpu);
  if (backward) {
    q.requires_grad_(true);
    k.requires_grad_(true);
    v.requires_grad_(true);
  }
  auto step = [&] {
    if (backward) {
      Tensor o = scaled_dot_product_attention(q, k, v);
      TensorList g = grad({o}, {q, k, v}, {go});
      benchmark::DoNotOptimize(g[0].device_data());
    } else {
      NoGrad no_grad;
      Tensor o = scaled_dot_product_attention(q, k, v);
      benchmark::DoNotOptimize(o.device_data());
    }
  };
  if (!bench::run_on_gpu(state, p, step)) return;
  const double flops = 4.0 * s.B * s.T * s.T * s.D * (backward ? 2.5 : 1.0);
  bench::rate_counter(state, "TFLOPS", flops, 1e12);
}

void register_all() {
  const AttnShape shapes[] = {{128, 256, 256}, {128, 1024, 128}, {32, 4096, 64}};
  const std::pair<MatmulPrecision, const char*> precs[] = {
      {MatmulPrecision::highest, "fp32"}, {MatmulPrecision::high, "tf32"}, {MatmulPrecision::medium, "bf16"}};
  for (const auto& [p, pname] : precs)
    for (const AttnShape& s : shapes)
      for (bool bwd : {false, true})
        for (AttentionKernel fk :
             {AttentionKernel::register_accumulators, AttentionKernel::shared_accumulators}) {
          const bool shared = fk == AttentionKernel::shared_accumulators;
          if (shared && p == MatmulPrecision::highest) continue;  // exact f32 has one set of kernels
          const std::string name = std::string("kernels_sdpa_") + (bwd ? "fwd+bwd" : "fwd") + "(B" +
                                   std::to_string(s.B) + ",T" + std::to_string(s.T) + ",D" + std::to_string(s.D) +
                                   ")/" + pname + (shared ? "/shared_accumulators" : "");
          benchmark::RegisterBenchmark(name.c_str(),
                                       [s, p = p, bwd, fk](benchmark::State& st) { bench_sdpa(st, s, p, bwd, fk); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
}

const bool registered = (register_all(), true);

}  // namespace
