// Matrix products on the CPU GEMM (kernels/cpu/gemm.h). A 2-D operand whose rows or columns
// are unit-stride is handed to the GEMM as is (transposed views cost nothing); anything else
// is made contiguous first. Backwards are matmuls again, so they differentiate further.
// Then the small factorizations (inverse, slogdet, det, lu) on an f64 LU with partial pivoting.
#include "ember/ops/linalg.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/engine/copy.h"
#include "ember/engine/precision.h"
#include "ember/kernels/cpu/gemm.h"
#include "ember/kernels/cuda/blas.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

using autograd::input_grad;
using autograd::record;

namespace {

// How a matrix view (the last two dims, with the given strides) is passed to a GEMM.
struct GemmOperand {
  Tensor t;           // possibly a contiguous copy
  bool trans = false;
  int64_t ld = 0;
};

GemmOperand as_gemm_operand(const Tensor& m) {
  // m: [..., R, C] where every leading dim is already flattened into a batch with a uniform stride.
  // Only its data is read, so it may require grad; a copy, where needed, is made off the graph.
  const int64_t d = m.dim();
  const int64_t R = m.sizes()[d - 2], C = m.sizes()[d - 1];
  const int64_t sr = m.strides()[d - 2], sc = m.strides()[d - 1];
  if ((sc == 1 || C == 1) && sr >= std::max<int64_t>(C, 1)) return {m, false, sr};
  if ((sr == 1 || R == 1) && sc >= std::max<int64_t>(R, 1)) return {m, true, sc};
  Tensor c = m.detach().contiguous();
  return {c, false, std::max<int64_t>(C, 1)};
}

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.str(), " and ", b.str(), ")");
  EMBER_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ (", a.str(), " and ", b.str(),
              "); convert one with .to(dtype)");
  EMBER_CHECK(a.is_floating_point(), op, ": expected floating tensors, got ", a.str());
}

#if EMBER_WITH_CUDA
// cuBLAS with the CPU GEMM's operand convention (row-major, per-operand transpose flags).
void gemm_gpu(const Tensor& like, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& A, int64_t lda,
              int64_t sa, const Tensor& B, int64_t ldb, int64_t sb, double beta, const Tensor& C, int64_t ldc,
              int64_t sc, int64_t batch) {
  dispatch_floating(like.dtype(), "matmul", [](auto) {});
  kernels::cuda::gemm(cuda::elem_type(like.dtype()), cuda::math_mode(), ta, tb, M, N, K, A.device_data(), lda, sa,
                      B.device_data(), ldb, sb, beta, C.device_data(), ldc, sc, batch, like.device().index,
                      cuda::stream_of(like));
}
#endif

// out = a @ b for matrices a [M, K], b [K, N] (beta = 0), or out + a @ b written into out
// (beta = 1); out's rows ldc apart, its columns unit-stride. One GEMM call, no views made: a
// linear layer's backward makes two of these, a few hundred per training step.
void gemm_2d(const Tensor& a, const Tensor& b, const Tensor& out, int64_t ldc, double beta) {
  const int64_t M = a.sizes()[0], K = a.sizes()[1], N = b.sizes()[1];
  GemmOperand ga = as_gemm_operand(a), gb = as_gemm_operand(b);
#if EMBER_WITH_CUDA
  if (out.device().is_cuda())
    return gemm_gpu(out, ga.trans, gb.trans, M, N, K, ga.t, ga.ld, 0, gb.t, gb.ld, 0, beta, out, ldc, 0, 1);
#endif
  dispatch_floating(out.dtype(), "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float>)
      kernels::cpu::sgemm(ga.trans, gb.trans, M, N, K, 1.0f, ga.t.data<float>(), ga.ld, gb.t.data<float>(), gb.ld,
                          static_cast<float>(beta), out.data<float>(), ldc);
    else
      kernels::cpu::dgemm(ga.trans, gb.trans, M, N, K, 1.0, ga.t.data<double>(), ga.ld, gb.t.data<double>(), gb.ld,
                          beta, out.data<double>(), ldc);
  });
}

