// Views, copies and joins. A view shares storage and records a backward that maps the
// gradient back to the input's shape (reshape back, permute back, sum an expand, scatter a
// slice into zeros); that backward is itself made of views and ops, so it differentiates too.
#include "ember/ops/shape.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/copy.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#include "ember/kernels/cuda/elementwise.h"
#endif
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"

namespace ember {

using autograd::record;

namespace {
Tensor view_of(const Tensor& t, Shape sizes, Shape strides, int64_t offset) {
  return Tensor::make_view(t.storage(), std::move(sizes), std::move(strides), offset, t.dtype());
}

// Sizes with one -1 inferred from numel.
Shape infer_size(const Shape& sizes, int64_t numel, const char* op, const Shape& from) {
  Shape out = sizes;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      EMBER_CHECK(infer < 0, op, ": only one dim can be -1 in ", shape_str(sizes));
      infer = static_cast<int64_t>(i);
    } else {
      EMBER_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in ", shape_str(sizes));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    EMBER_CHECK(known != 0 && numel % known == 0, op, ": cannot view ", shape_str(from), " (", numel,
                " elements) as ", shape_str(sizes));
    out[infer] = numel / known;
  }
  EMBER_CHECK(shape_numel(out) == numel, op, ": cannot view ", shape_str(from), " (", numel, " elements) as ",
              shape_str(sizes), " (", shape_numel(out), " elements)");
  return out;
}

// Strides for viewing `t` as `sizes` without a copy, or empty when impossible (NumPy's rule:
// each run of merged old dims must be contiguous within itself).
std::optional<Shape> view_strides(const Tensor& t, const Shape& sizes) {
  const Shape& os = t.sizes();
  const Shape& ost = t.strides();
  if (t.numel() == 0 || t.is_contiguous()) return contiguous_strides(sizes);
  Shape st(sizes.size());
  int64_t view_d = static_cast<int64_t>(sizes.size()) - 1;
  int64_t chunk_base_stride = ost.empty() ? 1 : ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || sizes[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base_stride;
        view_numel *= sizes[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}
}  // namespace

// ---- copies and conversions ----

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  trace::OpTimer timer("clone", {*this});
  Tensor out = Tensor::empty(sizes(), {.dtype = dtype(), .device = device()});
  copy_into(out, *this);
  record("clone", {*this}, out, [](const TensorList& g, const TensorList&) { return TensorList{g[0]}; });
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = Tensor::empty(sizes(), {.dtype = dt, .device = device()});
  copy_into(out, *this);
  if (is_floating(dt)) {
    record("to", {*this}, out, [from = dtype()](const TensorList& g, const TensorList&) {
      return TensorList{g[0].to(from)};
    });
  }
  return out;
}

// A copy to another device; the gradient flows back to this one.
Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  if (d.is_cuda()) cuda::check_device(d, "to");
  trace::OpTimer timer("to_device", {*this});
  Tensor out = Tensor::empty(sizes(), {.dtype = dtype(), .device = d});
  copy_into(out, *this);
  record("to_device", {*this}, out, [from = device()](const TensorList& g, const TensorList&) {
    return TensorList{g[0].to(from)};
  });
  return out;
}

// ---- views ----

namespace {
// t's data seen with other sizes and the strides that make it the same elements in order.
Tensor recorded_view(const Tensor& t, Shape sizes, Shape strides) {
  Tensor y = view_of(t, std::move(sizes), std::move(strides), t.offset());
  record("view", {t}, y, [in = t.sizes()](const TensorList& g, const TensorList&) {
    return TensorList{g[0].reshape(in)};
  });
  return y;
}
}  // namespace

Tensor Tensor::view(const Shape& s) const {
  Shape sizes = infer_size(s, numel(), "view", this->sizes());
  auto st = view_strides(*this, sizes);
  EMBER_CHECK(st.has_value(), "view: a tensor of shape ", shape_str(this->sizes()), " and strides ",
              shape_str(strides()), " cannot be viewed as ", shape_str(sizes), " without a copy; use reshape()");
  return recorded_view(*this, std::move(sizes), std::move(*st));
}

