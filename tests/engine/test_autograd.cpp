// The autograd engine: graph shapes (diamonds, reuse), accumulation, higher orders, the DDE
// case, functional helpers and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ember/ember.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {
}  // namespace

TEST(Autograd, DiamondAndReuse) {
  Tensor x = tensor({0.3, -1.2, 2.0}, {}, {.dtype = DType::f64});
  x.requires_grad_(true);
  // y = sin(x) * x + exp(x) * x : x used four times, two paths meet at the add
  Tensor y = sum(add(mul(sin(x), x), mul(exp(x), x)));
  y.backward();
  auto g = x.grad().to_vector<double>();
  auto xv = x.to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    double v = xv[i];
    double want = std::cos(v) * v + std::sin(v) + std::exp(v) * v + std::exp(v);
    EXPECT_NEAR(g[i], want, 1e-12);
  }
}

// A backward closure learns which input gradients the walk uses: grad() differentiating only x
// runs linear's backward without the weight and bias gradients (DDE's score, twice a step).
TEST(Autograd, BackwardsSkipTheInputGradientsTheWalkDoesNotUse) {
  EXPECT_TRUE(autograd::needs_input_grad(0)) << "outside a walk every gradient is wanted";
  Tensor a = leaf64({3}, 1), b = leaf64({3}, 2);
  std::vector<bool> seen;
  Tensor y = mul(a, b).detach();
  autograd::record("probe", {a, b}, y, [&seen](const TensorList& g, const TensorList&) {
    seen = {autograd::needs_input_grad(0), autograd::needs_input_grad(1)};
    return TensorList{g[0], g[0]};
  });
  grad({sum(y)}, {a}, {}, {.retain_graph = true});
  EXPECT_EQ(seen, (std::vector<bool>{true, false}));
  grad({sum(y)}, {b}, {}, {.retain_graph = true});
  EXPECT_EQ(seen, (std::vector<bool>{false, true}));
  sum(y).backward();
  EXPECT_EQ(seen, (std::vector<bool>{true, true}));

  Tensor x = leaf64({4, 3}, 3), w = leaf64({5, 3}, 4), bias = leaf64({5}, 5);
  Tensor out = sum(softplus(linear(x, w, bias)));
  size_t matmuls = 0, sums = 0;
  Tensor gx;
  {
    TraceScope trace;
    gx = grad({out}, {x}, {}, {.create_graph = true})[0];
    for (const auto& e : trace.events()) {
      matmuls += e.op == "matmul";
      sums += e.op == "sum";
    }
  }
  EXPECT_EQ(matmuls, 1u) << "dY W only: no weight gradient";
  EXPECT_EQ(sums, 0u) << "no bias gradient";
  // and the score is still differentiable in the weights (the double backward DDE trains by)
  GradcheckResult r = gradcheck([](const TensorList& t) {
    return grad({sum(softplus(linear(t[0], t[1], t[2])))}, {t[0]}, {}, {.create_graph = true})[0];
  }, {x, w, bias});
  EXPECT_TRUE(r) << r.message;
}

