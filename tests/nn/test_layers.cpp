// nn layers (conv, norm, small layers, flow layers, DDPM attention side, weight wrappers) as
// PyTorch has them: parameter and buffer names, shapes and counts; default initialisation
// bounds; forward values against naive loops written here; train/eval behaviour; inverses and
// log-determinants against the Jacobian; first and second derivatives in f64 through the
// input and the parameters of every layer; errors that name the layer and the shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "ember/ember.h"
#include "ember/nn/attention.h"
#include "ember/nn/conv.h"
#include "ember/nn/flow.h"
#include "ember/nn/layers.h"
#include "ember/nn/norm.h"
#include "ember/nn/wrappers.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

std::vector<std::string> param_names(const nn::Module& m) {
  std::vector<std::string> n;
  for (auto& [k, v] : m.named_parameters()) n.push_back(k);
  return n;
}
std::vector<std::string> buffer_names(const nn::Module& m) {
  std::vector<std::string> n;
  for (auto& [k, v] : m.named_buffers()) n.push_back(k);
  return n;
}
Tensor param(const nn::Module& m, const std::string& name) {
  for (auto& [k, v] : m.named_parameters())
    if (k == name) return v;
  ADD_FAILURE() << "no parameter " << name;
  return Tensor();
}
double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}
double sample_std(const Tensor& t) {
  auto v = t.to_vector<double>();
  double s = 0, s2 = 0;
  for (double x : v) s += x;
  const double m = s / static_cast<double>(v.size());
  for (double x : v) s2 += (x - m) * (x - m);
  return std::sqrt(s2 / static_cast<double>(v.size()));
}
void expect_all_near(const Tensor& got, const std::vector<double>& want, double tol, const std::string& what) {
  auto g = got.to_vector<double>();
  ASSERT_EQ(g.size(), want.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], tol) << what << " element " << i;
}
void expect_all_near(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  expect_all_near(got, want.to_vector<double>(), tol, what);
}
// Overwrites a parameter with seeded normal values (scaled), keeping it a leaf.
void randomize(Tensor& p, uint64_t seed, double scale = 1.0, double shift = 0.0) {
  NoGrad ng;
  p.copy_(add(mul(rnd(p.sizes(), seed, p.dtype()), scale), shift));
}
// The message of the ember::Error that f throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
#define EXPECT_ERROR_MENTIONS(stmt, a, b)                                \
  do {                                                                   \
    std::string msg_ = error_of([&] { (void)(stmt); });                  \
    EXPECT_NE(msg_.find(a), std::string::npos) << "message: " << msg_;  \
    EXPECT_NE(msg_.find(b), std::string::npos) << "message: " << msg_;  \
  } while (0)

// log|det| of the Jacobian of a map [N, C, H, W] -> same, by autograd (tiny inputs only).
double logdet_of_jacobian(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  Tensor J = jacobian([&](const Tensor& flat) { return f(flat.reshape(x.sizes())).reshape({-1}); }, x.reshape({-1}));
  return slogdet(J).second.item();
}

// Naive convolutions (f64 loops) with PyTorch's semantics.
std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p, int64_t d,
                                 int64_t g, Shape& out_shape) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), K = w.size(2), Og = O / g;
  const int64_t OH = (H + 2 * p - d * (K - 1) - 1) / s + 1, OW = (W + 2 * p - d * (K - 1) - 1) / s + 1;
  auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> y(N * O * OH * OW, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bv[o];
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < K; ++i)
              for (int64_t j = 0; j < K; ++j) {
                const int64_t ih = oh * s - p + i * d, iw = ow * s - p + j * d;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t ci = (o / Og) * Cg + c;
                acc += xv[((n * C + ci) * H + ih) * W + iw] * wv[((o * Cg + c) * K + i) * K + j];
              }
          y[((n * O + o) * OH + oh) * OW + ow] = acc;
        }
  out_shape = {N, O, OH, OW};
  return y;
}
std::vector<double> naive_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p,
                                           int64_t op, int64_t g, int64_t d, Shape& out_shape) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Og = w.size(1), K = w.size(2), O = Og * g, Cg = C / g;
  const int64_t OH = (H - 1) * s - 2 * p + d * (K - 1) + op + 1, OW = (W - 1) * s - 2 * p + d * (K - 1) + op + 1;
  auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> y(N * O * OH * OW, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t k = 0; k < OH * OW; ++k) y[(n * O + o) * OH * OW + k] = bv[o];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t ol = 0; ol < Og; ++ol)
            for (int64_t i = 0; i < K; ++i)
              for (int64_t j = 0; j < K; ++j) {
                const int64_t oh = ih * s - p + i * d, ow = iw * s - p + j * d;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                const int64_t o = (c / Cg) * Og + ol;
                y[((n * O + o) * OH + oh) * OW + ow] +=
                    xv[((n * C + c) * H + ih) * W + iw] * wv[((c * Og + ol) * K + i) * K + j];
              }
  out_shape = {N, O, OH, OW};
  return y;
}

}  // namespace

