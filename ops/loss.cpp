// Losses, each a short composite of differentiable ops (so every order of derivative
// works), with shape checks that name the loss and the shapes. binary_cross_entropy has a
// fused forward, for its clamped logs, and a backward in ops.
#include "ember/ops/loss.h"

#include <cmath>
#include <numbers>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/ops/attention.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"

namespace ember {

using autograd::input_grad;
using autograd::record;

namespace {

Tensor reduce(const Tensor& loss, Reduction r) {
  switch (r) {
    case Reduction::none: return loss;
    case Reduction::sum: return sum(loss);
    case Reduction::mean: return loss.numel() == 0 ? full({}, NAN, {.dtype = loss.dtype()}) : mean(loss);
  }
  EMBER_FAIL("loss: unknown reduction");
}

void check_floating(const char* op, const char* what, const Tensor& t) {
  EMBER_CHECK(t.defined(), op, ": ", what, " is undefined");
  EMBER_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ", what, " must be f32 or f64, got ", t.str());
}

// input and target: floating, same device and shape. Returns target in input's dtype.
Tensor check_pair(const char* op, const Tensor& input, const Tensor& target) {
  check_floating(op, "input", input);
  check_floating(op, "target", target);
  EMBER_CHECK(input.device() == target.device(), op, ": input is on ", input.device().str(), ", target on ",
              target.device().str());
  EMBER_CHECK(input.sizes() == target.sizes(), op, ": target shape ", shape_str(target.sizes()),
              " does not match input shape ", shape_str(input.sizes()), "; reshape or expand one to match");
  return target.to(input.dtype());
}


}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  Tensor t = check_pair("mse_loss", input, target);
  return reduce(square(sub(input, t)), reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  Tensor t = check_pair("l1_loss", input, target);
  return reduce(abs(sub(input, t)), reduction);
}

Tensor binary_cross_entropy(const Tensor& p, const Tensor& target, Reduction reduction) {
  const char* op = "binary_cross_entropy";
  Tensor t = check_pair(op, p, target);
  trace::OpTimer timer(op, {p, t});
  Tensor pc = p.detach().contiguous(), tc = t.detach().contiguous();
  Tensor loss = Tensor::empty(p.sizes(), {.dtype = p.dtype(), .device = p.device()});
  if (p.device().is_cuda()) {
    // The same formula in GPU ops; the range check costs one host read of a flag.
    dispatch_floating(p.dtype(), op, [](auto) {});
    NoGrad ng;
    if (p.numel() > 0 && logical_not(logical_and(ge(pc, 0.0), le(pc, 1.0))).to(p.dtype()).sum().item() > 0) {
      const std::vector<double> v = pc.to_vector<double>();
      for (size_t i = 0; i < v.size(); ++i)
        EMBER_CHECK(v[i] >= 0 && v[i] <= 1, op, ": every probability must lie in [0, 1], got ", v[i], " at element ", i,
                    " of the input ", shape_str(p.sizes()), "; for logits use binary_cross_entropy_with_logits");
    }
    Tensor lo = clamp(log(pc), -100.0, std::nullopt), hi = clamp(log1p(neg(pc)), -100.0, std::nullopt);
    loss = neg(add(mul(tc, lo), mul(rsub(tc, 1.0), hi)));
  } else {
    dispatch_floating(p.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* pp = pc.data<T>();
      const T* tp = tc.data<T>();
      T* lp = loss.data<T>();
      kernels::cpu::parallel_for(0, loss.numel(), 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const T pv = pp[i];
          EMBER_CHECK(pv >= T(0) && pv <= T(1), op, ": every probability must lie in [0, 1], got ", pv, " at element ",
                      i, " of the input ", shape_str(p.sizes()), "; for logits use binary_cross_entropy_with_logits");
          const T lo = std::max(std::log(pv), T(-100)), hi = std::max(std::log1p(-pv), T(-100));
          lp[i] = -(tp[i] * lo + (T(1) - tp[i]) * hi);
        }
      });
    });
  }
  timer.set_output(loss);
  record(op, {p, t}, loss, [p, t, rp = input_grad(p, 0), rt = input_grad(t, 1)](
      const TensorList& g, const TensorList&) {
    Tensor gp, gt;
    // d/dp = (p - t) / (p (1 - p)), the denominator kept >= 1e-12 (as PyTorch)
    if (rp) gp = div(mul(g[0], sub(p, t)), clamp(mul(p, rsub(p, 1.0)), 1e-12, std::nullopt));
    // d/dt = log(1 - p) - log p, with the forward's clamps
    if (rt) gt = mul(g[0], sub(clamp(log1p(neg(p)), -100.0, std::nullopt), clamp(log(p), -100.0, std::nullopt)));
    return TensorList{gp, gt};
  }, {p, t});
  return reduce(loss, reduction);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  Tensor t = check_pair("binary_cross_entropy_with_logits", logits, target);
  // -(t log s(x) + (1 - t) log(1 - s(x))) = (1 - t) x - log s(x), since log(1 - s(x)) = log s(x) - x
  return reduce(sub(mul(rsub(t, 1.0), logits), logsigmoid(logits)), reduction);
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
  const char* op = "cross_entropy";
  check_floating(op, "logits", logits);
  EMBER_CHECK(target.defined(), op, ": target is undefined");
  EMBER_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32, op,
              ": target must hold class indices (i64 or i32), got ", target.str(),
              "; for probabilities use a soft-label loss");
  EMBER_CHECK(target.device() == logits.device(), op, ": logits are on ", logits.device().str(), ", target on ",
              target.device().str());
  EMBER_CHECK(logits.dim() >= 1, op, ": logits must be [C], [N, C] or [N, C, d1, ...], got ",
              shape_str(logits.sizes()));
  const int64_t cdim = logits.dim() == 1 ? 0 : 1;
  const int64_t C = logits.size(cdim);
  Shape want = logits.sizes();
  want.erase(want.begin() + cdim);
  EMBER_CHECK(target.sizes() == want, op, ": target shape ", shape_str(target.sizes()), " does not match logits ",
              shape_str(logits.sizes()), " (expected ", shape_str(want), ": the logits' shape without the class dim)");
  {
    const std::vector<int64_t> idx = target.to_vector<int64_t>();
    for (size_t i = 0; i < idx.size(); ++i)
      EMBER_CHECK(idx[i] >= 0 && idx[i] < C, op, ": class index ", idx[i], " at element ", i, " of target ",
                  shape_str(target.sizes()), " is out of range for ", C, " classes (logits ",
                  shape_str(logits.sizes()), ")");
  }
  Tensor logp = log_softmax(logits, cdim);
  // The target's one-hot along the class dim: eq(target, class id), broadcast.
  Shape cls_shape(logits.dim(), 1);
  cls_shape[cdim] = C;
  Tensor classes = arange(static_cast<double>(C), {.dtype = DType::i64, .device = logits.device()}).reshape(cls_shape);
  Tensor onehot = eq(target.to(DType::i64).unsqueeze(cdim), classes).to(logits.dtype());
  Tensor loss = neg(sum(mul(logp, onehot), {cdim}));
  return reduce(loss, reduction);
}

