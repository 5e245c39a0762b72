#include "ember/models/unet.h"

#include <algorithm>
#include <cmath>

#include "ember/engine/factory.h"
#include "ember/ops/attention.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/shape.h"

namespace ember::models {

ResBlock::ResBlock(int64_t cin, int64_t cout, int64_t temb, double dropout) {
  n1_ = register_module("n1", std::make_shared<nn::GroupNorm>(32, cin));
  c1_ = register_module("c1", std::make_shared<nn::Conv2d>(cin, cout, 3, 1, 1));
  t_ = register_module("t", std::make_shared<nn::Linear>(temb, cout));
  n2_ = register_module("n2", std::make_shared<nn::GroupNorm>(32, cout));
  drop_ = register_module("drop", std::make_shared<nn::Dropout>(dropout));
  c2_ = register_module("c2", std::make_shared<nn::Conv2d>(cout, cout, 3, 1, 1));
  skip_ = cin != cout ? std::static_pointer_cast<nn::Module>(std::make_shared<nn::Conv2d>(cin, cout, 1))
                      : std::static_pointer_cast<nn::Module>(std::make_shared<nn::Identity>());
  register_module("skip", skip_);
}

// h = conv1(silu(norm1(x))) + proj(silu(temb)); out = skip(x) + conv2(dropout(silu(norm2(h)))).
// The time embedding's add and both SiLUs ride in the fused GroupNorm (group_norm_silu).
Tensor ResBlock::forward(const Tensor& x, const Tensor& temb) {
  Tensor h = (*c1_)(n1_->forward_silu(x));
  h = (*c2_)((*drop_)(n2_->forward_silu(h, (*t_)(silu(temb)))));
  return add((*skip_)(x), h);
}

namespace {
// [block, attention-or-identity], as the reference's nn.ModuleList pairs.
std::shared_ptr<nn::ModuleList> block_pair(int64_t cin, int64_t cout, int64_t temb, double dropout, bool attn) {
  auto pair = std::make_shared<nn::ModuleList>();
  pair->push_back(std::make_shared<ResBlock>(cin, cout, temb, dropout));
  if (attn) pair->push_back(std::make_shared<nn::SelfAttention2d>(cout));
  else pair->push_back(std::make_shared<nn::Identity>());
  return pair;
}
}  // namespace

UNet::UNet(UNetConfig cfg) : cfg_(std::move(cfg)) {
  const int64_t ch = cfg_.base_channels, temb = 4 * ch;
  EMBER_CHECK(ch % 32 == 0, "UNet: base_channels must be a multiple of 32 (GroupNorm(32)), got ", ch);
  EMBER_CHECK(!cfg_.channel_mult.empty() && cfg_.num_res_blocks > 0, "UNet: channel_mult and num_res_blocks must be set");
  EMBER_CHECK(cfg_.in_channels > 0 && cfg_.out_channels > 0, "UNet: in_channels and out_channels must be > 0, got ",
              cfg_.in_channels, " and ", cfg_.out_channels);
  for (int64_t m : cfg_.channel_mult) EMBER_CHECK(m > 0, "UNet: channel_mult entries must be > 0");
  const int64_t scale = int64_t{1} << (cfg_.channel_mult.size() - 1);
  EMBER_CHECK(cfg_.resolution > 0 && cfg_.resolution % scale == 0, "UNet: resolution ", cfg_.resolution,
              " must be divisible by 2^(levels - 1) = ", scale, " (", cfg_.channel_mult.size(), " levels)");
  auto has_attn = [&](int64_t r) {
    return std::find(cfg_.attn_resolutions.begin(), cfg_.attn_resolutions.end(), r) != cfg_.attn_resolutions.end();
  };
  temb_ = register_module("temb", std::make_shared<nn::Sequential>());
  temb_->push_back(std::make_shared<nn::Linear>(ch, temb));
  temb_->push_back(nn::SiLU());
  temb_->push_back(std::make_shared<nn::Linear>(temb, temb));
  cin_ = register_module("cin", std::make_shared<nn::Conv2d>(cfg_.in_channels, ch, 3, 1, 1));
  down_ = register_module("down", std::make_shared<nn::ModuleList>());
  std::vector<int64_t> chans{ch};
  int64_t c = ch, r = cfg_.resolution;
  const int64_t levels = static_cast<int64_t>(cfg_.channel_mult.size());
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t m = cfg_.channel_mult[i];
    for (int64_t b = 0; b < cfg_.num_res_blocks; ++b) {
      down_->push_back(block_pair(c, ch * m, temb, cfg_.dropout, has_attn(r)));
      c = ch * m;
      chans.push_back(c);
    }
    if (i != levels - 1) {
      down_->push_back(std::make_shared<nn::Conv2d>(c, c, 3, 2, 1));
      chans.push_back(c);
      r /= 2;
    }
  }
  mid_ = register_module("mid", std::make_shared<nn::ModuleList>());
  mid_->push_back(std::make_shared<ResBlock>(c, c, temb, cfg_.dropout));
  mid_->push_back(std::make_shared<nn::SelfAttention2d>(c));
  mid_->push_back(std::make_shared<ResBlock>(c, c, temb, cfg_.dropout));
  up_ = register_module("up", std::make_shared<nn::ModuleList>());
  for (int64_t i = levels - 1; i >= 0; --i) {
    const int64_t m = cfg_.channel_mult[i];
    for (int64_t b = 0; b < cfg_.num_res_blocks + 1; ++b) {
      up_->push_back(block_pair(c + chans.back(), ch * m, temb, cfg_.dropout, has_attn(r)));
      chans.pop_back();
      c = ch * m;
    }
    if (i != 0) {
      auto upsample = std::make_shared<nn::Sequential>();
      upsample->push_back(std::make_shared<nn::Upsample>(2));
      upsample->push_back(std::make_shared<nn::Conv2d>(c, c, 3, 1, 1));
      up_->push_back(upsample);
      r *= 2;
    }
  }
  out_ = register_module("out", std::make_shared<nn::Sequential>());
  out_->push_back(std::make_shared<nn::GroupNorm>(32, c));
  out_->push_back(nn::SiLU());
  out_->push_back(std::make_shared<nn::Conv2d>(c, cfg_.out_channels, 3, 1, 1));
}

