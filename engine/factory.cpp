#include "ember/engine/factory.h"

#include <cmath>

#include "ember/engine/copy.h"
#include "ember/engine/dispatch.h"

namespace ember {

Tensor empty(const Shape& sizes, TensorOptions opts) { return Tensor::empty(sizes, opts); }

Tensor full(const Shape& sizes, double value, TensorOptions opts) {
  bool rg = opts.requires_grad;
  opts.requires_grad = false;
  Tensor t = Tensor::empty(sizes, opts);
  fill_tensor(t, value);
  if (rg) t.requires_grad_(true);
  return t;
}
Tensor zeros(const Shape& sizes, TensorOptions opts) { return full(sizes, 0.0, opts); }
Tensor ones(const Shape& sizes, TensorOptions opts) { return full(sizes, 1.0, opts); }
Tensor scalar_tensor(double value, TensorOptions opts) { return full({}, value, opts); }

Tensor arange(double end, TensorOptions opts) { return arange(0, end, 1, opts); }

Tensor arange(double start, double end, double step, TensorOptions opts) {
  EMBER_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
              "arange: start ", start, ", end ", end, ", step ", step, " must be finite with step != 0");
  EMBER_CHECK((end - start) / step >= 0, "arange: step ", step, " moves away from end (start ", start, ", end ", end, ")");
  int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  Tensor t = Tensor::empty({n}, {.dtype = opts.dtype, .device = Device::cpu()});
  dispatch_numeric(opts.dtype, "arange", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  if (!opts.device.is_cpu()) t = t.to(opts.device);
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor linspace(double start, double end, int64_t steps, TensorOptions opts) {
  EMBER_CHECK(steps >= 0, "linspace: steps must be >= 0, got ", steps);
  Tensor t = Tensor::empty({steps}, {.dtype = opts.dtype});
  dispatch_floating(opts.dtype, "linspace", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = t.data<T>();
    double h = steps > 1 ? (end - start) / static_cast<double>(steps - 1) : 0.0;
    // Fill from both ends so the last value is exactly `end`, as NumPy does.
    for (int64_t i = 0; i < steps; ++i)
      p[i] = static_cast<T>(2 * i < steps ? start + h * static_cast<double>(i)
                                          : end - h * static_cast<double>(steps - 1 - i));
  });
  if (!opts.device.is_cpu()) t = t.to(opts.device);
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor eye(int64_t n, TensorOptions opts) { return eye(n, n, opts); }
Tensor eye(int64_t n, int64_t m, TensorOptions opts) {
  Tensor t = zeros({n, m}, {.dtype = opts.dtype});
  dispatch_all(opts.dtype, "eye", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(t.raw_data());
    for (int64_t i = 0; i < std::min(n, m); ++i) p[i * m + i] = convert<T>(1.0);
  });
  if (!opts.device.is_cpu()) t = t.to(opts.device);
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

TensorOptions options_of(const Tensor& t) { return {.dtype = t.dtype(), .device = t.device()}; }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), options_of(t)); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), options_of(t)); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), options_of(t)); }
Tensor full_like(const Tensor& t, double value) { return full(t.sizes(), value, options_of(t)); }

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, TensorOptions opts) {
  EMBER_CHECK(static_cast<int64_t>(values.size()) == shape_numel(sizes), "from_vector: ", values.size(),
              " values do not fill shape ", shape_str(sizes));
  Tensor src = Tensor::empty(sizes, {.dtype = dtype_of<T>::value});
  T* p = static_cast<T*>(src.raw_data());
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  Tensor out = src;
  if (opts.dtype != src.dtype()) {
    out = Tensor::empty(sizes, {.dtype = opts.dtype});
    copy_into(out, src);
  }
  if (!opts.device.is_cpu()) out = out.to(opts.device);
  if (opts.requires_grad) out.requires_grad_(true);
  return out;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, TensorOptions);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, TensorOptions);

Tensor tensor(std::initializer_list<double> values, const Shape& sizes, TensorOptions opts) {
  Shape s = sizes.empty() ? Shape{static_cast<int64_t>(values.size())} : sizes;
  return from_vector(std::vector<double>(values), s, opts);
}

}  // namespace ember
