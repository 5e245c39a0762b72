// The DDPM U-Net (Ho et al., 2020), configurable, with the module names of
// ../shared/reference/torch_workloads.py (temb, cin, down, mid, up, out; ResBlock n1 c1 t n2
// drop c2 skip; Attn n qkv o), so a state_dict moves between ember and that PyTorch model.
// The CIFAR-10 configuration (base 128, mult {1,2,2,2}, 2 blocks, attention at 16x16,
// dropout 0.1) has 35,746,307 parameters, the paper's 35.7M.
#pragma once
#include <vector>

#include "ember/nn/attention.h"
#include "ember/nn/conv.h"
#include "ember/nn/layers.h"
#include "ember/nn/linear.h"
#include "ember/nn/norm.h"

namespace ember::models {

struct UNetConfig {
  int64_t in_channels = 3, base_channels = 128;
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attn_resolutions = {16};
  double dropout = 0.1;
  int64_t resolution = 32;  // the input's H = W; attention goes where the feature map is attn_resolutions
  int64_t out_channels = 3;  // the reference model has out_channels = in_channels
};

// GroupNorm(32) + SiLU + conv3x3, the time embedding added per channel, GroupNorm + SiLU +
// dropout + conv3x3, and a 1x1 conv on the skip path when the channel count changes.
class ResBlock : public nn::Module {
 public:
  ResBlock(int64_t cin, int64_t cout, int64_t temb, double dropout);
  Tensor forward(const Tensor& x, const Tensor& temb);

 private:
  std::shared_ptr<nn::GroupNorm> n1_, n2_;
  std::shared_ptr<nn::Conv2d> c1_, c2_;
  std::shared_ptr<nn::Linear> t_;
  std::shared_ptr<nn::Dropout> drop_;
  std::shared_ptr<nn::Module> skip_;
};

class UNet : public nn::Module {
 public:
  explicit UNet(UNetConfig cfg = {});
  // x [N, in_channels, H, W] with H, W divisible by 2^(levels - 1); t [N] timesteps (float or
  // integer) -> [N, out_channels, H, W].
  Tensor forward(const Tensor& x, const Tensor& t);
  const UNetConfig& config() const { return cfg_; }

 private:
  UNetConfig cfg_;
  std::shared_ptr<nn::Sequential> temb_, out_;
  std::shared_ptr<nn::Conv2d> cin_;
  std::shared_ptr<nn::ModuleList> down_, mid_, up_;
};

}  // namespace ember::models
