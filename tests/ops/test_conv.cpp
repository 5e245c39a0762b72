// Convolution, pooling and resampling ops: forward values against direct-loop references
// written here, first and second derivatives by finite differences (f64), non-contiguous
// inputs, both threading paths of the convolution kernels, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/conv.h"

using namespace ember;

namespace {

// ---- helpers ------------------------------------------------------------------------------

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, {.dtype = dt}, &g);
}
Tensor leaf(const Shape& s, uint64_t seed) {
  Tensor t = rnd(s, seed);
  t.requires_grad_(true);
  return t;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": element " << at << " got " << got[at] << " want " << want[at];
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an ember::Error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// ---- direct-loop references (double, NCHW row-major) ------------------------------------------

struct ConvCase {
  int64_t N, Cin, Cout, H, W, kh, kw;
  Size2 stride, padding, dilation;
  int64_t groups;
  bool bias;
};

std::string describe(const ConvCase& c) {
  return detail::concat("N=", c.N, " Cin=", c.Cin, " Cout=", c.Cout, " H=", c.H, " W=", c.W, " k=", c.kh, "x", c.kw,
                        " s=", c.stride[0], ",", c.stride[1], " p=", c.padding[0], ",", c.padding[1], " d=",
                        c.dilation[0], ",", c.dilation[1], " g=", c.groups, c.bias ? " bias" : "");
}

int64_t conv_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) { return (n + 2 * p - d * (k - 1) - 1) / s + 1; }

// y[n, o, oh, ow] = b[o] + sum_{c, i, j} x[n, g*Cig + c, oh*s - p + i*d, ow*s - p + j*d] w[o, c, i, j]
std::vector<double> naive_conv2d(const std::vector<double>& x, const std::vector<double>& w,
                                 const std::vector<double>& b, const ConvCase& c) {
  const int64_t OH = conv_out(c.H, c.kh, c.stride[0], c.padding[0], c.dilation[0]);
  const int64_t OW = conv_out(c.W, c.kw, c.stride[1], c.padding[1], c.dilation[1]);
  const int64_t Cig = c.Cin / c.groups, Cog = c.Cout / c.groups;
  std::vector<double> y(c.N * c.Cout * OH * OW, 0.0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.Cout; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b.empty() ? 0.0 : b[o];
          const int64_t g = o / Cog;
          for (int64_t ci = 0; ci < Cig; ++ci)
            for (int64_t i = 0; i < c.kh; ++i)
              for (int64_t j = 0; j < c.kw; ++j) {
                const int64_t ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const int64_t iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                acc += x[((n * c.Cin + g * Cig + ci) * c.H + ih) * c.W + iw] * w[((o * Cig + ci) * c.kh + i) * c.kw + j];
              }
          y[((n * c.Cout + o) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

// The input and weight gradients of <conv2d(x, w), gy>, by the same loops.
void naive_conv2d_backward(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& gy,
                           const ConvCase& c, std::vector<double>& gx, std::vector<double>& gw) {
  const int64_t OH = conv_out(c.H, c.kh, c.stride[0], c.padding[0], c.dilation[0]);
  const int64_t OW = conv_out(c.W, c.kw, c.stride[1], c.padding[1], c.dilation[1]);
  const int64_t Cig = c.Cin / c.groups, Cog = c.Cout / c.groups;
  gx.assign(x.size(), 0.0);
  gw.assign(w.size(), 0.0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.Cout; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double g = gy[((n * c.Cout + o) * OH + oh) * OW + ow];
          const int64_t grp = o / Cog;
          for (int64_t ci = 0; ci < Cig; ++ci)
            for (int64_t i = 0; i < c.kh; ++i)
              for (int64_t j = 0; j < c.kw; ++j) {
                const int64_t ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const int64_t iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                const int64_t xi = ((n * c.Cin + grp * Cig + ci) * c.H + ih) * c.W + iw;
                const int64_t wi = ((o * Cig + ci) * c.kh + i) * c.kw + j;
                gx[xi] += g * w[wi];
                gw[wi] += g * x[xi];
              }
        }
}

// conv_transpose2d: x [N, Cin, H, W], w [Cin, Cout/G, kh, kw]; every input pixel scatters its
// kernel-weighted value to y[oh = h*s - p + i*d].
struct TCase {
  int64_t N, Cin, Cout, H, W, kh, kw;
  Size2 stride, padding, output_padding, dilation;
  int64_t groups;
  bool bias;
};

std::vector<double> naive_conv_transpose2d(const std::vector<double>& x, const std::vector<double>& w,
                                           const std::vector<double>& b, const TCase& c, int64_t& OH, int64_t& OW) {
  OH = (c.H - 1) * c.stride[0] - 2 * c.padding[0] + c.dilation[0] * (c.kh - 1) + c.output_padding[0] + 1;
  OW = (c.W - 1) * c.stride[1] - 2 * c.padding[1] + c.dilation[1] * (c.kw - 1) + c.output_padding[1] + 1;
  const int64_t Cig = c.Cin / c.groups, Cog = c.Cout / c.groups;
  std::vector<double> y(c.N * c.Cout * OH * OW, 0.0);
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t o = 0; o < c.Cout; ++o)
      for (int64_t k = 0; k < OH * OW; ++k) y[(n * c.Cout + o) * OH * OW + k] = b.empty() ? 0.0 : b[o];
    for (int64_t ci = 0; ci < c.Cin; ++ci) {
      const int64_t g = ci / Cig;
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t ww = 0; ww < c.W; ++ww) {
          const double v = x[((n * c.Cin + ci) * c.H + h) * c.W + ww];
          for (int64_t oc = 0; oc < Cog; ++oc)
            for (int64_t i = 0; i < c.kh; ++i)
              for (int64_t j = 0; j < c.kw; ++j) {
                const int64_t oh = h * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const int64_t ow = ww * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                y[((n * c.Cout + g * Cog + oc) * OH + oh) * OW + ow] += v * w[((ci * Cog + oc) * c.kh + i) * c.kw + j];
              }
        }
    }
  }
  return y;
}

// Pooling: mode 0 average (padding counted), 1 max (padding never wins).
std::vector<double> naive_pool(const std::vector<double>& x, int64_t planes, int64_t H, int64_t W, Size2 k, Size2 s,
                               Size2 p, int mode, int64_t& OH, int64_t& OW) {
  OH = (H + 2 * p[0] - k[0]) / s[0] + 1;
  OW = (W + 2 * p[1] - k[1]) / s[1] + 1;
  std::vector<double> y(planes * OH * OW);
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        double acc = mode == 0 ? 0.0 : -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < k[0]; ++i)
          for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t h = oh * s[0] - p[0] + i, w = ow * s[1] - p[1] + j;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const double v = x[(pl * H + h) * W + w];
            acc = mode == 0 ? acc + v : std::max(acc, v);
          }
        y[(pl * OH + oh) * OW + ow] = mode == 0 ? acc / static_cast<double>(k[0] * k[1]) : acc;
      }
  return y;
}

