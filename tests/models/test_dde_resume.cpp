// Kill-and-resume: `ember dde` killed with SIGKILL in the middle of training and resumed from
// its last checkpoint ends with exactly the parameters of a run that was never interrupted.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "ember/ember.h"
#include "ember/engine/serialization/safetensors.h"

using namespace ember;
namespace fs = std::filesystem;

namespace {
const std::string kEmber = std::string(EMBER_BINARY_DIR) + "/ember";

std::vector<std::string> args_for(const std::string& out) {
  return {kEmber, "dde", "--data", "8gaussians", "--steps", "400", "--gen-steps", "6", "--k", "2",
          "--sq-init-steps", "5", "--width", "16", "--depth", "4", "--batch", "256", "--checkpoint-every", "25",
          "--eval-every", "1000", "--grid", "16", "--threads", "1", "--out", out};
}

pid_t spawn(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    freopen("/dev/null", "w", stderr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}
}  // namespace

TEST(DdeResume, KilledRunResumesBitForBit) {
  if (!fs::exists(kEmber)) GTEST_SKIP() << kEmber << " not built (EMBER_BUILD_APPS=OFF)";
  const std::string base = testing::TempDir() + "/ember_resume_test";
  fs::remove_all(base);
  fs::create_directories(base);
  const std::string full = base + "/full", killed = base + "/killed";

  int st = wait_for(spawn(args_for(full)));
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "uninterrupted run failed";

  pid_t pid = spawn(args_for(killed));
  const std::string ckpt = killed + "/checkpoint.safetensors";
  auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(ckpt) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // land somewhere inside a step
  kill(pid, SIGKILL);
  wait_for(pid);
  ASSERT_TRUE(fs::exists(ckpt)) << "no checkpoint was written before the kill";
  SafetensorsFile at_kill = load_safetensors(ckpt);  // the file a kill left must be whole
  EXPECT_LT(std::stoll(at_kill.metadata["step"]), 400) << "the run finished before it was killed; the test proves nothing";

  st = wait_for(spawn({kEmber, "dde", "--resume", killed}));
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "resumed run failed";

  SafetensorsFile a = load_safetensors(full + "/checkpoint.safetensors");
  SafetensorsFile b = load_safetensors(ckpt);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto& [name, t] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    EXPECT_EQ(t.to_vector<double>(), b.tensors[name].to_vector<double>()) << name << " differs after resume";
  }
  EXPECT_EQ(a.metadata["rng_offset"], b.metadata["rng_offset"]);
  fs::remove_all(base);
}
