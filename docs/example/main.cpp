// Embedding ember: a small regression network written with raw parameter tensors, trained by
// plain gradient descent, then a double backward (a gradient of a gradient) through it.
//
//   f(x) = W2 softplus(W1 x + b1) + b2,   x in R^2, 16 hidden units
//
// 1. fit f to t(x) = sin(2 x0) + 0.5 x0 x1 on 128 points (mean squared error), printing
//    the loss as it falls;
// 2. compute the penalty P = sum over a batch of ||d f(x)/dx||^2 (the input gradient taken
//    with create_graph, so it is itself a recorded graph), and dP/d(W1, b1, W2) by a second
//    ember::grad — the double backward a gradient penalty or a DDE loss needs;
// 3. check one entry of dP/dW1 against a central difference.
//
// Exit code 0 only when the loss fell and the double-backward result is finite.
#include <ember/ember.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>

using namespace ember;

namespace {

struct Mlp {
  Tensor w1, b1, w2, b2;  // leaves that require grad
  TensorList params() const { return {w1, b1, w2, b2}; }
  Tensor operator()(const Tensor& x) const { return linear(softplus(linear(x, w1, b1)), w2, b2); }
};

// A leaf of the given shape with entries randn * scale.
Tensor init(const Shape& shape, double scale, Generator& gen) {
  Tensor t = randn(shape, {}, &gen) * scale;  // computed before requires_grad: no graph
  return t.requires_grad_(true);
}

// sum over the batch of ||d f(x)/dx||^2, as a differentiable function of the parameters.
Tensor input_gradient_penalty(const Mlp& f, const Tensor& x) {
  Tensor xs = x.detach().requires_grad_(true);
  Tensor y = f(xs);  // [B, 1]
  // d(sum_b f(x_b))/dx_b = d f(x_b)/dx_b, row by row. create_graph: the backward records ops.
  Tensor gx = grad({y.sum()}, {xs}, {}, {.create_graph = true})[0];  // [B, 2]
  return (gx * gx).sum();
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

int main() {
  try {
    Generator gen(2024);

    // ---- a tensor ----
    Tensor a = tensor({1.0, 2.0, 3.0, 4.0}, {2, 2});
    std::cout << "a       = " << a << "\n";
    std::cout << "a @ a^T = " << matmul(a, a.t()) << "\n\n";

    // ---- data: t(x) = sin(2 x0) + 0.5 x0 x1 on [-1, 1]^2 ----
    const int64_t n = 128;
    Tensor x = uniform({n, 2}, -1.0, 1.0, {}, &gen);
    Tensor x0 = x.select(1, 0), x1 = x.select(1, 1);
    Tensor target = (sin(x0 * 2.0) + x0 * x1 * 0.5).unsqueeze(1);  // [n, 1]

    // ---- the model: raw parameter tensors ----
    const int64_t hidden = 16;
    Mlp f{init({hidden, 2}, 1.0, gen), init({hidden}, 0.5, gen), init({1, hidden}, 0.25, gen), init({1}, 0.0, gen)};

    // ---- plain gradient descent ----
    const double lr = 0.1;
    const int steps = 400;
    TensorList params = f.params();  // handles sharing f's tensors: updating them updates f
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step <= steps; ++step) {
      Tensor loss = (f(x) - target).square().mean();
      TensorList g = grad({loss}, params);  // first order: no graph kept
      {
        NoGrad no_grad;  // the update itself is not part of any graph
        for (size_t i = 0; i < g.size(); ++i) params[i].add_(g[i], -lr);
      }
      const double l = loss.item();
      if (step == 0) first_loss = l;
      last_loss = l;
      if (step % 50 == 0) std::printf("step %4d  loss %.6f\n", step, l);
    }
    const bool loss_fell = std::isfinite(last_loss) && last_loss < 0.5 * first_loss;
    std::printf("loss %.6f -> %.6f (%s)\n\n", first_loss, last_loss, loss_fell ? "fell" : "DID NOT FALL");

    // ---- double backward: d/dtheta of sum_b ||d f(x_b)/dx_b||^2 ----
    Tensor xq = randn({8, 2}, {}, &gen);
    Tensor penalty = input_gradient_penalty(f, xq);
    // b2 does not change df/dx, so P does not depend on it: allow_unused gives it an
    // undefined gradient instead of an error.
    TensorList dp = grad({penalty}, params, {}, {.allow_unused = true});
    const char* names[] = {"W1", "b1", "W2", "b2"};
    bool finite = all_finite(penalty);
    std::printf("penalty P = sum ||df/dx||^2 = %.6f\n", penalty.item());
    for (size_t i = 0; i < dp.size(); ++i) {
      if (!dp[i].defined()) {
        std::cout << "dP/d" << names[i] << " = none (P does not depend on " << names[i] << ")\n";
        continue;
      }
      finite = finite && all_finite(dp[i]);
      std::cout << "dP/d" << names[i] << " = " << dp[i] << "\n";
    }
    finite = finite && dp[0].defined() && dp[1].defined() && dp[2].defined();

    // ---- a numerical check of one entry, dP/dW1[0, 0], by central differences ----
    {
      const double eps = 1e-2;
      auto penalty_at = [&](double delta) {
        Tensor w = f.w1.detach().clone();
        {
          NoGrad no_grad;
          Tensor bump = zeros({hidden, 2});
          bump.data<float>()[0] = static_cast<float>(delta);
          w.add_(bump);
        }
        Mlp g{w.requires_grad_(true), f.b1, f.w2, f.b2};
        return input_gradient_penalty(g, xq).item();
      };
      const double numeric = (penalty_at(eps) - penalty_at(-eps)) / (2 * eps);
      std::printf("dP/dW1[0,0]: double backward %.5f, central difference %.5f\n",
                  dp[0].to_vector<double>()[0], numeric);
    }

    std::printf("\n%s\n", loss_fell && finite ? "OK" : "FAILED");
    return loss_fell && finite ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ember_example: %s\n", e.what());
    return 2;
  }
}