Tensor maybe(const Tensor& t, bool on) { return on ? t : Tensor(); }

// gradcheck and gradgradcheck of f on inputs, with a readable failure message.
void check_grads(const TensorFunction& f, const TensorList& inputs, const std::string& what) {
  GradcheckResult r1 = gradcheck(f, inputs);
  EXPECT_TRUE(r1.ok) << what << ": " << r1.message;
  GradcheckResult r2 = gradgradcheck(f, inputs);
  EXPECT_TRUE(r2.ok) << what << ": " << r2.message;
}

// Restores the thread count a test changed.
struct ThreadsGuard {
  int saved = kernels::cpu::num_threads();
  ~ThreadsGuard() { kernels::cpu::set_num_threads(saved); }
};

}  // namespace

// ---- conv2d forward --------------------------------------------------------------------------

TEST(ConvOps, Conv2dForwardMatchesNaiveReference) {
  int checked = 0;
  uint64_t seed = 100;
  for (Size2 k : {Size2{1, 1}, Size2{3, 3}, Size2{2, 3}})
    for (int64_t s : {1, 2, 3})
      for (int64_t p : {0, 1, 2})
        for (int64_t d : {1, 2})
          for (int64_t groups : {1, 2, 6}) {
            // odd sizes; Cin = 6 so that groups = 6 is depthwise (Cout = 12: multiplier 2)
            ConvCase c{2, 6, groups == 6 ? 12 : 4, 7, 6, k[0], k[1], {s, s == 3 ? 1 : s}, {p, p == 2 ? 1 : p},
                       {d, 1}, groups, (s + p) % 2 == 0};
            if (d * (c.kh - 1) + 1 > c.H + 2 * c.padding[0] || c.kw > c.W + 2 * c.padding[1]) continue;
            Tensor x = rnd({c.N, c.Cin, c.H, c.W}, ++seed);
            Tensor w = rnd({c.Cout, c.Cin / groups, c.kh, c.kw}, ++seed);
            Tensor b = rnd({c.Cout}, ++seed);
            std::vector<double> bv = c.bias ? b.to_vector<double>() : std::vector<double>();
            auto want = naive_conv2d(x.to_vector<double>(), w.to_vector<double>(), bv, c);
            Tensor y = conv2d(x, w, maybe(b, c.bias), c.stride, c.padding, c.dilation, groups);
            ASSERT_EQ(y.sizes(), (Shape{c.N, c.Cout, conv_out(c.H, c.kh, c.stride[0], c.padding[0], d),
                                        conv_out(c.W, c.kw, c.stride[1], c.padding[1], 1)}))
                << describe(c);
            expect_close(y.to_vector<double>(), want, 1e-12, describe(c));
            // f32 on the same data
            Tensor y32 = conv2d(x.to(DType::f32), w.to(DType::f32), maybe(b.to(DType::f32), c.bias), c.stride,
                                c.padding, c.dilation, groups);
            EXPECT_EQ(y32.dtype(), DType::f32);
            expect_close(y32.to_vector<double>(), want, 2e-5, describe(c) + " f32");
            ++checked;
          }
  EXPECT_GT(checked, 100);
}

