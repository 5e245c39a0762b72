// Elementwise ops: every function of ops/elementwise.h. Forward values against the std::
// functions on random inputs (f32 and f64, contiguous and transposed), gradients by gradcheck
// and gradgradcheck in f64 (broadcast [3,1] with [1,4], scalar overloads, transposed inputs),
// comparisons / where / logical ops, softplus's beta and threshold, dtype promotion, and the
// device and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "test_util.h"

using namespace ember;

namespace {

enum class Domain { any, positive, above_minus_one, away_from_zero };

// Random f64 values of shape s in the domain (kept off the points where an op is not smooth
// by the randomness: no value lands within 1e-6 of a kink in practice).
Tensor sample(const Shape& s, Domain d, uint64_t seed) {
  Generator g(seed);
  switch (d) {
    case Domain::any: return mul(randn(s, {.dtype = DType::f64}, &g), 1.5).detach();
    case Domain::positive: return add(mul(rand(s, {.dtype = DType::f64}, &g), 2.0), 0.3).detach();
    case Domain::above_minus_one: return add(mul(rand(s, {.dtype = DType::f64}, &g), 3.0), -0.7).detach();
    case Domain::away_from_zero: {
      Tensor mag = add(rand(s, {.dtype = DType::f64}, &g), 0.5);
      Tensor sg = sign(randn(s, {.dtype = DType::f64}, &g));
      return mul(mag, sg).detach();
    }
  }
  return Tensor();
}

Tensor leaf(const Tensor& t) {
  Tensor l = t.detach().clone();
  l.requires_grad_(true);
  return l;
}

void expect_grads_ok(const TensorFunction& f, const TensorList& in, const std::string& what) {
  GradcheckResult r1 = gradcheck(f, in);
  EXPECT_TRUE(r1.ok) << what << ": " << r1.message;
  GradcheckResult r2 = gradgradcheck(f, in);
  EXPECT_TRUE(r2.ok) << what << ": " << r2.message;
}

// |got - want| <= tol * max(1, |want|), NaN only where NaN is wanted.
void expect_values(const Tensor& y, const std::vector<double>& want, double tol, const std::string& what) {
  std::vector<double> got = y.to_vector<double>();
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " element " << i;
      continue;
    }
    if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << what << " element " << i;
      continue;
    }
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(want[i])))
        << what << " element " << i << " (tol " << tol << ")";
  }
}

std::vector<double> map1(const Tensor& x, const std::function<double(double)>& f) {
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e = f(e);
  return v;
}

// f(a[i], b[j]) for a [3,1] and b [1,4] broadcast to [3,4] (or any two tensors of one shape).
std::vector<double> map2(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> out;
  if (a.sizes() == b.sizes()) {
    for (size_t i = 0; i < av.size(); ++i) out.push_back(f(av[i], bv[i]));
    return out;
  }
  const int64_t R = a.size(0), C = b.size(1);
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) out.push_back(f(av[i], bv[j]));
  return out;
}

double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ref_softplus(double x, double beta, double threshold) {
  return beta * x > threshold ? x : std::log1p(std::exp(beta * x)) / beta;
}

struct Unary {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  Domain domain;
  bool differentiable = true;
};

std::vector<Unary> unary_ops() {
  using std::numbers::pi;
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, Domain::any},
      {"operator-", [](const Tensor& x) { return -x; }, [](double x) { return -x; }, Domain::any},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, Domain::any},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, Domain::positive},
      {"log1p", [](const Tensor& x) { return log1p(x); }, [](double x) { return std::log1p(x); },
       Domain::above_minus_one},
      {"expm1", [](const Tensor& x) { return expm1(x); }, [](double x) { return std::expm1(x); }, Domain::any},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, Domain::positive},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, Domain::positive},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::abs(x); }, Domain::away_from_zero},
      {"sign", [](const Tensor& x) { return sign(x); }, [](double x) { return double((x > 0) - (x < 0)); },
       Domain::any, false},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double x) { return std::sin(x); }, Domain::any},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double x) { return std::cos(x); }, Domain::any},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, Domain::any},
      {"erf", [](const Tensor& x) { return erf(x); }, [](double x) { return std::erf(x); }, Domain::any},
      {"square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; }, Domain::any},
      {"reciprocal", [](const Tensor& x) { return reciprocal(x); }, [](double x) { return 1 / x; },
       Domain::away_from_zero},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); },
       [](double x) { return std::min(std::max(x, -0.5), 0.7); }, Domain::any},
      {"clamp_min", [](const Tensor& x) { return clamp(x, -0.5, std::nullopt); },
       [](double x) { return std::max(x, -0.5); }, Domain::any},
      {"clamp_max", [](const Tensor& x) { return clamp(x, std::nullopt, 0.7); },
       [](double x) { return std::min(x, 0.7); }, Domain::any},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, ref_sigmoid, Domain::any},
      {"logsigmoid", [](const Tensor& x) { return logsigmoid(x); }, [](double x) { return std::log(ref_sigmoid(x)); },
       Domain::any},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, Domain::any},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x); }, [](double x) { return x > 0 ? x : 0.01 * x; },
       Domain::any},
      {"leaky_relu(0.2)", [](const Tensor& x) { return leaky_relu(x, 0.2); },
       [](double x) { return x > 0 ? x : 0.2 * x; }, Domain::any},
      {"elu", [](const Tensor& x) { return elu(x); }, [](double x) { return x > 0 ? x : std::expm1(x); }, Domain::any},
      {"elu(0.5)", [](const Tensor& x) { return elu(x, 0.5); }, [](double x) { return x > 0 ? x : 0.5 * std::expm1(x); },
       Domain::any},
      {"softplus", [](const Tensor& x) { return softplus(x); }, [](double x) { return ref_softplus(x, 1, 20); },
       Domain::any},
      {"softplus(beta 2)", [](const Tensor& x) { return softplus(x, 2.0); },
       [](double x) { return ref_softplus(x, 2, 20); }, Domain::any},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x * ref_sigmoid(x); }, Domain::any},
      {"gelu", [](const Tensor& x) { return gelu(x); },
       [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, Domain::any},
      // scalar overloads, both operand orders
      {"add(s)", [](const Tensor& x) { return add(x, 1.25); }, [](double x) { return x + 1.25; }, Domain::any},
      {"x+s", [](const Tensor& x) { return x + 1.25; }, [](double x) { return x + 1.25; }, Domain::any},
      {"s+x", [](const Tensor& x) { return 1.25 + x; }, [](double x) { return x + 1.25; }, Domain::any},
      {"sub(s)", [](const Tensor& x) { return sub(x, 0.75); }, [](double x) { return x - 0.75; }, Domain::any},
      {"x-s", [](const Tensor& x) { return x - 0.75; }, [](double x) { return x - 0.75; }, Domain::any},
      {"rsub(s)", [](const Tensor& x) { return rsub(x, 0.75); }, [](double x) { return 0.75 - x; }, Domain::any},
      {"s-x", [](const Tensor& x) { return 0.75 - x; }, [](double x) { return 0.75 - x; }, Domain::any},
      {"mul(s)", [](const Tensor& x) { return mul(x, -3.0); }, [](double x) { return -3 * x; }, Domain::any},
      {"x*s", [](const Tensor& x) { return x * -3.0; }, [](double x) { return -3 * x; }, Domain::any},
      {"s*x", [](const Tensor& x) { return -3.0 * x; }, [](double x) { return -3 * x; }, Domain::any},
      {"div(s)", [](const Tensor& x) { return div(x, 3.0); }, [](double x) { return x / 3; }, Domain::any},
      {"x/s", [](const Tensor& x) { return x / 3.0; }, [](double x) { return x / 3; }, Domain::any},
      {"rdiv(s)", [](const Tensor& x) { return rdiv(x, 2.0); }, [](double x) { return 2 / x; }, Domain::away_from_zero},
      {"s/x", [](const Tensor& x) { return 2.0 / x; }, [](double x) { return 2 / x; }, Domain::away_from_zero},
      {"pow(0.5)", [](const Tensor& x) { return pow(x, 0.5); }, [](double x) { return std::pow(x, 0.5); },
       Domain::positive},
      {"pow(-1.5)", [](const Tensor& x) { return pow(x, -1.5); }, [](double x) { return std::pow(x, -1.5); },
       Domain::positive},
      {"pow(3)", [](const Tensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; }, Domain::any},
      {"pow(2)", [](const Tensor& x) { return pow(x, 2.0); }, [](double x) { return x * x; }, Domain::any},
      {"pow(1)", [](const Tensor& x) { return pow(x, 1.0); }, [](double x) { return x; }, Domain::any},
      {"pow(0)", [](const Tensor& x) { return pow(x, 0.0); }, [](double) { return 1.0; }, Domain::any},
      {"Tensor::pow", [](const Tensor& x) { return x.pow(2.5); }, [](double x) { return std::pow(x, 2.5); },
       Domain::positive},
      {"Tensor::exp", [](const Tensor& x) { return x.exp(); }, [](double x) { return std::exp(x); }, Domain::any},
      {"Tensor::log", [](const Tensor& x) { return x.log(); }, [](double x) { return std::log(x); }, Domain::positive},
      {"Tensor::sqrt", [](const Tensor& x) { return x.sqrt(); }, [](double x) { return std::sqrt(x); },
       Domain::positive},
      {"Tensor::abs", [](const Tensor& x) { return x.abs(); }, [](double x) { return std::abs(x); },
       Domain::away_from_zero},
      {"Tensor::square", [](const Tensor& x) { return x.square(); }, [](double x) { return x * x; }, Domain::any},
  };
}

