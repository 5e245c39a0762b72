// Softmax, log-softmax and scaled dot-product attention.
#pragma once
#include <optional>

#include "ember/engine/tensor.h"

namespace ember {

// exp(x) / sum(exp(x)) along dim, computed stably (the max is subtracted first).
Tensor softmax(const Tensor& x, int64_t dim);
// x - logsumexp(x) along dim, stable.
Tensor log_softmax(const Tensor& x, int64_t dim);

// softmax(q k^T * scale + mask) v for q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv]; the
// leading (batch) dims broadcast. scale defaults to 1 / sqrt(D).
// attn_mask (optional) broadcasts to [..., Tq, Tk]: a floating mask is added to the scores
// (use -inf to block a position); a bool mask keeps the positions where it is true.
// is_causal blocks key j for query i when j > i (PyTorch's top-left alignment); it may be
// combined with attn_mask. A query whose keys are all blocked gets NaN, as in PyTorch.
// A composite of matmul, softmax and matmul, so it differentiates to any order. On the GPU, f32
// inputs with head dims up to 256 take the fused flash kernels (kernels/cuda/flash_attention.cu;
// products in the matmul precision): a fused backward for a first-order gradient, and under
// create_graph a backward built from the composite's ops, so it still differentiates again.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& attn_mask = Tensor(), bool is_causal = false,
                                    std::optional<double> scale = std::nullopt);

// The GPU's fused attention in TF32 and BF16 (precisions `high` and `medium`) has two sets of
// kernels that give the same results to rounding: one keeps its accumulators (the scores, O;
// dK and dV in the backward) in registers (mma.sync; the default), the first one keeps them in
// shared memory (WMMA). Both stay until a GPU has measured them against each other
// (bench/bench_attention_cuda.cpp runs both); this chooses, for the whole process. The exact f32
// path has one set, and head dims above 128 take the shared-memory backward either way.
enum class AttentionKernel { register_accumulators, shared_accumulators };
void set_attention_kernel(AttentionKernel k);
AttentionKernel attention_kernel();

}  // namespace ember
