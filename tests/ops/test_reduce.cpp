// Reductions beyond sum/mean: var, std, max/min (with indices), amax/amin, argmax/argmin,
// logsumexp, norm, cumsum and prod. Forward values against naive loops over the elements,
// gradients by gradcheck and gradgradcheck in f64 (multi-dim reductions, keepdim both ways,
// non-contiguous inputs), special points (ties, zeros, -inf rows) and error cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "ember/ember.h"
#include "ember/kernels/cpu/parallel.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

// Sorted non-negative dims; empty = all.
std::vector<int64_t> norm_dims(const Shape& dims, int64_t nd) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < nd; ++d) out.push_back(d);
  } else {
    for (int64_t d : dims) out.push_back(d < 0 ? d + nd : d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The reduction groups of a (elements in row-major order within each group), in output order,
// and the output shape.
struct Groups {
  std::vector<std::vector<double>> g;
  Shape shape;
};

Groups groups_of(const Tensor& a, const Shape& dims_in, bool keepdim) {
  const auto dims = norm_dims(dims_in, a.dim());
  std::vector<double> v = a.to_vector<double>();
  const Shape& s = a.sizes();
  auto reduced = [&](int64_t d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  Groups r;
  int64_t nout = 1;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (!reduced(d)) {
      r.shape.push_back(s[d]);
      nout *= s[d];
    } else if (keepdim) {
      r.shape.push_back(1);
    }
  }
  r.g.resize(nout);
  Shape idx(a.dim(), 0);
  for (size_t k = 0; k < v.size(); ++k) {
    int64_t o = 0;
    for (int64_t d = 0; d < a.dim(); ++d)
      if (!reduced(d)) o = o * s[d] + idx[d];
    r.g[o].push_back(v[k]);
    for (int64_t d = a.dim() - 1; d >= 0; --d) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return r;
}

template <typename F>
void expect_reduction(const Tensor& y, const Tensor& a, const Shape& dims, bool keepdim, F f, double tol) {
  Groups g = groups_of(a, dims, keepdim);
  ASSERT_EQ(y.sizes(), g.shape) << "dims " << shape_str(dims) << " keepdim " << keepdim;
  std::vector<double> got = y.to_vector<double>();
  for (size_t i = 0; i < got.size(); ++i) {
    const double want = f(g.g[i]);
    if (std::isinf(want) || std::isnan(want)) {
      EXPECT_EQ(std::isnan(got[i]), std::isnan(want));
      if (!std::isnan(want)) EXPECT_EQ(got[i], want);
    } else {
      EXPECT_NEAR(got[i], want, tol * (1 + std::abs(want))) << "element " << i << " dims " << shape_str(dims);
    }
  }
}

double naive_var(const std::vector<double>& x, bool unbiased) {
  double m = 0;
  for (double v : x) m += v;
  m /= x.size();
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return s / (x.size() - (unbiased ? 1 : 0));
}

const std::vector<Shape> kDimSets = {{}, {0}, {1}, {-1}, {0, 2}, {1, 2}};

}  // namespace

// ---- var / std ----

TEST(ReduceOps, VarStdMatchNaive) {
  Generator gen(1);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  Tensor af = a.to(DType::f32);
  for (const Shape& dims : kDimSets)
    for (bool keep : {false, true})
      for (bool unb : {false, true}) {
        expect_reduction(var(a, dims, unb, keep), a, dims, keep, [&](auto& x) { return naive_var(x, unb); }, 1e-12);
        expect_reduction(ember::std(a, dims, unb, keep), a, dims, keep,
                         [&](auto& x) { return std::sqrt(naive_var(x, unb)); }, 1e-12);
        expect_reduction(var(af, dims, unb, keep), a, dims, keep, [&](auto& x) { return naive_var(x, unb); }, 1e-5);
      }
  // Non-contiguous input: the transpose of a.
  Tensor t = a.transpose(0, 2);
  expect_reduction(var(t, {1}), t, {1}, false, [](auto& x) { return naive_var(x, true); }, 1e-12);
  // A large offset does not cost precision (two passes).
  Tensor big = add(a, 1e8);
  expect_reduction(var(big, {2}), a, {2}, false, [](auto& x) { return naive_var(x, true); }, 1e-6);
}

TEST(ReduceOps, VarStdGradients) {
  Tensor x = leaf64({3, 4}, 2);
  Tensor x3 = leaf64({2, 3, 4}, 3);
  for (bool unb : {false, true})
    for (bool keep : {false, true}) {
      expect_grads_ok([&](const TensorList& in) { return var(in[0], {1}, unb, keep); }, {x});
      expect_grads_ok([&](const TensorList& in) { return ember::std(in[0], {0}, unb, keep); }, {x});
      expect_grads_ok([&](const TensorList& in) { return var(in[0], {0, 2}, unb, keep); }, {x3});
      expect_grads_ok([&](const TensorList& in) { return ember::std(in[0], {-1, 0}, unb, keep); }, {x3});
    }
  // everything, and a transposed (non-contiguous) input
  expect_grads_ok([](const TensorList& in) { return ember::std(in[0]); }, {x});
  expect_grads_ok([](const TensorList& in) { return var(in[0].t(), {1}); }, {x});
  expect_grads_ok([](const TensorList& in) { return ember::std(in[0].transpose(0, 2), {0, 1}, true, true); }, {x3});
}

TEST(ReduceOps, StdOfConstantRowHasZeroGradientNotNaN) {
  Tensor a = tensor({2, 2, 2, 1, 3, 5}, {2, 3}, {.dtype = DType::f64});
  a.requires_grad_(true);
  Tensor s = ember::std(a, {1});
  EXPECT_EQ(s.to_vector<double>()[0], 0.0);
  sum(s).backward();
  auto g = a.grad().to_vector<double>();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(g[i], 0.0);
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isfinite(g[i]));
  EXPECT_NEAR(g[3], (1 - 3) / (2.0 * 2.0), 1e-12);  // (x - mean) / ((n-1) std), std = 2
}

// ---- max / min / argmax / argmin ----

TEST(ReduceOps, MaxMinAlongDimMatchNaive) {
  Generator gen(4);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  for (int64_t dim : {0, 1, 2, -1})
    for (bool keep : {false, true})
      for (bool is_max : {true, false}) {
        auto [v, i] = is_max ? max(a, dim, keep) : min(a, dim, keep);
        EXPECT_EQ(i.dtype(), DType::i64);
        Groups g = groups_of(a, {dim}, keep);
        ASSERT_EQ(v.sizes(), g.shape);
        ASSERT_EQ(i.sizes(), g.shape);
        auto vv = v.to_vector<double>();
        auto iv = i.to_vector<int64_t>();
        for (size_t k = 0; k < g.g.size(); ++k) {
          const auto& x = g.g[k];
          auto it = is_max ? std::max_element(x.begin(), x.end()) : std::min_element(x.begin(), x.end());
          EXPECT_EQ(vv[k], *it);
          EXPECT_EQ(iv[k], it - x.begin());
        }
        Tensor ai = is_max ? argmax(a, dim, keep) : argmin(a, dim, keep);
        EXPECT_EQ(ai.to_vector<int64_t>(), iv);
      }
  // Integer tensors and a non-contiguous view.
  Tensor n = tensor({3, 9, 1, 9, 2, 0}, {2, 3}, {.dtype = DType::i64});
  EXPECT_EQ(argmax(n, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));  // first of the tied 9s
  EXPECT_EQ(max(n, 1).first.to_vector<int64_t>(), (std::vector<int64_t>{9, 9}));
  EXPECT_EQ(argmin(n.t(), 1).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(argmin(n.t(), 0).to_vector<int64_t>(), (std::vector<int64_t>{2, 2}));
  // NaN wins.
  Tensor nan = tensor({1, NAN, 3}, {3});
  EXPECT_TRUE(std::isnan(max(nan, 0).first.item()));
  EXPECT_EQ(argmax(nan, 0).item(), 1.0);
  EXPECT_TRUE(std::isnan(amax(nan, {0}).item()));
  // 0-dim
  EXPECT_EQ(max(scalar_tensor(2.5), 0).first.item(), 2.5);
}

TEST(ReduceOps, MaxAlongDimGradientGoesToTheFirstChosenElement) {
  Tensor a = tensor({1, 5, 5, 2, 7, 0}, {2, 3}, {.dtype = DType::f64});
  a.requires_grad_(true);
  auto [v, i] = max(a, 1);
  sum(mul(v, tensor({2.0, 3.0}, {2}, {.dtype = DType::f64}))).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0, 2, 0, 0, 3, 0}));
  Tensor x = leaf64({3, 4}, 5), x3 = leaf64({2, 3, 4}, 6);
  for (bool keep : {false, true}) {
    expect_grads_ok([&](const TensorList& in) { return max(in[0], 1, keep).first; }, {x});
    expect_grads_ok([&](const TensorList& in) { return min(in[0], 0, keep).first; }, {x});
    expect_grads_ok([&](const TensorList& in) { return max(in[0].transpose(0, 2), 1, keep).first; }, {x3});
    expect_grads_ok([&](const TensorList& in) { return min(in[0], -1, keep).first; }, {x3});
  }
}

