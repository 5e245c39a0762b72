#include "ember/nn/norm.h"

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/ops/norm.h"

namespace ember::nn {

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps_, bool affine) : num_groups(groups), eps(eps_) {
  EMBER_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: ", channels, " channels do not split into ", groups,
              " groups");
  if (affine) {
    register_parameter("weight", weight, ones({channels}));
    register_parameter("bias", bias, zeros({channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) { return group_norm(x, num_groups, weight, bias, eps); }

BatchNorm::BatchNorm(int64_t features, double eps_, double momentum_, bool affine) : eps(eps_), momentum(momentum_) {
  EMBER_CHECK(features > 0, "BatchNorm: num_features must be > 0, got ", features);
  if (affine) {
    register_parameter("weight", weight, ones({features}));
    register_parameter("bias", bias, zeros({features}));
  }
  register_buffer("running_mean", running_mean, zeros({features}));
  register_buffer("running_var", running_var, ones({features}));
  register_buffer("num_batches_tracked", num_batches_tracked, zeros({}, {.dtype = DType::i64}));
}

Tensor BatchNorm::forward(const Tensor& x) {
  if (is_training()) {
    NoGrad ng;
    num_batches_tracked.fill_(num_batches_tracked.item() + 1);
  }
  return batch_norm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps);
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine) : normalized_shape(std::move(shape)), eps(eps_) {
  EMBER_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape must not be empty");
  if (affine) {
    register_parameter("weight", weight, ones(normalized_shape));
    register_parameter("bias", bias, zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape, weight, bias, eps); }

}  // namespace ember::nn
