// Loss functions, as in torch.nn.functional: each returns the per-element loss
// (Reduction::none) or its mean or sum. All are differentiable to any order in their
// floating inputs (targets included, except class indices).
#pragma once
#include "ember/engine/tensor.h"

namespace ember {

enum class Reduction { none, mean, sum };

// (input - target)^2; input and target have one shape.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
// |input - target|; the gradient at input == target is 0.
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
// -(t log p + (1 - t) log(1 - p)) for probabilities p in [0, 1]; each log is clamped at -100,
// so p = 0 or 1 gives a finite loss (as PyTorch).
Tensor binary_cross_entropy(const Tensor& probabilities, const Tensor& target, Reduction reduction = Reduction::mean);
// binary_cross_entropy(sigmoid(logits), target) computed stably as
// (1 - t) x - log sigmoid(x).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::mean);
// -log_softmax(logits)[target] for logits [N, C] or [N, C, d1, ...] and integer class indices
// target [N] or [N, d1, ...] (i64 or i32, each in [0, C)); also logits [C] with a 0-dim target.
// mean averages over every target element.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::mean);
// Gaussian negative log likelihood with predicted variance var:
// 0.5 (log(max(var, eps)) + (input - target)^2 / max(var, eps)) [+ 0.5 log(2 pi) when full].
// The clamp at eps is not differentiated (the gradient flows as if var were used), as in
// PyTorch. var has input's shape, or input's shape without its last dim, or with last dim 1
// (one variance shared by the last dim). Negative var is an error.
Tensor gaussian_nll_loss(const Tensor& input, const Tensor& target, const Tensor& var, bool full = false,
                         double eps = 1e-6, Reduction reduction = Reduction::mean);

}  // namespace ember
