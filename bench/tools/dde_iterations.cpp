// Runs a fixed number of DDE iterations (bench/dde_workloads.h, after three warm-up ones) and
// prints the traced ops per iteration and the wall time. A fixed count, unlike Google
// Benchmark's timed loops, makes the instructions a run executes a function of the count alone:
// scripts/host_instructions.sh runs it twice under valgrind and takes the difference, ember's
// host cost per iteration as an exact count, which a noisy machine's clock cannot give.
//
//   dde_iterations <toy | toy1 | mnist> <iterations> [--ops]
//
// --ops also prints how many times each op ran in one iteration, most frequent first: where the
// launches go, and so which chains a fused kernel would shorten.
//
// toy: the benchmark's 2,048 rows; toy1: one row (the host-overhead variant, where the
// arithmetic is nothing); mnist: the DenseNet workload. The device is bench_dde's
// (EMBER_BENCH_DEVICE, else a GPU where one is usable).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../dde_workloads.h"

using namespace ember;
using namespace ember::bench;

// One iteration under the trace; prints each op's count, most frequent first, and returns the total.
static size_t print_op_counts(Setup& s) {
  const std::vector<TraceEvent> events = traced_iteration(s);
  for (const auto& [n, op] : op_counts(events)) std::printf("%6zu  %s\n", n, op.c_str());
  return events.size();
}

int main(int argc, char** argv) {
  const std::string workload = argc > 1 ? argv[1] : "";
  const long iterations = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 0;
  const bool print_ops = argc > 3 && std::string(argv[3]) == "--ops";
  if ((workload != "toy" && workload != "toy1" && workload != "mnist") || iterations < 0 || argc > 4 ||
      (argc == 4 && !print_ops)) {
    std::fprintf(stderr, "usage: dde_iterations <toy | toy1 | mnist> <iterations> [--ops]\n");
    return 2;
  }
  try {
    Setup s = workload == "mnist" ? mnist_workload() : toy_workload(workload == "toy" ? 2048 : 1);
    prepare(s);
    for (int i = 0; i < 2; ++i) iteration(s);  // warm-up: caches, the allocator's pools
    const size_t ops = print_ops ? print_op_counts(s) : traced_ops(s);  // the third
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) iteration(s);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s on %s: %zu ops per iteration, %ld iterations, %.3f ms per iteration\n", workload.c_str(),
                s.device.str().c_str(), ops, iterations, iterations ? ms / static_cast<double>(iterations) : 0.0);
  } catch (const Error& e) {
    std::fprintf(stderr, "dde_iterations: %s\n", e.what());
    return 1;
  }
  return 0;
}