// A fake device tensor: host memory labelled cuda:0, for the device checks (never read).
Tensor fake_cuda(const Shape& s, std::vector<float>& backing) {
  backing.assign(shape_numel(s), 0.0f);
  auto st = std::make_shared<Storage>(backing.data(), backing.size() * sizeof(float), Device::cuda(0), nullptr);
  return Tensor::make_view(st, s, contiguous_strides(s), 0, DType::f32);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// unary ops and scalar overloads

TEST(ElementwiseOps, UnaryForwardMatchesStd) {
  uint64_t seed = 1;
  for (const Unary& u : unary_ops()) {
    Tensor x64 = sample({3, 4}, u.domain, seed++);
    for (DType dt : {DType::f32, DType::f64}) {
      const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
      Tensor x = x64.to(dt);
      Tensor y = u.op(x);
      EXPECT_EQ(y.dtype(), dt) << u.name;
      ASSERT_EQ(y.sizes(), x.sizes()) << u.name;
      expect_values(y, map1(x, u.ref), tol, std::string(u.name) + " " + dtype_name(dt));
      // a transposed (non-contiguous) input gives the same values in its own order
      Tensor xt = x.t();
      ASSERT_FALSE(xt.is_contiguous());
      Tensor yt = u.op(xt);
      ASSERT_EQ(yt.sizes(), (Shape{4, 3})) << u.name;
      expect_values(yt, map1(xt, u.ref), tol, std::string(u.name) + " transposed " + dtype_name(dt));
    }
  }
}

TEST(ElementwiseOps, UnaryForwardLargeInputs) {
  // Long rows take the vectorised inner loops (with remainders) and the thread pool
  // (more than 2 x 16384 elements); a transposed input takes the strided loop.
  uint64_t seed = 500;
  for (const Unary& u : unary_ops()) {
    Tensor x64 = sample({3, 12347}, u.domain, seed++);
    for (DType dt : {DType::f32, DType::f64}) {
      const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
      Tensor x = x64.to(dt);
      expect_values(u.op(x), map1(x, u.ref), tol, std::string(u.name) + " large " + dtype_name(dt));
      Tensor xt = x.t();
      expect_values(u.op(xt), map1(xt, u.ref), tol, std::string(u.name) + " large transposed " + dtype_name(dt));
    }
  }
}

TEST(ElementwiseOps, UnaryGradients) {
  uint64_t seed = 1000;
  for (const Unary& u : unary_ops()) {
    Tensor x = leaf(sample({3, 4}, u.domain, seed++));
    auto f = [&u](const TensorList& in) { return u.op(in[0]); };
    expect_grads_ok(f, {x}, u.name);
    // non-contiguous input
    auto ft = [&u](const TensorList& in) { return u.op(in[0].t()); };
    expect_grads_ok(ft, {x}, std::string(u.name) + " transposed");
    EXPECT_EQ(u.op(x).requires_grad(), u.differentiable) << u.name;
  }
}

TEST(ElementwiseOps, SpecialValues) {
  // Large arguments neither overflow nor lose the tail, in f32 and f64.
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
    Tensor big = tensor({-100, -30, -1e-3, 0, 1e-3, 30, 100}, {}, {.dtype = dt});
    expect_values(sigmoid(big), map1(big, ref_sigmoid), tol, "sigmoid tails");
    expect_values(logsigmoid(big), map1(big, [](double x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); }),
                  tol, "logsigmoid tails");
    expect_values(tanh(big), map1(big, [](double x) { return std::tanh(x); }), tol, "tanh tails");
    expect_values(softplus(big), map1(big, [](double x) { return ref_softplus(x, 1, 20); }), tol, "softplus tails");
    expect_values(silu(big), map1(big, [](double x) { return x * ref_sigmoid(x); }), tol, "silu tails");
    // Tiny arguments keep their relative precision.
    Tensor tiny = tensor({1e-8, -3e-7, 2e-5}, {}, {.dtype = dt});
    auto tv = tanh(tiny).to_vector<double>(), ev = expm1(tiny).to_vector<double>(), lv = log1p(tiny).to_vector<double>();
    auto xv = tiny.to_vector<double>();
    for (int i = 0; i < 3; ++i) {
      EXPECT_NEAR(tv[i] / xv[i], 1.0, 1e-6);
      EXPECT_NEAR(ev[i] / xv[i], 1.0, 1e-4);
      EXPECT_NEAR(lv[i] / xv[i], 1.0, 1e-4);
    }
    // exp of very negative / very positive values
    Tensor e = exp(tensor({-1000, 1000}, {}, {.dtype = dt}));
    EXPECT_EQ(e.to_vector<double>()[0], 0.0);
    EXPECT_TRUE(std::isinf(e.to_vector<double>()[1]));
    // log(0) = -inf, sqrt(-1) = NaN: no exception, IEEE results.
    EXPECT_EQ(log(tensor({0.0}, {}, {.dtype = dt})).item(), -std::numeric_limits<double>::infinity());
    EXPECT_TRUE(std::isnan(sqrt(tensor({-1.0}, {}, {.dtype = dt})).item()));
    EXPECT_EQ(sign(tensor({0.0}, {}, {.dtype = dt})).item(), 0.0);
    EXPECT_EQ(relu(tensor({0.0}, {}, {.dtype = dt})).item(), 0.0);
  }
}