TEST(ConvOps, Conv2dBothThreadingPathsMatchNaive) {
  ThreadsGuard guard;
  // Large enough per sample for the threaded-GEMM path at N = 2, many samples for the
  // batch-split path at N = 7; and one thread for the plain sequential path.
  ConvCase big{2, 16, 32, 24, 23, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true};
  ConvCase many{7, 8, 12, 9, 10, 3, 3, {2, 1}, {1, 0}, {1, 2}, 2, true};
  ConvCase pointwise{5, 12, 8, 6, 7, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true};
  for (int threads : {1, 3}) {
    kernels::cpu::set_num_threads(threads);
    uint64_t seed = 7;
    for (const ConvCase& c : {big, many, pointwise}) {
      const std::string what = describe(c) + " threads=" + std::to_string(threads);
      Tensor x = leaf({c.N, c.Cin, c.H, c.W}, ++seed);
      Tensor w = leaf({c.Cout, c.Cin / c.groups, c.kh, c.kw}, ++seed);
      Tensor b = leaf({c.Cout}, ++seed);
      Tensor y = conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      auto xv = x.to_vector<double>(), wv = w.to_vector<double>();
      expect_close(y.to_vector<double>(), naive_conv2d(xv, wv, b.to_vector<double>(), c), 1e-12, what);
      Tensor gy = rnd(y.sizes(), ++seed);
      TensorList g = grad({y}, {x, w, b}, {gy});
      std::vector<double> gx, gw;
      naive_conv2d_backward(xv, wv, gy.to_vector<double>(), c, gx, gw);
      expect_close(g[0].to_vector<double>(), gx, 1e-12, what + " grad x");
      expect_close(g[1].to_vector<double>(), gw, 1e-11, what + " grad w");
      expect_close(g[2].to_vector<double>(), sum(gy, {0, 2, 3}).to_vector<double>(), 1e-12, what + " grad b");
    }
  }
}

TEST(ConvOps, Conv2dUnbatchedInput) {
  Tensor x = rnd({3, 5, 6}, 1), w = rnd({4, 3, 3, 3}, 2), b = rnd({4}, 3);
  Tensor y = conv2d(x, w, b, {2, 1}, {1, 1});
  ASSERT_EQ(y.sizes(), (Shape{4, 3, 6}));
  Tensor y4 = conv2d(x.unsqueeze(0), w, b, {2, 1}, {1, 1});
  expect_close(y.to_vector<double>(), y4.to_vector<double>(), 0, "unbatched");
}

TEST(ConvOps, Conv2dNonContiguousInputs) {
  // x as a permuted view of an NHWC buffer, w as a transposed view, and a strided batch slice.
  Tensor nhwc = rnd({3, 6, 5, 4}, 11);
  Tensor x = nhwc.permute({0, 3, 1, 2});  // [3, 4, 6, 5], not contiguous
  ASSERT_FALSE(x.is_contiguous());
  Tensor w = rnd({2, 6, 3, 3}, 12).transpose(0, 1);  // [6, 2, 3, 3] for groups = 2
  ASSERT_FALSE(w.is_contiguous());
  Tensor y = conv2d(x, w, Tensor(), {2, 2}, {1, 1}, {1, 1}, 2);
  Tensor yc = conv2d(x.contiguous(), w.contiguous(), Tensor(), {2, 2}, {1, 1}, {1, 1}, 2);
  expect_close(y.to_vector<double>(), yc.to_vector<double>(), 0, "permuted");

  Tensor big = rnd({7, 4, 6, 5}, 13);
  Tensor xs = big.slice(0, 1, 7, 2);  // samples 1, 3, 5
  Tensor w2 = rnd({3, 4, 2, 2}, 14);
  Tensor ys = conv2d(xs, w2, Tensor(), {1, 1}, {1, 0});
  Tensor ysc = conv2d(xs.contiguous(), w2, Tensor(), {1, 1}, {1, 0});
  expect_close(ys.to_vector<double>(), ysc.to_vector<double>(), 0, "sliced batch");

  // gradients through non-contiguous leaves
  Tensor xl = rnd({2, 4, 5, 3}, 15).detach().permute({0, 3, 1, 2});  // [2, 3, 4, 5] leaf view
  xl.requires_grad_(true);
  Tensor wl = rnd({3, 3, 3, 2}, 16).detach().transpose(2, 3);  // [3, 3, 2, 3]
  wl.requires_grad_(true);
  check_grads([](const TensorList& in) { return conv2d(in[0], in[1], Tensor(), {1, 2}, {1, 1}); }, {xl, wl},
              "non-contiguous leaves");
}

