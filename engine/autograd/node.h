// The autograd graph. Each result of a differentiable op points to a Node; the Node holds the
// op's backward (a closure written with ordinary ops, so it can itself be differentiated),
// the tensors it saved (with their versions at save time) and an Edge to each input's Node.
//
// An op records itself with `record`:
//
//   Tensor y = ...forward kernel...;
//   autograd::record("mul", {a, b}, y, [a, b](const TensorList& g, const TensorList&) {
//     return TensorList{g[0] * b, g[1] * a};
//   }, /*saved=*/{a, b});
//
// `saved` lists the tensors the closure reads; the engine checks their versions before it
// runs the closure, so modifying one in place is an error naming the op, never a wrong
// gradient. A backward that needs the op's own output asks for it with `save_outputs`: the
// node keeps its outputs without a reference cycle and hands them to the closure as the
// second argument.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/engine/inline_function.h"
#include "ember/engine/tensor.h"

namespace ember::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: the input needs no gradient
  uint32_t input_nr = 0;       // which output of `node` the gradient flows into
  bool valid() const { return node != nullptr; }
};

// Shape, dtype and device of one output: zeros for an output that got no gradient, and a
// check that every backward returns gradients of the right shape.
struct TensorMeta {
  Shape sizes;
  DType dtype = DType::f32;
  Device device;
};

// A node's lists, inline for the common op (one output, up to three inputs) so that recording
// an op allocates the node and nothing else for them (small_vector.h).
using EdgeList = SmallVector<Edge, 3>;
using MetaList = SmallVector<TensorMeta, 1>;
using ShapeList = SmallVector<Shape, 3>;

// grads: one per output (zeros where an output received none). outputs: the node's outputs,
// re-attached to this node, when recorded with save_outputs (else empty).
// Returns one gradient per input; an undefined Tensor means "no gradient".
// Move-only, with room inside for the closures ops record (inline_function.h): 144 bytes hold two
// shapes and a flag (sum's, reshape's) or three tensors, their flags and two constants.
using BackwardFn = InlineFunction<TensorList(const TensorList& grads, const TensorList& outputs), 144>;

// One tensor a backward reads, with its storage's version when it was saved (checked before the
// backward runs). While it lives, its storage counts one more backward holder
// (Storage::backward_holders).
class SavedTensor {
 public:
  explicit SavedTensor(const Tensor& t) : tensor_(t), version_(t.version()) { t.storage()->add_backward_holder(); }
  SavedTensor(SavedTensor&& o) noexcept : tensor_(std::move(o.tensor_)), version_(o.version_) {}
  SavedTensor(const SavedTensor&) = delete;
  SavedTensor& operator=(const SavedTensor&) = delete;
  SavedTensor& operator=(SavedTensor&&) = delete;
  ~SavedTensor() {
    if (tensor_.defined()) tensor_.storage()->remove_backward_holder();
  }
  const Tensor& tensor() const { return tensor_; }
  uint64_t version() const { return version_; }

 private:
  Tensor tensor_;  // undefined once moved from
  uint64_t version_;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node(std::string name, EdgeList next_edges, MetaList output_meta);
  virtual ~Node() = default;

  const std::string& name() const { return name_; }
  const EdgeList& next_edges() const { return next_edges_; }
  const MetaList& output_meta() const { return output_meta_; }
  size_t num_outputs() const { return output_meta_.size(); }
  uint64_t sequence_nr() const { return sequence_nr_; }
  bool released() const { return released_; }
  const ShapeList& input_shapes() const { return input_shapes_; }
  DType input_dtype(size_t i) const { return input_dtypes_[i]; }

  // Runs the backward. Throws if the node was released or a saved tensor changed.
  virtual TensorList apply(const TensorList& grads);
  // Frees the closure and saved tensors (after a backward without retain_graph).
  virtual void release();

