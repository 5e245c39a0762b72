// Normalization ops: layer_norm, group_norm, batch_norm and dropout. Forward values against
// naive loops in double, gradients by gradcheck and gradgradcheck in f64 (weight and bias
// included, non-contiguous inputs), batch_norm's running statistics and eval mode, dropout's
// statistics and determinism, and the error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ember/ember.h"
#include "ember/ops/norm.h"

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
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], want[i], tol) << "element " << i;
}

void expect_grads(const TensorFunction& f, const TensorList& inputs) {
  GradcheckResult r1 = gradcheck(f, inputs);
  EXPECT_TRUE(r1.ok) << r1.message;
  GradcheckResult r2 = gradgradcheck(f, inputs);
  EXPECT_TRUE(r2.ok) << r2.message;
}

// Normalizes each of the R rows of length M of v (row-major); w, b indexed by j(r, i).
template <typename WIdx>
std::vector<double> normalize_rows(const std::vector<double>& v, int64_t R, int64_t M, double eps,
                                   const std::vector<double>& w, const std::vector<double>& b, WIdx widx) {
  std::vector<double> out(v.size());
  for (int64_t r = 0; r < R; ++r) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < M; ++i) mu += v[r * M + i];
    mu /= M;
    for (int64_t i = 0; i < M; ++i) var += (v[r * M + i] - mu) * (v[r * M + i] - mu);
    var /= M;
    for (int64_t i = 0; i < M; ++i) {
      double y = (v[r * M + i] - mu) / std::sqrt(var + eps);
      int64_t j = widx(r, i);
      if (!w.empty()) y *= w[j];
      if (!b.empty()) y += b[j];
      out[r * M + i] = y;
    }
  }
  return out;
}

std::vector<double> ref_layer_norm(const Tensor& x, int64_t M, const Tensor& w, const Tensor& b, double eps) {
  std::vector<double> wv = w.defined() ? w.to_vector<double>() : std::vector<double>();
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>();
  return normalize_rows(x.to_vector<double>(), x.numel() / M, M, eps, wv, bv, [&](int64_t, int64_t i) { return i; });
}

std::vector<double> ref_group_norm(const Tensor& x, int64_t G, const Tensor& w, const Tensor& b, double eps) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C), M = C / G * S;
  std::vector<double> wv = w.defined() ? w.to_vector<double>() : std::vector<double>();
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>();
  // row r = (n, g); element i of the row is channel g * C/G + i / S
  return normalize_rows(x.to_vector<double>(), N * G, M, eps, wv, bv,
                        [&](int64_t r, int64_t i) { return (r % G) * (C / G) + i / S; });
}

// Per-channel mean and biased variance of x [N, C, ...].
void channel_moments(const Tensor& x, std::vector<double>& mu, std::vector<double>& var) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  std::vector<double> v = x.to_vector<double>();
  mu.assign(C, 0);
  var.assign(C, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) mu[c] += v[(n * C + c) * S + s];
  for (int64_t c = 0; c < C; ++c) mu[c] /= N * S;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) var[c] += std::pow(v[(n * C + c) * S + s] - mu[c], 2);
  for (int64_t c = 0; c < C; ++c) var[c] /= N * S;
}

std::vector<double> ref_batch_norm(const Tensor& x, const std::vector<double>& mu, const std::vector<double>& var,
                                   const Tensor& w, const Tensor& b, double eps) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  std::vector<double> v = x.to_vector<double>(), out(v.size());
  std::vector<double> wv = w.defined() ? w.to_vector<double>() : std::vector<double>(C, 1.0);
  std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) {
        int64_t i = (n * C + c) * S + s;
        out[i] = (v[i] - mu[c]) / std::sqrt(var[c] + eps) * wv[c] + bv[c];
      }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// layer_norm

TEST(NormOps, LayerNormForwardMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = rnd({3, 4, 5}, 1, dt), w = rnd({4, 5}, 2, dt), b = rnd({4, 5}, 3, dt);
    expect_near_all(layer_norm(x, {4, 5}, w, b), ref_layer_norm(x, 20, w, b, 1e-5), tol);
    expect_near_all(layer_norm(x, {5}), ref_layer_norm(x, 5, Tensor(), Tensor(), 1e-5), tol);
    Tensor w5 = rnd({5}, 4, dt);
    expect_near_all(layer_norm(x, {5}, w5, Tensor(), 1e-3), ref_layer_norm(x, 5, w5, Tensor(), 1e-3), tol);
    Tensor b5 = rnd({5}, 5, dt);
    expect_near_all(layer_norm(x, {5}, Tensor(), b5), ref_layer_norm(x, 5, Tensor(), b5, 1e-5), tol);
    // a non-contiguous input
    Tensor xt = rnd({5, 4, 3}, 6, dt).permute({2, 1, 0});
    expect_near_all(layer_norm(xt, {4, 5}, w, b), ref_layer_norm(xt, 20, w, b, 1e-5), tol);
  }
}

