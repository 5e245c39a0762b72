// The host-side interface of the fused (flash-style) attention kernels: plain C++, called by
// ops/attention.cpp. f32 tensors only; the precision of the two products inside (scores and
// output) follows MathMode: exact f32 FMA, TF32 or BF16 tensor cores, f32 accumulation in all.
//
// Every tensor is seen as [B1, B2, T, X] (two batch dims, e.g. batch and heads) through four
// element strides; a stride of 0 broadcasts (a k shared by every head, a mask shared by the
// batch). The results (o, lse, dq, dk, dv) are dense in that order of dims.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/blas.h"

namespace ember::kernels::cuda {

struct FlashTensor {
  const float* data = nullptr;  // null: absent (only the mask may be)
  int64_t stride[4] = {0, 0, 0, 0};  // B1, B2, T, X
};

struct FlashAttentionArgs {
  int64_t B1 = 1, B2 = 1, Tq = 0, Tk = 0, D = 0, Dv = 0;
  FlashTensor q, k, v;  // [B1, B2, Tq, D], [B1, B2, Tk, D], [B1, B2, Tk, Dv]
  FlashTensor mask;     // additive f32 [B1, B2, Tq, Tk] (strides 0 where broadcast), or data null
  bool causal = false;  // key j blocked for query i when j > i (top-left alignment)
  float scale = 1.0f;   // applied to q . k before the mask is added
  // TF32 and BF16: the first kernels, which keep their accumulators in shared memory (WMMA),
  // instead of the ones that keep them in registers (mma.sync; the backward's for D <= 128). Both
  // stay until a GPU has measured them against each other; the exact path has one set.
  bool shared_accumulators = false;
};

// Head dims the kernels take (D and Dv both in 1..256).
bool flash_attention_supported(int64_t D, int64_t Dv);

// o [B1, B2, Tq, Dv] = softmax(scale q k^T + mask) v, and stats [2, B1, B2, Tq]: each row's shift
// m (its largest score) and sum of exponentials l, what the backward recomputes the probabilities
// from (p = exp(s - m) / l). A query whose keys are all blocked gets NaN in o (l = 0).
void flash_attention_forward(const FlashAttentionArgs& a, float* o, float* stats, MathMode mode, void* stream);

// dq [B1, B2, Tq, D], dk [B1, B2, Tk, D], dv [B1, B2, Tk, Dv] from the forward's o and stats and
// the gradient of o (do_). dq, dk and dv are overwritten (dq is zeroed and accumulated with
// atomics); rowsum is scratch of B1 * B2 * Tq floats (rowsum(do * o), the softmax backward's D).
void flash_attention_backward(const FlashAttentionArgs& a, const float* o, const float* stats, const FlashTensor& do_,
                              float* dq, float* dk, float* dv, float* rowsum, MathMode mode, void* stream);

}  // namespace ember::kernels::cuda