// ---- conv2d derivatives ------------------------------------------------------------------------

TEST(ConvOps, Conv2dGradAndGradGrad) {
  const std::vector<ConvCase> cases = {
      {2, 2, 3, 5, 6, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true},  // plain, padded
      {2, 2, 2, 6, 7, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1, true},  // stride 2 with a left-over row/col
      {1, 2, 2, 7, 6, 3, 2, {1, 2}, {2, 1}, {2, 2}, 1, false},  // dilation
      {2, 4, 4, 5, 5, 3, 2, {2, 1}, {1, 0}, {1, 1}, 2, true},  // groups = 2
      {1, 3, 6, 6, 5, 3, 3, {2, 1}, {1, 1}, {2, 1}, 3, true},  // depthwise, multiplier 2, dilated
      {2, 3, 2, 4, 3, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},  // 1x1 (no im2col)
      {1, 3, 2, 5, 4, 1, 1, {2, 2}, {1, 0}, {1, 1}, 1, false},  // 1x1 strided, padded
  };
  uint64_t seed = 500;
  for (const ConvCase& c : cases) {
    Tensor x = leaf({c.N, c.Cin, c.H, c.W}, ++seed);
    Tensor w = leaf({c.Cout, c.Cin / c.groups, c.kh, c.kw}, ++seed);
    Tensor b = leaf({c.Cout}, ++seed);
    TensorList in{x, w};
    if (c.bias) in.push_back(b);
    check_grads(
        [c](const TensorList& t) {
          return conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), c.stride, c.padding, c.dilation, c.groups);
        },
        in, describe(c));
  }
}

TEST(ConvOps, Conv2dThirdOrder) {
  // gradgradcheck of a function that is itself a gradient: third derivatives of conv2d, i.e.
  // the backward of conv2d_weight_grad and of the conv_transpose2d in conv2d's backward.
  Tensor x = leaf({1, 2, 5, 4}, 41), w = leaf({2, 2, 3, 2}, 42);
  auto f = [](const TensorList& t) {
    EnableGrad on;  // gradgradcheck also calls f under NoGrad
    Tensor y = conv2d(t[0], t[1], Tensor(), {2, 1}, {1, 1});
    Tensor l = sum(mul(tanh(y), y));
    TensorList g = grad({l}, {t[0], t[1]}, {}, {.create_graph = true});
    return cat({g[0].reshape({-1}), g[1].reshape({-1})}, 0);
  };
  check_grads(f, {x, w}, "third order");
}

TEST(ConvOps, Conv2dWeightGradOp) {
  // The op by itself: values against the reference and its own first and second derivatives.
  ConvCase c{2, 4, 6, 6, 5, 3, 2, {2, 1}, {1, 1}, {1, 2}, 2, false};
  const int64_t OH = conv_out(c.H, c.kh, 2, 1, 1), OW = conv_out(c.W, c.kw, 1, 1, 2);
  Tensor x = leaf({c.N, c.Cin, c.H, c.W}, 61), gy = leaf({c.N, c.Cout, OH, OW}, 62);
  Tensor dw = conv2d_weight_grad(x, gy, {c.kh, c.kw}, c.stride, c.padding, c.dilation, c.groups);
  ASSERT_EQ(dw.sizes(), (Shape{c.Cout, c.Cin / c.groups, c.kh, c.kw}));
  std::vector<double> gx, gw;
  naive_conv2d_backward(x.to_vector<double>(), std::vector<double>(dw.numel(), 0.0), gy.to_vector<double>(), c, gx,
                        gw);
  expect_close(dw.to_vector<double>(), gw, 1e-12, "conv2d_weight_grad");
  check_grads([c](const TensorList& t) {
    return conv2d_weight_grad(t[0], t[1], {c.kh, c.kw}, c.stride, c.padding, c.dilation, c.groups);
  }, {x, gy}, "conv2d_weight_grad");
}