// out[b] = a[b] @ w[b] for a: [B, M, K], w: [B, K, N] (batch stride 0 broadcasts).
void gemm_batched(const Tensor& a3, const Tensor& b3, const Tensor& out) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a3.size(2);
  auto run = [&](const Tensor& A, const Tensor& Bm) {
    GemmOperand ga = as_gemm_operand(A), gb = as_gemm_operand(Bm);
    // A batch dim of size 1 may have any stride; treat it as broadcast.
    const int64_t sa = ga.t.size(0) == 1 ? 0 : ga.t.stride(0);
    const int64_t sb = gb.t.size(0) == 1 ? 0 : gb.t.stride(0);
#if EMBER_WITH_CUDA
    if (out.device().is_cuda())
      return gemm_gpu(out, ga.trans, gb.trans, M, N, K, ga.t, ga.ld, sa, gb.t, gb.ld, sb, 0.0, out, N, M * N, B);
#endif
    dispatch_floating(out.dtype(), "matmul", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float>)
        kernels::cpu::sgemm_batched(B, ga.trans, gb.trans, M, N, K, 1.0f, ga.t.data<float>(), ga.ld, sa,
                                    gb.t.data<float>(), gb.ld, sb, 0.0f, out.data<float>(), N, M * N);
      else
        kernels::cpu::dgemm_batched(B, ga.trans, gb.trans, M, N, K, 1.0, ga.t.data<double>(), ga.ld, sa,
                                    gb.t.data<double>(), gb.ld, sb, 0.0, out.data<double>(), N, M * N);
    });
  };
  run(a3, b3);
}

// Whether the GEMM can add a @ b into acc in place: 2-D f32/f64 operands that match acc, on its
// device, and acc's rows ldc apart with unit-stride columns.
bool gemm_adds_into(const Tensor& acc, const Tensor& a, const Tensor& b) {
  const bool rows_strided = acc.dim() == 2 && (acc.size(1) <= 1 || acc.stride(1) == 1) &&
                            (acc.size(0) <= 1 || acc.stride(0) >= acc.size(1));
  return a.dim() == 2 && b.dim() == 2 && acc.dim() == 2 && acc.size(0) == a.size(0) && acc.size(1) == b.size(1) &&
         a.size(1) == b.size(0) && a.dtype() == acc.dtype() && b.dtype() == acc.dtype() &&
         a.device() == acc.device() && b.device() == acc.device() &&
         (acc.dtype() == DType::f32 || acc.dtype() == DType::f64) && rows_strided;
}

// The row stride the GEMM writes acc with (any value for a single row).
int64_t row_stride(const Tensor& acc) { return acc.size(0) > 1 ? acc.stride(0) : acc.size(1); }

// acc + a @ b for 2-D a [M, K] and b [K, N], where acc is a gradient handed over by the walk
// (autograd::take_pending_grad_view: [M, N], private, maybe a view): the GEMM adds into it in
// place (beta = 1), one kernel instead of a GEMM and an add. acc may be a row-strided view (the
// slice of a DenseNet's concatenated features that one layer read); another layout takes the
// add. Undefined acc: a @ b. Not recorded: handed-over gradients exist only in walks without
// create_graph.
Tensor matmul_into(Tensor acc, const Tensor& a, const Tensor& b) {
  if (!acc.defined()) return matmul(a, b);
  if (!gemm_adds_into(acc, a, b)) return add_into(std::move(acc), matmul(a, b));
  trace::OpTimer timer("matmul_accumulate", {acc, a, b});
  const int64_t M = acc.size(0), N = acc.size(1), K = a.size(1);
  if (K > 0 && M > 0 && N > 0) gemm_2d(a, b, acc, row_stride(acc), 1.0);
  acc.bump_version();
  timer.set_output(acc);
  return acc;
}

Tensor addmm(const Tensor& c, const Tensor& a, const Tensor& b);

// The gradient already waiting for input i, if any: under create_graph to fold into a recorded
// op, otherwise to add into in place (autograd::take_pending_grad_recorded / _view).
Tensor take_waiting(size_t i) {
  Tensor c = autograd::take_pending_grad_recorded(i);
  return c.defined() ? c : autograd::take_pending_grad_view(i);
}

