// Self-test of the emulated runtime, cuBLAS and cuBLASLt (no kernel side needed): copies and
// their checks, graph capture and the calls that break it, GEMMs against a naive loop, and the
// TF32/BF16 input rounding. Returns nonzero on any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "emu/hooks.h"

#include "selftest.h"


static void some_kernel(int) {}

// Column-major reference with the emulator's summation order; `r` rounds the inputs.
template <typename T, typename R>
static void naive(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
                  T* C, int ldc, R r) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      T acc = 0;
      for (int l = 0; l < k; ++l)
        acc = std::fma(r(ta ? A[l + i * lda] : A[i + l * lda]), r(tb ? B[j + l * ldb] : B[l + j * ldb]), acc);
      T v = alpha * acc;
      if (beta != 0) v += beta * C[i + j * ldc];
      C[i + j * ldc] = v;
    }
}

static float bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
static T* dev_copy(const std::vector<T>& h) {
  void* p = nullptr;
  cudaMalloc(&p, h.size() * sizeof(T));
  cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(p);
}
template <typename T>
static std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

static void test_memory() {
  int n = 0;
  CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n >= 1);
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess && sms == 132);
  CHECK(cudaSetDevice(n) == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaSuccess);

  float* d = nullptr;
  CHECK(cudaMalloc(&d, 64 * sizeof(float)) == cudaSuccess);
  CHECK(reinterpret_cast<uintptr_t>(d) % 256 == 0);
  std::vector<float> h(64, 1.0f);
  CHECK(cudaMemcpy(h.data(), d, sizeof(float) * 64, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(std::isnan(h[0]) && std::isnan(h[63]));  // poisoned
  for (int i = 0; i < 64; ++i) h[i] = float(i);
  CHECK(cudaMemcpy(d, h.data(), sizeof(float) * 64, cudaMemcpyHostToDevice) == cudaSuccess);
  std::vector<float> back(64);
  CHECK(cudaMemcpy(back.data(), d, sizeof(float) * 64, cudaMemcpyDefault) == cudaSuccess);
  CHECK(back == h);
  // Wrong directions and overruns.
  CHECK(cudaMemcpy(h.data(), d, 16, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d, h.data(), 16, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d, d + 8, 16, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d + 32, h.data(), sizeof(float) * 33, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d + 32, h.data(), sizeof(float) * 32, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemsetAsync(d, 0, sizeof(float) * 65) == cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(h.data(), 0, 4) == cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(d, 0, sizeof(float) * 64) == cudaSuccess);
  CHECK(host_copy(d, 64) == std::vector<float>(64, 0.0f));
  CHECK(cudaFree(h.data()) == cudaErrorInvalidValue);
  CHECK(cudaPeekAtLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaFree(d) == cudaSuccess);
  CHECK(cudaFree(d) == cudaErrorInvalidValue);
  void* pinned = nullptr;
  CHECK(cudaHostAlloc(&pinned, 128, cudaHostAllocDefault) == cudaSuccess);
  CHECK(cudaFreeHost(pinned) == cudaSuccess);
  CHECK(cudaFreeHost(pinned) == cudaErrorInvalidValue);

  // Kernel attributes through the typed overload.
  CHECK(emu::max_dynamic_shared_bytes(reinterpret_cast<const void*>(&some_kernel)) == 49152);
  CHECK(cudaFuncSetAttribute(some_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100000) == cudaSuccess);
  CHECK(emu::max_dynamic_shared_bytes(reinterpret_cast<const void*>(&some_kernel)) == 100000);
  CHECK(cudaFuncSetAttribute(some_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232449) ==
        cudaErrorInvalidValue);

  // A recorded kernel fault shows at the next synchronisation, once.
  emu::record_error(cudaErrorIllegalAddress, "self-test: simulated fault");
  CHECK(cudaDeviceSynchronize() == cudaErrorIllegalAddress);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  cudaGetLastError();
}

static void test_capture() {
  cudaStream_t s = nullptr;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  float *a = nullptr, *b = nullptr;
  cudaMalloc(&a, 16 * sizeof(float));
  cudaMalloc(&b, 16 * sizeof(float));
  std::vector<float> h(16);
  for (int i = 0; i < 16; ++i) h[i] = float(i);
  cudaMemcpy(a, h.data(), sizeof(float) * 16, cudaMemcpyHostToDevice);

  // Captured work is recorded, not run; each replay runs it.
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  cudaStreamCaptureStatus st;
  CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusActive);
  int counter = 0;
  CHECK(emu::submit(s, [&] { ++counter; }) == cudaSuccess);
  CHECK(cudaMemcpyAsync(b, a, sizeof(float) * 16, cudaMemcpyDeviceToDevice, s) == cudaSuccess);
  // Relaxed mode allows a cudaMalloc during the capture (ember's allocator does this).
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess && mode == cudaStreamCaptureModeGlobal);
  void* extra = nullptr;
  CHECK(cudaMalloc(&extra, 1024) == cudaSuccess);
  CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess && mode == cudaStreamCaptureModeRelaxed);
  cudaGraph_t g = nullptr;
  CHECK(counter == 0);
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
  CHECK(std::isnan(host_copy(b, 16)[3]));  // not copied yet (a host read is no capture's business)
  CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusNone);
  cudaGraphExec_t exec = nullptr;
  CHECK(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(g) == cudaSuccess);
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess && cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(counter == 2 && host_copy(b, 16) == h);
  // A graph launched into a capturing stream is recorded into the outer graph.
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess && counter == 2);
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess);
  cudaGraphExec_t outer = nullptr;
  CHECK(cudaGraphInstantiate(&outer, g, 0) == cudaSuccess);
  CHECK(cudaGraphLaunch(outer, s) == cudaSuccess && counter == 3);
  cudaGraphExecDestroy(outer);
  cudaGraphDestroy(g);
  cudaGraphExecDestroy(exec);

  // Each unsafe call fails with StreamCaptureUnsupported and invalidates the capture.
  auto broken = [&](auto&& unsafe) {
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(unsafe() == cudaErrorStreamCaptureUnsupported);
    CHECK(emu::submit(s, [] {}) == cudaErrorStreamCaptureInvalidated);
    cudaGraph_t bad = reinterpret_cast<cudaGraph_t>(1);
    CHECK(cudaStreamEndCapture(s, &bad) == cudaErrorStreamCaptureInvalidated && bad == nullptr);
    cudaGetLastError();
  };
  void* p = nullptr;
  broken([&] { return cudaMalloc(&p, 256); });
  broken([&] { return cudaFree(extra); });
  broken([&] { return cudaHostAlloc(&p, 256, 0); });
  broken([&] { return cudaStreamSynchronize(s); });
  broken([&] { return cudaDeviceSynchronize(); });
  broken([&] { return cudaMemcpyAsync(a, h.data(), 64, cudaMemcpyHostToDevice, s); });
  broken([&] { return cudaMemcpyAsync(h.data(), a, 64, cudaMemcpyDeviceToHost, s); });
  // Pinned host memory can be captured.
  void* pin = nullptr;
  cudaHostAlloc(&pin, 64, 0);
  std::memset(pin, 0, 64);
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaMemcpyAsync(pin, a, 64, cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
  cudaGraphInstantiate(&exec, g, 0);
  CHECK(static_cast<float*>(pin)[5] == 0.0f);
  cudaGraphLaunch(exec, s);
  CHECK(static_cast<float*>(pin)[5] == 5.0f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  cudaFreeHost(pin);
  CHECK(cudaFree(extra) == cudaSuccess);
  cudaFree(a);
  cudaFree(b);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  cudaGetLastError();
}

static void test_rounding() {
  // Via 1x1x1 GEMMs: A = x, B = 1, so C = the rounded x.
  cublasHandle_t h;
  cublasCreate(&h);
  auto through = [&](float x, cublasComputeType_t ct) {
    float* d = dev_copy(std::vector<float>{x, 1.0f, 0.0f});
    const float one = 1.0f, zero = 0.0f;
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, CUDA_R_32F, 1, d + 1, CUDA_R_32F, 1, &zero,
                       d + 2, CUDA_R_32F, 1, ct, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    const float r = host_copy(d + 2, 1)[0];
    cudaFree(d);
    return r;
  };
  const float tie_tf32 = bits(0x3F801000u);  // 1 + 2^-11: halfway between two TF32 values
  CHECK(through(tie_tf32, CUBLAS_COMPUTE_32F) == tie_tf32);
  CHECK(through(tie_tf32, CUBLAS_COMPUTE_32F_FAST_TF32) == bits(0x3F802000u));   // ties away from zero
  CHECK(through(-tie_tf32, CUBLAS_COMPUTE_32F_FAST_TF32) == -bits(0x3F802000u));
  CHECK(through(bits(0x3F800FFFu), CUBLAS_COMPUTE_32F_FAST_TF32) == 1.0f);
  CHECK(through(bits(0x3F808000u), CUBLAS_COMPUTE_32F_FAST_16BF) == 1.0f);        // tie to even (down)
  CHECK(through(bits(0x3F818000u), CUBLAS_COMPUTE_32F_FAST_16BF) == bits(0x3F820000u));  // tie to even (up)
  CHECK(through(bits(0x3F808001u), CUBLAS_COMPUTE_32F_FAST_16BF) == bits(0x3F810000u));
  CHECK(through(bits(0x3F81FFFFu), CUBLAS_COMPUTE_32F_FAST_TF32) == bits(0x3F820000u));
  cublasDestroy(h);
}

template <typename R>
static void compare_sgemm(cublasHandle_t h, cublasComputeType_t ct, R r) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1, 1);
  const int m = 7, n = 5, k = 9, batch = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
      const long long sa = lda * (ta ? m : k) + 4, sb = ldb * (tb ? k : n), sc = ldc * n + 1;
      std::vector<float> A(sa * batch), B(sb * batch), C(sc * batch);
      for (auto* v : {&A, &B, &C})
        for (auto& x : *v) x = u(gen);
      float *dA = dev_copy(A), *dB = dev_copy(B), *dC = dev_copy(C);
      const float alpha = 1.5f, beta = -0.5f;
      CHECK(cublasGemmStridedBatchedEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                       &alpha, dA, CUDA_R_32F, lda, sa, dB, CUDA_R_32F, ldb, sb, &beta, dC, CUDA_R_32F,
                                       ldc, sc, batch, ct, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      std::vector<float> want = C;
      for (int b = 0; b < batch; ++b)
        naive<float>(ta, tb, m, n, k, alpha, &A[b * sa], lda, &B[b * sb], ldb, beta, &want[b * sc], ldc, r);
      CHECK(host_copy(dC, C.size()) == want);
      cudaFree(dA);
      cudaFree(dB);
      cudaFree(dC);
    }
}

