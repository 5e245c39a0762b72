// Reductions. The kernel sees the input as [outer, reduced] rows after moving the reduced dims
// last (a copy only when they are not already innermost); reducing leading dims of a
// contiguous tensor (bias gradients: [batch, features] -> [features]) accumulates whole rows
// instead, which vectorises. f32 sums accumulate in f64.
// On the GPU the same rows go to kernels/cuda/reduce.cu (prod and norm(p) included); cumsum and
// the exclusive products behind prod's derivatives are per-row scans in kernels/cuda/scan.cu.
#include "ember/ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/reduce.h"
#include "ember/kernels/prod_rows.h"
#include "ember/kernels/cuda/scan.h"
#include "ember/ops/elementwise.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/ops/shape.h"

namespace ember {

using autograd::record;

namespace {

// Sorted, unique, non-negative reduced dims; all dims when `dims` is empty.
Shape normalize_dims(const Shape& dims, int64_t ndim, const char* op) {
  Shape out;
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

Shape reduced_shape(const Shape& sizes, const Shape& rd, bool keepdim) {
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

static Rows to_rows(const Tensor& a, const Shape& rd) {
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
namespace kc = kernels::cuda;

// The row reduction on the GPU: the rows as the CPU lays them out, one kernel launch.
static Tensor reduce_rows_gpu(const char* op, const Rows& r, const Shape& out_shape, const Tensor& a,
                              std::optional<kc::RowOp> gpu, double p0) {
  EMBER_CHECK(gpu.has_value(), op, ": this reduction has no CUDA kernel yet (input ", a.str(),
              "); move the input to the CPU with .to(Device::cpu()) for this op");
  Tensor out = Tensor::empty(out_shape, options_of(a));
#if EMBER_WITH_CUDA
  Tensor ws;
  const size_t ws_bytes = kc::reduce_rows_workspace(*gpu, r.outer, r.inner);
  if (ws_bytes) ws = Tensor::empty({static_cast<int64_t>((ws_bytes + 7) / 8)}, {.dtype = DType::f64, .device = a.device()});
  kc::reduce_rows(*gpu, cuda::elem_type(a.dtype()), r.data.device_data(), out.device_data(), r.outer, r.inner, p0,
                  ws_bytes ? ws.device_data() : nullptr, cuda::stream_of(a));
#endif
  return out;
}

template <typename Row>
static Tensor reduce_rows(const char* op, const Tensor& a, const Shape& rd, const Shape& out_shape,
                          const Row& row, std::optional<kc::RowOp> gpu = std::nullopt, double p0 = 0) {
  Rows r = to_rows(a, rd);
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), op, [](auto) {});  // the CPU's dtype error
    return reduce_rows_gpu(op, r, out_shape, a, gpu, p0);
  }
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

// Column sums of a contiguous [rows, cols] matrix written into out ([cols], contiguous), or added
// to what out holds (out + sum, rounded as a sum and then an add would be). Vectorised on the CPU
// (whole rows added into the output); on the GPU an in-place column sum, which pays when a
// block's 32 columns are all used (sum_forward sends narrower matrices to the row kernel).
static void sum_leading_rows(const Tensor& a, int64_t rows, int64_t cols, Tensor& out, bool accumulate) {
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "sum", [](auto) {});
#if EMBER_WITH_CUDA
    kc::sum_leading(cuda::elem_type(a.dtype()), a.device_data(), out.device_data(), rows, cols, accumulate,
                    cuda::stream_of(a));
#endif
    return;
  }
  dispatch_floating(a.dtype(), "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = a.data<T>();
    T* y = out.data<T>();
    auto put = [&](int64_t j, double total) {
      y[j] = accumulate ? y[j] + static_cast<T>(total) : static_cast<T>(total);
    };
    // Wide rows split by columns. Narrow ones (a bias gradient: 2048 x 32) split by rows into
    // blocks of a fixed height, each summed into its own f64 partial, the partials then added
    // in block order: the threads share the work and the result does not depend on their count.
    if (cols >= 4096 || rows * cols < 2 * 16384) {
      kernels::cpu::parallel_for(0, cols, 4096, [&](int64_t cb, int64_t ce) {
        SmallVector<double, 256> acc(static_cast<size_t>(ce - cb), 0.0);  // on the stack for a bias's columns
        for (int64_t i = 0; i < rows; ++i) {
          const T* xr = x + i * cols;
          for (int64_t j = cb; j < ce; ++j) acc[j - cb] += xr[j];
        }
        for (int64_t j = cb; j < ce; ++j) put(j, acc[j - cb]);
      });
      return;
    }
    const int64_t block_rows = std::max<int64_t>(1, 16384 / cols);
    const int64_t blocks = (rows + block_rows - 1) / block_rows;
    std::vector<double> partial(blocks * cols, 0.0);
    kernels::cpu::parallel_for(0, blocks, 1, [&](int64_t bb, int64_t be) {
      for (int64_t b = bb; b < be; ++b) {
        double* acc = partial.data() + b * cols;
        for (int64_t i = b * block_rows; i < std::min(rows, (b + 1) * block_rows); ++i) {
          const T* xr = x + i * cols;
          for (int64_t j = 0; j < cols; ++j) acc[j] += xr[j];
        }
      }
    });
    for (int64_t j = 0; j < cols; ++j) {
      double total = 0;
      for (int64_t b = 0; b < blocks; ++b) total += partial[b * cols + j];
      put(j, total);
    }
  });
}

