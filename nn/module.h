// Module: a node of a network. It owns named parameters (tensors that require grad), buffers
// (state saved with the model but not trained, e.g. BatchNorm's running statistics) and named
// submodules. Names join with dots ("blocks.0.fc.weight"), as in PyTorch, so a state_dict
// written by ember lines up with one written by PyTorch for the same architecture.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/engine/tensor.h"

namespace ember::nn {

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The common one-input forward. Modules with other inputs define their own and leave this.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, Module*>> named_modules();  // self first, as ""
  int64_t num_parameters() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves or converts every parameter and buffer (parameters stay leaves that require grad).
  void to(DType dtype);
  void to(Device device);
  Device device() const;  // of the first parameter (cpu when there is none)

  // Parameters and buffers by dotted name, detached.
  std::map<std::string, Tensor> state_dict() const;
  // Copies values in. strict: every name must match both ways; shapes must always match.
  void load_state_dict(const std::map<std::string, Tensor>& dict, bool strict = true);

  void zero_grad();

  // Removes a registered parameter of this module (not of a submodule) and returns it; used by
  // wrappers that re-parameterise a weight (WeightNorm, SpectralNorm).
  Tensor take_parameter(const std::string& name);

 protected:
  // Registration returns the stored tensor / module; the Module keeps a pointer to the
  // member, so `to()` and `load_state_dict` update the member itself.
  Tensor& register_parameter(const std::string& name, Tensor& slot, Tensor value);
  Tensor& register_buffer(const std::string& name, Tensor& slot, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    submodules_.emplace_back(name, m);
    return m;
  }
  virtual void on_train(bool) {}

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out, bool params) const;
  std::vector<std::pair<std::string, Tensor*>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> submodules_;
  bool training_ = true;
};

// Runs its modules one after another.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> mods);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return mods_.size(); }
  Module& operator[](size_t i) { return *mods_.at(i); }

 private:
  std::vector<std::shared_ptr<Module>> mods_;
};

// Holds modules under the names "0", "1", ...; the owner decides how to call them.
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<Module> m);
  size_t size() const { return mods_.size(); }
  Module& operator[](size_t i) { return *mods_.at(i); }
  template <typename M>
  M& at(size_t i) { return dynamic_cast<M&>(*mods_.at(i)); }

 private:
  std::vector<std::shared_ptr<Module>> mods_;
};

}  // namespace ember::nn
