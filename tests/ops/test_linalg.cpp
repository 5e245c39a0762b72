// Linear algebra: matmul (batch broadcasting, 1-D operands, transposed and strided operands),
// mm, bmm, linear, outer, dot, and the small factorizations inverse, slogdet, det and lu.
// Forward values against naive loops written here, gradients by gradcheck and gradgradcheck
// in f64, lu by reconstruction, and the error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

// A well-conditioned random [..., n, n] leaf: randn + 3 I.
Tensor well_conditioned(const Shape& s, uint64_t seed, DType dt = DType::f64, bool grad = true) {
  const int64_t n = s.back();
  Tensor a = (rnd(s, seed, dt) + mul(eye(n, {.dtype = dt}), 3.0)).detach();
  if (grad) a.requires_grad_(true);
  return a;
}

// Element `idx` (indices of a shape `full` that `s` broadcasts to, aligned at the right) of a
// row-major array of shape s.
double at_broadcast(const std::vector<double>& v, const Shape& s, const Shape& idx) {
  int64_t k = 0;
  const size_t lead = idx.size() - s.size();
  for (size_t d = 0; d < s.size(); ++d) k = k * s[d] + (s[d] == 1 ? 0 : idx[lead + d]);
  return v[k];
}

// Naive matmul of two >= 2-D operands with broadcast batch dims: loops over every output
// element, reads operands through broadcast indices.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b, Shape& out_shape) {
  const Shape& as = a.sizes();
  const Shape& bs = b.sizes();
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const size_t nb = std::max(as.size(), bs.size()) - 2;
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) {
    auto dim_of = [&](const Shape& s) {
      const int64_t j = static_cast<int64_t>(i) - static_cast<int64_t>(nb - (s.size() - 2));
      return j < 0 ? int64_t{1} : s[j];
    };
    batch[i] = std::max(dim_of(as), dim_of(bs));
  }
  out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> out(shape_numel(out_shape));
  for (int64_t o = 0; o < static_cast<int64_t>(out.size()); ++o) {
    Shape idx = unravel(o, out_shape);
    const int64_t m = idx[nb], n = idx[nb + 1];
    double s = 0;
    for (int64_t k = 0; k < K; ++k) {
      Shape ia(idx.begin(), idx.begin() + nb), ib = ia;
      ia.push_back(m);
      ia.push_back(k);
      ib.push_back(k);
      ib.push_back(n);
      s += at_broadcast(av, as, ia) * at_broadcast(bv, bs, ib);
    }
    out[o] = s;
  }
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::abs(want[i]))) << what << " element " << i;
}

void expect_matmul_matches(const Tensor& a, const Tensor& b, double tol) {
  Shape want_shape;
  std::vector<double> want = naive_matmul(a, b, want_shape);
  Tensor y = matmul(a, b);
  ASSERT_EQ(y.sizes(), want_shape) << a.str() << " @ " << b.str();
  expect_close(y.to_vector<double>(), want, tol, "matmul");
}

