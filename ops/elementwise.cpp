// Elementwise ops. Each op is a forward kernel (a lambda handed to the strided loops) and,
// right after it, its backward as a short formula in ordinary ops, so gradients of any order
// come for free. Broadcast inputs get their gradient summed back to their own shape
// (reduce_to_input); a tensor of another dtype gets its gradient cast back. A closure captures
// only the tensors its formula reads: what it captures lives until the backward.
#include "ember/ops/elementwise.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <numbers>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/copy.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/engine/loop_builder.h"
#include "ember/kernels/cpu/fast_math.h"
#include "ember/kernels/cuda/elementwise.h"
#include "ember/ops/reduce.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif

namespace ember {

using autograd::input_grad;
using autograd::record;
namespace cpu = kernels::cpu;
namespace kc = kernels::cuda;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t x = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t y = i < n - b.size() ? 1 : b[i - (n - b.size())];
    EMBER_CHECK(x == y || x == 1 || y == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                " do not broadcast (dim ", i, ": ", x, " vs ", y, ")");
    out[i] = x == 1 ? y : x;
  }
  return out;
}

namespace {

// Which CUDA kernel computes an op on the GPU, with the op's scalars; the CPU lambda beside it
// computes the same formula (kernels/cuda/unary.cu, binary.cu).
struct GpuUnary {
  kc::UnaryOp op;
  double p0 = 0, p1 = 0;
};
struct GpuBinary {
  kc::BinaryOp op;
  double p0 = 0, p1 = 0;
};

void check_devices(const char* op, const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.defined() && b.defined(), op, ": an operand is undefined");
  EMBER_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.str(), " and ", b.str(),
              "); move one with .to(device)");
}

// A raw dtype conversion for kernel inputs (not recorded: the op's backward casts back).
Tensor as_dtype(const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.sizes(), {.dtype = dt, .device = t.device()});
  copy_into(out, t);
  return out;
}

// Inside a backward closure: the gradient for input i of a broadcasting op, summed back to the
// input's shape and cast to its dtype (both kept by the node: autograd::input_shape).
Tensor reduce_to_input(const Tensor& g, size_t i) {
  const Shape& shape = autograd::input_shape(i);
  const DType dtype = autograd::input_dtype(i);
  Tensor r = g.sizes() == shape ? g : sum_to_size(g, shape);
  return r.dtype() == dtype ? r : r.to(dtype);
}

// t where a backward reads it, else nothing: a factor is needed only for the other factor's
// gradient, so a product with a constant (dropout's mask) does not keep its other factor, and
// that factor's memory, alive until the backward.
Tensor kept_if(bool needed, const Tensor& t) { return needed ? t : Tensor(); }

// out = f(a) in a's floating dtype.
template <typename F>
Tensor unary(const char* op, const Tensor& a, GpuUnary gpu, const F& f) {
  EMBER_CHECK(a.defined(), op, ": input is undefined");
  trace::OpTimer timer(op, {a});
  Tensor out = Tensor::empty(a.sizes(), options_of(a));
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), op, [](auto) {});  // the CPU's dtype error
    kc::unary(gpu.op, cuda::elem_type(a.dtype()), cuda::make_strided<2>(a.sizes(), {&out, &a}), gpu.p0, gpu.p1,
              cuda::stream_of(a));
    timer.set_output(out);
    return out;
  }
#endif
  dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<T, T>(make_loop<2>(a.sizes(), {&out, &a}), [&](T x) -> T { return f(x); });
  });
  timer.set_output(out);
  return out;
}

// out = f(a, b) in the promoted dtype (numeric types; floating only when floating_only).
template <typename F>
Tensor binary(const char* op, const Tensor& a, const Tensor& b, GpuBinary gpu, const F& f, bool floating_only = false) {
  check_devices(op, a, b);
  trace::OpTimer timer(op, {a, b});
  const Shape shape = broadcast_shapes(a.sizes(), b.sizes(), op);
  const DType dt = promote_types(a.dtype(), b.dtype());
  Tensor A = as_dtype(a, dt), B = as_dtype(b, dt);
  Tensor out = Tensor::empty(shape, {.dtype = dt, .device = a.device()});
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    if (floating_only) dispatch_floating(dt, op, [](auto) {});  // the CPU's dtype errors
    else dispatch_numeric(dt, op, [](auto) {});
    kc::binary(gpu.op, cuda::elem_type(dt), cuda::make_strided<3>(shape, {&out, &A, &B}), gpu.p0, gpu.p1,
               cuda::stream_of(a));
    timer.set_output(out);
    return out;
  }
#endif
  auto body = [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<T, T, T>(make_loop<3>(shape, {&out, &A, &B}), [&](T x, T y) -> T { return f(x, y); });
  };
  if (floating_only) dispatch_floating(dt, op, body);
  else dispatch_numeric(dt, op, body);
  timer.set_output(out);
  return out;
}

// bool out = f(a, b), compared in the promoted dtype.
template <typename F>
Tensor compare(const char* op, const Tensor& a, const Tensor& b, kc::CompareOp gpu, const F& f) {
  check_devices(op, a, b);
  const Shape shape = broadcast_shapes(a.sizes(), b.sizes(), op);
  DType dt = promote_types(a.dtype(), b.dtype());
  if (dt == DType::boolean) dt = DType::u8;
  Tensor A = as_dtype(a, dt), B = as_dtype(b, dt);
  Tensor out = Tensor::empty(shape, {.dtype = DType::boolean, .device = a.device()});
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    dispatch_numeric(dt, op, [](auto) {});
    kc::compare(gpu, cuda::elem_type(dt), cuda::make_strided<3>(shape, {&out, &A, &B}), cuda::stream_of(a));
    return out;
  }
