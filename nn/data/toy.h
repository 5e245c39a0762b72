// Toy data sets generated in code from a seed: 2-D sets of the DDE, FFJORD and
// data-mollification papers, and 1-D mixtures. Each knows its density where it has one in
// closed form, and every one gives the density of the data smoothed by N(0, sigma^2 I),
// log p~_sigma(x), exactly or by fine quadrature along the curve the data lie on; DDE's
// minimiser is log p~_sigma + C, so trainers score against it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ember/engine/random.h"
#include "ember/engine/tensor.h"

namespace ember::data {

class ToyDataset {
 public:
  virtual ~ToyDataset() = default;
  const std::string& name() const { return name_; }
  int64_t dim() const { return dim_; }
  // n samples, shape [n, dim].
  virtual Tensor sample(int64_t n, Generator* gen = nullptr, DType dtype = DType::f32) const = 0;
  // log p~_sigma(x) for x [n, dim] (f64 result [n]); sigma = 0 gives the data density itself,
  // which only sets with a closed-form density support (has_exact_density()).
  virtual Tensor log_density(const Tensor& x, double sigma) const = 0;
  virtual bool has_exact_density() const { return true; }
  // Half-width of a square window that holds nearly all the mass (for plots and grids).
  double extent() const { return extent_; }

 protected:
  ToyDataset(std::string name, int64_t dim, double extent) : name_(std::move(name)), dim_(dim), extent_(extent) {}
  std::string name_;
  int64_t dim_;
  double extent_;
};

// checkerboard, 8gaussians, 25gaussians, 2spirals, rings, swissroll, moons, mixture (a
// 2-component Gaussian mixture with unequal covariances), vonmises (a ring with a von Mises
// angle), 1d-mixture (three 1-D Gaussians).
std::unique_ptr<ToyDataset> make_toy(const std::string& name);
std::vector<std::string> toy_names();

}  // namespace ember::data
