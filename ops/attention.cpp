// Softmax and attention. softmax / log_softmax are fused kernels over a contiguous copy seen
// as [outer, n, inner] (n the softmax dim): one pass for the max, one for the sum of
// exponentials (accumulated in f64), one to write. Their backwards use the op's own output
// (save_outputs), written in ops so they differentiate again:
//   softmax:      dx = y * (g - sum(g * y))
//   log_softmax:  dx = g - exp(y) * sum(g)
// Attention is a composite of those ops (matmul, softmax, matmul). On the GPU the same
// arithmetic runs in kernels/cuda/softmax.cu, except that f32 attention with head dims up to
// 256 runs fused (kernels/cuda/flash_attention.cu: no Tq x Tk matrix in memory, the row
// log-sum-exp saved for the backward). Its backward is the fused kernel when no graph is being
// built, and otherwise the composite's gradients written in ops (recomputing the
// probabilities), so that second derivatives work; the forward is the same either way.
#include "ember/ops/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/narrow_saved.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/precision.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/softmax.h"
#include "ember/kernels/cuda/flash_attention.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/ops/elementwise.h"
#include "ember/ops/linalg.h"
#include "ember/ops/reduce.h"

namespace ember {

using autograd::record;
namespace cpu = kernels::cpu;

namespace {

// y = softmax or log_softmax of x along the middle dim of [outer, n, inner] (contiguous).
template <typename T>
void softmax_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (inner == 1) {
    cpu::parallel_for(0, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* xr = x + o * n;
        T* yr = y + o * n;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
        if (std::isnan(static_cast<double>(m)) || m == -std::numeric_limits<T>::infinity())
          m = T(0);  // all -inf (or NaN) rows: let the arithmetic give NaN / -inf
        // exp into y (a loop of its own, free of the f64 sum's dependency chain), then the sum
        for (int64_t j = 0; j < n; ++j) yr[j] = std::exp(xr[j] - m);
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += yr[j];
        if (log) {
          const T ls = static_cast<T>(std::log(s));
          for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - m - ls;
        } else {
          const T inv = static_cast<T>(1.0 / s);
          for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
        }
      }
    });
    return;
  }
  // Softmax dim not innermost: work on blocks of up to 256 inner columns at once, so the
  // loops run along contiguous memory.
  constexpr int64_t kBlock = 256;
  const int64_t nblocks = (inner + kBlock - 1) / kBlock;
  cpu::parallel_for(0, outer * nblocks, std::max<int64_t>(1, 64 / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    std::vector<T> mx(kBlock);
    std::vector<double> sm(kBlock);
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / nblocks, c0 = (t % nblocks) * kBlock, w = std::min(kBlock, inner - c0);
      const T* xb = x + o * n * inner + c0;
      T* yb = y + o * n * inner + c0;
      std::fill(mx.begin(), mx.begin() + w, -std::numeric_limits<T>::infinity());
      std::fill(sm.begin(), sm.begin() + w, 0.0);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < w; ++i) mx[i] = std::max(mx[i], xb[j * inner + i]);
      for (int64_t i = 0; i < w; ++i)
        if (std::isnan(static_cast<double>(mx[i])) || mx[i] == -std::numeric_limits<T>::infinity()) mx[i] = T(0);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < w; ++i) {
          T ex = std::exp(xb[j * inner + i] - mx[i]);
          if (!log) yb[j * inner + i] = ex;
          sm[i] += ex;
        }
      if (log) {
        for (int64_t i = 0; i < w; ++i) mx[i] += static_cast<T>(std::log(sm[i]));
        for (int64_t j = 0; j < n; ++j)
          for (int64_t i = 0; i < w; ++i) yb[j * inner + i] = xb[j * inner + i] - mx[i];
      } else {
        for (int64_t i = 0; i < w; ++i) sm[i] = 1.0 / sm[i];
        for (int64_t j = 0; j < n; ++j)
          for (int64_t i = 0; i < w; ++i) yb[j * inner + i] *= static_cast<T>(sm[i]);
      }
    }
  });
}

