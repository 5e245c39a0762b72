// The host-side interface of the CUDA reductions. The engine hands over a contiguous
// [outer, inner] matrix (the reduced dims permuted last, like the CPU's to_rows) and gets one
// value per row; sums over the leading dim of a contiguous [rows, cols] matrix (bias gradients)
// have a kernel of their own that reads it in place.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

enum class RowOp : uint8_t {
  sum,        // accumulated in f64
  max, min,   // NaN wins, as on the CPU
  logsumexp,  // m + log(sum(exp(x - m))), m the row maximum
  var,        // sum((x - mean)^2) / p0, two passes in f64
  std,        // sqrt of var
  prod,       // the product, accumulated in f64
  norm,       // the p0-norm as scale * (sum (|x| / scale)^p0)^(1/p0), scale = max |x| (NaN wins); two passes
};

// Bytes of scratch reduce_rows needs for this shape (0 when one block per row suffices).
size_t reduce_rows_workspace(RowOp op, int64_t outer, int64_t inner);
// out[r] = op(x[r, 0..inner)); t: f32 or f64 (max/min also i64, i32, u8).
void reduce_rows(RowOp op, ElemType t, const void* x, void* out, int64_t outer, int64_t inner, double p0,
                 void* workspace, void* stream);
// values[r], indices[r] = the first extreme of row r (NaN wins); indices are i64.
void arg_extreme_rows(bool is_max, ElemType t, const void* x, void* values, int64_t* indices, int64_t outer,
                      int64_t inner, void* stream);
// out[j] = sum_i x[i, j] for a contiguous [rows, cols] x; f32 or f64, accumulated in f64. With
// `accumulate`, out[j] += that sum (rounded to T first, as a sum and then an add would be).
void sum_leading(ElemType t, const void* x, void* out, int64_t rows, int64_t cols, bool accumulate, void* stream);

}  // namespace ember::kernels::cuda
