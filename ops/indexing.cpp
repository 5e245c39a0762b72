// Indexing ops: index_select, gather, scatter_add, masked_fill, flip, pad, repeat, roll, tril
// and triu. Most of them are one kernel, `remap`: every output coordinate along each dim maps
// to a source coordinate (or to a fill value), so out[i0, i1, ...] = a[map0[i0], map1[i1], ...].
// Its adjoint, `remap_add`, adds a gradient back through the same maps. Backwards are ops again
// (gather <-> scatter_add, flip -> flip, roll -> roll back, reflect pad <-> its adjoint ...), so
// every gradient differentiates further. Indices are i64 or i32 and checked against the size.
//
// On the GPU the same plans (maps, strides) are built on the host and walked by the kernels of
// kernels/cuda/index.cu; index ranges are checked on the device (min and max of the index, one
// small read back). The additive kernels (remap_add, scatter_add) add each element's terms in
// the CPU's order, so GPU gradients equal the CPU's to the bit, run after run.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/index.h"
#include "ember/ops/elementwise.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

using autograd::record;

namespace {

using Maps = std::vector<std::vector<int64_t>>;  // per dim: output coordinate -> source coordinate, -1 = fill
namespace kc = kernels::cuda;

void check_device(const char* op, const Tensor& a, const Tensor& b, const char* what) {
  EMBER_CHECK(b.defined(), op, ": ", what, " is undefined");
  EMBER_CHECK(a.device() == b.device(), op, ": the tensor is on ", a.device().str(), " but ", what, " is on ",
              b.device().str(), "; move one with .to(device)");
}

// The index as a contiguous i64 tensor (the caller's own storage when it already is one).
Tensor as_index(const char* op, const Tensor& a, const Tensor& index) {
  check_device(op, a, index, "the index");
  EMBER_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32, op, ": the index must be i64 or i32, got ",
              index.str(), " (convert with .to(DType::i64))");
  Tensor ix = index.detach();
  if (ix.dtype() != DType::i64) ix = ix.to(DType::i64);
  return ix.contiguous();
}

void check_range(const char* op, const Tensor& ix, int64_t size, int64_t dim, const Shape& shape) {
  if (ix.numel() == 0) return;
  if (ix.device().is_cuda()) {
    // The index's min and max come back (16 bytes); only a bad index is copied over whole, so
    // that the error names the same first offender as on the CPU.
    Tensor bounds = stack({min(ix), max(ix)}).to(Device::cpu());
    const int64_t* b = bounds.data<int64_t>();
    if (b[0] >= 0 && b[1] < size) return;
    check_range(op, ix.to(Device::cpu()), size, dim, shape);
    EMBER_FAIL(op, ": index out of range for dim ", dim, " of size ", size);  // not reached
  }
  const int64_t* p = ix.data<int64_t>();
  for (int64_t i = 0; i < ix.numel(); ++i)
    EMBER_CHECK(p[i] >= 0 && p[i] < size, op, ": index ", p[i], " is out of range for dim ", dim, " of size ", size,
                " (shape ", shape_str(shape), "; valid indices are 0..", size - 1, ")");
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

Maps identity_maps(const Shape& s) {
  Maps m;
  for (int64_t n : s) m.push_back(iota(n));
  return m;
}

// The maps as element offsets into a contiguous tensor of shape `src` (-1 stays -1).
Maps offsets_of(const Maps& maps, const Shape& src) {
  Shape st = contiguous_strides(src);
  Maps off = maps;
  for (size_t d = 0; d < off.size(); ++d)
    for (auto& o : off[d])
      if (o >= 0) o *= st[d];
  return off;
}

bool injective(const std::vector<int64_t>& m) {
  std::vector<int64_t> v;
  for (int64_t x : m)
    if (x >= 0) v.push_back(x);
  std::sort(v.begin(), v.end());
  return std::adjacent_find(v.begin(), v.end()) == v.end();
}

// Calls f(row, coords) for the rows [b, e) of `shape` (a row = every dim but the last; coords
// holds the row's outer coordinates).
template <typename F>
void walk_rows(const Shape& shape, int64_t b, int64_t e, const F& f) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<int64_t> c(std::max<int64_t>(nd - 1, 0), 0);
  int64_t r = b;
  for (int64_t d = nd - 2; d >= 0; --d) {
    c[d] = r % shape[d];
    r /= shape[d];
  }
  for (int64_t row = b; row < e; ++row) {
    f(row, c.data());
    for (int64_t d = nd - 2; d >= 0; --d) {
      if (++c[d] < shape[d]) break;
      c[d] = 0;
    }
  }
}