Tensor Tensor::reshape(const Shape& s) const {
  Shape sizes = infer_size(s, numel(), "reshape", this->sizes());
  if (auto st = view_strides(*this, sizes)) return recorded_view(*this, std::move(sizes), std::move(*st));
  return contiguous().view(sizes);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  EMBER_CHECK(start <= end, "flatten: start_dim ", start, " > end_dim ", end);
  Shape s;
  for (int64_t d = 0; d < start; ++d) s.push_back(sizes()[d]);
  int64_t m = 1;
  for (int64_t d = start; d <= end; ++d) m *= sizes()[d];
  s.push_back(m);
  for (int64_t d = end + 1; d < dim(); ++d) s.push_back(sizes()[d]);
  return reshape(s);
}

Tensor Tensor::permute(const Shape& dims) const {
  EMBER_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a tensor of shape ",
              shape_str(sizes()));
  Shape sz(dim()), st(dim()), inv(dim());
  SmallVector<bool, 8> seen(static_cast<size_t>(dim()), false);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    EMBER_CHECK(!seen[d], "permute: dim ", d, " repeated in ", shape_str(dims));
    seen[d] = true;
    sz[i] = sizes()[d];
    st[i] = strides()[d];
    inv[d] = i;
  }
  Tensor y = view_of(*this, std::move(sz), std::move(st), offset());
  record("permute", {*this}, y, [inv](const TensorList& g, const TensorList&) { return TensorList{g[0].permute(inv)}; });
  return y;
}

// Two dims swapped: a view, as permute makes, without the permutation (every linear layer's
// backward asks for a few of these).
Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  if (dim() == 0) return permute({});  // dims 0 / -1 of a 0-dim tensor: nothing to swap
  Shape sz = sizes(), st = strides();
  std::swap(sz[d0], sz[d1]);
  std::swap(st[d0], st[d1]);
  Tensor y = view_of(*this, std::move(sz), std::move(st), offset());
  record("transpose", {*this}, y, [d0, d1](const TensorList& g, const TensorList&) {
    return TensorList{g[0].transpose(d0, d1)};
  });
  return y;
}

Tensor Tensor::expand(const Shape& s) const {
  EMBER_CHECK(static_cast<int64_t>(s.size()) >= dim(), "expand: target ", shape_str(s), " has fewer dims than ",
              shape_str(sizes()));
  const int64_t lead = static_cast<int64_t>(s.size()) - dim();
  Shape sz(s.size()), st(s.size());
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < lead) {
      EMBER_CHECK(s[i] >= 0, "expand: size -1 is not allowed for a new leading dim in ", shape_str(s));
      sz[i] = s[i];
      st[i] = 0;
      continue;
    }
    int64_t cur = sizes()[i - lead];
    int64_t want = s[i] == -1 ? cur : s[i];
    EMBER_CHECK(cur == want || cur == 1, "expand: cannot expand ", shape_str(sizes()), " to ", shape_str(s),
                " (dim ", i, ": ", cur, " -> ", want, ")");
    sz[i] = want;
    st[i] = cur == want ? strides()[i - lead] : 0;
  }
  if (sz == sizes()) return *this;
  Tensor y = view_of(*this, std::move(sz), std::move(st), offset());
  record("expand", {*this}, y, [in = sizes()](const TensorList& g, const TensorList&) {
    return TensorList{sum_to_size(g[0], in)};
  });
  return y;
}

Tensor Tensor::squeeze() const {
  Shape s;
  for (int64_t v : sizes())
    if (v != 1) s.push_back(v);
  return s.size() == sizes().size() ? *this : reshape(s);
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (sizes()[d] != 1) return *this;
  Shape s = sizes();
  s.erase(s.begin() + d);
  Shape st = strides();
  st.erase(st.begin() + d);
  Tensor y = view_of(*this, std::move(s), std::move(st), offset());
  record("squeeze", {*this}, y, [in = sizes()](const TensorList& g, const TensorList&) { return TensorList{g[0].reshape(in)}; });
  return y;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = sizes(), st = strides();
  int64_t stride_here = d < dim() ? sizes()[d] * strides()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride_here);
  Tensor y = view_of(*this, std::move(s), std::move(st), offset());
  record("unsqueeze", {*this}, y, [d](const TensorList& g, const TensorList&) { return TensorList{g[0].squeeze(d)}; });
  return y;
}