TEST(NnLayers, ParameterNamesShapesAndCountsMatchPyTorch) {
  using Names = std::vector<std::string>;
  manual_seed(1);
  nn::Conv2d c(3, 8, 3);  // PyTorch: weight [8, 3, 3, 3], bias [8]
  EXPECT_EQ(param_names(c), (Names{"weight", "bias"}));
  EXPECT_EQ(c.weight.sizes(), (Shape{8, 3, 3, 3}));
  EXPECT_EQ(c.bias.sizes(), (Shape{8}));
  EXPECT_EQ(c.num_parameters(), 224);
  nn::Conv2d cg(4, 8, 3, 1, 0, 1, 2, /*bias=*/false);
  EXPECT_EQ(param_names(cg), (Names{"weight"}));
  EXPECT_EQ(cg.weight.sizes(), (Shape{8, 2, 3, 3}));
  nn::ConvTranspose2d t(4, 6, 3, 2, 1, 1, 2);  // weight [in, out / groups, k, k]
  EXPECT_EQ(param_names(t), (Names{"weight", "bias"}));
  EXPECT_EQ(t.weight.sizes(), (Shape{4, 3, 3, 3}));
  EXPECT_EQ(t.bias.sizes(), (Shape{6}));
  EXPECT_EQ(t.num_parameters(), 114);

  nn::GroupNorm gn(2, 6);
  EXPECT_EQ(param_names(gn), (Names{"weight", "bias"}));
  EXPECT_EQ(nn::GroupNorm(2, 6, 1e-5, false).num_parameters(), 0);
  nn::BatchNorm2d bn(5);
  EXPECT_EQ(param_names(bn), (Names{"weight", "bias"}));
  EXPECT_EQ(buffer_names(bn), (Names{"running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(bn.num_batches_tracked.dtype(), DType::i64);
  EXPECT_EQ(bn.num_batches_tracked.dim(), 0);
  EXPECT_EQ(bn.state_dict().size(), 5u);
  nn::BatchNorm1d bn1(4, 1e-5, 0.1, /*affine=*/false);
  EXPECT_EQ(bn1.num_parameters(), 0);
  EXPECT_EQ(buffer_names(bn1).size(), 3u);
  nn::LayerNorm ln({3, 4});
  EXPECT_EQ(ln.weight.sizes(), (Shape{3, 4}));
  EXPECT_EQ(ln.num_parameters(), 24);
  EXPECT_EQ(nn::Dropout(0.1).num_parameters() + nn::Upsample(2).num_parameters() + nn::AvgPool2d(2).num_parameters() +
                nn::Flatten().num_parameters(),
            0);

  nn::SelfAttention2d att(64);  // the reference's Attn(64): n, qkv, o
  EXPECT_EQ(param_names(att), (Names{"n.weight", "n.bias", "qkv.weight", "qkv.bias", "o.weight", "o.bias"}));
  EXPECT_EQ(param(att, "qkv.weight").sizes(), (Shape{192, 64, 1, 1}));
  EXPECT_EQ(att.num_parameters(), 2 * 64 + 192 * 64 + 192 + 64 * 64 + 64);
  EXPECT_EQ(nn::SinusoidalEmbedding(16).num_parameters(), 0);

  nn::ActNorm a(3);
  EXPECT_EQ(param_names(a), (Names{"loc", "log_scale"}));
  EXPECT_EQ(a.loc.sizes(), (Shape{1, 3, 1, 1}));
  EXPECT_EQ(buffer_names(a), (Names{"initialized"}));
  nn::Invertible1x1Conv inv(4);
  EXPECT_EQ(param_names(inv), (Names{"lower", "upper", "log_s"}));
  EXPECT_EQ(buffer_names(inv), (Names{"p", "sign_s"}));

  nn::WeightNorm wn(std::make_shared<nn::Conv2d>(3, 5, 3));
  EXPECT_EQ(param_names(wn), (Names{"weight_g", "weight_v", "module.bias"}));
  EXPECT_EQ(wn.weight_g.sizes(), (Shape{5, 1, 1, 1}));  // PyTorch's weight_norm(dim=0)
  EXPECT_EQ(wn.weight_v.sizes(), (Shape{5, 3, 3, 3}));
  nn::SpectralNorm sn(std::make_shared<nn::Linear>(6, 4));
  EXPECT_EQ(param_names(sn), (Names{"weight_orig", "module.bias"}));
  EXPECT_EQ(buffer_names(sn), (Names{"u", "v"}));
  EXPECT_EQ(sn.u.sizes(), (Shape{4}));
  EXPECT_EQ(sn.v.sizes(), (Shape{6}));
}

TEST(NnLayers, DefaultInitialisationIsPyTorchs) {
  manual_seed(2);
  // Conv2d: U(+-1/sqrt(fan_in)) for weight and bias, fan_in = in / groups * k * k = 4 * 9.
  nn::Conv2d c(16, 32, 3, 1, 1, 1, 4);
  const double bc = 1.0 / std::sqrt(36.0);
  EXPECT_LE(max_abs(c.weight), bc);
  EXPECT_GT(max_abs(c.weight), 0.95 * bc);  // 1152 draws fill the interval
  EXPECT_NEAR(sample_std(c.weight), bc / std::sqrt(3.0), 0.08 * bc / std::sqrt(3.0));
  EXPECT_LE(max_abs(c.bias), bc);
  EXPECT_GT(max_abs(c.bias), 0.6 * bc);
  // ConvTranspose2d: PyTorch's fan_in comes from weight dim 1 = out / groups: 6 * 9 = 54
  // (not in / groups * k * k = 36, which would give a wider interval).
  nn::ConvTranspose2d t(8, 12, 3, 1, 0, 0, 2);
  const double bt = 1.0 / std::sqrt(54.0);
  EXPECT_LE(max_abs(t.weight), bt);
  EXPECT_GT(max_abs(t.weight), 0.95 * bt);
  EXPECT_LE(max_abs(t.bias), bt);
  EXPECT_GT(max_abs(t.bias), 0.5 * bt);
  // norms: weight 1, bias 0; running statistics 0 and 1.
  nn::GroupNorm g(2, 4);
  nn::BatchNorm2d b(4);
  nn::LayerNorm l({4});
  for (nn::Module* m : std::initializer_list<nn::Module*>{&g, &b, &l}) {
    EXPECT_EQ(param(*m, "weight").to_vector<double>(), std::vector<double>(4, 1.0));
    EXPECT_EQ(param(*m, "bias").to_vector<double>(), std::vector<double>(4, 0.0));
  }
  EXPECT_EQ(b.running_mean.to_vector<double>(), std::vector<double>(4, 0.0));
  EXPECT_EQ(b.running_var.to_vector<double>(), std::vector<double>(4, 1.0));
  EXPECT_EQ(b.num_batches_tracked.item(), 0.0);
}

TEST(NnLayers, ConvLayersComputeTheNaiveConvolution) {
  manual_seed(3);
  nn::Conv2d c(4, 6, 3, /*stride=*/2, /*padding=*/2, /*dilation=*/2, /*groups=*/2);
  c.to(DType::f64);
  Tensor x = rnd({2, 4, 7, 6}, 4, DType::f64);
  Shape s;
  auto want = naive_conv2d(x, c.weight, c.bias, 2, 2, 2, 2, s);
  Tensor y = c(x);
  ASSERT_EQ(y.sizes(), s);
  expect_all_near(y, want, 1e-12, "Conv2d");
  EXPECT_EQ(c(x.select(0, 1)).sizes(), (Shape{6, s[2], s[3]}));  // a [C, H, W] input

  // ConvTranspose2d(in 4, out 6, k 3, stride 2, padding 1, output_padding 1, groups 2, bias, dilation 2)
  nn::ConvTranspose2d t(4, 6, 3, 2, 1, 1, 2, true, 2);
  t.to(DType::f64);
  Tensor xt = rnd({2, 4, 3, 4}, 5, DType::f64);
  auto want_t = naive_conv_transpose2d(xt, t.weight, t.bias, 2, 1, 1, 2, 2, s);
  Tensor yt = t(xt);
  ASSERT_EQ(yt.sizes(), s);
  EXPECT_EQ(s, (Shape{2, 6, 8, 10}));  // (H - 1) * 2 - 2 + 2 * 2 + 1 + 1
  expect_all_near(yt, want_t, 1e-12, "ConvTranspose2d");
  // with stride 2 and kernel 4, padding 1 it exactly doubles the size (the DCGAN upsampler)
  EXPECT_EQ(nn::ConvTranspose2d(3, 2, 4, 2, 1)(rnd({1, 3, 5, 6}, 6)).sizes(), (Shape{1, 2, 10, 12}));
}

TEST(NnLayers, NormLayersComputeTheNaiveStatistics) {
  manual_seed(7);
  const int64_t N = 2, C = 6, H = 2, W = 3, G = 3;
  Tensor x = add(mul(rnd({N, C, H, W}, 8, DType::f64), 2.0), 1.0);
  auto xv = x.to_vector<double>();
  const double eps = 1e-5;

  nn::GroupNorm gn(G, C);
  gn.to(DType::f64);
  randomize(gn.weight, 9, 0.5, 1.0);
  randomize(gn.bias, 10);
  {
    auto w = gn.weight.to_vector<double>(), b = gn.bias.to_vector<double>();
    std::vector<double> want(xv.size());
    const int64_t cg = C / G, m = cg * H * W;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t base = (n * C + g * cg) * H * W;
        double mu = 0, var = 0;
        for (int64_t i = 0; i < m; ++i) mu += xv[base + i] / m;
        for (int64_t i = 0; i < m; ++i) var += (xv[base + i] - mu) * (xv[base + i] - mu) / m;
        for (int64_t i = 0; i < m; ++i) {
          const int64_t ch = g * cg + i / (H * W);
          want[base + i] = (xv[base + i] - mu) / std::sqrt(var + eps) * w[ch] + b[ch];
        }
      }
    expect_all_near(gn(x), want, 1e-10, "GroupNorm");
  }

  nn::LayerNorm ln({H, W});
  ln.to(DType::f64);
  randomize(ln.weight, 11, 0.5, 1.0);
  randomize(ln.bias, 12);
  {
    auto w = ln.weight.to_vector<double>(), b = ln.bias.to_vector<double>();
    std::vector<double> want(xv.size());
    const int64_t m = H * W;
    for (int64_t r = 0; r < N * C; ++r) {
      double mu = 0, var = 0;
      for (int64_t i = 0; i < m; ++i) mu += xv[r * m + i] / m;
      for (int64_t i = 0; i < m; ++i) var += (xv[r * m + i] - mu) * (xv[r * m + i] - mu) / m;
      for (int64_t i = 0; i < m; ++i) want[r * m + i] = (xv[r * m + i] - mu) / std::sqrt(var + eps) * w[i] + b[i];
    }
    expect_all_near(ln(x), want, 1e-10, "LayerNorm");
  }

  nn::BatchNorm2d bn(C);
  bn.to(DType::f64);
  randomize(bn.weight, 13, 0.5, 1.0);
  randomize(bn.bias, 14);
  {  // training: per-channel batch statistics (biased variance)
    auto w = bn.weight.to_vector<double>(), b = bn.bias.to_vector<double>();
    std::vector<double> want(xv.size());
    for (int64_t c = 0; c < C; ++c) {
      double mu = 0, var = 0;
      const double m = static_cast<double>(N * H * W);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < H * W; ++i) mu += xv[(n * C + c) * H * W + i] / m;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < H * W; ++i) {
          double dlt = xv[(n * C + c) * H * W + i] - mu;
          var += dlt * dlt / m;
        }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < H * W; ++i) {
          const int64_t k = (n * C + c) * H * W + i;
          want[k] = (xv[k] - mu) / std::sqrt(var + eps) * w[c] + b[c];
        }
    }
    expect_all_near(bn(x), want, 1e-10, "BatchNorm2d (training)");
  }
}