// A node holds what its backward reads and no more, so the forward's intermediates are freed as
// soon as nothing else needs them: add's, sub's, where's and cat's operands (their backwards read
// only each input's shape and dtype, which the node keeps: autograd::input_shape), a factor whose
// partner is a constant (dropout's input, under its mask) and a dividend over a constant. In a
// U-Net's graph each of these held a whole activation until the backward.
TEST(Autograd, BackwardsKeepOnlyWhatTheyRead) {
  Tensor x = leaf64({4, 3}, 5), w = leaf64({3}, 6);  // w broadcasts along x's rows
  Tensor c = add(rnd({4, 3}, 7, DType::f64), 3.0);     // a constant, away from zero
  Tensor cond = gt(rnd({4, 3}, 8), 0.0);
  using Op = Tensor (*)(const Tensor& u, const Tensor& v, const Tensor& c, const Tensor& cond);
  const std::pair<const char*, Op> cases[] = {
      {"add (broadcast)", [](auto& u, auto& v, auto&, auto&) { return add(u, v); }},
      {"sub (broadcast)", [](auto& u, auto& v, auto&, auto&) { return sub(v, u); }},
      {"mul by a constant", [](auto& u, auto& v, auto& c, auto&) { return add(mul(u, c), mul(c, v)); }},
      {"div by a constant", [](auto& u, auto& v, auto& c, auto&) { return add(div(u, c), div(v, c)); }},
      {"where", [](auto& u, auto& v, auto&, auto& cond) { return where(cond, u, v); }},
      {"cat", [](auto& u, auto& v, auto&, auto&) { return cat({u, v.unsqueeze(0)}, 0); }},
      {"dropout", [](auto& u, auto& v, auto&, auto&) {
         Generator g(3);  // the same mask on every call
         return add(dropout(u, 0.5, true, &g), v);
       }},
  };
  for (const auto& [name, op] : cases) {
    SCOPED_TRACE(name);
    // u and v are products by a scalar, whose nodes keep nothing: only the op under test can hold them.
    Tensor u = mul(x, 2.0), v = mul(w, 3.0);
    const std::weak_ptr<Storage> u_buffer = u.storage(), v_buffer = v.storage();
    Tensor y = op(u, v, c, cond);
    u = Tensor();
    v = Tensor();
    EXPECT_TRUE(u_buffer.expired()) << "the first operand outlived the forward";
    EXPECT_TRUE(v_buffer.expired()) << "the second operand outlived the forward";
    EXPECT_EQ(grad({sum(y)}, {x, w})[1].sizes(), w.sizes());  // summed back over the broadcast rows
    // and the gradients are still right, at first and second order
    expect_grads_ok([&](const TensorList& in) { return op(mul(in[0], 2.0), mul(in[1], 3.0), c, cond); }, {x, w});
  }
}

// A storage counts the saved tensors that hold it while their nodes live, which is what tells
// narrow_for_backward that a copy would add memory.
TEST(Autograd, SavedTensorsCountTheirStoragesHolders) {
  Tensor x = leaf64({4, 3}, 1);
  Tensor u = mul(x, 2.0);  // a product by a scalar keeps nothing
  EXPECT_EQ(u.storage()->backward_holders(), 0u);
  Tensor y = sin(u);  // keeps u for cos(u)
  EXPECT_GT(u.storage()->backward_holders(), 0u);
  Tensor e = exp(u);  // keeps its output
  EXPECT_GT(e.storage()->backward_holders(), 0u);
  backward({sum(add(y, e))}, {}, /*retain_graph=*/true);
  EXPECT_GT(u.storage()->backward_holders(), 0u) << "a retained graph keeps what it saved";
  y = Tensor();
  EXPECT_EQ(u.storage()->backward_holders(), 0u) << "sin's node died with its output";
  sum(e).backward();
  EXPECT_EQ(e.storage()->backward_holders(), 0u) << "a backward without retain_graph frees what it saved";
}

namespace {
// y = x * w, recorded by hand with x kept for w's gradient through narrow_for_backward, as a conv
// under `medium` keeps its image (rounds: whether the copy may be BF16).
Tensor times_w_keeping_x(const Tensor& x, const Tensor& w, bool rounds) {
  Tensor y;
  {
    NoGrad no_grad;
    y = mul(x.detach(), w.detach());
  }
  const Tensor kept = autograd::narrow_for_backward(x, rounds);
  autograd::record("times_w", {x, w}, y,
                   [kept, w](const TensorList& g, const TensorList&) {
                     return TensorList{mul(g[0], w), mul(g[0], autograd::widen_saved(kept, 0))};
                   },
                   {kept, w});
  return y;
}

bool same_values(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.to(DType::f64).to_vector<double>() == b.to(DType::f64).to_vector<double>();
}
}  // namespace

