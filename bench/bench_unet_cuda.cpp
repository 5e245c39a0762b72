// The DDPM U-Net on the GPU, the twin of bench_unet in ../shared/reference/torch_workloads.py:
// the CIFAR-10 configuration (base 128, mult {1,2,2,2}, 2 res blocks, attention at 16x16,
// dropout 0.1, 3 input channels, 32x32: 35,746,307 parameters, the reference's 35.7M), a fixed
// batch of 128 x [3, 32, 32] standard normals and timesteps t = randint(0, 1000).
//   unet_unet_ddpm_train_step(b128,32x32)/fp32|tf32|bf16: zero_grad, loss = mse_loss(net(x, t), x),
//     backward, Adam(lr 2e-4) step.
//   unet_unet_ddpm_forward(b128,32x32)/tf32: net(x, t) under NoGrad (train mode, dropout on, as
//     the reference's torch.no_grad() forward of a model left in training mode).
// ("unet_" + the reference's workload name + "/" + its precision: bench/side_by_side.sh unet.)
// The precision is ember's matmul precision setting (engine/precision.h) for the convolutions,
// matrix products and attention: fp32 = `highest` (exact f32), tf32 = `high`, bf16 = `medium`
// (BF16 operands, f32 parameters, accumulation and norm statistics: PyTorch's bf16 autocast).
// One model and one optimizer serve all four entries, in registration order, as the reference's
// one model serves its four runs. Every iteration ends with a device synchronisation.
//
// Counters: params (the model's parameter count: 35746307), peak_alloc_MiB and
// peak_reserved_MiB (the caching allocator's peaks over the timed steps, after two warm-up
// steps: parameters, gradients, Adam's state and the step's activations; compare with
// torch.cuda.max_memory_allocated, which the side-by-side runner measures). Without a usable
// GPU each entry is skipped with the reason. The training entries also count activations_MiB:
// what the forward and the loss leave allocated for the backward (the saved activations, the
// graph's other tensors, the output and the loss), in the last step.
// (PyTorch's side: bench/tools/torch_saved_activations.py counts what its autograd saves.)
//
//   ./build/bench/ember_bench --benchmark_filter=unet_
#include <benchmark/benchmark.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <string>

#include "ember/ember.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"
#include "ember/models/unet.h"
#include "ember/nn/optim.h"
#include "ember/ops/loss.h"
#include "gpu_bench.h"

namespace {

using namespace ember;

struct UNetRig {
  std::unique_ptr<models::UNet> net;
  std::unique_ptr<nn::Adam> opt;
  Tensor x, t;
};

// Built on first use (on the CPU, then moved), so a run that filters these entries out, or has
// no GPU, never builds the 35.7M-parameter model.
UNetRig& rig() {
  static UNetRig r = [] {
    UNetRig s;
    const Device gpu = Device::cuda(0);
    manual_seed(0);
    s.net = std::make_unique<models::UNet>(models::UNetConfig{.in_channels = 3,
                                                              .base_channels = 128,
                                                              .channel_mult = {1, 2, 2, 2},
                                                              .num_res_blocks = 2,
                                                              .attn_resolutions = {16},
                                                              .dropout = 0.1,
                                                              .resolution = 32,
                                                              .out_channels = 3});
    s.net->to(gpu);
    s.net->train();
    s.opt = std::make_unique<nn::Adam>(s.net->parameters(), nn::AdamOptions{.lr = 2e-4});
    Generator gen(0);
    s.x = randn({128, 3, 32, 32}, {}, &gen).to(gpu);
    s.t = randint(0, 1000, {128}, {.dtype = DType::i64}, &gen).to(gpu);
    return s;
  }();
  return r;
}

void run_unet(benchmark::State& state, MatmulPrecision p, bool train) {
  UNetRig& r = rig();
  set_matmul_precision(p);
  size_t held = 0;  // what the forward and the loss leave allocated for the backward
  auto step = [&] {
    if (train) {
      r.opt->zero_grad();
      const size_t before = cuda::memory_stats(0).allocated;
      Tensor loss = mse_loss(r.net->forward(r.x, r.t), r.x);
      held = cuda::memory_stats(0).allocated - before;
      loss.backward();
      r.opt->step();
    } else {
      NoGrad no_grad;
      Tensor out = r.net->forward(r.x, r.t);
      benchmark::DoNotOptimize(out.device_data());
    }
    cuda::synchronize(0);
  };
  for (int i = 0; i < 2; ++i) step();  // warm the allocator's cache, the kernels and Adam's state
  cuda::reset_peak_memory_stats(0);
  for (auto _ : state) step();
  const cuda::MemoryStats m = cuda::memory_stats(0);
  const double params = static_cast<double>(r.net->num_parameters());
  state.counters["params"] = params;
  state.counters["peak_alloc_MiB"] = static_cast<double>(m.peak_allocated) / (1 << 20);
  state.counters["peak_reserved_MiB"] = static_cast<double>(m.peak_reserved) / (1 << 20);
  if (train) state.counters["activations_MiB"] = static_cast<double>(held) / (1 << 20);
  state.SetLabel(std::to_string(r.net->num_parameters()) + " params, matmul precision " + precision_name(p));
}

void bench_unet(benchmark::State& state, MatmulPrecision p, bool train) {
  if (!bench::gpu_or_skip(state)) return;
  const MatmulPrecision prev = matmul_precision();
  try {  // an ember::Error (a kernel failing) skips this entry instead of ending the whole run
    run_unet(state, p, train);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  set_matmul_precision(prev);
}

void register_all() {
  const std::pair<MatmulPrecision, const char*> precs[] = {
      {MatmulPrecision::highest, "fp32"}, {MatmulPrecision::high, "tf32"}, {MatmulPrecision::medium, "bf16"}};
  for (const auto& [p, pname] : precs) {
    const std::string name = std::string("unet_unet_ddpm_train_step(b128,32x32)/") + pname;
    benchmark::RegisterBenchmark(name.c_str(), [p = p](benchmark::State& st) { bench_unet(st, p, true); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("unet_unet_ddpm_forward(b128,32x32)/tf32",
                               [](benchmark::State& st) { bench_unet(st, MatmulPrecision::high, false); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

const bool registered = (register_all(), true);

}  // namespace