TEST(NnLayers, BatchNormRunningStatisticsTrainAndEval) {
  manual_seed(15);
  const int64_t N = 4, C = 3, L = 5;
  nn::BatchNorm1d bn(C);  // [N, C, L] input
  bn.to(DType::f64);
  EXPECT_EQ(bn.num_batches_tracked.dtype(), DType::i64);  // to(f64) leaves the counter alone
  Tensor x1 = add(mul(rnd({N, C, L}, 16, DType::f64), 3.0), 2.0);
  Tensor x2 = sub(mul(rnd({N, C, L}, 17, DType::f64), 0.5), 1.0);
  auto stats = [&](const Tensor& x) {  // per-channel mean and unbiased variance
    std::vector<double> m(C, 0.0), v(C, 0.0);
    auto xv = x.to_vector<double>();
    const double n = static_cast<double>(N * L);
    for (int64_t k = 0; k < N * C * L; ++k) m[(k / L) % C] += xv[k] / n;
    for (int64_t k = 0; k < N * C * L; ++k) {
      const double d = xv[k] - m[(k / L) % C];
      v[(k / L) % C] += d * d / (n - 1);
    }
    return std::make_pair(m, v);
  };
  Tensor y1 = bn(x1);
  Tensor y1_again;
  {  // training output depends on the batch only, not on the running statistics
    NoGrad ng;
    bn.running_mean.fill_(100.0);
    y1_again = bn(x1);
  }
  expect_all_near(y1_again, y1, 1e-12, "training output");
  {
    NoGrad ng;
    bn.running_mean.zero_();
    bn.running_var.fill_(1.0);
    bn.num_batches_tracked.zero_();
  }
  bn(x1);
  bn(x2);
  EXPECT_EQ(bn.num_batches_tracked.item(), 2.0);
  auto [m1, v1] = stats(x1);
  auto [m2, v2] = stats(x2);
  std::vector<double> rm(C), rv(C);
  for (int64_t c = 0; c < C; ++c) {  // momentum 0.1, twice, from (0, 1)
    rm[c] = 0.9 * (0.1 * m1[c]) + 0.1 * m2[c];
    rv[c] = 0.9 * (0.9 * 1.0 + 0.1 * v1[c]) + 0.1 * v2[c];
  }
  expect_all_near(bn.running_mean, rm, 1e-12, "running_mean");
  expect_all_near(bn.running_var, rv, 1e-12, "running_var (unbiased)");

  bn.eval();
  EXPECT_FALSE(bn.is_training());
  Tensor rm_before = bn.running_mean.clone();
  Tensor ye = bn(x1);
  auto xv = x1.to_vector<double>();
  std::vector<double> want(xv.size());
  for (int64_t k = 0; k < N * C * L; ++k) {
    const int64_t c = (k / L) % C;
    want[k] = (xv[k] - rm[c]) / std::sqrt(rv[c] + 1e-5);  // weight 1, bias 0
  }
  expect_all_near(ye, want, 1e-10, "eval output (running statistics)");
  expect_all_near(bn.running_mean, rm_before, 0.0, "running_mean untouched in eval");
  EXPECT_EQ(bn.num_batches_tracked.item(), 2.0);
  bn.train();
  EXPECT_TRUE(bn.is_training());

  nn::BatchNorm1d flat(C);  // [N, C]
  Tensor z = flat(add(mul(rnd({16, C}, 18), 4.0), 3.0));
  for (double m : mean(z, {0}).to_vector<double>()) EXPECT_NEAR(m, 0.0, 1e-5);
}

