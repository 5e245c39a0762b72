// Normalization layers. Each forward is two fused passes over a contiguous copy of x: the
// statistics (mean and variance of each row / group / channel, one shifted pass accumulated
// in f64), then y = (x - mean) * scale + shift with scale = rstd * weight. The backward is
// the closed form of the normalization's gradient written in ops, with mean, rstd and
// xhat = (x - mean) * rstd recomputed from x by ops, so it is exact at every order:
//   dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)),   gh = g * weight
//   dweight = sum(g * xhat),   dbias = sum(g)   (over every dim but the parameter's)
// On the GPU, group_norm (and group_norm_silu, which fuses the U-Net's neighbours of it) runs
// kernels/cuda/group_norm.cu; layer_norm and batch_norm run the same normalization written in
// ops (reductions, then broadcast elementwise kernels). The backwards are shared.
#include "ember/ops/norm.h"

#include <cmath>
#include <vector>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/group_norm.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"

namespace ember {

using autograd::input_grad;
using autograd::record;
namespace cpu = kernels::cpu;

namespace {


void check_input(const char* op, const Tensor& x) {
  EMBER_CHECK(x.defined(), op, ": input is undefined");
  EMBER_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": expected a f32 or f64 input, got ", x.str(),
              " (convert with .to(DType::f32))");
}

// An optional per-feature tensor (weight, bias, running stats): same device and dtype as x and
// the expected shape.
void check_param(const char* op, const char* what, const Tensor& x, const Tensor& p, const Shape& want) {
  if (!p.defined()) return;
  EMBER_CHECK(p.device() == x.device(), op, ": ", what, " is on ", p.device().str(), " but the input is on ",
              x.device().str(), "; move one with .to(device)");
  EMBER_CHECK(p.dtype() == x.dtype(), op, ": ", what, " is ", p.str(), " but the input is ", x.str(),
              "; convert it with .to(dtype)");
  EMBER_CHECK(p.sizes() == want, op, ": ", what, " has shape ", shape_str(p.sizes()), ", expected ", shape_str(want),
              " for an input of shape ", shape_str(x.sizes()));
}

// Mean and biased variance of n contiguous values: one pass, shifted by the first value (so
// a large common offset does not cancel), accumulated in f64 in two chains.
template <typename T>
void moments(const T* x, int64_t n, double& mean, double& var) {
  const double k = static_cast<double>(x[0]);
  double s0 = 0, q0 = 0, s1 = 0, q1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const double a = static_cast<double>(x[i]) - k, b = static_cast<double>(x[i + 1]) - k;
    s0 += a;
    q0 += a * a;
    s1 += b;
    q1 += b * b;
  }
  for (; i < n; ++i) {
    const double a = static_cast<double>(x[i]) - k;
    s0 += a;
    q0 += a * a;
  }
  const double m = (s0 + s1) / static_cast<double>(n);
  mean = k + m;
  var = std::max(0.0, (q0 + q1) / static_cast<double>(n) - m * m);
}

// Mean and rstd of each of the R contiguous rows of length M.
template <typename T>
void row_stats(const T* x, int64_t R, int64_t M, double eps, std::vector<double>& mean, std::vector<double>& rstd) {
  mean.resize(R);
  rstd.resize(R);
  cpu::parallel_for(0, R, std::max<int64_t>(1, 16384 / std::max<int64_t>(M, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      double mu, var;
      moments(x + r * M, M, mu, var);
      mean[r] = mu;
      rstd[r] = 1.0 / std::sqrt(var + eps);
    }
  });
}

// y = (x - mu[c]) * a[c] + h[c] over `rows` contiguous channel rows of S values each.
template <typename T>
void affine_rows(const T* __restrict x, T* __restrict y, int64_t rows, int64_t S, const T* __restrict mu,
                 const T* __restrict a, const T* __restrict h) {
  if (S == 1) {
    for (int64_t c = 0; c < rows; ++c) y[c] = (x[c] - mu[c]) * a[c] + h[c];
    return;
  }
  for (int64_t c = 0; c < rows; ++c) {
    const T m = mu[c], ac = a[c], hc = h[c];
    const T* __restrict xr = x + c * S;
    T* __restrict yr = y + c * S;
    for (int64_t s = 0; s < S; ++s) yr[s] = (xr[s] - m) * ac + hc;
  }
}