TEST(Autograd, NarrowedSavedInputStandsInForTheInput) {
  Generator gen(4);
  Tensor a = randn({5, 7}, {}, &gen).requires_grad_(true);
  Tensor w = randn({5, 7}, {}, &gen).requires_grad_(true);
  Tensor c = randn({5, 7}, {}, &gen);
  Tensor x = mul(a, 2.0);  // an activation; doubling is exact
  const std::weak_ptr<Storage> x_buffer = x.storage();
  const Tensor x_rounded = x.detach().to(DType::bf16).to(DType::f32);
  ASSERT_FALSE(same_values(x_rounded, x.detach())) << "the test needs values that BF16 rounds";
  Tensor y = times_w_keeping_x(x, w, /*rounds=*/true);
  x = Tensor();
  EXPECT_TRUE(x_buffer.expired()) << "the node kept the f32 activation, not its BF16 copy";
  // First order: w's gradient reads the copy (x rounded to BF16); x's does not read it.
  TensorList g = grad({y}, {a, w}, {c}, {.create_graph = true});
  EXPECT_TRUE(same_values(g[1], mul(x_rounded, c)));
  EXPECT_TRUE(same_values(g[0], mul(mul(c, w), 2.0)));
  // Second order through the copy: d<dL/dw, c>/da = 2 c^2 reaches a only through the widened
  // tensor's edge to x's producer.
  Tensor h = grad({sum(mul(g[1], c))}, {a})[0];
  EXPECT_TRUE(same_values(h, mul(mul(c, c), 2.0)));

  // Where a copy would not free memory, or could change a result, the input itself is kept.
  Tensor u = mul(a, 2.0);
  EXPECT_EQ(autograd::narrow_for_backward(u, false).impl(), u.impl()) << "kernels that read it in f32";
  set_bf16_saved_activations(false);
  EXPECT_EQ(autograd::narrow_for_backward(u, true).impl(), u.impl()) << "copies turned off";
  set_bf16_saved_activations(true);
  EXPECT_EQ(autograd::narrow_for_backward(u, true).dtype(), DType::bf16) << "copies turned back on";
  EXPECT_EQ(autograd::narrow_for_backward(a, true).impl(), a.impl()) << "a leaf";
  Tensor v = sin(u);  // keeps u
  EXPECT_EQ(autograd::narrow_for_backward(u, true).impl(), u.impl()) << "held by another backward";
  Tensor row = mul(a.slice(0, 0, 1), 2.0).expand({5, 7});
  EXPECT_EQ(autograd::narrow_for_backward(row, true).impl(), row.impl()) << "an expanded view";
  Tensor u64 = mul(a.to(DType::f64), 2.0);
  EXPECT_EQ(autograd::narrow_for_backward(u64, true).impl(), u64.impl()) << "f64";
  NoGrad no_grad;
  Tensor fresh = mul(a, 2.0).requires_grad_(true);
  EXPECT_EQ(autograd::narrow_for_backward(fresh, true).impl(), fresh.impl()) << "no graph is recorded";
}

TEST(Autograd, AccumulatesAcrossBackwardCalls) {
  Tensor x = leaf64({4}, 1);
  sum(square(x)).backward();
  sum(mul(x, 3.0)).backward();
  auto g = x.grad().to_vector<double>();
  auto xv = x.to_vector<double>();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(g[i], 2 * xv[i] + 3, 1e-12);
}

// .grad is private: in-place work on it touches no other tensor. A gradient no one else holds
// becomes .grad without a copy; one the caller still holds (a grad_output, a retained graph's)
// is copied.
TEST(Autograd, LeafGradientsArePrivateAndCopiedOnlyWhenShared) {
  Tensor w = leaf64({3, 4}, 1);
  {
    TraceScope trace;
    mul(square(w), 3.0).sum().backward();  // dW = 3 * 2w * g: a fresh dense tensor, no reshapes
    for (const auto& e : trace.events()) EXPECT_NE(e.op, "clone") << "an unshared gradient was copied";
  }
  Tensor gw = w.grad();
  Tensor before = gw.clone();
  // x is its own root: its gradient is the caller's grad_output, which must stay untouched
  Tensor y = leaf64({5}, 3), go = leaf64({5}, 4).detach();
  Tensor go_before = go.clone();
  y.backward(go);
  y.grad().mul_(3.0);
  EXPECT_EQ(go.to_vector<double>(), go_before.to_vector<double>()) << "in-place work on .grad changed the grad_output";
  // a gradient that is a broadcast view (sum's backward) is made dense and private
  Tensor z = leaf64({2, 3}, 5);
  z.sum().backward();
  EXPECT_TRUE(z.grad().is_contiguous());
  z.grad().add_(ones({2, 3}, {.dtype = DType::f64}));
  EXPECT_EQ(z.grad().to_vector<double>(), std::vector<double>(6, 2.0));
  EXPECT_EQ(w.grad().to_vector<double>(), before.to_vector<double>());
}

TEST(Autograd, ThirdDerivativeOfSin) {
  Tensor x = tensor({0.7}, {}, {.dtype = DType::f64});
  x.requires_grad_(true);
  Tensor y = sin(x);
  Tensor d1 = grad({y}, {x}, {}, {.create_graph = true})[0];
  Tensor d2 = grad({d1}, {x}, {}, {.create_graph = true})[0];
  Tensor d3 = grad({d2}, {x})[0];
  EXPECT_NEAR(d1.item(), std::cos(0.7), 1e-12);
  EXPECT_NEAR(d2.item(), -std::sin(0.7), 1e-12);
  EXPECT_NEAR(d3.item(), -std::cos(0.7), 1e-12);
}

