// CUDA graphs (engine/cuda/graph.h) and the DDE trainer's --cuda-graphs. The tests that need a
// GPU skip without one; the rest check the refusals anywhere.
//
// On a GPU a replay runs the very kernels an eager step launches, on the same inputs, so the
// numbers should agree bit for bit; the tolerances below (1e-6 relative) only leave room for a
// cuBLAS algorithm that differs between a captured and an eager call.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ember/engine/cuda/graph.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/models/dde/dde.h"
#include "ember/models/dde/trainer.h"
#include "ember/models/mlp.h"
#include "cuda_parity.h"

namespace ember {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- anywhere ----

TEST(CudaGraph, TrainerFlagNeedsACudaDevice) {
  namespace dde = models::dde;
  try {
    dde::parse_train_args({"--cuda-graphs"});
    FAIL() << "--cuda-graphs accepted on the CPU";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "--cuda-graphs needs --device cuda")) << e.what();
  }
  EXPECT_THROW(dde::parse_train_args({"--device", "cpu", "--cuda-graphs"}), Error);
  // parsing alone does not need a GPU
  EXPECT_TRUE(dde::parse_train_args({"--device", "cuda", "--cuda-graphs"}).cuda_graphs);
  EXPECT_TRUE(dde::parse_train_args({"--cuda-graphs", "--device", "cuda:0"}).cuda_graphs);
  EXPECT_FALSE(dde::parse_train_args({"--device", "cuda"}).cuda_graphs);
  // a run trained with graphs resumes on the CPU with --no-cuda-graphs (later arguments win)
  EXPECT_FALSE(
      dde::parse_train_args({"--device", "cuda", "--cuda-graphs", "--device", "cpu", "--no-cuda-graphs"}).cuda_graphs);
}

TEST(CudaGraph, WithoutAGpuEveryUseIsAClearError) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(cuda::capturing());
  cuda::CudaGraph g(0);  // constructing is fine anywhere
  EXPECT_FALSE(g.captured());
  bool ran = false;
  try {
    g.capture([&] { ran = true; });
    FAIL() << "captured without a GPU";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "CudaGraph::capture")) << e.what();
    EXPECT_TRUE(cuda::built() ? contains(e.what(), "cuda:0") : contains(e.what(), "built without")) << e.what();
  }
  EXPECT_FALSE(ran) << "the step must not run when nothing can be captured";
  EXPECT_THROW(g.replay(), Error);
  EXPECT_FALSE(cuda::capturing());
  g.reset();  // harmless
}

TEST(CudaGraph, TrainerWithGraphsRefusesAMissingGpu) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  models::dde::TrainConfig c = models::dde::parse_train_args({"--device", "cuda", "--cuda-graphs"});
  try {
    models::dde::train(c);
    FAIL() << "trained on a GPU that is not there";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "--device")) << e.what();
  }
}

// ---- on a GPU ----

// A small step with a backward, captured once and replayed on new inputs copied into the static
// buffer: each replay gives what the same step gives eagerly on those inputs.
TEST(CudaGpuGraph, ReplayMatchesEagerAfterTheInputsChange) {
  EMBER_REQUIRE_GPU();
  Tensor w = test::rnd({8, 5}, 1).to(kGpu).requires_grad_(true);
  auto step = [&](const Tensor& x) {
    Tensor y = tanh(matmul(x, w));
    Tensor loss = add(square(y).sum(), mul(exp(mul(x, 0.1)).sum(), 0.5));
    w.set_grad(Tensor());
    loss.backward();
    return TensorList{y.detach(), loss.detach(), w.grad()};
  };
  Tensor x_static = Tensor::empty({64, 8}, {.device = kGpu});
  x_static.copy_(test::rnd({64, 8}, 2));
  step(x_static);  // warm-up: cuBLAS handle, cached block sizes

  TensorList out;
  cuda::CudaGraph g(0);
  g.capture([&] { out = step(x_static); });
  EXPECT_TRUE(g.captured());
  EXPECT_FALSE(cuda::capturing());
  // Tensors made after the capture must not get the graph's blocks: the replay would overwrite them.
  TensorList bystanders;
  for (int i = 0; i < 8; ++i) bystanders.push_back(full({64, 5}, 7.0, {.device = kGpu}));

  for (uint64_t seed : {10, 11, 12}) {
    SCOPED_TRACE(seed);
    Tensor x_cpu = test::rnd({64, 8}, seed);
    x_static.copy_(x_cpu);
    g.replay();
    TensorList eager = step(x_cpu.to(kGpu));
    for (size_t i = 0; i < eager.size(); ++i) EXPECT_LT(rel_diff(out[i], eager[i]), 1e-6) << "output " << i;
  }
  for (const Tensor& b : bystanders) EXPECT_EQ(rel_diff(b, full({64, 5}, 7.0)), 0.0);
}