// y[n, c, s] = (x[n, c, s] - mu) * a + h for a contiguous x of shape [N, C, S], where
// param(n, c, mu, a, h) gives the values of channel c of sample n. The channel rows are
// taken in blocks, their values gathered first, so the inner loops vectorize for any S.
template <typename T, typename Param>
void channel_affine(const T* x, T* y, int64_t N, int64_t C, int64_t S, const Param& param) {
  constexpr int64_t kBlock = 256;
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [&](int64_t b, int64_t e) {
    T mu[kBlock], a[kBlock], h[kBlock];
    int64_t n = b / C, c = b % C;
    for (int64_t i0 = b; i0 < e; i0 += kBlock) {
      const int64_t w = std::min(kBlock, e - i0);
      for (int64_t k = 0; k < w; ++k) {
        double m, sc, sh;
        param(n, c, m, sc, sh);
        mu[k] = static_cast<T>(m);
        a[k] = static_cast<T>(sc);
        h[k] = static_cast<T>(sh);
        if (++c == C) {
          c = 0;
          ++n;
        }
      }
      affine_rows(x + i0 * S, y + i0 * S, w, S, mu, a, h);
    }
  });
}

// One layer_norm row: y = (x - m) * s * w + b, w and b optional.
template <typename T>
void layer_norm_row(const T* __restrict x, T* __restrict y, int64_t M, T m, T s, const T* __restrict w,
                    const T* __restrict b) {
  if (w && b) {
    for (int64_t j = 0; j < M; ++j) y[j] = (x[j] - m) * s * w[j] + b[j];
  } else if (w) {
    for (int64_t j = 0; j < M; ++j) y[j] = (x[j] - m) * s * w[j];
  } else if (b) {
    for (int64_t j = 0; j < M; ++j) y[j] = (x[j] - m) * s + b[j];
  } else {
    for (int64_t j = 0; j < M; ++j) y[j] = (x[j] - m) * s;
  }
}

// The dims of x other than dim 1 (the channel dim), and the shape [C, 1, ...] that a
// per-channel tensor is reshaped to so that it broadcasts against x.
Shape non_channel_dims(int64_t ndim) {
  Shape d;
  for (int64_t i = 0; i < ndim; ++i)
    if (i != 1) d.push_back(i);
  return d;
}
Shape channel_shape(int64_t C, int64_t ndim) {
  Shape s{C};
  for (int64_t i = 2; i < ndim; ++i) s.push_back(1);
  return s;
}

// xhat = (x - mean) * rstd over `dims` (kept), recomputed with ops; also returns rstd.
std::pair<Tensor, Tensor> normalize_ops(const Tensor& x, const Shape& dims, double eps) {
  Tensor xc = sub(x, mean(x, dims, true));
  Tensor rstd = rsqrt(add(mean(square(xc), dims, true), eps));
  return {mul(xc, rstd), rstd};
}

// The input gradient of xhat = normalize(x) over `dims`, given gh = dL/dxhat.
Tensor normalize_backward(const Tensor& gh, const Tensor& xhat, const Tensor& rstd, const Shape& dims) {
  Tensor inner = sub(sub(gh, mean(gh, dims, true)), mul(xhat, mean(mul(gh, xhat), dims, true)));
  return mul(rstd, inner);
}

// The GPU forward: xhat over `dims` (the ops above, not recorded), times scale, plus shift
// (either undefined, else broadcasting against x).
Tensor normalize_affine_gpu(const Tensor& x, const Shape& dims, double eps, const Tensor& scale, const Tensor& shift) {
  NoGrad ng;
  Tensor y = normalize_ops(x.detach(), dims, eps).first;
  if (scale.defined()) y = mul(y, scale.detach());
  if (shift.defined()) y = add(y, shift.detach());
  return y;
}

// The fused GroupNorm forward on the GPU: y = [silu](normalize(x + t) * w + b) with mean and
// rstd [N, G] saved; t ([N, C]), w, b optional.
struct GroupNormGpu {
  Tensor out, mean, rstd;
};