TEST(Autograd, HessianOfSoftplusMlpMatchesFiniteDifferences) {
  Tensor w1 = leaf64({5, 3}, 2), b1 = leaf64({5}, 3), w2 = leaf64({1, 5}, 4);
  auto f = [&](const Tensor& x) { return sum(linear(softplus(linear(x, w1, b1)), w2)); };
  Tensor x0 = leaf64({3}, 5);
  Tensor H = hessian(f, x0);
  ASSERT_EQ(H.sizes(), (Shape{3, 3}));
  auto h = H.to_vector<double>();
  // central differences of the analytic gradient
  auto gradient = [&](const Tensor& x) {
    Tensor xs = x.detach().clone();
    xs.requires_grad_(true);
    return grad({f(xs)}, {xs})[0].to_vector<double>();
  };
  const double eps = 1e-5;
  for (int j = 0; j < 3; ++j) {
    Tensor xp = x0.detach().clone(), xm = x0.detach().clone();
    xp.data<double>()[j] += eps;
    xm.data<double>()[j] -= eps;
    auto gp = gradient(xp), gm = gradient(xm);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(h[i * 3 + j], (gp[i] - gm[i]) / (2 * eps), 1e-7);
  }
}

// The DDE loss: L = || d s(x+e)/dx + e / sigma^2 ||^2 with s a scalar MLP. Its gradient with
// respect to the parameters needs the backward of a backward.
TEST(Autograd, DdeLossParameterGradientMatchesCentralDifferences) {
  const double sigma = 0.3;
  Tensor w1 = leaf64({8, 2}, 10), b1 = leaf64({8}, 11), w2 = leaf64({8, 8}, 12), b2 = leaf64({8}, 13),
         w3 = leaf64({1, 8}, 14);
  Generator g(15);
  Tensor x = randn({6, 2}, {.dtype = DType::f64}, &g);
  Tensor e = mul(randn({6, 2}, {.dtype = DType::f64}, &g), sigma);
  TensorList params{w1, b1, w2, b2, w3};
  auto loss_fn = [&](const TensorList& p) {
    Tensor xe = add(x, e).detach();
    xe.requires_grad_(true);
    Tensor s = linear(softplus(linear(softplus(linear(xe, p[0], p[1])), p[2], p[3])), p[4]);
    Tensor ds = grad({sum(s)}, {xe}, {}, {.create_graph = true})[0];
    return sum(square(add(ds, div(e, sigma * sigma))));
  };
  GradcheckResult r = gradcheck(loss_fn, params, {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-5});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Autograd, GradWithAllowUnusedAndErrors) {
  Tensor a = leaf64({3}, 20), b = leaf64({3}, 21);
  Tensor y = sum(square(a));
  EXPECT_THROW(grad({y}, {a, b}, {}, {.retain_graph = true}), Error);
  TensorList g = grad({y}, {a, b}, {}, {.allow_unused = true});
  EXPECT_TRUE(g[0].defined());
  EXPECT_FALSE(g[1].defined());
  EXPECT_FALSE(a.grad().defined());  // grad() never touches .grad
}