// waiting + a @ b, waiting as take_waiting gave it (undefined: a @ b): in place by the GEMM in a
// walk without create_graph (matmul_into), or as one recorded addmm under create_graph, where a
// matmul and then the walk's add were recorded. A DenseNet layer's input gradient meets its
// slice of the concatenated features' gradient so.
Tensor matmul_plus(Tensor waiting, const Tensor& a, const Tensor& b) {
  if (waiting.defined() && grad_enabled()) return addmm(waiting, a, b);
  return matmul_into(std::move(waiting), a, b);
}

Tensor matmul_plus_waiting(size_t i, const Tensor& a, const Tensor& b) { return matmul_plus(take_waiting(i), a, b); }

// c + a @ b for matrices, recorded as one op: c [M, N] in any row-strided layout (a gradient
// waiting in the walk, maybe a slice), a [M, K], b [K, N]. On the GPU one cuBLASLt call reads c
// and writes the sum to a new matrix; on the CPU c is copied and the GEMM adds onto it. Other
// shapes and dtypes: add(c, matmul(a, b)). Its backward is a matmul for each operand again.
Tensor addmm(const Tensor& c, const Tensor& a, const Tensor& b) {
  if (!gemm_adds_into(c, a, b)) return add(c, matmul(a, b));
  trace::OpTimer timer("addmm", {c, a, b});
  const int64_t M = c.size(0), N = c.size(1), K = a.size(1);
  Tensor out = Tensor::empty({M, N}, options_of(c));
  if (out.numel() > 0) {
    bool done = false;
#if EMBER_WITH_CUDA
    if (out.device().is_cuda() && K > 0) {
      GemmOperand ga = as_gemm_operand(a), gb = as_gemm_operand(b);
      done = kernels::cuda::gemm_add(cuda::elem_type(out.dtype()), cuda::math_mode(), ga.trans, gb.trans, M, N, K,
                                     ga.t.device_data(), ga.ld, gb.t.device_data(), gb.ld, c.device_data(),
                                     row_stride(c), out.device_data(), N, out.device().index, cuda::stream_of(out));
    }
#endif
    if (!done) {
      copy_into(out, c.detach());
      if (K > 0) gemm_2d(a, b, out, N, 1.0);
    }
  }
  timer.set_output(out);
  record("addmm", {c, a, b}, out, [a, b, rc = input_grad(c, 0), ra = input_grad(a, 1), rb = input_grad(b, 2)](
                                      const TensorList& g, const TensorList&) {
    return TensorList{rc ? g[0] : Tensor(), ra ? matmul_plus_waiting(1, g[0], b.transpose(0, 1)) : Tensor(),
                      rb ? matmul_plus_waiting(2, a.transpose(0, 1), g[0]) : Tensor()};
  }, {a, b});
  return out;
}

#if EMBER_WITH_CUDA
// A linear layer's weight and bias gradients on the GPU in one cuBLASLt call: dW = dY^T X (added
// into acc_w, the weight's waiting gradient, where there is one) and db = dY's column sums, which
// the GEMM's epilogue reduces from the dY it reads (kernels::cuda::gemm_bias_grad) instead of a
// second kernel. The bias gradient must be new: the epilogue writes it and cannot add. Not
// recorded: only for walks without create_graph. Returns {dW, db}, or nothing, having done
// nothing, where the layouts do not fit or cuBLASLt has no algorithm for them.
std::optional<std::pair<Tensor, Tensor>> weight_and_bias_grads_gpu(Tensor acc_w, const Tensor& g2, const Tensor& x2) {
  if (!g2.device().is_cuda() || grad_enabled() || (g2.dtype() != DType::f32 && g2.dtype() != DType::f64)) return {};
  const Tensor gt = g2.transpose(0, 1);  // [out, rows]
  const bool add = acc_w.defined();
  if (add && !gemm_adds_into(acc_w, gt, x2)) return {};
  const int64_t M = gt.size(0), K = gt.size(1), N = x2.size(1);
  if (M == 0 || N == 0 || K == 0) return {};
  trace::OpTimer timer(add ? "matmul_bias_grad_accumulate" : "matmul_bias_grad", {gt, x2});
  GemmOperand op_g = as_gemm_operand(gt), op_x = as_gemm_operand(x2);
  Tensor gw = add ? std::move(acc_w) : Tensor::empty({M, N}, options_of(g2));
  Tensor gb = Tensor::empty({M}, options_of(g2));
  if (!kernels::cuda::gemm_bias_grad(cuda::elem_type(g2.dtype()), cuda::math_mode(), op_g.trans, op_x.trans, M, N, K,
                                     op_g.t.device_data(), op_g.ld, op_x.t.device_data(), op_x.ld, add ? 1.0 : 0.0,
                                     gw.device_data(), add ? row_stride(gw) : N, gb.device_data(), g2.device().index,
                                     cuda::stream_of(g2))) {
    timer.discard();
    return {};
  }
  if (add) gw.bump_version();
  timer.set_output(gw);
  return std::pair{std::move(gw), std::move(gb)};
}
#endif