// The DDE step (the loss on d s/dx, so a double backward through every layer) captured and
// replayed for 20 steps, Adam's update inside the graph (its scalars uploaded by prepare_step
// before each replay): the loss curve of eager steps.
TEST(CudaGpuGraph, DdeStepReplaysTheEagerCurve) {
  EMBER_REQUIRE_GPU();
  const int kSteps = 20;
  const double sigma = 0.2;
  auto curve = [&](bool graphs) {
    manual_seed(3);
    models::MLP s(2, 64, 3, 1);
    s.to(kGpu);
    nn::Adam opt(s.parameters(), {.lr = 1e-3});
    Generator g(5);
    cuda::CudaGraph graph(0);
    Tensor xs = Tensor::empty({256, 2}, {.device = kGpu}), ns = Tensor::empty({256, 2}, {.device = kGpu});
    Tensor captured_loss;
    std::vector<double> losses;
    for (int step = 0; step < kSteps; ++step) {
      Tensor x = add(mul(randn({256, 2}, {.device = kGpu}, &g), 0.5), 1.0);
      Tensor loss;
      if (!graphs || step == 0) {  // eager (and the graph run's warm-up)
        opt.zero_grad();
        loss = models::dde::dde_loss(s, x, sigma, &g);
        loss.backward();
        opt.step();
      } else {
        xs.copy_(x);
        ns.copy_(randn_like(x, &g));  // the draw dde_loss makes
        opt.prepare_step();
        if (!graph.captured()) {
          graph.capture([&] {
            opt.zero_grad();
            captured_loss = models::dde::dde_loss_given_noise(s, xs, ns, sigma);
            captured_loss.backward();
            opt.launch_step();
          });
        }
        graph.replay();
        loss = captured_loss;
      }
      losses.push_back(loss.item());
    }
    return losses;
  };
  const auto eager = curve(false), replayed = curve(true);
  ASSERT_EQ(eager.size(), replayed.size());
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_NEAR(replayed[i], eager[i], 1e-6 * std::abs(eager[i]) + 1e-9) << "step " << i;
}

// The loss values of a run's metrics.jsonl, phase "dde", in order.
std::vector<double> dde_losses(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!contains(line, "\"phase\": \"dde\"")) continue;
    const size_t k = line.find("\"loss\": ");
    if (k == std::string::npos) continue;
    out.push_back(std::stod(line.substr(k + 8)));
  }
  return out;
}

TEST(CudaGpuGraph, DdeTrainerWithCudaGraphsGivesTheEagerCurve) {
  EMBER_REQUIRE_GPU();
  const fs::path root = fs::temp_directory_path() / ("ember_graph_" + std::to_string(::getpid()));
  auto run = [&](bool graphs) {
    const std::string out = (root / (graphs ? "graphs" : "eager")).string();
    fs::remove_all(out);
    // --eval-every 1: every step is evaluated (KL on an 8x8 grid), so every step's loss is logged
    std::vector<std::string> args{"--data", "8gaussians", "--steps", "20", "--no-generator", "--width", "16",
                                  "--depth", "4", "--batch", "256", "--eval-every", "1", "--grid", "8",
                                  "--device", "cuda", "--seed", "7", "--threads", "1", "--out", out};
    if (graphs) args.push_back("--cuda-graphs");
    models::dde::train(models::dde::parse_train_args(args));
    return dde_losses(out);
  };
  const auto eager = run(false), replayed = run(true);
  fs::remove_all(root);
  ASSERT_EQ(eager.size(), 20u);
  ASSERT_EQ(replayed.size(), 20u);
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_NEAR(replayed[i], eager[i], 1e-6 * std::abs(eager[i]) + 1e-9) << "step " << i + 1;
}