// Naive determinant and inverse of one row-major n x n matrix (Gauss-Jordan with full-row
// pivoting on the largest entry; independent of the library's LU).
void naive_det_inv(std::vector<double> m, int64_t n, double& det, std::vector<double>& inv) {
  inv.assign(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) inv[i * n + i] = 1.0;
  det = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    int64_t p = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::abs(m[r * n + c]) > std::abs(m[p * n + c])) p = r;
    if (m[p * n + c] == 0.0) {
      det = 0.0;
      return;
    }
    if (p != c) {
      for (int64_t j = 0; j < n; ++j) {
        std::swap(m[p * n + j], m[c * n + j]);
        std::swap(inv[p * n + j], inv[c * n + j]);
      }
      det = -det;
    }
    const double d = m[c * n + c];
    det *= d;
    for (int64_t j = 0; j < n; ++j) {
      m[c * n + j] /= d;
      inv[c * n + j] /= d;
    }
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = m[r * n + c];
      for (int64_t j = 0; j < n; ++j) {
        m[r * n + j] -= f * m[c * n + j];
        inv[r * n + j] -= f * inv[c * n + j];
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// matmul family

TEST(LinalgOps, MatmulBroadcastsBatchDims) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    expect_matmul_matches(rnd({2, 1, 3, 4}, 1, dt), rnd({5, 4, 2}, 2, dt), tol);  // -> [2, 5, 3, 2]
    expect_matmul_matches(rnd({3, 4}, 3, dt), rnd({2, 4, 5}, 4, dt), tol);        // 2-D with 3-D
    expect_matmul_matches(rnd({2, 3, 4}, 5, dt), rnd({4, 6}, 6, dt), tol);
    expect_matmul_matches(rnd({7, 9}, 7, dt), rnd({9, 11}, 8, dt), tol);
  }
  EXPECT_EQ(matmul(rnd({2, 1, 3, 4}, 1), rnd({5, 4, 2}, 2)).sizes(), (Shape{2, 5, 3, 2}));
  Tensor a = leaf64({2, 1, 3, 4}, 11), b = leaf64({5, 4, 2}, 12);
  expect_grads_ok([](const TensorList& x) { return matmul(x[0], x[1]); }, {a, b});
}

TEST(LinalgOps, MatmulOneDimensionalOperands) {
  Tensor v = rnd({4}, 1, DType::f64), w = rnd({4}, 2, DType::f64);
  Tensor m = rnd({4, 3}, 3, DType::f64), bm = rnd({2, 3, 4}, 4, DType::f64), bm2 = rnd({2, 4, 3}, 5, DType::f64);
  auto vv = v.to_vector<double>(), wv = w.to_vector<double>();
  // vector . vector -> 0-dim
  Tensor d = matmul(v, w);
  EXPECT_EQ(d.dim(), 0);
  double want = 0;
  for (int i = 0; i < 4; ++i) want += vv[i] * wv[i];
  EXPECT_NEAR(d.item(), want, 1e-12);
  // vector @ matrix -> [3]; matrix @ vector -> [2, 3]; vector @ batch -> [2, 3]
  Shape s;
  Tensor y1 = matmul(v, m);
  EXPECT_EQ(y1.sizes(), (Shape{3}));
  expect_close(y1.to_vector<double>(), naive_matmul(v.unsqueeze(0), m, s), 1e-12, "v@m");
  Tensor y2 = matmul(bm, v);
  EXPECT_EQ(y2.sizes(), (Shape{2, 3}));
  expect_close(y2.to_vector<double>(), naive_matmul(bm, v.unsqueeze(1), s), 1e-12, "bm@v");
  Tensor y3 = matmul(v, bm2);
  EXPECT_EQ(y3.sizes(), (Shape{2, 3}));
  expect_close(y3.to_vector<double>(), naive_matmul(v.unsqueeze(0), bm2, s), 1e-12, "v@bm");

  Tensor lv = leaf64({4}, 21), lw = leaf64({4}, 22), lm = leaf64({4, 3}, 23), lb = leaf64({2, 3, 4}, 24);
  auto f = [](const TensorList& x) { return matmul(x[0], x[1]); };
  expect_grads_ok(f, {lv, lw});
  expect_grads_ok(f, {lv, lm});
  expect_grads_ok(f, {lb, lv});
}