// The column sums above apply: a contiguous matrix, and on the GPU 32 columns or more.
static bool leading_rows_fit(const Tensor& a, int64_t cols) {
  return a.is_contiguous() && (a.device().is_cpu() || cols >= 32);
}

static Tensor sum_forward(const Tensor& a, const Shape& rd, const Shape& out_shape) {
  bool leading = !rd.empty() && static_cast<int64_t>(rd.size()) < a.dim();
  for (size_t i = 0; i < rd.size(); ++i) leading = leading && rd[i] == static_cast<int64_t>(i);
  int64_t rows = 1, cols = 1;
  for (int64_t d = 0; d < a.dim(); ++d) (d < static_cast<int64_t>(rd.size()) ? rows : cols) *= a.sizes()[d];
  if (leading && leading_rows_fit(a, cols)) {
    Tensor out = Tensor::empty(out_shape, options_of(a));
    sum_leading_rows(a, rows, cols, out, false);
    return out;
  }
  // Leading and trailing dims of a contiguous tensor (a conv's bias gradient: [N, C, H, W] over
  // N, H and W): the trailing ones first, each row summed where it lies, then the leading ones
  // of that small result, where one pass would first copy the whole tensor into rows.
  const int64_t nd = a.dim(), nr = static_cast<int64_t>(rd.size());
  int64_t head = 0;
  while (head < nr && rd[head] == head) ++head;
  bool tail = head > 0 && head < nr;
  for (int64_t i = head; i < nr; ++i) tail = tail && rd[i] == nd - (nr - i);
  if (tail && a.is_contiguous()) {
    const Shape trailing(rd.begin() + head, rd.end()), leading_dims(rd.begin(), rd.begin() + head);
    const Shape kept(a.sizes().begin(), a.sizes().begin() + (nd - (nr - head)));
    return sum_forward(sum_forward(a, trailing, kept), leading_dims, out_shape);
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
  }, kc::RowOp::sum);
}

