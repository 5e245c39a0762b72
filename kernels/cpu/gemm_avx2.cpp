// AVX2+FMA GEMM kernels (see gemm_ukernel.h for the contracts).
//
// Micro-kernels. f32: a 6 x 16 tile of C in 12 ymm accumulators; each step of k loads two
// 8-wide vectors of B, broadcasts 6 scalars of A and issues 12 FMAs (2 FMA ports: 6 cycles a
// step, bound by FLOPs when A and B come from L1/L2). f64: the same with a 6 x 8 tile.
// Packing: transposing packs for the f32 6-row and 16-row panels through 8 x 8 in-register
// transposes. Thin f32 products: dot products 8 rows at a time with an hadd reduction tree,
// and row-axpys with 32 columns of sums in registers (bound by reading the long operand).
// The functions carry __attribute__((target)), so this file needs no -m flags; gemm.cpp calls
// them only when __builtin_cpu_supports says the host has AVX2 and FMA.
#include "ember/kernels/cpu/gemm_ukernel.h"

#if EMBER_GEMM_X86
#include <immintrin.h>

#include <algorithm>

#define EMBER_AVX2 __attribute__((target("avx2,fma")))

namespace ember::kernels::cpu::gemm_detail {
namespace {

// ---- f32, 6 x 16 ------------------------------------------------------------------------

constexpr int SMR = kAvx2SMR, SNR = kAvx2SNR;

EMBER_AVX2 inline void s_step(const float* const* ar, int64_t off, const float* b, __m256 (&acc)[SMR][2]) {
  const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
  for (int i = 0; i < SMR; ++i) {
    const __m256 av = _mm256_broadcast_ss(ar[i] + off);
    acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
    acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
  }
}

// C = alpha * acc + beta * C on a full tile at c (row stride ldc); beta == 0 does not read C.
EMBER_AVX2 inline void s_update(__m256 (&acc)[SMR][2], float* c, int64_t ldc, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 6
    for (int i = 0; i < SMR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(va, acc[i][0]));
      _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(va, acc[i][1]));
    }
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < SMR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_fmadd_ps(va, acc[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(c + i * ldc))));
      _mm256_storeu_ps(c + i * ldc + 8,
                       _mm256_fmadd_ps(va, acc[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(c + i * ldc + 8))));
    }
  }
}

// Partial tiles go through a buffer with the same arithmetic, so an element's bits do not
// depend on where the tile edges fall (thread count, blocking).
EMBER_AVX2 inline void s_store(__m256 (&acc)[SMR][2], float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  if (m == SMR && n == SNR) {
    s_update(acc, c, ldc, alpha, beta);
    return;
  }
  alignas(32) float t[SMR * SNR];
  if (beta != 0.0f)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) t[i * SNR + j] = c[i * ldc + j];
  s_update(acc, t, SNR, alpha, beta);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = t[i * SNR + j];
}

// ---- f64, 6 x 8 -------------------------------------------------------------------------

constexpr int DMR = kAvx2DMR, DNR = kAvx2DNR;

EMBER_AVX2 inline void d_step(const double* const* ar, int64_t off, const double* b, __m256d (&acc)[DMR][2]) {
  const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
#pragma GCC unroll 6
  for (int i = 0; i < DMR; ++i) {
    const __m256d av = _mm256_broadcast_sd(ar[i] + off);
    acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
    acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
  }
}

EMBER_AVX2 inline void d_update(__m256d (&acc)[DMR][2], double* c, int64_t ldc, double alpha, double beta) {
  const __m256d va = _mm256_set1_pd(alpha);
  if (beta == 0.0) {
#pragma GCC unroll 6
    for (int i = 0; i < DMR; ++i) {
      _mm256_storeu_pd(c + i * ldc, _mm256_mul_pd(va, acc[i][0]));
      _mm256_storeu_pd(c + i * ldc + 4, _mm256_mul_pd(va, acc[i][1]));
    }
  } else {
    const __m256d vb = _mm256_set1_pd(beta);
#pragma GCC unroll 6
    for (int i = 0; i < DMR; ++i) {
      _mm256_storeu_pd(c + i * ldc, _mm256_fmadd_pd(va, acc[i][0], _mm256_mul_pd(vb, _mm256_loadu_pd(c + i * ldc))));
      _mm256_storeu_pd(c + i * ldc + 4,
                       _mm256_fmadd_pd(va, acc[i][1], _mm256_mul_pd(vb, _mm256_loadu_pd(c + i * ldc + 4))));
    }
  }
}

