#include "ember/nn/norm.h"

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/ops/norm.h"

namespace ember::nn {

namespace {
std::string shape_of(const Tensor& x) { return x.defined() ? shape_str(x.sizes()) : "an undefined tensor"; }
}  // namespace

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps_, bool affine)
    : num_groups(groups), num_channels(channels), eps(eps_) {
  EMBER_CHECK(groups > 0 && channels > 0 && channels % groups == 0, "GroupNorm: ", channels,
              " channels do not split into ", groups, " groups");
  if (affine) {
    register_parameter("weight", weight, ones({channels}));
    register_parameter("bias", bias, zeros({channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  EMBER_CHECK(x.defined() && x.dim() >= 2 && x.size(1) == num_channels, "GroupNorm(", num_groups, ", ", num_channels,
              "): expected an input [N, ", num_channels, ", ...], got ", shape_of(x));
  return group_norm(x, num_groups, weight, bias, eps);
}

Tensor GroupNorm::forward_silu(const Tensor& x, const Tensor& sample_bias) {
  EMBER_CHECK(x.defined() && x.dim() >= 2 && x.size(1) == num_channels, "GroupNorm(", num_groups, ", ", num_channels,
              "): expected an input [N, ", num_channels, ", ...], got ", shape_of(x));
  return group_norm_silu(x, num_groups, weight, bias, sample_bias, eps, /*silu=*/true);
}

BatchNorm::BatchNorm(int64_t features, double eps_, double momentum_, bool affine)
    : num_features(features), eps(eps_), momentum(momentum_) {
  EMBER_CHECK(features > 0, "BatchNorm: num_features must be > 0, got ", features);
  EMBER_CHECK(momentum_ >= 0 && momentum_ <= 1, "BatchNorm: momentum must lie in [0, 1], got ", momentum_);
  if (affine) {
    register_parameter("weight", weight, ones({features}));
    register_parameter("bias", bias, zeros({features}));
  }
  register_buffer("running_mean", running_mean, zeros({features}));
  register_buffer("running_var", running_var, ones({features}));
  register_buffer("num_batches_tracked", num_batches_tracked, zeros({}, {.dtype = DType::i64}));
}

Tensor BatchNorm::run(const char* layer, const Tensor& x) {
  EMBER_CHECK(x.defined() && x.dim() >= 2 && x.size(1) == num_features, layer, "(", num_features,
              "): expected an input [N, ", num_features, ", ...], got ", shape_of(x));
  Tensor y = batch_norm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps);
  if (is_training()) {  // counted once the batch was accepted
    NoGrad ng;
    num_batches_tracked.fill_(num_batches_tracked.item() + 1);
  }
  return y;
}

Tensor BatchNorm::forward(const Tensor& x) { return run("BatchNorm", x); }

Tensor BatchNorm1d::forward(const Tensor& x) {
  EMBER_CHECK(x.defined() && (x.dim() == 2 || x.dim() == 3), "BatchNorm1d(", num_features, "): expected an input [N, ",
              num_features, "] or [N, ", num_features, ", L], got ", shape_of(x));
  return run("BatchNorm1d", x);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  EMBER_CHECK(x.defined() && x.dim() == 4, "BatchNorm2d(", num_features, "): expected an input [N, ", num_features,
              ", H, W], got ", shape_of(x));
  return run("BatchNorm2d", x);
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine) : normalized_shape(std::move(shape)), eps(eps_) {
  EMBER_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape must not be empty");
  for (int64_t d : normalized_shape)
    EMBER_CHECK(d > 0, "LayerNorm: normalized_shape ", shape_str(normalized_shape), " must have positive sizes");
  if (affine) {
    register_parameter("weight", weight, ones(normalized_shape));
    register_parameter("bias", bias, zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  bool ok = x.defined() && x.dim() >= k;
  for (int64_t i = 0; ok && i < k; ++i) ok = x.size(x.dim() - k + i) == normalized_shape[i];
  EMBER_CHECK(ok, "LayerNorm(", shape_str(normalized_shape), "): expected an input whose last dims are ",
              shape_str(normalized_shape), ", got ", shape_of(x));
  return layer_norm(x, normalized_shape, weight, bias, eps);
}

}  // namespace ember::nn