TEST(LinalgOps, MatmulTransposedAndStridedOperands) {
  // Transposed views go to the GEMM as is; a column-strided slice is neither row- nor
  // column-unit-stride and is copied first. Both must give the naive product.
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor at = rnd({4, 3}, 1, dt).t(), bt = rnd({2, 4}, 2, dt).t();  // [3, 4] @ [4, 2]
    ASSERT_FALSE(at.is_contiguous());
    expect_matmul_matches(at, bt, tol);
    Tensor a3 = rnd({2, 5, 3}, 3, dt).transpose(-1, -2);  // [2, 3, 5]
    expect_matmul_matches(a3, rnd({5, 4}, 4, dt), tol);
    Tensor sl = rnd({3, 8}, 5, dt).slice(1, 0, 8, 2);  // [3, 4], strides (8, 2)
    expect_matmul_matches(sl, rnd({4, 2}, 6, dt), tol);
    Tensor ex = rnd({1, 3, 4}, 7, dt).expand({2, 3, 4});  // batch stride 0
    expect_matmul_matches(ex, rnd({2, 4, 2}, 8, dt), tol);
  }
  Tensor a = leaf64({4, 3}, 31), b = leaf64({2, 4}, 32), c = leaf64({3, 8}, 33);
  expect_grads_ok([](const TensorList& x) { return matmul(x[0].t(), x[1].t()); }, {a, b});
  expect_grads_ok([](const TensorList& x) { return matmul(x[0].slice(1, 0, 8, 2), x[1]); }, {c, a});
  Tensor d = leaf64({2, 5, 3}, 34), e = leaf64({2, 4, 5}, 35);
  expect_grads_ok([](const TensorList& x) { return matmul(x[0].transpose(-1, -2), x[1].transpose(-1, -2)); }, {d, e});
}

TEST(LinalgOps, MmAndBmm) {
  Tensor a = rnd({3, 5}, 1, DType::f64), b = rnd({5, 2}, 2, DType::f64);
  Shape s;
  expect_close(mm(a, b).to_vector<double>(), naive_matmul(a, b, s), 1e-12, "mm");
  Tensor ba = rnd({4, 3, 5}, 3, DType::f64), bb = rnd({4, 5, 2}, 4, DType::f64);
  Tensor y = bmm(ba, bb);
  EXPECT_EQ(y.sizes(), (Shape{4, 3, 2}));
  expect_close(y.to_vector<double>(), naive_matmul(ba, bb, s), 1e-12, "bmm");
  Tensor la = leaf64({3, 5}, 41), lb = leaf64({5, 2}, 42), lba = leaf64({4, 3, 5}, 43), lbb = leaf64({4, 5, 2}, 44);
  expect_grads_ok([](const TensorList& x) { return mm(x[0], x[1]); }, {la, lb});
  expect_grads_ok([](const TensorList& x) { return bmm(x[0], x[1]); }, {lba, lbb});
  EXPECT_THROW(mm(ba, bb), Error);
  EXPECT_THROW(bmm(a, b), Error);
  EXPECT_THROW(bmm(ba, rnd({3, 5, 2}, 5, DType::f64)), Error);  // batch 4 vs 3
}

TEST(LinalgOps, LinearWithAndWithoutBiasAnd3DInput) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (const Shape& xs : {Shape{5, 4}, Shape{2, 5, 4}, Shape{4}}) {
      Tensor x = rnd(xs, 1, dt), w = rnd({3, 4}, 2, dt), b = rnd({3}, 3, dt);
      auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
      const int64_t rows = x.numel() / 4;
      for (bool with_bias : {false, true}) {
        Tensor y = with_bias ? linear(x, w, b) : linear(x, w);
        Shape want_shape = xs;
        want_shape.back() = 3;
        ASSERT_EQ(y.sizes(), want_shape);
        std::vector<double> want(rows * 3);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < 3; ++o) {
            double s = with_bias ? bv[o] : 0.0;
            for (int64_t i = 0; i < 4; ++i) s += xv[r * 4 + i] * wv[o * 4 + i];
            want[r * 3 + o] = s;
          }
        expect_close(y.to_vector<double>(), want, tol, "linear");
      }
    }
  }
  Tensor x = leaf64({5, 4}, 51), x3 = leaf64({2, 3, 4}, 52), w = leaf64({3, 4}, 53), b = leaf64({3}, 54);
  expect_grads_ok([](const TensorList& t) { return linear(t[0], t[1], t[2]); }, {x, w, b});
  expect_grads_ok([](const TensorList& t) { return linear(t[0], t[1]); }, {x, w});
  expect_grads_ok([](const TensorList& t) { return linear(t[0], t[1], t[2]); }, {x3, w, b});
  // non-contiguous input and weight
  Tensor xt = leaf64({4, 5}, 55), wt = leaf64({4, 3}, 56);
  expect_grads_ok([](const TensorList& t) { return linear(t[0].t(), t[1].t(), t[2]); }, {xt, wt, b});
}