TEST(ReduceOps, AmaxAminAndGlobalMaxMin) {
  Generator gen(7);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  for (const Shape& dims : kDimSets)
    for (bool keep : {false, true}) {
      expect_reduction(amax(a, dims, keep), a, dims, keep, [](auto& x) { return *std::max_element(x.begin(), x.end()); }, 0);
      expect_reduction(amin(a, dims, keep), a, dims, keep, [](auto& x) { return *std::min_element(x.begin(), x.end()); }, 0);
    }
  auto v = a.to_vector<double>();
  EXPECT_EQ(max(a).item(), *std::max_element(v.begin(), v.end()));
  EXPECT_EQ(min(a.transpose(0, 1)).item(), *std::min_element(v.begin(), v.end()));
  EXPECT_EQ(max(a).dim(), 0);
}

TEST(ReduceOps, AmaxSplitsGradientAmongTies) {
  Tensor a = tensor({3, 1, 3, 3, 0, 2, 2, -1}, {2, 4}, {.dtype = DType::f64});
  a.requires_grad_(true);
  sum(amax(a, {1})).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{1.0 / 3, 0, 1.0 / 3, 1.0 / 3, 0, 0.5, 0.5, 0}));
  Tensor b = tensor({1, 4, 4, 0}, {4}, {.dtype = DType::f64});
  b.requires_grad_(true);
  max(b).backward();
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0, 0.5, 0.5, 0}));
  Tensor c = tensor({-2, 1, -2}, {3}, {.dtype = DType::f64});
  c.requires_grad_(true);
  mul(min(c), 4.0).backward();
  EXPECT_EQ(c.grad().to_vector<double>(), (std::vector<double>{2, 0, 2}));

  Tensor x = leaf64({3, 4}, 8), x3 = leaf64({2, 3, 4}, 9);
  for (bool keep : {false, true}) {
    expect_grads_ok([&](const TensorList& in) { return amax(in[0], {0, 2}, keep); }, {x3});
    expect_grads_ok([&](const TensorList& in) { return amin(in[0].t(), {1}, keep); }, {x});
  }
  expect_grads_ok([](const TensorList& in) { return max(in[0]); }, {x});
  expect_grads_ok([](const TensorList& in) { return min(in[0].transpose(1, 2)); }, {x3});
}