 protected:
  std::string name_;
  EdgeList next_edges_;
  MetaList output_meta_;
  ShapeList input_shapes_;
  SmallVector<DType, 3> input_dtypes_;
  uint64_t sequence_nr_;
  bool released_ = false;

 private:
  friend void record(const char*, const TensorList&, TensorList&, BackwardFn, const TensorList&, bool);
  BackwardFn fn_;
  SmallVector<SavedTensor, 3> saved_;
  TensorList saved_outputs_;                           // detached aliases of the outputs
};

// The sink of a leaf that requires grad: accumulates into leaf.grad.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(const Tensor& leaf);
  TensorList apply(const TensorList& grads) override;
  void release() override {}
  Tensor leaf() const;  // undefined if the leaf has died

  // For a walk without create_graph: a second handle on the leaf's .grad where .grad would take
  // the new gradient in place anyway (held by the leaf alone, dense, of the leaf's shape, dtype
  // and device, not requiring grad); undefined otherwise. The walk lends it to the node that
  // brings the leaf's first gradient, whose closure may add into it (take_pending_grad): a GAN's
  // discriminator, whose .grad holds its own step's gradient when its generator's step
  // backpropagates through it, gets its weight gradients added by the GEMM, not by an add after.
  // .grad stays on the leaf all along, so a walk that fails midway loses nothing.
  Tensor lendable_grad() const;
  // Whether g is the leaf's .grad itself (the same tensor, not a copy).
  bool is_leaf_grad(const Tensor& g) const;
  // Makes `total`, a gradient that already includes the lent .grad, the leaf's .grad: nothing to
  // do where it is .grad itself.
  void set_total(const Tensor& total);

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// a + b for two gradients of one tensor, recorded like any op when grad mode is on (under
// create_graph); and waiting + g written into waiting, a gradient no one else can see (walks
// without create_graph; waiting may be a view). The walker's calls up into ops, both defined in
// engine.cpp.
Tensor accumulate_gradients(const Tensor& a, const Tensor& b);
Tensor accumulate_gradients_in_place(Tensor waiting, const Tensor& g);

// True when grad mode is on and some input requires grad: the op must record itself.
bool needs_grad(const TensorList& inputs);
bool needs_grad(const Tensor& a);
bool needs_grad(const Tensor& a, const Tensor& b);

// Where a gradient for `t` flows: its grad_fn, its leaf accumulator, or nowhere.
Edge gradient_edge(const Tensor& t);

// Inside a backward closure: whether the walk running it uses the gradient of input i, i.e.
// input i's edge leads to a node the walk runs (grad() runs only the nodes that lead to the
// inputs it differentiates). A closure skips the gradients nobody uses, as PyTorch's
// needs_input_grad: linear's weight and bias gradients while grad() differentiates only the
// input (the score of a DDE). True outside a walk.
bool needs_input_grad(size_t i);

// What a backward closure captures to decide whether it computes input i's gradient: the input
// required grad when the op ran, and (tested when the backward runs) the walk uses it.
//   record("mul", {a, b}, y, [a, b, ra = input_grad(a, 0), rb = input_grad(b, 1)](...) {
//     return TensorList{ra ? mul(g[0], b) : Tensor(), rb ? mul(g[0], a) : Tensor()};
//   }, {a, b});
// Eight bytes, so that a closure capturing three tensors, three of these and two constants
// stays small inside its node (BackwardFn's 144 bytes).
struct InputGrad {
  bool required;
  uint32_t index;
  explicit operator bool() const { return required && needs_input_grad(index); }
};
inline InputGrad input_grad(const Tensor& t, size_t i) {
  return {t.defined() && t.requires_grad(), static_cast<uint32_t>(i)};
}

