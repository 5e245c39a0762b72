// The host-side interface of the fused GroupNorm kernels (kernels/cuda/group_norm.cu): plain
// C++, called by ops/norm.cpp.
//
//   u = x + t[n, c]                    (t: an optional per-(sample, channel) bias, the U-Net's
//                                       time embedding, added before the statistics)
//   z = (u - mean_g) * rstd_g * w[c] + b[c]     (w, b optional)
//   y = silu(z) when silu, else z
// over a contiguous x [N, C, S]; the statistics are per (sample, group of C / G channels).
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

struct GroupNormShape {
  int64_t N = 0, C = 0, S = 0, G = 0;  // x is [N, C, S]; G divides C
  double eps = 1e-5;
  bool silu = false;
};

// y, and mean / rstd [N, G] (saved for the backward); t, w, b may be null. f32 or f64.
void group_norm_forward(ElemType t, const GroupNormShape& s, const void* x, const void* bias_nc, const void* w,
                        const void* b, void* y, void* mean, void* rstd, void* stream);

// First-order gradients from dy [N, C, S]: dx [N, C, S], dbias_nc [N, C] (dL/dt = sum_s dx),
// and the per-sample parts of the parameter gradients, dw_part and db_part [N, C], which the
// caller sums over N. Each output may be null (not wanted).
void group_norm_backward(ElemType t, const GroupNormShape& s, const void* x, const void* bias_nc, const void* w,
                         const void* b, const void* mean, const void* rstd, const void* dy, void* dx, void* dbias_nc,
                         void* dw_part, void* db_part, void* stream);

}  // namespace ember::kernels::cuda