TEST(NormOps, LayerNormLargeOffsetStaysAccurateInF32) {
  Tensor x = add(rnd({4, 256}, 7, DType::f32), 1000.0);
  expect_near_all(layer_norm(x, {256}), ref_layer_norm(x, 256, Tensor(), Tensor(), 1e-5), 2e-3);
}

TEST(NormOps, LayerNormGradients) {
  Tensor x = leaf(rnd({2, 4, 3}, 10).transpose(1, 2));  // [2, 3, 4], non-contiguous
  Tensor w = leaf(rnd({4}, 11)), b = leaf(rnd({4}, 12));
  expect_grads([](const TensorList& in) { return layer_norm(in[0], {4}, in[1], in[2]); }, {x, w, b});
  Tensor w2 = leaf(rnd({3, 4}, 13)), b2 = leaf(rnd({3, 4}, 14));
  expect_grads([](const TensorList& in) { return layer_norm(in[0], {3, 4}, in[1], in[2], 1e-3); }, {x, w2, b2});
  expect_grads([](const TensorList& in) { return layer_norm(in[0], {4}); }, {x});
  // only the parameters need grad
  Tensor xc = rnd({3, 4}, 15);
  expect_grads([](const TensorList& in) { return layer_norm(in[0], {4}, in[1], in[2]); }, {xc, w, b});
}

TEST(NormOps, LayerNormErrors) {
  Tensor x = rnd({2, 3, 4}, 1, DType::f32);
  EXPECT_THROW(layer_norm(x, {3}), Error);                                   // not the trailing dims
  EXPECT_THROW(layer_norm(x, {}), Error);                                    // empty
  EXPECT_THROW(layer_norm(x, {5, 2, 3, 4}), Error);                          // too many dims
  EXPECT_THROW(layer_norm(x, {4}, rnd({3}, 2, DType::f32)), Error);          // weight shape
  EXPECT_THROW(layer_norm(x, {4}, Tensor(), rnd({4}, 2, DType::f64)), Error);  // bias dtype
  EXPECT_THROW(layer_norm(ones({2, 4}, {.dtype = DType::i64}), {4}), Error);   // integer input
  try {
    layer_norm(x, {3});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer_norm"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[2, 3, 4]"), std::string::npos);
  }
}

// ------------------------------------------------------------------------------------------
// group_norm

TEST(NormOps, GroupNormForwardMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = rnd({2, 6, 3, 2}, 20, dt), w = rnd({6}, 21, dt), b = rnd({6}, 22, dt);
    for (int64_t G : {1, 2, 3, 6}) expect_near_all(group_norm(x, G, w, b), ref_group_norm(x, G, w, b, 1e-5), tol);
    expect_near_all(group_norm(x, 3), ref_group_norm(x, 3, Tensor(), Tensor(), 1e-5), tol);
    Tensor x2 = rnd({3, 4}, 23, dt);  // no spatial dims
    expect_near_all(group_norm(x2, 2, w.slice(0, 0, 4), Tensor()), ref_group_norm(x2, 2, w.slice(0, 0, 4), Tensor(), 1e-5),
                    tol);
    Tensor xt = rnd({2, 3, 6, 2}, 24, dt).transpose(1, 2);  // [2, 6, 3, 2], non-contiguous
    expect_near_all(group_norm(xt, 2, w, b), ref_group_norm(xt, 2, w, b, 1e-5), tol);
  }
}