TEST(ElementwiseOps, SoftplusBetaAndThreshold) {
  for (DType dt : {DType::f32, DType::f64}) {
    // beta 1, threshold 20: above 20 the input itself, exactly.
    Tensor x = tensor({20.5, 25.0, 19.5, -25.0}, {}, {.dtype = dt});
    auto v = softplus(x).to_vector<double>();
    EXPECT_EQ(v[0], static_cast<double>(static_cast<float>(20.5)));
    EXPECT_EQ(v[1], 25.0);
    EXPECT_NEAR(v[2], std::log1p(std::exp(19.5)), 1e-5);
    EXPECT_NEAR(v[3], std::log1p(std::exp(-25.0)), 1e-15);
    // beta 2, threshold 3: linear where 2x > 3, i.e. x > 1.5.
    Tensor y = tensor({1.6, 4.0, 1.4, 0.0, -2.0}, {}, {.dtype = dt});
    auto w = softplus(y, 2.0, 3.0).to_vector<double>();
    auto yv = y.to_vector<double>();
    EXPECT_EQ(w[0], yv[0]);
    EXPECT_EQ(w[1], 4.0);
    for (int i = 2; i < 5; ++i) EXPECT_NEAR(w[i], std::log1p(std::exp(2 * yv[i])) / 2, 1e-6) << i;
    EXPECT_NEAR(w[3], std::log(2.0) / 2, 1e-7);
  }
  // Gradient: 1 in the linear region, sigmoid(beta x) below; checked to second order.
  Tensor y = leaf(tensor({1.6, 4.0, 1.4, 0.0, -2.0}, {}, {.dtype = DType::f64}));
  Tensor g = grad({sum(softplus(y, 2.0, 3.0))}, {y})[0];
  auto gv = g.to_vector<double>();
  auto yv = y.to_vector<double>();
  EXPECT_EQ(gv[0], 1.0);
  EXPECT_EQ(gv[1], 1.0);
  for (int i = 2; i < 5; ++i) EXPECT_NEAR(gv[i], ref_sigmoid(2 * yv[i]), 1e-12);
  expect_grads_ok([](const TensorList& in) { return softplus(in[0], 2.0, 3.0); }, {y}, "softplus(2, 3)");
  expect_grads_ok([](const TensorList& in) { return softplus(in[0], 0.5); }, {y}, "softplus(0.5)");
  EXPECT_THROW(softplus(y, 0.0), Error);
  EXPECT_THROW(softplus(y, -1.0), Error);
}

// ---------------------------------------------------------------------------------------------
// binary ops

struct Binary {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  Domain da, db;
};

std::vector<Binary> binary_ops() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double a, double b) { return a + b; },
       Domain::any, Domain::any},
      {"a+b", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double a, double b) { return a + b; },
       Domain::any, Domain::any},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double a, double b) { return a - b; },
       Domain::any, Domain::any},
      {"a-b", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double a, double b) { return a - b; },
       Domain::any, Domain::any},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double a, double b) { return a * b; },
       Domain::any, Domain::any},
      {"a*b", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double a, double b) { return a * b; },
       Domain::any, Domain::any},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double a, double b) { return a / b; },
       Domain::any, Domain::away_from_zero},
      {"a/b", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double a, double b) { return a / b; },
       Domain::any, Domain::away_from_zero},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); },
       [](double a, double b) { return std::pow(a, b); }, Domain::positive, Domain::any},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }, Domain::any, Domain::any},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }, Domain::any, Domain::any},
  };
}

TEST(ElementwiseOps, BinaryForwardWithBroadcasting) {
  uint64_t seed = 2000;
  for (const Binary& op : binary_ops()) {
    Tensor a64 = sample({3, 1}, op.da, seed++), b64 = sample({1, 4}, op.db, seed++);
    for (DType dt : {DType::f32, DType::f64}) {
      const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
      Tensor a = a64.to(dt), b = b64.to(dt);
      Tensor y = op.op(a, b);
      ASSERT_EQ(y.sizes(), (Shape{3, 4})) << op.name;
      EXPECT_EQ(y.dtype(), dt);
      expect_values(y, map2(a, b, op.ref), tol, std::string(op.name) + " broadcast");
      // same shapes, one operand transposed
      Tensor c = sample({4, 3}, op.db, seed++).to(dt).t();
      Tensor a2 = sample({3, 4}, op.da, seed++).to(dt);
      expect_values(op.op(a2, c), map2(a2, c, op.ref), tol, std::string(op.name) + " transposed");
      // a 0-dim operand broadcasts against anything
      Tensor s = sample({}, op.db, seed++).to(dt);
      Tensor ys = op.op(a2, s);
      ASSERT_EQ(ys.sizes(), (Shape{3, 4}));
      const double sv = s.item();
      expect_values(ys, map1(a2, [&](double x) { return op.ref(x, sv); }), tol, std::string(op.name) + " 0-dim");
    }
  }
}

TEST(ElementwiseOps, BinaryForwardLargeInputs) {
  uint64_t seed = 2500;
  for (const Binary& op : binary_ops()) {
    Tensor a64 = sample({211, 1}, op.da, seed++), b64 = sample({1, 203}, op.db, seed++);
    Tensor c64 = sample({211, 203}, op.db, seed++);
    for (DType dt : {DType::f32, DType::f64}) {
      const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
      Tensor a = a64.to(dt), b = b64.to(dt), c = c64.to(dt);
      expect_values(op.op(a, b), map2(a, b, op.ref), tol, std::string(op.name) + " large broadcast");
      Tensor full_a = a.expand({211, 203}).contiguous();
      expect_values(op.op(full_a, c), map2(full_a, c, op.ref), tol, std::string(op.name) + " large");
      // one operand a broadcast scalar, on either side
      Tensor s = sample({1}, op.db, seed++).to(dt), s2 = sample({1}, op.da, seed++).to(dt);
      const double sv = s.item(), sv2 = s2.item();
      expect_values(op.op(full_a, s), map1(full_a, [&](double x) { return op.ref(x, sv); }), tol,
                    std::string(op.name) + " tensor-scalar");
      expect_values(op.op(s2, c), map1(c, [&](double y) { return op.ref(sv2, y); }), tol,
                    std::string(op.name) + " scalar-tensor");
    }
  }
}

