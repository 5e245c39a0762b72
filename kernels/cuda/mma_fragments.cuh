// Tensor-core products with the accumulators in registers: PTX mma.sync on 16 x 8 tiles, and
// loaders that gather a lane's operand registers from f32 tiles in shared memory.
//
// WMMA hides its fragment layout, so code that must touch accumulator elements by row (an
// online softmax) has to go through shared memory. mma.sync's layouts are documented (PTX ISA,
// "Matrix fragments for mma.m16n8k8 / mma.m16n8k16"; g = lane / 4, t = lane % 4):
//   C, D (16 x 8, f32):   c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
//   TF32, m16n8k8:   A a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); B b0 (t, g), b1 (t + 4, g)
//   BF16, m16n8k16:  A register r: row g + 8 (r % 2), cols 2t + 8 (r / 2) + {0, 1} (low half first)
//                    B register r: rows 2t + 8 r + {0, 1}, col g
// so a lane owns two rows (g, g + 8) of each accumulator tile, shared with the three other lanes
// of its quad: a row's max or sum is a reduction over the lane's elements and two xor-shuffles.
//
// TF32 operands are loaded with their k paired: the register slot of k = t holds element 2t of
// the 8-wide k-step, the slot of k = t + 4 element 2t + 1. A product sums over all 8 either way,
// provided A and B pair alike, which every loader here does. So a lane's two A (or B) values of
// a row are adjacent in shared memory (one 8-byte load), and an accumulator tile's c0, c1
// (columns 2t, 2t + 1) are already the A operand of the next product over those columns: P V
// takes P from S's registers as they are, as BF16's layout allows natively.
//
// Operands are f32 in shared memory and rounded as they are loaded: TF32 to nearest, ties away
// (cvt.rna's rounding, below), BF16 to nearest even, two per register. Accumulation is f32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ember/kernels/cuda/blas.h"  // MathMode

namespace ember::kernels::cuda::mma {

// The k of one mma.sync by mode: m16n8k8 for TF32, m16n8k16 for BF16.
template <MathMode M>
constexpr int kStep = M == MathMode::bf16 ? 16 : 8;

// TF32 by round to nearest, ties away from zero (cvt.rna's rounding) in one integer add: half
// of TF32's last place added to the bits, whose low 13 the tensor cores then ignore. The same
// result as __float_to_tf32 for every finite value and infinity (a carry into the exponent is
// the correct rounding up); a NaN stays a NaN unless its payload lies only in the low 13 bits.
// __float_to_tf32 costs four instructions (an infinity test, add, mask, select), and the
// conversion sits in the innermost loops of the conv and attention kernels.
__device__ __forceinline__ uint32_t tf32(float x) { return __float_as_uint(x) + 0x1000u; }

__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
}

// d += a b for one 16 x 8 tile.
template <MathMode M>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(M != MathMode::exact, "mma.sync: TF32 or BF16");
#if defined(EMBER_CUDA_EMULATION)
  if constexpr (M == MathMode::tf32) ::emu::mma_m16n8k8_tf32(d, a, b, d);
  else ::emu::mma_m16n8k16_bf16(d, a, b, d);
#else
  if constexpr (M == MathMode::tf32)
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// A from a row-major tile: A(i, k) = src[i * ld + k], the 16 x kStep block at src (Q of Q K^T).
template <MathMode M>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const float* src, int ld, int g, int t) {
  if constexpr (M == MathMode::tf32) {
    const float2 lo = *reinterpret_cast<const float2*>(src + g * ld + 2 * t);
    const float2 hi = *reinterpret_cast<const float2*>(src + (g + 8) * ld + 2 * t);
    a[0] = tf32(lo.x);
    a[1] = tf32(hi.x);
    a[2] = tf32(lo.y);
    a[3] = tf32(hi.y);
  } else {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float2 v = *reinterpret_cast<const float2*>(src + (g + 8 * (r % 2)) * ld + 2 * t + 8 * (r / 2));
      a[r] = bf16x2(v.x, v.y);
    }
  }
}

// A from a tile stored k-major: A(i, k) = src[k * ld + i] (dS as the transpose of dS^T; the
// conv's gathered operand).
template <MathMode M>
__device__ __forceinline__ void load_a_k_major(uint32_t (&a)[4], const float* src, int ld, int g, int t) {
  if constexpr (M == MathMode::tf32) {
    a[0] = tf32(src[2 * t * ld + g]);
    a[1] = tf32(src[2 * t * ld + g + 8]);
    a[2] = tf32(src[(2 * t + 1) * ld + g]);
    a[3] = tf32(src[(2 * t + 1) * ld + g + 8]);
  } else {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = g + 8 * (r % 2), k = 2 * t + 8 * (r / 2);
      a[r] = bf16x2(src[k * ld + i], src[(k + 1) * ld + i]);
    }
  }
}

// B from a tile stored n-major: B(k, n) = src[n * ld + k] (K of Q K^T, stored [key][d]).
template <MathMode M>
__device__ __forceinline__ void load_b_n_major(uint32_t (&b)[2], const float* src, int ld, int g, int t) {
  if constexpr (M == MathMode::tf32) {
    const float2 v = *reinterpret_cast<const float2*>(src + g * ld + 2 * t);
    b[0] = tf32(v.x);
    b[1] = tf32(v.y);
  } else {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float2 v = *reinterpret_cast<const float2*>(src + g * ld + 2 * t + 8 * r);
      b[r] = bf16x2(v.x, v.y);
    }
  }
}

// B from a tile stored k-major: B(k, n) = src[k * ld + n] (V of P V, stored [key][d]).
template <MathMode M>
__device__ __forceinline__ void load_b_k_major(uint32_t (&b)[2], const float* src, int ld, int g, int t) {
  if constexpr (M == MathMode::tf32) {
    b[0] = tf32(src[2 * t * ld + g]);
    b[1] = tf32(src[(2 * t + 1) * ld + g]);
  } else {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * t + 8 * r;
      b[r] = bf16x2(src[k * ld + g], src[(k + 1) * ld + g]);
    }
  }
}

// The A operand of the k-step `ks` of a product over the columns of an accumulator array
// c[n][0..3] (16 x 8 tiles; P V from S's registers): the columns a lane holds are the ones its
// A registers want. TF32 (paired k): tile ks, c0, c1 for row g and c2, c3 for row g + 8. BF16:
// tiles 2 ks and 2 ks + 1, two values to a register.
template <MathMode M, int NT>
__device__ __forceinline__ void accumulators_as_a(uint32_t (&a)[4], const float (&c)[NT][4], int ks) {
  if constexpr (M == MathMode::bf16) {
    a[0] = bf16x2(c[2 * ks][0], c[2 * ks][1]);
    a[1] = bf16x2(c[2 * ks][2], c[2 * ks][3]);
    a[2] = bf16x2(c[2 * ks + 1][0], c[2 * ks + 1][1]);
    a[3] = bf16x2(c[2 * ks + 1][2], c[2 * ks + 1][3]);
  } else {
    a[0] = tf32(c[ks][0]);
    a[1] = tf32(c[ks][2]);
    a[2] = tf32(c[ks][1]);
    a[3] = tf32(c[ks][3]);
  }
}

}  // namespace ember::kernels::cuda::mma