TEST(NormOps, GroupNormGradients) {
  Tensor x = leaf(rnd({2, 3, 4}, 30).transpose(1, 2));  // [2, 4, 3], non-contiguous
  Tensor w = leaf(rnd({4}, 31)), b = leaf(rnd({4}, 32));
  expect_grads([](const TensorList& in) { return group_norm(in[0], 2, in[1], in[2]); }, {x, w, b});
  expect_grads([](const TensorList& in) { return group_norm(in[0], 1); }, {x});
  Tensor x4 = leaf(rnd({2, 4, 2, 2}, 33));
  expect_grads([](const TensorList& in) { return group_norm(in[0], 4, in[1], in[2], 1e-2); }, {x4, w, b});
  // Where only some inputs want gradients the backward computes only theirs (the bias's alone
  // needs no normalization): each such subset, the others constants.
  const Tensor xc = x.detach(), wc = w.detach(), bc = b.detach();
  expect_grads([&](const TensorList& in) { return group_norm(xc, 2, wc, in[0]); }, {b});
  expect_grads([&](const TensorList& in) { return group_norm(xc, 2, in[0], in[1]); }, {w, b});
  expect_grads([&](const TensorList& in) { return group_norm(in[0], 2, wc, bc); }, {x});
}

TEST(NormOps, GroupNormErrors) {
  Tensor x = rnd({2, 6, 3}, 1, DType::f32);
  EXPECT_THROW(group_norm(x, 4), Error);                                // 6 % 4 != 0
  EXPECT_THROW(group_norm(x, 0), Error);
  EXPECT_THROW(group_norm(rnd({6}, 1, DType::f32), 2), Error);          // no channel dim
  EXPECT_THROW(group_norm(x, 3, rnd({3}, 2, DType::f32)), Error);      // weight [C]
  EXPECT_THROW(group_norm(x, 3, Tensor(), rnd({6, 1}, 2, DType::f32)), Error);
}

// ------------------------------------------------------------------------------------------
// group_norm_silu

// silu(group_norm(x + t[n, c])) through the reference GroupNorm.
std::vector<double> ref_group_norm_silu(const Tensor& x, int64_t G, const Tensor& w, const Tensor& b, const Tensor& t,
                                        bool apply_silu) {
  Shape nc{x.size(0), x.size(1)};
  for (int64_t i = 2; i < x.dim(); ++i) nc.push_back(1);
  Tensor u = t.defined() ? add(x, t.reshape(nc)) : x;
  std::vector<double> y = ref_group_norm(u, G, w, b, 1e-5);
  if (apply_silu)
    for (double& v : y) v = v / (1 + std::exp(-v));
  return y;
}

TEST(NormOps, GroupNormSiluForwardMatchesReference) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = rnd({3, 6, 5, 3}, 120, dt), w = rnd({6}, 121, dt), b = rnd({6}, 122, dt), t = rnd({3, 6}, 123, dt);
    expect_near_all(group_norm_silu(x, 3, w, b, t), ref_group_norm_silu(x, 3, w, b, t, true), tol);
    expect_near_all(group_norm_silu(x, 2, w, b, t, 1e-5, false), ref_group_norm_silu(x, 2, w, b, t, false), tol);
    expect_near_all(group_norm_silu(x, 6), ref_group_norm_silu(x, 6, Tensor(), Tensor(), Tensor(), true), tol);
    Tensor xt = rnd({3, 5, 6, 3}, 124, dt).transpose(1, 2);  // non-contiguous
    expect_near_all(group_norm_silu(xt, 3, w, Tensor(), t), ref_group_norm_silu(xt, 3, w, Tensor(), t, true), tol);
  }
}

TEST(NormOps, GroupNormSiluGradients) {
  Tensor x = leaf(rnd({2, 3, 4}, 130).transpose(1, 2));  // [2, 4, 3], non-contiguous
  Tensor w = leaf(rnd({4}, 131)), b = leaf(rnd({4}, 132)), t = leaf(rnd({2, 4}, 133));
  expect_grads([](const TensorList& in) { return group_norm_silu(in[0], 2, in[1], in[2], in[3]); }, {x, w, b, t});
  expect_grads([](const TensorList& in) { return group_norm_silu(in[0], 2, in[1], in[2], in[3], 1e-5, false); },
               {x, w, b, t});
  expect_grads([](const TensorList& in) { return group_norm_silu(in[0], 1); }, {x});
  Tensor x4 = leaf(rnd({2, 4, 2, 3}, 134));
  expect_grads([](const TensorList& in) { return group_norm_silu(in[0], 4, in[1], Tensor(), in[2], 1e-2); },
               {x4, w, t});
}

TEST(NormOps, GroupNormSiluErrors) {
  Tensor x = rnd({2, 6, 3}, 1, DType::f32);
  EXPECT_THROW(group_norm_silu(x, 4), Error);
  EXPECT_THROW(group_norm_silu(x, 3, Tensor(), Tensor(), rnd({2, 3}, 2, DType::f32)), Error);  // sample_bias [N, C]
  EXPECT_THROW(group_norm_silu(x, 3, Tensor(), Tensor(), rnd({6}, 2, DType::f32)), Error);
  EXPECT_THROW(group_norm_silu(x, 3, Tensor(), Tensor(), rnd({2, 6}, 2, DType::f64)), Error);  // dtype
}

