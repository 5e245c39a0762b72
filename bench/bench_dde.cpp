// The DDE workloads of ../shared/reference/torch_workloads.py, same names, shapes and
// precision: one iteration = one real-data DDE step, one generator-DDE step and one generator
// step (Algorithm 1 of the DDE paper with the generator updated every iteration).
// Like the reference, it runs on the GPU where one is usable (EMBER_BENCH_DEVICE=cpu forces the
// CPU) and waits for the GPU at the end of every iteration, so a time is a whole iteration's.
// The `/cuda_graphs` variants (GPU only) capture the whole iteration, the three optimizer
// steps included, as one CUDA graph and replay it; the iteration's random draws are made
// outside the graph into static inputs, as ember dde --cuda-graphs does. Their PyTorch
// yardstick is the same eager iteration.
// On the GPU the eager entries also report the host's share: "host_ms" (from the iteration's
// start until its last launch returns), "ops" (traced ops per iteration, each one kernel launch
// or more) and "host_us_per_op".
// dde_toy_iteration(b1,25x32)/host_overhead: the toy iteration on one-row batches on the CPU,
// where the arithmetic is nothing and the time is ember's own per-op cost (dispatch, shape
// checks, autograd records, allocation); its "ops" counter is the number of ops one iteration
// runs (the op trace's events: each a kernel launch or more on the GPU, nested composites
// counted with their parts), and "us_per_op" their mean host cost.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>

#include "dde_workloads.h"
#include "ember/engine/cuda/graph.h"

using namespace ember;
using namespace ember::bench;

namespace {

// The iteration as a CUDA graph: static inputs for the data batch, the generator's latents and
// the three noises, refilled before each replay; the optimizers' step scalars uploaded by
// prepare_step (nn/optim.h).
struct GraphIteration {
  cuda::CudaGraph graph;
  Tensor x, n_real, z_dde, n_gen, z_gen, n_g;
  explicit GraphIteration(const Setup& s) : graph(s.device.index) {
    const TensorOptions on{.device = s.device};
    x = Tensor::empty({s.batch, s.data_dim}, on);
    n_real = Tensor::empty({s.batch, s.data_dim}, on);
    n_gen = Tensor::empty({s.batch, s.data_dim}, on);
    n_g = Tensor::empty({s.batch, s.data_dim}, on);
    z_dde = Tensor::empty({s.batch, s.zdim}, on);
    z_gen = Tensor::empty({s.batch, s.zdim}, on);
  }
  void refill(const Setup& s) {
    NoGrad ng;
    const TensorOptions on{.device = s.device};
    x.copy_(s.uniform_data ? rand({s.batch, s.data_dim}, on) : randn({s.batch, s.data_dim}, on));
    for (Tensor* t : {&n_real, &n_gen, &n_g, &z_dde, &z_gen}) t->copy_(randn(t->sizes(), on));
  }
  void step(Setup& s) {
    s.opts[1]->zero_grad();
    dde::dde_loss_given_noise(*s.dreal, x, n_real, s.sigma).backward();
    s.opts[1]->launch_step();
    s.opts[2]->zero_grad();
    Tensor gx;
    {
      NoGrad ng;
      gx = (*s.gen)(z_dde);
    }
    dde::dde_loss_given_noise(*s.dgen, gx, n_gen, s.sigma).backward();
    s.opts[2]->launch_step();
    s.opts[0]->zero_grad();
    dde::generator_loss_given_noise(*s.dgen, *s.dreal, (*s.gen)(z_gen), n_g, s.sigma).backward();
    s.opts[0]->launch_step();
  }
  void iteration(Setup& s) {
    refill(s);
    for (auto& o : s.opts) o->prepare_step();
    if (!graph.captured()) graph.capture([&] { step(s); });
    graph.replay();
    cuda::synchronize(s.device.index);
  }
};


void run(benchmark::State& state, Setup s, bool graphs = false) {
  if (graphs && !s.device.is_cuda()) {
    state.SkipWithError(cuda::available() ? "CUDA graphs: EMBER_BENCH_DEVICE forces the CPU"
                                          : "CUDA graphs need a GPU; none is usable here");
    return;
  }
  state.SetLabel(s.device.str());
  prepare(s);
  iteration(s);  // warm-up (and, for graphs, the eager step that fills the allocator's cache)
  if (graphs) {
    GraphIteration g(s);
    g.iteration(s);  // captures
    for (auto _ : state) g.iteration(s);
    return;
  }
  if (!s.device.is_cuda()) {
    for (auto _ : state) iteration(s);
    return;
  }
  // On the GPU, where the time goes: the host's part (ember's own work per op and the launch
  // calls, until the last launch returns) beside the whole iteration; the GPU's own part is the
  // /cuda_graphs variant's time, where the host launches one graph.
  const size_t ops = traced_ops(s);
  double host_us = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    enqueue_iteration(s);
    host_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    cuda::synchronize(s.device.index);
  }
  const double n = std::max<double>(1.0, static_cast<double>(state.iterations()));
  state.counters["ops"] = static_cast<double>(ops);
  state.counters["host_ms"] = host_us / n / 1000.0;
  state.counters["host_us_per_op"] = host_us / n / std::max<double>(1.0, static_cast<double>(ops));
}

void BM_dde_toy_iteration(benchmark::State& state, bool graphs) { run(state, toy_workload(2048), graphs); }

void BM_dde_toy_host_overhead(benchmark::State& state) {
  Setup s = toy_workload(1, Device::cpu());
  prepare(s);
  iteration(s);
  const size_t ops = traced_ops(s);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) iteration(s);
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  state.counters["ops"] = static_cast<double>(ops);
  state.counters["us_per_op"] = us / std::max<double>(1.0, static_cast<double>(state.iterations() * ops));
}

void BM_dde_mnist_iteration(benchmark::State& state, bool graphs) { run(state, mnist_workload(), graphs); }

}  // namespace

BENCHMARK_CAPTURE(BM_dde_toy_iteration, eager, false)->Name("dde_toy_iteration(b2048,25x32)")->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK_CAPTURE(BM_dde_mnist_iteration, eager, false)->Name("dde_mnist_iteration(b100,dense16x256)")->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_dde_toy_host_overhead)->Name("dde_toy_iteration(b1,25x32)/host_overhead")->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_dde_toy_iteration, graphs, true)->Name("dde_toy_iteration(b2048,25x32)/cuda_graphs")->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK_CAPTURE(BM_dde_mnist_iteration, graphs, true)->Name("dde_mnist_iteration(b100,dense16x256)/cuda_graphs")->Unit(benchmark::kMillisecond)->MinTime(3.0);
