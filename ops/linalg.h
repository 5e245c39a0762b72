// Linear algebra: matrix products with NumPy-style batch broadcasting, and the small dense
// factorizations Glow's invertible 1x1 convolution needs.
#pragma once
#include <tuple>
#include <utility>

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

// ---- small dense factorizations (Glow's invertible 1x1 convolution) ----
// All take [..., n, n] (leading dims are a batch), f32 or f64; they factor each matrix by LU
// with partial pivoting, accumulating in f64.

// A^{-1} for every matrix of the batch. A singular matrix (an exactly zero pivot, or a
// non-finite entry) is an ember::Error naming the batch index. Backward: -A^{-T} g A^{-T}.
Tensor inverse(const Tensor& a);
// (sign, log|det A|), each of shape [...]. A singular matrix gives (0, -inf), as NumPy does.
// Only logabsdet is differentiable (d/dA = A^{-T}, which needs A invertible); sign has no
// gradient.
std::pair<Tensor, Tensor> slogdet(const Tensor& a);
// det A = sign * exp(logabsdet), differentiable (d/dA = det A * A^{-T}) for invertible A.
Tensor det(const Tensor& a);
// (P, L, U) with A = P L U: P a permutation matrix (in a's dtype), L unit lower triangular,
// U upper triangular, each [..., n, n]; no separate unpack step is needed. Singular matrices
// factor too (a zero pivot column is left as is). NOT differentiable: the results carry no
// gradient (use inverse / slogdet / det where a gradient is needed).
std::tuple<Tensor, Tensor, Tensor> lu(const Tensor& a);

}  // namespace ember