GroupNormGpu group_norm_gpu(const Tensor& x, int64_t G, const Tensor& weight, const Tensor& bias,
                            const Tensor& sample_bias, double eps, bool silu) {
  const int64_t N = x.size(0), C = x.size(1);
  const TensorOptions o{.dtype = x.dtype(), .device = x.device()};
  GroupNormGpu r{Tensor::empty(x.sizes(), o), Tensor::empty({N, G}, o), Tensor::empty({N, G}, o)};
  Tensor xc = x.detach().contiguous();
  auto ptr = [](const Tensor& t, Tensor& keep) -> const void* {
    if (!t.defined()) return nullptr;
    keep = t.detach().contiguous();
    return keep.device_data();
  };
  Tensor tk, wk, bk;
  const void* tp = ptr(sample_bias, tk);
  const void* wp = ptr(weight, wk);
  const void* bp = ptr(bias, bk);
#if EMBER_WITH_CUDA
  const kernels::cuda::GroupNormShape shape{N, C, N * C == 0 ? 0 : x.numel() / (N * C), G, eps, silu};
  kernels::cuda::group_norm_forward(cuda::elem_type(x.dtype()), shape, xc.device_data(), tp, wp, bp,
                                    r.out.device_data(), r.mean.device_data(), r.rstd.device_data(),
                                    cuda::stream_of(x));
#else
  (void)tp, (void)wp, (void)bp, (void)eps, (void)silu, (void)C;
#endif
  return r;
}

struct BatchNormGpu {
  Tensor out, mu, rstd;  // mu, rstd shaped [C, 1, ...]: evaluation's constants
};

// batch_norm's forward on the GPU in ops; updates the running statistics in training.
BatchNormGpu batch_norm_gpu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  NoGrad ng;
  const int64_t C = x.size(1);
  const Shape cdims = non_channel_dims(x.dim()), cshape = channel_shape(C, x.dim());
  const Tensor xd = x.detach();
  Tensor mu, var;  // [C]
  if (training) {
    mu = mean(xd, cdims);
    var = mean(square(sub(xd, mu.reshape(cshape))), cdims);
    if (running_mean.defined()) {
      // running = (1 - momentum) running + momentum batch, with the unbiased variance
      const double n = static_cast<double>(x.numel() / C);
      Tensor running_m = running_mean, running_v = running_var;  // handles to the caller's tensors
      running_m.copy_(add(mul(running_mean.detach(), 1 - momentum), mul(mu, momentum)));
      running_v.copy_(add(mul(running_var.detach(), 1 - momentum), mul(var, momentum * n / (n - 1))));
    }
  } else {
    mu = running_mean.detach().clone();
    var = running_var.detach().clone();
    if (C > 0 && !(amin(add(var, eps), {0}).item() > 0)) {  // one host read, as the CPU's check
      const std::vector<double> v = var.to_vector<double>();
      for (int64_t c = 0; c < C; ++c)
        EMBER_CHECK(v[c] + eps > 0, "batch_norm: running_var[", c, "] + eps = ", v[c] + eps, " is not positive");
    }
  }
  Tensor rstd = rsqrt(add(var, eps));
  Tensor scale = weight.defined() ? mul(rstd, weight.detach()) : rstd;
  Tensor y = mul(sub(xd, mu.reshape(cshape)), scale.reshape(cshape));
  if (bias.defined()) y = add(y, bias.detach().reshape(cshape));
  return {y, mu.reshape(cshape), rstd.reshape(cshape)};
}

// Values of a 1-D tensor as doubles (empty when undefined).
std::vector<double> values(const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>(); }

}  // namespace

