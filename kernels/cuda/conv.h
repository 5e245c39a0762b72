// The host-side interface of the convolution, pooling and upsampling kernels (conv.cu,
// pool.cu): plain C++, so ops/conv.cpp calls them directly. Every tensor arrives contiguous
// (NCHW, device pointers); f32 or f64 (the op has already refused anything else, with the CPU's
// message). The convolutions themselves are im2col / col2im here plus cuBLAS GEMMs (blas.h),
// the GPU twin of the CPU's path (kernels/cpu/im2col.h, kernels/cpu/gemm.h).
#pragma once
#include <cstdint>

#include "ember/kernels/cpu/im2col.h"
#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// One image's window geometry, the same struct the CPU's im2col takes (see im2col.h for the
// patch-matrix layout both devices share).
using ConvGeometry = kernels::cpu::ConvGeometry;

// col [images, C*KH*KW, OH*OW] = the patch matrix of each image of im [images, C, H, W].
void im2col(ElemType t, const void* im, void* col, const ConvGeometry& g, int64_t images, void* stream);
// im [images, C, H, W] = col2im(col): each pixel is the sum of the col entries read from it
// (overwritten, not added to; pixels no window reads become 0).
void col2im(ElemType t, const void* col, void* im, const ConvGeometry& g, int64_t images, void* stream);
// y[n, c, i] += b[c] for y [images, channels, plane].
void add_channel_bias(ElemType t, void* y, const void* b, int64_t images, int64_t channels, int64_t plane,
                      void* stream);

// A 2-D pooling window over [H, W] planes: kernel, stride, padding, input and output sizes.
// Windows are clipped to the image; padding <= kernel / 2 leaves every window non-empty.
struct PoolGeometry {
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t H, W, OH, OW;
};

// y [planes, OH, OW] = window sums of x [planes, H, W] divided by kh*kw (padding counts).
void avg_pool2d(ElemType t, const void* x, void* y, int64_t planes, const PoolGeometry& q, void* stream);
// gx [planes, H, W] = the adjoint of avg_pool2d applied to gy (overwritten).
void avg_pool2d_backward(ElemType t, const void* gy, void* gx, int64_t planes, const PoolGeometry& q, void* stream);
// y, idx [planes, OH, OW] = each window's first maximum and its flat index h*W + w in the plane;
// a NaN wins (the first one), as on the CPU.
void max_pool2d(ElemType t, const void* x, void* y, int64_t* idx, int64_t planes, const PoolGeometry& q,
                void* stream);
// gx [planes, H, W] = sum of gy[o] over the outputs o whose idx[o] names the pixel (the adjoint of
// reading x at idx); idx must come from max_pool2d with the same geometry. Overwritten.
void max_pool2d_scatter(ElemType t, const void* gy, const int64_t* idx, void* gx, int64_t planes,
                        const PoolGeometry& q, void* stream);
// out [planes, OH, OW] = x [planes, H, W] read at idx (indices from max_pool2d).
void max_pool2d_gather(ElemType t, const void* x, const int64_t* idx, void* out, int64_t planes,
                       const PoolGeometry& q, void* stream);

// y [planes, H*r, W*r] = each pixel of x [planes, H, W] repeated r x r.
void upsample_nearest2d(ElemType t, const void* x, void* y, int64_t planes, int64_t H, int64_t W, int64_t r,
                        void* stream);
// gx [planes, H, W] = the sum of each r x r block of gy [planes, H*r, W*r] (overwritten).
void upsample_nearest2d_backward(ElemType t, const void* gy, void* gx, int64_t planes, int64_t H, int64_t W,
                                 int64_t r, void* stream);

}  // namespace ember::kernels::cuda
