// Reductions over any set of dims (negative dims count from the end), with keepdim.
// An empty dims list reduces over every dim.
#pragma once
#include <utility>

#include "ember/engine/tensor.h"

namespace ember {

Tensor sum(const Tensor& a);
Tensor sum(const Tensor& a, const Shape& dims, bool keepdim = false);
// For backward closures: acc + m.sum(0) for a 2-D m, written into acc (a gradient handed over by
// the walk, autograd::take_pending_grad: a linear layer's bias gradient added where one waits),
// rounded as the sum and then the add would be. Undefined acc: m.sum(0). Not recorded.
Tensor sum_rows_into(Tensor acc, const Tensor& m);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, const Shape& dims, bool keepdim = false);
// Sums a broadcast gradient back to `shape` (the inverse of broadcasting `shape` to g's shape).
Tensor sum_to_size(const Tensor& g, const Shape& shape);
Tensor var(const Tensor& a, const Shape& dims = {}, bool unbiased = true, bool keepdim = false);
Tensor std(const Tensor& a, const Shape& dims = {}, bool unbiased = true, bool keepdim = false);
// Values and indices (i64) along one dim; the gradient goes to the first maximal element.
std::pair<Tensor, Tensor> max(const Tensor& a, int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a);  // over everything
Tensor min(const Tensor& a);
Tensor amax(const Tensor& a, const Shape& dims, bool keepdim = false);  // gradient split evenly among ties
Tensor amin(const Tensor& a, const Shape& dims, bool keepdim = false);
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor logsumexp(const Tensor& a, const Shape& dims, bool keepdim = false);
// p-norm over dims (p = 2 by default; p = 1, inf allowed). Gradient at 0 is 0 for p = 2.
Tensor norm(const Tensor& a, double p = 2.0, const Shape& dims = {}, bool keepdim = false);
Tensor cumsum(const Tensor& a, int64_t dim);
Tensor prod(const Tensor& a, const Shape& dims = {}, bool keepdim = false);

}  // namespace ember