// Both operands at least 2-D: broadcast the batch dims, multiply, record.
Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), K2 = b.size(-2), N = b.size(-1);
  EMBER_CHECK(K == K2, "matmul: shapes ", shape_str(a.sizes()), " and ", shape_str(b.sizes()),
              " cannot be multiplied (", K, " != ", K2, ")");
  Shape ba(a.sizes().begin(), a.sizes().end() - 2), bb(b.sizes().begin(), b.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  const int64_t B = shape_numel(batch);
  trace::OpTimer timer("matmul", {a, b});
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, options_of(a));
  if (out.numel() > 0) {
    if (K == 0) {
      out.detach().zero_();
    } else {
      auto to3 = [&](const Tensor& t, int64_t r, int64_t c) {
        Shape full = batch;
        full.push_back(r);
        full.push_back(c);
        Tensor e = t.detach().expand(full);
        // Flatten the batch into one dim: free when its strides allow (reshape copies otherwise).
        return e.reshape({B, r, c});
      };
      if (a.dim() == 2 && b.dim() == 2) gemm_2d(a, b, out, N, 0.0);  // the common case: no batch, no views
      else gemm_batched(to3(a, M, K), to3(b, K, N), batch.empty() ? out.unsqueeze(0) : out.reshape({B, M, N}));
    }
  }
  timer.set_output(out);
  record("matmul", {a, b}, out, [a, b, ra = input_grad(a, 0), rb = input_grad(b, 1)](
                                    const TensorList& g, const TensorList&) {
    // dA = dY B^T, dB = A^T dY, each summed over the batch dims it was broadcast along. Two
    // matrices: with a gradient already waiting for the operand, if any, added in.
    if (a.dim() == 2 && b.dim() == 2)
      return TensorList{ra ? matmul_plus_waiting(0, g[0], b.transpose(0, 1)) : Tensor(),
                        rb ? matmul_plus_waiting(1, a.transpose(0, 1), g[0]) : Tensor()};
    Tensor ga = ra ? sum_to_size(matmul(g[0], b.transpose(-1, -2)), a.sizes()) : Tensor();
    Tensor gb = rb ? sum_to_size(matmul(a.transpose(-1, -2), g[0]), b.sizes()) : Tensor();
    return TensorList{ga, gb};
  }, {a, b});
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_pair("matmul", a, b);
  EMBER_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: 0-dim operand (shapes ", shape_str(a.sizes()), " and ",
              shape_str(b.sizes()), "); use mul for scalars");
  if (a.dim() == 1 && b.dim() == 1) return dot(a, b);
  if (a.dim() == 1) return matmul_nd(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul_nd(a, b.unsqueeze(-1)).squeeze(-1);
  return matmul_nd(a, b);
}

Tensor mm(const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.dim() == 2 && b.dim() == 2, "mm: expected 2-D operands, got ", shape_str(a.sizes()), " and ",
              shape_str(b.sizes()));
  return matmul(a, b);
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0), "bmm: expected [B, M, K] and [B, K, N], got ",
              shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  return matmul(a, b);
}

Tensor dot(const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.dim() == 1 && b.dim() == 1 && a.size(0) == b.size(0), "dot: expected two 1-D tensors of one length, got ",
              shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  return sum(mul(a, b));
}

