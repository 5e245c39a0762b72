// Helpers shared by the CUDA parity tests: skip without a GPU, compare a GPU result with the
// CPU's, and run one function on both devices to second order.
//
// Tolerances are relative to the output's scale (max |b|, at least 1): f64 1e-12 (the CUDA math
// library is within 2 ulp), f32 1e-5; first derivatives get 10x, second 100x that.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

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

// f on the CPU and on the GPU, its gradient and the gradient of that gradient.
inline void expect_parity(const std::function<Tensor(const Tensor&)>& f, const Tensor& x_cpu, double tolerance,
                   const char* what) {
  SCOPED_TRACE(what);
  auto run = [&](const Device& d) {
    Tensor x = x_cpu.to(d).detach().requires_grad_(true);
    Tensor y = f(x);
    Tensor w = full_like(y, 0.75);
    Tensor g1 = grad(TensorList{mul(y, w).sum()}, TensorList{x}, {}, {.create_graph = true})[0];
    Tensor g2 = grad(TensorList{mul(g1, g1).sum()}, TensorList{x}, {}, {.allow_unused = true})[0];
    return TensorList{y.detach(), g1.detach(), g2.defined() ? g2 : zeros_like(x)};
  };
  TensorList c = run(Device::cpu()), g = run(kGpu);
  EXPECT_LT(rel_diff(g[0], c[0]), tolerance) << "forward";
  EXPECT_LT(rel_diff(g[1], c[1]), tolerance * 10) << "first derivative";
  EXPECT_LT(rel_diff(g[2], c[2]), tolerance * 100) << "second derivative";
}

// f of several inputs on both devices: forward, the gradient of sum(w * f) with respect to every
// input, and the gradient of the squared first gradients (second order).
inline void expect_parity_n(const std::function<Tensor(const TensorList&)>& f, const TensorList& inputs_cpu,
                            double tolerance, const char* what) {
  SCOPED_TRACE(what);
  auto run = [&](const Device& d) {
    TensorList xs;
    for (const Tensor& x : inputs_cpu) xs.push_back(x.to(d).detach().requires_grad_(true));
    Tensor y = f(xs);
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
  };
  TensorList c = run(Device::cpu()), g = run(kGpu);
  EXPECT_LT(rel_diff(g[0], c[0]), tolerance) << "forward";
  for (size_t i = 0; i < inputs_cpu.size(); ++i) {
    EXPECT_LT(rel_diff(g[1 + 2 * i], c[1 + 2 * i]), tolerance * 10) << "first derivative, input " << i;
    EXPECT_LT(rel_diff(g[2 + 2 * i], c[2 + 2 * i]), tolerance * 100) << "second derivative, input " << i;
  }
}

}  // namespace
}  // namespace ember