// The score of a DenseNet layer, d/dx sum(u * softplus(cat(linear(x, w, b), x))), under
// create_graph: x's gradient is a product (dZ W, linear's backward) plus the slice cat's
// backward left for x. The walk hands that slice to linear's backward, which records one addmm
// instead of a matmul and an add; the score equals the one a plain walk computes, and it
// differentiates twice more (gradcheck and gradgradcheck of the score: third order).
TEST(LinalgOps, ProductPlusWaitingGradientIsOneAddmmUnderCreateGraph) {
  Tensor u = rnd({5, 7}, 61, DType::f64);
  auto score = [&](const Tensor& x, const Tensor& w, const Tensor& b, bool create_graph) {
    Tensor e = sum(mul(softplus(cat({linear(x, w, b), x}, 1)), u));
    return grad({e}, {x}, {}, {.create_graph = create_graph})[0];
  };
  Tensor x = leaf64({5, 4}, 62), w = leaf64({3, 4}, 63), b = leaf64({3}, 64);
  Tensor plain = score(x, w, b, false);
  Tensor recorded;
  {
    TraceScope trace;
    recorded = score(x, w, b, true);
    EXPECT_EQ(test::traced(trace.events(), "addmm"), 1) << trace.table();
    EXPECT_EQ(test::traced(trace.events(), "add"), 0) << trace.table();
  }
  expect_close(recorded.to_vector<double>(), plain.to_vector<double>(), 1e-14, "score");
  EXPECT_TRUE(recorded.requires_grad());
  // gradcheck's central differences run under NoGrad, where grad() has no graph to walk: there
  // the score comes from a plain walk on a detached copy
  auto f = [&](const TensorList& t) {
    if (grad_enabled()) return score(t[0], t[1], t[2], true);
    EnableGrad on;
    return score(t[0].detach().requires_grad_(true), t[1].detach(), t[2].detach(), false).detach();
  };
  expect_grads_ok(f, {x, w, b});
  // addmm's own backward folds too: the walk through the score's graph adds its gradients in
  Tensor v = rnd({5, 4}, 65, DType::f64);
  expect_grads_ok([&](const TensorList& t) { return sum(mul(f(t), v)); }, {x, w, b});
}

// Zero input features (y = bias) or zero output features: shapes a reshape to {-1, 0} cannot infer.
TEST(LinalgOps, LinearWithNoInputOrNoOutputFeatures) {
  Tensor x = rnd({4, 0}, 1, DType::f64), w = rnd({3, 0}, 2, DType::f64), b = rnd({3}, 3, DType::f64);
  Tensor y = linear(x, w, b);
  ASSERT_EQ(y.sizes(), (Shape{4, 3}));
  for (int64_t r = 0; r < 4; ++r) expect_close(y[r].to_vector<double>(), b.to_vector<double>(), 0.0, "y = bias");
  EXPECT_EQ(linear(x, w).sum().item<double>(), 0.0);
  Tensor x3 = leaf64({2, 3, 5}, 4), w0 = leaf64({0, 5}, 5), b0 = leaf64({0}, 6);
  Tensor y0 = linear(x3, w0, b0);
  EXPECT_EQ(y0.sizes(), (Shape{2, 3, 0}));
  Tensor xb = leaf64({4, 0}, 7), wb = leaf64({3, 0}, 8), bb = leaf64({3}, 9);
  linear(xb, wb, bb).sum().backward();
  expect_close(bb.grad().to_vector<double>(), {4.0, 4.0, 4.0}, 0.0, "d sum / d bias");
  EXPECT_EQ(xb.grad().sizes(), (Shape{4, 0}));
  linear(x3, w0, b0).sum().backward();
  EXPECT_EQ(x3.grad().sizes(), (Shape{2, 3, 5}));
  EXPECT_EQ(x3.grad().abs().sum().item<double>(), 0.0);
}