// Expands a reduced gradient back over the reduced dims.
static Tensor expand_back(const Tensor& g, const Shape& in_shape, const Shape& rd, bool keepdim) {
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

Tensor sum_rows_into(Tensor acc, const Tensor& m) {
  if (!acc.defined()) return sum(m, {0});
  const bool fits = m.dim() == 2 && acc.dim() == 1 && acc.size(0) == m.size(1) && acc.dtype() == m.dtype() &&
                    acc.device() == m.device() && (acc.dtype() == DType::f32 || acc.dtype() == DType::f64) &&
                    acc.is_contiguous() && leading_rows_fit(m, m.size(1));
  if (!fits) return add_into(std::move(acc), sum(m, {0}));
  trace::OpTimer timer("sum_accumulate", {acc, m});
  sum_leading_rows(m.detach(), m.size(0), m.size(1), acc, true);
  acc.bump_version();
  timer.set_output(acc);
  return acc;
}

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

// ------------------------------------------------------------------------------------------
// Statistics, extrema, logsumexp, norms, cumsum and prod. Each forward runs on the [outer,
// inner] rows of to_rows; each backward is written in ops (expand_back + elementwise), so it
// differentiates again.

namespace {

int64_t reduced_numel(const Shape& sizes, const Shape& rd) {
  int64_t n = 1;
  for (int64_t d : rd) n *= sizes[d];
  return n;
}

// Runs f(i) for every row i in [0, outer) on the thread pool.
template <typename F>
void for_each_row(int64_t outer, int64_t inner, const F& f) {
  kernels::cpu::parallel_for(0, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)),
                             [&](int64_t b, int64_t e) {
                               for (int64_t i = b; i < e; ++i) f(i);
                             });
}

// A [outer, inner] row-layout result (as produced from to_rows(a, rd)) put back into a's dim order.
Tensor from_rows(const Tensor& rows, const Shape& in_shape, const Shape& rd) {
  const int64_t nd = static_cast<int64_t>(in_shape.size());
  Shape perm;
  for (int64_t d = 0; d < nd; ++d)
    if (std::find(rd.begin(), rd.end(), d) == rd.end()) perm.push_back(d);
  for (int64_t d : rd) perm.push_back(d);
  Shape psizes, inv(nd);
  for (int64_t i = 0; i < nd; ++i) {
    psizes.push_back(in_shape[perm[i]]);
    inv[perm[i]] = i;
  }
  return rows.detach().view(psizes).permute(inv).contiguous();
}

template <typename T>
bool is_nan(T v) {
  return v != v;  // false for integers
}

// On the GPU these two ask the device (a compare, then a u8 max or min) and read back one
// byte, instead of copying the whole tensor to the host.
bool any_zero(const Tensor& a) {
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "prod", [](auto) {});
    return a.numel() > 0 && max(eq(a.detach(), 0.0).to(DType::u8)).item() != 0;
  }
  Tensor c = a.detach().to(Device::cpu()).contiguous();
  return dispatch_floating(c.dtype(), "prod", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = c.data<T>();
    for (int64_t i = 0; i < c.numel(); ++i)
      if (x[i] == T(0)) return true;
    return false;
  });
}

bool all_finite(const Tensor& a) {
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "logsumexp", [](auto) {});
    return a.numel() == 0 || min(isfinite(a.detach()).to(DType::u8)).item() != 0;
  }
  Tensor c = a.detach().to(Device::cpu()).contiguous();
  return dispatch_floating(c.dtype(), "logsumexp", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = c.data<T>();
    for (int64_t i = 0; i < c.numel(); ++i)
      if (!std::isfinite(x[i])) return false;
    return true;
  });
}

std::string dims_str(const Shape& dims) { return dims.empty() ? std::string("all dims") : shape_str(dims); }

}  // namespace

// ---- var / std ----

namespace {

// Per row: sum((x - mean)^2) / denom, or its square root. Two passes, accumulated in f64.
Tensor moments_forward(const char* op, const Tensor& a, const Shape& rd, const Shape& out_shape,
                       double denom, bool take_sqrt) {
  return reduce_rows(op, a, rd, out_shape, [denom, take_sqrt](const auto* x, int64_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j];
    const double m = s / static_cast<double>(n);
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double d = static_cast<double>(x[j]) - m;
      ss += d * d;
    }
    const double v = ss / denom;
    return static_cast<T>(take_sqrt ? std::sqrt(v) : v);
  }, take_sqrt ? kc::RowOp::std : kc::RowOp::var, denom);
}