// ---- logsumexp ----

TEST(ReduceOps, LogsumexpMatchesNaiveAndIsStable) {
  Generator gen(10);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  auto lse = [](const std::vector<double>& x) {
    double s = 0;
    for (double v : x) s += std::exp(v);
    return std::log(s);
  };
  for (const Shape& dims : kDimSets)
    for (bool keep : {false, true}) expect_reduction(logsumexp(a, dims, keep), a, dims, keep, lse, 1e-12);
  // Large values: the naive formula overflows, the shifted one does not.
  Tensor big = tensor({1000, 1000, 999}, {3});
  EXPECT_NEAR(logsumexp(big, {0}).item(), 1000 + std::log(2 + std::exp(-1.0)), 1e-3);
  Tensor small = tensor({-1000, -1001}, {2}, {.dtype = DType::f64});
  EXPECT_NEAR(logsumexp(small, {0}).item(), -1000 + std::log1p(std::exp(-1.0)), 1e-9);
  // A row of -inf gives -inf, and gradient 0 there.
  const double inf = std::numeric_limits<double>::infinity();
  Tensor m = tensor({-inf, -inf, 0.5, 1.5}, {2, 2}, {.dtype = DType::f64});
  m.requires_grad_(true);
  Tensor y = logsumexp(m, {1});
  EXPECT_EQ(y.to_vector<double>()[0], -inf);
  sum(where(isfinite(y), y, 0.0)).backward();
  auto g = m.grad().to_vector<double>();
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], 0.0);
  EXPECT_NEAR(g[2] + g[3], 1.0, 1e-12);
}