EMBER_AVX2 inline void d_store(__m256d (&acc)[DMR][2], double* c, int64_t ldc, int m, int n, double alpha,
                               double beta) {
  if (m == DMR && n == DNR) {
    d_update(acc, c, ldc, alpha, beta);
    return;
  }
  alignas(32) double t[DMR * DNR];
  if (beta != 0.0)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) t[i * DNR + j] = c[i * ldc + j];
  d_update(acc, t, DNR, alpha, beta);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = t[i * DNR + j];
}

// ---- packing: R rows contiguous in p -> [p][R] panels --------------------------------------

// In-register transpose of an 8 x 8 block: on return r[q] holds column q of the input rows.
EMBER_AVX2 inline void transpose8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

}  // namespace

// dst[p * 6 + i] = src[i * ld + p]: 8 x 8 transposes (rows 6 and 7 are dummies), 6 of 8 lanes kept.
EMBER_AVX2 void pack_rows6_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k) {
  const float* rows[6];
  for (int i = 0; i < 6; ++i) rows[i] = src + i * ld;
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 r[8];
    for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(rows[i] + p);
    r[6] = r[7] = _mm256_setzero_ps();
    transpose8(r);
    float* d = dst + p * 6;
    for (int q = 0; q < 7; ++q) _mm256_storeu_ps(d + q * 6, r[q]);  // lanes 6, 7 overwritten by the next
    _mm_storeu_ps(d + 42, _mm256_castps256_ps128(r[7]));
    _mm_storel_pi(reinterpret_cast<__m64*>(d + 46), _mm256_extractf128_ps(r[7], 1));
  }
  for (; p < k; ++p)
    for (int i = 0; i < 6; ++i) dst[p * 6 + i] = rows[i][p];
}

namespace {

// dst[p * R + j] = src[j * ld + p] for R a multiple of 4: per 8 steps of p, one 8 x 8 transpose
// for each full group of 8 rows and, for a last group of 4, one with 4 dummy rows whose lanes
// are not stored.
template <int R>
EMBER_AVX2 inline void pack_rows_f32(float* dst, const float* src, int64_t ld, int64_t k) {
  static_assert(R % 4 == 0, "8-row groups and one 4-row group");
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    for (int h = 0; h < R / 8; ++h) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (h * 8 + j) * ld + p);
      transpose8(r);
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * R + h * 8, r[q]);
    }
    if constexpr (R % 8 == 4) {
      __m256 r[8];
      for (int j = 0; j < 4; ++j) r[j] = _mm256_loadu_ps(src + (R - 4 + j) * ld + p);
      r[4] = r[5] = r[6] = r[7] = _mm256_setzero_ps();
      transpose8(r);
      for (int q = 0; q < 8; ++q) _mm_storeu_ps(dst + (p + q) * R + R - 4, _mm256_castps256_ps128(r[q]));
    }
  }
  for (; p < k; ++p)
    for (int j = 0; j < R; ++j) dst[p * R + j] = src[j * ld + p];
}

}  // namespace

EMBER_AVX2 void pack_rows12_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k) {
  pack_rows_f32<12>(dst, src, ld, k);
}
EMBER_AVX2 void pack_rows16_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k) {
  pack_rows_f32<16>(dst, src, ld, k);
}
EMBER_AVX2 void pack_rows32_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k) {
  pack_rows_f32<32>(dst, src, ld, k);
}

// ---- thin products (f32) -------------------------------------------------------------------