TEST(NnLayers, DropoutKeepsScalesAndIsTheIdentityInEval) {
  Generator g(19);
  const double p = 0.25;
  nn::Dropout d(p, &g);
  Generator gx(190);
  Tensor x = add(rand({4000}, {.dtype = DType::f64}, &gx), 1.0);  // never 0
  x.requires_grad_(true);
  const uint64_t offset = g.offset();
  Tensor y = d(x);
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  int64_t dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0) ++dropped;
    else EXPECT_NEAR(yv[i], xv[i] / (1 - p), 1e-12) << i;  // inverted dropout
  }
  EXPECT_NEAR(static_cast<double>(dropped) / 4000.0, p, 0.03);
  sum(y).backward();  // the gradient is the mask / (1 - p)
  auto gv = x.grad().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(gv[i], yv[i] == 0.0 ? 0.0 : 1 / (1 - p), 1e-12) << i;
  g.set_offset(offset);  // the same generator state gives the same mask
  EXPECT_EQ(d(x).to_vector<double>(), yv);
  EXPECT_NE(d(x).to_vector<double>(), yv);  // and the next draw another one
  d.eval();
  EXPECT_EQ(d(x).to_vector<double>(), xv);
  EXPECT_EQ(nn::Dropout(0.0)(x).to_vector<double>(), xv);
}

