// cuBLAS behind kernels::cuda::gemm. cuBLAS is column-major; a row-major C = A B is the
// column-major C^T = B^T A^T, so the operands are passed swapped and no data moves. One handle
// per device, bound to ember's stream, with a workspace of its own so that cuBLAS allocates
// nothing while a CUDA graph is being captured. cublasSetStream resets the workspace to
// cuBLAS's default pool, so the workspace is set again after every change of stream.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <vector>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/blas.h"
#include "ember/kernels/cuda/check.h"

namespace ember::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

struct Handle {
  cublasHandle_t h = nullptr;
  void* workspace = nullptr;
  cudaStream_t stream = nullptr;
  bool bound = false;
};

// The device's handle, bound to `stream` with ember's workspace.
cublasHandle_t handle_for(int device, cudaStream_t stream) {
  static std::mutex m;
  static auto* handles = new std::vector<Handle>();  // never destroyed (see allocator.cpp)
  std::lock_guard<std::mutex> lock(m);
  if (static_cast<int>(handles->size()) <= device) handles->resize(device + 1);
  Handle& hd = (*handles)[device];
  if (!hd.h) {
    check_cublas(cublasCreate(&hd.h), "cublasCreate", "gemm");
    hd.workspace = malloc_workspace(kWorkspaceBytes, "cuBLAS workspace");  // may be inside a capture
  }
  if (!hd.bound || hd.stream != stream) {
    check_cublas(cublasSetStream(hd.h, stream), "cublasSetStream", "gemm");
    check_cublas(cublasSetWorkspace(hd.h, hd.workspace, kWorkspaceBytes), "cublasSetWorkspace", "gemm");
    hd.stream = stream;
    hd.bound = true;
  }
  return hd.h;
}

int as_int(int64_t v, const char* what) {
  EMBER_CHECK(v <= INT_MAX, "matmul: ", what, " = ", v, " exceeds cuBLAS's 32-bit sizes; split the product");
  return static_cast<int>(v);
}

}  // namespace

void gemm(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, double beta, void* C, int64_t ldc,
          int64_t sc, int64_t batch, int device, void* stream) {
  if (M == 0 || N == 0 || batch == 0) return;
  cublasHandle_t h = handle_for(device, static_cast<cudaStream_t>(stream));
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  // cuBLAS wants ld >= max(1, the stored row length) even where a dim of 1 makes ld unused.
  const int m = as_int(N, "N"), n = as_int(M, "M"), k = as_int(K, "K");
  const int la = as_int(std::max({lda, trans_a ? M : K, int64_t{1}}), "lda"),
            lb = as_int(std::max({ldb, trans_b ? K : N, int64_t{1}}), "ldb"),
            lc = as_int(std::max<int64_t>(ldc, 1), "ldc"), nb = as_int(batch, "batch");
  if (t == ElemType::f32) {
    const float alpha = 1.0f, b = static_cast<float>(beta);
    const cublasComputeType_t ct = mode == MathMode::exact  ? CUBLAS_COMPUTE_32F
                                   : mode == MathMode::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                            : CUBLAS_COMPUTE_32F_FAST_16BF;
    check_cublas(cublasGemmStridedBatchedEx(h, op_b, op_a, m, n, k, &alpha, B, CUDA_R_32F, lb, sb, A, CUDA_R_32F, la,
                                            sa, &b, C, CUDA_R_32F, lc, sc, nb, ct, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx", "matmul f32");
  } else if (t == ElemType::f64) {
    const double alpha = 1.0;
    check_cublas(cublasDgemmStridedBatched(h, op_b, op_a, m, n, k, &alpha, static_cast<const double*>(B), lb, sb,
                                           static_cast<const double*>(A), la, sa, &beta, static_cast<double*>(C), lc, sc,
                                           nb),
                 "cublasDgemmStridedBatched", "matmul f64");
  } else {
    EMBER_FAIL("matmul: the CUDA path takes f32 or f64 operands");
  }
}

}  // namespace ember::kernels::cuda