// ------------------------------------------------------------------------------------------
// batch_norm

TEST(NormOps, BatchNormTrainingForwardAndRunningStats) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (Shape s : {Shape{4, 3, 2, 5}, Shape{7, 3}}) {
      Tensor x = add(mul(rnd(s, 40, dt), 2.0), 0.5);
      Tensor w = rnd({3}, 41, dt), b = rnd({3}, 42, dt);
      Tensor rm = rnd({3}, 43, dt), rv = add(rand({3}, {.dtype = dt}), 0.5);
      std::vector<double> rm0 = rm.to_vector<double>(), rv0 = rv.to_vector<double>();
      const uint64_t ver = rm.version();
      std::vector<double> mu, var;
      channel_moments(x, mu, var);
      Tensor y = batch_norm(x, rm, rv, w, b, /*training=*/true, /*momentum=*/0.2);
      expect_near_all(y, ref_batch_norm(x, mu, var, w, b, 1e-5), tol);
      const double n = static_cast<double>(x.numel() / 3);
      std::vector<double> want_m(3), want_v(3);
      for (int c = 0; c < 3; ++c) {
        want_m[c] = 0.8 * rm0[c] + 0.2 * mu[c];
        want_v[c] = 0.8 * rv0[c] + 0.2 * var[c] * n / (n - 1);  // unbiased
      }
      expect_near_all(rm, want_m, tol);
      expect_near_all(rv, want_v, tol);
      EXPECT_GT(rm.version(), ver);
      EXPECT_FALSE(rm.requires_grad());
      // without running stats and without affine parameters
      expect_near_all(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true),
                      ref_batch_norm(x, mu, var, Tensor(), Tensor(), 1e-5), tol);
    }
  }
}

TEST(NormOps, BatchNormRunningStatsConvergeAndEvalUsesThem) {
  // Many training steps on batches of one distribution: running stats approach its mean and
  // variance; eval then normalizes with them.
  Tensor rm = zeros({2}), rv = ones({2});
  Generator g(50);
  for (int it = 0; it < 200; ++it) {
    Tensor x = add(mul(randn({64, 2, 4}, {}, &g), 3.0), 2.0);
    batch_norm(x, rm, rv, Tensor(), Tensor(), true, 0.1);
  }
  for (double m : rm.to_vector<double>()) EXPECT_NEAR(m, 2.0, 0.15);
  for (double v : rv.to_vector<double>()) EXPECT_NEAR(v, 9.0, 0.8);

  Tensor x = rnd({3, 2, 4}, 51, DType::f32), w = rnd({2}, 52, DType::f32), b = rnd({2}, 53, DType::f32);
  std::vector<double> before = rm.to_vector<double>();
  Tensor y = batch_norm(x, rm, rv, w, b, /*training=*/false);
  expect_near_all(y, ref_batch_norm(x, rm.to_vector<double>(), rv.to_vector<double>(), w, b, 1e-5), 1e-5);
  expect_near_all(rm, before, 0.0);  // eval leaves the running stats alone
}

TEST(NormOps, BatchNormGradients) {
  Tensor x = leaf(rnd({3, 4, 2}, 60).transpose(1, 2));  // [3, 2, 4], non-contiguous
  Tensor w = leaf(rnd({2}, 61)), b = leaf(rnd({2}, 62));
  Tensor rm = rnd({2}, 63), rv = add(rand({2}, {.dtype = DType::f64}), 0.5);
  // training: fresh running stats each call, so the in-place update does not accumulate
  expect_grads([&](const TensorList& in) {
    Tensor m = rm.clone(), v = rv.clone();
    return batch_norm(in[0], m, v, in[1], in[2], true);
  }, {x, w, b});
  Tensor x2 = leaf(rnd({5, 3}, 64));
  Tensor w3 = leaf(rnd({3}, 65)), b3 = leaf(rnd({3}, 66));
  expect_grads([](const TensorList& in) { return batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true); },
               {x2, w3, b3});
  expect_grads([](const TensorList& in) { return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
               {x2});
  // eval: an affine map of x with constant statistics
  expect_grads([&](const TensorList& in) { return batch_norm(in[0], rm, rv, in[1], in[2], false); }, {x, w, b});
}

