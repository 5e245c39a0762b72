#include "ember/nn/module.h"

#include <set>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/copy.h"

namespace ember::nn {

Tensor Module::forward(const Tensor&) {
  EMBER_FAIL("this module has no one-input forward(x); call its own forward with the inputs it takes");
}

Tensor& Module::register_parameter(const std::string& name, Tensor& slot, Tensor value) {
  EMBER_CHECK(value.defined() && value.is_floating_point(), "register_parameter '", name,
              "': a parameter must be a defined floating tensor, got ", value.str());
  slot = value.detach();
  slot.requires_grad_(true);
  params_.emplace_back(name, &slot);
  return slot;
}

Tensor& Module::register_buffer(const std::string& name, Tensor& slot, Tensor value) {
  slot = value.defined() ? value.detach() : value;
  buffers_.emplace_back(name, &slot);
  return slot;
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out, bool params) const {
  for (const auto& [n, t] : params ? params_ : buffers_)
    if (t->defined()) out.emplace_back(prefix + n, t);
  for (const auto& [n, m] : submodules_) m->collect(prefix + n + ".", out, params);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor*>> ps;
  collect("", ps, true);
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<TensorImpl*> seen;  // a shared parameter is listed once
  for (auto& [n, t] : ps)
    if (seen.insert(t->get()).second) out.emplace_back(n, *t);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor*>> bs;
  collect("", bs, false);
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, t] : bs) out.emplace_back(n, *t);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [n, m] : submodules_)
    for (auto& [sub, p] : m->named_modules()) out.emplace_back(sub.empty() ? n : n + "." + sub, p);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& [n, m] : submodules_) m->train(on);
}

void Module::to(DType dtype) {
  std::vector<std::pair<std::string, Tensor*>> ps, bs;
  collect("", ps, true);
  collect("", bs, false);
  NoGrad ng;
  for (auto& [n, t] : ps) {
    Tensor c = t->to(dtype).detach();
    if (c.get() == t->get()) continue;
    c.requires_grad_(true);
    *t = c;
  }
  for (auto& [n, t] : bs)
    if (t->is_floating_point()) *t = t->to(dtype).detach();
}

void Module::to(Device device) {
  std::vector<std::pair<std::string, Tensor*>> ps, bs;
  collect("", ps, true);
  collect("", bs, false);
  NoGrad ng;
  for (auto& [n, t] : ps) {
    if (t->device() == device) continue;
    Tensor c = t->to(device).detach();
    c.requires_grad_(true);
    *t = c;
  }
  for (auto& [n, t] : bs) *t = t->to(device).detach();
}

Device Module::device() const {
  auto ps = named_parameters();
  return ps.empty() ? Device::cpu() : ps[0].second.device();
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> d;
  for (auto& [n, t] : named_parameters()) d[n] = t.detach();
  for (auto& [n, t] : named_buffers()) d[n] = t.detach();
  return d;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& dict, bool strict) {
  std::vector<std::pair<std::string, Tensor*>> all;
  collect("", all, true);
  collect("", all, false);
  std::set<std::string> used;
  std::string missing;
  for (auto& [n, t] : all) {
    auto it = dict.find(n);
    if (it == dict.end()) {
      missing += (missing.empty() ? "" : ", ") + n;
      continue;
    }
    EMBER_CHECK(it->second.sizes() == t->sizes(), "load_state_dict: '", n, "' has shape ", shape_str(it->second.sizes()),
                " in the checkpoint but ", shape_str(t->sizes()), " in the model");
    used.insert(n);
  }
  std::string unexpected;
  for (auto& [n, t] : dict)
    if (!used.count(n)) unexpected += (unexpected.empty() ? "" : ", ") + n;
  if (strict)
    EMBER_CHECK(missing.empty() && unexpected.empty(), "load_state_dict: names do not match (missing in the checkpoint: [",
                missing, "]; unexpected in the checkpoint: [", unexpected,
                "]). Pass strict=false to load the common part.");
  NoGrad ng;
  for (auto& [n, t] : all) {
    auto it = dict.find(n);
    if (it == dict.end()) continue;
    copy_into(*t, it->second.to(t->device()));
    t->bump_version();
  }
}

Tensor Module::take_parameter(const std::string& name) {
  for (auto it = params_.begin(); it != params_.end(); ++it) {
    if (it->first != name) continue;
    Tensor t = *it->second;
    params_.erase(it);
    return t;
  }
  EMBER_FAIL("take_parameter: this module has no parameter '", name, "'");
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.set_grad(Tensor());
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> mods) {
  for (auto& m : mods) push_back(std::move(m));
}
void Sequential::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(mods_.size()), m);
  mods_.push_back(std::move(m));
}
Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : mods_) h = m->forward(h);
  return h;
}

void ModuleList::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(mods_.size()), m);
  mods_.push_back(std::move(m));
}

}  // namespace ember::nn
