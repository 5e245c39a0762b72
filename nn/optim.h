// Optimizers, learning-rate schedules, gradient clipping and an EMA of parameters.
//
// Updates run in place under NoGrad on contiguous f32/f64 parameters, one fused loop per
// parameter (no temporaries) on the CPU, one fused multi-tensor kernel launch per 32
// parameters on the GPU. The formulas are PyTorch's, so hyper-parameters carry over.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ember/engine/tensor.h"

namespace ember::kernels::cuda {
struct OptimStep;
}

namespace ember::nn {

class Module;

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> params, double lr, const char* name);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();  // drops the gradients (the next backward allocates fresh ones)
  double lr;
  int64_t steps() const { return steps_; }
  const std::vector<Tensor>& params() const { return params_; }

  // Per-parameter state as "<index>.<slot>" tensors plus "step": for training checkpoints.
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

  // CUDA graphs (GPU parameters only). A captured step() would bake this step's scalars (the
  // learning rate, Adam's bias corrections) into the graph. Instead: capture launch_step(),
  // whose kernels read those scalars from a small device buffer, and before each replay call
  // prepare_step() outside the graph, which counts the step and uploads its scalars.
  // prepare_step() then launch_step() (or a replay) equals step().
  void prepare_step();
  void launch_step();

 protected:
  Tensor& slot(size_t param, const std::string& name);  // zeros like the parameter on first use
  bool on_gpu() const;
  // The GPU step: the scalars of step t (1-based) and the state slots the kernel updates
  // (state0, state1; null when unused).
  virtual kernels::cuda::OptimStep gpu_step(int64_t t) const = 0;
  virtual std::pair<const char*, const char*> gpu_slots() const = 0;
  void step_gpu();  // ++steps_, then the fused kernels with the scalars as launch arguments
  // The parameters with gradients through the fused GPU kernel, 32 to a launch.
  void launch_gpu(const kernels::cuda::OptimStep& step);
  Tensor device_scalars_;  // for launch_step(): [lr, step_size, inv_sqrt_bc2, decay, first]
  std::vector<Tensor> params_;
  std::vector<std::map<std::string, Tensor>> state_;
  int64_t steps_ = 0;
  const char* name_;
};

struct SGDOptions {
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions o);
  void step() override;
  SGDOptions opts;

 protected:
  kernels::cuda::OptimStep gpu_step(int64_t t) const override;
  std::pair<const char*, const char*> gpu_slots() const override;
};

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};
// Adam (weight decay as L2 added to the gradient) and AdamW (decoupled decay: p -= lr wd p).
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions o, bool decoupled_weight_decay = false);
  void step() override;
  AdamOptions opts;

 protected:
  kernels::cuda::OptimStep gpu_step(int64_t t) const override;
  std::pair<const char*, const char*> gpu_slots() const override;

 private:
  bool decoupled_;
};
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions o) : Adam(std::move(params), o, true) {}
};
// Adamax: the infinity-norm variant of Adam (Kingma & Ba, section 7.1).
class Adamax : public Optimizer {
 public:
  Adamax(std::vector<Tensor> params, AdamOptions o);
  void step() override;
  AdamOptions opts;

 protected:
  kernels::cuda::OptimStep gpu_step(int64_t t) const override;
  std::pair<const char*, const char*> gpu_slots() const override;
};

// ---- learning-rate schedules: lr = base_lr * factor(step); call step() once per optimizer step
class LRScheduler {
 public:
  LRScheduler(Optimizer& opt, std::function<double(int64_t)> factor);
  void step();
  int64_t last_step() const { return step_; }
  double lr() const { return opt_.lr; }
  void set_step(int64_t s);  // for resuming

 private:
  Optimizer& opt_;
  double base_lr_;
  std::function<double(int64_t)> factor_;
  int64_t step_ = 0;
};
LRScheduler StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);
LRScheduler CosineLR(Optimizer& opt, int64_t total_steps, double min_factor = 0.0);
LRScheduler LinearWarmupLR(Optimizer& opt, int64_t warmup_steps);
LRScheduler LambdaLR(Optimizer& opt, std::function<double(int64_t)> factor);

// Scales all gradients so their global 2-norm is at most max_norm; returns the norm before.
// A non-finite norm is an ember::Error (a NaN in the loss is never silently trained on).
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);
void clip_grad_value_(const std::vector<Tensor>& params, double clip);

// Exponential moving average of parameters: shadow = decay shadow + (1 - decay) p.
// swap() exchanges the shadow and the live values (call again to swap back), for sampling.
class EMA {
 public:
  EMA(const std::vector<Tensor>& params, double decay);
  void update();
  void swap();
  const std::vector<Tensor>& shadow() const { return shadow_; }

 private:
  std::vector<Tensor> params_, shadow_;
  double decay_;
};

}  // namespace ember::nn
