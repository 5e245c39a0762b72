#include "ember/nn/optim.h"

#include <cmath>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/optim.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/optim.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif

namespace ember::nn {

namespace {
// Calls f(T* p, const T* g, int64_t n, slots...) on raw contiguous memory.
template <typename F>
void with_raw(const Tensor& p, const Tensor& g, const char* op, const F& f) {
  EMBER_CHECK(p.is_contiguous(), op, ": parameter ", p.str(), " is not contiguous");
  EMBER_CHECK(g.sizes() == p.sizes(), op, ": gradient ", g.str(), " does not match parameter ", p.str());
  Tensor gc = g.dtype() == p.dtype() ? g.contiguous() : g.to(p.dtype()).contiguous();
  dispatch_floating(p.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    f(p.data<T>(), gc.template data<T>(), p.numel(), tag);
  });
  p.bump_version();
}
}  // namespace

bool Optimizer::on_gpu() const { return !params_.empty() && params_[0].device().is_cuda(); }

// Parameters batched 32 to a launch of the fused kernel (kernels/cuda/optim.cu), which applies
// the CPU loops below elementwise with the same constants.
void Optimizer::launch_gpu(const kernels::cuda::OptimStep& st) {
  const auto [slot0, slot1] = gpu_slots();
  std::vector<kernels::cuda::OptimTensor> batch;
  std::vector<Tensor> keep;  // contiguous gradients live until their launch is queued
  const DType dtype = params_[0].dtype();
  const Device device = params_[0].device();
  dispatch_floating(dtype, name_, [](auto) {});
  auto flush = [&] {
#if EMBER_WITH_CUDA
    kernels::cuda::optim_step(cuda::elem_type(dtype), batch.data(), static_cast<int>(batch.size()), st,
                              cuda::stream(device.index));
#endif
    batch.clear();
    keep.clear();
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    EMBER_CHECK(p.device() == device && p.dtype() == dtype, name_, ": the fused GPU step needs every parameter on one "
                "device with one dtype; parameter ", i, " is ", p.str(), ", parameter 0 is ", params_[0].str());
    EMBER_CHECK(p.is_contiguous(), name_, ": parameter ", p.str(), " is not contiguous");
    EMBER_CHECK(g.sizes() == p.sizes(), name_, ": gradient ", g.str(), " does not match parameter ", p.str());
    EMBER_CHECK(g.device() == device, name_, ": gradient ", g.str(), " is not on its parameter's device (", p.str(), ")");
    Tensor gc = (g.dtype() == dtype ? g : g.to(dtype)).contiguous();
    void* s0 = slot0 ? slot(i, slot0).device_data() : nullptr;
    void* s1 = slot1 ? slot(i, slot1).device_data() : nullptr;
    keep.push_back(gc);
    batch.push_back({p.device_data(), gc.device_data(), s0, s1, p.numel()});
    p.bump_version();
    if (batch.size() == static_cast<size_t>(kernels::cuda::kMaxTensorsPerLaunch)) flush();
  }
  if (!batch.empty()) flush();
}

void Optimizer::step_gpu() {
  ++steps_;
  launch_gpu(gpu_step(steps_));
}

void Optimizer::prepare_step() {
  EMBER_CHECK(on_gpu(), name_, ".prepare_step: for CUDA graphs; the parameters are on the CPU (use step())");
  NoGrad ng;
  ++steps_;
  const kernels::cuda::OptimStep st = gpu_step(steps_);
  const std::vector<double> v{st.lr, st.step_size, st.inv_sqrt_bc2, st.decay, st.first ? 1.0 : 0.0};
  if (!device_scalars_.defined())
    device_scalars_ = Tensor::empty({5}, {.dtype = DType::f64, .device = params_[0].device()});
  device_scalars_.copy_(from_vector(v, {5}, {.dtype = DType::f64}));
}