Tensor UNet::forward(const Tensor& x, const Tensor& t) {
  EMBER_CHECK(x.defined() && t.defined(), "UNet: x and t must be defined");
  const int64_t scale = int64_t{1} << (cfg_.channel_mult.size() - 1);
  EMBER_CHECK(x.dim() == 4 && x.size(1) == cfg_.in_channels && t.dim() == 1 && t.size(0) == x.size(0),
              "UNet: expected x [N, ", cfg_.in_channels, ", H, W] and t [N], got ", shape_str(x.sizes()), " and ",
              shape_str(t.sizes()));
  EMBER_CHECK(x.size(2) % scale == 0 && x.size(3) % scale == 0, "UNet: H and W of x ", shape_str(x.sizes()),
              " must be divisible by ", scale, " (", cfg_.channel_mult.size(), " levels, ", cfg_.channel_mult.size() - 1,
              " downsamplings)");
  Tensor temb = (*temb_)(nn::timestep_embedding(t.to(x.dtype()), cfg_.base_channels));
  std::vector<Tensor> hs{(*cin_)(x)};
  for (size_t i = 0; i < down_->size(); ++i) {
    if (auto* pair = dynamic_cast<nn::ModuleList*>(&(*down_)[i])) {
      hs.push_back((*pair)[1](pair->at<ResBlock>(0).forward(hs.back(), temb)));
    } else {
      hs.push_back((*down_)[i](hs.back()));
    }
  }
  Tensor h = hs.back();
  h = mid_->at<ResBlock>(0).forward(h, temb);
  h = (*mid_)[1](h);
  h = mid_->at<ResBlock>(2).forward(h, temb);
  for (size_t i = 0; i < up_->size(); ++i) {
    if (auto* pair = dynamic_cast<nn::ModuleList*>(&(*up_)[i])) {
      h = (*pair)[1](pair->at<ResBlock>(0).forward(cat({h, hs.back()}, 1), temb));
      hs.pop_back();
    } else {
      h = (*up_)[i](h);
    }
  }
  return (*out_)(h);
}

}  // namespace ember::models
