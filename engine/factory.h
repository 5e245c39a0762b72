// Factories: tensors filled with constants, ranges, identity, and tensors made from host data.
// Random factories are in engine/random.h.
#pragma once
#include <vector>

#include "ember/engine/tensor.h"

namespace ember {

Tensor empty(const Shape& sizes, TensorOptions opts = {});
Tensor zeros(const Shape& sizes, TensorOptions opts = {});
Tensor ones(const Shape& sizes, TensorOptions opts = {});
Tensor full(const Shape& sizes, double value, TensorOptions opts = {});
Tensor scalar_tensor(double value, TensorOptions opts = {});  // 0-dim
Tensor arange(double end, TensorOptions opts = {});
Tensor arange(double start, double end, double step = 1.0, TensorOptions opts = {});
Tensor linspace(double start, double end, int64_t steps, TensorOptions opts = {});
Tensor eye(int64_t n, TensorOptions opts = {});
Tensor eye(int64_t n, int64_t m, TensorOptions opts = {});

// *_like: same shape, dtype and device as `t` unless opts say otherwise.
TensorOptions options_of(const Tensor& t);
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);

// From host data (copied). The element type picks the dtype unless opts.dtype differs,
// in which case the values are converted.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, TensorOptions opts);
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes) {
  TensorOptions o;
  o.dtype = dtype_of<T>::value;
  return from_vector(values, sizes, o);
}
// tensor({1, 2, 3}) -> f32[3];  tensor({...}, {2, 2}) -> f32[2, 2]
Tensor tensor(std::initializer_list<double> values, const Shape& sizes = {}, TensorOptions opts = {});

}  // namespace ember