// ---- conv_transpose2d ----------------------------------------------------------------------------

TEST(ConvOps, ConvTranspose2dForwardMatchesNaiveReference) {
  int checked = 0;
  uint64_t seed = 900;
  for (Size2 k : {Size2{1, 1}, Size2{3, 3}, Size2{2, 3}})
    for (int64_t s : {1, 2, 3})
      for (int64_t p : {0, 1})
        for (int64_t d : {1, 2})
          for (int64_t groups : {1, 2})
            for (int64_t op : {0, 1}) {
              if (!(op < s || op < d)) continue;
              TCase c{2, 4, groups == 2 ? 6 : 3, 4, 5, k[0], k[1], {s, 1}, {p, p}, {op, 0}, {d, d}, groups, op == 0};
              int64_t OH, OW;
              Tensor x = rnd({c.N, c.Cin, c.H, c.W}, ++seed);
              Tensor w = rnd({c.Cin, c.Cout / groups, c.kh, c.kw}, ++seed);
              Tensor b = rnd({c.Cout}, ++seed);
              std::vector<double> bv = c.bias ? b.to_vector<double>() : std::vector<double>();
              auto want = naive_conv_transpose2d(x.to_vector<double>(), w.to_vector<double>(), bv, c, OH, OW);
              if (OH < 1 || OW < 1) continue;
              const std::string what = detail::concat("k=", k[0], "x", k[1], " s=", s, " p=", p, " d=", d,
                                                      " g=", groups, " op=", op);
              Tensor y = conv_transpose2d(x, w, maybe(b, c.bias), c.stride, c.padding, c.output_padding, groups,
                                          c.dilation);
              ASSERT_EQ(y.sizes(), (Shape{c.N, c.Cout, OH, OW})) << what;
              expect_close(y.to_vector<double>(), want, 1e-12, what);
              Tensor y32 = conv_transpose2d(x.to(DType::f32), w.to(DType::f32), maybe(b.to(DType::f32), c.bias),
                                            c.stride, c.padding, c.output_padding, groups, c.dilation);
              expect_close(y32.to_vector<double>(), want, 2e-5, what + " f32");
              ++checked;
            }
  EXPECT_GT(checked, 80);
}

TEST(ConvOps, ConvTranspose2dGradAndGradGrad) {
  const std::vector<TCase> cases = {
      {2, 3, 2, 3, 4, 3, 3, {2, 2}, {1, 1}, {1, 1}, {1, 1}, 1, true},   // stride 2, output_padding
      {1, 4, 4, 3, 3, 3, 2, {2, 1}, {1, 0}, {1, 0}, {2, 2}, 2, true},   // groups, dilation
      {2, 2, 2, 4, 3, 3, 3, {1, 1}, {1, 1}, {1, 0}, {2, 1}, 1, false},  // output_padding >= stride (< dilation)
      {1, 3, 3, 3, 4, 3, 3, {2, 2}, {0, 1}, {0, 1}, {1, 1}, 3, true},   // depthwise
      {2, 3, 2, 3, 3, 1, 1, {1, 1}, {0, 0}, {0, 0}, {1, 1}, 1, true},   // 1x1 (no col2im)
  };
  uint64_t seed = 1300;
  for (const TCase& c : cases) {
    Tensor x = leaf({c.N, c.Cin, c.H, c.W}, ++seed);
    Tensor w = leaf({c.Cin, c.Cout / c.groups, c.kh, c.kw}, ++seed);
    Tensor b = leaf({c.Cout}, ++seed);
    TensorList in{x, w};
    if (c.bias) in.push_back(b);
    const std::string what = detail::concat("conv_transpose2d s=", c.stride[0], ",", c.stride[1], " op=",
                                            c.output_padding[0], ",", c.output_padding[1], " g=", c.groups);
    check_grads(
        [c](const TensorList& t) {
          return conv_transpose2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), c.stride, c.padding, c.output_padding,
                                  c.groups, c.dilation);
        },
        in, what);
  }
}