namespace {

// Lanes 0..tail-1 set (tail in 1..7).
EMBER_AVX2 inline __m256i tail_mask(int64_t tail) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)), idx);
}

// acc += x[0:K] * w[0:K] lane-wise (lane l gets p = l mod 8); the tail is masked.
EMBER_AVX2 inline __m256 dot_lanes(const float* x, const float* w, int64_t kv, int64_t tail, __m256i mask) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t p = 0; p < kv; p += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + p), _mm256_loadu_ps(w + p), acc);
  if (tail) acc = _mm256_fmadd_ps(_mm256_maskload_ps(x + kv, mask), _mm256_maskload_ps(w + kv, mask), acc);
  return acc;
}

}  // namespace

// y[r * incy] = sum_p X[r * ldx + p] * w[p]. Eight rows at a time, reduced together by a tree of
// hadds; a leftover row goes through the same tree, so a row's bits never depend on its group.
EMBER_AVX2 void sgemv_dots_avx2(const float* X, int64_t ldx, int64_t rows, int64_t K, const float* w, float* y,
                                int64_t incy) {
  const int64_t kv = K / 8 * 8, tail = K - kv;
  const __m256i mask = tail ? tail_mask(tail) : _mm256_setzero_si256();
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kv; p += 8) {
      const __m256 wv = _mm256_loadu_ps(w + p);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(X + (r + i) * ldx + p), wv, acc[i]);
    }
    if (tail) {
      const __m256 wv = _mm256_maskload_ps(w + kv, mask);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(X + (r + i) * ldx + kv, mask), wv, acc[i]);
    }
    const __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
    const __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
    const __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
    if (incy == 1) {
      _mm256_storeu_ps(y + r, sum);
    } else {
      alignas(32) float t[8];
      _mm256_store_ps(t, sum);
      for (int i = 0; i < 8; ++i) y[(r + i) * incy] = t[i];
    }
  }
  for (; r < rows; ++r) {
    const __m256 acc = dot_lanes(X + r * ldx, w, kv, tail, mask);
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc, acc), _mm256_hadd_ps(acc, acc));
    y[r * incy] = _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}

namespace {

// Rows [p0, p1) of X into the sums of columns [j, j + n), n <= 32; NV is a template argument
// so that all 4 * NV accumulators stay in registers.
template <int NV>
EMBER_AVX2 inline void axpys_block(const float* X, int64_t ldx, int64_t j, int64_t n, int64_t p0, int64_t p1,
                                   const float* w, int64_t ldw, float* y, int64_t ldy) {
  __m256i masks[4];
  #pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const int64_t left = n - q * 8;
    masks[q] = left >= 8 ? _mm256_set1_epi32(-1) : left <= 0 ? _mm256_setzero_si256() : tail_mask(left);
  }
  __m256 acc[NV][4];
  #pragma GCC unroll 4
  for (int v = 0; v < NV; ++v)
    #pragma GCC unroll 4
    for (int q = 0; q < 4; ++q)
      acc[v][q] = p0 == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(y + v * ldy + j + q * 8, masks[q]);
  const float* x = X + p0 * ldx + j;
  if (n == 32) {
    for (int64_t p = p0; p < p1; ++p, x += ldx) {
      const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
                   x3 = _mm256_loadu_ps(x + 24);
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m256 c = _mm256_broadcast_ss(w + v * ldw + p);
        acc[v][0] = _mm256_fmadd_ps(c, x0, acc[v][0]);
        acc[v][1] = _mm256_fmadd_ps(c, x1, acc[v][1]);
        acc[v][2] = _mm256_fmadd_ps(c, x2, acc[v][2]);
        acc[v][3] = _mm256_fmadd_ps(c, x3, acc[v][3]);
      }
    }
  } else {
    for (int64_t p = p0; p < p1; ++p, x += ldx) {
      __m256 xv[4];
      #pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) xv[q] = _mm256_maskload_ps(x + q * 8, masks[q]);
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m256 c = _mm256_broadcast_ss(w + v * ldw + p);
        #pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) acc[v][q] = _mm256_fmadd_ps(c, xv[q], acc[v][q]);
      }
    }
  }
  #pragma GCC unroll 4
  for (int v = 0; v < NV; ++v)
    #pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) _mm256_maskstore_ps(y + v * ldy + j + q * 8, masks[q], acc[v][q]);
}

}  // namespace

