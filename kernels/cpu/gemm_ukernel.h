// Internal to the CPU GEMM (gemm.cpp and the per-ISA micro-kernel files); not a public API.
//
// A micro-kernel computes one MR x NR tile of C from a k-long strip of A and of B, keeping the
// whole tile in vector registers:
//   C[i, j] = alpha * sum_p A(i, p) * B(p, j) + beta * C[i, j]   for i < m, j < n
// - A(i, p) is at a[i * rs_a + p * cs_a]. Packed A is (rs_a, cs_a) = (1, MR); A read in place
//   is (lda, 1) or, transposed, (1, lda). Rows i >= m are never read (the kernel reads row m-1
//   again instead and drops the result), so in-place A needs no padding.
// - B(p, j) is at b[p * rs_b + j] and all NR columns must be readable (packed strips are padded
//   with zeros; in-place B is used only for full strips).
// - C[i, j] is at c[i * ldc + j]; only i < m, j < n is touched; beta == 0 never reads C.
#pragma once
#include <cstdint>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define EMBER_GEMM_X86 1
#else
#define EMBER_GEMM_X86 0
#endif

namespace ember::kernels::cpu::gemm_detail {

template <typename T>
using UKernel = void (*)(int64_t k, const T* a, int64_t rs_a, int64_t cs_a, const T* b, int64_t rs_b, T* c,
                         int64_t ldc, int m, int n, T alpha, T beta);

// Tile shapes: MR rows x NR columns (NR = a multiple of the vector width).
constexpr int kAvx2SMR = 6, kAvx2SNR = 16;    // 12 ymm accumulators
constexpr int kAvx2DMR = 6, kAvx2DNR = 8;     // 12 ymm accumulators
constexpr int kAvx512SMR = 12, kAvx512SNR = 32;  // 24 zmm accumulators
constexpr int kAvx512DMR = 12, kAvx512DNR = 16;  // 24 zmm accumulators

#if EMBER_GEMM_X86
// gemm_avx2.cpp (functions compiled for avx2+fma)
void sgemm_ukernel_avx2(int64_t k, const float* a, int64_t rs_a, int64_t cs_a, const float* b, int64_t rs_b,
                        float* c, int64_t ldc, int m, int n, float alpha, float beta);
void dgemm_ukernel_avx2(int64_t k, const double* a, int64_t rs_a, int64_t cs_a, const double* b, int64_t rs_b,
                        double* c, int64_t ldc, int m, int n, double alpha, double beta);
// Transposing packs for the f32 tiles, dst[p * R + i] = src[i * ld + p], p < k, i < R: R = 6 and
// 16 for the AVX2 6 x 16 kernel, 12 and 32 for the AVX-512 12 x 32 one (AVX-512F hosts have AVX2).
void pack_rows6_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k);
void pack_rows12_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k);
void pack_rows16_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k);
void pack_rows32_f32_avx2(float* dst, const float* src, int64_t ld, int64_t k);
// Thin (GEMV-like) f32 products: y[r * incy] = X[r, :] . w (rows contiguous in p), and
// y[v * ldy + j] = sum_p X[p, j] * w[v * ldw + p] for v < nv <= 2 (rows contiguous in j).
void sgemv_dots_avx2(const float* X, int64_t ldx, int64_t rows, int64_t K, const float* w, float* y, int64_t incy);
void sgemv_axpys_avx2(const float* X, int64_t ldx, int64_t len, int64_t K, const float* w, int64_t ldw, int nv,
                      float* y, int64_t ldy);
// gemm_avx512.cpp (functions compiled for avx512f)
void sgemm_ukernel_avx512(int64_t k, const float* a, int64_t rs_a, int64_t cs_a, const float* b, int64_t rs_b,
                          float* c, int64_t ldc, int m, int n, float alpha, float beta);
void dgemm_ukernel_avx512(int64_t k, const double* a, int64_t rs_a, int64_t cs_a, const double* b, int64_t rs_b,
                          double* c, int64_t ldc, int m, int n, double alpha, double beta);
#endif

}  // namespace ember::kernels::cpu::gemm_detail
