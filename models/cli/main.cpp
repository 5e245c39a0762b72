// The `ember` program: the reference trainers as subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/error.h"
#include "ember/kernels/cpu/gemm.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/models/dde/trainer.h"

namespace {

const char* kUsage =
    "ember: reference trainers of density-based generative models\n"
    "\n"
    "  ember dde [options]          train a denoising density estimator and a generator (ember dde --help)\n"
    "  ember dde sample --run DIR   draw samples from a trained run\n"
    "  ember dde eval --run DIR     score a trained run (KL, MMD^2, likelihood)\n"
    "  ember info                   build and machine information\n";

int dde_main(const std::vector<std::string>& args) {
  namespace dde = ember::models::dde;
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(dde::train_usage().c_str(), stdout);
    return 0;
  }
  if (!args.empty() && (args[0] == "sample" || args[0] == "eval")) {
    std::string run, sampler = "generator";
    int64_t n = 10000;
    for (size_t i = 1; i < args.size(); ++i) {
      EMBER_CHECK(i + 1 < args.size(), "dde ", args[0], ": option ", args[i], " needs a value");
      if (args[i] == "--run") run = args[++i];
      else if (args[i] == "--n") n = std::stoll(args[++i]);
      else if (args[i] == "--sampler") sampler = args[++i];
      else EMBER_FAIL("dde ", args[0], ": unknown option '", args[i], "'\n", dde::train_usage());
    }
    EMBER_CHECK(!run.empty(), "dde ", args[0], ": --run DIR is required");
    if (args[0] == "sample") dde::sample(run, n, sampler);
    else dde::eval(run);
    return 0;
  }
  dde::train(dde::parse_train_args(args));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  try {
    const std::string cmd = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (cmd == "dde") return dde_main(rest);
    if (cmd == "info") {
      std::printf("ember 0.1.0\nCPU threads: %d\nGEMM micro-kernel: %s\nCUDA backend: %s\n",
                  ember::kernels::cpu::num_threads(), ember::kernels::cpu::gemm_isa(),
                  EMBER_WITH_CUDA ? "compiled in" : "not built");
      if (ember::cuda::built()) {
        if (ember::cuda::available()) std::printf("GPUs: %d\n", ember::cuda::device_count());
        else std::printf("GPUs: none (%s)\n", ember::cuda::unavailable_reason().c_str());
      }
      return 0;
    }
    std::fprintf(stderr, "ember: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const ember::Error& e) {
    std::fprintf(stderr, "\nember: error: %s\n", e.what());
    return 1;
  }
}