// y[v * ldy + j] = sum_p X[p * ldx + j] * w[v * ldw + p] for v < nv (1 or 2), j < len. Blocks of
// 16 rows of X sweep all columns, 32 at a time in registers, so X streams row by row; the sums
// rest in y between blocks (not needed for 32 columns or fewer) and every element adds its terms
// in the order of p.
EMBER_AVX2 void sgemv_axpys_avx2(const float* X, int64_t ldx, int64_t len, int64_t K, const float* w, int64_t ldw,
                                 int nv, float* y, int64_t ldy) {
  const int64_t rows = len <= 32 ? K : 16;
  for (int64_t p0 = 0; p0 < K; p0 += rows) {
    const int64_t p1 = std::min(K, p0 + rows);
    for (int64_t j = 0; j < len; j += 32) {
      const int64_t n = std::min<int64_t>(32, len - j);
      if (nv == 1) {
        axpys_block<1>(X, ldx, j, n, p0, p1, w, ldw, y, ldy);
      } else {
        axpys_block<2>(X, ldx, j, n, p0, p1, w, ldw, y, ldy);
      }
    }
  }
}

EMBER_AVX2 void sgemm_ukernel_avx2(int64_t k, const float* a, int64_t rs_a, int64_t cs_a, const float* b,
                                   int64_t rs_b, float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  __m256 acc[SMR][2];
  for (int i = 0; i < SMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int i = 0; i < m; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + SNR - 1), _MM_HINT_T0);
  }
  // A plain loop unrolled by the compiler keeps all 12 accumulators in registers (manual
  // unrolling made GCC pipeline B loads across steps and spill).
  if (rs_a == 1 && cs_a == SMR) {  // packed A: SMR consecutive scalars a step
    const float* ar[SMR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5};
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; ++p) {
      s_step(ar, p * SMR, b, acc);
      b += rs_b;
    }
  } else {  // A in place: rows past m repeat row m-1
    const float* ar[SMR];
    for (int i = 0; i < SMR; ++i) ar[i] = a + std::min(i, m - 1) * rs_a;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; ++p) {
      s_step(ar, p * cs_a, b, acc);
      b += rs_b;
    }
  }
  s_store(acc, c, ldc, m, n, alpha, beta);
}

EMBER_AVX2 void dgemm_ukernel_avx2(int64_t k, const double* a, int64_t rs_a, int64_t cs_a, const double* b,
                                   int64_t rs_b, double* c, int64_t ldc, int m, int n, double alpha, double beta) {
  __m256d acc[DMR][2];
  for (int i = 0; i < DMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
  for (int i = 0; i < m; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + DNR - 1), _MM_HINT_T0);
  }
  // A plain loop unrolled by the compiler keeps all 12 accumulators in registers (manual
  // unrolling made GCC pipeline B loads across steps and spill).
  if (rs_a == 1 && cs_a == DMR) {  // packed A: DMR consecutive scalars a step
    const double* ar[DMR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5};
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; ++p) {
      d_step(ar, p * DMR, b, acc);
      b += rs_b;
    }
  } else {  // A in place: rows past m repeat row m-1
    const double* ar[DMR];
    for (int i = 0; i < DMR; ++i) ar[i] = a + std::min(i, m - 1) * rs_a;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; ++p) {
      d_step(ar, p * cs_a, b, acc);
      b += rs_b;
    }
  }
  d_store(acc, c, ldc, m, n, alpha, beta);
}

}  // namespace ember::kernels::cpu::gemm_detail

#endif  // EMBER_GEMM_X86
