// What one DDE toy iteration (bench_dde's, batch 64 here) costs the GPU in launches: the
// kernels ember queues and the other stream work (cuBLAS/cuBLASLt calls, copies, memsets),
// counted by the emulator (emu::work_counts), beside the op trace's count and its ops by name.
// Run it in an
// EMBER_CUDA=EMULATE build: build-emu/tools/cuda_emu_count_dde_launches.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/models/dde/dde.h"
#include "ember/models/mlp.h"
#include "ember/nn/optim.h"
#include "emu/hooks.h"

using namespace ember;
namespace dde = ember::models::dde;
int main() {
  manual_seed(0);
  const Device dev = Device::cuda(0);
  const TensorOptions on{.device = dev};
  const int64_t batch = 64;
  auto gen = std::make_shared<models::MLP>(2, 32, 25, 2, true);
  auto dreal = std::make_shared<models::MLP>(2, 32, 25, 1);
  auto dgen = std::make_shared<models::MLP>(2, 32, 25, 1);
  std::vector<std::unique_ptr<nn::Adam>> opts;
  for (auto* m : {gen.get(), dreal.get(), dgen.get()}) {
    m->to(dev);
    opts.push_back(std::make_unique<nn::Adam>(m->parameters(), nn::AdamOptions{.lr = 1e-3}));
  }
  auto iteration = [&] {  // as bench/bench_dde.cpp's
    Tensor x = randn({batch, 2}, on);
    opts[1]->zero_grad();
    dde::dde_loss(*dreal, x, 0.2).backward();
    opts[1]->step();
    opts[2]->zero_grad();
    Tensor gx;
    {
      NoGrad ng;
      gx = (*gen)(randn({batch, 2}, on));
    }
    dde::dde_loss(*dgen, gx, 0.2).backward();
    opts[2]->step();
    opts[0]->zero_grad();
    dde::generator_loss(*dgen, *dreal, (*gen)(randn({batch, 2}, on)), 0.2).backward();
    opts[0]->step();
    cuda::synchronize(0);
  };
  iteration();  // warm-up: the allocator's cache, cuBLAS handles
  const emu::WorkCounts before = emu::work_counts();
  size_t ops = 0;
  std::map<std::string, int> by_op;
  {
    TraceScope trace;
    iteration();
    const auto events = trace.events();
    ops = events.size();
    for (const TraceEvent& e : events) by_op[e.op] += 1;
  }
  const emu::WorkCounts after = emu::work_counts();
  const auto kernels = after.kernels - before.kernels, work = after.stream_work - before.stream_work;
  std::printf("one DDE toy iteration: %zu traced ops, %llu stream operations: %llu kernels and %llu other "
              "(cuBLAS/cuBLASLt calls, copies, memsets)\n",
              ops, static_cast<unsigned long long>(work), static_cast<unsigned long long>(kernels),
              static_cast<unsigned long long>(work - kernels));
  std::vector<std::pair<int, std::string>> sorted;
  for (const auto& [op, n] : by_op) sorted.emplace_back(n, op);
  std::sort(sorted.rbegin(), sorted.rend());
  std::printf("traced ops by name:");
  for (const auto& [n, op] : sorted) std::printf(" %s %d,", op.c_str(), n);
  std::printf("\n");
}
