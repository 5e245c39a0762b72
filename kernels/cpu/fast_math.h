// Branch-free f32 exp and log1p-on-(0,1] that the compiler can vectorise, for the activations
// that dominate small-MLP training (softplus, sigmoid, SiLU, tanh: glibc's expf/log1pf are
// scalar calls and took ~30% of a DDE step). f64 keeps the libm functions, so gradient checks
// in f64 are unaffected.
//
// exp: x = k ln2 + r with |r| <= ln2/2 (ln2 split in a high and a low part so r is exact to
// f32 precision), e^r by its Taylor polynomial to degree 7 (truncation < 2e-8 relative), 2^k
// by building the exponent bits. Relative error about 2 ulp over [-86.5, 88.7]; x below -86.5
// flushes to 0 (expf gives < 3e-38 there), above 88.72 gives +inf as expf does.
// log1p(t), t in [0, 1]: with s = t / (2 + t) in [0, 1/3], log(1 + t) = 2 atanh(s) =
// 2 (s + s^3/3 + s^5/5 + ...); terms to s^13 leave < 3e-8 relative error.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// Always inlined: these run inside the per-ISA clones of the elementwise loops, and a call out of
// the loop (GCC stopped inlining sigmoid once it had a few more callers) runs them one element
// at a time, 4x slower for the whole DDE step.
#if defined(__GNUC__) || defined(__clang__)
#define EMBER_FAST_MATH inline __attribute__((always_inline))
#else
#define EMBER_FAST_MATH inline
#endif

namespace ember::kernels::cpu {

// e^x for x already within [-86.5, 88.7]: the shared core of the two below.
EMBER_FAST_MATH float exp_in_range(float x) {
  // round to nearest by the 1.5 * 2^23 shifter (vectorises where nearbyint would not)
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^(k-1) * 2, so k = 128 (x near 88.7) does not overflow the exponent field
  const int32_t bits = (static_cast<int32_t>(k) + 126) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale * 2.0f;
}

EMBER_FAST_MATH float fast_exp(float x) {
  const bool under = x < -86.5f, over = x > 88.72f;
  const float out = exp_in_range(under ? -86.5f : (x > 88.7f ? 88.7f : x));
  return under ? 0.0f : (over ? INFINITY : out);
}

// e^x for x <= 0 (NaN passes through): the same without the overflow branch, for the
// activations that only ever take exp(-|x|) (sigmoid, softplus, logsigmoid, tanh), where the
// clamps and selects of the general case were a tenth of the loop. Equal to fast_exp there.
EMBER_FAST_MATH float fast_exp_nonpositive(float x) {
  const bool under = x < -86.5f;
  const float out = exp_in_range(std::max(x, -86.5f));  // NaN stays NaN (std::max keeps its first)
  return under ? 0.0f : out;
}

// log(1 + t) for t in [0, 1].
EMBER_FAST_MATH float log1p_unit(float t) {
  const float s = t / (2.0f + t);
  const float s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

inline double fast_exp(double x) { return std::exp(x); }
inline double fast_exp_nonpositive(double x) { return std::exp(x); }
inline double log1p_unit(double t) { return std::log1p(t); }

}  // namespace ember::kernels::cpu