#endif
  dispatch_numeric(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<bool, T, T>(make_loop<3>(shape, {&out, &A, &B}), [&](T x, T y) -> bool { return f(x, y); });
  });
  return out;
}

Tensor scalar_like(const Tensor& a, double s) { return scalar_tensor(s, options_of(a)); }

// The scalar of a comparison: in a's dtype when that holds it exactly (so large i64 values
// compare exactly), else in f64, so lt(int_tensor, 2.5) and gt(u8_tensor, -1) are right.
Tensor compare_scalar(const Tensor& a, double s) {
  const bool exact = a.is_floating_point() || dispatch_all(a.dtype(), "compare", [s](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T> || !std::is_arithmetic_v<T>) {
      return true;
    } else {
      return std::trunc(s) == s && s >= static_cast<double>(std::numeric_limits<T>::lowest()) &&
             s < std::ldexp(1.0, std::numeric_limits<T>::digits);
    }
  });
  return scalar_tensor(s, {.dtype = exact ? a.dtype() : DType::f64, .device = a.device()});
}


}  // namespace

// ------------------------------------------------------------------------------------------
// arithmetic

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary("add", a, b, {kc::BinaryOp::add}, [](auto x, auto z) { return x + z; });
  record("add", {a, b}, y, [ra = input_grad(a, 0), rb = input_grad(b, 1)](const TensorList& g, const TensorList&) {
    return TensorList{ra ? reduce_to_input(g[0], 0) : Tensor(), rb ? reduce_to_input(g[0], 1) : Tensor()};
  });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary("sub", a, b, {kc::BinaryOp::sub}, [](auto x, auto z) { return x - z; });
  record("sub", {a, b}, y, [ra = input_grad(a, 0), rb = input_grad(b, 1)](const TensorList& g, const TensorList&) {
    return TensorList{ra ? reduce_to_input(g[0], 0) : Tensor(), rb ? reduce_to_input(neg(g[0]), 1) : Tensor()};
  });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary("mul", a, b, {kc::BinaryOp::mul}, [](auto x, auto z) { return x * z; });
  const Tensor ka = kept_if(b.requires_grad(), a), kb = kept_if(a.requires_grad(), b);
  record("mul", {a, b}, y, [a = ka, b = kb, ra = input_grad(a, 0), rb = input_grad(b, 1)](
      const TensorList& g, const TensorList&) {
    return TensorList{ra ? reduce_to_input(mul(g[0], b), 0) : Tensor(),
                      rb ? reduce_to_input(mul(g[0], a), 1) : Tensor()};
  }, {ka, kb});
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary("div", a, b, {kc::BinaryOp::div}, [](auto x, auto z) { return x / z; }, /*floating_only=*/true);
  const Tensor ka = kept_if(b.requires_grad(), a);
  record("div", {a, b}, y, [a = ka, b, ra = input_grad(a, 0), rb = input_grad(b, 1)](
      const TensorList& g, const TensorList&) {
    // d(a/b)/db = -a / b^2
    return TensorList{ra ? reduce_to_input(div(g[0], b), 0) : Tensor(),
                      rb ? reduce_to_input(neg(div(mul(g[0], a), square(b))), 1) : Tensor()};
  }, {ka, b});
  return y;
}

// acc + g in place, where acc is a gradient no one else can see (handed over by the walk,
// autograd::take_pending_grad_view, or waiting in its slot: autograd::private_gradient); acc may
// be a strided view, g broadcasts to it. One pass that reads both and writes acc, with no new
// buffer. Where acc cannot take it (another dtype or device, g wider): add(acc, g). Not recorded:
// private gradients exist only in walks without create_graph.
Tensor add_into(Tensor acc, const Tensor& g) {
  if (!acc.defined()) return g;
  if (acc.dtype() != g.dtype() || acc.device() != g.device() || broadcast_shapes(acc.sizes(), g.sizes(), "add") != acc.sizes())
    return add(acc, g);
  trace::OpTimer timer("add_accumulate", {acc, g});
  const Shape shape = acc.sizes();
#if EMBER_WITH_CUDA
  if (acc.device().is_cuda()) {
    dispatch_numeric(acc.dtype(), "add_accumulate", [](auto) {});
    kc::binary(kc::BinaryOp::add, cuda::elem_type(acc.dtype()), cuda::make_strided<3>(shape, {&acc, &acc, &g}), 0, 0,
               cuda::stream_of(acc));
  } else
#endif
  dispatch_numeric(acc.dtype(), "add_accumulate", [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<T, T, T>(make_loop<3>(shape, {&acc, &acc, &g}), [](T x, T y) -> T { return x + y; });
  });
  acc.bump_version();
  timer.set_output(acc);
  return acc;
}

Tensor add(const Tensor& a, double s) {
  Tensor y = unary("add", a, {kc::UnaryOp::add_scalar, s}, [s](auto x) { return x + static_cast<decltype(x)>(s); });
  record("add_scalar", {a}, y, [](const TensorList& g, const TensorList&) { return TensorList{g[0]}; });
  return y;
}
Tensor sub(const Tensor& a, double s) { return add(a, -s); }

