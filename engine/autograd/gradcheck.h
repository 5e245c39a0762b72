// gradcheck / gradgradcheck: compare analytic derivatives with central differences in f64.
// Inputs must be f64 tensors; the function may return any f64 tensor (it is reduced against a
// random projection, so every output element is checked).
#pragma once
#include <functional>
#include <string>

#include "ember/engine/tensor.h"

namespace ember {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 1234;  // for the random output projections
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // which input, which element, analytic vs numeric, when !ok
  explicit operator bool() const { return ok; }
};

using TensorFunction = std::function<Tensor(const TensorList&)>;

// First order: d<f(x), u>/dx by backward equals central differences, for every element.
GradcheckResult gradcheck(const TensorFunction& f, const TensorList& inputs, GradcheckOptions opts = {});
// Second order: gradcheck of x -> d<f(x), u>/dx (the backward, recorded with create_graph),
// so the backward's own backward is checked.
GradcheckResult gradgradcheck(const TensorFunction& f, const TensorList& inputs, GradcheckOptions opts = {});

}  // namespace ember