// d var / da = 2 (a - mean(a)) / denom, times the expanded gradient.
Tensor var_backward(const Tensor& g, const Tensor& a, const Shape& rd, bool keepdim, double denom) {
  Tensor centered = sub(a, mean(a, rd, /*keepdim=*/true));
  return mul(mul(expand_back(g, a.sizes(), rd, keepdim), centered), 2.0 / denom);
}

double var_denominator(const char* op, const Tensor& a, const Shape& rd, const Shape& dims,
                       bool unbiased) {
  const int64_t n = reduced_numel(a.sizes(), rd);
  const double denom = static_cast<double>(n) - (unbiased ? 1.0 : 0.0);
  EMBER_CHECK(denom > 0, op, ": ", n, " element(s) per reduction over ", dims_str(dims), " of shape ",
              shape_str(a.sizes()), " is too few for the ", unbiased ? "unbiased (n - 1) " : "",
              "estimate; it needs at least ", unbiased ? 2 : 1,
              unbiased ? " (pass unbiased=false for the population statistic)" : "");
  return denom;
}

}  // namespace

Tensor var(const Tensor& a, const Shape& dims, bool unbiased, bool keepdim) {
  trace::OpTimer timer("var", {a});
  auto rd = normalize_dims(dims, a.dim(), "var");
  const double denom = var_denominator("var", a, rd, dims, unbiased);
  Tensor y = moments_forward("var", a, rd, reduced_shape(a.sizes(), rd, keepdim), denom, false);
  timer.set_output(y);
  record("var", {a}, y, [a, rd, keepdim, denom](const TensorList& g, const TensorList&) {
    return TensorList{var_backward(g[0], a, rd, keepdim, denom)};
  }, {a});
  return y;
}

Tensor std(const Tensor& a, const Shape& dims, bool unbiased, bool keepdim) {
  trace::OpTimer timer("std", {a});
  auto rd = normalize_dims(dims, a.dim(), "std");
  const double denom = var_denominator("std", a, rd, dims, unbiased);
  Tensor y = moments_forward("std", a, rd, reduced_shape(a.sizes(), rd, keepdim), denom, true);
  timer.set_output(y);
  record("std", {a}, y, [a, rd, keepdim, denom](const TensorList& g, const TensorList& out) {
    // d std = d var / (2 std); where std = 0 (a constant row) the gradient is 0, not NaN.
    Tensor nonzero = ne(out[0], 0.0);
    Tensor safe = where(nonzero, out[0], 1.0);
    Tensor gv = where(nonzero, div(g[0], mul(safe, 2.0)), 0.0);
    return TensorList{var_backward(gv, a, rd, keepdim, denom)};
  }, {a}, /*save_outputs=*/true);
  return y;
}

// ---- max / min / argmax / argmin along one dim ----

namespace {

// Per row of the reduced dim: the first extreme element (NaN wins, as the first NaN met).
// Values in a's dtype and i64 indices, both in the keepdim shape.
void extreme_along(const char* op, const Tensor& a, const Shape& rd, bool is_max, Tensor* values,
                   Tensor* indices) {
  const int64_t n = reduced_numel(a.sizes(), rd);
  EMBER_CHECK(n > 0, op, ": cannot reduce over an empty dim (shape ", shape_str(a.sizes()), ")");
  Rows r = to_rows(a, rd);
  const Shape keep_shape = reduced_shape(a.sizes(), rd, true);
  Tensor vals = Tensor::empty(keep_shape, options_of(a));
  Tensor idx = Tensor::empty(keep_shape, {.dtype = DType::i64, .device = a.device()});
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    dispatch_numeric(a.dtype(), op, [](auto) {});
    kc::arg_extreme_rows(is_max, cuda::elem_type(a.dtype()), r.data.device_data(), vals.device_data(),
                         static_cast<int64_t*>(idx.device_data()), r.outer, r.inner, cuda::stream_of(a));
    if (values) *values = vals;
    if (indices) *indices = idx;
    return;
  }
#endif
  dispatch_numeric(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = r.data.data<T>();
    T* v = vals.data<T>();
    int64_t* ix = idx.data<int64_t>();
    const int64_t inner = r.inner;
    for_each_row(r.outer, inner, [&](int64_t i) {
      const T* row = x + i * inner;
      T best = row[0];
      int64_t bi = 0;
      if (!is_nan(best)) {
        for (int64_t j = 1; j < inner; ++j) {
          const T xj = row[j];
          if (is_nan(xj)) {
            best = xj;
            bi = j;
            break;
          }
          if (is_max ? xj > best : xj < best) {
            best = xj;
            bi = j;
          }
        }
      }
      v[i] = best;
      ix[i] = bi;
    });
  });
  if (values) *values = vals;
  if (indices) *indices = idx;
}

