// The host-side interface of the elementwise CUDA kernels: plain C++ (no CUDA types), so the
// engine and the ops, compiled by the C++ compiler, call them directly.
//
// Operands arrive as a Strided<N> view, the GPU twin of kernels::cpu::Loop: one shape, per
// operand a byte stride per dim (0 for a broadcast dim) and a device pointer; operand 0 is the
// output. The engine coalesces dims before handing it over, so a contiguous tensor of any rank
// arrives as one flat dim and takes the vectorised path.
#pragma once
#include <cstdint>

namespace ember::kernels::cuda {

constexpr int kMaxDims = 12;  // after coalescing; the engine refuses more

template <int N>
struct Strided {
  int ndim = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];  // bytes
  char* ptrs[N];
};

// Element types as the kernels name them (the engine maps its DType onto these).
enum class ElemType : uint8_t { f32, f64, bf16, f16, i64, i32, u8, boolean };

// y = f(x) in f32 or f64; p0, p1: the op's scalars (see each op).
enum class UnaryOp : uint8_t {
  neg, exp, log, log1p, expm1, sqrt, rsqrt, abs, sign, sin, cos, tanh, erf, square, reciprocal,
  sigmoid, logsigmoid, relu, silu, gelu,
  add_scalar,   // x + p0
  rsub_scalar,  // p0 - x
  mul_scalar,   // x * p0
  pow_scalar,   // x ^ p0
  clamp,        // min(max(x, p0), p1)
  leaky_relu,   // x > 0 ? x : p0 x
  elu,          // x > 0 ? x : p0 (e^x - 1)
  softplus,     // log(1 + e^(p0 x)) / p0, x above p0 x > p1
};

// z = f(x, y) in one numeric type (the engine promotes first).
enum class BinaryOp : uint8_t {
  add, sub, mul, div, pow, maximum, minimum,
  softplus_backward,  // x = incoming gradient, y = softplus input: x sigmoid(p0 y), x above p0 y > p1
  silu_backward,      // x = incoming gradient, y = silu input: x s (1 + y (1 - s)), s = sigmoid(y)
};

// bool = f(x, y) compared in one numeric type.
enum class CompareOp : uint8_t { eq, ne, lt, le, gt, ge, logical_and, logical_or, isfinite };

void unary(UnaryOp op, ElemType t, const Strided<2>& s, double p0, double p1, void* stream);
void binary(BinaryOp op, ElemType t, const Strided<3>& s, double p0, double p1, void* stream);
void compare(CompareOp op, ElemType t, const Strided<3>& s, void* stream);
// out = cond ? a : b; operands {out, cond (bool), a, b}, a and b of type t.
void where(ElemType t, const Strided<4>& s, void* stream);
// out = keep ? x scale : 0; operands {out, keep (bool), x}, f32 or f64 (dropout's step).
void masked_scale(ElemType t, const Strided<3>& s, double scale, void* stream);
// out = x y beta s (1 - s), s = sigmoid(beta a), 0 above beta a > threshold (softplus'' times
// x and y); operands {out, x, y, a}, f32 or f64.
void softplus_curvature(ElemType t, const Strided<4>& s, double beta, double threshold, void* stream);
// softplus_backward's backward in one pass over n contiguous elements of f32 (t) or f64:
// dg = gg sigmoid(beta a) (gg above beta a > threshold), da = gg g beta s (1 - s) (0 above).
void softplus_double_backward(ElemType t, int64_t n, void* dg, void* da, const void* gg, const void* g,
                              const void* a, double beta, double threshold, void* stream);
// acc += g sigmoid(beta a) (g above beta a > threshold) over n contiguous f32 / f64 elements, in
// place: softplus's backward added into a gradient already waiting for its input.
void softplus_backward_accumulate(ElemType t, int64_t n, void* acc, const void* g, const void* a, double beta,
                                  double threshold, void* stream);
// The same where g or a is a view (a DenseNet layer's output gradient is a slice of the
// concatenated features' gradient): operands {acc, acc, g, a}, acc read and written in place.
void softplus_backward_accumulate_strided(ElemType t, const Strided<4>& s, double beta, double threshold,
                                          void* stream);
// out = convert(in) between any two element types (same-type strided copies included).
void copy(ElemType out, ElemType in, const Strided<2>& s, void* stream);
// out = value (converted to the element type).
void fill(ElemType t, const Strided<1>& s, double value, void* stream);
// cat of n dense pieces of one element type, as one copy: piece i is `rows` rows of widths[i]
// bytes, and row r of out is row r of each piece in turn (its length the widths' sum). One
// launch per 8 pieces, moving the widest unit (up to 16 bytes) that every width and pointer
// allows, where a copy per piece took n launches.
void cat_rows(int n, const char* const* pieces, const int64_t* widths, int64_t rows, char* out, void* stream);

}  // namespace ember::kernels::cuda