int64_t row_grain(int64_t last) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(last, 1)); }

// An i64 table on the device of `like`.
Tensor device_table(const std::vector<int64_t>& table, const Tensor& like) {
  return from_vector(table, {static_cast<int64_t>(table.size())}, {.dtype = DType::i64, .device = like.device()});
}

void check_gpu_dims(const char* op, int64_t ndim, const Shape& shape) {
  EMBER_CHECK(ndim <= kc::kMaxDims, op, ": the CUDA kernel takes at most ", kc::kMaxDims, " dims, got shape ",
              shape_str(shape), "; reshape to fewer dims first");
}

// remap on the GPU: the offset maps concatenated into one table; the fill value converted here
// by the CPU's convert<T>, so the kernel only moves bits.
void remap_gpu(const char* op, const Tensor& x, Tensor& out, const Maps& off, double fill) {
  const Shape& shape = out.sizes();
  check_gpu_dims(op, static_cast<int64_t>(shape.size()), shape);
  kc::RemapPlan plan;
  plan.ndim = static_cast<int>(shape.size());
  std::vector<int64_t> table;
  for (size_t d = 0; d < shape.size(); ++d) {
    plan.sizes[d] = shape[d];
    plan.start[d] = static_cast<int64_t>(table.size());
    table.insert(table.end(), off[d].begin(), off[d].end());
  }
  uint64_t fill_bits = 0;
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T fv = convert<T>(fill);
    std::memcpy(&fill_bits, &fv, sizeof(T));
  });
  Tensor t = device_table(table, x);
#if EMBER_WITH_CUDA
  kc::remap(x.element_size(), x.device_data(), out.device_data(), static_cast<const int64_t*>(t.device_data()), plan,
            fill_bits, cuda::stream_of(x));
#else
  (void)fill_bits;
#endif
}

// remap_add on the GPU: each dim's map inverted into CSR form (per source coordinate, the
// offsets into g of the output coordinates mapped there, ascending), so each thread owns one
// element of the result and adds its terms in the CPU's order.
void remap_add_gpu(const char* op, const Tensor& gc, Tensor& out, const Maps& maps) {
  const Shape& src = out.sizes();
  const int64_t nd = static_cast<int64_t>(src.size());
  check_gpu_dims(op, nd, src);
  const Shape gstride = contiguous_strides(gc.sizes());
  kc::RemapAddPlan plan;
  plan.ndim = static_cast<int>(nd);
  std::vector<int64_t> table;
  for (int64_t d = 0; d < nd; ++d) {
    const std::vector<int64_t>& m = maps[d];
    const int64_t n = src[d];
    std::vector<int64_t> ptr(n + 1, 0);
    for (int64_t s : m) {
      if (s < 0) continue;
      EMBER_CHECK(s < n, op, ": map entry ", s, " out of range for dim ", d, " of size ", n);
      ++ptr[s + 1];
    }
    for (int64_t s = 0; s < n; ++s) ptr[s + 1] += ptr[s];
    std::vector<int64_t> list(ptr[n]), cursor(ptr.begin(), ptr.end() - 1);
    for (int64_t j = 0; j < static_cast<int64_t>(m.size()); ++j)
      if (m[j] >= 0) list[cursor[m[j]]++] = j * gstride[d];
    plan.sizes[d] = n;
    plan.ptr[d] = static_cast<int64_t>(table.size());
    table.insert(table.end(), ptr.begin(), ptr.end());
    plan.list[d] = static_cast<int64_t>(table.size());
    table.insert(table.end(), list.begin(), list.end());
  }
  Tensor t = device_table(table, gc);
#if EMBER_WITH_CUDA
  kc::remap_add(cuda::elem_type(gc.dtype()), gc.device_data(), out.device_data(),
                static_cast<const int64_t*>(t.device_data()), plan, cuda::stream_of(gc));
#endif
}

