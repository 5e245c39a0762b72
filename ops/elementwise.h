// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
// comparisons and selection. Each is differentiable to any order where it has a derivative;
// comparisons and sign return values without gradient.
#pragma once
#include <optional>

#include "ember/engine/tensor.h"

namespace ember {

// The shape a and b broadcast to; an error naming `op` and both shapes when they do not.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// ---- arithmetic (tensor-tensor computes in the promoted dtype; a double scalar keeps the
// tensor's dtype, as a Python scalar does in PyTorch) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
// For backward closures and the autograd walk: acc + g written into acc, a gradient no one else
// can see (autograd::private_gradient; acc may be a strided view). Not recorded.
Tensor add_into(Tensor acc, const Tensor& g);
Tensor sub(const Tensor& a, double s);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rdiv(const Tensor& a, double s);  // s / a
Tensor neg(const Tensor& a);
Tensor pow(const Tensor& a, const Tensor& exponent);
Tensor pow(const Tensor& a, double exponent);
Tensor maximum(const Tensor& a, const Tensor& b);  // ties split the gradient evenly
Tensor minimum(const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---- math ----
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor log1p(const Tensor& a);
Tensor expm1(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor sign(const Tensor& a);  // no gradient (zero almost everywhere)
Tensor sin(const Tensor& a);
Tensor cos(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor erf(const Tensor& a);
Tensor square(const Tensor& a);
Tensor reciprocal(const Tensor& a);
// Either bound may be absent. The gradient passes where lo <= a <= hi.
Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi);

// ---- activations ----
Tensor sigmoid(const Tensor& a);
Tensor logsigmoid(const Tensor& a);  // log(sigmoid(a)), stable for large |a|
Tensor relu(const Tensor& a);
Tensor leaky_relu(const Tensor& a, double negative_slope = 0.01);
Tensor elu(const Tensor& a, double alpha = 1.0);
// log(1 + exp(beta a)) / beta, and a itself where beta a > threshold (as PyTorch).
Tensor softplus(const Tensor& a, double beta = 1.0, double threshold = 20.0);
// g * softplus'(a): softplus's backward as one differentiable op.
Tensor softplus_backward(const Tensor& g, const Tensor& a, double beta = 1.0, double threshold = 20.0);
// x * y * softplus''(a) = x y beta s (1 - s), s = sigmoid(beta a) (0 above the threshold): the
// second derivative softplus_backward's own backward needs (times the two gradients it
// multiplies), as one differentiable op. The three operands broadcast together.
Tensor softplus_curvature(const Tensor& x, const Tensor& y, const Tensor& a, double beta = 1.0,
                          double threshold = 20.0);
Tensor silu(const Tensor& a);  // a * sigmoid(a)
// g * silu'(a) = g s (1 + a (1 - s)), s = sigmoid(a): silu's backward as one differentiable op.
Tensor silu_backward(const Tensor& g, const Tensor& a);
Tensor gelu(const Tensor& a);  // exact: a * Phi(a)

// ---- comparisons (bool results, no gradient) and selection ----
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double s);
Tensor ne(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor le(const Tensor& a, double s);
Tensor gt(const Tensor& a, double s);
Tensor ge(const Tensor& a, double s);
Tensor logical_not(const Tensor& a);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor isfinite(const Tensor& a);
// cond ? a : b, all three broadcast together; cond is bool (or nonzero).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, double b);
// y = keep ? x scale : 0, keep a bool tensor broadcast to x's shape: dropout's step once its mask
// is drawn, holding one byte an element for the backward where x * mask held a mask of x's
// dtype. Linear in x, so its backward is itself with the same mask, to any order.
Tensor masked_scale(const Tensor& x, const Tensor& keep, double scale);

}  // namespace ember
