// The host-side interface of the CUDA row scans (scan.cu) behind cumsum and prod's
// derivatives: plain C++, so ops/reduce.cpp calls them from the C++ compiler. Inputs are dense
// and laid out by the op (to_rows, contiguous), as for the CPU kernels.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// Running sums along the middle dim of a dense [outer, n, inner] tensor (from the end when
// reverse), accumulated in f64 one column per thread: the CPU's order, so its bits. f32/f64.
void cumsum(ElemType t, const void* x, void* out, int64_t outer, int64_t n, int64_t inner, bool reverse,
            void* stream);
// Per row of a dense [outer, n] matrix: out_j = prod_{k != j} x_k from exclusive prefix and
// suffix products in f64 (exact with zeros). `scratch`: outer * n doubles. f32/f64.
void prod_others(ElemType t, const void* x, void* out, int64_t outer, int64_t n, double* scratch, void* stream);
// Per row: r_j = sum_{i != j} w_i prod_{k != i, j} x_k (the adjoint of prod_others), the CPU's
// case split on the number of zeros. `scratch`: outer * n doubles. f32/f64.
void prod_others_backward(ElemType t, const void* x, const void* w, void* out, int64_t outer, int64_t n,
                          double* scratch, void* stream);

}  // namespace ember::kernels::cuda
