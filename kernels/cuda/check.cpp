#include "ember/kernels/cuda/check.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ember/engine/error.h"

namespace ember::kernels::cuda {

void raise_cuda_error(int code, const char* call, const char* where) {
  const auto e = static_cast<cudaError_t>(code);
  std::string hint;
  if (e == cudaErrorMemoryAllocation)
    hint = " (the GPU is out of memory: use smaller batches, or call ember::cuda::empty_cache() "
           "if another program needs the memory)";
  else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
    hint = " (no usable GPU or driver: run on the CPU with --device cpu)";
  else if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure)
    hint = " (a kernel faulted; the CUDA context is now unusable: rerun with CUDA_LAUNCH_BLOCKING=1 "
           "to find the kernel, and please report it)";
  EMBER_FAIL("CUDA error in ", call, " (", where, "): ", cudaGetErrorName(e), ": ", cudaGetErrorString(e), hint);
}

void* malloc_workspace(size_t bytes, const char* what) {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  cudaThreadExchangeStreamCaptureMode(&mode);
  check_cuda(static_cast<int>(e), "cudaMalloc", what);
  return p;
}

void raise_cublas_error(int status, const char* call, const char* where) {
  EMBER_FAIL("cuBLAS error in ", call, " (", where, "): ", cublasGetStatusName(static_cast<cublasStatus_t>(status)),
             ": ", cublasGetStatusString(static_cast<cublasStatus_t>(status)));
}

}  // namespace ember::kernels::cuda