TEST(ConvOps, ConvTranspose2dIsTheAdjointOfConv2d) {
  // <conv2d(z, w), x> == <z, conv_transpose2d(x, w)> with the output_padding that restores z's size.
  Tensor z = rnd({2, 4, 9, 8}, 71), w = rnd({6, 2, 3, 3}, 72);
  Tensor y = conv2d(z, w, Tensor(), {2, 2}, {1, 1}, {1, 1}, 2);  // [2, 6, 5, 4]
  Tensor x = rnd(y.sizes(), 73);
  Tensor zt = conv_transpose2d(x, w, Tensor(), {2, 2}, {1, 1}, {0, 1}, 2);
  ASSERT_EQ(zt.sizes(), z.sizes());
  EXPECT_NEAR(sum(mul(y, x)).item(), sum(mul(z, zt)).item(), 1e-10);
}

TEST(ConvOps, ConvTranspose2dNonContiguousInput) {
  Tensor x = rnd({2, 5, 4, 3}, 81).permute({0, 3, 2, 1});  // [2, 3, 4, 5]
  Tensor w = rnd({3, 2, 3, 3}, 82);
  Tensor y = conv_transpose2d(x, w, Tensor(), {2, 2}, {1, 1}, {1, 1});
  Tensor yc = conv_transpose2d(x.contiguous(), w, Tensor(), {2, 2}, {1, 1}, {1, 1});
  ASSERT_EQ(y.sizes(), (Shape{2, 2, 8, 10}));
  expect_close(y.to_vector<double>(), yc.to_vector<double>(), 0, "conv_transpose2d permuted");
  Tensor y3 = conv_transpose2d(x[1], w, Tensor(), {2, 2}, {1, 1}, {1, 1});  // unbatched
  expect_close(y3.to_vector<double>(), y[1].to_vector<double>(), 0, "conv_transpose2d unbatched");
}

// ---- pooling and resampling -----------------------------------------------------------------------

TEST(ConvOps, PoolingForwardMatchesNaiveReference) {
  struct P {
    Size2 k, s, p;
  };
  const std::vector<P> cases = {{{2, 2}, {0, 0}, {0, 0}}, {{3, 3}, {2, 2}, {1, 1}}, {{3, 2}, {1, 2}, {1, 0}},
                                {{1, 1}, {2, 1}, {0, 0}}, {{5, 4}, {3, 2}, {2, 2}}, {{7, 6}, {1, 1}, {0, 0}}};
  uint64_t seed = 2000;
  for (const P& c : cases)
    for (int mode : {0, 1}) {
      Tensor x = rnd({2, 3, 7, 6}, ++seed);
      Size2 s = c.s[0] == 0 ? c.k : c.s;
      int64_t OH, OW;
      auto want = naive_pool(x.to_vector<double>(), 6, 7, 6, c.k, s, c.p, mode, OH, OW);
      const std::string what = detail::concat(mode ? "max" : "avg", " k=", c.k[0], "x", c.k[1], " s=", s[0], ",",
                                              s[1], " p=", c.p[0], ",", c.p[1]);
      for (DType dt : {DType::f64, DType::f32}) {
        Tensor xi = x.to(dt);
        Tensor y = mode ? max_pool2d(xi, c.k, c.s, c.p) : avg_pool2d(xi, c.k, c.s, c.p);
        ASSERT_EQ(y.sizes(), (Shape{2, 3, OH, OW})) << what;
        EXPECT_EQ(y.dtype(), dt);
        expect_close(y.to_vector<double>(), want, dt == DType::f64 ? 1e-14 : 1e-6, what);
      }
    }
  // indices point at the maximum inside each plane
  Tensor x = rnd({1, 2, 5, 5}, 2100);
  auto [v, idx] = max_pool2d_with_indices(x, {2, 2}, {2, 2}, {1, 1});
  EXPECT_EQ(idx.dtype(), DType::i64);
  auto xv = x.to_vector<double>(), vv = v.to_vector<double>();
  auto iv = idx.to_vector<int64_t>();
  for (size_t i = 0; i < iv.size(); ++i) EXPECT_EQ(xv[(i / 9) * 25 + iv[i]], vv[i]);
}

TEST(ConvOps, MaxPoolPropagatesNaNAndHandlesInfinities) {
  const double inf = std::numeric_limits<double>::infinity();
  Tensor x = from_vector<double>({-inf, -inf, -inf, -inf, 1.0, std::nan(""), 3.0, 2.0}, {1, 2, 2, 2});
  auto y = max_pool2d(x, {2, 2}).to_vector<double>();
  EXPECT_EQ(y[0], -inf);
  EXPECT_TRUE(std::isnan(y[1]));
}