Tensor softmax_forward(const char* op, const Tensor& x, int64_t dim, bool log) {
  EMBER_CHECK(x.defined(), op, ": input is undefined");
  EMBER_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": expected a f32 or f64 input, got ", x.str(),
              " (convert with .to(DType::f32))");
  const int64_t d = wrap_dim(dim, x.dim(), op);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.sizes()[i];
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.sizes()[i];
  const int64_t n = x.sizes()[d];
  Tensor out = Tensor::empty(x.sizes(), {.dtype = x.dtype(), .device = x.device()});
  if (out.numel() > 0) {
    Tensor xc = x.detach().contiguous();
    if (x.device().is_cuda()) {
#if EMBER_WITH_CUDA
      kernels::cuda::softmax(cuda::elem_type(x.dtype()), xc.device_data(), out.device_data(), outer, n, inner, log,
                             cuda::stream_of(x));
#endif
      return out;
    }
    dispatch_floating(x.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      softmax_kernel(xc.data<T>(), out.data<T>(), outer, n, inner, log);
    });
  }
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  EMBER_CHECK(x.defined(), "softmax: input is undefined");
  if (x.dim() == 0) {
    wrap_dim(dim, 1, "softmax");
    return softmax(x.reshape({1}), 0).reshape({});
  }
  trace::OpTimer timer("softmax", {x});
  Tensor y = softmax_forward("softmax", x, dim, false);
  timer.set_output(y);
  const int64_t d = wrap_dim(dim, x.dim(), "softmax");
  record("softmax", {x}, y, [d](const TensorList& g, const TensorList& out) {
    const Tensor& s = out[0];
    return TensorList{mul(s, sub(g[0], sum(mul(g[0], s), {d}, true)))};
  }, {}, /*save_outputs=*/true);
  return y;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  EMBER_CHECK(x.defined(), "log_softmax: input is undefined");
  if (x.dim() == 0) {
    wrap_dim(dim, 1, "log_softmax");
    return log_softmax(x.reshape({1}), 0).reshape({});
  }
  trace::OpTimer timer("log_softmax", {x});
  Tensor y = softmax_forward("log_softmax", x, dim, true);
  timer.set_output(y);
  const int64_t d = wrap_dim(dim, x.dim(), "log_softmax");
  record("log_softmax", {x}, y, [d](const TensorList& g, const TensorList& out) {
    return TensorList{sub(g[0], mul(exp(out[0]), sum(g[0], {d}, true)))};
  }, {}, /*save_outputs=*/true);
  return y;
}

