// Losses: forward values against naive loops in double for every reduction, gradients by
// gradcheck and gradgradcheck in f64 (inputs and floating targets, non-contiguous inputs),
// PyTorch's special cases (bce's log clamp, gaussian_nll's variance clamp and shapes), and
// error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <numeric>
#include <vector>

#include "ember/ember.h"
#include "ember/ops/attention.h"
#include "ember/ops/loss.h"

using namespace ember;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, {.dtype = dt}, &g);
}
Tensor unif(const Shape& s, uint64_t seed, double lo, double hi, DType dt = DType::f64) {
  Generator g(seed);
  return uniform(s, lo, hi, {.dtype = dt}, &g);
}
Tensor leaf(const Tensor& t) {
  Tensor l = t.detach();
  l.requires_grad_(true);
  return l;
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol) {
  std::vector<double> g = got.to_vector<double>();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << i;
}

void expect_grads(const TensorFunction& f, const TensorList& inputs) {
  GradcheckResult r1 = gradcheck(f, inputs);
  EXPECT_TRUE(r1.ok) << r1.message;
  GradcheckResult r2 = gradgradcheck(f, inputs);
  EXPECT_TRUE(r2.ok) << r2.message;
}

// Checks a loss under all three reductions against per-element reference values.
void expect_reductions(const std::function<Tensor(Reduction)>& loss, const std::vector<double>& per_element,
                       double tol) {
  expect_near_all(loss(Reduction::none), per_element, tol);
  const double s = std::accumulate(per_element.begin(), per_element.end(), 0.0);
  EXPECT_EQ(loss(Reduction::sum).dim(), 0);
  EXPECT_NEAR(loss(Reduction::sum).item(), s, tol * std::max(1.0, std::abs(s)));
  EXPECT_NEAR(loss(Reduction::mean).item(), s / per_element.size(), tol * std::max(1.0, std::abs(s)));
}

const Reduction kAll[] = {Reduction::none, Reduction::mean, Reduction::sum};

}  // namespace

// ------------------------------------------------------------------------------------------
// mse / l1

TEST(LossOps, MseAndL1MatchReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = rnd({4, 3}, 1, dt).t(), t = rnd({3, 4}, 2, dt);  // x non-contiguous
    std::vector<double> xv = x.to_vector<double>(), tv = t.to_vector<double>(), sq, ab;
    for (size_t i = 0; i < xv.size(); ++i) {
      sq.push_back((xv[i] - tv[i]) * (xv[i] - tv[i]));
      ab.push_back(std::abs(xv[i] - tv[i]));
    }
    expect_reductions([&](Reduction r) { return mse_loss(x, t, r); }, sq, tol);
    expect_reductions([&](Reduction r) { return l1_loss(x, t, r); }, ab, tol);
  }
}

TEST(LossOps, MseAndL1Gradients) {
  Tensor x = leaf(rnd({4, 3}, 3).t()), t = leaf(rnd({3, 4}, 4));
  for (Reduction r : kAll) {
    expect_grads([r](const TensorList& in) { return mse_loss(in[0], in[1], r); }, {x, t});
    expect_grads([r](const TensorList& in) { return l1_loss(in[0], in[1], r); }, {x, t});
  }
}

TEST(LossOps, MseAndL1Errors) {
  Tensor x = rnd({3, 4}, 1, DType::f32);
  EXPECT_THROW(mse_loss(x, rnd({4, 3}, 2, DType::f32)), Error);
  EXPECT_THROW(l1_loss(x, rnd({1, 4}, 2, DType::f32)), Error);
  EXPECT_THROW(mse_loss(ones({3}, {.dtype = DType::i64}), ones({3}, {.dtype = DType::i64})), Error);
  try {
    mse_loss(x, rnd({4, 3}, 2, DType::f32));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mse_loss"), std::string::npos);
    EXPECT_NE(m.find("[4, 3]"), std::string::npos);
    EXPECT_NE(m.find("[3, 4]"), std::string::npos);
  }
}

// ------------------------------------------------------------------------------------------
// binary cross entropy

TEST(LossOps, BinaryCrossEntropyMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor p = unif({3, 5}, 10, 0.01, 0.99, dt), t = unif({3, 5}, 11, 0.0, 1.0, dt);
    std::vector<double> pv = p.to_vector<double>(), tv = t.to_vector<double>(), ref;
    for (size_t i = 0; i < pv.size(); ++i)
      ref.push_back(-(tv[i] * std::log(pv[i]) + (1 - tv[i]) * std::log(1 - pv[i])));
    expect_reductions([&](Reduction r) { return binary_cross_entropy(p, t, r); }, ref, tol);
  }
  // p = 0 or 1: the logs are clamped at -100, so the loss stays finite; the gradient too
  Tensor p = tensor({0.0, 1.0, 0.0, 1.0}, {4}, {.dtype = DType::f64});
  Tensor t = tensor({1.0, 0.0, 0.0, 1.0}, {4}, {.dtype = DType::f64});
  expect_near_all(binary_cross_entropy(p, t, Reduction::none), {100, 100, 0, 0}, 1e-12);
  Tensor pl = leaf(p);
  Tensor g = grad({binary_cross_entropy(pl, t, Reduction::sum)}, {pl})[0];
  for (double v : g.to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
  EXPECT_LT(g.to_vector<double>()[0], -1e6);  // pushes p = 0 up when t = 1
}

TEST(LossOps, BinaryCrossEntropyWithLogitsMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = mul(rnd({4, 3}, 12, dt), 3.0), t = unif({4, 3}, 13, 0.0, 1.0, dt);
    std::vector<double> xv = x.to_vector<double>(), tv = t.to_vector<double>(), ref;
    for (size_t i = 0; i < xv.size(); ++i) {
      const double s = 1 / (1 + std::exp(-xv[i]));
      ref.push_back(-(tv[i] * std::log(s) + (1 - tv[i]) * std::log(1 - s)));
    }
    expect_reductions([&](Reduction r) { return binary_cross_entropy_with_logits(x, t, r); }, ref, tol);
  }
  // large logits: finite and exact (a naive sigmoid-then-log would give inf)
  Tensor x = tensor({200.0, -200.0, 200.0, -200.0}, {4}, {.dtype = DType::f32});
  Tensor t = tensor({1.0, 0.0, 0.0, 1.0}, {4}, {.dtype = DType::f32});
  expect_near_all(binary_cross_entropy_with_logits(x, t, Reduction::none), {0, 0, 200, 200}, 1e-6);
}

TEST(LossOps, BinaryCrossEntropyGradients) {
  Tensor p = leaf(unif({4, 3}, 20, 0.05, 0.95).t()), t = leaf(unif({3, 4}, 21, 0.0, 1.0));
  Tensor x = leaf(rnd({4, 3}, 22).t());
  for (Reduction r : kAll) {
    expect_grads([r](const TensorList& in) { return binary_cross_entropy(in[0], in[1], r); }, {p, t});
    expect_grads([r](const TensorList& in) { return binary_cross_entropy_with_logits(in[0], in[1], r); }, {x, t});
  }
}

TEST(LossOps, BinaryCrossEntropyErrors) {
  Tensor t = zeros({3});
  EXPECT_THROW(binary_cross_entropy(tensor({0.5, 1.5, 0.2}), t), Error);   // not a probability
  EXPECT_THROW(binary_cross_entropy(tensor({0.5, -0.1, 0.2}), t), Error);
  EXPECT_THROW(binary_cross_entropy(tensor({0.5, 0.1}), t), Error);        // shapes
  EXPECT_THROW(binary_cross_entropy_with_logits(rnd({3, 1}, 1, DType::f32), t), Error);
}

// ------------------------------------------------------------------------------------------
// cross entropy

namespace {
// -log_softmax(logits)[target] with the class dim 1 of [N, C, rest] (or 0 of [C]).
std::vector<double> ref_cross_entropy(const Tensor& logits, const Tensor& target) {
  const bool one = logits.dim() == 1;
  const int64_t N = one ? 1 : logits.size(0), C = one ? logits.size(0) : logits.size(1);
  const int64_t S = logits.numel() / (N * C);
  std::vector<double> lv = logits.to_vector<double>();
  std::vector<int64_t> tv = target.to_vector<int64_t>();
  std::vector<double> out;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s) {
      double m = -INFINITY, z = 0;
      for (int64_t c = 0; c < C; ++c) m = std::max(m, lv[(n * C + c) * S + s]);
      for (int64_t c = 0; c < C; ++c) z += std::exp(lv[(n * C + c) * S + s] - m);
      out.push_back(-(lv[(n * C + tv[n * S + s]) * S + s] - m - std::log(z)));
    }
  return out;
}
}  // namespace