TEST(ConvOps, PoolingGradAndGradGrad) {
  Tensor x = leaf({2, 2, 7, 6}, 3000);
  check_grads([](const TensorList& t) { return avg_pool2d(t[0], {3, 2}, {2, 1}, {1, 1}); }, {x}, "avg_pool2d");
  check_grads([](const TensorList& t) { return avg_pool2d(t[0], {2, 2}); }, {x}, "avg_pool2d default stride");
  check_grads([](const TensorList& t) { return max_pool2d(t[0], {3, 3}, {1, 2}, {1, 1}); }, {x}, "max_pool2d");
  check_grads([](const TensorList& t) { return max_pool2d(t[0], {2, 2}); }, {x}, "max_pool2d default stride");
  // second order through a nonlinearity: the pooling backwards' own backwards matter here
  check_grads([](const TensorList& t) { return square(avg_pool2d(tanh(t[0]), {3, 3}, {2, 2}, {1, 1})); }, {x},
              "avg_pool2d of tanh, squared");
  check_grads([](const TensorList& t) { return square(max_pool2d(tanh(t[0]), {2, 3}, {2, 1}, {1, 1})); }, {x},
              "max_pool2d of tanh, squared");
  // a non-contiguous input
  Tensor xv = rnd({2, 6, 7, 2}, 3001).detach().permute({0, 3, 2, 1});
  xv.requires_grad_(true);
  check_grads([](const TensorList& t) { return max_pool2d(t[0], {2, 2}, {1, 1}); }, {xv}, "max_pool2d permuted");
}

TEST(ConvOps, MaxPoolGradientGoesToTheArgmax) {
  Tensor x = leaf({1, 1, 4, 4}, 3100);
  auto [y, idx] = max_pool2d_with_indices(x, {2, 2});
  Tensor gy = rnd(y.sizes(), 3101);
  Tensor gx = grad({y}, {x}, {gy})[0];
  auto g = gx.to_vector<double>(), gyv = gy.to_vector<double>();
  auto iv = idx.to_vector<int64_t>();
  std::vector<double> want(16, 0.0);
  for (size_t i = 0; i < iv.size(); ++i) want[iv[i]] += gyv[i];
  expect_close(g, want, 0, "max_pool2d gradient");
}

TEST(ConvOps, UpsampleNearest2d) {
  Tensor x = rnd({2, 3, 3, 4}, 4000);
  Tensor y = upsample_nearest2d(x, 3);
  ASSERT_EQ(y.sizes(), (Shape{2, 3, 9, 12}));
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t h = 0; h < 9; ++h)
      for (int64_t w = 0; w < 12; ++w) ASSERT_EQ(yv[(p * 9 + h) * 12 + w], xv[(p * 3 + h / 3) * 4 + w / 3]);
  Tensor y1 = upsample_nearest2d(x, 1);
  expect_close(y1.to_vector<double>(), xv, 0, "scale 1");
  Tensor y3 = upsample_nearest2d(x[0].to(DType::f32), 2);
  ASSERT_EQ(y3.sizes(), (Shape{3, 6, 8}));
  // backward = sum over each block
  Tensor xl = leaf({1, 2, 2, 3}, 4001);
  Tensor yl = upsample_nearest2d(xl, 2);
  Tensor gy = rnd(yl.sizes(), 4002);
  auto gx = grad({yl}, {xl}, {gy})[0].to_vector<double>();
  auto gyv = gy.to_vector<double>();
  std::vector<double> want(12, 0.0);
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t w = 0; w < 6; ++w) want[(p * 2 + h / 2) * 3 + w / 2] += gyv[(p * 4 + h) * 6 + w];
  expect_close(gx, want, 1e-14, "upsample backward");
  Tensor xg = leaf({2, 2, 3, 2}, 4003);
  check_grads([](const TensorList& t) { return upsample_nearest2d(t[0], 2); }, {xg}, "upsample_nearest2d");
  check_grads([](const TensorList& t) { return square(upsample_nearest2d(tanh(t[0]), 3)); }, {xg},
              "upsample_nearest2d of tanh, squared");
}

TEST(ConvOps, PixelShuffleAndUnshuffle) {
  const int64_t N = 2, C = 3, r = 2, H = 3, W = 4;
  Tensor x = rnd({N, C * r * r, H, W}, 5000);
  Tensor y = pixel_shuffle(x, r);
  ASSERT_EQ(y.sizes(), (Shape{N, C, H * r, W * r}));
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H * r; ++h)
        for (int64_t w = 0; w < W * r; ++w) {
          const int64_t src_c = c * r * r + (h % r) * r + (w % r);
          ASSERT_EQ(yv[((n * C + c) * H * r + h) * W * r + w], xv[((n * C * r * r + src_c) * H + h / r) * W + w / r]);
        }
  Tensor back = pixel_unshuffle(y, r);
  ASSERT_EQ(back.sizes(), x.sizes());
  expect_close(back.to_vector<double>(), xv, 0, "unshuffle(shuffle(x))");
  Tensor un = pixel_unshuffle(rnd({1, 2, 6, 3}, 5001), 3);
  ASSERT_EQ(un.sizes(), (Shape{1, 18, 2, 1}));
  ASSERT_EQ(pixel_shuffle(x[0], r).sizes(), (Shape{C, H * r, W * r}));  // unbatched

  Tensor xl = leaf({1, 8, 2, 3}, 5002);
  check_grads([](const TensorList& t) { return pixel_shuffle(t[0], 2); }, {xl}, "pixel_shuffle");
  Tensor xu = leaf({2, 1, 4, 6}, 5003);
  check_grads([](const TensorList& t) { return square(pixel_unshuffle(t[0], 2)); }, {xu}, "pixel_unshuffle");
}