TEST(LinalgOps, OuterAndDot) {
  Tensor a = rnd({4}, 1, DType::f64), b = rnd({3}, 2, DType::f64);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  Tensor o = outer(a, b);
  ASSERT_EQ(o.sizes(), (Shape{4, 3}));
  auto ov = o.to_vector<double>();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_DOUBLE_EQ(ov[i * 3 + j], av[i] * bv[j]);
  Tensor c = rnd({4}, 3, DType::f64);
  auto cv = c.to_vector<double>();
  double want = 0;
  for (int i = 0; i < 4; ++i) want += av[i] * cv[i];
  Tensor d = dot(a, c);
  EXPECT_EQ(d.dim(), 0);
  EXPECT_NEAR(d.item(), want, 1e-12);
  Tensor la = leaf64({4}, 61), lb = leaf64({3}, 62), lc = leaf64({4}, 63), ls = leaf64({8}, 64);
  expect_grads_ok([](const TensorList& t) { return outer(t[0], t[1]); }, {la, lb});
  expect_grads_ok([](const TensorList& t) { return dot(t[0], t[1]); }, {la, lc});
  expect_grads_ok([](const TensorList& t) { return dot(t[0].slice(0, 0, 8, 2), t[1]); }, {ls, lc});  // strided
}

TEST(LinalgOps, ProductErrors) {
  Tensor a = rnd({2, 3}, 1), b = rnd({4, 5}, 2);
  EXPECT_THROW(matmul(a, b), Error);                              // inner dims 3 vs 4
  EXPECT_THROW(matmul(rnd({2, 3, 4}, 1), rnd({3, 4, 5}, 2)), Error);  // batch 2 vs 3
  EXPECT_THROW(matmul(a, rnd({3, 2}, 3, DType::f64)), Error);     // dtype mismatch
  EXPECT_THROW(matmul(scalar_tensor(2.0), a), Error);             // 0-dim
  EXPECT_THROW(matmul(a.to(DType::i64), rnd({3, 2}, 3).to(DType::i64)), Error);  // not floating
  EXPECT_THROW(dot(rnd({3}, 1), rnd({4}, 2)), Error);
  EXPECT_THROW(dot(a, a), Error);
  EXPECT_THROW(outer(a, rnd({3}, 1)), Error);
  EXPECT_THROW(linear(rnd({5, 4}, 1), rnd({3, 5}, 2)), Error);             // in 4 vs 5
  EXPECT_THROW(linear(rnd({5, 4}, 1), rnd({3, 4}, 2), rnd({4}, 3)), Error);  // bias 4 vs out 3
  EXPECT_THROW(linear(rnd({5, 4}, 1), rnd({3, 4}, 2, DType::f64)), Error);  // dtype mismatch
  try {
    matmul(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[4, 5]"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
// factorizations

TEST(LinalgOps, InverseMatchesNaiveGaussJordan) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (int64_t n : {1, 2, 3, 5, 8}) {
      Tensor a = well_conditioned({2, 3, n, n}, 100 + n, dt, false);
      Tensor inv = inverse(a);
      ASSERT_EQ(inv.sizes(), a.sizes());
      auto av = a.to_vector<double>(), iv = inv.to_vector<double>();
      for (int64_t b = 0; b < 6; ++b) {
        std::vector<double> m(av.begin() + b * n * n, av.begin() + (b + 1) * n * n), want;
        double det;
        naive_det_inv(m, n, det, want);
        std::vector<double> got(iv.begin() + b * n * n, iv.begin() + (b + 1) * n * n);
        expect_close(got, want, tol, "inverse");
      }
      // A @ A^{-1} = I
      Tensor id = matmul(a, inv);
      auto idv = id.to_vector<double>();
      for (int64_t k = 0; k < id.numel(); ++k) {
        const int64_t i = (k / n) % n, j = k % n;
        ASSERT_NEAR(idv[k], i == j ? 1.0 : 0.0, 10 * tol);
      }
    }
  }
  // A matrix that needs pivoting (zero in the top-left corner).
  Tensor p = tensor({0, 1, 2, 1, 0, 3, 4, -3, 8}, {3, 3}, {.dtype = DType::f64});
  Tensor pi = inverse(p);
  auto pv = matmul(p, pi).to_vector<double>();
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(pv[k], k % 4 == 0 ? 1.0 : 0.0, 1e-12);
  // Empty matrix
  EXPECT_EQ(inverse(zeros({0, 0}, {.dtype = DType::f64})).sizes(), (Shape{0, 0}));
}

TEST(LinalgOps, LargerMatricesAsGlowUsesThem) {
  // Glow's 1x1 convolution weights: [C, C] with C up to a few hundred; here 48 and 96, batched.
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-4 : 1e-11;
    for (int64_t n : {48, 96}) {
      Generator g(700 + n);
      Tensor a = add(div(randn({2, n, n}, {.dtype = dt}, &g), std::sqrt(static_cast<double>(n))),
                     eye(n, {.dtype = dt}));
      Tensor inv = inverse(a);
      auto idv = matmul(a, inv).to_vector<double>();
      for (int64_t k = 0; k < static_cast<int64_t>(idv.size()); ++k) {
        const int64_t i = (k / n) % n, j = k % n;
        ASSERT_NEAR(idv[k], i == j ? 1.0 : 0.0, tol) << "n " << n << " element " << k;
      }
      auto [P, L, U] = lu(a);
      expect_close(matmul(P, matmul(L, U)).to_vector<double>(), a.to_vector<double>(), tol, "large P L U");
      // log|det| agrees with the sum of log|U_ii|, and with inverse: det(A^{-1}) = 1 / det(A)
      auto la = slogdet(a).second.to_vector<double>(), li = slogdet(inv).second.to_vector<double>();
      for (int b = 0; b < 2; ++b) EXPECT_NEAR(la[b], -li[b], 50 * tol);
    }
  }
}

