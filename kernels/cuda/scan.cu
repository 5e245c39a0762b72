// Scans along rows: cumsum, and the exclusive products behind prod's derivatives (prod_others
// and its adjoint).
//
// Each is one thread per column (cumsum) or per row (the products), walking it in order with an
// f64 accumulator: the CPU's arithmetic in the CPU's order, so results match it to rounding (to
// the bit for cumsum) and no cross-thread scan is needed. The price is parallelism on few, long
// rows (a cumsum over the only dim of a vector is one thread); correctness came first here, and
// a blocked scan can replace the kernel body without touching its interface.
// The product kernels run the CPU's row routines (kernels/prod_rows.h) with their f64
// temporaries in a scratch buffer the op allocates, one double per element.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/scan.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/prod_rows.h"

namespace ember::kernels::cuda {

namespace {

// Column (o, k) of [outer, n, inner]: adjacent threads take adjacent k, so reads coalesce when
// inner is large.
template <typename T>
__global__ void cumsum_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t outer, int64_t n, int64_t inner,
                              bool reverse) {
  const int64_t columns = outer * inner;
  for (int64_t c = first_index(); c < columns; c += grid_step()) {
    const int64_t o = c / inner, k = c % inner;
    const int64_t base = o * n * inner + k;
    double acc = 0;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t at = base + (reverse ? n - 1 - s : s) * inner;
      acc += static_cast<double>(x[at]);
      out[at] = static_cast<T>(acc);
    }
  }
}

template <typename T>
__global__ void prod_others_kernel(const T* __restrict__ xs, T* __restrict__ os, int64_t outer, int64_t n,
                                   double* __restrict__ scratch) {
  for (int64_t row = first_index(); row < outer; row += grid_step())
    prod_others_row(xs + row * n, os + row * n, n, scratch + row * n);
}

template <typename T>
__global__ void prod_others_backward_kernel(const T* __restrict__ xs, const T* __restrict__ ws, T* __restrict__ rs,
                                            int64_t outer, int64_t n, double* __restrict__ scratch) {
  for (int64_t row = first_index(); row < outer; row += grid_step())
    prod_others_backward_row(xs + row * n, ws + row * n, rs + row * n, n, scratch + row * n);
}

}  // namespace

void cumsum(ElemType t, const void* x, void* out, int64_t outer, int64_t n, int64_t inner, bool reverse,
            void* stream) {
  if (outer * n * inner == 0) return;
  dispatch_float(t, "cumsum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    cumsum_kernel<T><<<blocks_for(outer * inner), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), static_cast<T*>(out), outer, n, inner, reverse);
    EMBER_CUDA_LAUNCHED(reverse ? "cumsum_reverse" : "cumsum");
  });
}

void prod_others(ElemType t, const void* x, void* out, int64_t outer, int64_t n, double* scratch, void* stream) {
  if (outer * n == 0) return;
  dispatch_float(t, "prod", [&](auto tag) {
    using T = typename decltype(tag)::type;
    prod_others_kernel<T><<<blocks_for(outer), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), static_cast<T*>(out), outer, n, scratch);
    EMBER_CUDA_LAUNCHED("prod_backward");
  });
}

void prod_others_backward(ElemType t, const void* x, const void* w, void* out, int64_t outer, int64_t n,
                          double* scratch, void* stream) {
  if (outer * n == 0) return;
  dispatch_float(t, "prod", [&](auto tag) {
    using T = typename decltype(tag)::type;
    prod_others_backward_kernel<T><<<blocks_for(outer), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(out), outer, n, scratch);
    EMBER_CUDA_LAUNCHED("prod_backward_backward");
  });
}

}  // namespace ember::kernels::cuda
