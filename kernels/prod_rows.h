// The per-row routines behind prod's derivatives, shared by the CPU (ops/reduce.cpp, one row per
// task) and the GPU (kernels/cuda/scan.cu, one row per thread): the same arithmetic in the same
// order on both, with f64 accumulators and a caller-provided f64 scratch row.
#pragma once
#include <cstdint>

#include "ember/kernels/host_device.h"

namespace ember::kernels {

// o_j = prod_{k != j} x_k, from exclusive prefix and suffix products: exact when x has zeros
// (no division). pre: n doubles of scratch.
template <typename T>
EMBER_HD void prod_others_row(const T* x, T* o, int64_t n, double* pre) {
  double acc = 1;
  for (int64_t i = 0; i < n; ++i) {
    pre[i] = acc;
    acc *= static_cast<double>(x[i]);
  }
  acc = 1;
  for (int64_t i = n - 1; i >= 0; --i) {
    o[i] = static_cast<T>(pre[i] * acc);
    acc *= static_cast<double>(x[i]);
  }
}

// r_j = sum_{i != j} w_i prod_{k != i, j} x_k, exact when x has zeros (the adjoint of
// prod_others_row). e: n doubles of scratch.
template <typename T>
EMBER_HD void prod_others_backward_row(const T* x, const T* w, T* r, int64_t n, double* e) {
  // e_i: product of the nonzero elements other than x_i (zeros count as 1).
  double acc = 1;
  for (int64_t i = 0; i < n; ++i) {
    e[i] = acc;
    if (x[i] != T(0)) acc *= static_cast<double>(x[i]);
  }
  acc = 1;
  int64_t zeros = 0, p = -1, q = -1;
  for (int64_t i = n - 1; i >= 0; --i) {
    e[i] *= acc;
    if (x[i] != T(0)) {
      acc *= static_cast<double>(x[i]);
    } else {
      ++zeros;
      q = p;
      p = i;
    }
  }
  for (int64_t j = 0; j < n; ++j) r[j] = T(0);
  if (zeros == 0) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += mul_rn(static_cast<double>(w[i]), e[i]);
    for (int64_t j = 0; j < n; ++j)
      r[j] = static_cast<T>((s - mul_rn(static_cast<double>(w[j]), e[j])) / static_cast<double>(x[j]));
  } else if (zeros == 1) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i)
      if (i != p) {
        s += mul_rn(static_cast<double>(w[i]), e[i]);
        r[i] = static_cast<T>(static_cast<double>(w[p]) * e[i]);
      }
    r[p] = static_cast<T>(s);
  } else if (zeros == 2) {
    const double rest = e[p];  // the product of the nonzero elements
    r[p] = static_cast<T>(static_cast<double>(w[q]) * rest);
    r[q] = static_cast<T>(static_cast<double>(w[p]) * rest);
  }
}

}  // namespace ember::kernels
