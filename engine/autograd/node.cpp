#include "ember/engine/autograd/node.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <utility>
#include <vector>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/engine/object_pool.h"

namespace ember::autograd {

namespace {
// Later nodes run first when several are ready: a cheap, good order (the one PyTorch uses).
std::atomic<uint64_t> g_next_sequence_nr{0};
}  // namespace

Node::Node(std::string name, EdgeList next_edges, MetaList output_meta)
    : name_(std::move(name)),
      next_edges_(std::move(next_edges)),
      output_meta_(std::move(output_meta)),
      sequence_nr_(g_next_sequence_nr.fetch_add(1)) {}

namespace {
thread_local const std::vector<bool>* input_grad_mask = nullptr;
thread_local const std::vector<PendingGrad>* pending_grads = nullptr;
thread_local const Node* running_node = nullptr;  // the node whose backward closure runs

const Node& running(size_t i, const char* what) {
  EMBER_CHECK(running_node && i < running_node->input_shapes().size(), what, "(", i,
              "): called outside a backward closure, or for an input the op does not have");
  return *running_node;
}

// Its tensor held by `holders` handles, its buffer by that tensor alone, no graph.
bool held_alone(const Tensor& g, long holders = 1) {
  return g.impl().use_count() == holders && g.storage().use_count() == 1 && !g.requires_grad();
}

// Dense and whole: one buffer of exactly its elements, in order.
bool dense_whole(const Tensor& g) {
  return g.is_contiguous() && g.offset() == 0 &&
         g.storage()->nbytes() == static_cast<size_t>(g.numel()) * g.element_size();
}

// Private and dense and whole: it can become .grad as it is. `holders`: 2 for a leaf's lent .grad.
bool private_dense(const Tensor& g, long holders = 1) { return held_alone(g, holders) && dense_whole(g); }
bool private_view(const Tensor& g, long holders) { return held_alone(g, holders) && non_overlapping(g); }
}  // namespace

// No two elements at one address (an expanded view has stride 0): ordered by stride, each dim
// must step past everything the smaller strides span. Runs on every gradient that meets
// another, so no allocation: a tensor of more than 16 dims is taken as overlapping (out of
// place, as before), which costs nothing real.
bool non_overlapping(const Tensor& g) {
  std::array<std::pair<int64_t, int64_t>, 16> dims;  // (stride, size) of the dims longer than 1
  size_t n = 0;
  for (int64_t d = 0; d < g.dim(); ++d) {
    if (g.sizes()[d] <= 1) continue;
    if (n == dims.size()) return false;
    dims[n++] = {g.strides()[d], g.sizes()[d]};
  }
  std::sort(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(n));
  int64_t span = 1;
  for (size_t i = 0; i < n; ++i) {
    if (dims[i].first < span) return false;
    span = dims[i].first * dims[i].second;
  }
  return true;
}

bool private_gradient(const Tensor& g) { return private_view(g, 1); }

const Shape& input_shape(size_t i) { return running(i, "input_shape").input_shapes()[i]; }
DType input_dtype(size_t i) { return running(i, "input_dtype").input_dtype(i); }
const Edge& input_edge(size_t i) { return running(i, "input_edge").next_edges()[i]; }

bool needs_input_grad(size_t i) { return !input_grad_mask || i >= input_grad_mask->size() || (*input_grad_mask)[i]; }

InputGradMask::InputGradMask(const std::vector<bool>* mask) : previous_(input_grad_mask) { input_grad_mask = mask; }
InputGradMask::~InputGradMask() { input_grad_mask = previous_; }

namespace {
Tensor take_pending(size_t i, bool (*usable)(const Tensor&, long holders)) {
  if (grad_enabled() || !pending_grads || i >= pending_grads->size()) return {};
  const PendingGrad& p = (*pending_grads)[i];
  if (!p.slot || p.recorded_walk || !p.slot->defined() || !usable(*p.slot, p.leaf_grad ? 2 : 1)) return {};
  Tensor g = std::move(*p.slot);
  *p.slot = Tensor();
  return g;
}
}  // namespace

Tensor take_pending_grad(size_t i) { return take_pending(i, private_dense); }
Tensor take_pending_grad_view(size_t i) { return take_pending(i, private_view); }

Tensor take_pending_grad_recorded(size_t i) {
  if (!grad_enabled() || !pending_grads || i >= pending_grads->size()) return {};
  const PendingGrad& p = (*pending_grads)[i];
  if (!p.slot || !p.recorded_walk || !p.slot->defined()) return {};
  Tensor g = std::move(*p.slot);
  *p.slot = Tensor();
  return g;
}

PendingGrads::PendingGrads(const std::vector<PendingGrad>* slots) : previous_(pending_grads) { pending_grads = slots; }
PendingGrads::~PendingGrads() { pending_grads = previous_; }

TensorList Node::apply(const TensorList& grads) {
  EMBER_CHECK(!released_, name_,
              ": backward through this part of the graph a second time, but its saved tensors were freed by the "
              "first backward. Pass retain_graph=true to the first backward (or grad) to walk it again.");
  for (const SavedTensor& st : saved_) {
    const Tensor& t = st.tensor();
    const uint64_t v = st.version();
    EMBER_CHECK(t.version() == v, name_, ": a tensor its backward needs (", t.str(),
                ") was modified in place after the forward (version ", v, " -> ", t.version(),
                "). Modify a clone() instead, or run the in-place update after backward.");
  }
  TensorList outputs;
  outputs.reserve(saved_outputs_.size());
  for (size_t i = 0; i < saved_outputs_.size(); ++i) {
    // Re-attach the output to this node so a backward that uses it is itself differentiable.
    Tensor o = saved_outputs_[i].detach();
    o.get()->requires_grad = true;
    o.get()->grad_fn = shared_from_this();
    o.get()->output_nr = static_cast<uint32_t>(i);
    outputs.push_back(o);
  }
  struct Running {  // input_shape / input_dtype / input_edge read this node's while its closure runs
    const Node* previous;
    explicit Running(const Node* n) : previous(running_node) { running_node = n; }
    ~Running() { running_node = previous; }
  } running_now(this);
  return fn_(grads, outputs);
}

void Node::release() {
  fn_ = nullptr;
  saved_.clear();
  saved_outputs_.clear();
  released_ = true;
}

AccumulateGrad::AccumulateGrad(const Tensor& leaf)
    : Node("AccumulateGrad", {}, {TensorMeta{leaf.sizes(), leaf.dtype(), leaf.device()}}), leaf_(leaf.impl()) {}

Tensor AccumulateGrad::leaf() const {
  auto p = leaf_.lock();
  return p ? Tensor(p) : Tensor();
}

Tensor AccumulateGrad::lendable_grad() const {
  Tensor leaf = this->leaf();
  if (!leaf.defined()) return {};
  Tensor g = leaf.grad();  // held by the leaf and by g
  const bool lendable = g.defined() && held_alone(g, 2) && dense_whole(g) && g.sizes() == leaf.sizes() &&
                        g.dtype() == leaf.dtype() && g.device() == leaf.device();
  return lendable ? g : Tensor();
}

bool AccumulateGrad::is_leaf_grad(const Tensor& g) const {
  Tensor leaf = this->leaf();
  return leaf.defined() && g.defined() && leaf.get()->grad == g.impl();
}

void AccumulateGrad::set_total(const Tensor& total) {
  Tensor leaf = this->leaf();
  if (!leaf.defined() || !total.defined() || leaf.get()->grad == total.impl()) return;  // .grad itself
  leaf.set_grad(private_dense(total) ? total : total.detach().clone());
}

TensorList AccumulateGrad::apply(const TensorList& grads) {
  Tensor leaf = this->leaf();
  if (!leaf.defined() || !grads[0].defined()) return {};
  // Under create_graph (grad mode on here) .grad keeps its graph, for a later derivative.
  // Otherwise .grad is private, so in-place work on it (clipping) touches nothing else: the
  // gradient itself where no one else holds it (most of a backward's: a copy saved per
  // parameter per step, a kernel launch each on the GPU), else a copy.
  Tensor g = grad_enabled() ? grads[0] : (private_dense(grads[0]) ? grads[0] : grads[0].detach().clone());
  Tensor old = leaf.grad();
  // A .grad held by the leaf alone (here: by the leaf and `old`) takes the new one in place,
  // as in PyTorch: a parameter that collects gradients from several backward calls (a GAN's
  // discriminator in its generator's step) gets no new buffer each time.
  const bool in_place = !grad_enabled() && old.defined() && held_alone(old, 2) && non_overlapping(old);
  leaf.set_grad(!old.defined() ? g : in_place ? accumulate_gradients_in_place(std::move(old), g) : accumulate_gradients(old, g));
  return {};
}

bool needs_grad(const TensorList& inputs) {
  if (!grad_enabled()) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}
bool needs_grad(const Tensor& a) { return grad_enabled() && a.defined() && a.requires_grad(); }
bool needs_grad(const Tensor& a, const Tensor& b) { return needs_grad(a) || needs_grad(b); }

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), t.get()->output_nr};
  // A leaf: reuse its accumulator while a graph holds it, so every edge into the leaf meets
  // at one node (and `grad` can capture there).
  auto acc = t.get()->grad_accumulator.lock();
  if (!acc) {
    acc = make_pooled<AccumulateGrad>(t);
    t.get()->grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const char* name, const TensorList& inputs, TensorList& outputs, BackwardFn fn, const TensorList& saved,
            bool save_outputs) {
  if (!needs_grad(inputs)) return;
  EdgeList edges;
  edges.reserve(inputs.size());
  for (const auto& t : inputs) edges.push_back(gradient_edge(t));
  MetaList meta;
  meta.reserve(outputs.size());
  for (auto& o : outputs) {
    // An op must not hand back an input's own impl; give the output an impl of its own so
    // attaching grad_fn never rewires the input.
    for (const auto& t : inputs)
      if (t.defined() && o.impl() == t.impl()) o = Tensor::make_view(o.storage(), o.sizes(), o.strides(), o.offset(), o.dtype());
    meta.push_back({o.sizes(), o.dtype(), o.device()});
  }
  auto node = make_pooled<Node>(name, std::move(edges), std::move(meta));
  node->input_shapes_.reserve(inputs.size());
  node->input_dtypes_.reserve(inputs.size());
  for (const auto& t : inputs) {  // written in place: a Shape moved is a Shape copied (small_vector.h)
    node->input_shapes_.push_back(t.defined() ? t.sizes() : Shape{});
    node->input_dtypes_.push_back(t.defined() ? t.dtype() : DType::f32);
  }
  node->fn_ = std::move(fn);
  node->saved_.reserve(saved.size() + (save_outputs ? outputs.size() : 0));
  for (const auto& t : saved)
    if (t.defined()) node->saved_.emplace_back(t);
  if (save_outputs) {
    for (const auto& o : outputs) {
      node->saved_outputs_.push_back(o.detach());
      node->saved_.emplace_back(node->saved_outputs_.back());
    }
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].is_floating_point()) continue;  // indices, masks: never differentiable
    outputs[i].get()->requires_grad = true;
    outputs[i].get()->grad_fn = node;
    outputs[i].get()->output_nr = static_cast<uint32_t>(i);
  }
}

}  // namespace ember::autograd