namespace {

// softmax(q k^T * s + mask) with the causal block, composed of differentiable ops: the
// composite path's probabilities, and what the fused path's backward recomputes under
// create_graph.
Tensor attention_probs(const Tensor& q, const Tensor& k, const Tensor& attn_mask, bool is_causal, double s) {
  const int64_t Tq = q.size(-2), Tk = k.size(-2);
  Tensor scores = matmul(mul(q, s), k.transpose(-2, -1));  // [..., Tq, Tk]
  if (attn_mask.defined()) {
    if (attn_mask.dtype() == DType::boolean) scores = where(attn_mask, scores, -INFINITY);
    else scores = add(scores, attn_mask);
  }
  if (is_causal) {
    Tensor rows = arange(static_cast<double>(Tq), {.dtype = DType::i64, .device = q.device()}).reshape({Tq, 1});
    Tensor cols = arange(static_cast<double>(Tk), {.dtype = DType::i64, .device = q.device()}).reshape({1, Tk});
    scores = where(le(cols, rows), scores, -INFINITY);
  }
  return softmax(scores, -1);
}

#if EMBER_WITH_CUDA
// The fused (flash) path: f32 CUDA tensors, head dims 1..256, at least one query and one key.
// Everything else (f64, longer heads, a mask that wants its own gradient) is the composite.
bool fused_attention_applies(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& attn_mask,
                             const Shape& batch) {
  if (!q.device().is_cuda() || q.dtype() != DType::f32) return false;
  if (!kernels::cuda::flash_attention_supported(q.size(-1), v.size(-1))) return false;
  if (q.size(-2) == 0 || k.size(-2) == 0 || shape_numel(batch) == 0) return false;
  if (attn_mask.defined() && attn_mask.requires_grad() && grad_enabled()) return false;  // no fused d(mask)
  return true;
}

// Tensors of shape [batch..., T, X] seen by the kernels as [B1, B2, T, X]: each is expanded to
// the common batch shape (broadcast dims get stride 0), size-1 dims are dropped and neighbouring
// dims merged where every tensor's strides allow; more than two dims left (rare) -> dense copies.
struct FlashViews {
  int64_t B1 = 1, B2 = 1;
  std::vector<kernels::cuda::FlashTensor> t;
};

bool collapse_batch(const Shape& batch, const std::vector<Tensor>& ts, FlashViews& out) {
  const size_t nb = batch.size(), n = ts.size();
  std::vector<int64_t> sizes;
  std::vector<std::vector<int64_t>> strides(n);
  for (size_t d = 0; d < nb; ++d) {
    if (batch[d] == 1) continue;
    bool merge = !sizes.empty();
    for (size_t i = 0; merge && i < n; ++i) merge = strides[i].back() == ts[i].stride(d) * batch[d];
    if (merge) {
      sizes.back() *= batch[d];
      for (size_t i = 0; i < n; ++i) strides[i].back() = ts[i].stride(d);
    } else {
      sizes.push_back(batch[d]);
      for (size_t i = 0; i < n; ++i) strides[i].push_back(ts[i].stride(d));
    }
  }
  if (sizes.size() > 2) return false;
  while (sizes.size() < 2) {
    sizes.insert(sizes.begin(), 1);
    for (size_t i = 0; i < n; ++i) strides[i].insert(strides[i].begin(), 0);
  }
  out.B1 = sizes[0];
  out.B2 = sizes[1];
  out.t.assign(n, {});
  for (size_t i = 0; i < n; ++i) {
    out.t[i].data = static_cast<const float*>(ts[i].device_data());
    out.t[i].stride[0] = strides[i][0];
    out.t[i].stride[1] = strides[i][1];
    // A size-1 row or column dim (a mask broadcast over queries or keys) is read with stride 0:
    // the kernels index every row and column, and a contiguous size-1 dim keeps a real stride.
    const int64_t r = static_cast<int64_t>(nb);
    out.t[i].stride[2] = ts[i].size(r) == 1 ? 0 : ts[i].stride(r);
    out.t[i].stride[3] = ts[i].size(r + 1) == 1 ? 0 : ts[i].stride(r + 1);
  }
  return true;
}

// ts: detached [..., T, X] tensors; replaced by the (expanded, maybe copied) views the kernels read,
// which the caller keeps alive until the launch.
FlashViews flash_views(const Shape& batch, std::vector<Tensor>& ts) {
  for (Tensor& t : ts) {
    Shape full = batch;
    full.push_back(t.size(-2));
    full.push_back(t.size(-1));
    t = t.expand(full);
  }
  FlashViews v;
  if (collapse_batch(batch, ts, v)) return v;
  for (Tensor& t : ts) t = t.contiguous();
  EMBER_CHECK(collapse_batch(batch, ts, v), "scaled_dot_product_attention: cannot lay out the batch dims ",
              shape_str(batch), " for the fused kernel");
  return v;
}

Shape with_tail(const Shape& batch, std::initializer_list<int64_t> tail) {
  Shape s = batch;
  s.insert(s.end(), tail);
  return s;
}

// The fused kernels' arguments for q, k, v and the additive f32 mask (a bool mask becomes 0 where
// kept, -inf where blocked); `extra` (the output gradient) shares the batch layout.
struct FlashCall {
  std::vector<Tensor> keep;  // the views the kernels read
  kernels::cuda::FlashAttentionArgs args;
  kernels::cuda::FlashTensor extra;
};

FlashCall flash_call(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool is_causal,
                     double s, const Shape& batch, const Tensor& extra = Tensor()) {
  FlashCall c;
  c.keep = {q.detach(), k.detach(), v.detach()};
  if (mask.defined()) {
    Tensor m = mask.detach();
    if (m.dtype() == DType::boolean) m = where(m, zeros({}, {.dtype = DType::f32, .device = q.device()}), -INFINITY);
    Shape full = batch;  // the scores' shape: size-1 query/key dims of the mask get stride 0
    full.push_back(q.size(-2));
    full.push_back(k.size(-2));
    c.keep.push_back(m.expand(full));
  }
  if (extra.defined()) c.keep.push_back(extra.detach());
  FlashViews fv = flash_views(batch, c.keep);
  auto& a = c.args;
  a.B1 = fv.B1;
  a.B2 = fv.B2;
  a.Tq = q.size(-2);
  a.Tk = k.size(-2);
  a.D = q.size(-1);
  a.Dv = v.size(-1);
  a.q = fv.t[0];
  a.k = fv.t[1];
  a.v = fv.t[2];
  if (mask.defined()) a.mask = fv.t[3];
  if (extra.defined()) c.extra = fv.t.back();
  a.causal = is_causal;
  a.scale = static_cast<float>(s);
  a.shared_accumulators = attention_kernel() == AttentionKernel::shared_accumulators;
  return c;
}

Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& attn_mask, bool is_causal,
                       double s, const Shape& batch) {
  trace::OpTimer timer("scaled_dot_product_attention", {q, k, v});
  const int64_t Tq = q.size(-2), D = q.size(-1), Dv = v.size(-1);
  const TensorOptions f32_on{.dtype = DType::f32, .device = q.device()};
  Tensor out = Tensor::empty(with_tail(batch, {Tq, Dv}), f32_on);
  // each row's shift and sum of exponentials, for the backward
  Tensor stats = Tensor::empty({2, shape_numel(batch) * Tq}, f32_on);
  {
    FlashCall c = flash_call(q, k, v, attn_mask, is_causal, s, batch);
    kernels::cuda::flash_attention_forward(c.args, static_cast<float*>(out.device_data()),
                                           static_cast<float*>(stats.device_data()), cuda::math_mode(),
                                           cuda::stream_of(q));
  }
  timer.set_output(out);
  // The backward: the fused kernel for a first-order backward; under create_graph (grad mode on
  // and something that requires grad) the same gradients from differentiable ops, recomputing
  // the probabilities, so that they differentiate again.
  // Under `medium` every product of the backward reads q, k and v as BF16 operands (the
  // recomputed scores, dV, dP, dQ, dK), so they are kept for it in BF16 (autograd/narrow_saved.h):
  // the same values, half the memory. The output stays f32 (D = rowsum(dO * O) reads it in f32).
  // One copy for one tensor passed twice (k = v).
  const bool bf16 = cuda::math_mode() == kernels::cuda::MathMode::bf16;
  const Tensor kq = autograd::narrow_for_backward(q, bf16);
  const Tensor kk = k.impl() == q.impl() ? kq : autograd::narrow_for_backward(k, bf16);
  const Tensor kv = v.impl() == q.impl() ? kq : v.impl() == k.impl() ? kk : autograd::narrow_for_backward(v, bf16);
  record("scaled_dot_product_attention", {q, k, v}, out,
         [kq, kk, kv, attn_mask, is_causal, s, stats, batch, D, Dv](const TensorList& g, const TensorList& outs) {
           const Tensor q = autograd::widen_saved(kq, 0), k = autograd::widen_saved(kk, 1),
                        v = autograd::widen_saved(kv, 2);
           const bool rq = q.requires_grad(), rk = k.requires_grad(), rv = v.requires_grad();
           if (!autograd::needs_grad({q, k, v, g[0]})) {
             const int64_t Tq = q.size(-2), Tk = k.size(-2);
             const TensorOptions opt{.dtype = DType::f32, .device = q.device()};
             Tensor dq = Tensor::empty(with_tail(batch, {Tq, D}), opt);
             Tensor dk = Tensor::empty(with_tail(batch, {Tk, D}), opt);
             Tensor dv = Tensor::empty(with_tail(batch, {Tk, Dv}), opt);
             Tensor rowsum = Tensor::empty(with_tail(batch, {Tq}), opt);
             Tensor o = outs[0].detach();
             FlashCall c = flash_call(q, k, v, attn_mask, is_causal, s, batch, g[0]);
             kernels::cuda::flash_attention_backward(
                 c.args, static_cast<const float*>(o.device_data()), static_cast<const float*>(stats.device_data()),
                 c.extra, static_cast<float*>(dq.device_data()), static_cast<float*>(dk.device_data()),
                 static_cast<float*>(dv.device_data()), static_cast<float*>(rowsum.device_data()),
                 cuda::math_mode(), cuda::stream_of(q));
             return TensorList{rq ? sum_to_size(dq, q.sizes()) : Tensor(), rk ? sum_to_size(dk, k.sizes()) : Tensor(),
                               rv ? sum_to_size(dv, v.sizes()) : Tensor()};
           }
           // Composite: P = softmax(S), dV = P^T g, dP = g V^T, dS = P (dP - rowsum(dP P)),
           // dQ = s dS K, dK = s dS^T Q.
           Tensor p = attention_probs(q, k, attn_mask, is_causal, s);
           Tensor dp = matmul(g[0], v.transpose(-2, -1));
           Tensor ds = mul(p, sub(dp, sum(mul(dp, p), {-1}, true)));
           Tensor dq = rq ? sum_to_size(mul(matmul(ds, k), s), q.sizes()) : Tensor();
           Tensor dk = rk ? sum_to_size(mul(matmul(ds.transpose(-2, -1), q), s), k.sizes()) : Tensor();
           Tensor dv = rv ? sum_to_size(matmul(p.transpose(-2, -1), g[0]), v.sizes()) : Tensor();
           return TensorList{dq, dk, dv};
         },
         {kq, kk, kv}, /*save_outputs=*/true);
  return out;
}
#endif

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& attn_mask,
                                    bool is_causal, std::optional<double> scale) {
  const char* op = "scaled_dot_product_attention";
  EMBER_CHECK(q.defined() && k.defined() && v.defined(), op, ": q, k and v must all be defined");
  EMBER_CHECK(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2, op,
              ": expected q [..., Tq, D], k [..., Tk, D] and v [..., Tk, Dv], got ", shape_str(q.sizes()), ", ",
              shape_str(k.sizes()), " and ", shape_str(v.sizes()));
  EMBER_CHECK(q.device() == k.device() && q.device() == v.device(), op, ": q, k and v on different devices (",
              q.str(), ", ", k.str(), ", ", v.str(), ")");
  EMBER_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.is_floating_point(), op,
              ": q, k and v need one floating dtype, got ", q.str(), ", ", k.str(), " and ", v.str());
  const int64_t Tq = q.size(-2), D = q.size(-1), Tk = k.size(-2);
  EMBER_CHECK(k.size(-1) == D, op, ": q ", shape_str(q.sizes()), " and k ", shape_str(k.sizes()),
              " differ in the feature dim (", D, " vs ", k.size(-1), ")");
  EMBER_CHECK(v.size(-2) == Tk, op, ": k ", shape_str(k.sizes()), " and v ", shape_str(v.sizes()),
              " differ in the number of keys (", Tk, " vs ", v.size(-2), ")");
  Shape bq(q.sizes().begin(), q.sizes().end() - 2), bk(k.sizes().begin(), k.sizes().end() - 2),
      bv(v.sizes().begin(), v.sizes().end() - 2);
  Shape scores_shape = broadcast_shapes(broadcast_shapes(bq, bk, op), bv, op);
  scores_shape.push_back(Tq);
  scores_shape.push_back(Tk);
  if (attn_mask.defined()) {
    EMBER_CHECK(attn_mask.device() == q.device(), op, ": attn_mask is on ", attn_mask.device().str(), ", q on ",
                q.device().str());
    EMBER_CHECK(attn_mask.dtype() == DType::boolean || attn_mask.dtype() == q.dtype(), op, ": attn_mask is ",
                attn_mask.str(), "; expected bool or the dtype of q (", dtype_name(q.dtype()), ")");
    bool ok = attn_mask.dim() <= static_cast<int64_t>(scores_shape.size());
    for (int64_t i = 1; ok && i <= attn_mask.dim(); ++i) {
      const int64_t m = attn_mask.size(-i), s = scores_shape[scores_shape.size() - i];
      ok = m == s || m == 1;
    }
    EMBER_CHECK(ok, op, ": attn_mask of shape ", shape_str(attn_mask.sizes()),
                " does not broadcast to the attention scores' shape ", shape_str(scores_shape),
                " ([..., Tq, Tk] for q ", shape_str(q.sizes()), " and k ", shape_str(k.sizes()), ")");
  }
  const double s = scale ? *scale : 1.0 / std::sqrt(static_cast<double>(D));
#if EMBER_WITH_CUDA
  Shape batch(scores_shape.begin(), scores_shape.end() - 2);
  if (fused_attention_applies(q, k, v, attn_mask, batch))
    return fused_attention(q, k, v, attn_mask, is_causal, s, batch);
#endif
  return matmul(attention_probs(q, k, attn_mask, is_causal, s), v);
}

namespace {
std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::register_accumulators};
}  // namespace

void set_attention_kernel(AttentionKernel k) { g_attention_kernel.store(k); }
AttentionKernel attention_kernel() { return g_attention_kernel.load(); }

}  // namespace ember