std::pair<Tensor, Tensor> extreme_dim(const char* op, const Tensor& a, int64_t dim, bool keepdim, bool is_max) {
  trace::OpTimer timer(op, {a});
  const int64_t d = wrap_dim(dim, a.dim(), op);
  auto rd = normalize_dims({dim}, a.dim(), op);
  Tensor vals, idx;
  extreme_along(op, a, rd, is_max, &vals, &idx);
  const Shape out_shape = reduced_shape(a.sizes(), rd, keepdim);
  Tensor values = keepdim ? vals : vals.view(out_shape);
  Tensor indices = keepdim ? idx : idx.view(out_shape);
  timer.set_output(values);
  // The gradient goes to the chosen element: a one-hot of the index along `dim`.
  record(op, {a}, values, [in_shape = a.sizes(), d, keepdim, idx](const TensorList& g, const TensorList&) {
    if (in_shape.empty()) return TensorList{g[0]};
    Tensor gk = keepdim ? g[0] : g[0].unsqueeze(d);
    Shape pos_shape(in_shape.size(), 1);
    pos_shape[d] = in_shape[d];
    Tensor pos = arange(static_cast<double>(in_shape[d]), {.dtype = DType::i64, .device = idx.device()}).view(pos_shape);
    Tensor hit = eq(pos, idx);  // in_shape
    return TensorList{where(hit, gk, 0.0)};
  }, {idx});
  return {values, indices};
}

}  // namespace

std::pair<Tensor, Tensor> max(const Tensor& a, int64_t dim, bool keepdim) {
  return extreme_dim("max", a, dim, keepdim, true);
}
std::pair<Tensor, Tensor> min(const Tensor& a, int64_t dim, bool keepdim) {
  return extreme_dim("min", a, dim, keepdim, false);
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  auto rd = normalize_dims({dim}, a.dim(), "argmax");
  Tensor idx;
  extreme_along("argmax", a, rd, true, nullptr, &idx);
  return keepdim ? idx : idx.view(reduced_shape(a.sizes(), rd, false));
}
Tensor argmin(const Tensor& a, int64_t dim, bool keepdim) {
  auto rd = normalize_dims({dim}, a.dim(), "argmin");
  Tensor idx;
  extreme_along("argmin", a, rd, false, nullptr, &idx);
  return keepdim ? idx : idx.view(reduced_shape(a.sizes(), rd, false));
}

// ---- amax / amin and max() / min() over everything ----