TEST(Autograd, BackwardTwiceWithoutRetainGraphIsAnError) {
  Tensor a = leaf64({3}, 30);
  Tensor y = sum(exp(a));
  y.backward();
  try {
    y.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
  Tensor z = sum(exp(a));
  z.backward({}, /*retain_graph=*/true);
  EXPECT_NO_THROW(z.backward());
}

TEST(Autograd, InPlaceModificationOfSavedTensorIsAnErrorNamingTheOp) {
  Tensor a = leaf64({3}, 40);
  Tensor b = exp(a).detach();  // a plain tensor, saved by mul
  Tensor y = sum(mul(a, b));
  b.add_(ones_like(b));
  try {
    y.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mul"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("in place"), std::string::npos) << e.what();
  }
}

TEST(Autograd, InPlaceOnTensorRequiringGradIsRefused) {
  Tensor a = leaf64({3}, 41);
  EXPECT_THROW(a.add_(ones_like(a)), Error);
  NoGrad ng;
  EXPECT_NO_THROW(a.add_(ones_like(a)));
}

TEST(Autograd, NoGradAndDetach) {
  Tensor a = leaf64({3}, 50);
  {
    NoGrad ng;
    Tensor y = exp(a);
    EXPECT_FALSE(y.requires_grad());
    {
      EnableGrad eg;
      EXPECT_TRUE(exp(a).requires_grad());
    }
  }
  EXPECT_FALSE(exp(a).detach().requires_grad());
  EXPECT_TRUE(exp(a).requires_grad());
}

TEST(Autograd, ShapeMismatchAndDtypeMismatchErrorsNameOpAndShapes) {
  Tensor a = randn({2, 3}), b = randn({4, 3});
  try {
    add(a, b);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos);
    EXPECT_NE(m.find("[2, 3]"), std::string::npos);
    EXPECT_NE(m.find("[4, 3]"), std::string::npos);
  }
  try {
    matmul(randn({2, 3}), randn({3, 2}, {.dtype = DType::f64}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("matmul"), std::string::npos);
  }
  EXPECT_THROW(sum(a, {5}), Error);
  EXPECT_THROW(a.permute({0, 0}), Error);
  EXPECT_THROW(randn({2}).item(), Error);
}

TEST(Autograd, FunctionalHelpers) {
  // f(x) = x^3 elementwise: J = diag(3x^2), H of sum = diag(6x)
  Tensor x = tensor({0.5, -1.0, 2.0}, {}, {.dtype = DType::f64});
  Tensor v = tensor({1.0, 2.0, -1.0}, {}, {.dtype = DType::f64});
  Function f = [](const TensorList& xs) { return pow(xs[0], 3.0); };
  auto [y, vj] = vjp(f, {x}, v);
  auto [y2, jv] = jvp(f, {x}, {v});
  auto [y3, hv] = hvp([](const TensorList& xs) { return sum(pow(xs[0], 3.0)); }, {x}, {v});
  auto xv = x.to_vector<double>(), vv = v.to_vector<double>();
  auto a = vj[0].to_vector<double>(), b = jv.to_vector<double>(), c = hv[0].to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(a[i], 3 * xv[i] * xv[i] * vv[i], 1e-12);
    EXPECT_NEAR(b[i], 3 * xv[i] * xv[i] * vv[i], 1e-12);
    EXPECT_NEAR(c[i], 6 * xv[i] * vv[i], 1e-12);
  }
  Tensor J = jacobian([](const Tensor& t) { return pow(t, 3.0); }, x);
  EXPECT_NEAR(J.to_vector<double>()[4], 3.0, 1e-12);
  EXPECT_NEAR(J.to_vector<double>()[1], 0.0, 1e-12);
  // Hutchinson with Rademacher probes is exact for a diagonal Jacobian.
  Tensor xl = x.detach().clone();
  xl.requires_grad_(true);
  Tensor tr = hutchinson_trace(pow(xl, 3.0), xl, 3);
  EXPECT_NEAR(tr.item(), 3 * (0.25 + 1 + 4), 1e-10);
}

TEST(Autograd, GraphExportAndTrace) {
  Tensor a = leaf64({2, 2}, 60);
  Tensor y = sum(exp(matmul(a, a)));
  std::string dot = graph_to_dot({y});
  EXPECT_NE(dot.find("digraph"), std::string::npos);
  EXPECT_NE(dot.find("matmul"), std::string::npos);
  EXPECT_NE(dot.find("leaf"), std::string::npos);
  TraceScope trace;
  Tensor z = exp(matmul(a, a));
  auto ev = trace.events();
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev[0].op, "matmul");
  EXPECT_EQ(ev[0].output_shape, (Shape{2, 2}));
  EXPECT_NE(trace.table().find("exp"), std::string::npos);
}

// A walk without create_graph hands a gradient already waiting for an input to the closure that
// brings the next one (autograd::take_pending_grad): matmul and linear add theirs into it with
// the GEMM (beta = 1) instead of a separate add. Only a gradient no one else holds is handed over.
namespace {
Tensor naive_mm(const Tensor& a, const Tensor& b) {  // in f64, by loops
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> out(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) out[i * N + j] += av[i * K + k] * bv[k * N + j];
  return from_vector(out, {M, N});
}
double max_abs_diff(const Tensor& a, const Tensor& b) { 
  return max(sub(a.to(DType::f64), b.to(DType::f64)).abs()).item<double>();
}
}  // namespace