Tensor rsub(const Tensor& a, double s) {
  Tensor y = unary("rsub", a, {kc::UnaryOp::rsub_scalar, s}, [s](auto x) { return static_cast<decltype(x)>(s) - x; });
  record("rsub_scalar", {a}, y, [](const TensorList& g, const TensorList&) { return TensorList{neg(g[0])}; });
  return y;
}

Tensor mul(const Tensor& a, double s) {
  Tensor y = unary("mul", a, {kc::UnaryOp::mul_scalar, s}, [s](auto x) { return x * static_cast<decltype(x)>(s); });
  record("mul_scalar", {a}, y, [s](const TensorList& g, const TensorList&) { return TensorList{mul(g[0], s)}; });
  return y;
}
Tensor div(const Tensor& a, double s) { return mul(a, 1.0 / s); }

Tensor rdiv(const Tensor& a, double s) { return mul(reciprocal(a), s); }

Tensor neg(const Tensor& a) {
  Tensor y = unary("neg", a, {kc::UnaryOp::neg}, [](auto x) { return -x; });
  record("neg", {a}, y, [](const TensorList& g, const TensorList&) { return TensorList{neg(g[0])}; });
  return y;
}

Tensor pow(const Tensor& a, const Tensor& e) {
  Tensor y = binary("pow", a, e, {kc::BinaryOp::pow}, [](auto x, auto z) { return std::pow(x, z); }, true);
  record("pow", {a, e}, y, [a, e, ra = input_grad(a, 0), re = input_grad(e, 1)](
      const TensorList& g, const TensorList& out) {
    // d/da = e a^(e-1);  d/de = a^e log a
    return TensorList{ra ? reduce_to_input(mul(g[0], mul(e, pow(a, sub(e, 1.0)))), 0) : Tensor(),
                      re ? reduce_to_input(mul(g[0], mul(out[0], log(a))), 1) : Tensor()};
  }, {a, e}, /*save_outputs=*/true);
  return y;
}

Tensor pow(const Tensor& a, double p) {
  if (p == 1.0) return mul(a, 1.0);
  if (p == 2.0) return square(a);
  Tensor y = unary("pow", a, {kc::UnaryOp::pow_scalar, p}, [p](auto x) { return std::pow(x, static_cast<decltype(x)>(p)); });
  record("pow_scalar", {a}, y, [a, p](const TensorList& g, const TensorList&) {
    return TensorList{mul(g[0], mul(pow(a, p - 1.0), p))};
  }, {a});
  return y;
}

// Ties send half the gradient each way, so max(a, a) has gradient 1 (as PyTorch).
Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor y = binary("maximum", a, b, {kc::BinaryOp::maximum}, [](auto x, auto z) { return (x > z || x != x) ? x : z; }  /* NaN wins */);
  record("maximum", {a, b}, y, [a, b, ra = input_grad(a, 0), rb = input_grad(b, 1)](
      const TensorList& g, const TensorList&) {
    Tensor share_a = add(gt(a, b).to(g[0].dtype()), mul(eq(a, b).to(g[0].dtype()), 0.5));
    return TensorList{ra ? reduce_to_input(mul(g[0], share_a), 0) : Tensor(),
                      rb ? reduce_to_input(mul(g[0], rsub(share_a, 1.0)), 1) : Tensor()};
  }, {a, b});
  return y;
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor y = binary("minimum", a, b, {kc::BinaryOp::minimum}, [](auto x, auto z) { return (x < z || x != x) ? x : z; });
  record("minimum", {a, b}, y, [a, b, ra = input_grad(a, 0), rb = input_grad(b, 1)](
      const TensorList& g, const TensorList&) {
    Tensor share_a = add(lt(a, b).to(g[0].dtype()), mul(eq(a, b).to(g[0].dtype()), 0.5));
    return TensorList{ra ? reduce_to_input(mul(g[0], share_a), 0) : Tensor(),
                      rb ? reduce_to_input(mul(g[0], rsub(share_a, 1.0)), 1) : Tensor()};
  }, {a, b});
  return y;
}

// ------------------------------------------------------------------------------------------
// math: y = f(a), then dy/da written in ops (using y where it is cheaper)

Tensor exp(const Tensor& a) {
  Tensor y = unary("exp", a, {kc::UnaryOp::exp}, [](auto x) { return cpu::fast_exp(x); });
  record("exp", {a}, y, [](const TensorList& g, const TensorList& out) { return TensorList{mul(g[0], out[0])}; }, {},
         true);
  return y;
}

Tensor log(const Tensor& a) {
  Tensor y = unary("log", a, {kc::UnaryOp::log}, [](auto x) { return std::log(x); });
  record("log", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{div(g[0], a)}; }, {a});
  return y;
}

Tensor log1p(const Tensor& a) {
  Tensor y = unary("log1p", a, {kc::UnaryOp::log1p}, [](auto x) { return std::log1p(x); });
  record("log1p", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{div(g[0], add(a, 1.0))}; },
         {a});
  return y;
}

Tensor expm1(const Tensor& a) {
  Tensor y = unary("expm1", a, {kc::UnaryOp::expm1}, [](auto x) { return std::expm1(x); });
  record("expm1", {a}, y, [](const TensorList& g, const TensorList& out) {
    return TensorList{mul(g[0], add(out[0], 1.0))};
  }, {}, true);
  return y;
}

Tensor sqrt(const Tensor& a) {
  Tensor y = unary("sqrt", a, {kc::UnaryOp::sqrt}, [](auto x) { return std::sqrt(x); });
  record("sqrt", {a}, y, [](const TensorList& g, const TensorList& out) {
    return TensorList{div(g[0], mul(out[0], 2.0))};
  }, {}, true);
  return y;
}

