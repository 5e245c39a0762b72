// softmax, log_softmax and scaled_dot_product_attention: forward values against naive loops
// in double (every dim, non-contiguous inputs, extreme values, -inf entries), gradients by
// gradcheck and gradgradcheck in f64 (q, k, v and an additive mask; causal; broadcast batch
// dims), and the error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ember/ember.h"
#include "ember/ops/attention.h"

using namespace ember;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, {.dtype = dt}, &g);
}
Tensor leaf(const Tensor& t) {
  Tensor l = t.detach();
  l.requires_grad_(true);
  return l;
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol) {
  std::vector<double> g = got.to_vector<double>();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(g[i])) << "element " << i;
      continue;
    }
    ASSERT_NEAR(g[i], want[i], tol) << "element " << i;
  }
}

void expect_grads(const TensorFunction& f, const TensorList& inputs) {
  GradcheckResult r1 = gradcheck(f, inputs);
  EXPECT_TRUE(r1.ok) << r1.message;
  GradcheckResult r2 = gradgradcheck(f, inputs);
  EXPECT_TRUE(r2.ok) << r2.message;
}

// Naive (log-)softmax of a row-major tensor of shape s along dim d.
std::vector<double> ref_softmax(const std::vector<double>& v, const Shape& s, int64_t d, bool log) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[i];
  for (size_t i = d + 1; i < s.size(); ++i) inner *= s[i];
  const int64_t n = s[d];
  std::vector<double> out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + in; };
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, v[at(j)]);
      double z = 0;
      for (int64_t j = 0; j < n; ++j) z += std::exp(v[at(j)] - m);
      for (int64_t j = 0; j < n; ++j) out[at(j)] = log ? v[at(j)] - m - std::log(z) : std::exp(v[at(j)] - m) / z;
    }
  return out;
}

// Naive attention for q [B, Tq, D], k [B, Tk, D], v [B, Tk, Dv] (contiguous copies made here),
// an additive mask [Tq, Tk] (empty: none) and causal masking.
std::vector<double> ref_attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<double>& mask,
                                  bool causal, double scale) {
  const int64_t B = q.size(0), Tq = q.size(1), D = q.size(2), Tk = k.size(1), Dv = v.size(2);
  std::vector<double> qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  std::vector<double> out(B * Tq * Dv, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i) {
      std::vector<double> s(Tk);
      double m = -INFINITY;
      for (int64_t j = 0; j < Tk; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d) acc += qv[(b * Tq + i) * D + d] * kv[(b * Tk + j) * D + d];
        acc *= scale;
        if (!mask.empty()) acc += mask[i * Tk + j];
        if (causal && j > i) acc = -INFINITY;
        s[j] = acc;
        m = std::max(m, acc);
      }
      double z = 0;
      for (int64_t j = 0; j < Tk; ++j) z += std::exp(s[j] - m);
      for (int64_t j = 0; j < Tk; ++j) {
        const double p = std::exp(s[j] - m) / z;
        for (int64_t e = 0; e < Dv; ++e) out[(b * Tq + i) * Dv + e] += p * vv[(b * Tk + j) * Dv + e];
      }
    }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// softmax / log_softmax

TEST(AttentionOps, SoftmaxAndLogSoftmaxMatchReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-6 : 1e-13;
    Tensor x = mul(rnd({3, 4, 5}, 1, dt), 3.0);
    for (int64_t d = 0; d < 3; ++d) {
      expect_near_all(softmax(x, d), ref_softmax(x.to_vector<double>(), x.sizes(), d, false), tol);
      expect_near_all(log_softmax(x, d), ref_softmax(x.to_vector<double>(), x.sizes(), d, true), 10 * tol);
    }
    expect_near_all(softmax(x, -1), ref_softmax(x.to_vector<double>(), x.sizes(), 2, false), tol);
    // non-contiguous input
    Tensor xt = rnd({5, 4, 3}, 2, dt).permute({2, 0, 1});
    for (int64_t d = 0; d < 3; ++d) {
      expect_near_all(softmax(xt, d), ref_softmax(xt.to_vector<double>(), xt.sizes(), d, false), tol);
      expect_near_all(log_softmax(xt, d), ref_softmax(xt.to_vector<double>(), xt.sizes(), d, true), 10 * tol);
    }
    // a wide inner extent (more than one column block)
    Tensor xw = rnd({2, 3, 300}, 3, dt);
    expect_near_all(softmax(xw, 1), ref_softmax(xw.to_vector<double>(), xw.sizes(), 1, false), tol);
    expect_near_all(log_softmax(xw, 1), ref_softmax(xw.to_vector<double>(), xw.sizes(), 1, true), 10 * tol);
  }
}