// ------------------------------------------------------------------------------------------
// layer_norm

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  check_input("layer_norm", x);
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  EMBER_CHECK(k >= 1, "layer_norm: normalized_shape is empty; give the trailing dims to normalize over (input ",
              shape_str(x.sizes()), ")");
  bool match = k <= x.dim();
  for (int64_t i = 0; match && i < k; ++i) match = x.sizes()[x.dim() - k + i] == normalized_shape[i];
  EMBER_CHECK(match, "layer_norm: normalized_shape ", shape_str(normalized_shape),
              " does not match the trailing dims of the input ", shape_str(x.sizes()));
  check_param("layer_norm", "weight", x, weight, normalized_shape);
  check_param("layer_norm", "bias", x, bias, normalized_shape);
  EMBER_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
  trace::OpTimer timer("layer_norm", {x, weight, bias});

  const int64_t M = shape_numel(normalized_shape);
  const int64_t R = M == 0 ? 0 : x.numel() / M;
  Shape dims;
  for (int64_t i = x.dim() - k; i < x.dim(); ++i) dims.push_back(i);
  Tensor out = Tensor::empty(x.sizes(), {.dtype = x.dtype(), .device = x.device()});
  if (x.device().is_cuda()) {
    dispatch_floating(x.dtype(), "layer_norm", [](auto) {});  // the CPU's dtype error
    if (R > 0 && M > 0) out = normalize_affine_gpu(x, dims, eps, weight, bias);
  } else if (R > 0 && M > 0) {
    Tensor xc = x.detach().contiguous();
    Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
    Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
    dispatch_floating(x.dtype(), "layer_norm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = xc.data<T>();
      const T* wp = wc.defined() ? wc.data<T>() : nullptr;
      const T* bp = bc.defined() ? bc.data<T>() : nullptr;
      T* yp = out.data<T>();
      std::vector<double> mu, rs;
      row_stats(xp, R, M, eps, mu, rs);
      cpu::parallel_for(0, R, std::max<int64_t>(1, 16384 / M), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r)
          layer_norm_row(xp + r * M, yp + r * M, M, static_cast<T>(mu[r]), static_cast<T>(rs[r]), wp, bp);
      });
    });
  }
  timer.set_output(out);

  record("layer_norm", {x, weight, bias}, out,
         [x, weight, bshape = bias.defined() ? bias.sizes() : Shape{}, dims, eps, rx = input_grad(x, 0),
          rw = input_grad(weight, 1), rb = input_grad(bias, 2)](const TensorList& g, const TensorList&) {
           Tensor gx, gw, gb;
           if (rx || rw) {
             auto [xhat, rstd] = normalize_ops(x, dims, eps);
             if (rx) gx = normalize_backward(weight.defined() ? mul(g[0], weight) : g[0], xhat, rstd, dims);
             if (rw) gw = sum_to_size(mul(g[0], xhat), weight.sizes());
           }
           if (rb) gb = sum_to_size(g[0], bshape);
           return TensorList{gx, gw, gb};
         },
         {x, weight});
  return out;
}

// ------------------------------------------------------------------------------------------
// group_norm