Tensor outer(const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.dim() == 1 && b.dim() == 1, "outer: expected 1-D tensors, got ", shape_str(a.sizes()), " and ",
              shape_str(b.sizes()));
  return mul(a.unsqueeze(1), b.unsqueeze(0));
}

namespace {
// The rows of x seen as a matrix [rows, x.size(-1)]: the product of its leading dims (a
// reshape to {-1, n} cannot infer it when n = 0).
int64_t leading_rows(const Tensor& x) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < x.dim(); ++d) rows *= x.sizes()[d];
  return rows;
}

// t as a [rows, cols] matrix: itself when it is one already (no view made, the common case),
// else reshaped (a view where its strides allow; recorded, so it differentiates on).
Tensor as_matrix(const Tensor& t, int64_t rows, int64_t cols) { return t.dim() == 2 ? t : t.reshape({rows, cols}); }
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_pair("linear", x, w);
  EMBER_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", shape_str(x.sizes()),
              " and weight ", shape_str(w.sizes()), " do not match (weight must be [out, in] with in = input's last dim)");
  if (bias.defined())
    EMBER_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ", shape_str(bias.sizes()),
                " does not match weight ", shape_str(w.sizes()));
  if (bias.defined())
    EMBER_CHECK(bias.device() == x.device() && bias.dtype() == x.dtype(), "linear: bias ", bias.str(),
                " and input ", x.str(), " differ in device or dtype");
  trace::OpTimer timer("linear", {x, w, bias});
  const int64_t in = w.size(1), outf = w.size(0);
  const int64_t N = leading_rows(x);
  Tensor x2 = x.dim() == 2 ? x : x.detach().reshape({N, in});  // only its data is read
  Shape out_shape = x.sizes();
  out_shape.back() = outf;
  Tensor out = Tensor::empty(out_shape, options_of(x));
  if (out.numel() > 0) {
    GemmOperand gx = as_gemm_operand(x2), gw = as_gemm_operand(w);
#if EMBER_WITH_CUDA
    if (out.device().is_cuda()) {
      Tensor y2 = out.dim() == 2 ? out : out.view({N, outf});
      bool fused = false;  // x W^T + bias in one cuBLASLt call (the bias in the epilogue)
      if (bias.defined()) {
        dispatch_floating(x.dtype(), "linear", [](auto) {});
        Tensor bc = bias.is_contiguous() ? bias : bias.detach().contiguous();
        fused = kernels::cuda::gemm_bias(cuda::elem_type(x.dtype()), cuda::math_mode(), gx.trans, !gw.trans, N, outf, in,
                                         gx.t.device_data(), gx.ld, gw.t.device_data(), gw.ld, bc.device_data(),
                                         y2.device_data(), outf, out.device().index, cuda::stream_of(out));
      }
      if (!fused) {
        // Otherwise the bias rows first (a broadcast copy), then cuBLAS accumulates x W^T onto them;
        // with no input features the result is those rows (or zeros), not left to cuBLAS's k = 0.
        if (bias.defined()) copy_into(y2, bias.detach());
        else if (in == 0) fill_tensor(y2, 0.0);
        if (in > 0)
          gemm_gpu(out, gx.trans, !gw.trans, N, outf, in, gx.t, gx.ld, 0, gw.t, gw.ld, 0, bias.defined() ? 1.0 : 0.0,
                   y2, outf, 0, 1);
      }
    } else
#endif
    dispatch_floating(x.dtype(), "linear", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* y = out.data<T>();
      // y = x2 @ w^T (+ bias, added as the GEMM writes each block): w is stored [out, in], so
      // op(B) = w transposed (flip the operand's flag)
      Tensor bc = !bias.defined() || bias.is_contiguous() ? bias : bias.detach().contiguous();
      const T* bp = bias.defined() ? bc.data<T>() : nullptr;
      const T* xp = gx.t.data<T>();
      const T* wp = gw.t.data<T>();
      if constexpr (std::is_same_v<T, float>) {
        if (bp) kernels::cpu::sgemm_bias(gx.trans, !gw.trans, N, outf, in, 1.0f, xp, gx.ld, wp, gw.ld, bp, y, outf);
        else kernels::cpu::sgemm(gx.trans, !gw.trans, N, outf, in, 1.0f, xp, gx.ld, wp, gw.ld, 0.0f, y, outf);
      } else {
        if (bp) kernels::cpu::dgemm_bias(gx.trans, !gw.trans, N, outf, in, 1.0, xp, gx.ld, wp, gw.ld, bp, y, outf);
        else kernels::cpu::dgemm(gx.trans, !gw.trans, N, outf, in, 1.0, xp, gx.ld, wp, gw.ld, 0.0, y, outf);
      }
    });
  }
  timer.set_output(out);
  record("linear", {x, w, bias}, out,
         [x, w, rx = input_grad(x, 0), rw = input_grad(w, 1), rb = input_grad(bias, 2)](
             const TensorList& g, const TensorList&) {
           const int64_t in = w.size(1), outf = w.size(0), rows = leading_rows(x);
           Tensor g2 = as_matrix(g[0], rows, outf);
           // dY W, for a matrix x added into a gradient already waiting for it, if any
           Tensor gx = !rx ? Tensor() : x.dim() == 2 ? matmul_plus_waiting(0, g2, w) : matmul(g[0], w);
           // dY^T X and dY's column sums, each added into a gradient already waiting, if any
           Tensor acc_w = rw ? take_waiting(1) : Tensor();
           Tensor acc_b = rb ? autograd::take_pending_grad(2) : Tensor();
           const Tensor x2 = as_matrix(x, rows, in);
#if EMBER_WITH_CUDA
           if (rw && rb && !acc_b.defined())  // on the GPU, both from one cuBLASLt call where it can
             if (auto both = weight_and_bias_grads_gpu(acc_w, g2, x2)) return TensorList{gx, both->first, both->second};
#endif
           Tensor gw = rw ? matmul_plus(std::move(acc_w), g2.transpose(0, 1), x2) : Tensor();
           Tensor gb = rb ? sum_rows_into(std::move(acc_b), g2) : Tensor();
           return TensorList{gx, gw, gb};
         },
         {x, w});
  return out;
}