namespace {

Tensor extreme_all(const char* op, const Tensor& a, const Shape& dims, bool keepdim, bool is_max) {
  trace::OpTimer timer(op, {a});
  auto rd = normalize_dims(dims, a.dim(), op);
  EMBER_CHECK(reduced_numel(a.sizes(), rd) > 0, op, ": cannot reduce over ", dims_str(dims), " of shape ",
              shape_str(a.sizes()), ": an empty reduction has no ", is_max ? "maximum" : "minimum");
  Rows r = to_rows(a, rd);
  Tensor y = Tensor::empty(reduced_shape(a.sizes(), rd, keepdim), options_of(a));
#if EMBER_WITH_CUDA
  if (a.device().is_cuda()) {
    dispatch_numeric(a.dtype(), op, [](auto) {});
    kc::reduce_rows(is_max ? kc::RowOp::max : kc::RowOp::min, cuda::elem_type(a.dtype()), r.data.device_data(),
                    y.device_data(), r.outer, r.inner, 0, nullptr, cuda::stream_of(a));
  } else
#endif
  dispatch_numeric(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = r.data.data<T>();
    T* out = y.data<T>();
    const int64_t inner = r.inner;
    for_each_row(r.outer, inner, [&](int64_t i) {
      const T* row = x + i * inner;
      T best = row[0];
      for (int64_t j = 0; j < inner && !is_nan(best); ++j) {
        const T xj = row[j];
        if (is_nan(xj) || (is_max ? xj > best : xj < best)) best = xj;
      }
      out[i] = best;
    });
  });
  timer.set_output(y);
  // The gradient is shared evenly by the elements equal to the extreme.
  record(op, {a}, y, [a, rd, keepdim](const TensorList& g, const TensorList& out) {
    Tensor hit = eq(a, expand_back(out[0].detach(), a.sizes(), rd, keepdim)).to(g[0].dtype());
    Tensor share = div(hit, sum(hit, rd, /*keepdim=*/true));
    return TensorList{mul(expand_back(g[0], a.sizes(), rd, keepdim), share)};
  }, {a}, /*save_outputs=*/true);
  return y;
}

}  // namespace

Tensor amax(const Tensor& a, const Shape& dims, bool keepdim) { return extreme_all("amax", a, dims, keepdim, true); }
Tensor amin(const Tensor& a, const Shape& dims, bool keepdim) { return extreme_all("amin", a, dims, keepdim, false); }
Tensor max(const Tensor& a) { return extreme_all("max", a, {}, false, true); }
Tensor min(const Tensor& a) { return extreme_all("min", a, {}, false, false); }

// ---- logsumexp ----

Tensor logsumexp(const Tensor& a, const Shape& dims, bool keepdim) {
  trace::OpTimer timer("logsumexp", {a});
  auto rd = normalize_dims(dims, a.dim(), "logsumexp");
  // m + log(sum(exp(x - m))) with m the row maximum: no overflow; -inf for an empty or all -inf row.
  Tensor y = reduce_rows("logsumexp", a, rd, reduced_shape(a.sizes(), rd, keepdim), [](const auto* x, int64_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      const double v = x[j];
      if (v != v) return static_cast<T>(v);
      m = std::max(m, v);
    }
    if (std::isinf(m)) return static_cast<T>(m);
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[j]) - m);
    return static_cast<T>(m + std::log(s));
  }, kc::RowOp::logsumexp);
  timer.set_output(y);
  record("logsumexp", {a}, y, [a, rd, keepdim](const TensorList& g, const TensorList& out) {
    // d/da = exp(a - out) (the softmax); a row that is all -inf gets gradient 0, not NaN.
    Tensor o = out[0];
    if (!all_finite(o)) o = where(isfinite(o.detach()), o, 0.0);
    Tensor soft = exp(sub(a, expand_back(o, a.sizes(), rd, keepdim)));
    return TensorList{mul(expand_back(g[0], a.sizes(), rd, keepdim), soft)};
  }, {a}, /*save_outputs=*/true);
  return y;
}

// ---- norm ----