TEST(NnLayers, UpsampleAvgPoolFlattenValues) {
  Tensor x = arange(24.0, {.dtype = DType::f64}).reshape({1, 2, 3, 4});
  Tensor u = nn::Upsample(2)(x);
  ASSERT_EQ(u.sizes(), (Shape{1, 2, 6, 8}));
  auto uv = u.to_vector<double>(), xv = x.to_vector<double>();
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 8; ++j) EXPECT_EQ(uv[(c * 6 + i) * 8 + j], xv[(c * 3 + i / 2) * 4 + j / 2]);
  Tensor a = nn::AvgPool2d(2)(x);  // stride = kernel; the last row does not fit a window
  ASSERT_EQ(a.sizes(), (Shape{1, 2, 1, 2}));
  expect_all_near(a, {(0 + 1 + 4 + 5) / 4.0, (2 + 3 + 6 + 7) / 4.0, (12 + 13 + 16 + 17) / 4.0, (14 + 15 + 18 + 19) / 4.0},
                  1e-12, "AvgPool2d");
  Tensor a2 = nn::AvgPool2d(3, 1)(x);
  ASSERT_EQ(a2.sizes(), (Shape{1, 2, 1, 2}));
  expect_all_near(a2.select(1, 0).reshape({-1}), {5.0, 6.0}, 1e-12, "AvgPool2d(3, 1)");
  Tensor f = nn::Flatten()(x);
  EXPECT_EQ(f.sizes(), (Shape{1, 24}));
  EXPECT_EQ(f.to_vector<double>(), xv);
}

TEST(NnLayers, SecondOrderThroughConvAndNormLayers) {
  manual_seed(20);
  nn::Conv2d c(4, 4, 3, 2, 1, 2, 2);
  nn::ConvTranspose2d t(2, 4, 3, 2, 1, 1, 2, true, 1);
  nn::GroupNorm gn(2, 4);
  nn::BatchNorm2d bn(2);
  nn::LayerNorm ln({2, 3});
  for (nn::Module* m : std::initializer_list<nn::Module*>{&c, &t, &gn, &bn, &ln}) m->to(DType::f64);
  randomize(gn.weight, 21, 0.3, 1.0);
  randomize(gn.bias, 22, 0.3);
  randomize(bn.weight, 23, 0.3, 1.0);
  randomize(ln.weight, 24, 0.3, 1.0);
  // input and every parameter, each layer on its own
  expect_grads_ok([&](const TensorList& in) { return c(in[0]); }, {leaf64({1, 4, 5, 5}, 25), c.weight, c.bias});
  expect_grads_ok([&](const TensorList& in) { return t(in[0]); }, {leaf64({1, 2, 2, 2}, 26), t.weight, t.bias});
  expect_grads_ok([&](const TensorList& in) { return gn(in[0]); }, {leaf64({2, 4, 2, 1}, 27), gn.weight, gn.bias});
  expect_grads_ok([&](const TensorList& in) { return bn(in[0]); }, {leaf64({3, 2, 2, 1}, 28), bn.weight, bn.bias});
  expect_grads_ok([&](const TensorList& in) { return ln(in[0]); }, {leaf64({2, 2, 3}, 29), ln.weight, ln.bias});
  bn.eval();
  {
    NoGrad ng;
    bn.running_var.fill_(1.7);
  }
  expect_grads_ok([&](const TensorList& in) { return bn(in[0]); }, {leaf64({2, 2, 1, 2}, 30), bn.weight, bn.bias});
}

TEST(NnLayers, SecondOrderThroughSmallLayers) {
  Generator g(31);
  nn::Dropout d(0.4, &g);
  // the same mask at every evaluation: restart the generator in the function
  expect_grads_ok(
      [&](const TensorList& in) {
        g.manual_seed(32);
        return d(in[0]).square();
      },
      {leaf64({2, 5}, 33)});
  expect_grads_ok([](const TensorList& in) { return nn::Upsample(2)(in[0]).square(); }, {leaf64({1, 2, 2, 2}, 34)});
  expect_grads_ok([](const TensorList& in) { return nn::AvgPool2d(2, 1)(in[0]).square(); }, {leaf64({1, 1, 3, 3}, 35)});
  expect_grads_ok([](const TensorList& in) { return nn::Flatten()(in[0]).square(); }, {leaf64({2, 2, 2}, 36)});
  // the embedding as a function of (continuous) t
  expect_grads_ok([](const TensorList& in) { return nn::SinusoidalEmbedding(6)(in[0]); },
                  {leaf64({3}, 37)});
}

TEST(NnLayers, SinusoidalEmbeddingIsDdpms) {
  // DDPM: half = dim // 2, f_i = exp(-log(10000) i / (half - 1)), [sin(t f), cos(t f)], and a
  // zero column when dim is odd.
  Tensor t = tensor({0.0, 1.0, 7.5, 999.0}, {4}, {.dtype = DType::f64});
  for (int64_t dim : {4, 7, 32}) {
    const int64_t half = dim / 2;
    Tensor e = nn::SinusoidalEmbedding(dim)(t);
    ASSERT_EQ(e.sizes(), (Shape{4, dim}));
    std::vector<double> want;
    for (double tv : t.to_vector<double>()) {
      for (int64_t i = 0; i < half; ++i) want.push_back(std::sin(tv * std::exp(-std::log(10000.0) * i / (half - 1.0))));
      for (int64_t i = 0; i < half; ++i) want.push_back(std::cos(tv * std::exp(-std::log(10000.0) * i / (half - 1.0))));
      if (dim % 2) want.push_back(0.0);
    }
    expect_all_near(e, want, 1e-9, "dim " + std::to_string(dim));
  }
  // integer timesteps, as a sampler passes them, give the f32 embedding of the same values
  Tensor ti = from_vector(std::vector<int64_t>{0, 1, 999}, {3});
  Tensor ei = nn::timestep_embedding(ti, 8);
  EXPECT_EQ(ei.dtype(), DType::f32);
  expect_all_near(ei, nn::timestep_embedding(tensor({0.0, 1.0, 999.0}), 8), 0.0, "integer t");
  EXPECT_THROW(nn::timestep_embedding(t, 2), Error);
  EXPECT_THROW(nn::timestep_embedding(t.reshape({2, 2}), 8), Error);
}

