// What one DDE iteration (bench_dde's, bench/dde_workloads.h) costs the GPU in launches: the
// kernels ember queues and the other stream work (cuBLAS/cuBLASLt calls, copies, memsets),
// counted by the emulator (emu::work_counts), beside the op trace's count and its ops by name.
// Run it in an EMBER_CUDA=EMULATE build:
//
//   build-emu/tools/cuda_emu_count_dde_launches [toy | mnist]
//
// toy runs on 64 rows instead of the benchmark's 2,048 (the launches do not depend on the
// batch); EMBER_EMU_SKIP_KERNELS=1 counts without running the kernels, for MNIST's large GEMMs.
#include <cstdio>
#include <string>

#include "../../../bench/dde_workloads.h"
#include "emu/hooks.h"

using namespace ember;
using namespace ember::bench;

int main(int argc, char** argv) {
  const std::string workload = argc > 1 ? argv[1] : "toy";
  if (argc > 2 || (workload != "toy" && workload != "mnist")) {
    std::fprintf(stderr, "usage: cuda_emu_count_dde_launches [toy | mnist]\n");
    return 2;
  }
  Setup s = workload == "mnist" ? mnist_workload(Device::cuda(0)) : toy_workload(64, Device::cuda(0));
  prepare(s);
  iteration(s);  // warm-up: the allocator's cache, cuBLAS handles and plans
  const emu::WorkCounts before = emu::work_counts();
  const std::vector<TraceEvent> events = traced_iteration(s);
  const emu::WorkCounts after = emu::work_counts();
  const auto kernels = after.kernels - before.kernels, work = after.stream_work - before.stream_work;
  std::printf("one DDE %s iteration: %zu traced ops, %llu stream operations: %llu kernels and %llu other "
              "(cuBLAS/cuBLASLt calls, copies, memsets)\n",
              workload.c_str(), events.size(), static_cast<unsigned long long>(work),
              static_cast<unsigned long long>(kernels), static_cast<unsigned long long>(work - kernels));
  std::printf("traced ops by name:");
  for (const auto& [n, op] : op_counts(events)) std::printf(" %s %zu,", op.c_str(), n);
  std::printf("\n");
}