Tensor norm(const Tensor& a, double p, const Shape& dims, bool keepdim) {
  EMBER_CHECK(p >= 1.0, "norm: p must be >= 1 (1, 2, inf or any finite p >= 1), got ", p);
  if (p == 1.0) return sum(abs(a), dims, keepdim);
  if (std::isinf(p)) return amax(abs(a), dims, keepdim);
  trace::OpTimer timer("norm", {a});
  auto rd = normalize_dims(dims, a.dim(), "norm");
  // scale * (sum (|x| / scale)^p)^(1/p) with scale = max |x|: no overflow or underflow.
  Tensor y = reduce_rows("norm", a, rd, reduced_shape(a.sizes(), rd, keepdim), [p](const auto* x, int64_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    double scale = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double v = std::abs(static_cast<double>(x[j]));
      if (v != v) return static_cast<T>(v);
      scale = std::max(scale, v);
    }
    if (scale == 0 || std::isinf(scale)) return static_cast<T>(scale);
    double s = 0;
    if (p == 2.0) {
      for (int64_t j = 0; j < n; ++j) {
        const double v = static_cast<double>(x[j]) / scale;
        s += v * v;
      }
      return static_cast<T>(scale * std::sqrt(s));
    }
    for (int64_t j = 0; j < n; ++j) s += std::pow(std::abs(static_cast<double>(x[j])) / scale, p);
    return static_cast<T>(scale * std::pow(s, 1.0 / p));
  }, kc::RowOp::norm, p);
  timer.set_output(y);
  record("norm", {a}, y, [a, p, rd, keepdim](const TensorList& g, const TensorList& out) {
    // d||a||_p / da = sign(a) |a|^(p-1) / ||a||^(p-1); a zero norm (a = 0) gets gradient 0.
    Tensor safe = where(ne(out[0], 0.0), out[0], 1.0);
    Tensor n = expand_back(safe, a.sizes(), rd, keepdim);
    Tensor gb = expand_back(g[0], a.sizes(), rd, keepdim);
    if (p == 2.0) return TensorList{mul(gb, div(a, n))};
    Tensor num = mul(sign(a), pow(abs(a), p - 1.0));
    return TensorList{mul(gb, div(num, pow(n, p - 1.0)))};
  }, {a}, /*save_outputs=*/true);
  return y;
}

// ---- cumsum ----

namespace {

// Running sums along dim (from the end when reverse); the backward of one is the other.
Tensor cumsum_impl(const Tensor& a, int64_t dim, bool reverse) {
  const char* op = reverse ? "cumsum_reverse" : "cumsum";
  trace::OpTimer timer(op, {a});
  const int64_t d = wrap_dim(dim, a.dim(), "cumsum");
  Tensor x = a.detach().contiguous();
  Tensor y = Tensor::empty(a.sizes(), options_of(a));
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t k = 0; k < a.dim(); ++k) (k < d ? outer : k == d ? n : inner) *= a.sizes()[k];
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "cumsum", [](auto) {});  // the CPU's dtype error
#if EMBER_WITH_CUDA
    kc::cumsum(cuda::elem_type(a.dtype()), x.device_data(), y.device_data(), outer, n, inner, reverse,
               cuda::stream_of(a));
#endif
  } else
  dispatch_floating(a.dtype(), "cumsum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for_each_row(outer, n * inner, [&](int64_t o) {
      if (inner == 1) {
        double acc = 0;
        for (int64_t s = 0; s < n; ++s) {
          const int64_t i = o * n + (reverse ? n - 1 - s : s);
          acc += xp[i];
          yp[i] = static_cast<T>(acc);
        }
        return;
      }
      std::vector<double> acc(inner, 0.0);
      for (int64_t s = 0; s < n; ++s) {
        const int64_t i = reverse ? n - 1 - s : s;
        const T* xr = xp + (o * n + i) * inner;
        T* yr = yp + (o * n + i) * inner;
        for (int64_t k = 0; k < inner; ++k) {
          acc[k] += xr[k];
          yr[k] = static_cast<T>(acc[k]);
        }
      }
    });
  });
  timer.set_output(y);
  record(op, {a}, y, [d, reverse](const TensorList& g, const TensorList&) {
    return TensorList{cumsum_impl(g[0], d, !reverse)};
  });
  return y;
}

}  // namespace

Tensor cumsum(const Tensor& a, int64_t dim) { return cumsum_impl(a, dim, false); }

// ---- prod ----