TEST(NnLayers, SelfAttention2dIsDdpmsAttentionBlock) {
  manual_seed(38);
  const int64_t B = 2, C = 32, H = 2, W = 3, P = H * W;
  nn::SelfAttention2d att(C);
  att.to(DType::f64);
  Tensor nw = param(att, "n.weight"), nb = param(att, "n.bias");
  randomize(nw, 39, 0.2, 1.0);
  randomize(nb, 40, 0.2);
  Tensor x = rnd({B, C, H, W}, 41, DType::f64);
  Tensor y = att(x);
  ASSERT_EQ(y.sizes(), x.sizes());
  // naive: h = GroupNorm(32)(x); q, k, v = the three C-channel parts of a 1x1 conv;
  // a = softmax_j(q_i . k_j / sqrt(C)); out = x + Wo (sum_j a_ij v_j) + bo
  auto hn = group_norm(x, 32, nw, nb).to_vector<double>();
  auto wq = param(att, "qkv.weight").to_vector<double>(), bq = param(att, "qkv.bias").to_vector<double>();
  auto wo = param(att, "o.weight").to_vector<double>(), bo = param(att, "o.bias").to_vector<double>();
  auto xv = x.to_vector<double>();
  std::vector<double> want(xv.size());
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> qkv(3 * C * P);
    for (int64_t o = 0; o < 3 * C; ++o)
      for (int64_t p = 0; p < P; ++p) {
        double acc = bq[o];
        for (int64_t c = 0; c < C; ++c) acc += wq[o * C + c] * hn[(b * C + c) * P + p];
        qkv[o * P + p] = acc;
      }
    std::vector<double> h(C * P, 0.0);
    for (int64_t i = 0; i < P; ++i) {
      std::vector<double> s(P);
      double mx = -1e300, z = 0;
      for (int64_t j = 0; j < P; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < C; ++c) dot += qkv[c * P + i] * qkv[(C + c) * P + j];
        s[j] = dot / std::sqrt(static_cast<double>(C));
        mx = std::max(mx, s[j]);
      }
      for (int64_t j = 0; j < P; ++j) z += (s[j] = std::exp(s[j] - mx));
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < P; ++j) h[c * P + i] += s[j] / z * qkv[(2 * C + c) * P + j];
    }
    for (int64_t o = 0; o < C; ++o)
      for (int64_t p = 0; p < P; ++p) {
        double acc = bo[o];
        for (int64_t c = 0; c < C; ++c) acc += wo[o * C + c] * h[c * P + p];
        want[(b * C + o) * P + p] = xv[(b * C + o) * P + p] + acc;
      }
  }
  expect_all_near(y, want, 1e-10, "SelfAttention2d");
  // first and second order through the input, the q/k/v conv (its bias reaches q, k and v)
  // and the output conv
  expect_grads_ok([&](const TensorList& in) { return att(in[0]); },
                  {leaf64({1, C, 1, 2}, 42), param(att, "qkv.bias"), param(att, "o.bias")});
}

TEST(NnLayers, ActNormInitialisesFromTheFirstBatchInvertsAndHasTheJacobiansLogdet) {
  nn::ActNorm a(3);
  a.to(DType::f64);
  {  // in eval, before any training forward: the identity, and no initialisation
    a.eval();
    Tensor x = rnd({2, 3, 2, 2}, 43, DType::f64);
    expect_all_near(a(x), x, 0.0, "uninitialised ActNorm");
    EXPECT_EQ(a.initialized.item(), 0.0);
    a.train();
  }
  Tensor x = add(mul(rnd({6, 3, 3, 4}, 44, DType::f64), tensor({0.5, 2.0, 7.0}, {1, 3, 1, 1}, {.dtype = DType::f64})),
                 tensor({-3.0, 0.0, 4.0}, {1, 3, 1, 1}, {.dtype = DType::f64}));
  auto [y, ld] = a.forward_logdet(x);
  for (double m : mean(y, {0, 2, 3}).to_vector<double>()) EXPECT_NEAR(m, 0.0, 1e-10);
  for (double s : ember::std(y, {0, 2, 3}, false).to_vector<double>()) EXPECT_NEAR(s, 1.0, 1e-5);
  EXPECT_EQ(a.initialized.item(), 1.0);
  ASSERT_EQ(ld.sizes(), (Shape{6}));
  const double want_ld = 12.0 * sum(a.log_scale).item();  // H * W * sum(log|scale|)
  for (double v : ld.to_vector<double>()) EXPECT_NEAR(v, want_ld, 1e-12);
  Tensor loc0 = a.loc.detach().clone();
  a.forward_logdet(add(x, 5.0));  // a second batch does not re-initialise
  expect_all_near(a.loc, loc0, 0.0, "loc after the second forward");
  expect_all_near(a.inverse(y), x, 1e-10, "inverse(forward(x))");
  expect_all_near(a.forward_logdet(a.inverse(y)).first, y, 1e-10, "forward(inverse(y))");
  Tensor x1 = rnd({1, 3, 2, 1}, 45, DType::f64);
  EXPECT_NEAR(a.forward_logdet(x1).second.item(), logdet_of_jacobian([&](const Tensor& t) { return a(t); }, x1), 1e-9);
  // derivatives: through the output and the log-det, and through the inverse
  expect_grads_ok([&](const TensorList& in) { return a(in[0]); }, {leaf64({2, 3, 1, 2}, 46), a.loc, a.log_scale});
  expect_grads_ok([&](const TensorList&) { return a.forward_logdet(x1).second; }, {a.log_scale});
  expect_grads_ok([&](const TensorList& in) { return a.inverse(in[0]); }, {leaf64({1, 3, 2, 1}, 47), a.log_scale});
}

