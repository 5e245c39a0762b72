// CPU matrix multiply: C = alpha * op(A) * op(B) + beta * C on row-major f32 / f64 matrices.
//
// A cache-blocked GEMM in the Goto/BLIS style (see gemm.cpp for the blocking and threading,
// gemm_avx2.cpp / gemm_avx512.cpp / gemm.cpp for the register-blocked micro-kernels). The
// micro-kernel is chosen once at run time from the host's ISA: AVX-512F, AVX2+FMA, or portable
// C++. Set EMBER_GEMM_ISA=portable|avx2|avx512 in the environment to ask for a lower one
// (a request the host cannot run falls back to the best it can).
//
// Conventions (as in cblas with CblasRowMajor):
// - op(X) = X, or X transposed when trans_x; op(A) is M x K, op(B) is K x N, C is M x N.
// - lda / ldb / ldc are the row strides (in elements) of the matrices as stored: A is stored
//   M x K (lda >= K) or, transposed, K x M (lda >= M); likewise B; ldc >= N.
// - beta == 0 writes C without reading it (C may hold NaN); alpha == 0 or K == 0 reads neither
//   A nor B. M == 0 or N == 0 does nothing.
// - Threads come from parallel.h's pool; called inside a parallel_for chunk, a GEMM runs on
//   the calling thread only. Results do not depend on the thread count (each element is
//   summed by one thread in a fixed order); they may differ in the last bits between ISAs.
#pragma once
#include <cstdint>

namespace ember::kernels::cpu {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
           const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// C = alpha * op(A) * op(B) + bias, bias a row of N values added to every row of C (a linear
// layer's y = x W^T + b): C is written once, by the thread that computes each block, where a
// separate fill of the bias rows first would write all of C one more time. C need not hold
// anything beforehand (as with beta == 0).
void sgemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc);
void dgemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                int64_t lda, const double* B, int64_t ldb, const double* bias, double* C, int64_t ldc);

// Strided batch: product i reads A + i*stride_a, B + i*stride_b and writes C + i*stride_c
// (a stride of 0 broadcasts that operand; C's matrices must not overlap). Small products run
// in parallel across the batch, large ones one after another, each in parallel inside.
void sgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c);
void dgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                   const double* A, int64_t lda, int64_t stride_a, const double* B, int64_t ldb, int64_t stride_b,
                   double beta, double* C, int64_t ldc, int64_t stride_c);

// Which micro-kernel runtime dispatch chose: "avx512", "avx2" or "portable".
const char* gemm_isa();

// For tests and benchmarks: switch the micro-kernel to `isa` ("avx512", "avx2" or "portable").
// Returns false, changing nothing, when the host cannot run it or the name is unknown.
// Not to be called while another thread runs a GEMM.
bool set_gemm_isa(const char* isa);

}  // namespace ember::kernels::cpu