Tensor rsqrt(const Tensor& a) {
  Tensor y = unary("rsqrt", a, {kc::UnaryOp::rsqrt}, [](auto x) { return decltype(x)(1) / std::sqrt(x); });
  record("rsqrt", {a}, y, [a](const TensorList& g, const TensorList& out) {
    // d a^(-1/2) = -1/2 a^(-3/2) = -1/2 y / a
    return TensorList{mul(g[0], mul(div(out[0], a), -0.5))};
  }, {a}, true);
  return y;
}

Tensor abs(const Tensor& a) {
  Tensor y = unary("abs", a, {kc::UnaryOp::abs}, [](auto x) { return std::abs(x); });
  record("abs", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{mul(g[0], sign(a))}; }, {a});
  return y;
}

Tensor sign(const Tensor& a) {
  return unary("sign", a, {kc::UnaryOp::sign}, [](auto x) { using T = decltype(x); return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); });
}

Tensor sin(const Tensor& a) {
  Tensor y = unary("sin", a, {kc::UnaryOp::sin}, [](auto x) { return std::sin(x); });
  record("sin", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{mul(g[0], cos(a))}; }, {a});
  return y;
}

Tensor cos(const Tensor& a) {
  Tensor y = unary("cos", a, {kc::UnaryOp::cos}, [](auto x) { return std::cos(x); });
  record("cos", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{neg(mul(g[0], sin(a)))}; },
         {a});
  return y;
}

Tensor tanh(const Tensor& a) {
  Tensor y = unary("tanh", a, {kc::UnaryOp::tanh}, [](auto x) {
    using T = decltype(x);
    if constexpr (std::is_same_v<T, double>) {
      return std::tanh(x);
    } else {
      // tanh x = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 1: no overflow; below
      // |x| = 0.04 the cancellation in 1 - e costs digits, so use x - x^3/3 + 2x^5/15 there.
      T ax = std::abs(x), e = cpu::fast_exp_nonpositive(T(-2) * ax);
      T big = (T(1) - e) / (T(1) + e), x2 = x * x;
      T small = ax * (T(1) + x2 * (T(-1) / T(3) + x2 * T(2) / T(15)));
      T r = ax < T(0.04) ? small : big;
      return x < T(0) ? -r : r;
    }
  });
  record("tanh", {a}, y, [](const TensorList& g, const TensorList& out) {
    return TensorList{mul(g[0], rsub(square(out[0]), 1.0))};
  }, {}, true);
  return y;
}

Tensor erf(const Tensor& a) {
  Tensor y = unary("erf", a, {kc::UnaryOp::erf}, [](auto x) { return std::erf(x); });
  record("erf", {a}, y, [a](const TensorList& g, const TensorList&) {
    return TensorList{mul(g[0], mul(exp(neg(square(a))), 2.0 / std::sqrt(std::numbers::pi)))};
  }, {a});
  return y;
}

Tensor square(const Tensor& a) {
  Tensor y = unary("square", a, {kc::UnaryOp::square}, [](auto x) { return x * x; });
  record("square", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{mul(g[0], mul(a, 2.0))}; },
         {a});
  return y;
}

Tensor reciprocal(const Tensor& a) {
  Tensor y = unary("reciprocal", a, {kc::UnaryOp::reciprocal}, [](auto x) { return decltype(x)(1) / x; });
  record("reciprocal", {a}, y, [](const TensorList& g, const TensorList& out) {
    return TensorList{neg(mul(g[0], square(out[0])))};
  }, {}, true);
  return y;
}

Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi) {
  EMBER_CHECK(!lo || !hi || *lo <= *hi, "clamp: min ", *lo, " > max ", *hi);
  const double l = lo.value_or(-INFINITY), h = hi.value_or(INFINITY);
  Tensor y = unary("clamp", a, {kc::UnaryOp::clamp, l, h}, [l, h](auto x) {
    using T = decltype(x);
    return x < T(l) ? T(l) : (x > T(h) ? T(h) : x);
  });
  record("clamp", {a}, y, [a, l, h](const TensorList& g, const TensorList&) {
    Tensor inside = logical_and(ge(a, l), le(a, h));
    return TensorList{mul(g[0], inside.to(g[0].dtype()))};
  }, {a});
  return y;
}

// ------------------------------------------------------------------------------------------
// activations

