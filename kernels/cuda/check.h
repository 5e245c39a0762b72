// Turning a CUDA or cuBLAS status into an ember::Error that names the call and the kernel (or
// op) it was made for, so "an illegal memory access" arrives with "in softplus_backward".
// Plain C++: included by the .cu kernels and by the host side alike.
#pragma once
#include <cstddef>

namespace ember::kernels::cuda {

[[noreturn]] void raise_cuda_error(int code, const char* call, const char* where);
[[noreturn]] void raise_cublas_error(int status, const char* call, const char* where);

// A library's long-lived device buffer (cuBLAS's workspace): cudaMalloc in relaxed capture mode,
// so a first use inside a CUDA graph capture does not invalidate it. Raises on failure.
void* malloc_workspace(size_t bytes, const char* what);

inline void check_cuda(int code, const char* call, const char* where) {
  if (code != 0) raise_cuda_error(code, call, where);
}
inline void check_cublas(int status, const char* call, const char* where) {
  if (status != 0) raise_cublas_error(status, call, where);
}

}  // namespace ember::kernels::cuda

// After a <<<...>>> launch: a bad configuration shows here; a fault inside the kernel shows at
// the next synchronising call, still naming a CUDA call (run with CUDA_LAUNCH_BLOCKING=1 to
// pin it on the kernel).
#define EMBER_CUDA_LAUNCHED(kernel_name) \
  ::ember::kernels::cuda::check_cuda(static_cast<int>(cudaGetLastError()), "kernel launch", kernel_name)