static float tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xFFFFE000u;
  return bits(u);
}
static float bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  return bits(u);
}

static void test_gemm() {
  cublasHandle_t h;
  CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  cudaStream_t s;
  cudaStreamCreate(&s);
  CHECK(cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS);
  compare_sgemm(h, CUBLAS_COMPUTE_32F, [](float x) { return x; });
  compare_sgemm(h, CUBLAS_COMPUTE_32F_FAST_TF32, tf32);
  compare_sgemm(h, CUBLAS_COMPUTE_32F_FAST_16BF, bf16);

  // Sgemm / Dgemm(StridedBatched); beta = 0 must not read the NaN-poisoned C.
  std::vector<double> A(12), B(20);
  for (int i = 0; i < 12; ++i) A[i] = 0.25 * i - 1;
  for (int i = 0; i < 20; ++i) B[i] = 1.0 / (i + 1);
  double *dA = dev_copy(A), *dB = dev_copy(B), *dC = nullptr;
  cudaMalloc(&dC, 15 * sizeof(double));
  const double one = 1, zero = 0;
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, dA, 3, dB, 4, &zero, dC, 3) == CUBLAS_STATUS_SUCCESS);
  std::vector<double> want(15, 0.0);
  naive<double>(false, false, 3, 5, 4, 1.0, A.data(), 3, B.data(), 4, 0.0, want.data(), 3, [](double x) { return x; });
  CHECK(host_copy(dC, 15) == want);
  CHECK(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, dA, 3, 0, dB, 4, 0, &one, dC, 3, 0, 1) ==
        CUBLAS_STATUS_SUCCESS);
  for (auto& w : want) w *= 2;
  CHECK(host_copy(dC, 15) == want);
  // Argument checks.
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, dA, 2, dB, 4, &zero, dC, 3) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 3, 5, 4, &one, dA, 3, dB, 4, &zero, dC, 3) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 5, 4, &one, dA, 3, dB, 4, &zero, dC, 3) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, dA, 3, dB, 4, &zero, dC, 2) ==
        CUBLAS_STATUS_INVALID_VALUE);
  float fs = 1;
  CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &fs, dA, CUDA_R_64F, 1, dB, CUDA_R_64F, 1, &fs, dC,
                     CUDA_R_64F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
  // A host operand is an illegal address for the "GPU".
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, A.data(), 3, dB, 4, &zero, dC, 3) ==
        CUBLAS_STATUS_SUCCESS);
  CHECK(cudaStreamSynchronize(s) == cudaErrorIllegalAddress);
  cudaGetLastError();

  // A captured GEMM reads its operands at replay; the scalars were copied at capture.
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  double alpha = 1;
  CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &alpha, dA, 3, dB, 4, &zero, dC, 3) == CUBLAS_STATUS_SUCCESS);
  alpha = 100;
  cudaGraph_t g;
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess);
  cudaGraphExec_t exec;
  cudaGraphInstantiate(&exec, g, 0);
  cudaMemset(dC, 0xFF, 15 * sizeof(double));
  cudaGraphLaunch(exec, s);
  for (auto& w : want) w /= 2;
  CHECK(host_copy(dC, 15) == want);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cublasDestroy(h);
  cudaStreamDestroy(s);
}

