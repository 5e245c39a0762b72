// Modules (names, state_dict checks, train/eval, dtype), optimizers against hand-computed
// updates, schedules, clipping, EMA, and a save / load / resume that continues bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "ember/ember.h"
#include "ember/engine/serialization/safetensors.h"
#include "ember/models/mlp.h"
#include "ember/nn/linear.h"
#include "ember/nn/optim.h"

using namespace ember;

TEST(NnModule, NamesCountsAndStateDictChecks) {
  manual_seed(1);
  models::MLP m(2, 8, 4, 1);
  auto named = m.named_parameters();
  ASSERT_EQ(named.size(), 8u);  // 4 Linear layers x (weight, bias)
  EXPECT_EQ(named[0].first, "net.0.weight");
  EXPECT_EQ(named[2].first, "net.2.weight");  // activations take the odd indices, as in PyTorch
  EXPECT_EQ(m.num_parameters(), (2 * 8 + 8) + 2 * (8 * 8 + 8) + (8 + 1));
  auto sd = m.state_dict();
  models::MLP other(2, 8, 4, 1);
  other.load_state_dict(sd);
  EXPECT_EQ(other.state_dict()["net.5.bias"].to_vector<float>(), sd["net.5.bias"].to_vector<float>());
  auto bad = sd;
  bad["net.0.weight"] = zeros({3, 3});
  EXPECT_THROW(other.load_state_dict(bad), Error);
  auto missing = sd;
  missing.erase("net.0.bias");
  EXPECT_THROW(other.load_state_dict(missing), Error);
  EXPECT_NO_THROW(other.load_state_dict(missing, /*strict=*/false));
  m.eval();
  EXPECT_FALSE(m.is_training());
  m.to(DType::f64);
  EXPECT_EQ(m.parameters()[0].dtype(), DType::f64);
  EXPECT_TRUE(m.parameters()[0].requires_grad());
}

TEST(NnModule, LinearMatchesPyTorchDefaultInitBounds) {
  manual_seed(2);
  nn::Linear l(50, 20);
  double bound = 1.0 / std::sqrt(50.0);
  for (float v : l.weight.to_vector<float>()) EXPECT_LE(std::abs(v), bound + 1e-7);
  for (float v : l.bias.to_vector<float>()) EXPECT_LE(std::abs(v), bound + 1e-7);
  Tensor x = randn({3, 50});
  Tensor y = l(x);
  EXPECT_EQ(y.sizes(), (Shape{3, 20}));
  EXPECT_THROW(l(randn({3, 49})), Error);
}

TEST(NnOptim, AdamMatchesTheFormula) {
  Tensor p = tensor({1.0, -2.0}, {}, {.dtype = DType::f64});
  p.requires_grad_(true);
  nn::Adam opt({p}, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  double m[2] = {0, 0}, v[2] = {0, 0}, ref[2] = {1.0, -2.0};
  for (int t = 1; t <= 3; ++t) {
    opt.zero_grad();
    sum(pow(p, 3.0)).backward();  // g = 3 p^2
    for (int i = 0; i < 2; ++i) {
      double g = 3 * ref[i] * ref[i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.99, t));
      ref[i] -= 0.1 * mh / (std::sqrt(vh) + 1e-8);
    }
    opt.step();
  }
  auto pv = p.to_vector<double>();
  EXPECT_NEAR(pv[0], ref[0], 1e-12);
  EXPECT_NEAR(pv[1], ref[1], 1e-12);
}

// The vector loop (kernels/cpu/optim.h, 16 lanes on AVX-512, split across threads above 16384
// elements) gives the scalar formula, for Adam and AdamW, f32 and f64, on parameters whose sizes
// are not multiples of a vector or of a thread's chunk: to the last bits, which fused
// multiply-adds may change where the host has them (a few ulps after three steps).
template <typename T>
void expect_adam_bits(bool decoupled) {
  for (int64_t n : {int64_t{1}, int64_t{37}, int64_t{40009}}) {
    SCOPED_TRACE(testing::Message() << "n=" << n << " decoupled=" << decoupled);
    const DType dt = std::is_same_v<T, float> ? DType::f32 : DType::f64;
    Generator gen(static_cast<uint64_t>(n));
    Tensor p = randn({n}, {.dtype = dt}, &gen).requires_grad_(true);
    std::vector<T> ref = p.to_vector<T>(), m(n, T(0)), v(n, T(0));
    nn::AdamOptions o{.lr = 1e-2, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.05};
    nn::Adam opt({p}, o, decoupled);
    for (int t = 1; t <= 3; ++t) {
      Tensor g = randn({n}, {.dtype = dt}, &gen);
      p.set_grad(g);
      const std::vector<T> gv = g.to_vector<T>();
      const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
      const T b1 = T(o.beta1), b2 = T(o.beta2), eps = T(o.eps), wd = T(o.weight_decay);
      const T step_size = T(o.lr / bc1), inv_sqrt_bc2 = T(1 / std::sqrt(bc2)), decay = T(1 - o.lr * o.weight_decay);
      for (int64_t k = 0; k < n; ++k) {
        T d = gv[k];
        if (decoupled) ref[k] *= decay;
        else d += wd * ref[k];
        m[k] = b1 * m[k] + (T(1) - b1) * d;
        v[k] = b2 * v[k] + (T(1) - b2) * d * d;
        ref[k] -= step_size * m[k] / (std::sqrt(v[k]) * inv_sqrt_bc2 + eps);
      }
      opt.step();
    }
    const std::vector<T> got = p.to_vector<T>();
    const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
    int64_t differ = 0;
    for (int64_t k = 0; k < n; ++k) differ += std::abs(got[k] - ref[k]) > tol * (1 + std::abs(ref[k]));
    EXPECT_EQ(differ, 0);
  }
}