namespace {

// The gradients of group_norm_silu written in ops (differentiable again), the wanted ones
// only: recomputes u = x + t, xhat and z = xhat w + b, then
//   gz = silu_backward(g, z),  gh = gz w,  gu = normalize_backward(gh),  gt = sum_s gu,
//   gw = sum(gz xhat),  gb = sum(gz).
// Without t and SiLU these are group_norm's gradients, whose backward this is too.
struct GroupNormGrads {
  bool x, weight, bias, sample_bias;  // which gradients the walk wants
};
TensorList group_norm_silu_backward_ops(const Tensor& g, const Tensor& x, int64_t G, const Tensor& weight,
                                        const Tensor& bias, const Tensor& sample_bias, double eps, bool silu,
                                        GroupNormGrads want) {
  const int64_t N = x.size(0), C = x.size(1);
  const Shape grouped{N, G, -1}, cdims = non_channel_dims(x.dim()), cshape = channel_shape(C, x.dim());
  Shape nc_shape{N, C}, spatial;
  for (int64_t i = 2; i < x.dim(); ++i) {
    nc_shape.push_back(1);
    spatial.push_back(i);
  }
  want.weight = want.weight && weight.defined();
  want.bias = want.bias && bias.defined();
  want.sample_bias = want.sample_bias && sample_bias.defined();
  Tensor gu, gw, gb, gt;
  if (!silu && !want.x && !want.weight && !want.sample_bias) {  // the bias's gradient alone: no xhat
    if (want.bias) gb = sum(g, cdims);
    return {gu, gw, gb, gt};
  }
  const Tensor u = sample_bias.defined() ? add(x, sample_bias.reshape(nc_shape)) : x;
  auto [xhat_g, rstd] = normalize_ops(u.reshape(grouped), {2}, eps);
  const Tensor xhat = xhat_g.reshape(x.sizes());
  Tensor gz = g;
  if (silu) {
    Tensor z = xhat;
    if (weight.defined()) z = mul(z, weight.reshape(cshape));
    if (bias.defined()) z = add(z, bias.reshape(cshape));
    gz = silu_backward(g, z);
  }
  if (want.x || want.sample_bias) {
    const Tensor gh = weight.defined() ? mul(gz, weight.reshape(cshape)) : gz;
    gu = normalize_backward(gh.reshape(grouped), xhat_g, rstd, {2}).reshape(x.sizes());
    if (want.sample_bias) gt = spatial.empty() ? gu : sum(gu, spatial);
    if (!want.x) gu = Tensor();
  }
  if (want.weight) gw = sum(mul(gz, xhat), cdims);
  if (want.bias) gb = sum(gz, cdims);
  return {gu, gw, gb, gt};
}

}  // namespace

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  check_input("group_norm", x);
  EMBER_CHECK(x.dim() >= 2, "group_norm: expected an input [N, C, ...], got ", shape_str(x.sizes()));
  const int64_t N = x.size(0), C = x.size(1), G = num_groups;
  EMBER_CHECK(G > 0 && C % G == 0, "group_norm: num_groups ", G, " must be positive and divide the ", C,
              " channels of the input ", shape_str(x.sizes()));
  check_param("group_norm", "weight", x, weight, {C});
  check_param("group_norm", "bias", x, bias, {C});
  EMBER_CHECK(eps >= 0, "group_norm: eps must be >= 0, got ", eps);
  // On the GPU the fused op without its SiLU: one kernel each way, where the backward below
  // would be a dozen kernels and as many feature-map-sized temporaries.
  if (x.device().is_cuda()) return group_norm_silu(x, num_groups, weight, bias, Tensor(), eps, /*silu=*/false);
  trace::OpTimer timer("group_norm", {x, weight, bias});

  const int64_t S = C == 0 ? 0 : x.numel() / std::max<int64_t>(N * C, 1);  // spatial size
  const int64_t M = (C / G) * S;                                          // elements per group
  Tensor out = Tensor::empty(x.sizes(), {.dtype = x.dtype(), .device = x.device()});
  if (x.numel() > 0) {
    Tensor xc = x.detach().contiguous();
    const std::vector<double> w = values(weight), bv = values(bias);
    dispatch_floating(x.dtype(), "group_norm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      std::vector<double> gmu, grs;
      row_stats(xc.data<T>(), N * G, M, eps, gmu, grs);
      std::vector<int64_t> group_of(C);
      for (int64_t c = 0; c < C; ++c) group_of[c] = c / (C / G);
      channel_affine(xc.data<T>(), out.data<T>(), N, C, S, [&](int64_t n, int64_t c, double& m, double& a, double& h) {
        const int64_t gi = n * G + group_of[c];
        m = gmu[gi];
        a = grs[gi] * (w.empty() ? 1.0 : w[c]);
        h = bv.empty() ? 0.0 : bv[c];
      });
    });
  }
  timer.set_output(out);

  record("group_norm", {x, weight, bias}, out,
         [x, weight, bias, G, eps, rx = input_grad(x, 0), rw = input_grad(weight, 1), rb = input_grad(bias, 2)](
             const TensorList& g, const TensorList&) {
           TensorList r = group_norm_silu_backward_ops(g[0], x, G, weight, bias, Tensor(), eps, /*silu=*/false,
                                                       {bool(rx), bool(rw), bool(rb), false});
           return TensorList{r[0], r[1], r[2]};
         },
         {x, weight});
  return out;
}