// The generator phase with graphs (s_q's step and the generator's, each captured after one eager
// step and replayed, K = 2 replays of s_q per generator step) follows the eager curve: s_q's
// loss and the generator's, every generator step.
TEST(CudaGpuGraph, DdeGeneratorPhaseWithCudaGraphsGivesTheEagerCurve) {
  EMBER_REQUIRE_GPU();
  const fs::path root = fs::temp_directory_path() / ("ember_graph_gen_" + std::to_string(::getpid()));
  auto run = [&](bool graphs) {
    const std::string out = (root / (graphs ? "graphs" : "eager")).string();
    fs::remove_all(out);
    std::vector<std::string> args{"--data", "8gaussians", "--steps", "3", "--gen-steps", "5", "--k", "2",
                                  "--sq-init-steps", "3", "--width", "16", "--depth", "4", "--batch", "256",
                                  "--grid", "8", "--device", "cuda", "--seed", "7", "--threads", "1", "--out", out};
    if (graphs) args.push_back("--cuda-graphs");
    models::dde::train(models::dde::parse_train_args(args));
    std::vector<double> losses;  // loss_sq, loss_g of each generator step
    std::ifstream f(out + "/metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      if (!contains(line, "\"phase\": \"generator\"")) continue;
      for (const char* key : {"\"loss_sq\": ", "\"loss_g\": "}) {
        const size_t k = line.find(key);
        if (k != std::string::npos) losses.push_back(std::stod(line.substr(k + std::string(key).size())));
      }
    }
    return losses;
  };
  const auto eager = run(false), replayed = run(true);
  fs::remove_all(root);
  ASSERT_EQ(eager.size(), 10u);
  ASSERT_EQ(replayed.size(), 10u);
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_NEAR(replayed[i], eager[i], 1e-5 * std::abs(eager[i]) + 1e-8) << (i % 2 ? "loss_g" : "loss_sq") << ", step "
                                                                         << i / 2 + 1;
}

TEST(CudaGpuGraph, AHostReadInsideTheCaptureIsAClearError) {
  EMBER_REQUIRE_GPU();
  Tensor x = ones({16}, {.device = kGpu});
  mul(x, 2.0).sum().item();  // warm-up
  cuda::CudaGraph g(0);
  const std::vector<std::pair<const char*, std::function<void()>>> reads = {
      {"item", [&] { mul(x, 2.0).sum().item(); }},
      {"to_vector", [&] { mul(x, 2.0).to_vector<float>(); }},
      {"to(cpu)", [&] { mul(x, 2.0).to(Device::cpu()); }},
      {"host -> device", [&] { ones({16}).to(kGpu); }},
      {"synchronize", [&] { cuda::synchronize(0); }},
  };
  for (const auto& [what, f] : reads) {
    SCOPED_TRACE(what);
    try {
      g.capture(f);
      FAIL() << "a host read was captured";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "during CUDA graph capture")) << e.what();
    }
    EXPECT_FALSE(g.captured());
    EXPECT_FALSE(cuda::capturing(0));
    // the device works as before
    EXPECT_EQ(mul(x, 3.0).sum().item(), 48.0);
  }
}

TEST(CudaGpuGraph, ReplaysAllocateNothingAndTheMemoryReturns) {
  EMBER_REQUIRE_GPU();
  Tensor w = test::rnd({32, 32}, 3).to(kGpu).requires_grad_(true);
  Tensor x = Tensor::empty({128, 32}, {.device = kGpu});
  x.copy_(test::rnd({128, 32}, 4));
  Tensor loss;
  auto step = [&] {
    w.set_grad(Tensor());
    loss = square(tanh(matmul(tanh(matmul(x, w)), w))).sum();
    loss.backward();
  };
  step();  // warm-up
  loss = Tensor();
  w.set_grad(Tensor());
  const auto before = cuda::memory_stats();
  {
    cuda::CudaGraph g(0);
    g.capture(step);
    g.replay();
    cuda::synchronize(0);
    const auto after_first = cuda::memory_stats();
    EXPECT_GE(after_first.reserved, before.reserved);
    for (int i = 0; i < 10; ++i) g.replay();
    cuda::synchronize(0);
    const auto after = cuda::memory_stats();
    EXPECT_EQ(after.allocated, after_first.allocated);
    EXPECT_EQ(after.reserved, after_first.reserved);
    EXPECT_EQ(after.device_mallocs, after_first.device_mallocs);
    EXPECT_GE(after.peak_allocated, after.allocated);
    // empty_cache leaves the graph's pool alone: replays still work
    cuda::empty_cache();
    g.replay();
    EXPECT_TRUE(std::isfinite(loss.item()));
  }
  // the graph is gone; once its outputs are dropped, everything it allocated is free again
  loss = Tensor();
  w.set_grad(Tensor());
  EXPECT_EQ(cuda::memory_stats().allocated, before.allocated);
  // and a new eager step finds its blocks in the cache (unless EMBER_CUDA_NO_CACHING turned it off)
  const uint64_t mallocs = cuda::memory_stats().device_mallocs;
  step();
  if (cuda::allocator_caches()) EXPECT_EQ(cuda::memory_stats().device_mallocs, mallocs);
}

}  // namespace
}  // namespace ember
