// The DDPM U-Net: the CIFAR-10 configuration's parameter count, and a small configuration's
// forward and gradients against PyTorch (tests/reference/make_unet_fixture.py, the reference
// model of ../shared/reference/torch_workloads.py, f32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ember/ember.h"
#include "ember/engine/serialization/safetensors.h"
#include "ember/models/unet.h"

using namespace ember;

TEST(UNetModel, CifarConfigurationHasTheDdpmParameterCount) {
  models::UNet net;  // base 128, mult {1,2,2,2}, 2 blocks, attention at 16, dropout 0.1
  EXPECT_EQ(net.num_parameters(), 35746307);  // the same count as the PyTorch reference model
}

namespace {
// The fixture script's weights: parameter k (sorted names), element i.
void fill_like_the_fixture(nn::Module& net) {
  auto named = net.named_parameters();
  std::sort(named.begin(), named.end(), [](auto& a, auto& b) { return a.first < b.first; });
  NoGrad ng;
  for (size_t k = 0; k < named.size(); ++k) {
    const auto& [name, p] = named[k];
    std::vector<double> v(p.numel());
    bool norm_weight = p.dim() == 1 && (name.find(".n") != std::string::npos || name.rfind("out.0", 0) == 0) &&
                       name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      double s = std::sin(0.731 * static_cast<double>(i) + 1.3 * static_cast<double>(k));
      v[i] = norm_weight ? 1 + 0.1 * s : (p.dim() == 1 ? 0.1 * s : 0.05 * s);
    }
    Tensor dst = p.detach();
    dst.copy_(from_vector(v, p.sizes()));
  }
}

void expect_close(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  double scale = 1.0;  // a floor: a gradient that is zero in exact arithmetic is f32 noise on both sides
  for (double x : w) scale = std::max(scale, std::abs(x));
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(g[i] - w[i]));
  EXPECT_LE(worst, rtol * scale) << what << ": max abs difference " << worst << " (largest value " << scale << ")";
}
}  // namespace

TEST(UNetModel, SmallConfigurationMatchesPyTorch) {
  const std::string path = std::string(EMBER_SOURCE_DIR) + "/tests/reference/fixtures/unet_small.safetensors";
  SafetensorsFile f;
  ASSERT_NO_THROW(f = load_safetensors(path)) << "regenerate with: python3 tests/reference/make_unet_fixture.py";
  models::UNet net({.in_channels = 3, .base_channels = 32, .channel_mult = {1, 1}, .num_res_blocks = 1,
                    .attn_resolutions = {4}, .dropout = 0.1, .resolution = 8});
  ASSERT_EQ(net.num_parameters(), 285667);
  fill_like_the_fixture(net);
  net.eval();
  Tensor x = f.tensors["x"].clone();
  x.requires_grad_(true);
  Tensor out = net.forward(x, f.tensors["t"]);
  // f32 on both sides with different summation orders: the output within 1e-4 of its largest
  // value, gradients (long sums over the batch and positions) within 5e-4.
  expect_close(out, f.tensors["out"], 1e-4, "output");
  sum(mul(out, f.tensors["w"])).backward();
  expect_close(x.grad(), f.tensors["grad.x"], 5e-4, "grad x");
  auto named = net.named_parameters();
  for (const char* name : {"cin.weight", "temb.0.weight", "mid.1.qkv.weight", "out.2.weight", "down.1.weight"}) {
    auto it = std::find_if(named.begin(), named.end(), [&](auto& p) { return p.first == name; });
    ASSERT_NE(it, named.end()) << name;
    expect_close(it->second.grad(), f.tensors[std::string("grad.") + name], 5e-4, name);
  }
}
