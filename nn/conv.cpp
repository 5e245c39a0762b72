#include "ember/nn/conv.h"

#include "ember/engine/factory.h"
#include "ember/nn/init.h"

namespace ember::nn {

namespace {
void check_channels(const char* layer, int64_t in, int64_t out, int64_t groups, int64_t kernel) {
  EMBER_CHECK(in > 0 && out > 0 && kernel > 0 && groups > 0, layer, ": channels, kernel and groups must be > 0 (in ",
              in, ", out ", out, ", kernel ", kernel, ", groups ", groups, ")");
  EMBER_CHECK(in % groups == 0 && out % groups == 0, layer, ": in_channels ", in, " and out_channels ", out,
              " must both be divisible by groups ", groups);
}
}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d, int64_t g, bool with_bias)
    : stride{s, s}, padding{p, p}, dilation{d, d}, groups(g) {
  check_channels("Conv2d", in, out, g, k);
  Tensor w = empty({out, in / g, k, k});
  init::default_weight_(w);
  register_parameter("weight", weight, w);
  if (with_bias) {
    Tensor b = empty({out});
    init::default_bias_(b, init::fans(w).first);
    register_parameter("bias", bias, b);
  }
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, stride, padding, dilation, groups); }

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t op, int64_t g,
                                 bool with_bias, int64_t d)
    : stride{s, s}, padding{p, p}, output_padding{op, op}, dilation{d, d}, groups(g) {
  check_channels("ConvTranspose2d", in, out, g, k);
  Tensor w = empty({in, out / g, k, k});
  // PyTorch computes the fan-in of this layout from dim 1 (out / groups) * k * k: fans() does too.
  init::default_weight_(w);
  register_parameter("weight", weight, w);
  if (with_bias) {
    Tensor b = empty({out});
    init::default_bias_(b, init::fans(w).first);
    register_parameter("bias", bias, b);
  }
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  return conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation);
}

}  // namespace ember::nn