namespace {
template <typename T>
EMBER_FAST_MATH T sigmoid_value(T x) {  // always inlined, as fast_math.h's functions
  // exp's argument is kept <= 0 (no overflow); a select, not a branch, so loops vectorise.
  T e = cpu::fast_exp_nonpositive(-std::abs(x));
  T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

// g softplus'(x) = g sigmoid(beta x), or g above beta x > threshold: softplus_backward's formula.
template <typename T>
EMBER_FAST_MATH T softplus_grad_value(T g, T x, double beta, double threshold) {
  const T bx = x * T(beta);
  return bx > T(threshold) ? g : g * sigmoid_value(bx);
}

// Whether `ts` are contiguous f32 or f64 tensors of ref's shape, dtype and device (and ref too):
// the layout the softplus family's fused one-pass paths take.
bool dense_alike(const Tensor& ref, std::initializer_list<const Tensor*> ts) {
  if (!(ref.dtype() == DType::f32 || ref.dtype() == DType::f64) || !ref.is_contiguous()) return false;
  for (const Tensor* t : ts)
    if (t->sizes() != ref.sizes() || t->dtype() != ref.dtype() || t->device() != ref.device() || !t->is_contiguous())
      return false;
  return true;
}
}  // namespace

Tensor sigmoid(const Tensor& a) {
  Tensor y = unary("sigmoid", a, {kc::UnaryOp::sigmoid}, [](auto x) { return sigmoid_value(x); });
  record("sigmoid", {a}, y, [](const TensorList& g, const TensorList& out) {
    return TensorList{mul(g[0], mul(out[0], rsub(out[0], 1.0)))};
  }, {}, true);
  return y;
}

Tensor logsigmoid(const Tensor& a) {
  // log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))
  Tensor y = unary("logsigmoid", a, {kc::UnaryOp::logsigmoid}, [](auto x) {
    using T = decltype(x);
    return std::min(x, T(0)) - cpu::log1p_unit(cpu::fast_exp_nonpositive(-std::abs(x)));
  });
  record("logsigmoid", {a}, y, [a](const TensorList& g, const TensorList&) {
    return TensorList{mul(g[0], sigmoid(neg(a)))};
  }, {a});
  return y;
}

Tensor relu(const Tensor& a) {
  Tensor y = unary("relu", a, {kc::UnaryOp::relu}, [](auto x) { using T = decltype(x); return x > T(0) ? x : T(0); });
  record("relu", {a}, y, [a](const TensorList& g, const TensorList&) {
    return TensorList{mul(g[0], gt(a, 0.0).to(g[0].dtype()))};
  }, {a});
  return y;
}

Tensor leaky_relu(const Tensor& a, double slope) {
  Tensor y = unary("leaky_relu", a, {kc::UnaryOp::leaky_relu, slope}, [slope](auto x) { using T = decltype(x); return x > T(0) ? x : x * T(slope); });
  record("leaky_relu", {a}, y, [a, slope](const TensorList& g, const TensorList&) {
    Tensor pos = gt(a, 0.0).to(g[0].dtype());  // 1 or 0
    return TensorList{mul(g[0], add(mul(pos, 1.0 - slope), slope))};
  }, {a});
  return y;
}

Tensor elu(const Tensor& a, double alpha) {
  Tensor y = unary("elu", a, {kc::UnaryOp::elu, alpha}, [alpha](auto x) { using T = decltype(x); return x > T(0) ? x : T(alpha) * std::expm1(x); });
  record("elu", {a}, y, [a, alpha](const TensorList& g, const TensorList&) {
    // 1 for a > 0, alpha e^a below
    Tensor slope = where(gt(a, 0.0), ones_like(a), mul(exp(a), alpha));
    return TensorList{mul(g[0], slope)};
  }, {a});
  return y;
}

namespace {
Tensor softplus_backward_into(Tensor acc, const Tensor& g, const Tensor& a, double beta, double threshold);
}  // namespace

Tensor softplus(const Tensor& a, double beta, double threshold) {
  EMBER_CHECK(beta > 0, "softplus: beta must be > 0, got ", beta);
  Tensor y = unary("softplus", a, {kc::UnaryOp::softplus, beta, threshold}, [beta, threshold](auto x) {
    using T = decltype(x);
    T bx = x * T(beta);
    // log1p(exp(bx)) computed as max(bx,0) + log1p(exp(-|bx|)): no overflow, full precision
    T y = (std::max(bx, T(0)) + cpu::log1p_unit(cpu::fast_exp_nonpositive(-std::abs(bx)))) / T(beta);
    return bx > T(threshold) ? x : y;
  });
  record("softplus", {a}, y, [a, beta, threshold](const TensorList& g, const TensorList&) {
    return TensorList{softplus_backward_into(autograd::take_pending_grad(0), g[0], a, beta, threshold)};
  }, {a});
  return y;
}

namespace {

TensorList softplus_double_backward(const Tensor& gg, const Tensor& g, const Tensor& a, double beta,
                                    double threshold, bool want_g, bool want_a);

// acc + softplus_backward(g, a), where acc is a gradient handed over by the walk
// (autograd::take_pending_grad; a DDE layer's pre-activation gets one from the double backward
// before softplus's own backward runs): added in place in the same pass, one kernel instead of
// softplus_backward and an add. g may be a view: in a DenseNet it is the layer's slice of the
// concatenated features' gradient. Undefined acc: softplus_backward(g, a). Not recorded
// (handed-over gradients exist only in walks without create_graph).
Tensor softplus_backward_into(Tensor acc, const Tensor& g, const Tensor& a, double beta, double threshold) {
  if (!acc.defined()) return softplus_backward(g, a, beta, threshold);
  // In place where acc is dense f32/f64 and g and a match it, in any layout.
  bool fits = acc.is_contiguous() && (acc.dtype() == DType::f32 || acc.dtype() == DType::f64);
  for (const Tensor* t : {&g, &a})
    fits = fits && t->sizes() == acc.sizes() && t->dtype() == acc.dtype() && t->device() == acc.device();
  if (!fits) return add(acc, softplus_backward(g, a, beta, threshold));
  const bool dense = g.is_contiguous() && a.is_contiguous();
  trace::OpTimer timer("softplus_backward_accumulate", {acc, g, a});
  const int64_t n = a.numel();
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    if (dense)
      kc::softplus_backward_accumulate(cuda::elem_type(a.dtype()), n, acc.device_data(), g.device_data(),
                                       a.device_data(), beta, threshold, cuda::stream_of(a));
    else
      kc::softplus_backward_accumulate_strided(cuda::elem_type(a.dtype()),
                                               cuda::make_strided<4>(acc.sizes(), {&acc, &acc, &g, &a}), beta,
                                               threshold, cuda::stream_of(a));
  } else
#endif
  dispatch_floating(a.dtype(), "softplus_backward_accumulate", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (!dense) {
      cpu::for_each(make_loop<3>(acc.sizes(), {&acc, &g, &a}), [&](char** p, const int64_t* s, int64_t m) {
        for (int64_t i = 0; i < m; ++i)
          *reinterpret_cast<T*>(p[0] + i * s[0]) +=
              softplus_grad_value(*reinterpret_cast<const T*>(p[1] + i * s[1]),
                                  *reinterpret_cast<const T*>(p[2] + i * s[2]), beta, threshold);
      });
      return;
    }
    T* pacc = acc.data<T>();
    const T *pg = g.data<T>(), *pa = a.data<T>();
    auto term = [beta, threshold](T gv, T av) { return softplus_grad_value(gv, av, beta, threshold); };
    cpu::parallel_for(0, n, cpu::kParallelGrain, [&](int64_t b, int64_t e) {
      cpu::map_accumulate_contiguous<T>(pacc + b, e - b, term, pg + b, pa + b);
    });
  });
  acc.bump_version();
  timer.set_output(acc);
  return acc;
}