void Optimizer::launch_step() {
  EMBER_CHECK(device_scalars_.defined(), name_, ".launch_step: call prepare_step() first (it uploads the scalars the "
              "kernels read)");
  NoGrad ng;
  kernels::cuda::OptimStep st = gpu_step(steps_);  // the fixed hyper-parameters
  st.device_scalars = static_cast<const double*>(device_scalars_.device_data());
  launch_gpu(st);
}

Optimizer::Optimizer(std::vector<Tensor> params, double lr_, const char* name)
    : lr(lr_), params_(std::move(params)), state_(params_.size()), name_(name) {
  EMBER_CHECK(lr_ >= 0, name, ": learning rate must be >= 0, got ", lr_);
  for (size_t i = 0; i < params_.size(); ++i)
    EMBER_CHECK(params_[i].defined() && params_[i].requires_grad() && params_[i].is_leaf(), name, ": parameter ", i,
                " must be a leaf tensor that requires grad");
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.set_grad(Tensor());
}

Tensor& Optimizer::slot(size_t i, const std::string& name) {
  auto& s = state_[i][name];
  if (!s.defined()) s = zeros_like(params_[i].detach());
  return s;
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> d;
  for (size_t i = 0; i < state_.size(); ++i)
    for (auto& [n, t] : state_[i]) d[std::to_string(i) + "." + n] = t;
  d["step"] = scalar_tensor(static_cast<double>(steps_), {.dtype = DType::i64});
  return d;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto it = state.find("step");
  EMBER_CHECK(it != state.end(), name_, ".load_state_dict: no 'step' entry");
  steps_ = static_cast<int64_t>(it->second.item());
  for (auto& s : state_) s.clear();
  for (auto& [key, t] : state) {
    if (key == "step") continue;
    size_t dot = key.find('.');
    EMBER_CHECK(dot != std::string::npos, name_, ".load_state_dict: unexpected key '", key, "'");
    size_t i = std::stoul(key.substr(0, dot));
    EMBER_CHECK(i < params_.size(), name_, ".load_state_dict: state for parameter ", i, " but the optimizer has ",
                params_.size());
    EMBER_CHECK(t.sizes() == params_[i].sizes(), name_, ".load_state_dict: '", key, "' has shape ",
                shape_str(t.sizes()), " but parameter ", i, " has ", shape_str(params_[i].sizes()));
    // The state lives where its parameter does (a CPU checkpoint resumed on a GPU).
    state_[i][key.substr(dot + 1)] = t.detach().to(params_[i].dtype()).to(params_[i].device()).contiguous().clone();
  }
}

SGD::SGD(std::vector<Tensor> params, SGDOptions o) : Optimizer(std::move(params), o.lr, "SGD"), opts(o) {
  EMBER_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: nesterov needs momentum > 0 and dampening 0");
}

kernels::cuda::OptimStep SGD::gpu_step(int64_t t) const {
  kernels::cuda::OptimStep st;
  st.rule = kernels::cuda::OptimRule::sgd;
  st.lr = lr;
  st.weight_decay = opts.weight_decay;
  st.momentum = opts.momentum;
  st.dampening = opts.dampening;
  st.nesterov = opts.nesterov;
  st.first = t == 1;
  return st;
}
std::pair<const char*, const char*> SGD::gpu_slots() const {
  return {opts.momentum != 0 ? "momentum" : nullptr, nullptr};
}

void SGD::step() {
  NoGrad ng;
  if (on_gpu()) return step_gpu();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor buf = opts.momentum != 0 ? slot(i, "momentum") : Tensor();
    const bool first = steps_ == 0;
    with_raw(params_[i], g, "SGD", [&](auto* p, const auto* gr, int64_t n, auto tag) {
      using T = typename decltype(tag)::type;
      T* b = buf.defined() ? buf.data<T>() : nullptr;
      const T lr_ = T(lr), wd = T(opts.weight_decay), mom = T(opts.momentum), damp = T(opts.dampening);
      for (int64_t k = 0; k < n; ++k) {
        T d = gr[k] + wd * p[k];
        if (b) {
          b[k] = first ? d : mom * b[k] + (T(1) - damp) * d;
          d = opts.nesterov ? d + mom * b[k] : b[k];
        }
        p[k] -= lr_ * d;
      }
    });
  }
  ++steps_;
}

