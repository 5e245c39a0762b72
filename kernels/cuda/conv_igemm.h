// The host-side interface of the implicit-GEMM convolution kernels (conv_igemm.cu): conv2d's
// forward, its backward in the input (also conv_transpose2d's forward) and its weight gradient,
// on f32 NCHW tensors (contiguous, device pointers), without an im2col matrix in global memory.
// Plain C++, so ops/conv.cpp calls them directly; shapes are conv2d's (igemm::Geom, see
// conv_igemm_index.h). The math mode is the precision setting's (blas.h's MathMode): exact f32
// FMA, TF32 or BF16 tensor-core operands; f32 accumulation in all three. A convolution with one
// input channel per group (depthwise, any channel multiplier) runs a direct kernel instead, in
// exact f32 whatever the mode.
#pragma once
#include <cstdint>

#include "ember/kernels/cuda/blas.h"
#include "ember/kernels/cuda/conv_igemm_index.h"

namespace ember::kernels::cuda {

// Whether these kernels take the convolution on `device`: sizes within their 32-bit GEMM
// indices and grid, and the k table of the forward and backward-data passes (16 bytes per
// input or output channel and tap) within a block's shared memory there.
bool conv_igemm_supports(const igemm::Geom& g, int device);

// y [N, Cout, OH, OW] = conv2d(x, w) (+ b[Cout] when b is not null). Overwrites y.
void conv_igemm_forward(MathMode mode, const igemm::Geom& g, const float* x, const float* w, const float* b, float* y,
                        void* stream);

// gx [N, C, H, W] = the adjoint of conv2d(., w) applied to gy [N, Cout, OH, OW] (+ b[C] when b is
// not null: conv_transpose2d's bias). Overwrites gx; pixels no window reads get 0 (+ b).
void conv_igemm_backward_data(MathMode mode, const igemm::Geom& g, const float* gy, const float* w, const float* b,
                              float* gx, void* stream);

// f32 elements of scratch conv_igemm_backward_weight needs on `device` (0: none).
int64_t conv_igemm_weight_grad_workspace(const igemm::Geom& g, int device);
// dw [Cout, C/groups, KH, KW] = sum over the batch of gy (x) patches of x. Overwrites dw. The
// batch-long K is split over blocks; each split writes its own partial sum into `workspace`
// (conv_igemm_weight_grad_workspace elements, asked for on the same device) and a second kernel
// adds them in split order: deterministic, no atomics.
void conv_igemm_backward_weight(MathMode mode, const igemm::Geom& g, const float* x, const float* gy, float* dw,
                                float* workspace, int device, void* stream);

}  // namespace ember::kernels::cuda