TEST(Autograd, GemmAddsIntoAGradientAlreadyWaiting) {
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    Tensor x = rnd({9, 5}, 201, dt), y = rnd({7, 5}, 202, dt);
    Tensor u1 = rnd({9, 6}, 203, dt), u2 = rnd({7, 6}, 204, dt);
    Tensor u3 = rnd({4, 6}, 206, dt), z = rnd({4, 5}, 207, dt);
    Tensor bias = rnd({6}, 208, dt).requires_grad_();
    Tensor w = rnd({5, 6}, 205, dt).requires_grad_();
    // w meets three gradients: two matmuls and a linear layer (which stores its weight as [out, in])
    Tensor loss = add(add(sum(mul(matmul(x, w), u1)), sum(mul(matmul(y, w), u2))),
                      sum(mul(linear(z, w.t(), bias), u3)));
    {
      TraceScope trace;
      loss.backward();
      EXPECT_GE(traced(trace.events(), "matmul_accumulate"), 1);
    }
    Tensor want = add(add(naive_mm(x.t().to(DType::f64), u1.to(DType::f64)),
                          naive_mm(y.t().to(DType::f64), u2.to(DType::f64))),
                      naive_mm(z.t().to(DType::f64), u3.to(DType::f64)));
    EXPECT_LT(max_abs_diff(w.grad().to(DType::f64), want), tol * 10);
    EXPECT_LT(max_abs_diff(bias.grad().to(DType::f64), u3.to(DType::f64).sum({0})), tol * 10);
  }
}

TEST(Autograd, WaitingGradientsOthersHoldAreNotTouched) {
  Tensor x = rnd({4, 3}, 211, DType::f64), w = leaf64({3, 3}, 212);
  Tensor u = rnd({4, 3}, 213, DType::f64), G = rnd({3, 3}, 214, DType::f64);
  const auto g_before = G.to_vector<double>();
  // add(w, 0) passes the caller's G to w as it is: the caller still holds it, so the matmul must
  // not add into it
  TensorList r = grad({matmul(x, w), add(w, 0.0)}, {w}, {u, G});
  EXPECT_EQ(G.to_vector<double>(), g_before);
  EXPECT_LT(max_abs_diff(r[0], add(naive_mm(x.t(), u), G)), 1e-12);
  // the same weight twice in one product: both of its gradients reach one slot
  Tensor v = leaf64({3, 3}, 215), uv = rnd({3, 3}, 216, DType::f64);
  sum(mul(matmul(v, v), uv)).backward();
  EXPECT_LT(max_abs_diff(v.grad(), add(naive_mm(uv, v.t().detach()), naive_mm(v.t().detach(), uv))), 1e-12);
  // under create_graph nothing is handed over, and the result stays differentiable
  expect_grads_ok(
      [&](const TensorList& in) { return add(sum(mul(matmul(x, in[0]), u)), sum(mul(matmul(in[0], in[0]), uv))); },
      {w});
}

// A DenseNet layer reads x and passes it on inside cat([h, x]): x's gradient is the slice of the
// features' gradient that cat's backward leaves for it plus the layer's own dY W. Without
// create_graph the slice is handed to the layer (autograd::take_pending_grad_view) and the GEMM
// adds into it in place, row stride and all: no add, no copy, at every depth.
TEST(Autograd, DenseNetInputGradientsAccumulateInTheirSliceOfTheFeatures) {
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    Tensor x = rnd({6, 5}, 301, dt).requires_grad_();
    Tensor w1 = rnd({4, 5}, 302, dt).requires_grad_(), b1 = rnd({4}, 303, dt).requires_grad_();
    Tensor w2 = rnd({3, 9}, 304, dt).requires_grad_(), b2 = rnd({3}, 305, dt).requires_grad_();
    Tensor w3 = rnd({2, 12}, 306, dt).requires_grad_(), u = rnd({6, 2}, 307, dt);
    auto loss = [&] {
      Tensor x1 = cat({softplus(linear(x, w1, b1)), x}, 1);    // [6, 9]
      Tensor x2 = cat({softplus(linear(x1, w2, b2)), x1}, 1);  // [6, 12]
      return sum(mul(linear(x2, w3), u));
    };
    const TensorList params{x, w1, b1, w2, b2, w3};
    // the reference: under create_graph nothing is handed over and every gradient is added
    TensorList want = grad({loss()}, params, {}, {.create_graph = true});
    TraceScope trace;
    loss().backward();
    const auto events = trace.events();
    EXPECT_EQ(traced(events, "add"), 0) << "a gradient was added out of place";
    EXPECT_GE(traced(events, "matmul_accumulate"), 2) << "x1's and x's gradients take the GEMM in place";
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LT(max_abs_diff(params[i].grad(), want[i].detach()), tol * 10) << "parameter " << i;
  }
}

