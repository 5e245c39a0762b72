// The DDE workloads of ../shared/reference/torch_workloads.py as ember runs them: the three
// networks, their Adam optimizers and one iteration (one real-data DDE step, one generator-DDE
// step, one generator step). Shared by bench_dde.cpp (Google Benchmark) and dde_iterations.cpp
// (a fixed number of iterations, for counting instructions: scripts/host_instructions.sh), and
// by tools/cuda_emu's launch counter.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/ember.h"
#include "ember/models/dde/dde.h"
#include "ember/models/mlp.h"
#include "ember/nn/optim.h"

namespace ember::bench {

namespace dde = ember::models::dde;

inline Device bench_device() {
  const char* forced = std::getenv("EMBER_BENCH_DEVICE");
  if (forced) return Device::parse(forced);
  return cuda::available() ? Device::cuda(0) : Device::cpu();
}

struct Setup {
  std::shared_ptr<nn::Module> gen, dreal, dgen;
  std::vector<std::unique_ptr<nn::Adam>> opts;
  int64_t batch, zdim, data_dim;
  double sigma;
  bool uniform_data;
  Device device = bench_device();
};

// The iteration's work, queued: on the GPU it returns once the host has launched everything.
inline void enqueue_iteration(Setup& s) {
  const TensorOptions on{.device = s.device};
  Tensor x = s.uniform_data ? rand({s.batch, s.data_dim}, on) : randn({s.batch, s.data_dim}, on);
  s.opts[1]->zero_grad();
  dde::dde_loss(*s.dreal, x, s.sigma).backward();
  s.opts[1]->step();

  s.opts[2]->zero_grad();
  Tensor gx;
  {
    NoGrad ng;
    gx = (*s.gen)(randn({s.batch, s.zdim}, on));
  }
  dde::dde_loss(*s.dgen, gx, s.sigma).backward();
  s.opts[2]->step();

  s.opts[0]->zero_grad();
  Tensor gz = (*s.gen)(randn({s.batch, s.zdim}, on));
  dde::generator_loss(*s.dgen, *s.dreal, gz, s.sigma).backward();
  s.opts[0]->step();
}

inline void iteration(Setup& s) {
  enqueue_iteration(s);
  if (s.device.is_cuda()) cuda::synchronize(s.device.index);
}

// The workloads' networks, from seed 0 (prepare() below moves them to the device and makes their
// optimizers). rows: the toy batch, 2048 for the benchmark, 1 for its host-overhead variant.
inline Setup toy_workload(int64_t rows, Device device = bench_device()) {
  manual_seed(0);
  return Setup{std::make_shared<models::MLP>(2, 32, 25, 2, true), std::make_shared<models::MLP>(2, 32, 25, 1),
               std::make_shared<models::MLP>(2, 32, 25, 1), {}, rows, 2, 2, 0.2, false, device};
}
inline Setup mnist_workload(Device device = bench_device()) {
  manual_seed(0);
  return Setup{std::make_shared<models::DenseNetMLP>(16, 64, 16, 784, true),
               std::make_shared<models::DenseNetMLP>(784, 256, 16, 1),
               std::make_shared<models::DenseNetMLP>(784, 256, 16, 1), {}, 100, 16, 784, 0.5, true, device};
}
// One iteration under the op trace: its events (each op a kernel launch or more on the GPU).
inline std::vector<TraceEvent> traced_iteration(Setup& s) {
  TraceScope trace;
  iteration(s);
  return trace.events();
}
// Ops one iteration runs.
inline size_t traced_ops(Setup& s) { return traced_iteration(s).size(); }

// How many times each op ran, most frequent first: where the launches go.
inline std::vector<std::pair<size_t, std::string>> op_counts(const std::vector<TraceEvent>& events) {
  std::map<std::string, size_t> counts;
  for (const TraceEvent& e : events) ++counts[e.op];
  std::vector<std::pair<size_t, std::string>> sorted;
  for (const auto& [op, n] : counts) sorted.emplace_back(n, op);
  std::sort(sorted.rbegin(), sorted.rend());
  return sorted;
}

// Moves the networks to s.device and makes their Adam optimizers (lr 1e-3).
inline void prepare(Setup& s) {
  for (auto* m : {s.gen.get(), s.dreal.get(), s.dgen.get()}) m->to(s.device);
  for (auto* m : {s.gen.get(), s.dreal.get(), s.dgen.get()})
    s.opts.push_back(std::make_unique<nn::Adam>(m->parameters(), nn::AdamOptions{.lr = 1e-3}));
}

}  // namespace ember::bench