// The records of softplus_backward and softplus_curvature: each op's, and the fused pair's below.
void record_softplus_backward(const Tensor& g, const Tensor& a, Tensor& out, double beta, double threshold) {
  record("softplus_backward", {g, a}, out,
         [g, a, beta, threshold, rg = input_grad(g, 0), ra = input_grad(a, 1)](const TensorList& gg,
                                                                                const TensorList&) {
           // d/dg = gg softplus'(a), this op again;  d/da = gg g softplus''(a): softplus_curvature
           // (a DDE step runs this once per layer, where the formula in plain ops took a dozen)
           TensorList d = softplus_double_backward(gg[0], g, a, beta, threshold, bool(rg), bool(ra));
           return TensorList{d[0].defined() ? reduce_to_input(d[0], 0) : Tensor(),
                             d[1].defined() ? reduce_to_input(d[1], 1) : Tensor()};
         },
         {g, a});
}

void record_softplus_curvature(const Tensor& x, const Tensor& y, const Tensor& a, Tensor& out, double beta,
                               double threshold) {
  record("softplus_curvature", {x, y, a}, out,
         [x, y, a, beta, threshold, rx = input_grad(x, 0), ry = input_grad(y, 1), ra = input_grad(a, 2)](
             const TensorList& g, const TensorList&) {
           // d/dx = g y softplus''(a), d/dy = g x softplus''(a): this op again;
           // d/da = g x y beta^2 s (1 - s) (1 - 2 s) below the threshold
           Tensor ga;
           if (ra) {
             Tensor ba = beta == 1.0 ? a : mul(a, beta);
             Tensor s = sigmoid(ba);
             Tensor below = le(ba, threshold).to(a.dtype());
             Tensor third = mul(mul(mul(s, rsub(s, 1.0)), rsub(mul(s, 2.0), 1.0)), mul(below, beta * beta));
             ga = reduce_to_input(mul(mul(mul(g[0], x), y), third), 2);
           }
           return TensorList{rx ? reduce_to_input(softplus_curvature(g[0], y, a, beta, threshold), 0) : Tensor(),
                             ry ? reduce_to_input(softplus_curvature(g[0], x, a, beta, threshold), 1) : Tensor(), ga};
         },
         {x, y, a});
}

// softplus_backward(g, a)'s backward for the incoming gradient gg: {gg softplus'(a) (for g),
// gg g softplus''(a) (for a)}, each only when wanted. When both are, and gg, g and a are
// contiguous tensors of one shape and dtype (every DDE layer), one pass computes the sigmoid
// once and writes both (one kernel launch on the GPU instead of two); each output is then
// recorded as the op it equals, so it differentiates further like that op. Otherwise, the two ops.
TensorList softplus_double_backward(const Tensor& gg, const Tensor& g, const Tensor& a, double beta,
                                    double threshold, bool want_g, bool want_a) {
  if (!(want_g && want_a && dense_alike(a, {&gg, &g})))
    return {want_g ? softplus_backward(gg, a, beta, threshold) : Tensor(),
            want_a ? softplus_curvature(gg, g, a, beta, threshold) : Tensor()};
  trace::OpTimer timer("softplus_double_backward", {gg, g, a});
  Tensor dg = Tensor::empty(a.sizes(), options_of(a)), da = Tensor::empty(a.sizes(), options_of(a));
  const int64_t n = a.numel();
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    kc::softplus_double_backward(cuda::elem_type(a.dtype()), n, dg.device_data(), da.device_data(),
                                 gg.device_data(), g.device_data(), a.device_data(), beta, threshold,
                                 cuda::stream_of(a));
  } else