TEST(NnLayers, Invertible1x1ConvIsGlowsLuParameterisation) {
  Generator gen(48);
  const int64_t C = 4;
  nn::Invertible1x1Conv c(C, &gen);
  c.to(DType::f64);
  // P a permutation matrix, sign_s of +-1
  auto pv = c.p.to_vector<double>();
  for (int64_t i = 0; i < C; ++i) {
    double row = 0, col = 0;
    for (int64_t j = 0; j < C; ++j) {
      EXPECT_TRUE(pv[i * C + j] == 0.0 || pv[i * C + j] == 1.0);
      row += pv[i * C + j];
      col += pv[j * C + i];
    }
    EXPECT_EQ(row, 1.0);
    EXPECT_EQ(col, 1.0);
  }
  for (double s : c.sign_s.to_vector<double>()) EXPECT_EQ(std::abs(s), 1.0);
  // starts as a rotation: |det W| = 1, so sum(log_s) = 0
  EXPECT_NEAR(sum(c.log_s).item(), 0.0, 1e-5);
  {  // move away from the rotation; entries outside the triangles must not matter
    NoGrad ng;
    c.log_s.add_(rnd({C}, 49, DType::f64), 0.3);
    c.upper.add_(rnd({C, C}, 50, DType::f64), 0.3);
    c.lower.add_(rnd({C, C}, 51, DType::f64), 0.3);
  }
  // weight = P L (U + diag(sign * exp(log_s))), L unit lower, U strictly upper
  {
    auto lo = c.lower.to_vector<double>(), up = c.upper.to_vector<double>();
    auto ls = c.log_s.to_vector<double>(), sg = c.sign_s.to_vector<double>();
    std::vector<double> L(C * C, 0.0), U(C * C, 0.0), LU(C * C, 0.0), want(C * C, 0.0);
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        L[i * C + j] = i > j ? lo[i * C + j] : (i == j ? 1.0 : 0.0);
        U[i * C + j] = i < j ? up[i * C + j] : (i == j ? sg[i] * std::exp(ls[i]) : 0.0);
      }
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j)
        for (int64_t k = 0; k < C; ++k) LU[i * C + j] += L[i * C + k] * U[k * C + j];
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j)
        for (int64_t k = 0; k < C; ++k) want[i * C + j] += pv[i * C + k] * LU[k * C + j];
    expect_all_near(c.weight(), want, 1e-12, "W = P L (U + diag(s))");
  }
  Tensor x = rnd({2, C, 2, 3}, 52, DType::f64);
  auto [y, ld] = c.forward_logdet(x);
  ASSERT_EQ(ld.sizes(), (Shape{2}));
  EXPECT_NEAR(ld.to_vector<double>()[0], 6.0 * slogdet(c.weight()).second.item(), 1e-10);
  EXPECT_NEAR(ld.to_vector<double>()[1], 6.0 * sum(c.log_s).item(), 1e-12);
  expect_all_near(c.inverse(y), x, 1e-10, "inverse(forward(x))");
  Tensor x1 = rnd({1, C, 1, 2}, 53, DType::f64);
  EXPECT_NEAR(c.forward_logdet(x1).second.item(), logdet_of_jacobian([&](const Tensor& t) { return c(t); }, x1), 1e-9);

  // a Glow step (ActNorm then the 1x1 conv): the log-dets add up to the Jacobian's
  nn::ActNorm a(C);
  a.to(DType::f64);
  a.forward_logdet(rnd({4, C, 2, 2}, 54, DType::f64));  // initialise
  auto step = [&](const Tensor& t) { return c(a(t)); };
  Tensor x2 = rnd({1, C, 2, 1}, 55, DType::f64);
  EXPECT_NEAR(a.forward_logdet(x2).second.item() + c.forward_logdet(a(x2)).second.item(),
              logdet_of_jacobian(step, x2), 1e-9);
  expect_all_near(a.inverse(c.inverse(step(x2))), x2, 1e-10, "the step's inverse");

  expect_grads_ok([&](const TensorList& in) { return c(in[0]); }, {leaf64({1, C, 1, 2}, 56), c.lower, c.upper, c.log_s});
  expect_grads_ok([&](const TensorList& in) { return c.inverse(in[0]); }, {leaf64({1, C, 1, 1}, 57), c.upper, c.log_s});
}

TEST(NnLayers, WeightNormNormalisesPerOutputChannel) {
  manual_seed(58);
  auto conv = std::make_shared<nn::Conv2d>(2, 3, 3, 1, 1);
  conv->to(DType::f64);
  Tensor x = rnd({1, 2, 3, 3}, 59, DType::f64);
  Tensor before = (*conv)(x).detach();
  nn::WeightNorm wn(conv);
  expect_all_near(wn(x), before, 1e-12, "g = ||v|| at the start: the same function");
  randomize(wn.weight_g, 60, 0.5, 1.0);
  randomize(wn.weight_v, 61);
  // each output channel of the weight has norm g
  Tensor w = wn.weight().detach();
  auto gv = wn.weight_g.to_vector<double>(), ww = w.to_vector<double>(), vv = wn.weight_v.to_vector<double>();
  for (int64_t o = 0; o < 3; ++o) {
    double n2 = 0, v2 = 0;
    for (int64_t k = 0; k < 18; ++k) {
      n2 += ww[o * 18 + k] * ww[o * 18 + k];
      v2 += vv[o * 18 + k] * vv[o * 18 + k];
    }
    EXPECT_NEAR(std::sqrt(n2), std::abs(gv[o]), 1e-12);
    for (int64_t k = 0; k < 18; ++k) EXPECT_NEAR(ww[o * 18 + k], gv[o] * vv[o * 18 + k] / std::sqrt(v2), 1e-12);
  }
  // the scale of v does not matter
  {
    NoGrad ng;
    wn.weight_v.mul_(3.7);
  }
  expect_all_near(wn.weight(), w, 1e-12, "weight after scaling v");
  expect_grads_ok([&](const TensorList& in) { return wn(in[0]); },
                  {leaf64({1, 2, 2, 2}, 62), wn.weight_g, wn.weight_v, param(wn, "module.bias")});
}