// ------------------------------------------------------------------------------------------
// Small dense factorizations: inverse, slogdet, det, lu. Each matrix of the batch is copied
// into an f64 scratch buffer and factored by LU with partial pivoting (Doolittle, row swaps),
// one matrix per task on the thread pool. The sizes Glow needs (n = channels, <= a few
// hundred) make the O(n^3) loops cheap next to the convolutions around them.

namespace {

// PA = LU in place on the row-major n x n matrix m (L below the diagonal, unit diagonal
// implied; U on and above). perm[i] = the row of A that row i of PA came from. Returns the
// first column with an exactly zero (or non-finite) pivot, or -1 when every pivot is usable;
// such a column is left unreduced, so the factorization of a singular matrix still holds.
// `swaps` counts the row exchanges (the permutation's parity).
int64_t lu_factor_inplace(double* m, int64_t n, int64_t* perm, int64_t& swaps) {
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  swaps = 0;
  int64_t bad = -1;
  for (int64_t k = 0; k < n; ++k) {
    int64_t p = k;
    double best = std::abs(m[k * n + k]);
    for (int64_t i = k + 1; i < n; ++i) {
      const double v = std::abs(m[i * n + k]);
      if (v > best) {
        best = v;
        p = i;
      }
    }
    if (!(best > 0.0) || !std::isfinite(best)) {  // zero column below the diagonal, or NaN/inf
      if (bad < 0) bad = k;
      continue;
    }
    if (p != k) {
      for (int64_t j = 0; j < n; ++j) std::swap(m[k * n + j], m[p * n + j]);
      std::swap(perm[k], perm[p]);
      ++swaps;
    }
    const double piv = m[k * n + k];
    for (int64_t i = k + 1; i < n; ++i) {
      const double l = m[i * n + k] / piv;
      m[i * n + k] = l;
      if (l == 0.0) continue;
      double* ri = m + i * n;
      const double* rk = m + k * n;
      for (int64_t j = k + 1; j < n; ++j) ri[j] -= l * rk[j];
    }
  }
  return bad;
}

// The factorizations (inverse, slogdet, det, lu) run on the host in f64 for any device: a
// GPU input is copied to the CPU and the results copied back (one synchronisation each way;
// no cuSOLVER). They serve small matrices (Glow's 1x1 convolutions, C x C), where the copy is
// cheaper than a batched GPU factorization's launches. Their backwards are GPU ops.
struct SquareBatch {
  Tensor data;  // contiguous, detached, on the CPU: [B, n, n]
  int64_t batch = 1, n = 0;
  Shape batch_shape;
};

SquareBatch square_batch(const Tensor& a, const char* op) {
  EMBER_CHECK(a.defined(), op, ": input is undefined");
  EMBER_CHECK(a.dim() >= 2 && a.size(-1) == a.size(-2), op, ": expected a square matrix or a batch of them [..., n, n], got ",
              a.str());
  dispatch_floating(a.dtype(), op, [](auto) {});  // f32 / f64 only, with the op's name in the error
  SquareBatch s;
  s.n = a.size(-1);
  s.batch_shape.assign(a.sizes().begin(), a.sizes().end() - 2);
  s.batch = shape_numel(s.batch_shape);
  s.data = a.detach().to(Device::cpu()).contiguous();
  return s;
}

TensorOptions host_options(const Tensor& a) { return {.dtype = a.dtype()}; }

// A result computed on the host, moved to the input's device.
Tensor to_device_of(const Tensor& host, const Tensor& a) {
  return a.device().is_cpu() ? host : host.to(a.device());
}

// Runs fn(b, scratch matrix in f64, perm) for every matrix b of the batch, in parallel.
template <typename T, typename F>
void for_each_lu(const SquareBatch& s, const F& fn) {
  const int64_t n = s.n;
  const T* src = s.data.data<T>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(n * n * n, 1));
  kernels::cpu::parallel_for(0, s.batch, grain, [&](int64_t b0, int64_t b1) {
    std::vector<double> m(static_cast<size_t>(n * n));
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t b = b0; b < b1; ++b) {
      const T* x = src + b * n * n;
      for (int64_t i = 0; i < n * n; ++i) m[i] = static_cast<double>(x[i]);
      int64_t swaps = 0;
      const int64_t bad = lu_factor_inplace(m.data(), n, perm.data(), swaps);
      fn(b, m.data(), perm.data(), swaps, bad);
    }
  });
}

}  // namespace

