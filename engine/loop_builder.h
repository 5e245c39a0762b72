// Builds a kernels::cpu::Loop over an output shape from tensors that broadcast to it: a
// broadcast dim gets stride 0, strides turn into bytes. The bridge between engine tensors and
// the engine-free CPU loops.
#pragma once
#include <array>

#include "ember/engine/tensor.h"
#include "ember/kernels/cpu/loops.h"

namespace ember {

// device_pointers: take each tensor's pointer wherever it lives (the CUDA bridge builds its
// strided views from this loop); otherwise a GPU tensor is an error naming the op.
template <int N>
kernels::cpu::Loop<N> make_loop(const Shape& shape, const std::array<const Tensor*, N>& ts,
                                bool device_pointers = false) {
  kernels::cpu::Loop<N> l;
  const int nd = static_cast<int>(shape.size());
  EMBER_CHECK(nd <= kernels::cpu::kMaxDims, "tensors of more than ", kernels::cpu::kMaxDims,
              " dims are not supported (shape ", shape_str(shape), ")");
  l.ndim = nd;
  for (int d = 0; d < nd; ++d) l.sizes[d] = shape[d];
  for (int k = 0; k < N; ++k) {
    const Tensor& t = *ts[k];
    const int td = static_cast<int>(t.dim());
    const int64_t es = static_cast<int64_t>(t.element_size());
    l.ptrs[k] = static_cast<char*>(device_pointers ? t.device_data() : t.raw_data());
    for (int d = 0; d < nd; ++d) {
      int tdim = d - (nd - td);
      if (tdim < 0 || t.sizes()[tdim] == 1) {
        l.strides[k][d] = 0;
      } else {
        l.strides[k][d] = t.strides()[tdim] * es;
      }
    }
  }
  return l;
}

}  // namespace ember
