#include "ember/nn/data/transforms.h"

#include <cmath>

#include "ember/engine/error.h"
#include "ember/engine/factory.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember::data {

namespace {

void check_u8(const char* op, const Tensor& x) {
  EMBER_CHECK(x.defined(), op, ": the batch is undefined");
  EMBER_CHECK(x.dtype() == DType::u8, op, ": expected u8 pixels (0..255), got ", x.str(),
              "; this transform reads stored image bytes, apply it before any conversion to float");
}

void check_float_dtype(const char* op, DType dtype) {
  EMBER_CHECK(is_floating(dtype), op, ": the output dtype must be floating, got ", dtype_name(dtype));
}

void check_batch(const char* op, const Tensor& x, int64_t min_dim, const char* layout) {
  EMBER_CHECK(x.defined(), op, ": the batch is undefined");
  EMBER_CHECK(x.dim() >= min_dim, op, ": expected a batch ", layout, ", got shape ", shape_str(x.sizes()));
}

}  // namespace

Tensor to_float_unit(const Tensor& x, DType dtype) {
  check_u8("to_float_unit", x);
  check_float_dtype("to_float_unit", dtype);
  return x.to(dtype) * (1.0 / 255.0);
}

Tensor to_float_symmetric(const Tensor& x, DType dtype) {
  check_u8("to_float_symmetric", x);
  check_float_dtype("to_float_symmetric", dtype);
  return x.to(dtype) * (1.0 / 127.5) - 1.0;
}

Tensor uniform_dequantize(const Tensor& x, Generator& gen, DType dtype) {
  check_u8("uniform_dequantize", x);
  check_float_dtype("uniform_dequantize", dtype);
  Tensor u = rand(x.sizes(), {.dtype = dtype, .device = x.device()}, &gen);
  return (x.to(dtype) + u) * (1.0 / 256.0);
}

LogitTransformed logit_transform(const Tensor& x, double alpha) {
  check_batch("logit_transform", x, 1, "[B, ...]");
  EMBER_CHECK(x.is_floating_point(), "logit_transform: expected a float batch in [0, 1], got ", x.str(),
              "; convert u8 pixels first (uniform_dequantize or to_float_unit)");
  EMBER_CHECK(alpha >= 0.0 && alpha < 0.5, "logit_transform: alpha must be in [0, 0.5), got ", alpha);
  if (x.numel() > 0) {
    const double lo = min(x.detach()).item(), hi = max(x.detach()).item();
    const bool ok = alpha > 0.0 ? (lo >= 0.0 && hi <= 1.0) : (lo > 0.0 && hi < 1.0);
    EMBER_CHECK(ok, "logit_transform: the batch ", x.str(), " has values in [", lo, ", ", hi, "] but x must lie in ",
                alpha > 0.0 ? "[0, 1]" : "(0, 1) when alpha = 0", " (logit of values outside is not finite)");
  }
  Tensor s = x * (1.0 - 2.0 * alpha) + alpha;
  Tensor log_s = log(s), log_1ms = log1p(-s);
  LogitTransformed out;
  out.y = log_s - log_1ms;
  Tensor per_elem = std::log(1.0 - 2.0 * alpha) - log_s - log_1ms;
  if (x.dim() == 1) {
    out.logdet = per_elem;
  } else {
    Shape dims;
    for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
    out.logdet = sum(per_elem, dims);
  }
  return out;
}

Tensor logit_inverse(const Tensor& y, double alpha) {
  EMBER_CHECK(y.defined(), "logit_inverse: the batch is undefined");
  EMBER_CHECK(y.is_floating_point(), "logit_inverse: expected a float tensor, got ", y.str());
  EMBER_CHECK(alpha >= 0.0 && alpha < 0.5, "logit_inverse: alpha must be in [0, 0.5), got ", alpha);
  return (sigmoid(y) - alpha) * (1.0 / (1.0 - 2.0 * alpha));
}

Tensor pad_to_32(const Tensor& x) {
  check_batch("pad_to_32", x, 2, "[..., H, W]");
  const int64_t h = x.size(-2), w = x.size(-1);
  EMBER_CHECK(h <= 32 && w <= 32, "pad_to_32: images of ", h, "x", w, " (batch ", shape_str(x.sizes()),
              ") are larger than 32x32; crop or resize them instead");
  const int64_t top = (32 - h) / 2, left = (32 - w) / 2;
  return pad(x, {left, 32 - w - left, top, 32 - h - top});
}

Tensor random_hflip(const Tensor& x, Generator& gen, double p) {
  check_batch("random_hflip", x, 2, "[B, ..., W]");
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "random_hflip: p must be a probability in [0, 1], got ", p);
  const int64_t b = x.size(0);
  Tensor u = rand({b}, {.dtype = DType::f32, .device = x.device()}, &gen);
  Shape mask_shape(static_cast<size_t>(x.dim()), 1);
  mask_shape[0] = b;
  Tensor mask = lt(u, p).reshape(mask_shape);
  return where(mask, flip(x, {-1}), x);
}

}  // namespace ember::data