// ------------------------------------------------------------------------------------------
// group_norm_silu: y = silu(group_norm(x + t[n, c], G, w, b)), t and silu optional

Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                       const Tensor& sample_bias, double eps, bool silu) {
  const char* op = "group_norm_silu";
  check_input(op, x);
  EMBER_CHECK(x.dim() >= 2, op, ": expected an input [N, C, ...], got ", shape_str(x.sizes()));
  const int64_t N = x.size(0), C = x.size(1), G = num_groups;
  EMBER_CHECK(G > 0 && C % G == 0, op, ": num_groups ", G, " must be positive and divide the ", C,
              " channels of the input ", shape_str(x.sizes()));
  check_param(op, "weight", x, weight, {C});
  check_param(op, "bias", x, bias, {C});
  check_param(op, "sample_bias", x, sample_bias, {N, C});
  EMBER_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  dispatch_floating(x.dtype(), op, [](auto) {});
  trace::OpTimer timer(op, {x, weight, bias, sample_bias});
  GroupNormGpu r;
  if (x.device().is_cuda()) {
    r = group_norm_gpu(x, G, weight, bias, sample_bias, eps, silu);
  } else {  // the CPU's group_norm between an add and a silu, not recorded (this op records itself)
    NoGrad ng;
    Tensor u = x.detach();
    if (sample_bias.defined()) {
      Shape nc_shape{N, C};
      for (int64_t i = 2; i < x.dim(); ++i) nc_shape.push_back(1);
      u = add(u, sample_bias.detach().reshape(nc_shape));
    }
    r.out = group_norm(u, G, weight.defined() ? weight.detach() : Tensor(), bias.defined() ? bias.detach() : Tensor(),
                       eps);
    if (silu) r.out = ember::silu(r.out);
  }
  timer.set_output(r.out);
  record(op, {x, weight, bias, sample_bias}, r.out,
         [x, weight, bias, sample_bias, G, eps, silu, mean = r.mean, rstd = r.rstd, rx = input_grad(x, 0),
          rw = input_grad(weight, 1), rb = input_grad(bias, 2), rt = input_grad(sample_bias, 3)](
              const TensorList& g, const TensorList&) {
           // On the CPU, and under create_graph (the backward must itself be recorded): ops.
           if (!x.device().is_cuda() || grad_enabled()) {
             return group_norm_silu_backward_ops(g[0], x, G, weight, bias, sample_bias, eps, silu,
                                                 {bool(rx), bool(rw), bool(rb), bool(rt)});
           }
           // First order: one fused kernel, then the per-sample parameter parts summed over N.
           const int64_t N = x.size(0), C = x.size(1);
           const TensorOptions o{.dtype = x.dtype(), .device = x.device()};
           Tensor dx = rx ? Tensor::empty(x.sizes(), o) : Tensor();
           Tensor dt = rt ? Tensor::empty({N, C}, o) : Tensor();
           Tensor dw = rw ? Tensor::empty({N, C}, o) : Tensor();
           Tensor db = rb ? Tensor::empty({N, C}, o) : Tensor();
           Tensor xc = x.detach().contiguous(), dy = g[0].contiguous();
           Tensor tc = sample_bias.defined() ? sample_bias.detach().contiguous() : Tensor();
           Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
           Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
           auto p = [](const Tensor& t) -> void* { return t.defined() ? t.device_data() : nullptr; };
#if EMBER_WITH_CUDA
           const kernels::cuda::GroupNormShape shape{N, C, N * C == 0 ? 0 : x.numel() / (N * C), G, eps, silu};
           kernels::cuda::group_norm_backward(cuda::elem_type(x.dtype()), shape, xc.device_data(), p(tc), p(wc), p(bc),
                                              mean.device_data(), rstd.device_data(), dy.device_data(), p(dx), p(dt),
                                              p(dw), p(db), cuda::stream_of(x));
#else
           (void)p;
#endif
           return TensorList{dx, rw ? sum(dw, {0}) : Tensor(), rb ? sum(db, {0}) : Tensor(), dt};
         },
         {x, weight, bias, sample_bias});
  return r.out;
}