TEST(ReduceOps, LogsumexpGradients) {
  Tensor x = leaf64({3, 4}, 11), x3 = leaf64({2, 3, 4}, 12);
  for (bool keep : {false, true}) {
    expect_grads_ok([&](const TensorList& in) { return logsumexp(in[0], {1}, keep); }, {x});
    expect_grads_ok([&](const TensorList& in) { return logsumexp(in[0], {0, 2}, keep); }, {x3});
    expect_grads_ok([&](const TensorList& in) { return logsumexp(in[0].transpose(0, 2), {-1}, keep); }, {x3});
  }
  expect_grads_ok([](const TensorList& in) { return logsumexp(in[0], {}); }, {x});
}

// ---- norm ----

TEST(ReduceOps, NormMatchesNaive) {
  Generator gen(13);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  for (double p : {1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()})
    for (const Shape& dims : kDimSets)
      for (bool keep : {false, true}) {
        expect_reduction(norm(a, p, dims, keep), a, dims, keep, [p](auto& x) {
          double s = 0, m = 0;
          for (double v : x) {
            s += std::pow(std::abs(v), std::isinf(p) ? 1.0 : p);
            m = std::max(m, std::abs(v));
          }
          return std::isinf(p) ? m : std::pow(s, 1.0 / p);
        }, 1e-12);
      }
  // Default: the 2-norm of everything; huge and tiny values do not overflow or underflow.
  EXPECT_NEAR(norm(tensor({3, 4}, {2})).item(), 5.0, 1e-6);
  EXPECT_NEAR(norm(tensor({3e200, 4e200}, {2}, {.dtype = DType::f64})).item() / 1e200, 5.0, 1e-12);
  EXPECT_NEAR(norm(tensor({3e-200, 4e-200}, {2}, {.dtype = DType::f64})).item() / 1e-200, 5.0, 1e-12);
  EXPECT_NEAR(norm(tensor({3e30, 4e30}, {2})).item() / 1e30, 5.0, 1e-5);
}

TEST(ReduceOps, NormGradients) {
  Tensor x = leaf64({3, 4}, 14), x3 = leaf64({2, 3, 4}, 15);
  for (double p : {1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()})
    for (bool keep : {false, true}) {
      expect_grads_ok([&](const TensorList& in) { return norm(in[0], p, {1}, keep); }, {x});
      expect_grads_ok([&](const TensorList& in) { return norm(in[0].transpose(0, 1), p, {0, 2}, keep); }, {x3});
    }
  expect_grads_ok([](const TensorList& in) { return norm(in[0]); }, {x3});
}

TEST(ReduceOps, NormGradientAtZeroIsZero) {
  Tensor a = tensor({0, 0, 0, 3, 4, 0}, {2, 3}, {.dtype = DType::f64});
  a.requires_grad_(true);
  Tensor n = norm(a, 2.0, {1});
  EXPECT_EQ(n.to_vector<double>(), (std::vector<double>{0, 5}));
  sum(n).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0, 0, 0, 0.6, 0.8, 0}));
  // second order through the zero row stays finite
  Tensor b = zeros({3}, {.dtype = DType::f64});
  b.requires_grad_(true);
  Tensor g = grad({norm(b)}, {b}, {}, {.create_graph = true})[0];
  EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{0, 0, 0}));
  Tensor h = grad({sum(g)}, {b}, {}, {.allow_unused = true})[0];
  if (h.defined())
    for (double v : h.to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
}

// ---- cumsum ----