// Slices of one tensor (the parts of a split, overlapping windows) bring their gradients to one
// slot: without create_graph each later one adds its part in place where the first left a
// zero-filled whole, instead of another whole and an add.
TEST(Autograd, SlicesOfOneTensorAddTheirPartsInPlace) {
  Tensor a = leaf64({5, 7}, 311);
  Tensor loss = add(add(sum(mul(a.slice(1, 0, 3), 2.0)), sum(mul(a.slice(1, 3, 7), 3.0))),
                    sum(mul(a.slice(0, 1, 4), 5.0)));
  TraceScope trace;
  loss.backward();
  EXPECT_EQ(traced(trace.events(), "add"), 0);
  EXPECT_EQ(traced(trace.events(), "add_accumulate"), 2);
  auto g = a.grad().to_vector<double>();
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 7; ++j)
      EXPECT_EQ(g[i * 7 + j], (j < 3 ? 2.0 : 3.0) + (i >= 1 && i < 4 ? 5.0 : 0.0)) << i << ", " << j;
}

// A parameter's .grad held by the parameter alone takes a later backward's gradient in place (a
// GAN's discriminator collects one in its generator's step); a .grad the caller holds is left
// as it was, and the parameter gets a new one.
TEST(Autograd, LeafGradAccumulatesInPlaceUnlessSomeoneHoldsIt) {
  Tensor p = leaf64({4, 3}, 321);
  sum(mul(p, 2.0)).backward();
  const double* first = p.grad().data<double>();
  sum(mul(p, 3.0)).backward();
  EXPECT_EQ(p.grad().data<double>(), first);
  EXPECT_EQ(p.grad().to_vector<double>(), std::vector<double>(12, 5.0));
  Tensor held = p.grad();
  sum(mul(p, 1.0)).backward();
  EXPECT_EQ(held.to_vector<double>(), std::vector<double>(12, 5.0));
  EXPECT_EQ(p.grad().to_vector<double>(), std::vector<double>(12, 6.0));
}

// A .grad the parameter alone holds is lent by the walk to the node that brings its next
// gradient: a linear layer's GEMM adds dY^T X into the weight's .grad (beta = 1) and its column
// sum adds into the bias's .grad, instead of a gradient and an add after (a GAN's discriminator in
// its generator's step). Several producers add into it in turn; the buffer stays the same.
TEST(Autograd, LeafGradIsLentToTheOpsThatBringItsNextGradient) {
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    Tensor w = rnd({6, 5}, 341, dt).requires_grad_(), b = rnd({6}, 342, dt).requires_grad_();
    Tensor x1 = rnd({9, 5}, 343, dt), u1 = rnd({9, 6}, 344, dt);
    Tensor x2 = rnd({7, 5}, 345, dt), u2 = rnd({7, 6}, 346, dt), x3 = rnd({4, 5}, 347, dt), u3 = rnd({4, 6}, 348, dt);
    sum(mul(linear(x1, w, b), u1)).backward();
    const void* w_buffer = w.grad().raw_data();
    const void* b_buffer = b.grad().raw_data();
    {
      TraceScope trace;
      // w and b meet two layers: the first to run adds into the lent .grad, the second into that
      add(sum(mul(linear(x2, w, b), u2)), sum(mul(linear(x3, w, b), u3))).backward();
      const auto events = trace.events();
      EXPECT_EQ(traced(events, "add_accumulate"), 0) << "a gradient was added after its op";
      EXPECT_EQ(traced(events, "add"), 1) << "a gradient was added out of place (the one add is the loss's)";
      EXPECT_EQ(traced(events, "matmul_accumulate"), 2);
      EXPECT_EQ(traced(events, "sum_accumulate"), 2);
    }
    EXPECT_EQ(w.grad().raw_data(), w_buffer);
    EXPECT_EQ(b.grad().raw_data(), b_buffer);
    auto f64 = [](const Tensor& t) { return t.to(DType::f64); };
    Tensor want_w =
        add(add(naive_mm(f64(u1).t(), f64(x1)), naive_mm(f64(u2).t(), f64(x2))), naive_mm(f64(u3).t(), f64(x3)));
    Tensor want_b = add(add(f64(u1).sum({0}), f64(u2).sum({0})), f64(u3).sum({0}));
    EXPECT_LT(max_abs_diff(w.grad(), want_w), tol * 10);
    EXPECT_LT(max_abs_diff(b.grad(), want_b), tol * 10);
  }
}

