// Tensor: a cheap handle (shared impl) to storage + sizes + strides + offset + dtype + device,
// plus the autograd fields (requires_grad, grad, grad_fn). Views share storage.
//
// The view and arithmetic methods declared here are thin conveniences: their definitions
// live with the ops (ops/shape.cpp, ops/elementwise.cpp ...), where each op's forward, shape
// checks and backward are read together.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ember/engine/device.h"
#include "ember/engine/dtype.h"
#include "ember/engine/error.h"
#include "ember/engine/small_vector.h"
#include "ember/engine/storage.h"

namespace ember {

// Sizes, strides, dim lists: up to 6 kept inline (small_vector.h), the ranks ember's models use.
using Shape = SmallVector<int64_t, 6>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& sizes);

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes, strides;  // strides in elements
  int64_t offset = 0;    // in elements
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;  // set on results of recorded ops
  uint32_t output_nr = 0;                   // which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves only
};

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A fresh tensor with its own contiguous storage (uninitialised contents).
  static Tensor empty(const Shape& sizes, TensorOptions opts = {});
  // A view of existing storage.
  static Tensor make_view(std::shared_ptr<Storage> storage, Shape sizes, Shape strides, int64_t offset,
                          DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  TensorImpl* get() const { return impl_.get(); }

  // ---- metadata ----
  const Shape& sizes() const { return check()->sizes; }
  const Shape& shape() const { return sizes(); }
  const Shape& strides() const { return check()->strides; }
  // Dim d counted from the end when negative; out of range is an error naming the tensor. Inline
  // for a dim in range: ops ask for sizes several times each.
  int64_t size(int64_t d) const {
    const Shape& s = sizes();
    const auto n = static_cast<int64_t>(s.size());
    if (d >= -n && d < n) [[likely]] return s[d < 0 ? d + n : d];
    return dim_out_of_range("size", d);
  }
  int64_t stride(int64_t d) const {
    const Shape& s = strides();
    const auto n = static_cast<int64_t>(s.size());
    if (d >= -n && d < n) [[likely]] return s[d < 0 ? d + n : d];
    return dim_out_of_range("stride", d);
  }
  int64_t dim() const { return static_cast<int64_t>(sizes().size()); }
  int64_t numel() const { return shape_numel(sizes()); }
  int64_t offset() const { return check()->offset; }
  DType dtype() const { return check()->dtype; }
  Device device() const { return check()->storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  bool is_contiguous() const;
  bool is_floating_point() const { return is_floating(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return check()->storage; }
  std::string str() const;  // "f32[2, 3] cpu"

  // ---- data ----
  void* raw_data() const;  // host pointer to element 0 of this view (an error for a GPU tensor)
  void* device_data() const;  // pointer to element 0 wherever the tensor lives (for GPU kernels)
  template <typename T>
  T* data() const {
    EMBER_CHECK(dtype_of<T>::value == dtype(), "Tensor::data<", dtype_name(dtype_of<T>::value),
                ">: tensor holds ", dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }
  double item() const;  // the one element, as double
  template <typename T>
  T item() const { return static_cast<T>(item()); }
  template <typename T>
  std::vector<T> to_vector() const;  // all elements in row-major order, converted to T

  // ---- versions (in-place tracking) ----
  uint64_t version() const { return storage()->version(); }
  void bump_version() const { storage()->bump_version(); }

  // ---- autograd ----
  bool requires_grad() const { return check()->requires_grad; }
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return check()->grad_fn == nullptr; }
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<autograd::Node>& grad_fn() const { return check()->grad_fn; }
  Tensor detach() const;  // same storage, no graph
  // backward() of a scalar (or with an explicit gradient); see engine/autograd/engine.h.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false, bool create_graph = false) const;

  // ---- conversion / copies (ops/shape.cpp) ----
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor contiguous() const;
  Tensor clone() const;

  // ---- views (ops/shape.cpp); negative dims count from the end ----
  Tensor reshape(const Shape& sizes) const;  // a view where strides allow, else a copy
  Tensor view(const Shape& sizes) const;     // a view or an error
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor expand(const Shape& sizes) const;  // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const { return slice(dim, start, start + length); }
  Tensor select(int64_t dim, int64_t index) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor operator[](int64_t index) const { return select(0, index); }

  // ---- common math as methods (ops/) ----
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor square() const;
  Tensor pow(double exponent) const;
  Tensor matmul(const Tensor& other) const;

  // ---- in place, never recorded by autograd (optimizers, initialisers; ops/inplace.cpp) ----
  // They refuse a tensor that requires grad while grad mode is on, and bump the version.
  Tensor& zero_();
  Tensor& fill_(double value);
  Tensor& copy_(const Tensor& src);               // broadcasts src; converts dtype
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);
  Tensor& mul_(const Tensor& other);

 private:
  TensorImpl* check() const {
    if (!impl_) [[unlikely]] throw_undefined();
    return impl_.get();
  }
  [[noreturn]] static void throw_undefined();
  [[noreturn]] int64_t dim_out_of_range(const char* what, int64_t d) const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Normalises a possibly negative dim against a rank; names `op` in the error.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

// An op's inputs, outputs and gradients: a few, kept inline (small_vector.h). Long lists (a
// model's parameters) are std::vector<Tensor>, which converts to a TensorList where one is asked.
using TensorList = SmallVector<Tensor, 4>;

}  // namespace ember
