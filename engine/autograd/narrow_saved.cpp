#include "ember/engine/autograd/narrow_saved.h"

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/precision.h"
#include "ember/engine/storage.h"

namespace ember::autograd {

Tensor narrow_for_backward(const Tensor& x, bool rounds_to_bf16) {
  if (!rounds_to_bf16 || !bf16_saved_activations() || !grad_enabled() || !x.defined()) return x;
  if (x.dtype() != DType::f32 || !x.requires_grad() || x.is_leaf()) return x;
  if (x.storage()->backward_holders() > 0 || !non_overlapping(x)) return x;
  NoGrad no_grad;
  return x.detach().to(DType::bf16);
}

Tensor widen_saved(const Tensor& kept, size_t input_index) {
  const DType dtype = input_dtype(input_index);
  if (!kept.defined() || kept.dtype() == dtype) return kept;
  Tensor x;
  {
    NoGrad no_grad;
    x = kept.to(dtype);
  }
  // Only activations are narrowed, so the edge is the input's grad_fn (never a leaf's
  // accumulator, which a tensor cannot take as its grad_fn).
  const Edge& edge = input_edge(input_index);
  if (edge.valid()) {
    x.get()->requires_grad = true;
    x.get()->grad_fn = edge.node;
    x.get()->output_nr = edge.input_nr;
  }
  return x;
}

}  // namespace ember::autograd
