// The engine's own kernels: copy with broadcasting and dtype conversion, and fill. Views,
// factories, `to`, `contiguous` and the in-place methods stand on these two.
#pragma once
#include "ember/engine/tensor.h"

namespace ember {

// dst[...] = convert(src[...]); src broadcasts to dst's shape. No autograd.
void copy_into(const Tensor& dst, const Tensor& src);
// dst[...] = value (converted to dst's dtype). No autograd.
void fill_tensor(const Tensor& dst, double value);

}  // namespace ember