TEST(NormOps, BatchNormErrors) {
  Tensor x = rnd({4, 3, 2}, 1, DType::f32);
  Tensor rm = zeros({3}), rv = ones({3});
  EXPECT_THROW(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false), Error);  // eval needs stats
  EXPECT_THROW(batch_norm(x, rm, Tensor(), Tensor(), Tensor(), true), Error);         // one of the two
  EXPECT_THROW(batch_norm(x, zeros({4}), ones({4}), Tensor(), Tensor(), true), Error);
  EXPECT_THROW(batch_norm(x, rm, rv, ones({2}), Tensor(), true), Error);
  EXPECT_THROW(batch_norm(x, rm, rv, Tensor(), Tensor(), true, 0.1, -1.0), Error);
  EXPECT_THROW(batch_norm(rnd({1, 3}, 2, DType::f32), rm, rv, Tensor(), Tensor(), true), Error);  // one value
  EXPECT_THROW(batch_norm(rnd({4}, 2, DType::f32), Tensor(), Tensor(), Tensor(), Tensor(), true), Error);
  EXPECT_THROW(batch_norm(x, zeros({3}, {.dtype = DType::f64}), ones({3}, {.dtype = DType::f64}), Tensor(), Tensor(),
                          true),
               Error);
  // one value per channel is fine in eval
  EXPECT_NO_THROW(batch_norm(rnd({1, 3}, 2, DType::f32), rm, rv, Tensor(), Tensor(), false));
}

// ------------------------------------------------------------------------------------------
// dropout

TEST(NormOps, DropoutStatisticsAndDeterminism) {
  const double p = 0.3;
  Tensor x = add(rand({200000}, {}, nullptr), 0.5);
  Generator g1(77), g2(77), g3(78);
  Tensor y1 = dropout(x, p, true, &g1), y2 = dropout(x, p, true, &g2), y3 = dropout(x, p, true, &g3);
  std::vector<double> xv = x.to_vector<double>(), a = y1.to_vector<double>(), b = y2.to_vector<double>(),
                      c = y3.to_vector<double>();
  int64_t zeros1 = 0, differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == 0) ++zeros1;
    else ASSERT_NEAR(a[i], xv[i] / (1 - p), 1e-6 * xv[i]);
    ASSERT_EQ(a[i], b[i]);  // same seed, same mask
    if ((a[i] == 0) != (c[i] == 0)) ++differ;
  }
  const double frac = static_cast<double>(zeros1) / a.size();
  EXPECT_NEAR(frac, p, 0.005);  // ~5 standard deviations
  EXPECT_GT(differ, 1000);      // another seed, another mask
  // the mean is preserved in expectation
  EXPECT_NEAR(mean(y1).item(), mean(x).item(), 0.01);
  // the generator moved on: a second draw differs
  Tensor y4 = dropout(x, p, true, &g1);
  EXPECT_NE(y4.to_vector<double>(), a);
}

TEST(NormOps, DropoutIdentityInEvalOrZeroP) {
  Tensor x = rnd({5, 7}, 80, DType::f32);
  EXPECT_EQ(dropout(x, 0.5, false).to_vector<float>(), x.to_vector<float>());
  Generator g(1);
  EXPECT_EQ(dropout(x, 0.0, true, &g).to_vector<float>(), x.to_vector<float>());
  EXPECT_EQ(g.offset(), 0u);  // nothing drawn
}

TEST(NormOps, DropoutGradients) {
  Tensor x = leaf(rnd({6, 5}, 90).t());  // non-contiguous
  expect_grads([](const TensorList& in) {
    Generator g(1234);  // the same mask on every call
    return dropout(in[0], 0.4, true, &g);
  }, {x});
  // the gradient is the mask scaled by 1 / (1 - p)
  Generator g(5);
  Tensor y = dropout(x, 0.4, true, &g);
  Tensor gx = grad({sum(y)}, {x})[0];
  std::vector<double> yv = y.to_vector<double>(), gv = gx.to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(gv[i], yv[i] == 0 ? 0.0 : 1 / 0.6, 1e-12);
}

TEST(NormOps, DropoutErrors) {
  Tensor x = ones({4});
  EXPECT_THROW(dropout(x, 1.0, true), Error);
  EXPECT_THROW(dropout(x, -0.1, true), Error);
  EXPECT_THROW(dropout(x, 1.5, false), Error);
  EXPECT_THROW(dropout(ones({4}, {.dtype = DType::i64}), 0.5, true), Error);
}