TEST(ElementwiseOps, BinaryGradients) {
  uint64_t seed = 3000;
  for (const Binary& op : binary_ops()) {
    auto f = [&op](const TensorList& in) { return op.op(in[0], in[1]); };
    Tensor a = leaf(sample({3, 1}, op.da, seed++)), b = leaf(sample({1, 4}, op.db, seed++));
    expect_grads_ok(f, {a, b}, std::string(op.name) + " [3,1] x [1,4]");
    // transposed operand of the same shape
    Tensor c = leaf(sample({3, 4}, op.da, seed++)), d = leaf(sample({4, 3}, op.db, seed++));
    expect_grads_ok([&op](const TensorList& in) { return op.op(in[0], in[1].t()); }, {c, d},
                    std::string(op.name) + " transposed");
    // only one operand requires grad
    Tensor e = sample({3, 4}, op.db, seed++);
    expect_grads_ok([&op, e](const TensorList& in) { return op.op(in[0], e); }, {c}, std::string(op.name) + " one");
  }
}

TEST(ElementwiseOps, MaximumMinimumTiesAndNaN) {
  Tensor a = leaf(tensor({1.0, 2.0, 3.0}, {}, {.dtype = DType::f64}));
  Tensor b = tensor({1.0, 5.0, 0.0}, {}, {.dtype = DType::f64});
  // Ties split the gradient evenly: max(a, a) has gradient 1.
  Tensor g = grad({sum(maximum(a, b))}, {a})[0];
  EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{0.5, 0.0, 1.0}));
  Tensor gm = grad({sum(minimum(a, b))}, {a})[0];
  EXPECT_EQ(gm.to_vector<double>(), (std::vector<double>{0.5, 1.0, 0.0}));
  Tensor gs = grad({sum(maximum(a, a))}, {a})[0];
  EXPECT_EQ(gs.to_vector<double>(), (std::vector<double>{1.0, 1.0, 1.0}));
  // NaN propagates from either side.
  Tensor n = tensor({NAN, 1.0});
  Tensor m = tensor({2.0, NAN});
  for (const Tensor& r : {maximum(n, m), minimum(n, m), maximum(m, n), minimum(m, n)}) {
    auto v = r.to_vector<double>();
    EXPECT_TRUE(std::isnan(v[0]));
    EXPECT_TRUE(std::isnan(v[1]));
  }
}