// out[i] = a[map(i)] (fill where a map says -1), for any dtype.
Tensor remap(const char* op, const Tensor& a, const Maps& maps, const Shape& out_shape, double fill) {
  Tensor x = a.detach().contiguous();
  Tensor out = Tensor::empty(out_shape, options_of(a));
  if (out.numel() == 0) return out;
  const Maps off = offsets_of(maps, x.sizes());
  if (a.device().is_cuda()) {
    remap_gpu(op, x, out, off, fill);
    return out;
  }
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
    const T fv = convert<T>(fill);
    if (out_shape.empty()) {
      yp[0] = xp[0];
      return;
    }
    const int64_t nd = static_cast<int64_t>(out_shape.size());
    const int64_t last = out_shape.back(), rows = out.numel() / last;
    const std::vector<int64_t>& lo = off.back();
    kernels::cpu::parallel_for(0, rows, row_grain(last), [&](int64_t b, int64_t e) {
      walk_rows(out_shape, b, e, [&](int64_t row, const int64_t* c) {
        T* y = yp + row * last;
        int64_t base = 0;
        for (int64_t d = 0; d + 1 < nd; ++d) {
          const int64_t o = off[d][c[d]];
          if (o < 0) {
            std::fill(y, y + last, fv);
            return;
          }
          base += o;
        }
        const T* xb = xp + base;
        for (int64_t j = 0; j < last; ++j) y[j] = lo[j] < 0 ? fv : xb[lo[j]];
      });
    });
  });
  return out;
}

// The adjoint of remap: zeros of `src_shape` with g added at every mapped position.
Tensor remap_add(const char* op, const Tensor& g, const Shape& src_shape, const Maps& maps) {
  Tensor gc = g.detach().contiguous();
  Tensor out = zeros(src_shape, options_of(g));
  if (g.numel() == 0 || out.numel() == 0) return out;
  if (g.device().is_cuda()) {
    dispatch_floating(g.dtype(), op, [](auto) {});  // the CPU's dtype error
    remap_add_gpu(op, gc, out, maps);
    return out;
  }
  const Maps off = offsets_of(maps, src_shape);
  const Shape& shape = g.sizes();
  dispatch_floating(g.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = gc.data<T>();
    T* op_ = out.data<T>();
    const int64_t nd = static_cast<int64_t>(shape.size());
    if (nd == 0) {
      op_[0] += gp[0];
      return;
    }
    const int64_t last = shape.back(), rows = gc.numel() / last;
    const std::vector<int64_t>& lo = off.back();
    auto run = [&](int64_t b, int64_t e) {
      walk_rows(shape, b, e, [&](int64_t row, const int64_t* c) {
        int64_t base = 0;
        for (int64_t d = 0; d + 1 < nd; ++d) {
          const int64_t o = off[d][c[d]];
          if (o < 0) return;
          base += o;
        }
        const T* gr = gp + row * last;
        T* ob = op_ + base;
        for (int64_t j = 0; j < last; ++j)
          if (lo[j] >= 0) ob[lo[j]] += gr[j];
      });
    };
    // Rows whose first coordinates differ write to different places when the first map is
    // injective: split the work over it. Otherwise one thread adds everything.
    if (nd >= 2 && injective(maps[0])) {
      const int64_t per = rows / shape[0];
      kernels::cpu::parallel_for(0, shape[0], row_grain(per * last),
                                 [&](int64_t b, int64_t e) { run(b * per, e * per); });
    } else {
      run(0, rows);
    }
  });
  return out;
}

// ---- index_select's adjoint (index_add into zeros), itself differentiable ----

// Reads the index on the host (a copy from the GPU: index_select's index is one short 1-D list).
Maps select_maps(const Shape& shape, int64_t dim, const Tensor& index) {
  Maps m = identity_maps(shape);
  const Tensor ix = index.device().is_cpu() ? index : index.to(Device::cpu());
  const int64_t* p = ix.data<int64_t>();
  m[dim].assign(p, p + ix.numel());
  return m;
}