// Inside a backward closure: the shape and dtype input i had when the op ran, kept by the node.
// A backward that needs no more of an input than these (add's gradient summed back over the
// dims it was broadcast along, cat's cast back to each input's dtype) reads them here rather
// than capturing the input, which would keep the input's memory alive until the backward.
const Shape& input_shape(size_t i);
DType input_dtype(size_t i);
// Inside a backward closure: where input i's gradient flows (its grad_fn and output number, its
// leaf's accumulator, or nowhere), so that a tensor the closure rebuilds from a saved copy can
// stand in for the input in a graph the backward records (narrow_saved.h).
const Edge& input_edge(size_t i);

// Set by the engine around one node's backward; restores the previous mask when it ends.
class InputGradMask {
 public:
  explicit InputGradMask(const std::vector<bool>* mask);
  ~InputGradMask();
  InputGradMask(const InputGradMask&) = delete;
  InputGradMask& operator=(const InputGradMask&) = delete;

 private:
  const std::vector<bool>* previous_;
};

// Inside a backward closure of a walk without create_graph: the gradient already waiting for
// input i's edge (delivered there by a node that ran before), handed over so that the closure
// adds its own contribution into it in place, e.g. a GEMM with beta = 1 where a separate add
// would follow. Handed over only when no one else can see it (held by the walk alone, dense,
// not requiring grad); undefined otherwise, and always under create_graph. A closure that takes
// it must return, for input i, a gradient that includes it (the walk then stores that one as
// it is, with nothing to add). matmul's and linear's backwards take it (ops/linalg.cpp).
Tensor take_pending_grad(size_t i);
// The same, but the gradient may be a view into part of a buffer no one else holds, such as the
// slice of its output's gradient that cat's backward left for an input once the other slices
// were consumed (a DenseNet layer's input meets its own layer's gradient there): the closure
// checks the layout (the view's strides) and writes only inside it. Its elements never overlap.
Tensor take_pending_grad_view(size_t i);
// Under create_graph: the gradient waiting for input i's edge, whatever it is, for the closure to
// fold into one recorded op that adds it (a product plus the waiting gradient as one addmm,
// where a matmul and an add would be recorded). It is read, never written. Undefined where none
// waits, and always without create_graph (take_pending_grad is the in-place hand-over there).
// The same rule: the closure's gradient for input i must include it.
Tensor take_pending_grad_recorded(size_t i);

// A gradient no one else can see: its tensor held only by the caller (the walk's list or a
// waiting slot), its buffer by that tensor alone, not requiring grad, and no two of its elements
// at one address. Writing inside it in place touches nothing anyone else can read.
bool private_gradient(const Tensor& g);

// No two of t's elements at one address (an expanded view, a stride of 0, has such pairs).
bool non_overlapping(const Tensor& t);

// Where one input's gradient waits while a node's backward runs: the slot (nullptr: none, or not
// to be handed over), whether what waits there is a leaf's .grad lent by the walk
// (AccumulateGrad::lendable_grad), which the leaf holds too: it is private all the same, and
// whether the walk records (create_graph), where the waiting gradient is part of the new graph.
struct PendingGrad {
  Tensor* slot = nullptr;
  bool leaf_grad = false;
  bool recorded_walk = false;  // create_graph: only take_pending_grad_recorded hands it over
};

// Set by the engine around one node's backward, one per input edge; restores the previous on exit.
class PendingGrads {
 public:
  explicit PendingGrads(const std::vector<PendingGrad>* slots);
  ~PendingGrads();
  PendingGrads(const PendingGrads&) = delete;
  PendingGrads& operator=(const PendingGrads&) = delete;

 private:
  const std::vector<PendingGrad>* previous_;
};

// Records `outputs` as the results of one op (no-op unless needs_grad(inputs)).
void record(const char* name, const TensorList& inputs, TensorList& outputs, BackwardFn fn,
            const TensorList& saved = {}, bool save_outputs = false);
inline void record(const char* name, const TensorList& inputs, Tensor& output, BackwardFn fn,
                   const TensorList& saved = {}, bool save_outputs = false) {
  TensorList outs{output};
  record(name, inputs, outs, std::move(fn), saved, save_outputs);
  output = outs[0];
}

}  // namespace ember::autograd
