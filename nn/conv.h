// Convolution layers over ops/conv.h, NCHW, with PyTorch's parameter shapes, names and
// default initialisation (so state_dicts exchange with PyTorch's nn.Conv2d / ConvTranspose2d).
#pragma once
#include "ember/nn/module.h"
#include "ember/ops/conv.h"

namespace ember::nn {

// weight [out, in / groups, k, k], bias [out].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         int64_t dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) override;  // [N, in, H, W] or [in, H, W]
  Tensor weight, bias;
  int64_t in_channels, out_channels;
  Size2 kernel_size, stride, padding, dilation;
  int64_t groups;
};

// weight [in, out / groups, k, k] (PyTorch's layout), bias [out]. Its default initialisation
// takes fan_in = weight.size(1) * k * k = out / groups * k * k, as PyTorch's does.
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
                  int64_t output_padding = 0, int64_t groups = 1, bool bias = true, int64_t dilation = 1);
  Tensor forward(const Tensor& x) override;  // [N, in, H, W] or [in, H, W]
  Tensor weight, bias;
  int64_t in_channels, out_channels;
  Size2 kernel_size, stride, padding, output_padding, dilation;
  int64_t groups;
};

}  // namespace ember::nn
