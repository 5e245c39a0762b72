// Linear algebra: matrix products with NumPy-style batch broadcasting, and the small dense
// factorizations Glow's invertible 1x1 convolution needs.
#pragma once
#include <tuple>

#include "ember/engine/tensor.h"

namespace ember {

// As numpy.matmul: 1-D operands are promoted to a row / column and the added dim removed;
// leading (batch) dims broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor mm(const Tensor& a, const Tensor& b);   // 2-D only
Tensor bmm(const Tensor& a, const Tensor& b);  // 3-D only, same batch
// x @ weight^T + bias, with x of shape [..., in], weight [out, in], bias [out] (optional).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor outer(const Tensor& a, const Tensor& b);
Tensor dot(const Tensor& a, const Tensor& b);

}  // namespace ember
