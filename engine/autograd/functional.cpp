#include "ember/engine/autograd/functional.h"

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

namespace {
TensorList prepared(const TensorList& x) {
  TensorList out;
  for (const auto& t : x) {
    // Differentiate with respect to fresh leaves that share x's data.
    Tensor l = t.detach();
    l.requires_grad_(true);
    out.push_back(l);
  }
  return out;
}
}  // namespace

std::pair<Tensor, TensorList> vjp(const Function& f, const TensorList& x, const Tensor& v, bool create_graph) {
  EnableGrad on;
  TensorList xs = create_graph ? x : prepared(x);
  Tensor y = f(xs);
  TensorList g = grad({y}, xs, {v}, {.retain_graph = create_graph, .create_graph = create_graph, .allow_unused = true});
  for (size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = zeros_like(xs[i]);
  return {create_graph ? y : y.detach(), g};
}

std::pair<Tensor, Tensor> jvp(const Function& f, const TensorList& x, const TensorList& v, bool create_graph) {
  EMBER_CHECK(x.size() == v.size(), "jvp: ", x.size(), " inputs but ", v.size(), " tangents");
  EnableGrad on;
  TensorList xs = create_graph ? x : prepared(x);
  Tensor y = f(xs);
  // The double-vjp trick: g(u) = u^T J is linear in u, so d<g(u), v>/du = J v.
  Tensor u = zeros_like(y);
  u.requires_grad_(true);
  TensorList g = grad({y}, xs, {u}, {.retain_graph = true, .create_graph = true, .allow_unused = true});
  TensorList outs, vs;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i].defined()) {
      outs.push_back(g[i]);
      vs.push_back(v[i]);
    }
  if (outs.empty()) return {y.detach(), zeros_like(y)};
  TensorList jv = grad(outs, {u}, vs, {.retain_graph = create_graph, .create_graph = create_graph, .allow_unused = true});
  Tensor r = jv[0].defined() ? jv[0] : zeros_like(y);
  return {create_graph ? y : y.detach(), r};
}

std::pair<Tensor, TensorList> hvp(const Function& f, const TensorList& x, const TensorList& v, bool create_graph) {
  EMBER_CHECK(x.size() == v.size(), "hvp: ", x.size(), " inputs but ", v.size(), " vectors");
  EnableGrad on;
  TensorList xs = create_graph ? x : prepared(x);
  Tensor y = f(xs);
  EMBER_CHECK(y.numel() == 1, "hvp: f must return one element, got shape ", shape_str(y.sizes()));
  TensorList g = grad({y}, xs, {}, {.retain_graph = true, .create_graph = true, .allow_unused = true});
  Tensor dot;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined()) continue;
    Tensor term = sum(mul(g[i], v[i]));
    dot = dot.defined() ? add(dot, term) : term;
  }
  TensorList h(xs.size());
  if (dot.defined() && dot.requires_grad())
    h = grad({dot}, xs, {}, {.retain_graph = create_graph, .create_graph = create_graph, .allow_unused = true});
  for (size_t i = 0; i < h.size(); ++i)
    if (!h[i].defined()) h[i] = zeros_like(xs[i]);
  return {create_graph ? y : y.detach(), h};
}

Tensor hutchinson_trace(const Tensor& y, const Tensor& x, int64_t samples, bool create_graph, Generator* gen) {
  EMBER_CHECK(y.sizes() == x.sizes(), "hutchinson_trace: y of shape ", shape_str(y.sizes()), " and x of shape ",
              shape_str(x.sizes()), " must match (the Jacobian must be square)");
  EMBER_CHECK(samples >= 1, "hutchinson_trace: samples must be >= 1");
  Tensor total;
  for (int64_t s = 0; s < samples; ++s) {
    // Rademacher probe: +-1 with equal probability has the lowest variance of the usual choices.
    Tensor e = sub(mul(bernoulli(full_like(x, 0.5).detach(), gen), 2.0), 1.0);
    bool last = s + 1 == samples;
    Tensor ej = grad({y}, {x}, {e}, {.retain_graph = create_graph || !last, .create_graph = create_graph})[0];
    Tensor est = sum(mul(ej, e));
    total = total.defined() ? add(total, est) : est;
  }
  return div(total, static_cast<double>(samples));
}

Tensor jacobian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  EnableGrad on;
  Tensor xs = x.detach();
  xs.requires_grad_(true);
  Tensor y = f(xs);
  const int64_t m = y.numel(), n = x.numel();
  Tensor J = zeros({m, n}, options_of(x));
  for (int64_t i = 0; i < m; ++i) {
    Tensor e = zeros_like(y);
    e.view({-1}).select(0, i).fill_(1.0);
    TensorList g = grad({y}, {xs}, {e}, {.retain_graph = true, .allow_unused = true});
    if (g[0].defined()) J.select(0, i).copy_(g[0].reshape({n}));
  }
  return J;
}

Tensor hessian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  return jacobian(
      [&](const Tensor& xi) {
        Tensor y = f(xi);
        EMBER_CHECK(y.numel() == 1, "hessian: f must return one element, got shape ", shape_str(y.sizes()));
        return grad({y}, {xi}, {}, {.create_graph = true})[0];
      },
      x);
}

}  // namespace ember