Tensor index_select_backward(const Tensor& g, const Shape& in_shape, int64_t dim, const Tensor& ix) {
  Tensor out = remap_add("index_select_backward", g, in_shape, select_maps(g.sizes(), dim, ix));
  record("index_select_backward", {g}, out, [dim, ix](const TensorList& gg, const TensorList&) {
    return TensorList{index_select(gg[0], dim, ix)};
  }, {ix});
  return out;
}

// ---- pad: the maps, and reflect pad's adjoint ----

struct PadPlan {
  Shape out_shape;
  Maps maps;
};

PadPlan pad_plan(const Shape& in, const Shape& pads, PadMode mode) {
  const int64_t nd = static_cast<int64_t>(in.size());
  EMBER_CHECK(pads.size() % 2 == 0, "pad: pads must come in (low, high) pairs, got ", pads.size(), " values ",
              shape_str(pads));
  EMBER_CHECK(static_cast<int64_t>(pads.size()) / 2 <= nd, "pad: ", pads.size() / 2, " dims of padding ",
              shape_str(pads), " for a tensor of shape ", shape_str(in), " (", nd, " dims)");
  PadPlan p{in, identity_maps(in)};
  for (size_t k = 0; k < pads.size() / 2; ++k) {
    const int64_t d = nd - 1 - static_cast<int64_t>(k);
    const int64_t lo = pads[2 * k], hi = pads[2 * k + 1], n = in[d];
    const int64_t m = n + lo + hi;
    if (mode == PadMode::reflect) {
      EMBER_CHECK(lo >= 0 && hi >= 0, "pad: reflect padding must be >= 0, got (", lo, ", ", hi, ") for dim ", d);
      EMBER_CHECK(lo < n && hi < n, "pad: reflect padding (", lo, ", ", hi, ") must be smaller than the size ", n,
                  " of dim ", d, " (shape ", shape_str(in), ")");
    } else {
      EMBER_CHECK(m >= 0, "pad: padding (", lo, ", ", hi, ") of dim ", d, " (size ", n, ", shape ", shape_str(in),
                  ") gives a negative size ", m);
    }
    p.out_shape[d] = m;
    std::vector<int64_t> map(m);
    for (int64_t j = 0; j < m; ++j) {
      int64_t i = j - lo;
      if (mode == PadMode::reflect) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
      } else if (i < 0 || i >= n) {
        i = -1;
      }
      map[j] = i;
    }
    p.maps[d] = std::move(map);
  }
  return p;
}

Tensor pad_reflect_backward(const Tensor& g, const Shape& in_shape, const Shape& pads) {
  PadPlan p = pad_plan(in_shape, pads, PadMode::reflect);
  EMBER_CHECK(g.sizes() == p.out_shape, "pad_reflect_backward: gradient of shape ", shape_str(g.sizes()),
              ", expected ", shape_str(p.out_shape));
  Tensor out = remap_add("pad_reflect_backward", g, in_shape, p.maps);
  record("pad_reflect_backward", {g}, out, [pads](const TensorList& gg, const TensorList&) {
    return TensorList{pad(gg[0], pads, PadMode::reflect)};
  });
  return out;
}

