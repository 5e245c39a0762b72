// AVX-512F GEMM micro-kernels (see gemm_ukernel.h for the contract).
//
// f32: a 12 x 32 tile of C in 24 zmm accumulators; each step of k loads two 16-wide vectors of
// B, broadcasts 12 scalars of A and issues 24 FMAs (bound by FMA throughput). f64: a 12 x 16
// tile (8-wide vectors), same shape of loop. Partial tiles go through a small buffer on the
// stack. The functions carry __attribute__((target("avx512f"))), so this file needs no -m
// flags; gemm.cpp calls them only when __builtin_cpu_supports("avx512f") holds.
#include "ember/kernels/cpu/gemm_ukernel.h"

#if EMBER_GEMM_X86
#include <immintrin.h>

#include <algorithm>

#define EMBER_AVX512 __attribute__((target("avx512f")))

namespace ember::kernels::cpu::gemm_detail {
namespace {

constexpr int SMR = kAvx512SMR, SNR = kAvx512SNR;
constexpr int DMR = kAvx512DMR, DNR = kAvx512DNR;
static_assert(SMR == 12 && DMR == 12 && SNR == 32 && DNR == 16, "the loops below are written for these tiles");

EMBER_AVX512 inline void s_step(const float* const* ar, int64_t off, const float* b, __m512 (&acc)[SMR][2]) {
  const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
  for (int i = 0; i < SMR; ++i) {
    const __m512 av = _mm512_set1_ps(ar[i][off]);
    acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
    acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
  }
}

EMBER_AVX512 inline void d_step(const double* const* ar, int64_t off, const double* b, __m512d (&acc)[DMR][2]) {
  const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
#pragma GCC unroll 12
  for (int i = 0; i < DMR; ++i) {
    const __m512d av = _mm512_set1_pd(ar[i][off]);
    acc[i][0] = _mm512_fmadd_pd(av, b0, acc[i][0]);
    acc[i][1] = _mm512_fmadd_pd(av, b1, acc[i][1]);
  }
}

// C = alpha * acc + beta * C on a full tile at c (row stride ldc); beta == 0 does not read C.
EMBER_AVX512 inline void s_update(__m512 (&acc)[SMR][2], float* c, int64_t ldc, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < SMR; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      _mm512_storeu_ps(ci, _mm512_mul_ps(va, acc[i][0]));
      _mm512_storeu_ps(ci + 16, _mm512_mul_ps(va, acc[i][1]));
    } else {
      _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, acc[i][0], _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
      _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, acc[i][1], _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));
    }
  }
}

EMBER_AVX512 inline void d_update(__m512d (&acc)[DMR][2], double* c, int64_t ldc, double alpha, double beta) {
  const __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
  for (int i = 0; i < DMR; ++i) {
    double* ci = c + i * ldc;
    if (beta == 0.0) {
      _mm512_storeu_pd(ci, _mm512_mul_pd(va, acc[i][0]));
      _mm512_storeu_pd(ci + 8, _mm512_mul_pd(va, acc[i][1]));
    } else {
      _mm512_storeu_pd(ci, _mm512_fmadd_pd(va, acc[i][0], _mm512_mul_pd(vb, _mm512_loadu_pd(ci))));
      _mm512_storeu_pd(ci + 8, _mm512_fmadd_pd(va, acc[i][1], _mm512_mul_pd(vb, _mm512_loadu_pd(ci + 8))));
    }
  }
}

}  // namespace

EMBER_AVX512 void sgemm_ukernel_avx512(int64_t k, const float* a, int64_t rs_a, int64_t cs_a, const float* b,
                                       int64_t rs_b, float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  __m512 acc[SMR][2];
  for (int i = 0; i < SMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  if (rs_a == 1 && cs_a == SMR) {  // packed A: one pointer, SMR consecutive scalars a step
    const float* ar[SMR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9, a + 10, a + 11};
    for (int64_t p = 0; p < k; ++p, b += rs_b) s_step(ar, p * SMR, b, acc);
  } else {  // A in place: rows past m repeat row m-1
    const float* ar[SMR];
    for (int i = 0; i < SMR; ++i) ar[i] = a + std::min(i, m - 1) * rs_a;
    for (int64_t p = 0; p < k; ++p, b += rs_b) s_step(ar, p * cs_a, b, acc);
  }

  if (m == SMR && n == SNR) {
    s_update(acc, c, ldc, alpha, beta);
    return;
  }
  alignas(64) float t[SMR * SNR];  // partial tile: same arithmetic through a buffer
  if (beta != 0.0f)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) t[i * SNR + j] = c[i * ldc + j];
  s_update(acc, t, SNR, alpha, beta);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = t[i * SNR + j];
}

EMBER_AVX512 void dgemm_ukernel_avx512(int64_t k, const double* a, int64_t rs_a, int64_t cs_a, const double* b,
                                       int64_t rs_b, double* c, int64_t ldc, int m, int n, double alpha,
                                       double beta) {
  __m512d acc[DMR][2];
  for (int i = 0; i < DMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_pd();
  if (rs_a == 1 && cs_a == DMR) {  // packed A: one pointer, DMR consecutive scalars a step
    const double* ar[DMR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9, a + 10, a + 11};
    for (int64_t p = 0; p < k; ++p, b += rs_b) d_step(ar, p * DMR, b, acc);
  } else {  // A in place: rows past m repeat row m-1
    const double* ar[DMR];
    for (int i = 0; i < DMR; ++i) ar[i] = a + std::min(i, m - 1) * rs_a;
    for (int64_t p = 0; p < k; ++p, b += rs_b) d_step(ar, p * cs_a, b, acc);
  }

  if (m == DMR && n == DNR) {
    d_update(acc, c, ldc, alpha, beta);
    return;
  }
  alignas(64) double t[DMR * DNR];
  if (beta != 0.0)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) t[i * DNR + j] = c[i * ldc + j];
  d_update(acc, t, DNR, alpha, beta);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = t[i * DNR + j];
}

}  // namespace ember::kernels::cpu::gemm_detail

#endif  // EMBER_GEMM_X86