Tensor inverse(const Tensor& a) {
  SquareBatch s = square_batch(a, "inverse");
  trace::OpTimer timer("inverse", {a});
  Tensor out = Tensor::empty(a.sizes(), host_options(a));
  const int64_t n = s.n;
  int64_t first_bad = -1, bad_col = -1;  // the lowest singular batch index, for the error
  std::mutex bad_mutex;
  dispatch_floating(a.dtype(), "inverse", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* y = out.data<T>();
    for_each_lu<T>(s, [&](int64_t b, const double* m, const int64_t* perm, int64_t, int64_t bad) {
      if (bad >= 0) {
        std::lock_guard<std::mutex> lock(bad_mutex);
        if (first_bad < 0 || b < first_bad) {
          first_bad = b;
          bad_col = bad;
        }
        return;
      }
      // Column j of A^{-1} solves L U x = P e_j, where (P e_j)[i] = [perm[i] == j].
      std::vector<double> x(static_cast<size_t>(n));
      T* yb = y + b * n * n;
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < n; ++i) {  // forward substitution, unit diagonal
          double v = perm[i] == j ? 1.0 : 0.0;
          for (int64_t k = 0; k < i; ++k) v -= m[i * n + k] * x[k];
          x[i] = v;
        }
        for (int64_t i = n - 1; i >= 0; --i) {  // back substitution
          double v = x[i];
          for (int64_t k = i + 1; k < n; ++k) v -= m[i * n + k] * x[k];
          x[i] = v / m[i * n + i];
        }
        for (int64_t i = 0; i < n; ++i) yb[i * n + j] = static_cast<T>(x[i]);
      }
    });
  });
  EMBER_CHECK(first_bad < 0, "inverse: matrix ", first_bad, " of the batch (input ", a.str(),
              ") is singular or not finite (no usable pivot in column ", bad_col,
              "); it has no inverse. Check the matrix, or regularise it (e.g. add a small multiple of eye(n)).");
  out = to_device_of(out, a);
  timer.set_output(out);
  record("inverse", {a}, out, [](const TensorList& g, const TensorList& outs) {
    // Y = A^{-1}: dA = -Y^T g Y^T (out is re-attached to this node, so this differentiates again)
    Tensor yt = outs[0].transpose(-1, -2);
    return TensorList{neg(matmul(matmul(yt, g[0]), yt))};
  }, {}, /*save_outputs=*/true);
  return out;
}

