#include "ember/nn/layers.h"

#include "ember/ops/conv.h"
#include "ember/ops/norm.h"

namespace ember::nn {

namespace {
std::string shape_of(const Tensor& x) { return x.defined() ? shape_str(x.sizes()) : "an undefined tensor"; }
void check_image(const char* layer, const Tensor& x) {
  EMBER_CHECK(x.defined() && (x.dim() == 4 || x.dim() == 3), layer, ": expected an input [N, C, H, W] or [C, H, W], got ",
              shape_of(x));
}
}  // namespace

Dropout::Dropout(double p_, Generator* g) : p(p_), gen(g) {
  EMBER_CHECK(p_ >= 0.0 && p_ < 1.0, "Dropout: p must lie in [0, 1), got ", p_);
}
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), gen); }

Upsample::Upsample(int64_t s) : scale_factor(s) {
  EMBER_CHECK(s >= 1, "Upsample: scale_factor must be an integer >= 1, got ", s);
}
Tensor Upsample::forward(const Tensor& x) {
  check_image("Upsample", x);
  return upsample_nearest2d(x, scale_factor);
}

AvgPool2d::AvgPool2d(int64_t k, int64_t s) : kernel(k), stride(s == 0 ? k : s) {
  EMBER_CHECK(k >= 1 && s >= 0, "AvgPool2d: kernel must be >= 1 and stride >= 0 (0: stride = kernel), got kernel ", k,
              ", stride ", s);
}
Tensor AvgPool2d::forward(const Tensor& x) {
  check_image("AvgPool2d", x);
  EMBER_CHECK(x.size(-2) >= kernel && x.size(-1) >= kernel, "AvgPool2d(kernel ", kernel, "): the input ",
              shape_str(x.sizes()), " is smaller than the window");
  return avg_pool2d(x, {kernel, kernel}, {stride, stride});
}

Tensor Flatten::forward(const Tensor& x) {
  EMBER_CHECK(x.defined() && x.dim() >= 2, "Flatten: expected an input [N, ...] of >= 2 dims, got ", shape_of(x));
  return x.flatten(1);
}

}  // namespace ember::nn