namespace {
// The backward of slice: g placed into zeros of the input's shape. Differentiable: its own
// backward takes the same slice again.
Tensor slice_backward(const Tensor& g, const Shape& in_shape, int64_t dim, int64_t start, int64_t end, int64_t step) {
  Tensor out = zeros(in_shape, options_of(g));
  copy_into(out.slice(dim, start, end, step), g.detach());
  record("slice_backward", {g}, out, [dim, start, end, step](const TensorList& gg, const TensorList&) {
    return TensorList{gg[0].slice(dim, start, end, step)};
  });
  return out;
}
}  // namespace

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  EMBER_CHECK(dim() > 0, "slice: a 0-dim tensor has no dim to slice (", str(), ")");
  d = wrap_dim(d, dim(), "slice");
  EMBER_CHECK(step > 0, "slice: step must be > 0, got ", step);
  const int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = sizes(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor y = view_of(*this, std::move(s), std::move(st), offset() + start * strides()[d]);
  record("slice", {*this}, y, [in = sizes(), d, start, end, step](const TensorList& g, const TensorList&) {
    // Without create_graph, a gradient already waiting for the input (another slice's, as when
    // the parts of a split each return one) takes this part in place: no zero-filled copy of
    // the whole input and no add of two such.
    Tensor acc = autograd::take_pending_grad_view(0);
    if (acc.defined() && acc.dtype() == g[0].dtype() && acc.device() == g[0].device()) {
      add_into(acc.slice(d, start, end, step), g[0]);
      return TensorList{acc};
    }
    Tensor full = slice_backward(g[0], in, d, start, end, step);
    return TensorList{acc.defined() ? add_into(std::move(acc), full) : full};
  });
  return y;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  EMBER_CHECK(dim() > 0, "select: a 0-dim tensor has no dim to index (", str(), "); use item()");
  d = wrap_dim(d, dim(), "select");
  const int64_t n = sizes()[d];
  EMBER_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d, " of size ", n,
              " (shape ", shape_str(sizes()), ")");
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

// ---- joins and splits ----

namespace {
// cat where every piece is dense and of out's dtype: seen as [rows, bytes] matrices (rows: the
// product of the dims before `dim`), out's rows are the pieces' rows side by side, copied in one
// pass (one launch on the GPU, where a copy per piece took one each: a DenseNet concatenates
// every layer). False, having done nothing, for any other case.
bool cat_dense_pieces(const Tensor& out, const TensorList& ts, int64_t dim) {
  for (const auto& t : ts)
    if (t.dtype() != out.dtype() || (t.numel() > 0 && !t.is_contiguous())) return false;  // empty: no bytes
  int64_t rows = 1;
  for (int64_t d = 0; d < dim; ++d) rows *= out.sizes()[d];
  if (rows == 0 || out.numel() == 0) return true;
  std::vector<const char*> pieces;
  std::vector<int64_t> widths;  // bytes per row
  for (const auto& t : ts) {
    pieces.push_back(static_cast<const char*>(t.device_data()));
    widths.push_back(t.numel() / rows * static_cast<int64_t>(t.element_size()));
  }
#if EMBER_WITH_CUDA
  if (out.device().is_cuda()) {
    kernels::cuda::cat_rows(static_cast<int>(ts.size()), pieces.data(), widths.data(), rows,
                            static_cast<char*>(out.device_data()), cuda::stream_of(out));
    return true;
  }
#endif
  char* dst = static_cast<char*>(out.raw_data());
  const int64_t row_bytes = out.numel() / rows * static_cast<int64_t>(out.element_size());
  auto copy_rows = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      char* row = dst + r * row_bytes;
      for (size_t i = 0; i < pieces.size(); ++i) {
        if (widths[i] > 0) std::memcpy(row, pieces[i] + r * widths[i], widths[i]);
        row += widths[i];
      }
    }
  };
  // Tasks of about 64 KiB: a small cat runs on the calling thread alone.
  kernels::cpu::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(row_bytes, 1)),
                             copy_rows);
  return true;
}
}  // namespace

