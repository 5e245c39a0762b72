// Functional helpers over a function f: TensorList -> Tensor(s), all built on `grad`.
#pragma once
#include <functional>

#include "ember/engine/autograd/engine.h"
#include "ember/engine/random.h"

namespace ember {

using Function = std::function<Tensor(const TensorList&)>;

// Vector-Jacobian product: returns {f(x), v^T J}. With create_graph the result is differentiable.
std::pair<Tensor, TensorList> vjp(const Function& f, const TensorList& x, const Tensor& v, bool create_graph = false);
// Jacobian-vector product by the double-vjp trick: J v = d/du (u^T J)·v, with u a dummy.
std::pair<Tensor, Tensor> jvp(const Function& f, const TensorList& x, const TensorList& v, bool create_graph = false);
// Hessian-vector product of a scalar f.
std::pair<Tensor, TensorList> hvp(const Function& f, const TensorList& x, const TensorList& v,
                                  bool create_graph = false);
// Hutchinson's estimate of tr(d y/d x) for y = f(x) of x's shape: mean over `samples` Rademacher
// probes e of e^T (dy/dx) e. Differentiable when create_graph.
Tensor hutchinson_trace(const Tensor& y, const Tensor& x, int64_t samples = 1, bool create_graph = false,
                        Generator* gen = nullptr);
// Full Jacobian [f.numel, x.numel] and Hessian [x.numel, x.numel] for small inputs.
Tensor jacobian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x);
Tensor hessian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x);

}  // namespace ember
