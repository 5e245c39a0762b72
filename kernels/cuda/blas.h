// Matrix products on the GPU through cuBLAS (DESIGN: cuBLAS for plain GEMM). Row-major
// operands as the CPU GEMM takes them (kernels/cpu/gemm.h): element (i, k) of A is
// A[i * lda + k], or A[k * lda + i] when trans_a; the same for B; C is row-major with ldc.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// How f32 products are computed: exact f32 FMA, TF32 tensor cores (10-bit mantissa inputs),
// or BF16 tensor cores (8-bit mantissa inputs); accumulation is f32 in all three. f64 ignores it.
enum class MathMode : uint8_t { exact, tf32, bf16 };

// C[b] = A[b] B[b] (+ beta C[b]) for b < batch, with element strides sa, sb, sc between the
// matrices of a batch. t: f32 or f64.
void gemm(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, double beta, void* C, int64_t ldc,
          int64_t sc, int64_t batch, int device, void* stream);

// C = A B + bias for one row-major product (bias [N]: one value per column of C [M, N]) in a
// single cuBLASLt call whose epilogue adds the bias, instead of a bias copy and a GEMM. Same
// operand convention as gemm. Returns false, having done nothing, when cuBLASLt offers no
// algorithm for the case (the caller then copies the bias and calls gemm with beta = 1).
bool gemm_bias(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
               int64_t lda, const void* B, int64_t ldb, const void* bias, void* C, int64_t ldc, int device,
               void* stream);

// C = A B (+ beta C), and bias_grad[i] = the sum over k of A's element (i, k), in one cuBLASLt
// call whose epilogue reduces A as the GEMM reads it (CUBLASLT_EPILOGUE_BGRADB). A linear
// layer's backward passes A = dY^T, B = X: its weight gradient and, from the same read of dY,
// its bias gradient, instead of a GEMM and a column-sum kernel. bias_grad [M] is written, never
// added to. Same operand convention as gemm; false, having done nothing, when cuBLASLt offers
// no algorithm for the case.
bool gemm_bias_grad(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                    const void* A, int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc,
                    void* bias_grad, int device, void* stream);

// D = A B + C in one cuBLASLt call, C [M, N] read with row stride ldc and D written with ldd
// (two matrices: C stays as it was). A recorded gradient that is a product plus a gradient
// already waiting (addmm under create_graph) is one launch instead of a GEMM and an add. Same
// operand convention as gemm; false, having done nothing, when cuBLASLt offers no algorithm.
bool gemm_add(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
              int64_t lda, const void* B, int64_t ldb, const void* C, int64_t ldc, void* D, int64_t ldd, int device,
              void* stream);

}  // namespace ember::kernels::cuda
