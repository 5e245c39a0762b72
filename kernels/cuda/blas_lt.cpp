// cuBLASLt behind kernels::cuda::gemm_bias, gemm_bias_grad and gemm_add: the linear layer's
// product with its bias added in the GEMM's epilogue, its backward's weight gradient with the
// bias gradient reduced in the same call, and a product plus a third matrix written to a fourth
// (cuBLASLt, unlike cuBLAS, reads C from one matrix and writes D to another). Row-major C = A B
// is column-major C^T = B^T A^T (as in blas.cpp), so the bias, one value per column of C, is one
// value per row of the column-major result: exactly CUBLASLT_EPILOGUE_BIAS's broadcast. And A,
// passed second, is cuBLASLt's B: CUBLASLT_EPILOGUE_BGRADB sums it over k, one value per column
// of the column-major result, that is per row of C. For dW = dY^T X that is the column sums of
// dY, the bias gradient; the layout (X as stored, dY transposed) is the weight-gradient GEMM
// llm.c and Transformer Engine pair with BGRADB.
//
// A cuBLASLt call needs descriptors and an algorithm from the heuristic, which together cost
// tens of microseconds of host time: more than the small GEMMs of an MLP take on the GPU. So
// each distinct problem (shape, layout, precision, pointer alignments) is planned once and the
// plan is reused; a step of a training loop finds all its plans in the cache.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/blas.h"
#include "ember/kernels/cuda/check.h"

namespace ember::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

struct Device {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// Largest power of two (at most 256) dividing the address: the alignment cuBLASLt may assume.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t r = 256;
  while (r > 1 && a % r != 0) r >>= 1;
  return r;
}

using Key = std::tuple<int, int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       uint32_t, uint32_t, uint32_t, uint32_t, uint32_t>;

struct Plan {
  bool usable = false;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct State {
  std::mutex m;
  std::vector<Device> devices;
  std::map<Key, Plan> plans;
};

State& state() {
  static auto* s = new State();  // never destroyed: handles outlive static destructors (see allocator.cpp)
  return *s;
}

Device& device_for(State& s, int device) {
  if (static_cast<int>(s.devices.size()) <= device) s.devices.resize(device + 1);
  Device& d = s.devices[device];
  if (!d.handle) {
    d.workspace = malloc_workspace(kWorkspaceBytes, "cuBLASLt workspace");  // may be inside a capture
    check_cublas(cublasLtCreate(&d.handle), "cublasLtCreate", "linear");
  }
  return d;
}

template <typename V>
void set(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr, const V& v) {
  check_cublas(cublasLtMatmulDescSetAttribute(op, attr, &v, sizeof(v)), "cublasLtMatmulDescSetAttribute", "linear");
}

// Descriptors and the heuristic's first algorithm; usable = false when there is none.
Plan make_plan(cublasLtHandle_t h, cublasLtEpilogue_t epilogue, cudaDataType_t dt, cublasComputeType_t ct,
               cublasOperation_t op_a, cublasOperation_t op_b, uint64_t m, uint64_t n, uint64_t k, int64_t la,
               int64_t lb, int64_t lc, int64_t ld, const uint32_t align[4], const void* bias) {
  Plan p;
  check_cublas(cublasLtMatmulDescCreate(&p.op, ct, dt), "cublasLtMatmulDescCreate", "linear");
  set(p.op, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set(p.op, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  set(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);  // the heuristic reads its alignment
  // Stored shapes before the op: (m x k) or (k x m) for the first operand, (k x n) or (n x k).
  const bool ta = op_a == CUBLAS_OP_T, tb = op_b == CUBLAS_OP_T;
  check_cublas(cublasLtMatrixLayoutCreate(&p.a, dt, ta ? k : m, ta ? m : k, la), "cublasLtMatrixLayoutCreate", "linear");
  check_cublas(cublasLtMatrixLayoutCreate(&p.b, dt, tb ? n : k, tb ? k : n, lb), "cublasLtMatrixLayoutCreate", "linear");
  check_cublas(cublasLtMatrixLayoutCreate(&p.c, dt, m, n, lc), "cublasLtMatrixLayoutCreate", "linear");
  check_cublas(cublasLtMatrixLayoutCreate(&p.d, dt, m, n, ld), "cublasLtMatrixLayoutCreate", "linear");
  cublasLtMatmulPreference_t pref = nullptr;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", "linear");
  const uint64_t ws = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i) cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align[i], sizeof(align[i]));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, p.op, p.a, p.b, p.c, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p.usable = true;
    p.algo = result.algo;
  }
  return p;
}

