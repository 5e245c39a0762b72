#include "ember/nn/data/toy.h"

#include <cmath>
#include <functional>
#include <numbers>

#include "ember/engine/factory.h"

namespace ember::data {

namespace {
constexpr double kPi = std::numbers::pi;

double log_normal_2d_iso(double dx, double dy, double var) {
  return -(dx * dx + dy * dy) / (2 * var) - std::log(2 * kPi * var);
}

double logsumexp(const std::vector<double>& v) {
  double m = -INFINITY;
  for (double x : v) m = std::max(m, x);
  if (!std::isfinite(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

std::vector<double> uniforms(int64_t n, Generator* gen) { return rand({n}, {.dtype = DType::f64}, gen).to_vector<double>(); }
std::vector<double> normals(int64_t n, Generator* gen) { return randn({n}, {.dtype = DType::f64}, gen).to_vector<double>(); }

Tensor finish(std::vector<double> v, int64_t n, int64_t d, DType dt) { return from_vector(v, {n, d}, {.dtype = dt}); }

void check_x(const Tensor& x, int64_t dim, const std::string& name) {
  EMBER_CHECK(x.dim() == 2 && x.size(1) == dim, name, ".log_density: expected points of shape [n, ", dim, "], got ",
              shape_str(x.sizes()));
}

// Isotropic-or-diagonal Gaussian mixture in 1 or 2 dims: closed form at every sigma.
class GaussianMixture : public ToyDataset {
 public:
  struct Comp {
    double w, mx, my, sx, sy;
  };
  GaussianMixture(std::string name, int64_t dim, double extent, std::vector<Comp> comps)
      : ToyDataset(std::move(name), dim, extent), comps_(std::move(comps)) {
    double tot = 0;
    for (auto& c : comps_) tot += c.w;
    for (auto& c : comps_) c.w /= tot;
  }
  Tensor sample(int64_t n, Generator* gen, DType dt) const override {
    auto u = uniforms(n, gen);
    auto z = normals(n * dim_, gen);
    std::vector<double> out(n * dim_);
    for (int64_t i = 0; i < n; ++i) {
      size_t k = 0;
      double acc = comps_[0].w;
      while (u[i] > acc && k + 1 < comps_.size()) acc += comps_[++k].w;
      const Comp& c = comps_[k];
      out[i * dim_] = c.mx + c.sx * z[i * dim_];
      if (dim_ == 2) out[i * 2 + 1] = c.my + c.sy * z[i * 2 + 1];
    }
    return finish(out, n, dim_, dt);
  }
  Tensor log_density(const Tensor& x, double sigma) const override {
    check_x(x, dim_, name_);
    auto xv = x.to_vector<double>();
    const int64_t n = x.size(0);
    std::vector<double> out(n), terms(comps_.size());
    for (int64_t i = 0; i < n; ++i) {
      for (size_t k = 0; k < comps_.size(); ++k) {
        const Comp& c = comps_[k];
        double vx = c.sx * c.sx + sigma * sigma, dx = xv[i * dim_] - c.mx;
        double lp = std::log(c.w) - dx * dx / (2 * vx) - 0.5 * std::log(2 * kPi * vx);
        if (dim_ == 2) {
          double vy = c.sy * c.sy + sigma * sigma, dy = xv[i * 2 + 1] - c.my;
          lp += -dy * dy / (2 * vy) - 0.5 * std::log(2 * kPi * vy);
        }
        terms[k] = lp;
      }
      out[i] = logsumexp(terms);
    }
    return from_vector(out, {n});
  }

 private:
  std::vector<Comp> comps_;
};

// 8 squares of side 2 in a 4x4 checker pattern on [-4, 4]^2, uniform on them (density 1/32).
// Smoothing a box by a Gaussian gives a product of normal-CDF differences.
class Checkerboard : public ToyDataset {
 public:
  Checkerboard() : ToyDataset("checkerboard", 2, 4.5) {}
  Tensor sample(int64_t n, Generator* gen, DType dt) const override {
    auto u = uniforms(3 * n, gen);
    std::vector<double> out(2 * n);
    for (int64_t i = 0; i < n; ++i) {
      // choose one of the 8 squares uniformly, then a uniform point in it
      int sq = std::min(7, static_cast<int>(u[3 * i] * 8));
      int col = sq % 4, row = sq / 4;  // row 0/1 within a column pair
      int cell_y = 2 * row + (col % 2 == 0 ? 1 : 0);
      out[2 * i] = -4 + 2 * col + 2 * u[3 * i + 1];
      out[2 * i + 1] = -4 + 2 * cell_y + 2 * u[3 * i + 2];
    }
    return finish(out, n, 2, dt);
  }
  Tensor log_density(const Tensor& x, double sigma) const override {
    check_x(x, 2, name_);
    auto xv = x.to_vector<double>();
    const int64_t n = x.size(0);
    std::vector<double> out(n);
    auto mass = [sigma](double v, double a, double b) {
      if (sigma == 0) return (v >= a && v < b) ? 1.0 : 0.0;
      const double s = sigma * std::numbers::sqrt2;
      return 0.5 * (std::erf((b - v) / s) - std::erf((a - v) / s));
    };
    for (int64_t i = 0; i < n; ++i) {
      double p = 0;
      for (int col = 0; col < 4; ++col)
        for (int row = 0; row < 2; ++row) {
          int cell_y = 2 * row + (col % 2 == 0 ? 1 : 0);
          double ax = -4 + 2 * col, ay = -4 + 2 * cell_y;
          // density 1/32 = (1/8 per square) / (area 4)
          p += mass(xv[2 * i], ax, ax + 2) * mass(xv[2 * i + 1], ay, ay + 2) / 32.0;
        }
      out[i] = std::log(std::max(p, 1e-300));
    }
    return from_vector(out, {n});
  }
};

// Points on weighted curves c_k(t) plus isotropic Gaussian noise of std `noise`. The smoothed
// density is an integral over t of Gaussians with variance noise^2 + sigma^2, evaluated by a
// midpoint rule over the curve parameter's own distribution (nodes t_j = inverse CDF at
// (j + 1/2) / nodes) — exact up to a quadrature error far below the estimators' error.
class NoisyCurves : public ToyDataset {
 public:
  using Curve = std::function<std::pair<double, double>(double u, int branch)>;  // u in [0,1)
  NoisyCurves(std::string name, double extent, int branches, double noise, Curve c, int nodes = 1500)
      : ToyDataset(std::move(name), 2, extent), branches_(branches), noise_(noise), curve_(std::move(c)) {
    for (int b = 0; b < branches; ++b)
      for (int j = 0; j < nodes; ++j) nodes_.push_back(curve_((j + 0.5) / nodes, b));
  }
  bool has_exact_density() const override { return false; }
  Tensor sample(int64_t n, Generator* gen, DType dt) const override {
    auto u = uniforms(2 * n, gen);
    auto z = normals(2 * n, gen);
    std::vector<double> out(2 * n);
    for (int64_t i = 0; i < n; ++i) {
      int b = std::min(branches_ - 1, static_cast<int>(u[2 * i] * branches_));
      auto [px, py] = curve_(u[2 * i + 1], b);
      out[2 * i] = px + noise_ * z[2 * i];
      out[2 * i + 1] = py + noise_ * z[2 * i + 1];
    }
    return finish(out, n, 2, dt);
  }
  Tensor log_density(const Tensor& x, double sigma) const override {
    check_x(x, 2, name_);
    const double var = noise_ * noise_ + sigma * sigma;
    EMBER_CHECK(var > 0, name_, ": the density of noise-free curve data is not defined; use sigma > 0");
    auto xv = x.to_vector<double>();
    const int64_t n = x.size(0);
    std::vector<double> out(n);
    const double log_w = -std::log(static_cast<double>(nodes_.size()));
    std::vector<double> terms(nodes_.size());
    for (int64_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < nodes_.size(); ++j)
        terms[j] = log_w + log_normal_2d_iso(xv[2 * i] - nodes_[j].first, xv[2 * i + 1] - nodes_[j].second, var);
      out[i] = logsumexp(terms);
    }
    return from_vector(out, {n});
  }

 private:
  int branches_;
  double noise_;
  Curve curve_;
  std::vector<std::pair<double, double>> nodes_;
};

// von Mises angle density on [-pi, pi) with mean 0, concentration kappa, by its inverse CDF
// tabulated once (the quadrature nodes and the sampler share it).
class VonMisesRing : public ToyDataset {
 public:
  VonMisesRing() : ToyDataset("vonmises", 2, 3.0) {
    const int grid = 20000;
    cdf_.resize(grid + 1);
    double acc = 0;
    cdf_[0] = 0;
    for (int i = 0; i < grid; ++i) {
      double th = -kPi + (i + 0.5) * 2 * kPi / grid;
      acc += std::exp(kappa_ * std::cos(th));
      cdf_[i + 1] = acc;
    }
    for (auto& c : cdf_) c /= acc;
    inner_ = std::make_unique<NoisyCurves>("vonmises", 3.0, 1, noise_, [this](double u, int) {
      double th = inverse_cdf(u);
      return std::make_pair(radius_ * std::cos(th), radius_ * std::sin(th));
    });
  }
  bool has_exact_density() const override { return false; }
  Tensor sample(int64_t n, Generator* gen, DType dt) const override { return inner_->sample(n, gen, dt); }
  Tensor log_density(const Tensor& x, double sigma) const override { return inner_->log_density(x, sigma); }

 private:
  double inverse_cdf(double u) const {
    size_t lo = 0, hi = cdf_.size() - 1;
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      (cdf_[mid] <= u ? lo : hi) = mid;
    }
    double f = (u - cdf_[lo]) / std::max(cdf_[hi] - cdf_[lo], 1e-300);
    return -kPi + (static_cast<double>(lo) + f) * 2 * kPi / static_cast<double>(cdf_.size() - 1);
  }
  double kappa_ = 2.0, radius_ = 2.0, noise_ = 0.1;
  std::vector<double> cdf_;
  std::unique_ptr<NoisyCurves> inner_;
};

}  // namespace

std::vector<std::string> toy_names() {
  return {"checkerboard", "8gaussians", "25gaussians", "2spirals", "rings", "swissroll", "moons", "mixture",
          "vonmises", "1d-mixture"};
}

std::unique_ptr<ToyDataset> make_toy(const std::string& name) {
  if (name == "checkerboard") return std::make_unique<Checkerboard>();
  if (name == "8gaussians") {
    std::vector<GaussianMixture::Comp> c;
    const double r = 2 * std::numbers::sqrt2, s = 0.5 / std::numbers::sqrt2;
    for (int k = 0; k < 8; ++k) c.push_back({1, r * std::cos(k * kPi / 4), r * std::sin(k * kPi / 4), s, s});
    return std::make_unique<GaussianMixture>(name, 2, 4.0, c);
  }
  if (name == "25gaussians") {
    std::vector<GaussianMixture::Comp> c;
    for (int i = -2; i <= 2; ++i)
      for (int j = -2; j <= 2; ++j) c.push_back({1, 1.5 * i, 1.5 * j, 0.15, 0.15});
    return std::make_unique<GaussianMixture>(name, 2, 4.0, c);
  }
  if (name == "mixture") {
    // Two components with unequal, axis-aligned covariances and unequal weights.
    return std::make_unique<GaussianMixture>(name, 2, 4.0,
                                             std::vector<GaussianMixture::Comp>{{0.6, -1.2, 0.5, 0.5, 1.0},
                                                                                {0.4, 1.5, -0.8, 0.9, 0.35}});
  }
  if (name == "1d-mixture") {
    return std::make_unique<GaussianMixture>(name, 1, 4.0,
                                             std::vector<GaussianMixture::Comp>{{0.3, -2.0, 0, 0.3, 1},
                                                                                {0.5, 0.5, 0, 0.6, 1},
                                                                                {0.2, 2.5, 0, 0.25, 1}});
  }
  if (name == "2spirals") {
    // t = 3 pi sqrt(u): points spread evenly along the arc; two branches mirrored.
    return std::make_unique<NoisyCurves>(name, 4.0, 2, 0.1, [](double u, int b) {
      double t = 3 * kPi * std::sqrt(u), sgn = b == 0 ? 1.0 : -1.0;
      return std::make_pair(sgn * -std::cos(t) * t / 3.0, sgn * std::sin(t) * t / 3.0);
    });
  }
  if (name == "rings") {
    return std::make_unique<NoisyCurves>(name, 4.0, 4, 0.08, [](double u, int b) {
      double r = 0.8 * (b + 1), th = 2 * kPi * u;
      return std::make_pair(r * std::cos(th), r * std::sin(th));
    });
  }
  if (name == "swissroll") {
    return std::make_unique<NoisyCurves>(name, 4.0, 1, 0.1, [](double u, int) {
      double t = 1.5 * kPi * (1 + 2 * u);
      return std::make_pair(t * std::cos(t) / 4.0, t * std::sin(t) / 4.0);
    });
  }
  if (name == "moons") {
    return std::make_unique<NoisyCurves>(name, 3.5, 2, 0.1, [](double u, int b) {
      double th = kPi * u;
      if (b == 0) return std::make_pair(2 * std::cos(th) - 1.0, 2 * std::sin(th) - 0.5);
      return std::make_pair(2 * (1 - std::cos(th)) - 1.0, 2 * (0.5 - std::sin(th)) - 0.5);
    });
  }
  if (name == "vonmises") return std::make_unique<VonMisesRing>();
  std::string all;
  for (auto& n : toy_names()) all += (all.empty() ? "" : ", ") + n;
  EMBER_FAIL("unknown toy data set '", name, "'; known: ", all);
}

}  // namespace ember::data
