#include "ember/nn/layers.h"

#include "ember/ops/conv.h"
#include "ember/ops/norm.h"

namespace ember::nn {

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), gen); }
Tensor Upsample::forward(const Tensor& x) { return upsample_nearest2d(x, scale_factor); }
Tensor AvgPool2d::forward(const Tensor& x) { return avg_pool2d(x, {kernel, kernel}, {stride, stride}); }

}  // namespace ember::nn