TEST(LossOps, CrossEntropyMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor logits = mul(rnd({5, 4}, 30, dt), 2.0);
    Tensor target = tensor({0, 3, 1, 1, 2}, {5}, {.dtype = DType::i64});
    expect_reductions([&](Reduction r) { return cross_entropy(logits, target, r); }, ref_cross_entropy(logits, target),
                      tol);
    // [N, C, d1, d2] with [N, d1, d2] targets (i32 too)
    Tensor l4 = rnd({2, 3, 2, 2}, 31, dt);
    Generator g(32);
    Tensor t4 = randint(0, 3, {2, 2, 2}, {.dtype = DType::i64}, &g);
    expect_reductions([&](Reduction r) { return cross_entropy(l4, t4, r); }, ref_cross_entropy(l4, t4), tol);
    expect_near_all(cross_entropy(l4, t4.to(DType::i32), Reduction::none), ref_cross_entropy(l4, t4), tol);
    EXPECT_EQ(cross_entropy(l4, t4, Reduction::none).sizes(), (Shape{2, 2, 2}));
    // unbatched logits [C] with a 0-dim target; non-contiguous logits
    Tensor l1 = rnd({4}, 33, dt);
    Tensor t0 = full({}, 2, {.dtype = DType::i64});
    expect_near_all(cross_entropy(l1, t0, Reduction::none), ref_cross_entropy(l1, t0), tol);
    Tensor lt = rnd({4, 5}, 34, dt).t();
    expect_near_all(cross_entropy(lt, target, Reduction::none), ref_cross_entropy(lt, target), tol);
  }
}

TEST(LossOps, CrossEntropyGradients) {
  Tensor logits = leaf(rnd({4, 3}, 40).t());  // [3, 4], non-contiguous
  Tensor target = tensor({3, 0, 2}, {3}, {.dtype = DType::i64});
  for (Reduction r : kAll)
    expect_grads([&, r](const TensorList& in) { return cross_entropy(in[0], target, r); }, {logits});
  Tensor l4 = leaf(rnd({2, 3, 2}, 41));
  Tensor t4 = tensor({0, 2, 1, 1}, {2, 2}, {.dtype = DType::i64});
  expect_grads([&](const TensorList& in) { return cross_entropy(in[0], t4); }, {l4});
  // the gradient of the mean is (softmax - onehot) / N
  Tensor gl = grad({cross_entropy(logits, target)}, {logits})[0];
  std::vector<double> sm = softmax(logits, 1).to_vector<double>(), gv = gl.to_vector<double>();
  std::vector<int64_t> tv = target.to_vector<int64_t>();
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t c = 0; c < 4; ++c)
      EXPECT_NEAR(gv[n * 4 + c], (sm[n * 4 + c] - (tv[n] == c ? 1.0 : 0.0)) / 3, 1e-12);
}

TEST(LossOps, CrossEntropyErrors) {
  Tensor logits = rnd({3, 4}, 1, DType::f32);
  auto idx = [](std::initializer_list<double> v, Shape s) { return tensor(v, s, {.dtype = DType::i64}); };
  EXPECT_THROW(cross_entropy(logits, idx({0, 4, 1}, {3})), Error);   // class index out of range
  EXPECT_THROW(cross_entropy(logits, idx({0, -1, 1}, {3})), Error);
  EXPECT_THROW(cross_entropy(logits, idx({0, 1}, {2})), Error);       // target shape
  EXPECT_THROW(cross_entropy(logits, idx({0, 1, 2}, {3, 1})), Error);
  EXPECT_THROW(cross_entropy(logits, tensor({0, 1, 2}, {3})), Error);  // float target
  EXPECT_THROW(cross_entropy(ones({3, 4}, {.dtype = DType::i64}), idx({0, 1, 2}, {3})), Error);
  try {
    cross_entropy(logits, idx({0, 7, 1}, {3}));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cross_entropy"), std::string::npos);
    EXPECT_NE(m.find("7"), std::string::npos);
    EXPECT_NE(m.find("out of range"), std::string::npos);
  }
  try {
    cross_entropy(logits, idx({0, 1}, {2}));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[2]"), std::string::npos);
    EXPECT_NE(m.find("[3, 4]"), std::string::npos);
  }
}

// ------------------------------------------------------------------------------------------
// gaussian negative log likelihood