namespace {

// r_j = sum_{i != j} w_i prod_{k != i, j} x_k per row, exact when x has zeros (the backward of
// prod_others in that case). Its own backward is not needed below third order.
Tensor prod_others_backward(const Tensor& w, const Tensor& a, const Shape& rd) {
  Rows ra = to_rows(a, rd), rw = to_rows(w, rd);
  Tensor out = Tensor::empty({a.numel()}, options_of(a));
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "prod", [](auto) {});
    EMBER_CHECK(w.device() == a.device() && w.dtype() == a.dtype(), "prod: the gradient ", w.str(),
                " does not match the input ", a.str());
    Tensor scratch = Tensor::empty({a.numel()}, {.dtype = DType::f64, .device = a.device()});
#if EMBER_WITH_CUDA
    kc::prod_others_backward(cuda::elem_type(a.dtype()), ra.data.device_data(), rw.data.device_data(),
                             out.device_data(), ra.outer, ra.inner, static_cast<double*>(scratch.device_data()),
                             cuda::stream_of(a));
#endif
  } else
  dispatch_floating(a.dtype(), "prod", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xs = ra.data.data<T>();
    const T* ws = rw.data.data<T>();
    T* rs = out.data<T>();
    const int64_t n = ra.inner;
    for_each_row(ra.outer, n, [&](int64_t row) {
      std::vector<double> e(n);
      kernels::prod_others_backward_row(xs + row * n, ws + row * n, rs + row * n, n, e.data());
    });
  });
  Tensor r = from_rows(out, a.sizes(), rd);
  record("prod_backward_backward", {w, a}, r, [](const TensorList&, const TensorList&) -> TensorList {
    EMBER_FAIL("prod: derivatives of third or higher order at an input that contains zeros are not implemented");
  });
  return r;
}

// o_j = prod_{k != j} a_k over the reduced dims, from exclusive prefix and suffix products:
// exact when a has zeros (no division).
Tensor prod_others(const Tensor& a, const Shape& rd) {
  Rows r = to_rows(a, rd);
  Tensor out = Tensor::empty({a.numel()}, options_of(a));
  if (a.device().is_cuda()) {
    dispatch_floating(a.dtype(), "prod", [](auto) {});
    Tensor scratch = Tensor::empty({a.numel()}, {.dtype = DType::f64, .device = a.device()});
#if EMBER_WITH_CUDA
    kc::prod_others(cuda::elem_type(a.dtype()), r.data.device_data(), out.device_data(), r.outer, r.inner,
                    static_cast<double*>(scratch.device_data()), cuda::stream_of(a));
#endif
  } else
  dispatch_floating(a.dtype(), "prod", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xs = r.data.data<T>();
    T* os = out.data<T>();
    const int64_t n = r.inner;
    for_each_row(r.outer, n, [&](int64_t row) {
      std::vector<double> pre(n);
      kernels::prod_others_row(xs + row * n, os + row * n, n, pre.data());
    });
  });
  Tensor y = from_rows(out, a.sizes(), rd);
  record("prod_backward", {a}, y, [a, rd](const TensorList& g, const TensorList& outs) {
    if (any_zero(a)) return TensorList{prod_others_backward(g[0], a, rd)};
    // No zeros: d o_i / d a_j = o_i / a_j (i != j), so the gradient is (sum_i g_i o_i - g_j o_j) / a_j.
    Tensor go = mul(g[0], outs[0]);
    return TensorList{div(sub(sum(go, rd, /*keepdim=*/true), go), a)};
  }, {a}, /*save_outputs=*/true);
  return y;
}

}  // namespace

Tensor prod(const Tensor& a, const Shape& dims, bool keepdim) {
  trace::OpTimer timer("prod", {a});
  auto rd = normalize_dims(dims, a.dim(), "prod");
  Tensor y = reduce_rows("prod", a, rd, reduced_shape(a.sizes(), rd, keepdim), [](const auto* x, int64_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    double p = 1;
    for (int64_t j = 0; j < n; ++j) p *= x[j];
    return static_cast<T>(p);
  }, kc::RowOp::prod);
  timer.set_output(y);
  record("prod", {a}, y, [a, rd, keepdim](const TensorList& g, const TensorList& out) {
    Tensor gb = expand_back(g[0], a.sizes(), rd, keepdim);
    // Without zeros the product of the others is out / a; with zeros it comes from exclusive products.
    if (!any_zero(a)) return TensorList{mul(gb, div(expand_back(out[0], a.sizes(), rd, keepdim), a))};
    return TensorList{mul(gb, prod_others(a, rd))};
  }, {a}, /*save_outputs=*/true);
  return y;
}

}  // namespace ember