TEST(LinalgOps, InverseGradients) {
  Tensor a = well_conditioned({3, 3}, 201);
  expect_grads_ok([](const TensorList& x) { return inverse(x[0]); }, {a});
  Tensor b = well_conditioned({2, 3, 3}, 202);
  expect_grads_ok([](const TensorList& x) { return inverse(x[0]); }, {b});
  // non-contiguous input
  expect_grads_ok([](const TensorList& x) { return inverse(x[0].transpose(-1, -2)); }, {b});
  // composed with matmul, as Glow's inverse pass uses it
  Tensor z = leaf64({3, 4}, 203);
  expect_grads_ok([](const TensorList& x) { return matmul(inverse(x[0]), x[1]); }, {a, z});
}

TEST(LinalgOps, SlogdetAndDetMatchNaive) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (int64_t n : {1, 2, 4, 6}) {
      Generator g(300 + n);
      Tensor a = randn({3, n, n}, {.dtype = dt}, &g);  // general random: both signs occur
      auto [sign, logabs] = slogdet(a);
      Tensor d = det(a);
      ASSERT_EQ(sign.sizes(), (Shape{3}));
      ASSERT_EQ(logabs.sizes(), (Shape{3}));
      ASSERT_EQ(d.sizes(), (Shape{3}));
      auto av = a.to_vector<double>(), sv = sign.to_vector<double>(), lv = logabs.to_vector<double>(),
           dv = d.to_vector<double>();
      for (int64_t b = 0; b < 3; ++b) {
        std::vector<double> m(av.begin() + b * n * n, av.begin() + (b + 1) * n * n), inv;
        double want;
        naive_det_inv(m, n, want, inv);
        EXPECT_EQ(sv[b], want > 0 ? 1.0 : -1.0);
        EXPECT_NEAR(lv[b], std::log(std::abs(want)), tol * 10);
        EXPECT_NEAR(dv[b], want, tol * 10 * (1 + std::abs(want)));
      }
    }
  }
  // 2-D input gives 0-dim results; a row swap flips the sign.
  Tensor m = tensor({0, 2, 3, 0}, {2, 2}, {.dtype = DType::f64});  // det = -6
  auto [s, l] = slogdet(m);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item(), -1.0);
  EXPECT_NEAR(l.item(), std::log(6.0), 1e-15);
  EXPECT_NEAR(det(m).item(), -6.0, 1e-12);
  // Singular: sign 0, logabsdet -inf, det 0 (f32 and f64).
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor sing = tensor({1, 2, 2, 4}, {2, 2}, {.dtype = dt});
    auto [ss, ls] = slogdet(sing);
    EXPECT_EQ(ss.item(), 0.0);
    EXPECT_TRUE(std::isinf(ls.item()) && ls.item() < 0);
    EXPECT_EQ(det(sing).item(), 0.0);
  }
  // Empty matrix: det 1.
  auto [se, le] = slogdet(zeros({0, 0}, {.dtype = DType::f64}));
  EXPECT_EQ(se.item(), 1.0);
  EXPECT_EQ(le.item(), 0.0);
}