// cuBLASLt exactly as kernels/cuda/blas_lt.cpp drives it: D (m x n) = op(A) op(B) + bias, and the
// bias-gradient epilogues.
static void test_lt() {
  const int m = 6, n = 4, k = 5;
  std::vector<float> A(k * m), B(k * n), bias(m);  // A stored k x m (OP_T), B stored k x n (OP_N)
  for (size_t i = 0; i < A.size(); ++i) A[i] = 0.1f * i - 1.0f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = 0.5f - 0.05f * i;
  for (int i = 0; i < m; ++i) bias[i] = float(i);
  float *dA = dev_copy(A), *dB = dev_copy(B), *dbias = dev_copy(bias), *dD = nullptr;
  cudaMalloc(&dD, m * n * sizeof(float));  // NaN: beta = 0 must not read it
  cublasLtHandle_t lt;
  CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t op;
  CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  const cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
  const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  const void* bp = dbias;
  CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof(nn)) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)) ==
        CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, 4) == CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatrixLayout_t la, lb, lc;
  CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, k, m, k) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref;
  CHECK(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
  const uint64_t ws = 1 << 20;
  const uint32_t al = 16;
  CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)) ==
        CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof(al)) ==
        CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS);
  CHECK(found == 1 && res.state == CUBLAS_STATUS_SUCCESS && res.workspaceSize == 0);
  // Mismatched shapes: the heuristic refuses.
  CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, lb, lb, lc, lc, pref, 1, &res, &found) != CUBLAS_STATUS_SUCCESS);
  const float one = 1, zero = 0;
  CHECK(cublasLtMatmul(lt, op, &one, dA, la, dB, lb, &zero, dD, lc, dD, lc, &res.algo, nullptr, 0, nullptr) ==
        CUBLAS_STATUS_SUCCESS);
  std::vector<float> want(m * n);
  naive<float>(true, false, m, n, k, 1.0f, A.data(), k, B.data(), k, 0.0f, want.data(), m, [](float x) { return x; });
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) want[i + j * m] += bias[i];
  CHECK(host_copy(dD, m * n) == want);

  // The bias-gradient epilogues write op(B) summed over k (BGRADB, one value per column of D) or
  // op(A) (BGRADA, per row) into the bias pointer, beside D = op(A) op(B) + beta C; beta = 1 here.
  for (const cublasLtEpilogue_t grad_epi : {CUBLASLT_EPILOGUE_BGRADB, CUBLASLT_EPILOGUE_BGRADA}) {
    const bool of_b = grad_epi == CUBLASLT_EPILOGUE_BGRADB;
    float* dgrad = nullptr;
    cudaMalloc(&dgrad, (of_b ? n : m) * sizeof(float));
    const void* gp = dgrad;
    CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &grad_epi, sizeof(grad_epi)) ==
          CUBLAS_STATUS_SUCCESS);
    CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &gp, sizeof(gp)) ==
          CUBLAS_STATUS_SUCCESS);
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS);
    std::vector<float> c0(m * n);
    for (size_t i = 0; i < c0.size(); ++i) c0[i] = 0.25f * float(i % 7) - 0.5f;
    float* dC = dev_copy(c0);
    CHECK(cublasLtMatmul(lt, op, &one, dA, la, dB, lb, &one, dC, lc, dC, lc, &res.algo, nullptr, 0, nullptr) ==
          CUBLAS_STATUS_SUCCESS);
    std::vector<float> want_c = c0, want_grad(of_b ? n : m, 0.0f);
    naive<float>(true, false, m, n, k, 1.0f, A.data(), k, B.data(), k, 1.0f, want_c.data(), m,
                 [](float x) { return x; });
    for (int r = 0; r < (of_b ? n : m); ++r)
      for (int l = 0; l < k; ++l) want_grad[r] += of_b ? B[l + r * k] : A[l + r * k];  // both stored k-major
    CHECK(host_copy(dC, m * n) == want_c);
    CHECK(host_copy(dgrad, of_b ? n : m) == want_grad);
    cudaFree(dC);
    cudaFree(dgrad);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(lt);
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dbias);
  cudaFree(dD);
}

int main() {
  test_memory();
  test_capture();
  test_rounding();
  test_gemm();
  test_lt();
  std::printf("%s (%d failure%s)\n", failures ? "FAILED" : "ok", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