TEST(AttentionOps, SoftmaxIsStableForExtremeValues) {
  Tensor x = tensor({1000, 999, -1000, 0, 1e30, -1e30}, {2, 3});
  std::vector<float> s = softmax(x, 1).to_vector<float>(), ls = log_softmax(x, 1).to_vector<float>();
  for (float v : s) EXPECT_TRUE(std::isfinite(v));
  for (float v : ls) EXPECT_FALSE(std::isnan(v));
  EXPECT_NEAR(s[0], 1 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(ls[1], -1 - std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_NEAR(s[3], 0.0, 1e-12);
  EXPECT_NEAR(s[4], 1.0, 1e-12);
  // -inf entries get probability 0; a row of -inf only is NaN (as in PyTorch)
  const double inf = std::numeric_limits<double>::infinity();
  Tensor y = tensor({0.5, -inf, 0.5, -inf, -inf, -inf}, {2, 3});
  std::vector<float> sy = softmax(y, 1).to_vector<float>();
  EXPECT_FLOAT_EQ(sy[0], 0.5f);
  EXPECT_EQ(sy[1], 0.0f);
  EXPECT_TRUE(std::isnan(sy[4]));
  EXPECT_EQ(log_softmax(y, 1).to_vector<float>()[1], -INFINITY);
}

TEST(AttentionOps, SoftmaxOfScalarAndEmpty) {
  Tensor s = tensor({2.5}).reshape({});
  EXPECT_EQ(softmax(s, 0).item(), 1.0);
  EXPECT_EQ(log_softmax(s, -1).item(), 0.0);
  EXPECT_EQ(softmax(zeros({0, 3}), 1).sizes(), (Shape{0, 3}));
}

TEST(AttentionOps, SoftmaxGradients) {
  Tensor x = leaf(rnd({4, 3, 2}, 10).permute({1, 2, 0}));  // [3, 2, 4], non-contiguous
  for (int64_t d : {0, 1, 2}) {
    expect_grads([d](const TensorList& in) { return softmax(in[0], d); }, {x});
    expect_grads([d](const TensorList& in) { return log_softmax(in[0], d); }, {x});
  }
  // composed: the softmax's output feeding a nonlinearity (uses every saved output path)
  expect_grads([](const TensorList& in) { return log(add(softmax(in[0], -1), 0.1)); }, {x});
}

TEST(AttentionOps, SoftmaxErrors) {
  EXPECT_THROW(softmax(rnd({2, 3}, 1, DType::f32), 2), Error);
  EXPECT_THROW(log_softmax(rnd({2, 3}, 1, DType::f32), -3), Error);
  EXPECT_THROW(softmax(ones({3}, {.dtype = DType::i64}), 0), Error);
  EXPECT_THROW(softmax(Tensor(), 0), Error);
}

// ------------------------------------------------------------------------------------------
// scaled_dot_product_attention

TEST(AttentionOps, AttentionMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor q = rnd({2, 3, 4}, 20, dt), k = rnd({2, 5, 4}, 21, dt), v = rnd({2, 5, 6}, 22, dt);
    const double s0 = 1 / std::sqrt(4.0);
    expect_near_all(scaled_dot_product_attention(q, k, v), ref_attention(q, k, v, {}, false, s0), tol);
    expect_near_all(scaled_dot_product_attention(q, k, v, Tensor(), false, 0.3), ref_attention(q, k, v, {}, false, 0.3),
                    tol);
    // additive mask [Tq, Tk], broadcast over the batch
    Tensor mask = rnd({3, 5}, 23, dt);
    expect_near_all(scaled_dot_product_attention(q, k, v, mask), ref_attention(q, k, v, mask.to_vector<double>(), false, s0),
                    tol);
    // causal (top-left aligned: key j is seen by query i when j <= i)
    expect_near_all(scaled_dot_product_attention(q, k, v, Tensor(), true), ref_attention(q, k, v, {}, true, s0), tol);
    expect_near_all(scaled_dot_product_attention(q, k, v, mask, true),
                    ref_attention(q, k, v, mask.to_vector<double>(), true, s0), tol);
    // a bool mask keeps the positions where it is true
    Tensor keep = gt(rnd({3, 5}, 24, dt), -0.5);
    keep = logical_or(keep, eq(arange(5.0).reshape({1, 5}), 0.0));  // every query keeps key 0
    std::vector<double> additive;
    for (double b : keep.to_vector<double>()) additive.push_back(b != 0 ? 0.0 : -INFINITY);
    expect_near_all(scaled_dot_product_attention(q, k, v, keep), ref_attention(q, k, v, additive, false, s0), tol);
    // non-contiguous q, k, v
    Tensor qt = rnd({2, 4, 3}, 25, dt).transpose(1, 2), kt = rnd({5, 2, 4}, 26, dt).transpose(0, 1),
           vt = rnd({6, 5, 2}, 27, dt).permute({2, 1, 0});
    expect_near_all(scaled_dot_product_attention(qt, kt, vt), ref_attention(qt, kt, vt, {}, false, s0), tol);
  }
}

TEST(AttentionOps, AttentionBroadcastsBatchDims) {
  // q [2, 3, Tq, D] against k, v shared by the first batch dim
  Tensor q = rnd({2, 3, 4, 8}, 30), k = rnd({1, 3, 6, 8}, 31), v = rnd({3, 6, 5}, 32);
  Tensor y = scaled_dot_product_attention(q, k, v);
  ASSERT_EQ(y.sizes(), (Shape{2, 3, 4, 5}));
  Tensor want = scaled_dot_product_attention(q.reshape({6, 4, 8}), k.expand({2, 3, 6, 8}).reshape({6, 6, 8}),
                                             v.expand({2, 3, 6, 5}).reshape({6, 6, 5}));
  expect_near_all(y, want.to_vector<double>(), 1e-12);
  // a per-head mask [3, 1, Tk]
  Tensor mask = rnd({3, 1, 6}, 33);
  Tensor ym = scaled_dot_product_attention(q, k, v, mask);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h) {
      std::vector<double> m6 = mask[h].expand({4, 6}).contiguous().to_vector<double>();
      expect_near_all(ym[b][h], ref_attention(q[b][h].unsqueeze(0), k[0][h].unsqueeze(0), v[h].unsqueeze(0), m6, false,
                                              1 / std::sqrt(8.0)),
                      1e-12);
    }
}