Adam::Adam(std::vector<Tensor> params, AdamOptions o, bool decoupled)
    : Optimizer(std::move(params), o.lr, decoupled ? "AdamW" : "Adam"), opts(o), decoupled_(decoupled) {
  EMBER_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, name_, ": betas must be in [0, 1)");
}

namespace {
// The scalars Adam and Adamax share at step t: the hyper-parameters and lr / (1 - beta1^t).
kernels::cuda::OptimStep adam_family_step(kernels::cuda::OptimRule rule, const AdamOptions& o, double lr, int64_t t) {
  kernels::cuda::OptimStep st;
  st.rule = rule;
  st.lr = lr;
  st.beta1 = o.beta1;
  st.beta2 = o.beta2;
  st.eps = o.eps;
  st.weight_decay = o.weight_decay;
  st.step_size = lr / (1 - std::pow(o.beta1, static_cast<double>(t)));
  return st;
}
}  // namespace

kernels::cuda::OptimStep Adam::gpu_step(int64_t t) const {
  kernels::cuda::OptimStep st = adam_family_step(kernels::cuda::OptimRule::adam, opts, lr, t);
  st.inv_sqrt_bc2 = 1 / std::sqrt(1 - std::pow(opts.beta2, static_cast<double>(t)));
  st.decay = 1 - lr * opts.weight_decay;
  st.decoupled = decoupled_;
  return st;
}
std::pair<const char*, const char*> Adam::gpu_slots() const { return {"exp_avg", "exp_avg_sq"}; }

