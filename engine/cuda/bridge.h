// What the ops need to hand a GPU tensor to kernels/cuda: the element type, the device stream,
// and a coalesced Strided<N> view (the GPU twin of make_loop, with device pointers). Only
// meaningful in a CUDA build; the ops include it inside #if EMBER_WITH_CUDA.
#pragma once
#include <array>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"
#include "ember/engine/loop_builder.h"
#include "ember/engine/tensor.h"
#include "ember/kernels/cuda/blas.h"
#include "ember/kernels/cuda/elementwise.h"

namespace ember::cuda {

inline kernels::cuda::ElemType elem_type(DType t) {
  using E = kernels::cuda::ElemType;
  switch (t) {
    case DType::f32: return E::f32;
    case DType::f64: return E::f64;
    case DType::bf16: return E::bf16;
    case DType::f16: return E::f16;
    case DType::i64: return E::i64;
    case DType::i32: return E::i32;
    case DType::u8: return E::u8;
    case DType::boolean: return E::boolean;
  }
  return E::f32;
}

// The precision setting as the GPU products (matmul, linear, conv, attention) take it.
inline kernels::cuda::MathMode math_mode() {
  switch (matmul_precision()) {
    case MatmulPrecision::high: return kernels::cuda::MathMode::tf32;
    case MatmulPrecision::medium: return kernels::cuda::MathMode::bf16;
    default: return kernels::cuda::MathMode::exact;
  }
}

// The stream of the device `t` lives on (and that device made current).
inline void* stream_of(const Tensor& t) { return stream(t.device().index); }

// Operand 0 is the output; the others broadcast to `shape`. Dims are coalesced as on the CPU.
template <int N>
kernels::cuda::Strided<N> make_strided(const Shape& shape, const std::array<const Tensor*, N>& ts) {
  kernels::cpu::Loop<N> l = make_loop<N>(shape, ts, /*device_pointers=*/true);
  l.coalesce();
  kernels::cuda::Strided<N> s;
  EMBER_CHECK(l.ndim <= kernels::cuda::kMaxDims, "a GPU elementwise op over ", l.ndim,
              " non-mergeable dims (shape ", shape_str(shape), "); at most ", kernels::cuda::kMaxDims,
              " are supported: make an operand contiguous first");
  s.ndim = l.ndim;
  s.numel = shape_numel(shape);
  for (int d = 0; d < l.ndim; ++d) {
    s.sizes[d] = l.sizes[d];
    for (int k = 0; k < N; ++k) s.strides[k][d] = l.strides[k][d];
  }
  for (int k = 0; k < N; ++k) s.ptrs[k] = l.ptrs[k];
  return s;
}

}  // namespace ember::cuda