// What is not lent: a .grad someone else holds (left as it was), and anything under create_graph
// (.grad keeps its graph) or in grad() (which leaves .grad alone).
TEST(Autograd, LeafGradIsNotLentWhereItWouldNotAccumulateInPlace) {
  Tensor w = leaf64({4, 3}, 351), b = leaf64({4}, 352);
  Tensor x = rnd({5, 3}, 353, DType::f64), u = rnd({5, 4}, 354, DType::f64);
  auto loss = [&] { return sum(mul(linear(x, w, b), u)); };
  const Tensor dw = naive_mm(u.t(), x), db = u.sum({0});
  loss().backward();
  Tensor held = w.grad();
  loss().backward();
  EXPECT_LT(max_abs_diff(held, dw), 1e-12) << "the caller's handle on the old .grad changed";
  EXPECT_LT(max_abs_diff(w.grad(), mul(dw, 2.0)), 1e-12);
  EXPECT_LT(max_abs_diff(b.grad(), mul(db, 2.0)), 1e-12);

  const auto before = w.grad().to_vector<double>();
  TensorList r = grad({loss()}, {w});
  EXPECT_EQ(w.grad().to_vector<double>(), before) << "grad() touched .grad";
  EXPECT_LT(max_abs_diff(r[0], dw), 1e-12);

  held = Tensor();
  const void* buffer = w.grad().raw_data();
  loss().backward({}, false, /*create_graph=*/true);
  EXPECT_NE(w.grad().raw_data(), buffer) << "under create_graph .grad is a new, differentiable sum";
  EXPECT_LT(max_abs_diff(w.grad().detach(), mul(dw, 3.0)), 1e-12);
}

// A walk that fails after a node added into a lent .grad loses nothing: .grad stays on the
// parameter all along and keeps what was added before the failure (as in PyTorch, where the
// accumulators that ran before an error keep their gradients).
TEST(Autograd, AFailedWalkKeepsTheLentGrad) {
  Tensor w = leaf64({4, 3}, 361), b = leaf64({4}, 362), x = leaf64({5, 3}, 363);
  Tensor u = rnd({5, 4}, 364, DType::f64);
  sum(mul(linear(x.detach(), w, b), u)).backward();
  const Tensor first = w.grad().clone();
  const void* buffer = w.grad().raw_data();
  Tensor xf = mul(x, 1.0).detach();
  autograd::record("fails_in_backward", {x}, xf, [](const TensorList&, const TensorList&) -> TensorList {
    throw Error("fails_in_backward: planted failure");
  });
  // linear's backward runs first (it was recorded last), adds into w's .grad, then x's fails
  EXPECT_THROW(sum(mul(linear(xf, w, b), u)).backward(), Error);
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().raw_data(), buffer);
  EXPECT_LT(max_abs_diff(w.grad(), add(first, naive_mm(u.t(), x.detach()))), 1e-12);
}

// What may be written in place: held once, its buffer by it alone, no two elements at one address.
TEST(Autograd, PrivateGradientsAreUnsharedAndNonOverlapping) {
  Tensor t = rnd({4, 6}, 331, DType::f64);
  EXPECT_TRUE(autograd::private_gradient(t));
  Tensor v = t.slice(1, 1, 4);
  EXPECT_FALSE(autograd::private_gradient(v)) << "t still sees the buffer";
  t = Tensor();
  EXPECT_TRUE(autograd::private_gradient(v)) << "a slice of a buffer no one else holds";
  Tensor vt = v.transpose(0, 1);
  v = Tensor();
  EXPECT_TRUE(autograd::private_gradient(vt)) << "a transposed view";
  Tensor e = rnd({1, 6}, 332, DType::f64).expand({4, 6});
  EXPECT_FALSE(autograd::private_gradient(e)) << "an expanded view has four rows at one address";
  Tensor r = rnd({3, 2}, 333, DType::f64).requires_grad_();
  EXPECT_FALSE(autograd::private_gradient(r));
}
