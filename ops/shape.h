// Shape and indexing ops. The view methods of Tensor (reshape, permute, slice ...) are
// defined in shape.cpp too; they share storage and record a backward like any op.
#pragma once
#include "ember/engine/tensor.h"

namespace ember {

Tensor cat(const TensorList& tensors, int64_t dim = 0);
Tensor stack(const TensorList& tensors, int64_t dim = 0);
TensorList split(const Tensor& a, int64_t split_size, int64_t dim = 0);  // last piece may be smaller
TensorList split(const Tensor& a, const Shape& sizes, int64_t dim = 0);
TensorList chunk(const Tensor& a, int64_t chunks, int64_t dim = 0);
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);  // index: i64/i32 1-D
Tensor gather(const Tensor& a, int64_t dim, const Tensor& index);
// out = self with src added at index along dim (out[index[i][j]][j] += src[i][j] for dim 0).
Tensor scatter_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& src);
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);
Tensor flip(const Tensor& a, const Shape& dims);
enum class PadMode { constant, reflect };
// pads = {last_lo, last_hi, second_last_lo, second_last_hi, ...} as in torch.nn.functional.pad.
Tensor pad(const Tensor& a, const Shape& pads, PadMode mode = PadMode::constant, double value = 0.0);
Tensor repeat(const Tensor& a, const Shape& repeats);
Tensor roll(const Tensor& a, int64_t shift, int64_t dim);
Tensor tril(const Tensor& a, int64_t diagonal = 0);
Tensor triu(const Tensor& a, int64_t diagonal = 0);

}  // namespace ember
