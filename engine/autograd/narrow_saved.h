// A backward's copy of an activation, kept in BF16 where every product of the backward that
// reads it rounds it to BF16 anyway: under the `medium` precision the GPU's convolution kernels
// take BF16 operands, so the f32 image a conv saves for its weight gradient carries 16 bits
// that no kernel reads. Keeping the rounded copy instead halves what the step holds from the
// forward to the backward (PyTorch's bf16 autocast saves a conv's bf16 input for the same
// reason), and the backward computes what it computed from the original: the copy widened
// back to f32 is the value the kernel's own rounding would have made.
//
//   Tensor kept = autograd::narrow_for_backward(x, rounds_to_bf16);        // the forward
//   record("conv2d", {x, w, b}, y, [kept, ...](...) {
//     Tensor x = autograd::widen_saved(kept, 0);  // f32 again, standing in for input 0
//     ...
//   }, {kept, w});
//
// narrow_for_backward keeps x itself (no copy) unless all of these hold:
//   - rounds_to_bf16: the op's kernels round x to BF16 in each product of the backward that
//     reads it (the caller knows its kernels; conv: `medium`, f32, not a depthwise kernel);
//   - set_bf16_saved_activations (engine/precision.h) has not turned the copies off;
//   - grad mode is on and x is f32 and an activation, one that requires grad and is not a leaf
//     (a leaf, a parameter or a model's input, lives on with its owner: a copy adds memory);
//   - no backward holds x's storage already (Storage::backward_holders): the GroupNorm at the
//     head of a ResBlock keeps the block's input, which the skip convolution reads too;
//   - no two of x's elements share an address (non_overlapping; an expanded view's do), or the
//     copy would be larger than the memory x holds.
// What it cannot see is a backward recorded later that keeps x as well; then both stay, the
// copy adding half of x. The copy is the node's own, so changing x in place after the forward
// does not reach it and needs no version check.
//
// Under create_graph the widened tensor stands in for x in the graph the backward records: it
// carries x's gradient edge (x's grad_fn and output number; input_edge), so a derivative of the
// weight gradient with respect to x reaches x's producer, as DDE's and the EBMs' second-order
// losses need.
#pragma once
#include <cstddef>

#include "ember/engine/tensor.h"

namespace ember::autograd {

Tensor narrow_for_backward(const Tensor& x, bool rounds_to_bf16);

// Inside a backward closure: `kept` as input `input_index`'s dtype, re-attached to that input's
// gradient edge when it had been narrowed; `kept` itself otherwise.
Tensor widen_saved(const Tensor& kept, size_t input_index);

}  // namespace ember::autograd
