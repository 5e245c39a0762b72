// Reductions. The kernel sees the input as [outer, reduced] rows after moving the reduced dims
// last (a copy only when they are not already innermost); reducing leading dims of a
// contiguous tensor (bias gradients: [batch, features] -> [features]) accumulates whole rows
// instead, which vectorises. f32 sums accumulate in f64.
#include "ember/ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/shape.h"

namespace ember {

using autograd::record;

namespace {

// Sorted, unique, non-negative reduced dims; all dims when `dims` is empty.
std::vector<int64_t> normalize_dims(const Shape& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  EMBER_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dim repeated in ", shape_str(dims));
  if (ndim == 0) out.clear();
  return out;
}

Shape reduced_shape(const Shape& sizes, const std::vector<int64_t>& rd, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(sizes.size()); ++d) {
    bool r = std::find(rd.begin(), rd.end(), d) != rd.end();
    if (!r) out.push_back(sizes[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

}  // namespace

// The input as a contiguous [outer, inner] matrix with the reduced dims innermost.
// Exposed to the other reductions in this file.
struct Rows {
  Tensor data;  // contiguous
  int64_t outer = 1, inner = 1;
};

static Rows to_rows(const Tensor& a, const std::vector<int64_t>& rd) {
  Shape perm;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (std::find(rd.begin(), rd.end(), d) == rd.end()) perm.push_back(d);
  Rows r;
  for (int64_t d : perm) r.outer *= a.sizes()[d];
  for (int64_t d : rd) {
    perm.push_back(d);
    r.inner *= a.sizes()[d];
  }
  r.data = a.detach().permute(perm).contiguous();
  return r;
}

// Applies `row(const T* x, int64_t n) -> T` to each row; the result has shape `out_shape`.
template <typename Row>
static Tensor reduce_rows(const char* op, const Tensor& a, const std::vector<int64_t>& rd, const Shape& out_shape,
                          const Row& row) {
  Rows r = to_rows(a, rd);
  Tensor out = Tensor::empty(out_shape, options_of(a));
  dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = r.data.data<T>();
    T* y = out.data<T>();
    const int64_t inner = r.inner;
    kernels::cpu::parallel_for(0, r.outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)),
                               [&](int64_t b, int64_t e) {
                                 for (int64_t i = b; i < e; ++i) y[i] = row(x + i * inner, inner);
                               });
  });
  return out;
}

static Tensor sum_forward(const Tensor& a, const std::vector<int64_t>& rd, const Shape& out_shape) {
  // Leading dims of a contiguous tensor: add whole rows into the output (vectorised).
  bool leading = a.is_contiguous() && !rd.empty();
  for (size_t i = 0; i < rd.size(); ++i) leading = leading && rd[i] == static_cast<int64_t>(i);
  if (leading && static_cast<int64_t>(rd.size()) < a.dim()) {
    int64_t rows = 1, cols = 1;
    for (int64_t d = 0; d < a.dim(); ++d) (d < static_cast<int64_t>(rd.size()) ? rows : cols) *= a.sizes()[d];
    Tensor out = Tensor::empty(out_shape, options_of(a));
    dispatch_floating(a.dtype(), "sum", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* x = a.data<T>();
      T* y = out.data<T>();
      kernels::cpu::parallel_for(0, cols, 4096, [&](int64_t cb, int64_t ce) {
        std::vector<double> acc(ce - cb, 0.0);
        for (int64_t i = 0; i < rows; ++i) {
          const T* xr = x + i * cols;
          for (int64_t j = cb; j < ce; ++j) acc[j - cb] += xr[j];
        }
        for (int64_t j = cb; j < ce; ++j) y[j] = static_cast<T>(acc[j - cb]);
      });
    });
    return out;
  }
  return reduce_rows("sum", a, rd, out_shape, [](const auto* x, int64_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: faster and a little more accurate
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      s0 += x[j];
      s1 += x[j + 1];
      s2 += x[j + 2];
      s3 += x[j + 3];
    }
    for (; j < n; ++j) s0 += x[j];
    return static_cast<T>((s0 + s1) + (s2 + s3));
  });
}

// Expands a reduced gradient back over the reduced dims.
static Tensor expand_back(const Tensor& g, const Shape& in_shape, const std::vector<int64_t>& rd, bool keepdim) {
  Tensor t = g;
  if (!keepdim)
    for (int64_t d : rd) t = t.unsqueeze(d);
  return t.expand(in_shape);
}

Tensor sum(const Tensor& a, const Shape& dims, bool keepdim) {
  trace::OpTimer timer("sum", {a});
  auto rd = normalize_dims(dims, a.dim(), "sum");
  Shape out_shape = reduced_shape(a.sizes(), rd, keepdim);
  Tensor y = sum_forward(a, rd, out_shape);
  timer.set_output(y);
  record("sum", {a}, y, [in_shape = a.sizes(), rd, keepdim](const TensorList& g, const TensorList&) {
    return TensorList{expand_back(g[0], in_shape, rd, keepdim)};
  });
  return y;
}
Tensor sum(const Tensor& a) { return sum(a, {}, false); }

Tensor mean(const Tensor& a, const Shape& dims, bool keepdim) {
  auto rd = normalize_dims(dims, a.dim(), "mean");
  int64_t n = 1;
  for (int64_t d : rd) n *= a.sizes()[d];
  EMBER_CHECK(n > 0, "mean: reducing over an empty dim of shape ", shape_str(a.sizes()));
  return div(sum(a, dims, keepdim), static_cast<double>(n));
}
Tensor mean(const Tensor& a) { return mean(a, {}, false); }

Tensor sum_to_size(const Tensor& g, const Shape& shape) {
  if (g.sizes() == shape) return g;
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  EMBER_CHECK(lead >= 0, "sum_to_size: cannot sum ", shape_str(g.sizes()), " to the larger shape ", shape_str(shape));
  Shape dims;
  for (int64_t d = 0; d < g.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && g.sizes()[d] != 1) {
      dims.push_back(d);
    } else {
      EMBER_CHECK(shape[d - lead] == g.sizes()[d], "sum_to_size: ", shape_str(g.sizes()), " does not reduce to ",
                  shape_str(shape));
    }
  }
  Tensor r = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  // drop the leading dims that keepdim left as 1
  return r.dim() == static_cast<int64_t>(shape.size()) ? r : r.reshape(shape);
}

}  // namespace ember