TEST(ReduceOps, CumsumMatchesNaive) {
  Generator gen(16);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  auto v = a.to_vector<double>();
  for (int64_t dim : {0, 1, 2, -2}) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    Tensor y = cumsum(a, dim);
    ASSERT_EQ(y.sizes(), a.sizes());
    auto got = y.to_vector<double>();
    const Shape st = contiguous_strides(a.sizes());
    for (int64_t i = 0; i < 60; ++i) {
      const int64_t c = (i / st[d]) % a.size(d);
      double want = 0;
      for (int64_t k = 0; k <= c; ++k) want += v[i - (c - k) * st[d]];
      EXPECT_NEAR(got[i], want, 1e-12);
    }
  }
  Tensor f = cumsum(tensor({1, 2, 3, 4}, {2, 2}).t(), 1);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1, 4, 2, 6}));
  EXPECT_EQ(cumsum(scalar_tensor(3.0), 0).item(), 3.0);
}

TEST(ReduceOps, CumsumGradients) {
  Tensor x = leaf64({3, 4}, 17), x3 = leaf64({2, 3, 4}, 18);
  expect_grads_ok([](const TensorList& in) { return cumsum(in[0], 1); }, {x});
  expect_grads_ok([](const TensorList& in) { return cumsum(in[0], 0); }, {x});
  expect_grads_ok([](const TensorList& in) { return cumsum(in[0].transpose(0, 2), 1); }, {x3});
  expect_grads_ok([](const TensorList& in) { return square(cumsum(in[0], -1)); }, {x3});
  // The gradient of sum(cumsum) along n elements is n, n-1, ..., 1.
  Tensor a = leaf64({4}, 19);
  sum(cumsum(a, 0)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{4, 3, 2, 1}));
}

// ---- prod ----

TEST(ReduceOps, ProdMatchesNaive) {
  Generator gen(20);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  auto pr = [](const std::vector<double>& x) {
    double p = 1;
    for (double v : x) p *= v;
    return p;
  };
  for (const Shape& dims : kDimSets)
    for (bool keep : {false, true}) expect_reduction(prod(a, dims, keep), a, dims, keep, pr, 1e-12);
  expect_reduction(prod(a.transpose(0, 2), {1}), a.transpose(0, 2), {1}, false, pr, 1e-12);
  EXPECT_EQ(prod(tensor({2, 0, 3}, {3})).item(), 0.0);
}

TEST(ReduceOps, ProdGradientsWithoutZeros) {
  Tensor x = leaf64({3, 4}, 21), x3 = leaf64({2, 3, 4}, 22);
  for (bool keep : {false, true}) {
    expect_grads_ok([&](const TensorList& in) { return prod(in[0], {1}, keep); }, {x});
    expect_grads_ok([&](const TensorList& in) { return prod(in[0], {0, 2}, keep); }, {x3});
    expect_grads_ok([&](const TensorList& in) { return prod(in[0].transpose(0, 2), {0}, keep); }, {x3});
  }
  expect_grads_ok([](const TensorList& in) { return prod(in[0]); }, {x});
}

TEST(ReduceOps, ProdGradientsWithZerosAreExact) {
  // Rows with no zero, one zero and two zeros.
  Tensor a = tensor({1.5, -2, 0.5, 3, 0, -1.5, 0, 2, 0}, {3, 3}, {.dtype = DType::f64});
  a.requires_grad_(true);
  sum(prod(a, {1})).backward();
  auto g = a.grad().to_vector<double>();
  auto v = a.to_vector<double>();
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 3; ++j) {
      double others = 1;
      for (int k = 0; k < 3; ++k)
        if (k != j) others *= v[r * 3 + k];
      EXPECT_EQ(g[r * 3 + j], others) << r << "," << j;
      EXPECT_TRUE(std::isfinite(g[r * 3 + j]));
    }
  Tensor x = a.detach().clone();
  x.requires_grad_(true);
  expect_grads_ok([](const TensorList& in) { return prod(in[0], {1}); }, {x});
  expect_grads_ok([](const TensorList& in) { return prod(in[0].t(), {0}, true); }, {x});
  expect_grads_ok([](const TensorList& in) { return prod(in[0]); }, {x});
  // Three dims, reducing a leading and a trailing one (the row layout is permuted back).
  Tensor x3 = tensor({1.5, 0, -2, 0.5, 3, 1.25, 0, 2, -1, 0.75, 2, 0}, {2, 3, 2}, {.dtype = DType::f64});
  x3.requires_grad_(true);
  for (bool keep : {false, true})
    expect_grads_ok([&](const TensorList& in) { return prod(in[0], {0, 2}, keep); }, {x3});
  // Third order at a zero is not implemented: an error, never a wrong number.
  Tensor z = tensor({0.5, 0, 2}, {3}, {.dtype = DType::f64});
  z.requires_grad_(true);
  Tensor g1 = grad({prod(z)}, {z}, {}, {.create_graph = true})[0];
  Tensor g2 = grad({sum(g1)}, {z}, {}, {.create_graph = true})[0];
  EXPECT_EQ(g2.to_vector<double>(), (std::vector<double>{2, 2.5, 0.5}));
  EXPECT_THROW(grad({sum(g2)}, {z}), Error);
}

