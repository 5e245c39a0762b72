// Tensor metadata, printing and the autograd accessors. Views and math live in ops/.
#include "ember/engine/tensor.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "ember/engine/autograd/engine.h"
#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/copy.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/object_pool.h"

namespace ember {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

Shape contiguous_strides(const Shape& sizes) {
  Shape st(sizes.size());
  int64_t acc = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(sizes[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t n = std::max<int64_t>(ndim, 1);  // a 0-dim tensor accepts dim 0 / -1
  EMBER_CHECK(dim >= -n && dim < n, op, ": dim ", dim, " is out of range for a tensor of ", ndim,
              " dims (expected ", -n, "..", n - 1, ")");
  return dim < 0 ? dim + n : dim;
}

Tensor Tensor::empty(const Shape& sizes, TensorOptions opts) {
  for (int64_t s : sizes) EMBER_CHECK(s >= 0, "empty: negative size in shape ", shape_str(sizes));
  auto impl = make_pooled<TensorImpl>();
  impl->storage = make_pooled<Storage>(shape_numel(sizes) * dtype_size(opts.dtype), opts.device);
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = opts.dtype;
  impl->requires_grad = opts.requires_grad;
  if (opts.requires_grad)
    EMBER_CHECK(is_floating(opts.dtype), "requires_grad needs a floating dtype, got ", dtype_name(opts.dtype));
  return Tensor(std::move(impl));
}

Tensor Tensor::make_view(std::shared_ptr<Storage> storage, Shape sizes, Shape strides, int64_t offset, DType dtype) {
  auto impl = make_pooled<TensorImpl>();
  impl->storage = std::move(storage);
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

void Tensor::throw_undefined() { throw Error("use of an undefined Tensor (default-constructed or moved-from)"); }

int64_t Tensor::dim_out_of_range(const char* what, int64_t d) const {
  EMBER_CHECK(dim() > 0, what, "(", d, "): a 0-dim tensor has no dims (", str(), ")");
  wrap_dim(d, dim(), what);  // throws here (d is out of range), naming the valid range
  EMBER_FAIL(what, "(", d, "): dim out of range for ", str());  // not reached
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  const auto& sz = sizes();
  const auto& st = strides();
  for (size_t i = sz.size(); i-- > 0;) {
    if (sz[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sz[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(sizes()) + " " + device().str();
}

void* Tensor::raw_data() const {
  if (!device().is_cpu()) {
    // CPU kernels read through here, so a GPU tensor reaching one means the op has no CUDA path.
    const char* op = trace::current_op();
    if (op)
      EMBER_FAIL(op, ": this op has no CUDA kernel yet (its input ", str(),
                 " lives on the GPU); move the inputs to the CPU with .to(Device::cpu()) for this op");
    EMBER_FAIL("host access to a tensor on ", device().str(), " (", str(), "): copy it with .to(Device::cpu())");
  }
  return device_data();
}

void* Tensor::device_data() const {
  return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(element_size());
}

double Tensor::item() const {
  EMBER_CHECK(numel() == 1, "item: expected a tensor with one element, got shape ", shape_str(sizes()));
  Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  return dispatch_all(h.dtype(), "item", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return convert<double>(*static_cast<const T*>(h.raw_data()));
  });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  Tensor c = Tensor::empty(h.sizes(), {.dtype = dtype_of<T>::value});
  copy_into(c, h);
  const T* p = static_cast<const T*>(c.raw_data());
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

Tensor& Tensor::requires_grad_(bool on) {
  EMBER_CHECK(is_leaf() || on, "requires_grad_(false) on a non-leaf tensor: use detach() instead");
  EMBER_CHECK(!on || is_floating_point(), "requires_grad_: only floating tensors can require grad, got ",
              dtype_name(dtype()));
  check()->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  auto& g = check()->grad;
  return g ? Tensor(g) : Tensor();
}

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined())
    EMBER_CHECK(g.sizes() == sizes(), "set_grad: gradient of shape ", shape_str(g.sizes()), " for a tensor of shape ",
                shape_str(sizes()));
  check()->grad = g.impl();
}

Tensor Tensor::detach() const {
  Tensor t = make_view(storage(), sizes(), strides(), offset(), dtype());
  return t;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph, bool create_graph) const {
  TensorList grads;
  if (gradient.defined()) grads.push_back(gradient);
  ember::backward({*this}, grads, retain_graph || create_graph, create_graph);
}

// ---- printing: PyTorch-like, summarised beyond 1000 elements ----
namespace {
void print_rec(std::ostream& os, const Tensor& t, const std::vector<double>& vals, bool is_int, int64_t dim,
               int64_t& pos, int indent, bool summarise) {
  const auto& sz = t.sizes();
  if (dim == t.dim()) {
    double v = vals[pos++];
    if (is_int) {
      os << static_cast<int64_t>(v);
    } else {
      std::ostringstream s;
      s << std::setprecision(5) << v;
      os << s.str();
    }
    return;
  }
  os << "[";
  int64_t n = sz[dim];
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= sz[d];
  for (int64_t i = 0; i < n; ++i) {
    if (summarise && n > 6 && i == 3) {
      os << (dim + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      pos += (n - 6) * inner;
      i = n - 3;
    }
    print_rec(os, t, vals, is_int, dim + 1, pos, indent + 1, summarise);
    if (i + 1 < n) os << (dim + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  std::vector<double> vals = t.to_vector<double>();
  bool is_int = !t.is_floating_point();
  bool summarise = t.numel() > 1000;
  int64_t pos = 0;
  os << "tensor(";
  print_rec(os, t, vals, is_int, 0, pos, 7, summarise);
  os << ", " << t.str();
  if (t.grad_fn()) os << ", grad_fn=" << t.grad_fn()->name();
  else if (t.requires_grad()) os << ", requires_grad";
  return os << ")";
}

}  // namespace ember