Tensor cat(const TensorList& ts, int64_t dim) {
  EMBER_CHECK(!ts.empty(), "cat: no tensors given");
  const Tensor& first = ts[0];
  EMBER_CHECK(first.dim() > 0, "cat: 0-dim tensors cannot be concatenated (", first.str(), "); use stack");
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape out_shape = first.sizes();
  int64_t total = 0;
  DType dt = first.dtype();
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    EMBER_CHECK(t.dim() == first.dim(), "cat: tensor ", i, " has shape ", shape_str(t.sizes()), " but tensor 0 has ",
                shape_str(first.sizes()), " (same number of dims needed)");
    EMBER_CHECK(t.device() == first.device(), "cat: tensor ", i, " is on ", t.device().str(), ", tensor 0 on ",
                first.device().str());
    for (int64_t d = 0; d < t.dim(); ++d)
      EMBER_CHECK(d == dim || t.sizes()[d] == first.sizes()[d], "cat: tensor ", i, " has shape ", shape_str(t.sizes()),
                  ", tensor 0 has ", shape_str(first.sizes()), "; they may differ only in dim ", dim);
    total += t.sizes()[dim];
    dt = promote_types(dt, t.dtype());
  }
  out_shape[dim] = total;
  trace::OpTimer timer("cat", ts);
  Tensor out = Tensor::empty(out_shape, {.dtype = dt, .device = first.device()});
  Shape sizes;
  for (const auto& t : ts) sizes.push_back(t.sizes()[dim]);
  if (!cat_dense_pieces(out, ts, dim)) {
    int64_t pos = 0;
    for (const auto& t : ts) {
      copy_into(out.detach().slice(dim, pos, pos + t.sizes()[dim]), t);
      pos += t.sizes()[dim];
    }
  }
  timer.set_output(out);
  record("cat", ts, out, [dim, sizes](const TensorList& g, const TensorList&) {
    TensorList parts = split(g[0], sizes, dim);
    for (size_t i = 0; i < parts.size(); ++i)
      if (parts[i].dtype() != autograd::input_dtype(i)) parts[i] = parts[i].to(autograd::input_dtype(i));
    return parts;
  });
  return out;
}

Tensor stack(const TensorList& ts, int64_t dim) {
  EMBER_CHECK(!ts.empty(), "stack: no tensors given");
  dim = wrap_dim(dim, ts[0].dim() + 1, "stack");
  TensorList u;
  for (size_t i = 0; i < ts.size(); ++i) {
    EMBER_CHECK(ts[i].sizes() == ts[0].sizes(), "stack: tensor ", i, " has shape ", shape_str(ts[i].sizes()),
                " but tensor 0 has ", shape_str(ts[0].sizes()));
    u.push_back(ts[i].unsqueeze(dim));
  }
  return cat(u, dim);
}

TensorList split(const Tensor& a, const Shape& sizes, int64_t dim) {
  EMBER_CHECK(a.dim() > 0, "split: a 0-dim tensor cannot be split (", a.str(), ")");
  dim = wrap_dim(dim, a.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    EMBER_CHECK(s >= 0, "split: negative size in ", shape_str(sizes));
    total += s;
  }
  EMBER_CHECK(total == a.sizes()[dim], "split: sizes ", shape_str(sizes), " sum to ", total, " but dim ", dim,
              " of ", shape_str(a.sizes()), " has ", a.sizes()[dim]);
  TensorList out;
  int64_t pos = 0;
  for (int64_t s : sizes) {
    out.push_back(a.slice(dim, pos, pos + s));
    pos += s;
  }
  return out;
}

TensorList split(const Tensor& a, int64_t split_size, int64_t dim) {
  EMBER_CHECK(split_size > 0, "split: split_size must be > 0, got ", split_size);
  EMBER_CHECK(a.dim() > 0, "split: a 0-dim tensor cannot be split (", a.str(), ")");
  dim = wrap_dim(dim, a.dim(), "split");
  Shape sizes;
  for (int64_t pos = 0; pos < a.sizes()[dim]; pos += split_size)
    sizes.push_back(std::min(split_size, a.sizes()[dim] - pos));
  return split(a, sizes, dim);
}

TensorList chunk(const Tensor& a, int64_t chunks, int64_t dim) {
  EMBER_CHECK(chunks > 0, "chunk: chunks must be > 0, got ", chunks);
  EMBER_CHECK(a.dim() > 0, "chunk: a 0-dim tensor cannot be split (", a.str(), ")");
  dim = wrap_dim(dim, a.dim(), "chunk");
  int64_t n = a.sizes()[dim];
  return split(a, std::max<int64_t>(1, (n + chunks - 1) / chunks), dim);
}

// ---- Tensor's math conveniences ----
Tensor Tensor::sum() const { return ember::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return ember::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return ember::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return ember::mean(*this, dims, keepdim); }
Tensor Tensor::exp() const { return ember::exp(*this); }
Tensor Tensor::log() const { return ember::log(*this); }
Tensor Tensor::sqrt() const { return ember::sqrt(*this); }
Tensor Tensor::abs() const { return ember::abs(*this); }
Tensor Tensor::square() const { return ember::square(*this); }
Tensor Tensor::pow(double e) const { return ember::pow(*this, e); }

}  // namespace ember