Tensor tri(const char* op, const Tensor& a, int64_t k, bool lower) {
  EMBER_CHECK(a.dim() >= 2, op, ": expected a matrix or a batch of matrices (at least 2 dims), got shape ",
              shape_str(a.sizes()));
  trace::OpTimer timer(op, {a});
  Tensor x = a.detach().contiguous();
  Tensor out = Tensor::empty(a.sizes(), options_of(a));
  const int64_t R = a.size(-2), C = a.size(-1);
  const int64_t rows = R == 0 || C == 0 ? 0 : a.numel() / C;
  if (a.device().is_cuda()) {
#if EMBER_WITH_CUDA
    kc::triangle(a.element_size(), x.device_data(), out.device_data(), rows, R, C, k, lower, cuda::stream_of(a));
#endif
  } else
  dispatch_all(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
    kernels::cpu::parallel_for(0, rows, row_grain(C), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r % R;
        const T* xr = xp + r * C;
        T* yr = yp + r * C;
        for (int64_t j = 0; j < C; ++j) {
          const bool keep = lower ? j - i <= k : j - i >= k;
          yr[j] = keep ? xr[j] : convert<T>(0.0);
        }
      }
    });
  });
  timer.set_output(out);
  record(op, {a}, out, [k, lower](const TensorList& g, const TensorList&) {
    return TensorList{lower ? tril(g[0], k) : triu(g[0], k)};
  });
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------

Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index) {
  EMBER_CHECK(a.defined(), "index_select: input is undefined");
  EMBER_CHECK(index.defined() && index.dim() <= 1, "index_select: the index must be 0-D or 1-D, got ",
              index.defined() ? shape_str(index.sizes()) : std::string("undefined"));
  if (a.dim() == 0) {
    wrap_dim(dim, 0, "index_select");
    Tensor y = index_select(a.reshape({1}), 0, index);
    return index.dim() == 0 ? y.reshape({}) : y;
  }
  const int64_t d = wrap_dim(dim, a.dim(), "index_select");
  Tensor ix = as_index("index_select", a, index);
  // The maps are built on the host, so a GPU index comes over once, for the range check too.
  const Tensor ix_host = ix.device().is_cpu() ? ix : ix.to(Device::cpu());
  check_range("index_select", ix_host, a.size(d), d, a.sizes());
  trace::OpTimer timer("index_select", {a, index});
  Shape out_shape = a.sizes();
  out_shape[d] = ix.numel();
  Tensor y = remap("index_select", a, select_maps(out_shape, d, ix_host), out_shape, 0.0);
  timer.set_output(y);
  record("index_select", {a}, y, [in_shape = a.sizes(), d, ix](const TensorList& g, const TensorList&) {
    return TensorList{index_select_backward(g[0], in_shape, d, ix)};
  }, {ix});
  return y;
}

Tensor gather(const Tensor& a, int64_t dim, const Tensor& index) {
  EMBER_CHECK(a.defined() && index.defined(), "gather: an operand is undefined");
  EMBER_CHECK(index.dim() == a.dim(), "gather: the index has ", index.dim(), " dims (shape ", shape_str(index.sizes()),
              ") but the tensor has ", a.dim(), " (shape ", shape_str(a.sizes()), "); they must match");
  if (a.dim() == 0) {
    wrap_dim(dim, 0, "gather");
    return gather(a.reshape({1}), 0, index.reshape({1})).reshape({});
  }
  const int64_t d = wrap_dim(dim, a.dim(), "gather");
  for (int64_t k = 0; k < a.dim(); ++k)
    EMBER_CHECK(k == d || index.size(k) <= a.size(k), "gather: index of shape ", shape_str(index.sizes()),
                " is larger than the tensor of shape ", shape_str(a.sizes()), " in dim ", k, " (only dim ", d,
                " may differ)");
  Tensor ix = as_index("gather", a, index);
  check_range("gather", ix, a.size(d), d, a.sizes());
  trace::OpTimer timer("gather", {a, index});
  Tensor x = a.detach().contiguous();
  Tensor out = Tensor::empty(ix.sizes(), options_of(a));
  if (out.numel() > 0 && a.device().is_cuda()) {
    check_gpu_dims("gather", a.dim(), a.sizes());
    kc::GatherPlan plan;
    plan.ndim = static_cast<int>(a.dim());
    plan.dim = static_cast<int>(d);
    for (int64_t k = 0; k < a.dim(); ++k) {
      plan.index_sizes[k] = ix.size(k);
      plan.x_strides[k] = x.strides()[k];
    }
#if EMBER_WITH_CUDA
    kc::gather(a.element_size(), x.device_data(), static_cast<const int64_t*>(ix.device_data()), out.device_data(),
               plan, cuda::stream_of(a));
#endif
  } else if (out.numel() > 0) {
    const Shape& shape = ix.sizes();
    const Shape xs = x.strides();
    const int64_t nd = a.dim(), last = shape.back(), rows = out.numel() / last;
    const int64_t step = d == nd - 1 ? 0 : xs[nd - 1];  // the last dim's own stride (0 when it is the indexed dim)
    dispatch_all(a.dtype(), "gather", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.data<T>();
      const int64_t* ip = ix.data<int64_t>();
      T* yp = out.data<T>();
      kernels::cpu::parallel_for(0, rows, row_grain(last), [&](int64_t b, int64_t e) {
        walk_rows(shape, b, e, [&](int64_t row, const int64_t* c) {
          int64_t base = 0;
          for (int64_t k = 0; k + 1 < nd; ++k)
            if (k != d) base += c[k] * xs[k];
          const int64_t* ir = ip + row * last;
          T* yr = yp + row * last;
          for (int64_t j = 0; j < last; ++j) yr[j] = xp[base + j * step + ir[j] * xs[d]];
        });
      });
    });
  }
  timer.set_output(out);
  record("gather", {a}, out, [in_shape = a.sizes(), d, ix](const TensorList& g, const TensorList&) {
    return TensorList{scatter_add(zeros(in_shape, options_of(g[0])), d, ix, g[0])};
  }, {ix});
  return out;
}