// One row-major product D = A B (+ beta C) through a cached plan with the given epilogue, which
// reads or writes `bias`; C and D may be one matrix. False, having done nothing, where cuBLASLt
// has no algorithm for it.
bool lt_matmul(cublasLtEpilogue_t epilogue, const char* what, ElemType t, MathMode mode, bool trans_a, bool trans_b,
               int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B, int64_t ldb, double beta,
               const void* bias, const void* C, int64_t ldc, void* D, int64_t ldd, int device, void* stream) {
  if (t != ElemType::f32 && t != ElemType::f64) return false;
  if (M == 0 || N == 0 || K == 0) return false;  // the fallback handles the degenerate products
  const cudaDataType_t dt = t == ElemType::f32 ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t ct = t == ElemType::f64          ? CUBLAS_COMPUTE_64F
                                 : mode == MathMode::exact ? CUBLAS_COMPUTE_32F
                                 : mode == MathMode::tf32  ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                           : CUBLAS_COMPUTE_32F_FAST_16BF;
  // Swapped operands, as in blas.cpp: column-major (N x M) = op(B) op(A).
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t lb = std::max({ldb, trans_b ? K : N, int64_t{1}}), la = std::max({lda, trans_a ? M : K, int64_t{1}}),
                lc = std::max<int64_t>(ldc, 1), ld = std::max<int64_t>(ldd, 1);
  const uint32_t align[4] = {alignment_of(B), alignment_of(A), alignment_of(C), alignment_of(D)};
  const uint32_t bias_align = alignment_of(bias);
  const Key key{static_cast<int>(epilogue), static_cast<int>(t), static_cast<int>(mode), device, trans_a, trans_b, M,
                N, K, la, lb, lc, ld, align[0], align[1], align[2], align[3], bias_align};

  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  Device& d = device_for(s, device);
  auto it = s.plans.find(key);
  if (it == s.plans.end())
    it = s.plans
             .emplace(key, make_plan(d.handle, epilogue, dt, ct, op_first, op_second, static_cast<uint64_t>(N),
                                     static_cast<uint64_t>(M), static_cast<uint64_t>(K), lb, la, lc, ld, align, bias))
             .first;
  Plan& p = it->second;
  if (!p.usable) return false;
  set(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  const float alpha32 = 1.0f, beta32 = static_cast<float>(beta);
  const double alpha64 = 1.0;
  const void* alpha_p = t == ElemType::f32 ? static_cast<const void*>(&alpha32) : &alpha64;
  const void* beta_p = t == ElemType::f32 ? static_cast<const void*>(&beta32) : &beta;
  const cublasStatus_t st = cublasLtMatmul(d.handle, p.op, alpha_p, B, p.a, A, p.b, beta_p, C, p.c, D, p.d, &p.algo,
                                           d.workspace, kWorkspaceBytes, static_cast<cudaStream_t>(stream));
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {  // the heuristic offered what the call refuses: never again
    p.usable = false;
    return false;
  }
  check_cublas(st, "cublasLtMatmul", what);
  return true;
}

}  // namespace

bool gemm_bias(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
               int64_t lda, const void* B, int64_t ldb, const void* bias, void* C, int64_t ldc, int device,
               void* stream) {
  return lt_matmul(CUBLASLT_EPILOGUE_BIAS, "linear (bias epilogue)", t, mode, trans_a, trans_b, M, N, K, A, lda, B,
                   ldb, 0.0, bias, C, ldc, C, ldc, device, stream);
}

bool gemm_bias_grad(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                    const void* A, int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc,
                    void* bias_grad, int device, void* stream) {
  return lt_matmul(CUBLASLT_EPILOGUE_BGRADB, "linear backward (bias-gradient epilogue)", t, mode, trans_a, trans_b, M,
                   N, K, A, lda, B, ldb, beta, bias_grad, C, ldc, C, ldc, device, stream);
}

bool gemm_add(ElemType t, MathMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
              int64_t lda, const void* B, int64_t ldb, const void* C, int64_t ldc, void* D, int64_t ldd, int device,
              void* stream) {
  return lt_matmul(CUBLASLT_EPILOGUE_DEFAULT, "addmm", t, mode, trans_a, trans_b, M, N, K, A, lda, B, ldb, 1.0,
                   nullptr, C, ldc, D, ldd, device, stream);
}

}  // namespace ember::kernels::cuda