#endif
  dispatch_floating(a.dtype(), "softplus_double_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T *pdg = dg.data<T>(), *pda = da.data<T>();
    const T *pgg = gg.data<T>(), *pg = g.data<T>(), *pa = a.data<T>();
    auto both = [beta, threshold](T& odg, T& oda, T x, T gv, T av) {
      const T ba = av * T(beta), s = sigmoid_value(ba);
      const bool above = ba > T(threshold);
      odg = above ? x : x * s;
      oda = above ? T(0) : x * gv * (T(beta) * s * (T(1) - s));
    };
    auto chunk = [&](int64_t b, int64_t e) {
      cpu::map2_contiguous<T>(pdg + b, pda + b, e - b, both, pgg + b, pg + b, pa + b);
    };
    cpu::parallel_for(0, n, cpu::kParallelGrain, chunk);  // inline below two grains
  });
  timer.set_output(da);
  record_softplus_backward(gg, a, dg, beta, threshold);
  record_softplus_curvature(gg, g, a, da, beta, threshold);
  return {dg, da};
}

}  // namespace

// g * d softplus(a)/da = g * sigmoid(beta a) (1 above the threshold) in one pass: it is half
// of every softplus network's backward, and under create_graph (DDE) it is differentiated
// again, so its own backward is written out too.
Tensor softplus_backward(const Tensor& g, const Tensor& a, double beta, double threshold) {
  Tensor out = binary("softplus_backward", g, a, {kc::BinaryOp::softplus_backward, beta, threshold}, [beta, threshold](auto gv, auto x) {
    using T = decltype(x);
    if constexpr (!std::is_floating_point_v<T>) {
      return gv;  // never reached: floating_only rejects integer dtypes before the kernel
    } else {
      return softplus_grad_value(gv, x, beta, threshold);
    }
  }, /*floating_only=*/true);
  record_softplus_backward(g, a, out, beta, threshold);
  return out;
}

// x y softplus''(a) = x y beta s (1 - s), s = sigmoid(beta a), 0 above the threshold: softplus's
// second derivative times two factors, in one pass. softplus_backward's backward needs
// gg g softplus''(a); taking both factors saves the product gg g its own pass (a kernel
// launch on the GPU, once per softplus layer in a DDE step).
Tensor softplus_curvature(const Tensor& x, const Tensor& y, const Tensor& a, double beta, double threshold) {
  static constexpr const char* op = "softplus_curvature";
  EMBER_CHECK(beta > 0, op, ": beta must be > 0, got ", beta);
  check_devices(op, x, y);
  check_devices(op, x, a);
  trace::OpTimer timer(op, {x, y, a});
  const Shape shape = broadcast_shapes(broadcast_shapes(x.sizes(), y.sizes(), op), a.sizes(), op);
  const DType dt = promote_types(promote_types(x.dtype(), y.dtype()), a.dtype());
  dispatch_floating(dt, op, [](auto) {});  // integer operands: the same error on every device
  Tensor X = as_dtype(x, dt), Y = as_dtype(y, dt), A = as_dtype(a, dt);
  Tensor out = Tensor::empty(shape, {.dtype = dt, .device = x.device()});
#if EMBER_WITH_CUDA
  if (x.device().is_cuda()) {
    kc::softplus_curvature(cuda::elem_type(dt), cuda::make_strided<4>(shape, {&out, &X, &Y, &A}), beta, threshold,
                           cuda::stream_of(x));
  } else
#endif
  dispatch_floating(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<T, T, T, T>(make_loop<4>(shape, {&out, &X, &Y, &A}), [beta, threshold](T xv, T yv, T av) -> T {
      const T ba = av * T(beta), s = sigmoid_value(ba);
      return ba > T(threshold) ? T(0) : xv * yv * (T(beta) * s * (T(1) - s));
    });
  });
  timer.set_output(out);
  record_softplus_curvature(x, y, a, out, beta, threshold);
  return out;
}

Tensor silu(const Tensor& a) {
  Tensor y = unary("silu", a, {kc::UnaryOp::silu}, [](auto x) { return x * sigmoid_value(x); });
  record("silu", {a}, y, [a](const TensorList& g, const TensorList&) { return TensorList{silu_backward(g[0], a)}; },
         {a});
  return y;
}

// g silu'(a) = g s (1 + a (1 - s)), s = sigmoid(a), in one pass where the formula in ops took five
// (and four temporaries as large as a). Its own backward: silu_backward(gg, a) for g, and
// gg g silu''(a) = gg g s (1 - s) (2 + a (1 - 2 s)) for a, written in ops.
Tensor silu_backward(const Tensor& g, const Tensor& a) {
  Tensor out = binary("silu_backward", g, a, {kc::BinaryOp::silu_backward}, [](auto gv, auto x) {
    using T = decltype(x);
    if constexpr (!std::is_floating_point_v<T>) {
      return gv;  // never reached: floating_only rejects integer dtypes before the kernel
    } else {
      const T s = sigmoid_value(x);
      return gv * s * (T(1) + x * (T(1) - s));
    }
  }, /*floating_only=*/true);
  const Tensor kg = kept_if(a.requires_grad(), g);  // read only for a's gradient
  record("silu_backward", {g, a}, out, [g = kg, a, rg = input_grad(g, 0), ra = input_grad(a, 1)](
      const TensorList& gg, const TensorList&) {
    Tensor da;
    if (ra) {
      Tensor s = sigmoid(a);
      Tensor curvature = mul(mul(s, rsub(s, 1.0)), add(mul(a, rsub(mul(s, 2.0), 1.0)), 2.0));
      da = reduce_to_input(mul(mul(gg[0], g), curvature), 1);
    }
    return TensorList{rg ? reduce_to_input(silu_backward(gg[0], a), 0) : Tensor(), da};
  }, {kg, a});
  return out;
}