void Adam::step() {
  NoGrad ng;
  if (on_gpu()) return step_gpu();
  ++steps_;
  const double bc1 = 1 - std::pow(opts.beta1, static_cast<double>(steps_));
  const double bc2 = 1 - std::pow(opts.beta2, static_cast<double>(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor m = slot(i, "exp_avg"), v = slot(i, "exp_avg_sq");
    with_raw(params_[i], g, name_, [&](auto* p, const auto* gr, int64_t n, auto tag) {
      using T = typename decltype(tag)::type;
      T* mp = m.data<T>();
      T* vp = v.data<T>();
      const kernels::cpu::AdamConstants<T> c{T(opts.beta1), T(opts.beta2), T(opts.eps), T(opts.weight_decay),
                                             T(lr / bc1), T(1 / std::sqrt(bc2)), T(1 - lr * opts.weight_decay),
                                             decoupled_};
      kernels::cpu::parallel_for(0, n, kernels::cpu::kParallelGrain, [&](int64_t b, int64_t e) {
        kernels::cpu::adam_update(p + b, gr + b, mp + b, vp + b, e - b, c);
      });
    });
  }
}

Adamax::Adamax(std::vector<Tensor> params, AdamOptions o) : Optimizer(std::move(params), o.lr, "Adamax"), opts(o) {}

kernels::cuda::OptimStep Adamax::gpu_step(int64_t t) const {
  return adam_family_step(kernels::cuda::OptimRule::adamax, opts, lr, t);
}
std::pair<const char*, const char*> Adamax::gpu_slots() const { return {"exp_avg", "exp_inf"}; }

void Adamax::step() {
  NoGrad ng;
  if (on_gpu()) return step_gpu();
  ++steps_;
  const double bc1 = 1 - std::pow(opts.beta1, static_cast<double>(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor m = slot(i, "exp_avg"), u = slot(i, "exp_inf");
    with_raw(params_[i], g, "Adamax", [&](auto* p, const auto* gr, int64_t n, auto tag) {
      using T = typename decltype(tag)::type;
      T* mp = m.data<T>();
      T* up = u.data<T>();
      const T b1 = T(opts.beta1), b2 = T(opts.beta2), eps = T(opts.eps), wd = T(opts.weight_decay);
      const T clr = T(lr / bc1);
      for (int64_t k = 0; k < n; ++k) {
        T d = gr[k] + wd * p[k];
        mp[k] = b1 * mp[k] + (T(1) - b1) * d;
        up[k] = std::max(b2 * up[k], std::abs(d) + eps);
        p[k] -= clr * mp[k] / up[k];
      }
    });
  }
}

LRScheduler::LRScheduler(Optimizer& opt, std::function<double(int64_t)> factor)
    : opt_(opt), base_lr_(opt.lr), factor_(std::move(factor)) {
  opt_.lr = base_lr_ * factor_(0);
}
void LRScheduler::step() { set_step(step_ + 1); }
void LRScheduler::set_step(int64_t s) {
  step_ = s;
  opt_.lr = base_lr_ * factor_(step_);
}
LRScheduler StepLR(Optimizer& opt, int64_t step_size, double gamma) {
  EMBER_CHECK(step_size > 0, "StepLR: step_size must be > 0");
  return LRScheduler(opt, [=](int64_t s) { return std::pow(gamma, static_cast<double>(s / step_size)); });
}
LRScheduler CosineLR(Optimizer& opt, int64_t total, double min_factor) {
  EMBER_CHECK(total > 0, "CosineLR: total_steps must be > 0");
  return LRScheduler(opt, [=](int64_t s) {
    double t = std::min<double>(static_cast<double>(s), static_cast<double>(total)) / static_cast<double>(total);
    return min_factor + (1 - min_factor) * 0.5 * (1 + std::cos(M_PI * t));
  });
}
LRScheduler LinearWarmupLR(Optimizer& opt, int64_t warmup) {
  EMBER_CHECK(warmup > 0, "LinearWarmupLR: warmup_steps must be > 0");
  return LRScheduler(opt, [=](int64_t s) { return std::min(1.0, static_cast<double>(s + 1) / static_cast<double>(warmup)); });
}
LRScheduler LambdaLR(Optimizer& opt, std::function<double(int64_t)> f) { return LRScheduler(opt, std::move(f)); }

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  NoGrad ng;
  double total = 0;
  Tensor device_total;  // GPU gradients: summed on their device, read back once
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      Tensor s = square(g.detach().to(DType::f64)).sum();
      device_total = device_total.defined() ? add(device_total, s.to(device_total.device())) : s;
    } else {
      for (double v : g.to_vector<double>()) total += v * v;
    }
  }
  if (device_total.defined()) total += device_total.item();
  total = std::sqrt(total);
  EMBER_CHECK(std::isfinite(total), "clip_grad_norm_: the gradient norm is ", total,
              " (a NaN or Inf reached the gradients; check the loss and the learning rate)");
  if (total > max_norm && total > 0) {
    double scale = max_norm / (total + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.set_grad(p.grad().detach().clone().mul_(scale));
  }
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip) {
  NoGrad ng;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      dispatch_floating(g.dtype(), "clip_grad_value_", [](auto) {});
      p.set_grad(clamp(g.detach(), -clip, clip));
      continue;
    }
    Tensor c = g.detach().contiguous().clone();
    dispatch_floating(c.dtype(), "clip_grad_value_", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* d = c.data<T>();
      for (int64_t k = 0; k < c.numel(); ++k) d[k] = std::clamp(d[k], T(-clip), T(clip));
    });
    p.set_grad(c);
  }
}

EMA::EMA(const std::vector<Tensor>& params, double decay) : params_(params), decay_(decay) {
  EMBER_CHECK(decay >= 0 && decay <= 1, "EMA: decay must be in [0, 1], got ", decay);
  for (const auto& p : params) shadow_.push_back(p.detach().clone());
}

void EMA::update() {
  NoGrad ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    shadow_[i].mul_(decay_);
    shadow_[i].add_(params_[i].detach(), 1 - decay_);
  }
}

void EMA::swap() {
  NoGrad ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor live = params_[i].detach().clone();
    Tensor p = params_[i].detach();
    p.copy_(shadow_[i]);
    shadow_[i] = live;
  }
}

}  // namespace ember::nn
