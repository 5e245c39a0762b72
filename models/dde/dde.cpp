#include "ember/models/dde/dde.h"

#include <cmath>
#include <numbers>

#include "ember/engine/autograd/engine.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember::models::dde {

ScoreAt score_at(nn::Module& s, const Tensor& xn_in) {
  Tensor xn = xn_in.detach();
  xn.requires_grad_(true);
  Tensor out = s(xn);
  EMBER_CHECK(out.dim() == 2 && out.size(1) == 1, "DDE: the network must output [n, 1], got ", shape_str(out.sizes()));
  Tensor g = grad({sum(out)}, {xn}, {}, {.create_graph = true})[0];
  return {xn, out.reshape({-1}), g};
}

Tensor dde_loss(nn::Module& s, const Tensor& x, double sigma, Generator* gen) {
  return dde_loss_given_noise(s, x, randn_like(x, gen), sigma);
}

Tensor dde_loss_given_noise(nn::Module& s, const Tensor& x, const Tensor& noise, double sigma) {
  EMBER_CHECK(noise.sizes() == x.sizes(), "dde_loss: noise of shape ", shape_str(noise.sizes()), " for points of shape ",
              shape_str(x.sizes()));
  Tensor xn = add(x, mul(noise, sigma));
  ScoreAt at = score_at(s, xn);
  // x~ + sigma^2 grad s(x~) is the denoised estimate (Tweedie); its error against x is eq. 5.
  Tensor denoised = add(at.xn, mul(at.grad, sigma * sigma));
  return mul(sum(square(sub(denoised, x))), 0.5);
}

Tensor generator_loss(nn::Module& s_q, nn::Module& s_p, const Tensor& gz, double sigma, Generator* gen) {
  return generator_loss_given_noise(s_q, s_p, gz, randn_like(gz, gen), sigma);
}

Tensor generator_loss_given_noise(nn::Module& s_q, nn::Module& s_p, const Tensor& gz, const Tensor& noise,
                                  double sigma) {
  Tensor gn = add(gz, mul(noise, sigma));
  return sum(sub(s_q(gn), s_p(gn)));
}

// Points go to the network's device chunk by chunk; the values come back to the CPU in f64.
Tensor evaluate(nn::Module& s, const Tensor& x, int64_t chunk) {
  NoGrad ng;
  const Device dev = s.device();
  TensorList parts;
  for (int64_t b = 0; b < x.size(0); b += chunk)
    parts.push_back(
        s(x.slice(0, b, std::min(x.size(0), b + chunk)).to(dev)).reshape({-1}).to(Device::cpu()).to(DType::f64));
  return cat(parts, 0);
}

std::vector<double> log_partition(nn::Module& s, const Tensor& mean, const Tensor& var, int64_t estimates,
                                  int64_t samples, Generator* gen) {
  const int64_t d = mean.numel();
  DType dt = s.parameters().empty() ? DType::f32 : s.parameters()[0].dtype();
  Tensor mu = mean.to(DType::f64).reshape({1, d}), sd = sqrt(var.to(DType::f64)).reshape({1, d});
  const double log_norm = -0.5 * static_cast<double>(d) * std::log(2 * std::numbers::pi) - sum(log(sd)).item();
  std::vector<double> out;
  for (int64_t k = 0; k < estimates; ++k) {
    Tensor z = randn({samples, d}, {.dtype = DType::f64}, gen);
    Tensor y = add(mu, mul(z, sd));
    Tensor log_q = add(mul(sum(square(z), {1}), -0.5), log_norm);
    Tensor w = sub(evaluate(s, y.to(dt)), log_q);  // log of exp(s(y)) / q(y)
    auto wv = w.to_vector<double>();
    double m = -INFINITY;
    for (double v : wv) m = std::max(m, v);
    double acc = 0;
    for (double v : wv) acc += std::exp(v - m);
    out.push_back(m + std::log(acc) - std::log(static_cast<double>(samples)));
  }
  return out;
}

double grid_kl(const Tensor& log_p, const Tensor& log_q) {
  auto p = log_p.to_vector<double>(), q = log_q.to_vector<double>();
  EMBER_CHECK(p.size() == q.size() && !p.empty(), "grid_kl: ", p.size(), " vs ", q.size(), " grid values");
  auto normalise = [](std::vector<double>& v) {
    double m = -INFINITY;
    for (double x : v) m = std::max(m, x);
    double s = 0;
    for (double x : v) s += std::exp(x - m);
    double lz = m + std::log(s);
    for (double& x : v) x -= lz;
  };
  normalise(p);
  normalise(q);
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (std::isfinite(p[i])) kl += std::exp(p[i]) * (p[i] - q[i]);
  return kl;
}

double mmd2_rbf(const Tensor& a, const Tensor& b, double h) {
  EMBER_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "mmd2_rbf: sample sets ", shape_str(a.sizes()),
              " and ", shape_str(b.sizes()), " must be [n, d] with one d");
  const int64_t d = a.size(1);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  const double inv = -1.0 / (2 * h * h);
  // mean kernel value between two sets, rows split over the threads
  auto mean_k = [&](const std::vector<double>& x, int64_t n, const std::vector<double>& y, int64_t m) {
    std::vector<double> rows(n);
    kernels::cpu::parallel_for(0, n, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < m; ++j) {
          double dist = 0;
          for (int64_t k = 0; k < d; ++k) {
            double t = x[i * d + k] - y[j * d + k];
            dist += t * t;
          }
          acc += std::exp(dist * inv);
        }
        rows[i] = acc;
      }
    });
    double s = 0;
    for (double v : rows) s += v;
    return s / (static_cast<double>(n) * static_cast<double>(m));
  };
  const int64_t n = a.size(0), m = b.size(0);
  return mean_k(av, n, av, n) + mean_k(bv, m, bv, m) - 2 * mean_k(av, n, bv, m);
}

}  // namespace ember::models::dde