Tensor gelu(const Tensor& a) {
  Tensor y = unary("gelu", a, {kc::UnaryOp::gelu}, [](auto x) {
    using T = decltype(x);
    return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
  });
  record("gelu", {a}, y, [a](const TensorList& g, const TensorList&) {
    // d/da a Phi(a) = Phi(a) + a phi(a)
    Tensor cdf = mul(add(erf(mul(a, std::numbers::sqrt2 / 2)), 1.0), 0.5);
    Tensor pdf = mul(exp(mul(square(a), -0.5)), 1.0 / std::sqrt(2 * std::numbers::pi));
    return TensorList{mul(g[0], add(cdf, mul(a, pdf)))};
  }, {a});
  return y;
}

// ------------------------------------------------------------------------------------------
// comparisons and selection

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, kc::CompareOp::eq, [](auto x, auto y) { return x == y; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, kc::CompareOp::ne, [](auto x, auto y) { return x != y; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, kc::CompareOp::lt, [](auto x, auto y) { return x < y; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, kc::CompareOp::le, [](auto x, auto y) { return x <= y; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, kc::CompareOp::gt, [](auto x, auto y) { return x > y; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, kc::CompareOp::ge, [](auto x, auto y) { return x >= y; }); }
Tensor eq(const Tensor& a, double s) { return eq(a, compare_scalar(a, s)); }
Tensor ne(const Tensor& a, double s) { return ne(a, compare_scalar(a, s)); }
Tensor lt(const Tensor& a, double s) { return lt(a, compare_scalar(a, s)); }
Tensor le(const Tensor& a, double s) { return le(a, compare_scalar(a, s)); }
Tensor gt(const Tensor& a, double s) { return gt(a, compare_scalar(a, s)); }
Tensor ge(const Tensor& a, double s) { return ge(a, compare_scalar(a, s)); }

Tensor logical_not(const Tensor& a) { return eq(a, scalar_tensor(0, {.dtype = a.dtype(), .device = a.device()})); }
Tensor logical_and(const Tensor& a, const Tensor& b) {
  return compare("logical_and", a, b, kc::CompareOp::logical_and, [](auto x, auto y) { return x != decltype(x)(0) && y != decltype(y)(0); });
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  return compare("logical_or", a, b, kc::CompareOp::logical_or, [](auto x, auto y) { return x != decltype(x)(0) || y != decltype(y)(0); });
}
Tensor isfinite(const Tensor& a) {
  if (!a.is_floating_point()) return ones(a.sizes(), {.dtype = DType::boolean, .device = a.device()});
  return compare("isfinite", a, a, kc::CompareOp::isfinite, [](auto x, auto) { return std::isfinite(static_cast<double>(x)); });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_devices("where", a, b);
  check_devices("where", cond, a);
  trace::OpTimer timer("where", {cond, a, b});
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  const DType dt = promote_types(a.dtype(), b.dtype());
  Tensor A = as_dtype(a, dt), B = as_dtype(b, dt), C = as_dtype(cond, DType::boolean);
  Tensor out = Tensor::empty(shape, {.dtype = dt, .device = a.device()});
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    kc::where(cuda::elem_type(dt), cuda::make_strided<4>(shape, {&out, &C, &A, &B}), cuda::stream_of(a));
  } else
#endif
  dispatch_all(dt, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    cpu::map<T, bool, T, T>(make_loop<4>(shape, {&out, &C, &A, &B}), [](bool c, T x, T y) -> T { return c ? x : y; });
  });
  record("where", {a, b}, out, [C, ra = input_grad(a, 0), rb = input_grad(b, 1)](
      const TensorList& g, const TensorList&) {
    Tensor z = zeros({}, options_of(g[0]));
    return TensorList{ra ? reduce_to_input(where(C, g[0], z), 0) : Tensor(),
                      rb ? reduce_to_input(where(C, z, g[0]), 1) : Tensor()};
  });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, double b) { return where(cond, a, scalar_like(a, b)); }

Tensor masked_scale(const Tensor& x, const Tensor& keep, double scale) {
  EMBER_CHECK(x.defined() && keep.defined(), "masked_scale: an operand is undefined");
  check_devices("masked_scale", x, keep);
  EMBER_CHECK(keep.dtype() == DType::boolean, "masked_scale: the mask must be bool, got ", keep.str());
  EMBER_CHECK(broadcast_shapes(x.sizes(), keep.sizes(), "masked_scale") == x.sizes(), "masked_scale: the mask ",
              shape_str(keep.sizes()), " does not broadcast to the input ", shape_str(x.sizes()));
  trace::OpTimer timer("masked_scale", {x, keep});
  Tensor out = Tensor::empty(x.sizes(), options_of(x));
#if EMBER_WITH_CUDA
  if (x.device().is_cuda()) {
    dispatch_floating(x.dtype(), "masked_scale", [](auto) {});  // the CPU's dtype error
    kc::masked_scale(cuda::elem_type(x.dtype()), cuda::make_strided<3>(x.sizes(), {&out, &keep, &x}), scale,
                     cuda::stream_of(x));
  } else
#endif
  dispatch_floating(x.dtype(), "masked_scale", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T s = static_cast<T>(scale);
    cpu::map<T, bool, T>(make_loop<3>(x.sizes(), {&out, &keep, &x}),
                         [s](bool k, T v) -> T { return k ? v * s : T(0); });
  });
  timer.set_output(out);
  record("masked_scale", {x}, out, [keep, scale](const TensorList& g, const TensorList&) {
    return TensorList{masked_scale(g[0], keep, scale)};
  }, {keep});
  return out;
}

}  // namespace ember