Tensor scatter_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& src) {
  EMBER_CHECK(self.defined() && index.defined() && src.defined(), "scatter_add: an operand is undefined");
  check_device("scatter_add", self, src, "src");
  EMBER_CHECK(index.dim() == self.dim() && src.dim() == self.dim(), "scatter_add: self ", shape_str(self.sizes()),
              ", index ", shape_str(index.sizes()), " and src ", shape_str(src.sizes()),
              " must have the same number of dims");
  EMBER_CHECK(self.dtype() == src.dtype(), "scatter_add: self is ", self.str(), " but src is ", src.str(),
              "; convert one with .to(dtype)");
  if (self.dim() == 0) {
    wrap_dim(dim, 0, "scatter_add");
    return scatter_add(self.reshape({1}), 0, index.reshape({1}), src.reshape({1})).reshape({});
  }
  const int64_t d = wrap_dim(dim, self.dim(), "scatter_add");
  for (int64_t k = 0; k < self.dim(); ++k) {
    EMBER_CHECK(index.size(k) <= src.size(k), "scatter_add: index of shape ", shape_str(index.sizes()),
                " is larger than src of shape ", shape_str(src.sizes()), " in dim ", k);
    EMBER_CHECK(k == d || index.size(k) <= self.size(k), "scatter_add: index of shape ", shape_str(index.sizes()),
                " is larger than self of shape ", shape_str(self.sizes()), " in dim ", k, " (only dim ", d,
                " may differ)");
  }
  Tensor ix = as_index("scatter_add", self, index);
  check_range("scatter_add", ix, self.size(d), d, self.sizes());
  trace::OpTimer timer("scatter_add", {self, index, src});
  Tensor out = self.detach().clone();
  Tensor s = src.detach().contiguous();
  if (ix.numel() > 0 && self.device().is_cuda()) {
    dispatch_numeric(self.dtype(), "scatter_add", [](auto) {});  // the CPU's dtype error
    check_gpu_dims("scatter_add", self.dim(), self.sizes());
    kc::ScatterPlan plan;
    plan.ndim = static_cast<int>(self.dim());
    plan.dim = static_cast<int>(d);
    for (int64_t k = 0; k < self.dim(); ++k) {
      plan.index_sizes[k] = ix.size(k);
      plan.out_strides[k] = out.strides()[k];
      plan.src_strides[k] = s.strides()[k];
    }
#if EMBER_WITH_CUDA
    kc::scatter_add(cuda::elem_type(self.dtype()), out.device_data(), static_cast<const int64_t*>(ix.device_data()),
                    s.device_data(), plan, cuda::stream_of(self));
#endif
  } else if (ix.numel() > 0) {
    const Shape& shape = ix.sizes();
    const Shape os = out.strides(), ss = s.strides();
    const int64_t nd = self.dim(), last = shape.back(), rows = ix.numel() / last;
    const int64_t step = d == nd - 1 ? 0 : os[nd - 1];
    dispatch_numeric(self.dtype(), "scatter_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* op = out.data<T>();
      const T* sp = s.data<T>();
      const int64_t* ip = ix.data<int64_t>();
      auto run = [&](int64_t b, int64_t e) {
        walk_rows(shape, b, e, [&](int64_t row, const int64_t* c) {
          int64_t obase = 0, sbase = 0;
          for (int64_t k = 0; k + 1 < nd; ++k) {
            if (k != d) obase += c[k] * os[k];
            sbase += c[k] * ss[k];
          }
          const int64_t* ir = ip + row * last;
          const T* sr = sp + sbase;
          for (int64_t j = 0; j < last; ++j) op[obase + j * step + ir[j] * os[d]] += sr[j];
        });
      };
      // Slices of dim 0 never collide unless dim 0 is the scattered dim.
      if (d != 0 && nd >= 2) {
        const int64_t per = rows / shape[0];
        kernels::cpu::parallel_for(0, shape[0], row_grain(per * last),
                                   [&](int64_t b, int64_t e) { run(b * per, e * per); });
      } else {
        run(0, rows);
      }
    });
  }
  timer.set_output(out);
  const bool want_self = self.requires_grad(), want_src = src.requires_grad();
  record("scatter_add", {self, src}, out,
         [d, ix, src_shape = src.sizes(), want_self, want_src](const TensorList& g, const TensorList&) {
           Tensor gsrc;
           if (want_src) {
             gsrc = gather(g[0], d, ix);
             if (gsrc.sizes() != src_shape) {  // src positions the index does not reach get 0
               Shape pads;
               for (int64_t k = static_cast<int64_t>(src_shape.size()) - 1; k >= 0; --k) {
                 pads.push_back(0);
                 pads.push_back(src_shape[k] - gsrc.size(k));
               }
               gsrc = pad(gsrc, pads);
             }
           }
           return TensorList{want_self ? g[0] : Tensor(), gsrc};
         },
         {ix});
  return out;
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  EMBER_CHECK(a.defined(), "masked_fill: input is undefined");
  check_device("masked_fill", a, mask, "the mask");
  EMBER_CHECK(mask.dtype() == DType::boolean || mask.dtype() == DType::u8, "masked_fill: the mask must be bool, got ",
              mask.str());
  const Shape s = broadcast_shapes(a.sizes(), mask.sizes(), "masked_fill");
  EMBER_CHECK(s == a.sizes(), "masked_fill: a mask of shape ", shape_str(mask.sizes()),
              " does not broadcast to the tensor's shape ", shape_str(a.sizes()));
  // where's backward sends the gradient to a where the mask is false.
  return where(mask, scalar_tensor(value, options_of(a)), a);
}

