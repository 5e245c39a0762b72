// The backward walker: reverse topological order over the recorded graph, gradient
// accumulation into leaves or capture for `grad`. Under create_graph the backward closures run
// with grad mode on, so the gradients they return carry a graph of their own.
#pragma once
#include "ember/engine/tensor.h"

namespace ember {

struct GradOptions {
  bool retain_graph = false;  // keep saved tensors for another walk (default: = create_graph)
  bool create_graph = false;  // record the backward itself, for higher derivatives
  bool allow_unused = false;  // an input the outputs do not depend on gets an undefined Tensor
};

// Accumulates d(sum_i <outputs[i], grad_outputs[i]>)/d(leaf) into every reachable leaf's .grad.
// A missing grad_output stands for ones and needs a one-element output.
void backward(const TensorList& outputs, const TensorList& grad_outputs = {}, bool retain_graph = false,
              bool create_graph = false);

// Returns d(sum_i <outputs[i], grad_outputs[i]>)/d(inputs[j]) without touching .grad.
TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs = {},
                GradOptions opts = {});

}  // namespace ember
