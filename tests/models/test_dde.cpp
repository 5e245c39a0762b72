// Short DDE trainings that must move the right way: the KL to the smoothed true density
// falls, the generator's MMD^2 to the data falls, and the importance-sampled likelihood of a
// Gaussian lands near the exact value. Small networks keep each test to seconds; the full
// figures at the default settings are in docs/results.md.
#include <gtest/gtest.h>

#include <cmath>

#include "ember/ember.h"
#include "ember/models/dde/dde.h"
#include "ember/models/mlp.h"
#include "ember/nn/data/toy.h"
#include "ember/nn/optim.h"

using namespace ember;
namespace dde = ember::models::dde;

namespace {
Tensor grid(double extent, int64_t n) {
  std::vector<float> v;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      v.push_back(static_cast<float>(-extent + (c + 0.5) * 2 * extent / n));
      v.push_back(static_cast<float>(extent - (r + 0.5) * 2 * extent / n));
    }
  return from_vector(v, {n * n, 2});
}

void train_dde(nn::Module& s, nn::Adam& opt, const std::function<Tensor()>& batch, double sigma, int steps, Generator& g) {
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    dde::dde_loss(s, batch(), sigma, &g).backward();
    opt.step();
  }
}
}  // namespace

TEST(DdeTraining, KlToTheSmoothedDensityFalls) {
  manual_seed(11);
  Generator g(12);
  auto toy = data::make_toy("8gaussians");
  models::ResidualMLP s(2, 32, 6, 1);
  nn::Adam opt(s.parameters(), {.lr = 3e-3});
  Tensor pts = grid(toy->extent(), 48);
  Tensor log_p = toy->log_density(pts, 0.2);
  double kl0 = dde::grid_kl(log_p, dde::evaluate(s, pts));
  train_dde(s, opt, [&] { return toy->sample(512, &g); }, 0.2, 300, g);
  double kl1 = dde::grid_kl(log_p, dde::evaluate(s, pts));
  EXPECT_LT(kl1, 0.5 * kl0) << "KL before " << kl0 << ", after " << kl1;
}

TEST(DdeTraining, GeneratorMmdFalls) {
  manual_seed(21);
  Generator g(22);
  auto toy = data::make_toy("8gaussians");
  const double sigma = 0.2;
  models::ResidualMLP sp(2, 32, 6, 1), sq(2, 32, 6, 1);
  models::ResidualMLP gen(2, 32, 4, 2, /*residual_output=*/true);
  nn::Adam osp(sp.parameters(), {.lr = 3e-3}), osq(sq.parameters(), {.lr = 3e-3}), og(gen.parameters(), {.lr = 1e-2});
  train_dde(sp, osp, [&] { return toy->sample(512, &g); }, sigma, 300, g);
  for (auto& p : sp.parameters()) p.requires_grad_(false);
  Generator eval_gen(5);
  Tensor data_pts = toy->sample(1000, &eval_gen);
  auto mmd = [&] {
    NoGrad ng;
    Generator zg(6);
    return dde::mmd2_rbf(gen(randn({1000, 2}, {}, &zg)), data_pts, 0.5);
  };
  double m0 = mmd();
  // Algorithm 1, line 2: fit s_q to the initial generator first
  train_dde(sq, osq, [&] { NoGrad ng; return gen(randn({512, 2}, {}, &g)); }, sigma, 150, g);
  for (int it = 0; it < 300; ++it) {
    train_dde(sq, osq, [&] { NoGrad ng; return gen(randn({512, 2}, {}, &g)); }, sigma, 5, g);
    og.zero_grad();
    dde::generator_loss(sq, sp, gen(randn({512, 2}, {}, &g)), sigma, &g).backward();
    og.step();
  }
  double m1 = mmd();
  EXPECT_LT(m1, 0.7 * m0) << "MMD^2 before " << m0 << ", after " << m1;
}

TEST(DdeTraining, ImportanceSampledLikelihoodOfAGaussianIsNearExact) {
  manual_seed(31);
  Generator g(32);
  const int64_t D = 3;
  const double sigma = 0.1;
  // data ~ N(mu, diag(sd^2)); the DDE's minimiser is log N(mu, diag(sd^2 + sigma^2)) + C
  std::vector<double> mu{0.5, -1.0, 0.2}, sd{1.0, 0.6, 1.4};
  auto sample = [&](int64_t n, Generator& gen) {
    Tensor z = randn({n, D}, {.dtype = DType::f64}, &gen);
    return add(mul(z, from_vector(sd, {D})), from_vector(mu, {D})).to(DType::f32);
  };
  models::ResidualMLP s(D, 32, 4, 1);
  nn::Adam opt(s.parameters(), {.lr = 3e-3});
  train_dde(s, opt, [&] { return sample(512, g); }, sigma, 1200, g);
  Tensor test = sample(2000, g);
  std::vector<double> var_v;
  for (double v : sd) var_v.push_back(v * v + sigma * sigma);
  Tensor mean = from_vector(mu, {D}), var = from_vector(var_v, {D});
  std::vector<double> lz = dde::log_partition(s, mean, var, 2, 20000, &g);
  double log_z = 0.5 * (lz[0] + lz[1]);
  double ll = dde::evaluate(s, test).mean().item() - log_z;
  double exact = 0;
  auto tv = test.to_vector<double>();
  for (int64_t i = 0; i < 2000; ++i)
    for (int64_t k = 0; k < D; ++k) {
      double d = tv[i * D + k] - mu[k];
      exact += -0.5 * d * d / var_v[k] - 0.5 * std::log(2 * M_PI * var_v[k]);
    }
  exact /= 2000;
  EXPECT_NEAR(ll, exact, 0.25) << "importance-sampled " << ll << " vs exact " << exact;
  EXPECT_LT(std::abs(lz[0] - lz[1]), 0.05);  // the two estimates of log Z agree
}

TEST(DdeTraining, MetricsAreRight) {
  // grid KL of a density with itself is 0 and positive otherwise; MMD^2 of a set with itself is 0
  Tensor a = tensor({0.0, -1.0, -2.0}), b = tensor({-2.0, -1.0, 0.0});
  EXPECT_NEAR(dde::grid_kl(a, a), 0.0, 1e-12);
  EXPECT_GT(dde::grid_kl(a, b), 0.1);
  Tensor x = randn({50, 2});
  EXPECT_NEAR(dde::mmd2_rbf(x, x, 0.5), 0.0, 1e-12);
  EXPECT_GT(dde::mmd2_rbf(x, add(x, 3.0), 0.5), 0.1);
  // toy densities integrate to ~1 over their window
  for (const char* name : {"checkerboard", "8gaussians", "2spirals"}) {
    auto toy = data::make_toy(name);
    const int64_t n = 200;
    Tensor pts = grid(toy->extent(), n);
    double cell = std::pow(2 * toy->extent() / n, 2);
    double mass = exp(toy->log_density(pts, 0.2)).sum().item() * cell;
    EXPECT_NEAR(mass, 1.0, 0.02) << name;
  }
}