namespace {
// var_of(i) gives the variance index for element i.
template <typename F>
std::vector<double> ref_gaussian_nll(const Tensor& x, const Tensor& t, const Tensor& var, bool full, double eps,
                                     F var_of) {
  std::vector<double> xv = x.to_vector<double>(), tv = t.to_vector<double>(), vv = var.to_vector<double>(), out;
  for (size_t i = 0; i < xv.size(); ++i) {
    const double v = std::max(vv[var_of(i)], eps);
    double l = 0.5 * (std::log(v) + (xv[i] - tv[i]) * (xv[i] - tv[i]) / v);
    if (full) l += 0.5 * std::log(2 * std::numbers::pi);
    out.push_back(l);
  }
  return out;
}
}  // namespace

TEST(LossOps, GaussianNllMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = rnd({3, 4}, 50, dt), t = rnd({3, 4}, 51, dt), v = unif({3, 4}, 52, 0.2, 2.0, dt);
    for (bool full : {false, true})
      expect_reductions([&](Reduction r) { return gaussian_nll_loss(x, t, v, full, 1e-6, r); },
                        ref_gaussian_nll(x, t, v, full, 1e-6, [](size_t i) { return i; }), tol);
    // one variance per row: [3] or [3, 1]
    Tensor vr = unif({3}, 53, 0.2, 2.0, dt);
    expect_near_all(gaussian_nll_loss(x, t, vr, false, 1e-6, Reduction::none),
                    ref_gaussian_nll(x, t, vr, false, 1e-6, [](size_t i) { return i / 4; }), tol);
    expect_near_all(gaussian_nll_loss(x, t, vr.unsqueeze(1), false, 1e-6, Reduction::none),
                    ref_gaussian_nll(x, t, vr, false, 1e-6, [](size_t i) { return i / 4; }), tol);
    // variances below eps are clamped to eps
    Tensor vs = tensor({1e-9, 0.0, 0.5, 2.0}, {4}, {.dtype = dt});
    Tensor x4 = x[0], t4 = t[0];
    expect_near_all(gaussian_nll_loss(x4, t4, vs, false, 1e-3, Reduction::none),
                    ref_gaussian_nll(x4, t4, vs, false, 1e-3, [](size_t i) { return i; }), tol);
  }
}

TEST(LossOps, GaussianNllGradients) {
  Tensor x = leaf(rnd({4, 3}, 60).t()), t = leaf(rnd({3, 4}, 61));
  Tensor v = leaf(unif({3, 4}, 62, 0.3, 2.0)), vr = leaf(unif({3}, 63, 0.3, 2.0));
  for (Reduction r : kAll)
    expect_grads([r](const TensorList& in) { return gaussian_nll_loss(in[0], in[1], in[2], false, 1e-6, r); },
                 {x, t, v});
  expect_grads([](const TensorList& in) { return gaussian_nll_loss(in[0], in[1], in[2], true); }, {x, t, vr});
  // The clamp at eps is not differentiated: the gradient in var is that of the formula at the
  // clamped value, as if var were not clamped.
  Tensor vs = leaf(tensor({1e-9, 0.5}, {2}, {.dtype = DType::f64}));
  Tensor xs = tensor({0.3, 0.3}, {2}, {.dtype = DType::f64}), ts = zeros({2}, {.dtype = DType::f64});
  Tensor gv = grad({gaussian_nll_loss(xs, ts, vs, false, 1e-2, Reduction::sum)}, {vs})[0];
  auto want = [](double v) { return 0.5 * (1 / v - 0.09 / (v * v)); };
  EXPECT_NEAR(gv.to_vector<double>()[0], want(1e-2), 1e-9);
  EXPECT_NEAR(gv.to_vector<double>()[1], want(0.5), 1e-12);
}

TEST(LossOps, GaussianNllErrors) {
  Tensor x = rnd({3, 4}, 1, DType::f32), t = rnd({3, 4}, 2, DType::f32);
  EXPECT_THROW(gaussian_nll_loss(x, t, ones({4})), Error);       // not [3] or [3, 4] or [3, 1]
  EXPECT_THROW(gaussian_nll_loss(x, t, ones({3, 2})), Error);
  EXPECT_THROW(gaussian_nll_loss(x, rnd({4, 3}, 3, DType::f32), ones({3, 4})), Error);
  EXPECT_THROW(gaussian_nll_loss(x, t, tensor({1, -0.5, 1}, {3})), Error);  // negative variance
  try {
    gaussian_nll_loss(x, t, ones({4}));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("gaussian_nll_loss"), std::string::npos);
    EXPECT_NE(m.find("[4]"), std::string::npos);
  }
}