// Rows enough for the thread pool to split the work: the same answers as the naive loops.
TEST(ReduceOps, LargeReductionsAgreeWithNaive) {
  Generator gen(23);
  Tensor a = randn({3000, 17}, {.dtype = DType::f64}, &gen);
  auto mx = [](auto& x) { return *std::max_element(x.begin(), x.end()); };
  expect_reduction(amax(a, {1}), a, {1}, false, mx, 0);
  expect_reduction(max(a, 1).first, a, {1}, false, mx, 0);
  expect_reduction(var(a, {1}), a, {1}, false, [](auto& x) { return naive_var(x, true); }, 1e-12);
  expect_reduction(logsumexp(a.t(), {0}, true), a.t(), {0}, true, [](auto& x) {
    double s = 0;
    for (double v : x) s += std::exp(v);
    return std::log(s);
  }, 1e-12);
  Tensor c = cumsum(a, 1);
  auto cv = c.to_vector<double>(), av = a.to_vector<double>();
  for (int64_t r = 0; r < 3000; r += 7) {
    double s = 0;
    for (int64_t j = 0; j < 17; ++j) {
      s += av[r * 17 + j];
      ASSERT_NEAR(cv[r * 17 + j], s, 1e-12);
    }
  }
}

// sum over the leading dims of a contiguous tensor: narrow rows are split by row blocks, wide
// ones by columns, small ones not at all; every path against a naive f64 sum, and the same bits
// on one thread and on three.
TEST(ReduceOps, SumOverLeadingDimsMatchesNaiveOnAnyThreadCount) {
  const int saved = kernels::cpu::num_threads();
  Generator gen(29);
  struct Case {
    Shape shape;
    Shape dims;
  };
  for (const Case& c : {Case{{2048, 32}, {0}}, Case{{3001, 7}, {0}}, Case{{5, 9000}, {0}}, Case{{40, 3}, {0}},
                        Case{{4, 1500, 33}, {0, 1}}})
    for (DType dt : {DType::f32, DType::f64}) {
      SCOPED_TRACE(shape_str(c.shape) + " " + dtype_name(dt));
      Tensor a = randn(c.shape, {.dtype = dt}, &gen);
      kernels::cpu::set_num_threads(1);
      Tensor one = a.sum(c.dims);
      kernels::cpu::set_num_threads(3);
      Tensor three = a.sum(c.dims);
      EXPECT_EQ(one.to_vector<double>(), three.to_vector<double>());
      const int64_t cols = one.numel(), rows = a.numel() / cols;
      const auto av = a.to_vector<double>(), got = one.to_vector<double>();
      for (int64_t j = 0; j < cols; ++j) {
        double want = 0, mag = 0;
        for (int64_t i = 0; i < rows; ++i) {
          want += av[i * cols + j];
          mag += std::abs(av[i * cols + j]);
        }
        ASSERT_NEAR(got[j], want, (dt == DType::f32 ? 1e-6 : 1e-13) * mag) << "column " << j;
      }
    }
  kernels::cpu::set_num_threads(saved);
}