TEST(NnOptim, AdamVectorLoopGivesTheScalarFormula) {
  for (bool decoupled : {false, true}) {
    expect_adam_bits<float>(decoupled);
    expect_adam_bits<double>(decoupled);
  }
}

TEST(NnOptim, SgdMomentumNesterovAdamWAdamaxDecreaseAQuadratic) {
  auto run = [](auto make) {
    Tensor p = tensor({3.0, -1.5, 0.7});
    p.requires_grad_(true);
    auto opt = make(std::vector<Tensor>{p});
    double first = 0, last = 0;
    for (int i = 0; i < 200; ++i) {
      opt->zero_grad();
      Tensor l = sum(square(p));
      if (i == 0) first = l.item();
      last = l.item();
      l.backward();
      opt->step();
    }
    return last / first;
  };
  EXPECT_LT(run([](auto ps) { return std::make_unique<nn::SGD>(ps, nn::SGDOptions{.lr = 0.05, .momentum = 0.9}); }), 1e-3);
  EXPECT_LT(run([](auto ps) {
              return std::make_unique<nn::SGD>(ps, nn::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
            }),
            1e-3);
  EXPECT_LT(run([](auto ps) { return std::make_unique<nn::AdamW>(ps, nn::AdamOptions{.lr = 0.05, .weight_decay = 0.01}); }),
            1e-2);
  EXPECT_LT(run([](auto ps) { return std::make_unique<nn::Adamax>(ps, nn::AdamOptions{.lr = 0.05}); }), 1e-2);
}

TEST(NnOptim, SchedulesClippingAndEma) {
  Tensor p = ones({2});
  p.requires_grad_(true);
  nn::SGD opt({p}, {.lr = 1.0});
  auto s = nn::StepLR(opt, 2, 0.5);
  EXPECT_DOUBLE_EQ(opt.lr, 1.0);
  s.step();
  s.step();
  EXPECT_DOUBLE_EQ(opt.lr, 0.5);
  nn::SGD opt2({p}, {.lr = 2.0});
  auto c = nn::CosineLR(opt2, 10);
  for (int i = 0; i < 10; ++i) c.step();
  EXPECT_NEAR(opt2.lr, 0.0, 1e-12);
  nn::SGD opt3({p}, {.lr = 1.0});
  auto w = nn::LinearWarmupLR(opt3, 4);
  EXPECT_DOUBLE_EQ(opt3.lr, 0.25);

  p.set_grad(tensor({3.0, 4.0}));
  EXPECT_NEAR(nn::clip_grad_norm_({p}, 1.0), 5.0, 1e-6);
  auto g = p.grad().to_vector<float>();
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-5);
  p.set_grad(tensor({NAN, 1.0}));
  EXPECT_THROW(nn::clip_grad_norm_({p}, 1.0), Error);
  p.set_grad(tensor({3.0, -4.0}));
  nn::clip_grad_value_({p}, 2.0);
  EXPECT_EQ(p.grad().to_vector<float>(), (std::vector<float>{2.0f, -2.0f}));

  nn::EMA ema({p}, 0.5);
  {
    NoGrad ng;
    p.fill_(3.0);
  }
  ema.update();  // shadow = 0.5 * 1 + 0.5 * 3
  ema.swap();
  EXPECT_FLOAT_EQ(p.to_vector<float>()[0], 2.0f);
  ema.swap();
  EXPECT_FLOAT_EQ(p.to_vector<float>()[0], 3.0f);
}

// A checkpoint of model + optimizer + RNG continues training exactly as if never stopped.
TEST(NnCheckpoint, ResumeIsBitForBit) {
  auto make = [] {
    manual_seed(7);
    return std::make_shared<models::MLP>(2, 16, 3, 1);
  };
  auto train = [](models::MLP& m, nn::Adam& opt, Generator& g, int steps) {
    for (int i = 0; i < steps; ++i) {
      Tensor x = randn({64, 2}, {}, &g);
      opt.zero_grad();
      sum(square(sub(m(x), sum(square(x), {1}, true)))).backward();
      opt.step();
    }
  };
  auto a = make();
  nn::Adam oa(a->parameters(), {.lr = 1e-2});
  Generator ga(3);
  train(*a, oa, ga, 10);
  std::string path = testing::TempDir() + "/ember_ckpt_test.safetensors";
  std::map<std::string, Tensor> ck;
  for (auto& [k, v] : a->state_dict()) ck["model." + k] = v;
  for (auto& [k, v] : oa.state_dict()) ck["optim." + k] = v;
  auto st = ga.state();
  save_safetensors(path, ck, {{"rng_seed", std::to_string(st[0])}, {"rng_offset", std::to_string(st[1])}});
  train(*a, oa, ga, 10);

  auto b = make();
  nn::Adam ob(b->parameters(), {.lr = 1e-2});
  SafetensorsFile f = load_safetensors(path);
  std::map<std::string, Tensor> model, optim;
  for (auto& [k, v] : f.tensors) (k.rfind("model.", 0) == 0 ? model[k.substr(6)] : optim[k.substr(6)]) = v;
  b->load_state_dict(model);
  ob.load_state_dict(optim);
  Generator gb;
  gb.set_state({std::stoull(f.metadata["rng_seed"]), std::stoull(f.metadata["rng_offset"])});
  train(*b, ob, gb, 10);
  for (auto& [k, v] : a->state_dict()) EXPECT_EQ(v.to_vector<float>(), b->state_dict()[k].to_vector<float>()) << k;
  std::remove(path.c_str());
}