std::pair<Tensor, Tensor> slogdet(const Tensor& a) {
  SquareBatch s = square_batch(a, "slogdet");
  trace::OpTimer timer("slogdet", {a});
  Tensor sign = Tensor::empty(s.batch_shape, host_options(a));
  Tensor logabs = Tensor::empty(s.batch_shape, host_options(a));
  const int64_t n = s.n;
  dispatch_floating(a.dtype(), "slogdet", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* sp = sign.data<T>();
    T* lp = logabs.data<T>();
    for_each_lu<T>(s, [&](int64_t b, const double* m, const int64_t*, int64_t swaps, int64_t bad) {
      if (bad >= 0) {  // det = 0 (a NaN entry gives NaN)
        bool nan = false;
        for (int64_t i = 0; i < n * n; ++i) nan = nan || std::isnan(m[i]);
        sp[b] = nan ? T(NAN) : T(0);
        lp[b] = nan ? T(NAN) : -std::numeric_limits<T>::infinity();
        return;
      }
      double sg = (swaps % 2) ? -1.0 : 1.0, la = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = m[i * n + i];
        if (d < 0) sg = -sg;
        la += std::log(std::abs(d));
      }
      sp[b] = static_cast<T>(sg);
      lp[b] = static_cast<T>(la);
    });
  });
  sign = to_device_of(sign, a);
  logabs = to_device_of(logabs, a);
  timer.set_output(logabs);
  // Only logabsdet is recorded: sign is piecewise constant (no gradient).
  record("slogdet", {a}, logabs, [a](const TensorList& g, const TensorList&) {
    // d log|det A| / dA = A^{-T}; inverse records itself, so this differentiates again.
    return TensorList{mul(g[0].unsqueeze(-1).unsqueeze(-1), inverse(a).transpose(-1, -2))};
  }, {a});
  return {sign, logabs};
}

Tensor det(const Tensor& a) {
  auto [sign, logabs] = slogdet(a);
  return mul(sign, exp(logabs));
}

std::tuple<Tensor, Tensor, Tensor> lu(const Tensor& a) {
  SquareBatch s = square_batch(a, "lu");
  trace::OpTimer timer("lu", {a});
  TensorOptions o = host_options(a);
  Tensor P = zeros(a.sizes(), o), L = zeros(a.sizes(), o), U = zeros(a.sizes(), o);
  const int64_t n = s.n;
  dispatch_floating(a.dtype(), "lu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T *pp = P.data<T>(), *lp = L.data<T>(), *up = U.data<T>();
    for_each_lu<T>(s, [&](int64_t b, const double* m, const int64_t* perm, int64_t, int64_t) {
      const int64_t off = b * n * n;
      for (int64_t i = 0; i < n; ++i) {
        // (PA)[i] = A[perm[i]], so A = P^T L U: the returned P has P[perm[i]][i] = 1.
        pp[off + perm[i] * n + i] = T(1);
        lp[off + i * n + i] = T(1);
        for (int64_t j = 0; j < i; ++j) lp[off + i * n + j] = static_cast<T>(m[i * n + j]);
        for (int64_t j = i; j < n; ++j) up[off + i * n + j] = static_cast<T>(m[i * n + j]);
      }
    });
  });
  P = to_device_of(P, a);
  L = to_device_of(L, a);
  U = to_device_of(U, a);
  timer.set_output(U);
  return {P, L, U};
}

Tensor Tensor::matmul(const Tensor& other) const { return ember::matmul(*this, other); }

}  // namespace ember
