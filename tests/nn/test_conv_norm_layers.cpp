// Conv, norm and small layers as modules: PyTorch's names and shapes, default init bounds,
// forward equal to the functional op, first and second derivatives through the module,
// BatchNorm's train/eval behaviour, errors.
#include <gtest/gtest.h>

#include <cmath>

#include "ember/ember.h"
#include "ember/nn/conv.h"
#include "ember/nn/layers.h"
#include "ember/nn/norm.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {
std::vector<std::string> names(const nn::Module& m) {
  std::vector<std::string> n;
  for (auto& [k, v] : m.named_parameters()) n.push_back(k);
  return n;
}
double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}
}  // namespace

TEST(NnConvNormLayers, ShapesNamesAndPyTorchInitBounds) {
  manual_seed(3);
  nn::Conv2d c(6, 8, 3, 1, 1, 1, 2);
  EXPECT_EQ(c.weight.sizes(), (Shape{8, 3, 3, 3}));
  EXPECT_EQ(names(c), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_LE(max_abs(c.weight), 1.0 / std::sqrt(27.0) + 1e-7);  // fan_in = in/groups * k * k
  EXPECT_LE(max_abs(c.bias), 1.0 / std::sqrt(27.0) + 1e-7);
  EXPECT_EQ(c(rnd({2, 6, 5, 7}, 1)).sizes(), (Shape{2, 8, 5, 7}));

  nn::ConvTranspose2d t(4, 6, 4, 2, 1);
  EXPECT_EQ(t.weight.sizes(), (Shape{4, 6, 4, 4}));
  EXPECT_LE(max_abs(t.weight), 1.0 / std::sqrt(6.0 * 16) + 1e-7);  // PyTorch: fan_in from dim 1
  EXPECT_EQ(t(rnd({1, 4, 5, 5}, 2)).sizes(), (Shape{1, 6, 10, 10}));

  nn::GroupNorm g(2, 6);
  EXPECT_EQ(g.weight.to_vector<float>(), std::vector<float>(6, 1.0f));
  nn::BatchNorm2d b(6);
  auto sd = b.state_dict();
  for (const char* k : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
    EXPECT_TRUE(sd.count(k)) << k;
  nn::LayerNorm l({5});
  EXPECT_EQ(l(rnd({3, 5}, 3)).sizes(), (Shape{3, 5}));

  EXPECT_THROW(nn::Conv2d(6, 8, 3, 1, 0, 1, 4), Error);  // 6 channels do not split in 4 groups
  EXPECT_THROW(nn::GroupNorm(4, 6), Error);
  EXPECT_THROW(c(rnd({2, 5, 5, 5}, 4)), Error);  // wrong channel count
}

TEST(NnConvNormLayers, ForwardEqualsTheOpAndDerivativesToSecondOrder) {
  manual_seed(5);
  nn::Conv2d c(2, 3, 3, 2, 1);
  nn::ConvTranspose2d t(3, 2, 3, 2, 1, 1);
  nn::GroupNorm g(1, 3);
  nn::LayerNorm l({3, 3});
  for (nn::Module* m : std::initializer_list<nn::Module*>{&c, &t, &g, &l}) m->to(DType::f64);
  Tensor x = leaf64({1, 2, 5, 5}, 6);
  EXPECT_EQ(c(x).to_vector<double>(), conv2d(x, c.weight, c.bias, {2, 2}, {1, 1}).to_vector<double>());
  // x -> conv -> group norm -> layer norm over (H, W) of a 3x3 map -> transposed conv
  auto f = [&](const TensorList& in) { return t(l(g(c(in[0])))); };
  expect_grads_ok(f, {x});
  // and through the parameters
  auto fp = [&](const TensorList& in) { return g(c(x)).square().sum() + in[0].sum() * 0.0; };
  EXPECT_TRUE(gradcheck(fp, {c.weight}).ok);
}

TEST(NnConvNormLayers, BatchNormTrainEvalAndRunningStatistics) {
  manual_seed(7);
  nn::BatchNorm1d b(3);
  Tensor x = add(mul(rnd({64, 3}, 8), 2.0), 5.0);
  Tensor y = b(x);
  // training: batch statistics, so the output has ~zero mean per feature
  for (double v : mean(y, {0}).to_vector<double>()) EXPECT_NEAR(v, 0.0, 1e-5);
  EXPECT_EQ(b.num_batches_tracked.item(), 1.0);
  auto rm = b.running_mean.to_vector<float>();
  auto bm = mean(x, {0}).to_vector<float>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(rm[i], 0.1 * bm[i], 1e-5);  // momentum 0.1 from 0
  b.eval();
  Tensor ye = b(x);  // eval: running statistics, not the batch's
  EXPECT_GT(std::abs(mean(ye).item()), 0.5);
  EXPECT_EQ(b.num_batches_tracked.item(), 1.0);
}

TEST(NnConvNormLayers, DropoutUpsamplePoolFlatten) {
  manual_seed(9);
  Generator g(10);
  nn::Dropout d(0.5, &g);
  Tensor x = add(rnd({1000}, 11), 3.0);
  Tensor y = d(x);
  int64_t zeros_n = 0;
  for (float v : y.to_vector<float>()) zeros_n += v == 0.0f;
  EXPECT_NEAR(zeros_n / 1000.0, 0.5, 0.06);
  d.eval();
  EXPECT_EQ(d(x).to_vector<float>(), x.to_vector<float>());
  EXPECT_EQ(nn::Upsample(2)(rnd({1, 2, 3, 4}, 12)).sizes(), (Shape{1, 2, 6, 8}));
  EXPECT_EQ(nn::AvgPool2d(2)(rnd({1, 2, 6, 8}, 13)).sizes(), (Shape{1, 2, 3, 4}));
  EXPECT_EQ(nn::Flatten()(rnd({2, 3, 4}, 14)).sizes(), (Shape{2, 12}));
}