Tensor gaussian_nll_loss(const Tensor& input, const Tensor& target, const Tensor& var, bool full, double eps,
                         Reduction reduction) {
  const char* op = "gaussian_nll_loss";
  Tensor t = check_pair(op, input, target);
  check_floating(op, "var", var);
  EMBER_CHECK(var.device() == input.device(), op, ": var is on ", var.device().str(), ", input on ",
              input.device().str());
  EMBER_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  Tensor v = var.to(input.dtype());
  if (v.sizes() != input.sizes()) {
    const Shape& is = input.sizes();
    const Shape lead(is.begin(), is.end() - (is.empty() ? 0 : 1));
    if (!is.empty() && v.sizes() == lead) {
      v = v.unsqueeze(-1);  // one variance per row, shared by the last dim
    } else {
      const bool last1 = !is.empty() && v.dim() == input.dim() && v.size(-1) == 1 &&
                         Shape(v.sizes().begin(), v.sizes().end() - 1) == lead;
      EMBER_CHECK(last1, op, ": var shape ", shape_str(var.sizes()), " does not fit input ", shape_str(is),
                  "; expected ", shape_str(is), ", ", shape_str(lead), " or the input's shape with last dim 1");
    }
  }
  {
    const std::vector<double> vv = v.to_vector<double>();
    for (size_t i = 0; i < vv.size(); ++i)
      EMBER_CHECK(vv[i] >= 0, op, ": var has a negative entry (", vv[i], " at element ", i, " of ",
                  shape_str(var.sizes()), ")");
  }
  // max(var, eps) in value, the identity in gradient: var + (clamped - var), the second term
  // a constant.
  Tensor vd = v.detach();
  Tensor vc = add(v, sub(clamp(vd, eps, std::nullopt), vd));
  Tensor loss = mul(add(log(vc), div(square(sub(input, t)), vc)), 0.5);
  if (full) loss = add(loss, 0.5 * std::log(2 * std::numbers::pi));
  return reduce(loss, reduction);
}

}  // namespace ember