TEST(LinalgOps, SlogdetAndDetGradients) {
  Tensor a = well_conditioned({3, 3}, 401);
  Tensor b = well_conditioned({2, 3, 3}, 402);
  // logabsdet: d/dA = A^{-T}; checked at first and second order, batched and transposed.
  expect_grads_ok([](const TensorList& x) { return slogdet(x[0]).second; }, {a});
  expect_grads_ok([](const TensorList& x) { return slogdet(x[0]).second; }, {b});
  expect_grads_ok([](const TensorList& x) { return slogdet(x[0].transpose(-1, -2)).second; }, {b});
  // A negative determinant: swap two rows of a well-conditioned matrix.
  Tensor w = well_conditioned({3, 3}, 403, DType::f64, false);
  Tensor neg_det = cat({w.slice(0, 1, 2), w.slice(0, 0, 1), w.slice(0, 2, 3)}, 0);
  neg_det.requires_grad_(true);
  ASSERT_EQ(slogdet(neg_det).first.item(), -1.0);
  expect_grads_ok([](const TensorList& x) { return slogdet(x[0]).second; }, {neg_det});
  expect_grads_ok([](const TensorList& x) { return det(x[0]); }, {a});
  expect_grads_ok([](const TensorList& x) { return det(x[0]); }, {b});
  expect_grads_ok([](const TensorList& x) { return det(x[0]); }, {neg_det});
  // sign carries no gradient.
  auto [s, l] = slogdet(a);
  EXPECT_FALSE(s.requires_grad());
  EXPECT_TRUE(l.requires_grad());
  // The analytic gradient itself: d log|det A|/dA = A^{-T}.
  Tensor g = grad({slogdet(a).second}, {a})[0];
  expect_close(g.to_vector<double>(), inverse(a.detach()).t().contiguous().to_vector<double>(), 1e-12, "dlogdet");
}

