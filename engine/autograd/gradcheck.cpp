// Central differences in f64 against the analytic gradient of <f(x), u>, u a fixed random
// projection. Inputs may be non-contiguous views: an element is perturbed through its strides.
#include "ember/engine/autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "ember/engine/autograd/engine.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

namespace {

// Storage offsets (in elements) of every element of t, in row-major order.
std::vector<int64_t> element_offsets(const Tensor& t) {
  std::vector<int64_t> offs;
  offs.reserve(t.numel());
  Shape idx(t.dim(), 0);
  for (int64_t k = 0; k < t.numel(); ++k) {
    int64_t o = t.offset();
    for (int64_t d = 0; d < t.dim(); ++d) o += idx[d] * t.strides()[d];
    offs.push_back(o);
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.sizes()[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

double project(const Tensor& y, const Tensor& u) {
  std::vector<double> a = y.to_vector<double>(), b = u.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

GradcheckResult check(const TensorFunction& f, const TensorList& inputs, const GradcheckOptions& opts,
                      const char* what) {
  for (size_t i = 0; i < inputs.size(); ++i)
    EMBER_CHECK(!inputs[i].defined() || !inputs[i].is_floating_point() || inputs[i].dtype() == DType::f64, what,
                ": input ", i, " is ", inputs[i].str(), "; finite differences need f64 inputs");
  TensorList diff;  // inputs we differentiate
  std::vector<size_t> diff_pos;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad()) {
      diff.push_back(inputs[i]);
      diff_pos.push_back(i);
    }
  EMBER_CHECK(!diff.empty(), what, ": no input requires grad");

  Tensor y = f(inputs);
  EMBER_CHECK(y.dtype() == DType::f64, what, ": the function returned ", y.str(), "; expected f64");
  Generator gen(opts.seed);
  Tensor u = randn(y.sizes(), {.dtype = DType::f64}, &gen);
  TensorList analytic;
  if (y.requires_grad()) {
    analytic = grad({y}, diff, {u}, {.allow_unused = true});
  } else {
    analytic.resize(diff.size());
  }

  for (size_t j = 0; j < diff.size(); ++j) {
    const Tensor& x = diff[j];
    std::vector<double> a = analytic[j].defined() ? analytic[j].to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    double* base = static_cast<double*>(x.storage()->data());
    std::vector<int64_t> offs = element_offsets(x);
    for (int64_t k = 0; k < x.numel(); ++k) {
      double& e = base[offs[k]];
      const double orig = e;
      double fp, fm;
      {
        // Grad mode stays on: f may itself differentiate (a loss on a gradient, as in DDE).
        e = orig + opts.eps;
        fp = project(f(inputs), u);
        e = orig - opts.eps;
        fm = project(f(inputs), u);
        e = orig;
      }
      double numeric = (fp - fm) / (2 * opts.eps);
      if (!(std::abs(numeric - a[k]) <= opts.atol + opts.rtol * std::abs(numeric))) {
        std::ostringstream os;
        os << what << ": input " << diff_pos[j] << " (" << x.str() << "), element " << k << ": analytic " << a[k]
           << " vs numeric " << numeric;
        return {false, os.str()};
      }
    }
  }
  return {};
}

}  // namespace

GradcheckResult gradcheck(const TensorFunction& f, const TensorList& inputs, GradcheckOptions opts) {
  return check(f, inputs, opts, "gradcheck");
}

GradcheckResult gradgradcheck(const TensorFunction& f, const TensorList& inputs, GradcheckOptions opts) {
  // The function checked: x -> d<f(x), u>/dx, all inputs' gradients flattened and joined.
  // Its analytic gradient runs the backward of the backward.
  Tensor u;
  {
    NoGrad ng;
    Generator gen(opts.seed + 1);
    Tensor y = f(inputs);
    u = randn(y.sizes(), {.dtype = DType::f64}, &gen);
  }
  TensorFunction first = [&](const TensorList& xs) {
    TensorList diff;
    for (const auto& x : xs)
      if (x.defined() && x.requires_grad()) diff.push_back(x);
    Tensor y = f(xs);
    TensorList g;
    if (y.requires_grad()) {
      g = grad({y}, diff, {u}, {.create_graph = true, .allow_unused = true});
    } else {
      g.resize(diff.size());
    }
    TensorList flat;
    for (size_t i = 0; i < diff.size(); ++i) flat.push_back(g[i].defined() ? g[i].reshape({-1}) : zeros({diff[i].numel()}, {.dtype = DType::f64}));
    return cat(flat, 0);
  };
  return check(first, inputs, opts, "gradgradcheck");
}

}  // namespace ember
