// The DDE reference trainer behind `ember dde`: density estimation of the data (a DDE s_p),
// generator training against it (Algorithm 1: a second DDE s_q tracks the generator's
// samples), likelihood by importance sampling, and optional annealed Langevin sampling with
// grad s_p as the score. Writes a run folder (config.json, metrics.jsonl, checkpoint,
// PNG images) and resumes from it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ember::models::dde {

struct TrainConfig {
  std::string data = "checkerboard";  // toy name | fashion-mnist | mnist | gaussian6d | path.csv | path.npy
  std::string data_dir;               // IDX folder for fashion-mnist / mnist
  double sigma = -1;                  // default: 0.2 toys, 0.5 images, 0.1 (annealed) tabular
  double sigma_min = 0.01;            // tabular annealing floor
  int64_t anneal_every = 2000;        // tabular: sigma /= 1.1 every this many steps
  int64_t steps = -1;                 // DDE steps on the data (default per data kind)
  int64_t gen_steps = -1;             // generator iterations (0 = none)
  int64_t k_dde = 10;                 // s_q steps per generator step (Algorithm 1's K)
  int64_t sq_init_steps = -1;         // Algorithm 1, line 2: s_q fitted first (default steps / 4)
  int64_t batch = -1;
  double lr = 1e-3;
  double gen_lr = -1;                 // generator's learning rate (default: 3e-3 toys, else lr)
  std::string lr_schedule;            // DDE phase: "cosine" (to 10%; toys' default) or "step" (below)
  double lr_decay = 1.0;              // step decay factor ...
  int64_t lr_decay_every = 0;         // ... every this many steps (0: constant)
  int64_t width = -1, depth = -1;     // network size (defaults per data kind)
  bool generator = true;
  std::string device = "cpu";
  // --cuda-graphs: the DDE step on the data (forward, the double backward, loss, backward) is
  // captured once as a CUDA graph and replayed; needs --device cuda. The Adam step runs eagerly
  // after each replay, and the loss is read back only where it is logged or checked.
  bool cuda_graphs = false;
  uint64_t seed = 0;
  std::string out;                    // run folder (default runs/dde-<data>-<time>)
  std::string resume;                 // run folder to continue
  int64_t eval_every = -1;
  int64_t checkpoint_every = 500;
  int64_t grid = 128;                 // density grid side for KL and heat maps
  // annealed Langevin sampling with grad s_p as the score (the paper's DDE+ALD baseline)
  std::string sampler = "generator";  // generator | langevin
  int64_t langevin_levels = 10, langevin_steps = 50;
  double langevin_sigma_max = 1.0, langevin_step = 0.05;
  int64_t threads = 0;                // 0: all cores
  std::vector<std::string> args_for_resume;  // the arguments as given, saved in checkpoints
};

// Parses `ember dde` arguments (after "dde"); throws ember::Error with usage on bad input.
TrainConfig parse_train_args(const std::vector<std::string>& args);
std::string train_usage();

// Runs training; returns the run folder.
std::string train(TrainConfig cfg);
// `ember dde sample --run DIR [--n N]`: generator (or Langevin) samples as an image.
void sample(const std::string& run_dir, int64_t n, const std::string& sampler);
// `ember dde eval --run DIR`: KL / MMD / likelihood of a saved run, printed and written to eval.json.
void eval(const std::string& run_dir);

}  // namespace ember::models::dde