Tensor flip(const Tensor& a, const Shape& dims) {
  EMBER_CHECK(a.defined(), "flip: input is undefined");
  trace::OpTimer timer("flip", {a});
  Maps maps = identity_maps(a.sizes());
  std::vector<bool> seen(std::max<int64_t>(a.dim(), 1), false);
  for (int64_t dim : dims) {
    const int64_t d = wrap_dim(dim, a.dim(), "flip");
    EMBER_CHECK(!seen[d], "flip: dim ", d, " repeated in ", shape_str(dims));
    seen[d] = true;
    if (a.dim() > 0) std::reverse(maps[d].begin(), maps[d].end());
  }
  Tensor y = remap("flip", a, maps, a.sizes(), 0.0);
  timer.set_output(y);
  record("flip", {a}, y, [dims](const TensorList& g, const TensorList&) { return TensorList{flip(g[0], dims)}; });
  return y;
}

Tensor pad(const Tensor& a, const Shape& pads, PadMode mode, double value) {
  EMBER_CHECK(a.defined(), "pad: input is undefined");
  trace::OpTimer timer("pad", {a});
  PadPlan p = pad_plan(a.sizes(), pads, mode);
  Tensor y = remap("pad", a, p.maps, p.out_shape, mode == PadMode::constant ? value : 0.0);
  timer.set_output(y);
  if (mode == PadMode::reflect) {
    record("pad_reflect", {a}, y, [in_shape = a.sizes(), pads](const TensorList& g, const TensorList&) {
      return TensorList{pad_reflect_backward(g[0], in_shape, pads)};
    });
    return y;
  }
  record("pad", {a}, y, [in_shape = a.sizes(), pads](const TensorList& g, const TensorList&) {
    // The gradient of a constant pad is the slice that holds the input (a pad by -pads when
    // some pads are negative, i.e. crop).
    if (std::all_of(pads.begin(), pads.end(), [](int64_t v) { return v >= 0; })) {
      Tensor r = g[0];
      const int64_t nd = static_cast<int64_t>(in_shape.size());
      for (size_t k = 0; k < pads.size() / 2; ++k) {
        const int64_t d = nd - 1 - static_cast<int64_t>(k);
        r = r.slice(d, pads[2 * k], pads[2 * k] + in_shape[d]);
      }
      return TensorList{r};
    }
    Shape neg(pads.size());
    for (size_t i = 0; i < pads.size(); ++i) neg[i] = -pads[i];
    return TensorList{pad(g[0], neg, PadMode::constant, 0.0)};
  });
  return y;
}