TEST(AttentionOps, AttentionGradients) {
  Tensor q = leaf(rnd({2, 3, 4}, 40).transpose(1, 2));  // [2, 4, 3], non-contiguous
  Tensor k = leaf(rnd({2, 5, 3}, 41)), v = leaf(rnd({2, 5, 2}, 42));
  Tensor mask = leaf(rnd({4, 5}, 43));
  expect_grads([](const TensorList& in) { return scaled_dot_product_attention(in[0], in[1], in[2]); }, {q, k, v});
  expect_grads([](const TensorList& in) { return scaled_dot_product_attention(in[0], in[1], in[2], in[3]); },
               {q, k, v, mask});
  expect_grads([](const TensorList& in) { return scaled_dot_product_attention(in[0], in[1], in[2], Tensor(), true, 0.7); },
               {q, k, v});
  // causal with Tq > Tk, and broadcast k / v batch dims with a bool mask
  Tensor q6 = leaf(rnd({2, 6, 3}, 44)), k1 = leaf(rnd({1, 4, 3}, 45)), v1 = leaf(rnd({4, 2}, 46));
  Tensor keep = ne(arange(4.0).reshape({1, 4}), 2.0);
  expect_grads([&](const TensorList& in) { return scaled_dot_product_attention(in[0], in[1], in[2], keep, true); },
               {q6, k1, v1});
}

TEST(AttentionOps, AttentionErrors) {
  Tensor q = rnd({2, 3, 4}, 1, DType::f32), k = rnd({2, 5, 4}, 2, DType::f32), v = rnd({2, 5, 6}, 3, DType::f32);
  EXPECT_THROW(scaled_dot_product_attention(q, rnd({2, 5, 3}, 4, DType::f32), v), Error);  // D differs
  EXPECT_THROW(scaled_dot_product_attention(q, k, rnd({2, 4, 6}, 4, DType::f32)), Error);  // Tk differs
  EXPECT_THROW(scaled_dot_product_attention(q, rnd({3, 5, 4}, 4, DType::f32), v), Error);  // batch
  EXPECT_THROW(scaled_dot_product_attention(rnd({4}, 4, DType::f32), k, v), Error);        // 1-D
  EXPECT_THROW(scaled_dot_product_attention(q, k, v.to(DType::f64)), Error);               // dtype
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, rnd({3, 4}, 5, DType::f32)), Error);  // mask [Tq, Tk]?
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, rnd({4, 3, 5}, 5, DType::f32)), Error);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, ones({3, 5}, {.dtype = DType::i64})), Error);
  try {
    scaled_dot_product_attention(q, rnd({2, 5, 3}, 4, DType::f32), v);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scaled_dot_product_attention"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[2, 5, 3]"), std::string::npos);
  }
}
