// Denoising density estimators (Bigdeli et al., "Learning Generative Models Using Denoising
// Density Estimators", IEEE TNNLS 2024): the losses, the likelihood estimate and the metrics.
#pragma once
#include "ember/engine/random.h"
#include "ember/nn/module.h"

namespace ember::models::dde {

// One evaluation of a DDE at noisy points: s(x~) and its input gradient, recorded
// (create_graph) so a loss on the gradient trains s's parameters.
struct ScoreAt {
  Tensor xn;     // the noisy points, a leaf requiring grad
  Tensor s;      // s(x~), [n]
  Tensor grad;   // d s / d x~, [n, d], differentiable
};
ScoreAt score_at(nn::Module& s, const Tensor& xn);

// Eq. 5, L_DDE = E || grad s(x + e) + e / sigma^2 ||^2, computed as the reference code does,
// 0.5 * sum || (x~ + sigma^2 grad s(x~)) - x ||^2 = 0.5 sigma^4 * batch * L_DDE (the same
// minimiser; the scale is what the published hyper-parameters were tuned with).
Tensor dde_loss(nn::Module& s, const Tensor& x, double sigma, Generator* gen = nullptr);
// The same loss with the noise given (e ~ N(0, I), shaped like x; x~ = x + sigma e): what
// dde_loss computes after drawing it, op for op. A captured CUDA graph reads x and e from
// static buffers filled before each replay (models/dde/trainer.cpp, --cuda-graphs).
Tensor dde_loss_given_noise(nn::Module& s, const Tensor& x, const Tensor& noise, double sigma);

// Algorithm 1's generator loss: sum[ s_q(g(z) + e) - s_p(g(z) + e) ], gradient flowing into g.
Tensor generator_loss(nn::Module& s_q, nn::Module& s_p, const Tensor& gz, double sigma, Generator* gen = nullptr);
// The same loss with the noise given (shaped like gz): for CUDA graphs, whose static inputs
// receive the draws made outside the graph.
Tensor generator_loss_given_noise(nn::Module& s_q, nn::Module& s_p, const Tensor& gz, const Tensor& noise,
                                  double sigma);

// log Z of exp(s) by importance sampling from N(mean, diag(var)): `estimates` independent
// estimates of `samples` points each. Returns each log Z_k; combine with logsumexp - log K.
std::vector<double> log_partition(nn::Module& s, const Tensor& mean, const Tensor& var, int64_t estimates = 5,
                                  int64_t samples = 51200, Generator* gen = nullptr);

// KL(p || q) on a grid where p and q are given as unnormalised log densities on the same
// points (each normalised over the grid here).
double grid_kl(const Tensor& log_p, const Tensor& log_q);

// MMD^2 (biased V-statistic) between sample sets [n, d] and [m, d] with an RBF kernel
// exp(-||a - b||^2 / (2 h^2)).
double mmd2_rbf(const Tensor& a, const Tensor& b, double bandwidth);

// s evaluated on points in chunks, without a graph: [n, d] -> [n] (f64).
Tensor evaluate(nn::Module& s, const Tensor& x, int64_t chunk = 8192);

}  // namespace ember::models::dde