// Leading and trailing dims of a contiguous tensor (a conv's bias gradient: [N, C, H, W] over N,
// H, W) are summed in two passes over the data where it lies: no copy into rows (a clone of the
// whole tensor, once per conv in a U-Net's backward). The same values as the naive sum.
TEST(ReduceOps, SumOverLeadingAndTrailingDimsCopiesNothing) {
  Generator gen(31);
  struct Case {
    Shape shape, dims;
  };
  for (const Case& c : {Case{{5, 6, 7, 3}, {0, 2, 3}}, Case{{4, 33, 9}, {0, 2}}, Case{{2, 3, 4, 5}, {0, 1, 3}},
                        Case{{3, 40, 2, 2}, {0, 2, 3}}})
    for (DType dt : {DType::f32, DType::f64})
      for (bool keepdim : {false, true}) {
        SCOPED_TRACE(shape_str(c.shape) + " " + dtype_name(dt));
        Tensor a = randn(c.shape, {.dtype = dt}, &gen);
        TraceScope trace;
        Tensor y = sum(a, c.dims, keepdim);
        EXPECT_EQ(traced(trace.events(), "clone"), 0);
        expect_reduction(y, a, c.dims, keepdim, [](const std::vector<double>& v) {
          double t = 0;
          for (double x : v) t += x;
          return t;
        }, dt == DType::f32 ? 1e-5 : 1e-12);
      }
  Tensor x = leaf64({3, 4, 2, 5}, 32);
  expect_grads_ok([](const TensorList& in) { return sum(in[0], {0, 2, 3}); }, {x});
}

// A bias gradient added where one waits (linear's backward, autograd::take_pending_grad): acc +
// m.sum(0) written into acc, equal bit for bit to the sum and then the add, on any thread count;
// a layout the column sum does not take (a transposed m) goes through them.
TEST(ReduceOps, SumRowsIntoEqualsTheSumThenTheAdd) {
  const int saved = kernels::cpu::num_threads();
  Generator gen(31);
  for (const Shape& shape : {Shape{2048, 32}, Shape{37, 5}, Shape{5, 9000}, Shape{1, 3}})
    for (DType dt : {DType::f32, DType::f64})
      for (int threads : {1, 3}) {
        SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dt) + " threads " + std::to_string(threads));
        kernels::cpu::set_num_threads(threads);
        Tensor m = randn(shape, {.dtype = dt}, &gen), acc = randn({shape[1]}, {.dtype = dt}, &gen);
        const auto want = add(acc, m.sum({0})).to_vector<double>();
        Tensor into = acc.clone();
        const void* buffer = into.raw_data();
        TraceScope trace;
        Tensor got = sum_rows_into(std::move(into), m);
        EXPECT_EQ(got.raw_data(), buffer) << "not written in place";
        EXPECT_EQ(got.to_vector<double>(), want);
        EXPECT_EQ(traced(trace.events(), "sum_accumulate"), 1);
        Tensor mt = randn({shape[1], shape[0]}, {.dtype = dt}, &gen).t();  // not contiguous
        EXPECT_EQ(sum_rows_into(acc.clone(), mt).to_vector<double>(), add(acc, mt.sum({0})).to_vector<double>());
      }
  kernels::cpu::set_num_threads(saved);
  Tensor m = randn({4, 3}, {}, &gen);
  EXPECT_EQ(sum_rows_into(Tensor(), m).to_vector<double>(), m.sum({0}).to_vector<double>()) << "no gradient waiting";
}

// ---- errors ----

TEST(ReduceOps, ErrorsNameTheOp) {
  Tensor a = randn({2, 3});
  auto expect_error = [](auto f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { var(randn({3, 1}), {1}); }, "var");
  expect_error([&] { ember::std(randn({1}), {0}); }, "unbiased=false");
  EXPECT_NO_THROW(var(randn({3, 1}), {1}, /*unbiased=*/false));
  expect_error([&] { max(zeros({2, 0}), 1); }, "max");
  expect_error([&] { amax(zeros({0, 3}), {0}); }, "amax");
  expect_error([&] { min(zeros({0})); }, "min");
  expect_error([&] { argmin(a, 2); }, "argmin");
  expect_error([&] { norm(a, 0.5); }, "norm");
  expect_error([&] { logsumexp(a, {0, 0}); }, "logsumexp");
  expect_error([&] { cumsum(a, -3); }, "cumsum");
  expect_error([&] { prod(a, {3}); }, "prod");
  expect_error([&] { cumsum(zeros({3}, {.dtype = DType::i64}), 0); }, "cumsum");
  // Empty reductions that are well defined.
  EXPECT_EQ(prod(zeros({0})).item(), 1.0);
  EXPECT_EQ(logsumexp(zeros({0}), {0}).item(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(norm(zeros({0})).item(), 0.0);
}
