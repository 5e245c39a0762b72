// Unary elementwise ops on f32 / f64: y = f(x), with up to two scalar parameters. One functor
// per op (the formulas are the CPU's, in ops/elementwise.cpp, with the CUDA math library's
// correctly rounded-to-a-few-ulp functions in place of the CPU's vectorised exp/log1p), each
// instantiated for both types through launch_map, so the strided and the vectorised
// contiguous paths come with every op. Memory bound: 8 bytes moved per f32 element.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/math.cuh"

namespace ember::kernels::cuda {

namespace {

template <UnaryOp OP, typename T>
struct UnaryFn {
  T p0, p1;
  __device__ __forceinline__ T operator()(T x) const {
    if constexpr (OP == UnaryOp::neg) return -x;
    else if constexpr (OP == UnaryOp::exp) return m_exp(x);
    else if constexpr (OP == UnaryOp::log) return m_log(x);
    else if constexpr (OP == UnaryOp::log1p) return m_log1p(x);
    else if constexpr (OP == UnaryOp::expm1) return m_expm1(x);
    else if constexpr (OP == UnaryOp::sqrt) return m_sqrt(x);
    else if constexpr (OP == UnaryOp::rsqrt) return T(1) / m_sqrt(x);
    else if constexpr (OP == UnaryOp::abs) return m_abs(x);
    else if constexpr (OP == UnaryOp::sign) return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    else if constexpr (OP == UnaryOp::sin) return m_sin(x);
    else if constexpr (OP == UnaryOp::cos) return m_cos(x);
    else if constexpr (OP == UnaryOp::tanh) return m_tanh(x);
    else if constexpr (OP == UnaryOp::erf) return m_erf(x);
    else if constexpr (OP == UnaryOp::square) return x * x;
    else if constexpr (OP == UnaryOp::reciprocal) return T(1) / x;
    else if constexpr (OP == UnaryOp::sigmoid) return sigmoid_of(x);
    else if constexpr (OP == UnaryOp::logsigmoid) return (x < T(0) ? x : T(0)) - m_log1p(m_exp(-m_abs(x)));
    else if constexpr (OP == UnaryOp::relu) return x > T(0) ? x : T(0);
    else if constexpr (OP == UnaryOp::silu) return x * sigmoid_of(x);
    else if constexpr (OP == UnaryOp::gelu) return T(0.5) * x * (T(1) + m_erf(x * T(0.70710678118654752440)));
    else if constexpr (OP == UnaryOp::add_scalar) return x + p0;
    else if constexpr (OP == UnaryOp::rsub_scalar) return p0 - x;
    else if constexpr (OP == UnaryOp::mul_scalar) return x * p0;
    else if constexpr (OP == UnaryOp::pow_scalar) return m_pow(x, p0);
    else if constexpr (OP == UnaryOp::clamp) return x < p0 ? p0 : (x > p1 ? p1 : x);
    else if constexpr (OP == UnaryOp::leaky_relu) return x > T(0) ? x : x * p0;
    else if constexpr (OP == UnaryOp::elu) return x > T(0) ? x : p0 * m_expm1(x);
    else if constexpr (OP == UnaryOp::softplus) {
      const T bx = x * p0;  // log1p(e^bx) = max(bx, 0) + log1p(e^-|bx|): no overflow
      const T y = ((bx > T(0) ? bx : T(0)) + m_log1p(m_exp(-m_abs(bx)))) / p0;
      return bx > p1 ? x : y;
    }
  }
};

template <UnaryOp OP>
void run(ElemType t, const Strided<2>& s, double p0, double p1, void* stream, const char* name) {
  if (t == ElemType::f32)
    launch_map<float, float>(s, UnaryFn<OP, float>{static_cast<float>(p0), static_cast<float>(p1)}, stream, name);
  else if (t == ElemType::f64)
    launch_map<double, double>(s, UnaryFn<OP, double>{p0, p1}, stream, name);
  else
    EMBER_FAIL(name, ": the CUDA kernel takes f32 or f64 only");
}

}  // namespace

void unary(UnaryOp op, ElemType t, const Strided<2>& s, double p0, double p1, void* stream) {
  switch (op) {
#define EMBER_UNARY_CASE(name) \
  case UnaryOp::name: return run<UnaryOp::name>(t, s, p0, p1, stream, #name);
    EMBER_UNARY_CASE(neg) EMBER_UNARY_CASE(exp) EMBER_UNARY_CASE(log) EMBER_UNARY_CASE(log1p)
    EMBER_UNARY_CASE(expm1) EMBER_UNARY_CASE(sqrt) EMBER_UNARY_CASE(rsqrt) EMBER_UNARY_CASE(abs)
    EMBER_UNARY_CASE(sign) EMBER_UNARY_CASE(sin) EMBER_UNARY_CASE(cos) EMBER_UNARY_CASE(tanh)
    EMBER_UNARY_CASE(erf) EMBER_UNARY_CASE(square) EMBER_UNARY_CASE(reciprocal) EMBER_UNARY_CASE(sigmoid)
    EMBER_UNARY_CASE(logsigmoid) EMBER_UNARY_CASE(relu) EMBER_UNARY_CASE(silu) EMBER_UNARY_CASE(gelu)
    EMBER_UNARY_CASE(add_scalar) EMBER_UNARY_CASE(rsub_scalar) EMBER_UNARY_CASE(mul_scalar)
    EMBER_UNARY_CASE(pow_scalar) EMBER_UNARY_CASE(clamp) EMBER_UNARY_CASE(leaky_relu) EMBER_UNARY_CASE(elu)
    EMBER_UNARY_CASE(softplus)
#undef EMBER_UNARY_CASE
  }
}

}  // namespace ember::kernels::cuda
