// Matrix products on the CPU GEMM (kernels/cpu/gemm.h). A 2-D operand whose rows or columns
// are unit-stride is handed to the GEMM as is (transposed views cost nothing); anything else
// is made contiguous first. Backwards are matmuls again, so they differentiate further.
#include "ember/ops/linalg.h"

#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/gemm.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember {

using autograd::record;

namespace {

// How a matrix view (the last two dims, with the given strides) is passed to a GEMM.
struct GemmOperand {
  Tensor t;           // possibly a contiguous copy
  bool trans = false;
  int64_t ld = 0;
};

GemmOperand as_gemm_operand(const Tensor& m) {
  // m: [..., R, C] where every leading dim is already flattened into a batch with a uniform stride
  const int64_t R = m.size(-2), C = m.size(-1);
  const int64_t sr = m.stride(-2), sc = m.stride(-1);
  if ((sc == 1 || C == 1) && sr >= std::max<int64_t>(C, 1)) return {m, false, sr};
  if ((sr == 1 || R == 1) && sc >= std::max<int64_t>(R, 1)) return {m, true, sc};
  Tensor c = m.contiguous();
  return {c, false, std::max<int64_t>(C, 1)};
}

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  EMBER_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.str(), " and ", b.str(), ")");
  EMBER_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ (", a.str(), " and ", b.str(),
              "); convert one with .to(dtype)");
  EMBER_CHECK(a.is_floating_point(), op, ": expected floating tensors, got ", a.str());
}

// out[b] = a[b] @ w[b] for a: [B, M, K], w: [B, K, N] (batch stride 0 broadcasts).
void gemm_batched(const Tensor& a3, const Tensor& b3, const Tensor& out) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a3.size(2);
  auto run = [&](const Tensor& A, const Tensor& Bm) {
    GemmOperand ga = as_gemm_operand(A), gb = as_gemm_operand(Bm);
    // A batch dim of size 1 may have any stride; treat it as broadcast.
    const int64_t sa = ga.t.size(0) == 1 ? 0 : ga.t.stride(0);
    const int64_t sb = gb.t.size(0) == 1 ? 0 : gb.t.stride(0);
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
      gemm_batched(to3(a, M, K), to3(b, K, N), out.detach().reshape({B, M, N}));
    }
  }
  timer.set_output(out);
  record("matmul", {a, b}, out, [a, b, ra = a.requires_grad(), rb = b.requires_grad()](const TensorList& g,
                                                                                         const TensorList&) {
    // dA = dY B^T, dB = A^T dY, each summed over the batch dims it was broadcast along.
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

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_pair("linear", x, w);
  EMBER_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", shape_str(x.sizes()),
              " and weight ", shape_str(w.sizes()), " do not match (weight must be [out, in] with in = input's last dim)");
  if (bias.defined())
    EMBER_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ", shape_str(bias.sizes()),
                " does not match weight ", shape_str(w.sizes()));
  trace::OpTimer timer("linear", {x, w, bias});
  const int64_t in = w.size(1), outf = w.size(0);
  Tensor x2 = x.detach().reshape({-1, in});
  const int64_t N = x2.size(0);
  Shape out_shape = x.sizes();
  out_shape.back() = outf;
  Tensor out = Tensor::empty(out_shape, options_of(x));
  if (out.numel() > 0) {
    GemmOperand gx = as_gemm_operand(x2), gw = as_gemm_operand(w.detach());
    dispatch_floating(x.dtype(), "linear", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* y = out.data<T>();
      T beta = T(0);
      if (bias.defined()) {  // start from the bias rows, then accumulate x W^T onto them
        Tensor bc = bias.detach().contiguous();
        const T* bp = bc.data<T>();
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < outf; ++j) y[i * outf + j] = bp[j];
        beta = T(1);
      }
      // y = x2 @ w^T: w is stored [out, in], so op(B) = w transposed (flip the operand's flag)
      if constexpr (std::is_same_v<T, float>)
        kernels::cpu::sgemm(gx.trans, !gw.trans, N, outf, in, 1.0f, gx.t.data<float>(), gx.ld, gw.t.data<float>(),
                            gw.ld, beta, y, outf);
      else
        kernels::cpu::dgemm(gx.trans, !gw.trans, N, outf, in, 1.0, gx.t.data<double>(), gx.ld, gw.t.data<double>(),
                            gw.ld, beta, y, outf);
    });
  }
  timer.set_output(out);
  record("linear", {x, w, bias}, out,
         [x, w, rx = x.requires_grad(), rw = w.requires_grad(), rb = bias.defined() && bias.requires_grad()](
             const TensorList& g, const TensorList&) {
           const int64_t in = w.size(1), outf = w.size(0);
           Tensor g2 = g[0].reshape({-1, outf});
           Tensor gx = rx ? matmul(g[0], w) : Tensor();                                    // dY W
           Tensor gw = rw ? matmul(g2.transpose(0, 1), x.reshape({-1, in})) : Tensor();   // dY^T X
           Tensor gb = rb ? sum(g2, {0}) : Tensor();
           return TensorList{gx, gw, gb};
         },
         {x, w});
  return out;
}

Tensor Tensor::matmul(const Tensor& other) const { return ember::matmul(*this, other); }

}  // namespace ember
