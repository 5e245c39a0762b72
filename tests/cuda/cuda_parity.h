// Helpers shared by the CUDA parity tests: skip without a GPU, compare a GPU result with the
// CPU's, and run one function on both devices to second order.
//
// Tolerances are relative to the output's scale (max |b|, at least 1): f64 1e-12 (the CUDA math
// library is within 2 ulp), f32 1e-5; first derivatives get 10x, second 100x that.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ember/engine/cuda/runtime.h"
#include "test_util.h"

namespace ember {
namespace {

using test::rnd;

#define EMBER_REQUIRE_GPU()                                                        \
  do {                                                                             \
    if (!cuda::available()) GTEST_SKIP() << "no GPU here: " << cuda::unavailable_reason(); \
  } while (0)

const Device kGpu = Device::cuda(0);

// max |a - b| / max(1, max |b|), both moved to the CPU as f64.
inline double rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  auto x = a.to(Device::cpu()).to_vector<double>(), y = b.to(Device::cpu()).to_vector<double>();
  double d = 0, scale = 1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) && std::isnan(y[i])) continue;
    d = std::max(d, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return d / scale;
}

inline double tol(DType t) { return t == DType::f64 ? 1e-12 : 1e-5; }


// A random input in (lo, hi), laid out as a transposed view of odd sizes (not contiguous).
inline Tensor odd_input(uint64_t seed, DType dt, double lo = -2, double hi = 2) {
  Generator g(seed);
  return uniform({53, 37}, lo, hi, {.dtype = dt}, &g).t();  // [37, 53], strides (1, 37)
}

using MultiFn = std::function<Tensor(const TensorList&)>;

// f on device d: the forward, the gradient of sum(0.75 f) with respect to every input, and the
// gradient of the sum of those gradients squared (second order); zeros where one is undefined.
inline TensorList derivatives_on(const MultiFn& f, const TensorList& inputs_cpu, const Device& d) {
  TensorList xs;
  for (const Tensor& x : inputs_cpu) xs.push_back(x.to(d).detach().requires_grad_(true));
  Tensor y = f(xs);
  EXPECT_EQ(y.device(), d);
  Tensor w = full_like(y, 0.75);
  TensorList g1 = grad(TensorList{mul(y, w).sum()}, xs, {}, {.create_graph = true, .allow_unused = true});
  Tensor s = zeros({}, {.dtype = y.dtype(), .device = d});
  for (const Tensor& g : g1)
    if (g.defined() && g.requires_grad()) s = add(s, mul(g, g).sum());
  TensorList g2 = s.requires_grad() ? grad(TensorList{s}, xs, {}, {.allow_unused = true}) : TensorList(xs.size());
  TensorList out{y.detach()};
  for (size_t i = 0; i < xs.size(); ++i) {
    out.push_back(g1[i].defined() ? g1[i].detach() : zeros_like(xs[i]));
    out.push_back(g2[i].defined() ? g2[i] : zeros_like(xs[i]));
  }
  return out;
}

// f of several inputs on the CPU and on `d` (the GPU; the CPU itself in the self-checks that run
// a test's lines on machines without one) agree to second order.
inline void expect_parity_n(const MultiFn& f, const TensorList& inputs_cpu, double tolerance, const std::string& what,
                            const Device& d = kGpu) {
  SCOPED_TRACE(what);
  TensorList c = derivatives_on(f, inputs_cpu, Device::cpu()), g = derivatives_on(f, inputs_cpu, d);
  ASSERT_EQ(c.size(), g.size());
  EXPECT_LT(rel_diff(g[0], c[0]), tolerance) << "forward";
  for (size_t i = 0; i < inputs_cpu.size(); ++i) {
    EXPECT_LT(rel_diff(g[1 + 2 * i], c[1 + 2 * i]), tolerance * 10) << "first derivative, input " << i;
    EXPECT_LT(rel_diff(g[2 + 2 * i], c[2 + 2 * i]), tolerance * 100) << "second derivative, input " << i;
  }
}

// First order only: the forward and the gradient of sum(w f) for a random w, with respect to every
// input, taken without create_graph (so the GPU runs an op's fused backward kernel where it has
// one). The CPU side runs in the inputs' dtype (the reference, e.g. f64); the GPU side in
// gpu_dtype when given (e.g. f32), else the same.
inline void expect_first_order_parity(const MultiFn& f, const TensorList& inputs_cpu, double tolerance,
                                      const std::string& what, std::optional<DType> gpu_dtype = std::nullopt) {
  SCOPED_TRACE(what);
  auto run = [&](const Device& d, std::optional<DType> dt) {
    TensorList xs;
    for (const Tensor& x : inputs_cpu) xs.push_back((dt ? x.to(*dt) : x).to(d).detach().requires_grad_(true));
    Tensor y = f(xs);
    Tensor w = add(mul(rnd(y.sizes(), 99, DType::f64), 0.5), 1.0).to(y.dtype()).to(d);  // the same w on both
    TensorList g = grad(TensorList{mul(y, w).sum()}, xs, {}, {.allow_unused = true});
    g.insert(g.begin(), y.detach());
    return g;
  };
  TensorList c = run(Device::cpu(), std::nullopt), g = run(kGpu, gpu_dtype);
  EXPECT_LT(rel_diff(g[0], c[0]), tolerance) << "forward";
  for (size_t i = 1; i < c.size(); ++i)
    EXPECT_LT(rel_diff(g[i], c[i]), tolerance * 10) << "first derivative of input " << i - 1;
}

// One-input f: forward, first and second derivative on the CPU and the GPU.
inline void expect_parity(const std::function<Tensor(const Tensor&)>& f, const Tensor& x_cpu, double tolerance,
                          const std::string& what) {
  expect_parity_n([&f](const TensorList& xs) { return f(xs[0]); }, {x_cpu}, tolerance, what);
}

// A test body taking the device to compare with the CPU, registered twice: Suite.name on the GPU
// (skipped without one) and SelfCheckSuite.name with the CPU standing in, so that every line of
// the test itself (shapes, which inputs are differentiable, expected errors) runs anywhere and
// only the comparison is owed to a GPU machine.
#define EMBER_GPU_AND_SELF_CHECK_TEST(suite, self_check_suite, name) \
  void name##_on(const Device& d);                                  \
  TEST(suite, name) {                                               \
    EMBER_REQUIRE_GPU();                                            \
    name##_on(kGpu);                                                \
  }                                                                 \
  TEST(self_check_suite, name) { name##_on(Device::cpu()); }        \
  void name##_on(const Device& d)

}  // namespace
}  // namespace ember