Tensor repeat(const Tensor& a, const Shape& repeats) {
  EMBER_CHECK(a.defined(), "repeat: input is undefined");
  EMBER_CHECK(static_cast<int64_t>(repeats.size()) >= a.dim(), "repeat: ", repeats.size(),
              " repeat counts for a tensor of shape ", shape_str(a.sizes()), "; give at least one per dim (", a.dim(),
              ")");
  for (int64_t r : repeats) EMBER_CHECK(r >= 0, "repeat: negative count in ", shape_str(repeats));
  trace::OpTimer timer("repeat", {a});
  const int64_t lead = static_cast<int64_t>(repeats.size()) - a.dim();
  Shape in(lead, 1);
  in.insert(in.end(), a.sizes().begin(), a.sizes().end());
  Shape out_shape(in.size());
  Maps maps(in.size());
  for (size_t d = 0; d < in.size(); ++d) {
    out_shape[d] = in[d] * repeats[d];
    maps[d].resize(out_shape[d]);
    for (int64_t j = 0; j < out_shape[d]; ++j) maps[d][j] = j % in[d];
  }
  Tensor y = remap("repeat", a.detach().reshape(in), maps, out_shape, 0.0);
  timer.set_output(y);
  record("repeat", {a}, y, [in, repeats, in_shape = a.sizes()](const TensorList& g, const TensorList&) {
    // Sum over the tiles: view [r0, n0, r1, n1, ...] and reduce the r dims.
    Shape split, tile_dims;
    for (size_t d = 0; d < in.size(); ++d) {
      tile_dims.push_back(static_cast<int64_t>(split.size()));
      split.push_back(repeats[d]);
      split.push_back(in[d]);
    }
    Tensor r = g[0].reshape(split);
    if (!tile_dims.empty()) r = sum(r, tile_dims);
    return TensorList{r.reshape(in_shape)};
  });
  return y;
}

Tensor roll(const Tensor& a, int64_t shift, int64_t dim) {
  EMBER_CHECK(a.defined(), "roll: input is undefined");
  const int64_t d = wrap_dim(dim, a.dim(), "roll");
  trace::OpTimer timer("roll", {a});
  Maps maps = identity_maps(a.sizes());
  if (a.dim() > 0 && a.size(d) > 0) {
    const int64_t n = a.size(d);
    for (int64_t j = 0; j < n; ++j) maps[d][j] = (((j - shift) % n) + n) % n;
  }
  Tensor y = remap("roll", a, maps, a.sizes(), 0.0);
  timer.set_output(y);
  record("roll", {a}, y, [shift, d](const TensorList& g, const TensorList&) { return TensorList{roll(g[0], -shift, d)}; });
  return y;
}

Tensor tril(const Tensor& a, int64_t diagonal) { return tri("tril", a, diagonal, true); }
Tensor triu(const Tensor& a, int64_t diagonal) { return tri("triu", a, diagonal, false); }

}  // namespace ember
