// nn layers and optimizers against PyTorch (tests/reference/make_nn_fixtures.py, float64):
// outputs, input and parameter gradients, BatchNorm's running statistics, and three optimizer
// steps. Tolerance: 1e-10 relative to the largest value (both sides compute in f64).
#include <gtest/gtest.h>

#include <cmath>

#include "ember/ember.h"
#include "ember/engine/serialization/safetensors.h"

using namespace ember;

namespace {
SafetensorsFile& fixture() {
  static SafetensorsFile f = load_safetensors(std::string(EMBER_SOURCE_DIR) +
                                              "/tests/reference/fixtures/nn_layers_optim.safetensors");
  return f;
}

Tensor get(const std::string& k) {
  auto it = fixture().tensors.find(k);
  if (it == fixture().tensors.end())
    throw Error("fixture entry '" + k + "' missing; regenerate with python3 tests/reference/make_nn_fixtures.py");
  return it->second;
}

void expect_close(const Tensor& got, const Tensor& want, const std::string& what, double rtol = 1e-10) {
  ASSERT_TRUE(got.defined()) << what << " is undefined";
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  double scale = 1e-12, worst = 0;
  for (double x : w) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(g[i] - w[i]));
  EXPECT_LE(worst, rtol * scale) << what << ": max abs difference " << worst;
}

// Loads the layer's parameters, runs it on the fixture's x, compares out and all gradients.
void check_layer(const std::string& name, nn::Module& m) {
  m.to(DType::f64);
  std::map<std::string, Tensor> sd = m.state_dict();
  for (auto& [k, v] : m.named_parameters()) sd[k] = get(name + ".param." + k);
  m.load_state_dict(sd);
  Tensor x = get(name + ".x").clone();
  x.requires_grad_(true);
  Tensor y = m(x);
  expect_close(y, get(name + ".out"), name + " output");
  sum(mul(y, get(name + ".w"))).backward();
  expect_close(x.grad(), get(name + ".grad.x"), name + " grad x");
  for (auto& [k, p] : m.named_parameters()) expect_close(p.grad(), get(name + ".grad." + k), name + " grad " + k);
  for (auto& [k, b] : m.named_buffers())
    if (b.is_floating_point()) expect_close(b, get(name + ".buffer." + k), name + " buffer " + k);
}
}  // namespace

TEST(TorchReferenceNn, LayersMatchPyTorch) {
  nn::Linear linear(5, 4);
  check_layer("linear", linear);
  nn::Conv2d conv(4, 6, 3, 2, 1, 1, 2);
  check_layer("conv", conv);
  nn::ConvTranspose2d convt(4, 3, 4, 2, 1);
  check_layer("convt", convt);
  nn::GroupNorm gn(2, 6);
  check_layer("groupnorm", gn);
  nn::BatchNorm2d bn(3);
  check_layer("batchnorm", bn);
  nn::LayerNorm ln({3, 4});
  check_layer("layernorm", ln);
  nn::Upsample up(2);
  check_layer("upsample", up);
  nn::AvgPool2d pool(2);
  check_layer("avgpool", pool);
  nn::SelfAttention2d att(32);
  check_layer("attention", att);
  nn::WeightNorm wn(std::make_shared<nn::Linear>(5, 4));
  check_layer("weightnorm", wn);
}

TEST(TorchReferenceNn, SinusoidalEmbeddingMatchesTheReferenceUNets) {
  nn::SinusoidalEmbedding emb(32);
  expect_close(emb(get("embedding.t")), get("embedding.out"), "embedding", 1e-12);
}

TEST(TorchReferenceNn, OptimizerStepsMatchPyTorch) {
  auto run = [](const std::string& name, auto make) {
    Tensor p = get("optim.p0").clone();
    p.requires_grad_(true);
    auto opt = make(std::vector<Tensor>{p});
    for (int i = 0; i < 3; ++i) {
      p.set_grad(get("optim.g" + std::to_string(i)));
      opt->step();
    }
    expect_close(p, get("optim." + name), name, 1e-12);
  };
  run("sgd", [](auto ps) { return std::make_unique<nn::SGD>(ps, nn::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}); });
  run("nesterov", [](auto ps) { return std::make_unique<nn::SGD>(ps, nn::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true}); });
  run("adam", [](auto ps) {
    return std::make_unique<nn::Adam>(ps, nn::AdamOptions{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01});
  });
  run("adamw", [](auto ps) {
    return std::make_unique<nn::AdamW>(ps, nn::AdamOptions{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1});
  });
  run("adamax", [](auto ps) {
    return std::make_unique<nn::Adamax>(ps, nn::AdamOptions{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  });
}