TEST(ElementwiseOps, DtypePromotion) {
  Tensor f32 = tensor({1.5, 2.5}), f64 = tensor({0.25, 0.5}, {}, {.dtype = DType::f64});
  Tensor i64 = tensor({2, 3}, {}, {.dtype = DType::i64}), i32 = tensor({4, 5}, {}, {.dtype = DType::i32});
  EXPECT_EQ(add(f32, f64).dtype(), DType::f64);
  EXPECT_EQ(add(f64, f32).dtype(), DType::f64);
  EXPECT_EQ(mul(i64, f32).dtype(), DType::f32);
  EXPECT_EQ(mul(f32, i64).dtype(), DType::f32);
  EXPECT_EQ(add(f32, f64).to_vector<double>(), (std::vector<double>{1.75, 3.0}));
  EXPECT_EQ(mul(i64, f32).to_vector<double>(), (std::vector<double>{3.0, 7.5}));
  EXPECT_EQ(add(i64, i32).dtype(), DType::i64);
  EXPECT_EQ(add(i64, i32).to_vector<int64_t>(), (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(sub(i32, i32).to_vector<int32_t>(), (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(div(i64, f64).dtype(), DType::f64);
  // A double scalar keeps the tensor's dtype.
  EXPECT_EQ(mul(f32, 2.0).dtype(), DType::f32);
  EXPECT_EQ(add(f64, 1.0).dtype(), DType::f64);
  // Gradients come back in each input's own dtype.
  Tensor a = leaf(tensor({1.0, 2.0}, {}, {.dtype = DType::f32}));
  Tensor b = leaf(tensor({3.0, 4.0}, {}, {.dtype = DType::f64}));
  auto gs = grad({sum(mul(a, b))}, {a, b});
  EXPECT_EQ(gs[0].dtype(), DType::f32);
  EXPECT_EQ(gs[1].dtype(), DType::f64);
  EXPECT_EQ(gs[0].to_vector<double>(), (std::vector<double>{3.0, 4.0}));
  EXPECT_EQ(gs[1].to_vector<double>(), (std::vector<double>{1.0, 2.0}));
  // An integer operand gets no gradient; the float one does.
  Tensor c = leaf(tensor({0.5, -1.0}, {}, {.dtype = DType::f64}));
  Tensor gc = grad({sum(mul(i64, c))}, {c})[0];
  EXPECT_EQ(gc.to_vector<double>(), (std::vector<double>{2.0, 3.0}));
  // Ops that need floats refuse integers with an error naming the op.
  try {
    exp(i64);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp"), std::string::npos) << e.what();
  }
  EXPECT_THROW(pow(i64, i64), Error);
}

// ---------------------------------------------------------------------------------------------
// comparisons, logical ops, where

TEST(ElementwiseOps, Comparisons) {
  Tensor a = tensor({1, 2, 3}, {3, 1}, {.dtype = DType::f64});
  Tensor b = tensor({0, 2, 4, 3}, {1, 4});
  auto cmp = [&](const Tensor& r, const std::function<bool(double, double)>& f, const char* what) {
    EXPECT_EQ(r.dtype(), DType::boolean) << what;
    ASSERT_EQ(r.sizes(), (Shape{3, 4})) << what;
    std::vector<double> want = map2(a, b, [&](double x, double y) { return f(x, y) ? 1.0 : 0.0; });
    EXPECT_EQ(r.to_vector<uint8_t>().size(), want.size());
    EXPECT_EQ(r.to_vector<double>(), want) << what;
  };
  cmp(eq(a, b), [](double x, double y) { return x == y; }, "eq");
  cmp(ne(a, b), [](double x, double y) { return x != y; }, "ne");
  cmp(lt(a, b), [](double x, double y) { return x < y; }, "lt");
  cmp(le(a, b), [](double x, double y) { return x <= y; }, "le");
  cmp(gt(a, b), [](double x, double y) { return x > y; }, "gt");
  cmp(ge(a, b), [](double x, double y) { return x >= y; }, "ge");
  // scalar overloads
  Tensor v = tensor({-1, 0, 2.5, 3}, {}, {.dtype = DType::f64});
  EXPECT_EQ(eq(v, 2.5).to_vector<double>(), (std::vector<double>{0, 0, 1, 0}));
  EXPECT_EQ(ne(v, 2.5).to_vector<double>(), (std::vector<double>{1, 1, 0, 1}));
  EXPECT_EQ(lt(v, 0.0).to_vector<double>(), (std::vector<double>{1, 0, 0, 0}));
  EXPECT_EQ(le(v, 0.0).to_vector<double>(), (std::vector<double>{1, 1, 0, 0}));
  EXPECT_EQ(gt(v, 2.5).to_vector<double>(), (std::vector<double>{0, 0, 0, 1}));
  EXPECT_EQ(ge(v, 2.5).to_vector<double>(), (std::vector<double>{0, 0, 1, 1}));
  // integer tensors against integer and non-integer scalars
  Tensor iv = tensor({1, 2, 3}, {}, {.dtype = DType::i64});
  EXPECT_EQ(eq(iv, 2.0).to_vector<double>(), (std::vector<double>{0, 1, 0}));
  EXPECT_EQ(lt(iv, 2.5).to_vector<double>(), (std::vector<double>{1, 1, 0}));
  EXPECT_EQ(gt(iv, 2.5).to_vector<double>(), (std::vector<double>{0, 0, 1}));
  EXPECT_EQ(eq(iv, 2.5).to_vector<double>(), (std::vector<double>{0, 0, 0}));
  Tensor uv = tensor({0, 255}, {}, {.dtype = DType::u8});
  EXPECT_EQ(gt(uv, -1.0).to_vector<double>(), (std::vector<double>{1, 1}));
  EXPECT_EQ(lt(uv, 256.0).to_vector<double>(), (std::vector<double>{1, 1}));
  // bool tensors against scalars
  Tensor bv = tensor({1, 0}, {}, {.dtype = DType::boolean});
  EXPECT_EQ(eq(bv, 1.0).to_vector<double>(), (std::vector<double>{1, 0}));
  EXPECT_EQ(lt(bv, 0.5).to_vector<double>(), (std::vector<double>{0, 1}));
  EXPECT_EQ(gt(bv, -2.0).to_vector<double>(), (std::vector<double>{1, 1}));
  // f32 tensors compare against the scalar rounded to f32 (as PyTorch)
  EXPECT_EQ(eq(tensor({0.1}), 0.1).item(), 1.0);
  // mixed dtypes compare in the promoted type
  EXPECT_EQ(lt(iv, tensor({1.5, 2.5, 2.5})).to_vector<double>(), (std::vector<double>{1, 1, 0}));
  // NaN compares unequal to everything
  Tensor n = tensor({NAN});
  EXPECT_EQ(eq(n, n).item(), 0.0);
  EXPECT_EQ(ne(n, n).item(), 1.0);
  // no gradient through comparisons
  Tensor x = leaf(tensor({1.0, 2.0}, {}, {.dtype = DType::f64}));
  EXPECT_FALSE(gt(x, 1.5).requires_grad());
  EXPECT_FALSE(eq(x, x).requires_grad());
}

TEST(ElementwiseOps, LogicalOpsAndIsfinite) {
  Tensor p = tensor({1, 1, 0, 0}, {}, {.dtype = DType::boolean});
  Tensor q = tensor({1, 0, 1, 0}, {}, {.dtype = DType::boolean});
  EXPECT_EQ(logical_and(p, q).to_vector<double>(), (std::vector<double>{1, 0, 0, 0}));
  EXPECT_EQ(logical_or(p, q).to_vector<double>(), (std::vector<double>{1, 1, 1, 0}));
  EXPECT_EQ(logical_not(p).to_vector<double>(), (std::vector<double>{0, 0, 1, 1}));
  EXPECT_EQ(logical_not(p).dtype(), DType::boolean);
  // nonzero numbers are true
  Tensor f = tensor({2.5, 0, -1, 0});
  Tensor i = tensor({0, 7, 3, 0}, {}, {.dtype = DType::i64});
  EXPECT_EQ(logical_and(f, i).to_vector<double>(), (std::vector<double>{0, 0, 1, 0}));
  EXPECT_EQ(logical_or(f, i).to_vector<double>(), (std::vector<double>{1, 1, 1, 0}));
  EXPECT_EQ(logical_not(f).to_vector<double>(), (std::vector<double>{0, 1, 0, 1}));
  EXPECT_EQ(logical_not(i).to_vector<double>(), (std::vector<double>{1, 0, 0, 1}));
  // broadcasting
  EXPECT_EQ(logical_and(p.reshape({4, 1}), q.reshape({1, 4})).sizes(), (Shape{4, 4}));
  // isfinite
  Tensor s = tensor({1.0, INFINITY, -INFINITY, NAN, -0.0});
  EXPECT_EQ(isfinite(s).to_vector<double>(), (std::vector<double>{1, 0, 0, 0, 1}));
  EXPECT_EQ(isfinite(s.to(DType::f64)).to_vector<double>(), (std::vector<double>{1, 0, 0, 0, 1}));
  EXPECT_EQ(isfinite(i).to_vector<double>(), (std::vector<double>{1, 1, 1, 1}));
  EXPECT_EQ(isfinite(i).dtype(), DType::boolean);
}

TEST(ElementwiseOps, Where) {
  Tensor cond = tensor({1, 0, 1}, {3, 1}, {.dtype = DType::boolean});
  Tensor a = tensor({10, 20, 30, 40}, {1, 4}, {.dtype = DType::f64});
  Tensor b = arange(12, {.dtype = DType::f64}).reshape({3, 4});
  Tensor y = where(cond, a, b);
  ASSERT_EQ(y.sizes(), (Shape{3, 4}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{10, 20, 30, 40, 4, 5, 6, 7, 10, 20, 30, 40}));
  // a scalar for the else branch; a float condition (nonzero = true)
  Tensor y2 = where(tensor({0.0, 2.0, -1.0}), tensor({1, 2, 3}), -5.0);
  EXPECT_EQ(y2.to_vector<double>(), (std::vector<double>{-5, 2, 3}));
  // mixed dtypes promote
  EXPECT_EQ(where(cond, a.to(DType::f32), b).dtype(), DType::f64);
  // gradients go to the chosen branch, summed over broadcast dims; both orders checked
  Tensor la = leaf(sample({1, 4}, Domain::any, 1)), lb = leaf(sample({3, 4}, Domain::any, 2));
  Tensor g_cond = gt(sample({3, 1}, Domain::any, 3), 0.0);
  expect_grads_ok([g_cond](const TensorList& in) { return where(g_cond, in[0], in[1]); }, {la, lb}, "where");
  expect_grads_ok([g_cond](const TensorList& in) { return where(g_cond, in[0], 2.0); }, {la}, "where scalar");
  Tensor col = leaf(sample({4, 1}, Domain::any, 4)), lt34 = leaf(sample({3, 4}, Domain::any, 5));
  // [1,3] condition, [4,1] and a transposed [4,3] operand
  expect_grads_ok([g_cond](const TensorList& in) { return where(g_cond.t(), in[0], in[1].t()); }, {col, lt34},
                  "where transposed");
  auto gs = grad({sum(where(cond, la, lb))}, {la, lb});
  // cond true in rows 0 and 2: a gets 2 per element, b gets 1 in row 1 only
  EXPECT_EQ(gs[0].to_vector<double>(), (std::vector<double>{2, 2, 2, 2}));
  EXPECT_EQ(gs[1].to_vector<double>(), (std::vector<double>{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_THROW(where(tensor({1, 0}), tensor({1, 2, 3}), tensor({1, 2, 3})), Error);
}

// ---------------------------------------------------------------------------------------------
// shapes and devices

TEST(ElementwiseOps, BroadcastShapesAndShapeErrors) {
  EXPECT_EQ(broadcast_shapes({3, 1}, {1, 4}, "t"), (Shape{3, 4}));
  EXPECT_EQ(broadcast_shapes({2, 3}, {3}, "t"), (Shape{2, 3}));
  EXPECT_EQ(broadcast_shapes({}, {2, 1}, "t"), (Shape{2, 1}));
  EXPECT_EQ(broadcast_shapes({5, 1, 4}, {3, 1}, "t"), (Shape{5, 3, 4}));
  EXPECT_EQ(broadcast_shapes({0, 1}, {1, 3}, "t"), (Shape{0, 3}));
  EXPECT_THROW(broadcast_shapes({2, 3}, {4}, "t"), Error);
  Tensor a = zeros({2, 3}), b = zeros({4});
  for (auto f : std::vector<std::function<Tensor()>>{[&] { return add(a, b); }, [&] { return sub(a, b); },
                                                     [&] { return mul(a, b); }, [&] { return div(a, b); },
                                                     [&] { return pow(a, b); }, [&] { return maximum(a, b); },
                                                     [&] { return minimum(a, b); }, [&] { return lt(a, b); },
                                                     [&] { return logical_and(a, b); }, [&] { return where(a, a, b); }})
    EXPECT_THROW(f(), Error);
  try {
    add(a, b);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("add"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[4]"), std::string::npos) << msg;
  }
  // empty tensors work
  EXPECT_EQ(add(zeros({0, 3}), zeros({1, 3})).sizes(), (Shape{0, 3}));
  EXPECT_EQ(exp(zeros({0})).numel(), 0);
  // undefined operands are an error, not a crash
  EXPECT_THROW(add(Tensor(), a), Error);
  EXPECT_THROW(exp(Tensor()), Error);
  EXPECT_THROW(clamp(a, 1.0, 0.0), Error);
}

TEST(ElementwiseOps, DeviceMismatchIsAnErrorNamingBoth) {
  std::vector<float> backing;
  Tensor gpu = fake_cuda({2, 3}, backing);
  Tensor cpu = zeros({2, 3});
  for (auto f : std::vector<std::function<Tensor()>>{[&] { return add(cpu, gpu); }, [&] { return mul(gpu, cpu); },
                                                     [&] { return pow(cpu, gpu); }, [&] { return maximum(cpu, gpu); },
                                                     [&] { return eq(cpu, gpu); }, [&] { return logical_or(cpu, gpu); },
                                                     [&] { return where(gt(cpu, 0.0), cpu, gpu); }}) {
    try {
      f();
      ADD_FAILURE() << "expected a device error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("cpu"), std::string::npos) << msg;
      EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
    }
  }
  // A unary op on a tensor that is not on the host is an error, not a crash.
  EXPECT_THROW(exp(gpu), Error);
}

TEST(ElementwiseOps, SoftplusBackwardOp) {
  // softplus_backward(g, a) = g * sigmoid(beta a), or g where beta a > threshold.
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
    Tensor g = sample({3, 1}, Domain::any, 91).to(dt), a = sample({1, 4}, Domain::any, 92).to(dt);
    expect_values(softplus_backward(g, a), map2(g, a, [](double gv, double x) { return gv * ref_sigmoid(x); }), tol,
                  "softplus_backward");
    Tensor a2 = tensor({-1.0, 0.5, 1.6, 4.0}, {1, 4}, {.dtype = dt});
    expect_values(softplus_backward(g, a2, 2.0, 3.0), map2(g, a2, [](double gv, double x) {
                    return 2 * x > 3 ? gv : gv * ref_sigmoid(2 * x);
                  }), tol, "softplus_backward(beta 2, threshold 3)");
  }
  // It is what softplus's backward computes.
  Tensor x = leaf(sample({3, 4}, Domain::any, 93));
  Tensor u = sample({3, 4}, Domain::any, 94);
  Tensor gx = grad({softplus(x, 1.5)}, {x}, {u})[0];
  EXPECT_EQ(gx.to_vector<double>(), softplus_backward(u, x.detach(), 1.5).to_vector<double>());
  // Differentiable in both arguments, to second order (DDE differentiates it again).
  Tensor lg = leaf(sample({3, 1}, Domain::any, 95)), la = leaf(sample({1, 4}, Domain::any, 96));
  expect_grads_ok([](const TensorList& in) { return softplus_backward(in[0], in[1]); }, {lg, la},
                  "softplus_backward");
  expect_grads_ok([](const TensorList& in) { return softplus_backward(in[0], in[1], 0.7); }, {lg, la},
                  "softplus_backward(beta 0.7)");
  Tensor lt = leaf(sample({4, 3}, Domain::any, 97));
  expect_grads_ok([](const TensorList& in) { return softplus_backward(in[0], in[1].t(), 2.0, 1.0); }, {lg, lt},
                  "softplus_backward transposed, small threshold");
  // Third order through softplus: the gradient of a gradient of a gradient.
  Tensor z = leaf(tensor({0.3, -1.1}, {}, {.dtype = DType::f64}));
  Tensor d1 = grad({sum(softplus(z))}, {z}, {}, {.create_graph = true})[0];
  Tensor d2 = grad({sum(d1)}, {z}, {}, {.create_graph = true})[0];
  Tensor d3 = grad({sum(d2)}, {z})[0];
  auto zv = z.to_vector<double>(), d3v = d3.to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    const double sg = ref_sigmoid(zv[i]);
    EXPECT_NEAR(d3v[i], sg * (1 - sg) * (1 - 2 * sg), 1e-12);
  }
  EXPECT_THROW(softplus_backward(zeros({2, 3}), zeros({4})), Error);
}

// softplus_backward's backward wanting both gradients: with gg, g, a contiguous and of one
// shape, one pass (softplus_double_backward) writes both; the values are the two ops', and each
// output differentiates further as the op it equals. Other layouts take the two ops.
TEST(ElementwiseOps, SoftplusDoubleBackwardFusesBothGradients) {
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f32 ? 1e-6 : 1e-14;
    Tensor g = leaf(sample({5, 7}, Domain::any, 121).to(dt)), a = leaf(sample({5, 7}, Domain::any, 122).to(dt));
    Tensor u = sample({5, 7}, Domain::any, 123).to(dt);
    Tensor y = softplus_backward(g, a, 1.5, 2.0);
    TensorList d;
    {
      TraceScope trace;
      d = grad({y}, {g, a}, {u}, {.create_graph = true});
      const auto ev = trace.events();
      EXPECT_EQ(test::traced(ev, "softplus_double_backward"), 1);
      EXPECT_EQ(test::traced(ev, "softplus_curvature"), 0);
    }
    expect_values(d[0], softplus_backward(u, a.detach(), 1.5, 2.0).to_vector<double>(), tol, "dg");
    expect_values(d[1], softplus_curvature(u, g.detach(), a.detach(), 1.5, 2.0).to_vector<double>(), tol, "da");
    EXPECT_TRUE(d[0].requires_grad() && d[1].requires_grad());
    // a transposed a: not one contiguous layout, the two ops
    Tensor at = leaf(sample({7, 5}, Domain::any, 124).to(dt));
    TraceScope trace;
    TensorList dt2 = grad({softplus_backward(g, at.t(), 1.5, 2.0)}, {g, at}, {u});
    EXPECT_EQ(test::traced(trace.events(), "softplus_double_backward"), 0);
    EXPECT_EQ(test::traced(trace.events(), "softplus_curvature"), 1);
    expect_values(dt2[1].t(), softplus_curvature(u, g.detach(), at.detach().t(), 1.5, 2.0).to_vector<double>(), tol,
                  "da, transposed");
  }
  // The fused outputs to second order: their gradients in g, a and the incoming gradient u
  // (softplus's third and fourth derivatives), checked numerically in f64. gradcheck's central
  // differences run under NoGrad, where grad() has no graph: there the same values come from
  // the two ops (equal to the fused pass, above).
  Tensor lg = leaf(sample({3, 4}, Domain::any, 125)), la = leaf(sample({3, 4}, Domain::any, 126));
  Tensor lu = leaf(sample({3, 4}, Domain::any, 127));
  expect_grads_ok(
      [](const TensorList& in) {
        if (!grad_enabled())
          return add(mul(softplus_backward(in[2], in[1], 1.3, 20.0), 0.7),
                     softplus_curvature(in[2], in[0], in[1], 1.3, 20.0));
        TensorList d = grad({softplus_backward(in[0], in[1], 1.3, 20.0)}, {in[0], in[1]}, {in[2]},
                            {.create_graph = true});
        return add(mul(d[0], 0.7), d[1]);
      },
      {lg, la, lu}, "softplus_backward's fused backward");
}

// softplus's backward added into a gradient already waiting for its input (take_pending_grad):
// one in-place pass (softplus_backward_accumulate) where softplus_backward and an add ran, also
// where its incoming gradient is a view.
TEST(ElementwiseOps, SoftplusBackwardAddsIntoAWaitingGradient) {
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f32 ? 1e-6 : 1e-14;
    Tensor h = leaf(sample({6, 5}, Domain::any, 131).to(dt));
    Tensor u = sample({6, 5}, Domain::any, 132).to(dt), v = sample({6, 5}, Domain::any, 133).to(dt);
    // h * v is recorded after softplus(h) (statements, not arguments, fix the order), so its
    // gradient reaches h first and waits there
    Tensor through_softplus = sum(mul(softplus(h, 1.5, 2.0), u));
    Tensor direct = sum(mul(h, v));
    Tensor loss = add(through_softplus, direct);
    {
      TraceScope trace;
      loss.backward();
      EXPECT_EQ(test::traced(trace.events(), "softplus_backward_accumulate"), 1);
    }
    const auto hv = h.detach().to_vector<double>(), uv = u.to_vector<double>(), vv = v.to_vector<double>();
    std::vector<double> want(hv.size());
    for (size_t i = 0; i < hv.size(); ++i)
      want[i] = vv[i] + (1.5 * hv[i] > 2.0 ? uv[i] : uv[i] * ref_sigmoid(1.5 * hv[i]));
    expect_values(h.grad(), want, tol, "h.grad");

    // softplus's output as cat's first piece (a DenseNet layer): its gradient arrives as a
    // strided slice of cat's, and is still added in place
    Tensor h2 = leaf(sample({6, 5}, Domain::any, 134).to(dt));
    Tensor u2 = sample({6, 8}, Domain::any, 135).to(dt), rest = sample({6, 3}, Domain::any, 136).to(dt);
    Tensor through_cat = sum(mul(cat({softplus(h2, 1.5, 2.0), rest}, 1), u2));
    Tensor direct2 = sum(mul(h2, v));
    Tensor loss2 = add(through_cat, direct2);
    TraceScope trace2;
    loss2.backward();
    EXPECT_EQ(test::traced(trace2.events(), "softplus_backward_accumulate"), 1);
    EXPECT_EQ(test::traced(trace2.events(), "add"), 0) << trace2.table();
    const auto h2v = h2.detach().to_vector<double>(), u2v = u2.to_vector<double>();
    for (size_t i = 0; i < h2v.size(); ++i) {
      const double ui = u2v[(i / 5) * 8 + i % 5];
      want[i] = vv[i] + (1.5 * h2v[i] > 2.0 ? ui : ui * ref_sigmoid(1.5 * h2v[i]));
    }
    expect_values(h2.grad(), want, tol, "h2.grad");
  }
}

TEST(ElementwiseOps, SoftplusCurvatureOp) {
  // softplus_curvature(x, y, a) = x y beta s (1 - s), s = sigmoid(beta a), or 0 where
  // beta a > threshold; x [3, 1], y [3, 4] and a [1, 4] broadcast together.
  auto times = [](std::vector<double> v, const Tensor& y) {
    const auto yv = y.to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) v[i] *= yv[i];
    return v;
  };
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
    Tensor x = sample({3, 1}, Domain::any, 101).to(dt), a = sample({1, 4}, Domain::any, 102).to(dt);
    Tensor y = sample({3, 4}, Domain::any, 109).to(dt);
    expect_values(softplus_curvature(x, y, a), times(map2(x, a, [](double xv, double av) {
                    const double s = ref_sigmoid(av);
                    return xv * s * (1 - s);
                  }), y), tol, "softplus_curvature");
    Tensor a2 = tensor({-1.0, 0.5, 1.6, 4.0}, {1, 4}, {.dtype = dt});
    expect_values(softplus_curvature(x, y, a2, 2.0, 3.0), times(map2(x, a2, [](double xv, double av) {
                    const double s = ref_sigmoid(2 * av);
                    return 2 * av > 3 ? 0.0 : xv * 2 * s * (1 - s);
                  }), y), tol, "softplus_curvature(beta 2, threshold 3)");
  }
  // It is the second derivative of softplus: d/da softplus_backward(g, a) = u g softplus''(a).
  Tensor a = leaf(sample({3, 4}, Domain::any, 103));
  Tensor g = sample({3, 4}, Domain::any, 104), u = sample({3, 4}, Domain::any, 105);
  Tensor ga = grad({softplus_backward(g, a, 1.5)}, {a}, {u})[0];
  const auto want = softplus_curvature(u, g, a.detach(), 1.5).to_vector<double>();
  const auto got = ga.to_vector<double>();
  for (size_t i = 0; i < want.size(); ++i) {
    const double s = ref_sigmoid(1.5 * a.to_vector<double>()[i]);
    const double direct = u.to_vector<double>()[i] * g.to_vector<double>()[i] * 1.5 * s * (1 - s);
    EXPECT_NEAR(got[i], want[i], 1e-13);
    EXPECT_NEAR(got[i], direct, 1e-12);
  }
  // Differentiable in all three arguments, to second order (a third derivative of softplus).
  Tensor lx = leaf(sample({3, 1}, Domain::any, 106)), la = leaf(sample({1, 4}, Domain::any, 107));
  Tensor ly = leaf(sample({3, 4}, Domain::any, 110));
  expect_grads_ok([](const TensorList& in) { return softplus_curvature(in[0], in[1], in[2]); }, {lx, ly, la},
                  "softplus_curvature");
  expect_grads_ok([](const TensorList& in) { return softplus_curvature(in[0], in[1], in[2], 0.7); }, {lx, ly, la},
                  "softplus_curvature(beta 0.7)");
  Tensor lt = leaf(sample({4, 3}, Domain::any, 108));
  expect_grads_ok([](const TensorList& in) { return softplus_curvature(in[0], in[1], in[2].t(), 2.0, 1.0); },
                  {lx, ly, lt}, "softplus_curvature transposed, small threshold");
  // the same tensor as two factors: x^2 softplus''(a)
  expect_grads_ok([](const TensorList& in) { return softplus_curvature(in[0], in[0], in[1]); }, {ly, la},
                  "softplus_curvature(x, x, a)");
  EXPECT_THROW(softplus_curvature(zeros({2, 3}), ones({2, 3}), zeros({4})), Error);
  EXPECT_THROW(softplus_curvature(zeros({2}), ones({2}), zeros({2}), 0.0), Error);
  EXPECT_THROW(softplus_curvature(zeros({2}, {.dtype = DType::i64}), ones({2}, {.dtype = DType::i64}),
                                  zeros({2}, {.dtype = DType::i64})),
               Error);
}

// masked_scale, dropout's step: kept elements scaled, the others zero (an infinite one too, where
// a product by a zero mask would give NaN); a mask that broadcasts; gradients to second order.
TEST(ElementwiseOps, MaskedScale) {
  Tensor x = tensor({1.5, -2.0, INFINITY, 4.0, -0.5, 3.0}, {2, 3}, {.dtype = DType::f64});
  Tensor keep = gt(tensor({1.0, -1.0, -1.0, 1.0, 1.0, -1.0}, {2, 3}), 0.0);
  EXPECT_EQ(masked_scale(x, keep, 2.0).to_vector<double>(), (std::vector<double>{3.0, 0, 0, 8.0, -1.0, 0}));
  Tensor row = gt(tensor({1.0, -1.0, 1.0}, {3}), 0.0);  // one mask for every row
  EXPECT_EQ(masked_scale(x, row, 0.5).to_vector<double>(), (std::vector<double>{0.75, 0, INFINITY, 2.0, 0, 1.5}));
  Tensor a = test::leaf64({5, 4}, 11).t();  // non-contiguous
  Tensor mask = gt(test::rnd({4, 5}, 12), 0.0);
  expect_grads_ok([&](const TensorList& in) { return masked_scale(in[0], mask, 1.25); }, {a}, "masked_scale");
  EXPECT_THROW(masked_scale(x, tensor({1.0, 0.0, 1.0}, {3}), 2.0), Error);  // not bool
  EXPECT_THROW(masked_scale(x, gt(test::rnd({2, 2}, 13), 0.0), 2.0), Error);  // does not broadcast
  EXPECT_THROW(masked_scale(x.narrow(1, 0, 1), keep, 2.0), Error);         // wider than x
}

// silu_backward(g, a) = g s (1 + a (1 - s)), s = sigmoid(a): what silu's backward computes, in
// one op differentiable in both arguments (an energy network's input gradient is differentiated
// again), and silu's third derivative through it.
TEST(ElementwiseOps, SiluBackwardOp) {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-6 : 1e-13;
    Tensor g = sample({3, 1}, Domain::any, 101).to(dt), a = sample({1, 4}, Domain::any, 102).to(dt);
    expect_values(silu_backward(g, a), map2(g, a, [](double gv, double x) {
                    const double s = ref_sigmoid(x);
                    return gv * s * (1 + x * (1 - s));
                  }), tol, "silu_backward");
  }
  Tensor x = leaf(sample({3, 4}, Domain::any, 103));
  Tensor u = sample({3, 4}, Domain::any, 104);
  EXPECT_EQ(grad({silu(x)}, {x}, {u})[0].to_vector<double>(), silu_backward(u, x.detach()).to_vector<double>());
  Tensor lg = leaf(sample({3, 1}, Domain::any, 105)), la = leaf(sample({1, 4}, Domain::any, 106));
  expect_grads_ok([](const TensorList& in) { return silu_backward(in[0], in[1]); }, {lg, la}, "silu_backward");
  Tensor lt = leaf(sample({4, 3}, Domain::any, 107));
  expect_grads_ok([](const TensorList& in) { return silu_backward(in[0], in[1].t()); }, {lg, lt},
                  "silu_backward, transposed");
  // silu''' = d/da [s (1 - s) (2 + a (1 - 2 s))]
  Tensor z = leaf(tensor({0.3, -1.1}, {}, {.dtype = DType::f64}));
  Tensor d1 = grad({sum(silu(z))}, {z}, {}, {.create_graph = true})[0];
  Tensor d2 = grad({sum(d1)}, {z}, {}, {.create_graph = true})[0];
  Tensor d3 = grad({sum(d2)}, {z})[0];
  auto zv = z.to_vector<double>(), d3v = d3.to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    const double s = ref_sigmoid(zv[i]), ds = s * (1 - s);
    // d/da [ds (2 + a (1 - 2 s))] = ds (1 - 2 s)(2 + a (1 - 2 s)) + ds ((1 - 2 s) - 2 a ds)
    const double want = ds * (1 - 2 * s) * (2 + zv[i] * (1 - 2 * s)) + ds * ((1 - 2 * s) - 2 * zv[i] * ds);
    EXPECT_NEAR(d3v[i], want, 1e-12);
  }
  EXPECT_THROW(silu_backward(zeros({2, 3}), zeros({4})), Error);
}
