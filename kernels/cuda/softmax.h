// The host-side interface of the CUDA softmax: plain C++, called by ops/attention.cpp.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// y = softmax (or log_softmax) of a contiguous x seen as [outer, n, inner] along n; f32 or f64.
// As on the CPU: the max is subtracted first, the sum of exponentials is accumulated in f64, and a
// row whose max is -inf or NaN is shifted by 0 (so it gives NaN / -inf, not a silent number).
void softmax(ElemType t, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, bool log, void* stream);

}  // namespace ember::kernels::cuda