TEST(NnLayers, SpectralNormDividesByTheLargestSingularValue) {
  manual_seed(63);
  Generator g(64);
  auto lin = std::make_shared<nn::Linear>(6, 4);
  lin->to(DType::f64);
  {
    NoGrad ng;
    lin->weight.mul_(5.0);
  }
  nn::SpectralNorm sn(lin, &g);
  Tensor x = rnd({3, 6}, 65, DType::f64);
  for (int i = 0; i < 40; ++i) sn(x);  // one power iteration per training forward
  Tensor w = sn.weight().detach();
  // sigma of the normalised weight: power iteration on W^T W done here
  Tensor v = rnd({6}, 66, DType::f64);
  for (int i = 0; i < 500; ++i) {
    Tensor a = matmul(w.t(), matmul(w, v));
    v = div(a, norm(a));
  }
  EXPECT_NEAR(norm(matmul(w, v)).item(), 1.0, 1e-4);
  // eval: no power iteration, u and v stay
  sn.eval();
  Tensor u0 = sn.u.clone();
  Tensor y = sn(x);
  expect_all_near(sn.u, u0, 0.0, "u in eval");
  // the forward is the wrapped layer with W / sigma
  expect_all_near(y, add(matmul(x, sn.weight().t()), lin->bias), 1e-12, "forward");
  expect_grads_ok([&](const TensorList& in) { return sn(in[0]); }, {leaf64({2, 6}, 67), sn.weight_orig});
}

TEST(NnLayers, ErrorsNameTheLayerAndTheShapes) {
  manual_seed(68);
  nn::Conv2d c(3, 8, 3);
  EXPECT_ERROR_MENTIONS(c(rnd({2, 5, 6, 6}, 69)), "Conv2d", "[2, 5, 6, 6]");
  EXPECT_ERROR_MENTIONS(c(rnd({5, 6}, 70)), "Conv2d", "[5, 6]");
  nn::ConvTranspose2d t(4, 2, 3);
  EXPECT_ERROR_MENTIONS(t(rnd({1, 3, 4, 4}, 71)), "ConvTranspose2d", "[1, 3, 4, 4]");
  EXPECT_ERROR_MENTIONS(nn::ConvTranspose2d(4, 2, 3, 1, 0, 2), "ConvTranspose2d", "output_padding");
  EXPECT_ERROR_MENTIONS(nn::Conv2d(6, 8, 3, 1, 0, 1, 4), "Conv2d", "groups");
  nn::GroupNorm gn(2, 6);
  EXPECT_ERROR_MENTIONS(gn(rnd({2, 4, 3, 3}, 72)), "GroupNorm", "[2, 4, 3, 3]");
  EXPECT_ERROR_MENTIONS(nn::GroupNorm(4, 6), "GroupNorm", "6");
  nn::BatchNorm2d bn(3);
  EXPECT_ERROR_MENTIONS(bn(rnd({4, 3}, 73)), "BatchNorm2d", "[4, 3]");
  EXPECT_ERROR_MENTIONS(bn(rnd({4, 2, 2, 2}, 74)), "BatchNorm2d", "[4, 2, 2, 2]");
  nn::BatchNorm1d bn1(3);
  EXPECT_ERROR_MENTIONS(bn1(rnd({4, 3, 2, 2}, 75)), "BatchNorm1d", "[4, 3, 2, 2]");
  EXPECT_THROW(bn1(rnd({1, 3}, 76)), Error);  // one value per channel: no batch statistics
  EXPECT_EQ(bn1.num_batches_tracked.item(), 0.0);  // and not counted
  nn::LayerNorm ln({4, 5});
  EXPECT_ERROR_MENTIONS(ln(rnd({2, 5, 4}, 77)), "LayerNorm", "[2, 5, 4]");
  EXPECT_ERROR_MENTIONS(nn::Upsample(2)(rnd({3, 4}, 78)), "Upsample", "[3, 4]");
  EXPECT_ERROR_MENTIONS(nn::AvgPool2d(3)(rnd({1, 1, 2, 5}, 79)), "AvgPool2d", "[1, 1, 2, 5]");
  EXPECT_ERROR_MENTIONS(nn::Dropout(1.0), "Dropout", "1");
  EXPECT_ERROR_MENTIONS(nn::Flatten()(rnd({3}, 80)), "Flatten", "[3]");
  nn::SelfAttention2d att(32);
  EXPECT_ERROR_MENTIONS(att(rnd({1, 16, 2, 2}, 81)), "SelfAttention2d", "[1, 16, 2, 2]");
  EXPECT_ERROR_MENTIONS(nn::SelfAttention2d(48), "SelfAttention2d", "48");
  nn::ActNorm a(3);
  EXPECT_ERROR_MENTIONS(a(rnd({1, 2, 2, 2}, 82)), "ActNorm", "[1, 2, 2, 2]");
  nn::Invertible1x1Conv inv(3);
  EXPECT_ERROR_MENTIONS(inv.inverse(rnd({1, 4, 2, 2}, 83)), "Invertible1x1Conv", "[1, 4, 2, 2]");
  nn::WeightNorm wn(std::make_shared<nn::Conv2d>(3, 2, 1));
  EXPECT_THROW(wn(rnd({1, 2, 2, 2}, 84)), Error);
}