// ---- errors -----------------------------------------------------------------------------------------

TEST(ConvOps, Errors) {
  Tensor x = rnd({2, 4, 5, 5}, 1);
  Tensor w = rnd({6, 2, 3, 3}, 2);
  expect_error([&] { conv2d(x, w, Tensor(), {1, 1}, {0, 0}, {1, 1}, 3); }, "not divisible by groups");
  expect_error([&] { conv2d(x, rnd({6, 3, 3, 3}, 3)); }, "conv2d: weight [6, 3, 3, 3]");
  expect_error([&] { conv2d(x, rnd({6, 4, 3}, 3)); }, "conv2d: expected a weight");
  expect_error([&] { conv2d(rnd({4, 5}, 4), w); }, "[N, C, H, W]");
  expect_error([&] { conv2d(x, rnd({6, 4, 7, 3}, 5)); }, "larger than the padded input");
  expect_error([&] { conv2d(x, rnd({6, 4, 3, 3}, 5), Tensor(), {1, 1}, {0, 0}, {3, 3}); }, "larger than the padded");
  expect_error([&] { conv2d(x, w, rnd({5}, 6), {1, 1}, {0, 0}, {1, 1}, 2); }, "bias [5]");
  expect_error([&] { conv2d(x, w.to(DType::f32), Tensor(), {1, 1}, {0, 0}, {1, 1}, 2); }, "dtypes differ");
  expect_error([&] { conv2d(x, w, Tensor(), {0, 1}, {0, 0}, {1, 1}, 2); }, "stride must be >= 1");
  expect_error([&] { conv2d(x, w, Tensor(), {1, 1}, {-1, 0}, {1, 1}, 2); }, "padding must be >= 0");
  expect_error([&] { conv2d(x.to(DType::i64), w.to(DType::i64)); }, "conv2d: expected a floating tensor");

  Tensor wt = rnd({4, 3, 3, 3}, 7);
  expect_error([&] { conv_transpose2d(x, wt, Tensor(), {2, 2}, {0, 0}, {2, 0}); }, "output_padding");
  expect_error([&] { conv_transpose2d(x, rnd({3, 3, 3, 3}, 8)); }, "conv_transpose2d: weight [3, 3, 3, 3]");
  expect_error([&] { conv_transpose2d(x, wt, Tensor(), {1, 1}, {0, 0}, {0, 0}, 3); }, "not divisible by groups");
  expect_error([&] { conv_transpose2d(x, wt, rnd({4}, 9)); }, "conv_transpose2d: bias [4]");
  expect_error([&] { conv_transpose2d(rnd({1, 4, 1, 1}, 9), wt, Tensor(), {1, 1}, {2, 2}); }, "reduce the padding");

  expect_error([&] { avg_pool2d(x, {2, 2}, {0, 0}, {2, 0}); }, "avg_pool2d: padding");
  expect_error([&] { max_pool2d(x, {7, 2}); }, "max_pool2d: kernel {7, 2} is larger");
  expect_error([&] { max_pool2d(x, {0, 2}); }, "kernel size must be >= 1");
  expect_error([&] { avg_pool2d(rnd({5, 5}, 1), {2, 2}); }, "avg_pool2d: expected an input");
  expect_error([&] { upsample_nearest2d(x, 0); }, "scale_factor");
  expect_error([&] { pixel_shuffle(x, 3); }, "pixel_shuffle: channels (4)");
  expect_error([&] { pixel_unshuffle(x, 2); }, "pixel_unshuffle: height and width");
  expect_error([&] { pixel_shuffle(rnd({4, 4}, 1), 2); }, "pixel_shuffle: expected");
  expect_error([&] { conv2d_weight_grad(x, rnd({3, 6, 3, 3}, 1), {3, 3}); }, "conv2d_weight_grad: grad_out");
}