// ------------------------------------------------------------------------------------------
// batch_norm

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  check_input("batch_norm", x);
  EMBER_CHECK(x.dim() >= 2, "batch_norm: expected an input [N, C] or [N, C, H, W], got ", shape_str(x.sizes()));
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t S = N * C == 0 ? 0 : x.numel() / (N * C);
  check_param("batch_norm", "weight", x, weight, {C});
  check_param("batch_norm", "bias", x, bias, {C});
  check_param("batch_norm", "running_mean", x, running_mean, {C});
  check_param("batch_norm", "running_var", x, running_var, {C});
  EMBER_CHECK(running_mean.defined() == running_var.defined(),
              "batch_norm: give both running_mean and running_var, or neither");
  EMBER_CHECK(training || running_mean.defined(),
              "batch_norm: evaluation mode needs running_mean and running_var; pass training = true to normalize with "
              "the batch statistics (input ",
              shape_str(x.sizes()), ")");
  EMBER_CHECK(!training || N * S > 1, "batch_norm: training needs more than one value per channel, got input ",
              shape_str(x.sizes()));
  EMBER_CHECK(eps >= 0, "batch_norm: eps must be >= 0, got ", eps);
  trace::OpTimer timer("batch_norm", {x, weight, bias});

  const Shape cdims = non_channel_dims(x.dim()), cshape = channel_shape(C, x.dim());
  Tensor out, mu_c, rstd_c;  // mu_c, rstd_c: evaluation's constants, shaped [C, 1, ...]
  if (x.device().is_cuda()) {
    dispatch_floating(x.dtype(), "batch_norm", [](auto) {});
    BatchNormGpu r = batch_norm_gpu(x, running_mean, running_var, weight, bias, training, momentum, eps);
    out = r.out;
    mu_c = r.mu;
    rstd_c = r.rstd;
  } else {
    const std::vector<double> w = values(weight), bv = values(bias);
    std::vector<double> mu(C), rstd(C), var(C);
    Tensor xc = x.detach().contiguous();
    if (training) {
      if (x.numel() > 0) {
        dispatch_floating(x.dtype(), "batch_norm", [&](auto tag) {
          using T = typename decltype(tag)::type;
          const T* xp = xc.data<T>();
          if (S == 1) {
            // [N, C]: sweep the rows, accumulating every channel at once (shifted by row 0)
            cpu::parallel_for(0, C, 256, [&](int64_t b, int64_t e) {
              std::vector<double> s(e - b, 0.0), q(e - b, 0.0);
              for (int64_t n = 0; n < N; ++n) {
                const T* r = xp + n * C;
                for (int64_t c = b; c < e; ++c) {
                  const double a = static_cast<double>(r[c]) - static_cast<double>(xp[c]);
                  s[c - b] += a;
                  q[c - b] += a * a;
                }
              }
              for (int64_t c = b; c < e; ++c) {
                const double m = s[c - b] / static_cast<double>(N);
                mu[c] = static_cast<double>(xp[c]) + m;
                var[c] = std::max(0.0, q[c - b] / static_cast<double>(N) - m * m);
              }
            });
            return;
          }
          cpu::parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
            for (int64_t c = b; c < e; ++c) {
              // channel c is N contiguous runs of S values; combine the runs' shifted sums
              const double k = static_cast<double>(xp[c * S]);
              double s = 0, q = 0;
              for (int64_t n = 0; n < N; ++n) {
                const T* r = xp + (n * C + c) * S;
                for (int64_t i = 0; i < S; ++i) {
                  double a = static_cast<double>(r[i]) - k;
                  s += a;
                  q += a * a;
                }
              }
              const double cnt = static_cast<double>(N * S), m = s / cnt;
              mu[c] = k + m;
              var[c] = std::max(0.0, q / cnt - m * m);
            }
          });
        });
      }
      for (int64_t c = 0; c < C; ++c) rstd[c] = 1.0 / std::sqrt(var[c] + eps);
      if (running_mean.defined()) {
        // running = (1 - momentum) running + momentum batch, with the unbiased variance
        NoGrad ng;
        const double n = static_cast<double>(N * S);
        std::vector<double> rm = running_mean.to_vector<double>(), rv = running_var.to_vector<double>();
        for (int64_t c = 0; c < C; ++c) {
          rm[c] = (1 - momentum) * rm[c] + momentum * mu[c];
          rv[c] = (1 - momentum) * rv[c] + momentum * var[c] * n / (n - 1);
        }
        Tensor running_m = running_mean, running_v = running_var;  // handles to the caller's tensors
        running_m.copy_(from_vector(rm, {C}, {.dtype = x.dtype()}));
        running_v.copy_(from_vector(rv, {C}, {.dtype = x.dtype()}));
      }
    } else {
      mu = running_mean.to_vector<double>();
      var = running_var.to_vector<double>();
      for (int64_t c = 0; c < C; ++c) {
        EMBER_CHECK(var[c] + eps > 0, "batch_norm: running_var[", c, "] + eps = ", var[c] + eps, " is not positive");
        rstd[c] = 1.0 / std::sqrt(var[c] + eps);
      }
    }

    out = Tensor::empty(x.sizes(), {.dtype = x.dtype(), .device = x.device()});
    if (x.numel() > 0) {
      std::vector<double> scale(C), shift(C);
      for (int64_t c = 0; c < C; ++c) {
        scale[c] = rstd[c] * (w.empty() ? 1.0 : w[c]);
        shift[c] = bv.empty() ? 0.0 : bv[c];
      }
      dispatch_floating(x.dtype(), "batch_norm", [&](auto tag) {
        using T = typename decltype(tag)::type;
        channel_affine(xc.data<T>(), out.data<T>(), N, C, S, [&](int64_t, int64_t c, double& m, double& a, double& h) {
          m = mu[c];
          a = scale[c];
          h = shift[c];
        });
      });
    }
    if (!training) {
      // The running statistics are constants of this forward: copies, so a later update of
      // the buffers does not change (or invalidate) this backward.
      mu_c = from_vector(mu, cshape, {.dtype = x.dtype()});
      rstd_c = from_vector(rstd, cshape, {.dtype = x.dtype()});
    }
  }
  timer.set_output(out);

  if (training) {
    record("batch_norm", {x, weight, bias}, out,
           [x, weight, cdims, cshape, eps, rx = input_grad(x, 0), rw = input_grad(weight, 1), rb = input_grad(bias, 2)](
               const TensorList& g, const TensorList&) {
             Tensor gx, gw, gb;
             if (rx || rw) {
               auto [xhat, rstd] = normalize_ops(x, cdims, eps);
               if (rx) gx = normalize_backward(weight.defined() ? mul(g[0], weight.reshape(cshape)) : g[0], xhat, rstd,
                                               cdims);
               if (rw) gw = sum(mul(g[0], xhat), cdims);
             }
             if (rb) gb = sum(g[0], cdims);
             return TensorList{gx, gw, gb};
           },
           {x, weight});
  } else {
    record("batch_norm", {x, weight, bias}, out,
           [x, weight, cdims, cshape, mu_c, rstd_c, rx = input_grad(x, 0), rw = input_grad(weight, 1),
            rb = input_grad(bias, 2)](
               const TensorList& g, const TensorList&) {
             Tensor gx, gw, gb;
             if (rx) gx = mul(g[0], weight.defined() ? mul(weight.reshape(cshape), rstd_c) : rstd_c);
             if (rw) gw = sum(mul(g[0], mul(sub(x, mu_c), rstd_c)), cdims);
             if (rb) gb = sum(g[0], cdims);
             return TensorList{gx, gw, gb};
           },
           {x, weight});
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// dropout

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  check_input("dropout", x);
  EMBER_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p, " (input ", shape_str(x.sizes()), ")");
  if (!training || p == 0.0) return x;
  // One uniform draw per element, from the same Philox stream on every device (so the same mask);
  // an element is kept when u < 1 - p (bernoulli(1 - p)). The mask is one byte an element: it is
  // what the backward holds until it runs.
  Tensor keep;
  {
    NoGrad ng;
    keep = lt(rand(x.sizes(), {.dtype = x.dtype(), .device = x.device()}, gen), 1.0 - p);
  }
  return masked_scale(x, keep, 1.0 / (1.0 - p));  // backward: masked_scale(g, keep, 1 / (1 - p))
}

}  // namespace ember
