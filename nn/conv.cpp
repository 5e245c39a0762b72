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
// The layer's own message for a wrong input, before the op's (which names the op, not the layer).
void check_input(const char* layer, int64_t in, int64_t out, int64_t k, const Tensor& x) {
  EMBER_CHECK(x.defined() && (x.dim() == 4 || x.dim() == 3) && x.size(-3) == in, layer, "(", in, ", ", out,
              ", kernel ", k, "): expected an input [N, ", in, ", H, W] or [", in, ", H, W], got ",
              x.defined() ? shape_str(x.sizes()) : std::string("an undefined tensor"));
}
}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d, int64_t g, bool with_bias)
    : in_channels(in), out_channels(out), kernel_size{k, k}, stride{s, s}, padding{p, p}, dilation{d, d}, groups(g) {
  check_channels("Conv2d", in, out, g, k);
  Tensor w = empty({out, in / g, k, k});
  init::default_weight_(w);  // kaiming_uniform(a = sqrt(5)), fan_in = in / groups * k * k
  register_parameter("weight", weight, w);
  if (with_bias) {
    Tensor b = empty({out});
    init::default_bias_(b, init::fans(w).first);
    register_parameter("bias", bias, b);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  check_input("Conv2d", in_channels, out_channels, kernel_size[0], x);
  return conv2d(x, weight, bias, stride, padding, dilation, groups);
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t op, int64_t g,
                                 bool with_bias, int64_t d)
    : in_channels(in),
      out_channels(out),
      kernel_size{k, k},
      stride{s, s},
      padding{p, p},
      output_padding{op, op},
      dilation{d, d},
      groups(g) {
  check_channels("ConvTranspose2d", in, out, g, k);
  EMBER_CHECK(op >= 0 && (op < s || op < d), "ConvTranspose2d: output_padding ", op,
              " must be smaller than stride ", s, " or dilation ", d);
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
  check_input("ConvTranspose2d", in_channels, out_channels, kernel_size[0], x);
  return conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation);
}

}  // namespace ember::nn