TEST(LinalgOps, LuReconstructs) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (int64_t n : {1, 3, 6}) {
      Generator g(500 + n);
      Tensor a = randn({2, 2, n, n}, {.dtype = dt}, &g);
      auto [P, L, U] = lu(a);
      ASSERT_EQ(P.sizes(), a.sizes());
      ASSERT_EQ(L.sizes(), a.sizes());
      ASSERT_EQ(U.sizes(), a.sizes());
      EXPECT_EQ(P.dtype(), dt);
      expect_close(matmul(P, matmul(L, U)).to_vector<double>(), a.to_vector<double>(), tol, "P L U");
      auto pv = P.to_vector<double>(), lv = L.to_vector<double>(), uv = U.to_vector<double>();
      for (int64_t b = 0; b < 4; ++b) {
        for (int64_t i = 0; i < n; ++i) {
          double row_sum = 0, col_sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            const int64_t k = b * n * n + i * n + j;
            EXPECT_TRUE(pv[k] == 0.0 || pv[k] == 1.0);
            row_sum += pv[k];
            col_sum += pv[b * n * n + j * n + i];
            if (j > i) { EXPECT_EQ(lv[k], 0.0); }
            if (j == i) { EXPECT_EQ(lv[k], 1.0); }
            if (j < i) {
              EXPECT_EQ(uv[k], 0.0);
              EXPECT_LE(std::abs(lv[k]), 1.0 + 1e-12);  // partial pivoting bounds the multipliers
            }
          }
          EXPECT_EQ(row_sum, 1.0);
          EXPECT_EQ(col_sum, 1.0);
        }
      }
    }
  }
  // A singular matrix factors too.
  Tensor s = tensor({1, 2, 3, 2, 4, 6, 1, 0, 1}, {3, 3}, {.dtype = DType::f64});
  auto [P, L, U] = lu(s);
  expect_close(matmul(P, matmul(L, U)).to_vector<double>(), s.to_vector<double>(), 1e-12, "singular P L U");
  // No gradient through lu, even for an input that requires grad.
  Tensor x = well_conditioned({3, 3}, 501);
  auto [Px, Lx, Ux] = lu(x);
  EXPECT_FALSE(Px.requires_grad());
  EXPECT_FALSE(Lx.requires_grad());
  EXPECT_FALSE(Ux.requires_grad());
  // Non-contiguous input.
  Tensor t = rnd({4, 4}, 502, DType::f64).t();
  auto [Pt, Lt, Ut] = lu(t);
  expect_close(matmul(Pt, matmul(Lt, Ut)).to_vector<double>(), t.contiguous().to_vector<double>(), 1e-12, "lu(t)");
}

TEST(LinalgOps, FactorizationErrors) {
  EXPECT_THROW(inverse(rnd({3, 4}, 1)), Error);  // not square
  EXPECT_THROW(inverse(rnd({4}, 1)), Error);     // 1-D
  EXPECT_THROW(slogdet(rnd({2, 3}, 1)), Error);
  EXPECT_THROW(det(rnd({2, 3, 2}, 1)), Error);
  EXPECT_THROW(lu(rnd({2, 3}, 1)), Error);
  EXPECT_THROW(inverse(eye(3, {.dtype = DType::i64})), Error);  // dtype
  EXPECT_THROW(slogdet(eye(3, {.dtype = DType::i32})), Error);
  EXPECT_THROW(lu(eye(3, {.dtype = DType::i64})), Error);
  EXPECT_THROW(inverse(zeros({2, 2})), Error);                  // singular
  try {
    inverse(rnd({3, 4}, 1));
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("inverse"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
  }
  // The singular matrix is named by its batch index.
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor batch = well_conditioned({3, 2, 2}, 601, dt, false).clone();
    batch.select(0, 2).copy_(tensor({1, 2, 2, 4}, {2, 2}, {.dtype = dt}));
    try {
      inverse(batch);
      FAIL() << "expected a singular-matrix error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("inverse"), std::string::npos) << msg;
      EXPECT_NE(msg.find("matrix 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find("singular"), std::string::npos) << msg;
    }
  }
  // Non-finite entries are refused too.
  Tensor nanm = tensor({1, 0, 0, NAN}, {2, 2});
  EXPECT_THROW(inverse(nanm), Error);
}
