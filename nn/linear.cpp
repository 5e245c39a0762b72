#include "ember/nn/linear.h"

#include "ember/engine/factory.h"
#include "ember/nn/init.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/linalg.h"

namespace ember::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, TensorOptions opts) : in_features(in), out_features(out) {
  EMBER_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be > 0, got ", in, " and ", out);
  TensorOptions o{.dtype = opts.dtype, .device = Device::cpu()};
  Tensor w = empty({out, in}, o);
  init::default_weight_(w);
  register_parameter("weight", weight, w);
  if (with_bias) {
    Tensor b = empty({out}, o);
    init::default_bias_(b, in);
    register_parameter("bias", bias, b);
  }
  if (!opts.device.is_cpu()) to(opts.device);
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::shared_ptr<Module> ReLU() { return std::make_shared<Activation>([](const Tensor& x) { return relu(x); }); }
std::shared_ptr<Module> SiLU() { return std::make_shared<Activation>([](const Tensor& x) { return silu(x); }); }
std::shared_ptr<Module> Sigmoid() { return std::make_shared<Activation>([](const Tensor& x) { return sigmoid(x); }); }
std::shared_ptr<Module> Tanh() { return std::make_shared<Activation>([](const Tensor& x) { return tanh(x); }); }
std::shared_ptr<Module> GELU() { return std::make_shared<Activation>([](const Tensor& x) { return gelu(x); }); }
std::shared_ptr<Module> Softplus(double beta, double threshold) {
  return std::make_shared<Activation>([=](const Tensor& x) { return softplus(x, beta, threshold); });
}
std::shared_ptr<Module> LeakyReLU(double slope) {
  return std::make_shared<Activation>([=](const Tensor& x) { return leaky_relu(x, slope); });
}
std::shared_ptr<Module> ELU(double alpha) {
  return std::make_shared<Activation>([=](const Tensor& x) { return elu(x, alpha); });
}

}  // namespace ember::nn
