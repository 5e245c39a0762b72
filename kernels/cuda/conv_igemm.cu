// 2-D convolution as implicit GEMM on f32 tensors: conv2d's forward, its backward in the input
// (which is also conv_transpose2d's forward) and its weight gradient, without writing an
// im2col matrix to global memory. The GEMM view of each pass, and the address of every operand
// element, is in conv_igemm_index.h (shared with a host test); this file is the machinery that
// moves those elements through shared memory and multiplies them.
//
// One kernel template serves the three passes (Pass) and the three math modes (MathMode):
//   - a block of 256 threads (8 warps) computes a BM x BN = 128 x 128 tile of one group's
//     C = A B, walking K in steps of BK = 16 (until 2026-12-01: 64 x 64 by 128 threads; each
//     thread gathers the same 16 elements per K-step either way, so the larger tile does four
//     times the multiply-adds per gathered element pair: the loop of the forward's TF32
//     kernel issues 26 instructions per 1000 multiply-adds and warp against 47, and 17 with
//     the branch-free index functions of conv_igemm_index.h; cuobjdump, docs/cuda.md);
//   - A's and B's K-step tiles are gathered into shared memory by cp.async (4-byte copies with
//     zero-fill: the gathered operand is not contiguous, and a tap in the padding, a stride
//     phase that does not divide, or an index past the edge of the GEMM is a copy of 0 bytes
//     that fills zeros), three stages deep: while step t is multiplied, steps t+1 and t+2 are
//     in flight. Stored k-major, A as [BK][BM] and B as [BK][BN], rows padded by 4 or 8 floats.
//     (In NCHW the contiguous runs of a gathered image start at any element, so 16-byte copies
//     do not apply to it; the weights of the forward pass could take them, not done yet);
//   - the multiply is where the modes differ, and nothing else does:
//       exact: f32 FMA on the CUDA cores, each thread an 8 x 8 register tile (16-byte shared loads);
//       tf32, bf16: PTX mma.sync (m16n8k8 TF32, m16n8k16 BF16; mma_fragments.cuh), each warp a
//              64 x 32 tile of 4 x 4 accumulator tiles in registers, the operands rounded as
//              they are loaded from the f32 stage into registers;
//     accumulation is f32 in all three. (Until 2026-12-01 the tensor-core modes used WMMA, and
//     BF16 first converted each stage to a bf16 copy in shared memory behind a second barrier
//     per K-step; mma.sync takes the f32 stage as it is. Not measured: no GPU yet.)
//   - the accumulators go through shared memory (reusing the pipeline's buffers) so that the
//     stores to global memory are coalesced along the output's contiguous index (the pixel for
//     the forward and backward-data passes, the weight element for the weight gradient), with
//     the bias added on the way out.
// A thread copies elements of the same rows (or of the same k) in every K-step tile
// (load_outer/load_k in conv_igemm_index.h), so it computes the row/column half of their
// addresses once (a_outer/b_outer). The k half of the forward and backward-data passes is read
// from a table the block fills at its start (igemm::k_entry, 16 bytes per k, after the pipeline
// in shared memory): an element of A then costs a broadcast 16-byte shared load, two adds, two
// unsigned compares, one wide multiply-add for its address and the copy (cuobjdump), where the
// k half computed per element by multiply-shift divisions cost about 25 instructions. The loop
// of the forward TF32 kernel went from 546 to 298 instructions a warp and K-step (docs/cuda.md).
// The weight gradient's K is too long for a table: a thread computes its one k's half per step.
// Shared memory: 3 stages x 2 operands x 16 x 132 floats = 50.7 KB for the pipeline, which the
// 128 x 132-float C tile (67.6 KB) reuses for the epilogue, plus the table (18 KB for 128
// channels of 3x3): dynamic shared memory, the opt-in above the default 48 KB set once per
// device and kernel. 126-217 registers a thread (ptxas); the forward's tensor-core kernels fit
// in 128, so two blocks of 8 warps share a multiprocessor where their shared memory allows
// (up to ~45 KB of table). Capping the others at 128 registers made them spill.
//
// The weight gradient's K (the batch times the output plane) is long and its M x N (Cout/G by
// Cin/G*KH*KW) small, so K is split over blocks (about four blocks per SM in all): each split
// writes a partial dW into a workspace and a second kernel adds the partials in split order.
// Deterministic, no atomics.
//
// A convolution with one input channel per group (depthwise, any multiplier; or a one-channel
// image) is KH*KW multiply-adds per output, far too little for a GEMM tile: direct kernels do
// it, one thread per output element (forward, backward-data) or one block per output channel
// with a fixed-order tree reduction (weight gradient, up to 16 taps), in exact f32 whatever the
// mode.
//
// Backward-data at stride (sh, sw) runs as sh*sw GEMMs in one launch (grid z), one per stride
// phase of the output pixels, each with only the taps that reach its pixels
// (conv_igemm_index.h): no multiply is spent on the zeros a stride would otherwise leave in A.
//
// What bounds it: the products (2 M N K flops) on the CUDA cores for the exact path; on the
// tensor cores, more likely the issue of the gather (integer work and one 4-byte cp.async per
// element, each A element gathered once per 128 output channels).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/async_copy.cuh"
#include "ember/kernels/cuda/check.h"
#include "ember/kernels/cuda/conv_common.cuh"
#include "ember/kernels/cuda/conv_igemm.h"
#include "ember/kernels/cuda/mma_fragments.cuh"

namespace ember::kernels::cuda {

namespace {

using igemm::Dims;
using igemm::Geom;
using igemm::Ix;
using igemm::Pass;

constexpr int BM = igemm::kTileM, BN = igemm::kTileN, BK = igemm::kTileK, kBlock = igemm::kThreads, kStages = 3;
constexpr int LDC = BM + 4;  // the accumulator tile, [BN][LDC] (column-major C), rows of 16-byte multiples
constexpr int kPer = igemm::kLoadsPerThread, kOutPer = igemm::kOutPerThread;
static_assert(BM == 128 && BN == 128 && kBlock == 256, "the register tiles below assume 128 x 128 by 256 threads");

// The f32 stage's row length: a multiple of 16 bytes (the exact path's float4 loads), padded so
// that the tensor-core fragment loads, which read rows 2t and 2t + 1 of the k-major tiles at
// column g (mma_fragments.cuh), hit 32 different banks: 2 LDS = 8 (mod 32), i.e. LDS = 4 (mod 16).
template <MathMode M>
constexpr int kLds = BM + 4;

template <MathMode M>
struct PipeTiles {
  float a[kStages][BK][kLds<M>];
  float b[kStages][BK][kLds<M>];
};
template <MathMode M>
union MainSmem {
  PipeTiles<M> pipe;
  float c[BN][LDC];
};
template <MathMode M>
struct Smem {
  MainSmem<M> main;
};
static_assert(sizeof(Smem<MathMode::tf32>) <= 227 * 1024, "within a block's shared memory on sm_90");
static_assert(sizeof(Smem<MathMode::exact>) % alignof(igemm::KEntry) == 0, "the k table follows it aligned");

// ---- the multiply of one K-step tile, by mode ----

template <MathMode M>
struct Mma;

// Thread (tx, ty) of a 16 x 16 grid owns rows 4 tx .. 4 tx + 3 and 64 + 4 tx .. 64 + 4 tx + 3,
// and the same columns by ty, of the tile: per k, two 16-byte shared loads of A and two of B
// feed 64 FMAs (the 16 threads of a half-warp read 256 consecutive bytes of A and one broadcast
// address of B). Every output sums its k in increasing order.
template <>
struct Mma<MathMode::exact> {
  float acc[8][8];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  }
  __device__ void step(Smem<MathMode::exact>& s, int stage, int tid) {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 a0 = *reinterpret_cast<const float4*>(&s.main.pipe.a[stage][kk][4 * tx]);
      const float4 a1 = *reinterpret_cast<const float4*>(&s.main.pipe.a[stage][kk][64 + 4 * tx]);
      const float4 b0 = *reinterpret_cast<const float4*>(&s.main.pipe.b[stage][kk][4 * ty]);
      const float4 b1 = *reinterpret_cast<const float4*>(&s.main.pipe.b[stage][kk][64 + 4 * ty]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
  __device__ void store(float (*c)[LDC], int tid) const {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = (j < 4 ? 0 : 64) + 4 * ty + j % 4;
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float4*>(&c[n][64 * h + 4 * tx]) =
            make_float4(acc[4 * h][j], acc[4 * h + 1][j], acc[4 * h + 2][j], acc[4 * h + 3][j]);
    }
  }
};

// The tensor-core modes, through mma.sync (mma_fragments.cuh): warp w (of 8) owns the 64 x 32
// sub-tile at rows 64 (w % 2), columns 32 (w / 2), as 4 x 4 accumulator tiles of 16 x 8 in
// registers.
// A's tile [BK][BM] is A k-major (element (m, k) at k*LDS + m), B's [BK][BN] is B k-major; the
// operands are rounded to TF32 or BF16 as they are loaded from the f32 stage, so BF16 needs no
// converted copy of the stage (and no barrier for one). One K-step of 16 is two TF32 mma.sync
// (k = 8) or one BF16 (k = 16) per accumulator tile.
template <MathMode M>
struct TensorCoreMma {
  float acc[4][4][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }
  __device__ void step(Smem<M>& s, int stage, int tid) {
    const int warp = tid / 32, lane = tid % 32, wm = warp % 2, wn = warp / 2, g = lane / 4, t = lane % 4;
    constexpr int KS = mma::kStep<M>;
#pragma unroll
    for (int kk = 0; kk < BK; kk += KS) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        mma::load_a_k_major<M>(a[i], &s.main.pipe.a[stage][kk][wm * 64 + i * 16], kLds<M>, g, t);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        mma::load_b_k_major<M>(b[j], &s.main.pipe.b[stage][kk][wn * 32 + j * 8], kLds<M>, g, t);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma::mma<M>(acc[i][j], a[i], b[j]);
    }
  }
  // Into the column-major C tile (element (m, n) at c[n][m]) by the accumulator layout.
  __device__ void store(float (*c)[LDC], int tid) const {
    const int warp = tid / 32, lane = tid % 32, wm = warp % 2, wn = warp / 2, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          c[wn * 32 + j * 8 + 2 * t + e % 2][wm * 64 + i * 16 + g + 8 * (e / 2)] = acc[i][j][e];
  }
};
template <>
struct Mma<MathMode::tf32> : TensorCoreMma<MathMode::tf32> {};
template <>
struct Mma<MathMode::bf16> : TensorCoreMma<MathMode::bf16> {};

// ---- the implicit-GEMM kernel ----

template <bool OUTER_FAST>
__device__ __forceinline__ int outer_of(int tid, int i) {
  return igemm::load_outer(OUTER_FAST, tid, i);
}
template <bool OUTER_FAST>
__device__ __forceinline__ int k_of(int tid, int i) {
  return igemm::load_k(OUTER_FAST, tid, i);
}

// The address `off` elements past `p` (or past address `base`), as integer arithmetic: a row's
// base, or an element that a bound test rejects, may lie outside its tensor (a window hanging
// over the padding). cp.async reads nothing for those (src-size 0: ptxas makes the bound test
// the copy's zero-fill predicate), so no stand-in address is selected. A 32-bit table offset
// makes the address one wide multiply-add.
__device__ __forceinline__ uintptr_t address(const float* p, int64_t off) {
  return reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(off) * sizeof(float);
}
__device__ __forceinline__ const float* element(uintptr_t base, int off) {
  return reinterpret_cast<const float*>(base + static_cast<uintptr_t>(static_cast<intptr_t>(off) * 4));
}
__device__ __forceinline__ const float* element(const float* p, int64_t off) {
  return reinterpret_cast<const float*>(address(p, off));
}

// The table of the forward and backward-data passes (igemm::k_entry): entries for a whole number
// of K-steps past the end of K, after the pipeline's buffers in dynamic shared memory.
constexpr int64_t table_bytes(int K) { return (int64_t{K} + BK - 1) / BK * BK * sizeof(igemm::KEntry); }

// Grid: x = tiles of M (of the largest phase), y = tiles of N, z = group * subs + sub, where the
// sub is the stride phase for backward-data (sh*sw of them, conv_igemm_index.h) and the K split
// for the weight gradient (`splits` of them, `chunk` long). C (or, with several splits, the
// workspace slice of the split, split_stride elements apart) gets the tile.
template <Pass P, MathMode M>
__global__ void __launch_bounds__(kBlock) igemm_kernel(Geom g, const float* __restrict__ A,
                                                       const float* __restrict__ B, const float* __restrict__ bias,
                                                       float* __restrict__ C, int splits, int chunk,
                                                       int64_t split_stride) {
  extern __shared__ __align__(128) unsigned char raw[];  // sizeof(Smem<M>) + the k table: past the static 48 KB
  Smem<M>& s = *reinterpret_cast<Smem<M>*>(raw);
  constexpr bool kTabulated = P != Pass::backward_weight;  // A outer-fast, B k-fast, one K range
  constexpr bool kPhased = P == Pass::backward_data;
  igemm::KEntry* table = reinterpret_cast<igemm::KEntry*>(raw + sizeof(Smem<M>));
  const int tid = threadIdx.x;
  const int subs = kPhased ? igemm::phases(g, P) : splits;
  const int grp = blockIdx.z / subs, sub = blockIdx.z - grp * subs, split = kPhased ? 0 : sub;
  const igemm::Phase f = igemm::phase_of<P>(g, kPhased ? sub : 0);
  const Dims d = igemm::dims(g, P, f);
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  if (m0 >= d.M) return;  // a phase with fewer pixels than the largest (the whole block leaves)
  const int k_begin = split * chunk, k_end = min(d.K, k_begin + chunk);
  const int steps = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

  // The row/column halves of this thread's operand addresses, fixed for the whole K loop.
  Ix ao[kTabulated ? 1 : kPer], bo[kPer];
#pragma unroll
  for (int i = 0; i < (kTabulated ? 1 : kPer); ++i)
    ao[i] = igemm::a_outer<P>(g, f, grp, m0 + outer_of<kTabulated>(tid, i));
#pragma unroll
  for (int i = 0; i < kPer; ++i) bo[i] = igemm::b_outer<P>(g, f, grp, n0 + outer_of<false>(tid, i));

  if constexpr (kTabulated) {  // k_begin = 0 here; the entries past K read as zeros
    for (int k = tid; k < steps * BK; k += kBlock) table[k] = igemm::k_entry<P>(g, f, grp, k);
    __syncthreads();
  }

  auto load = [&](int stage, int k0) {
    if constexpr (kTabulated) {
      // A: this thread's one row (outer-fast), 8 k: a broadcast table load, two adds and two
      // compares an element. B: 8 columns of one k.
      const int ol = outer_of<true>(tid, 0);
      const uintptr_t row = address(A, ao[0].off);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int kl = k_of<true>(tid, i);
        const igemm::KEntry e = table[k0 + kl];
        cp_async4(&s.main.pipe.a[stage][kl][ol], element(row, e.a_off), igemm::a_ok<P>(g, ao[0], e));
      }
      const int kl = k_of<false>(tid, 0), k = k0 + kl;
      const igemm::KEntry e = table[k];
      const bool k_inside = k < k_end;
#pragma unroll
      for (int i = 0; i < kPer; ++i)
        cp_async4(&s.main.pipe.b[stage][kl][outer_of<false>(tid, i)], element(address(B, bo[i].off), e.b_off),
                  bo[i].ok & k_inside);
    } else {
      const int kl = k_of<false>(tid, 0), k = k0 + kl;
      Ix ain = igemm::a_inner<P>(g, f, k), bin = igemm::b_inner<P>(g, f, grp, k);
      ain.ok = ain.ok & (k < k_end);
      bin.ok = bin.ok & (k < k_end);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        int64_t off = 0;
        const bool v = igemm::a_at<P>(g, ao[i], ain, off);
        cp_async4(&s.main.pipe.a[stage][kl][outer_of<false>(tid, i)], element(A, off), v);
      }
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        int64_t off = 0;
        const bool v = igemm::b_at<P>(g, bo[i], bin, off);
        cp_async4(&s.main.pipe.b[stage][kl][outer_of<false>(tid, i)], element(B, off), v);
      }
    }
  };

  Mma<M> mma;
  mma.zero();
  // Prologue: the first kStages - 1 steps in flight (one commit group per step, empty or not,
  // so that wait_group counts steps).
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < steps) load(st, k_begin + st * BK);
    cp_async_commit();
  }
  for (int t = 0; t < steps; ++t) {
    cp_async_wait<kStages - 2>();  // this thread's copies of step t have landed...
    __syncthreads();               // ...and everyone's; and everyone is done with step t - 1's stage
    const int next = t + kStages - 1;
    if (next < steps) load(next % kStages, k_begin + next * BK);  // into step t - 1's stage
    cp_async_commit();
    mma.step(s, t % kStages, tid);
  }
  cp_async_wait<0>();
  __syncthreads();  // the accumulator tile reuses the pipeline's buffers
  mma.store(s.main.c, tid);
  __syncthreads();

  float* out = C + (splits > 1 ? split * split_stride : 0);
  if constexpr (P != Pass::backward_weight) {  // consecutive threads: consecutive pixels
    const int ml = igemm::store_fast(tid), m = m0 + ml;
    if (m < d.M) {
      const int64_t row = igemm::c_row<P>(g, f, grp, m);
#pragma unroll 4
      for (int r = 0; r < kOutPer; ++r) {
        const int nl = igemm::store_slow(tid, r), n = n0 + nl;
        if (n < d.N) {
          float v = s.main.c[nl][ml];
          if (bias) v += bias[igemm::c_channel<P>(g, grp, n)];
          out[row + igemm::c_col<P>(g, n)] = v;
        }
      }
    }
  } else {  // consecutive threads: consecutive weight elements
    const int nl = igemm::store_fast(tid), n = n0 + nl;
    if (n < d.N) {
      const int64_t col = igemm::c_col<P>(g, n);
#pragma unroll 4
      for (int r = 0; r < kOutPer; ++r) {
        const int ml = igemm::store_slow(tid, r), m = m0 + ml;
        if (m < d.M) out[igemm::c_row<P>(g, f, grp, m) + col] = s.main.c[nl][ml];
      }
    }
  }
}

// dw[i] = sum over the splits of part[s * total + i], in split order.
__global__ void sum_splits_kernel(const float* __restrict__ part, float* __restrict__ dw, int splits, int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    float acc = part[i];
    for (int s = 1; s < splits; ++s) acc += part[s * total + i];
    dw[i] = acc;
  }
}

// ---- depthwise (one input channel per group) ----

__global__ void depthwise_forward_kernel(Geom g, const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, float* __restrict__ y, int64_t total) {
  const int Cog = g.Cout / g.groups, taps = g.KH * g.KW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int ow = static_cast<int>(i % g.OW);
    int64_t t = i / g.OW;
    const int oh = static_cast<int>(t % g.OH);
    t /= g.OH;
    const int co = static_cast<int>(t % g.Cout);
    const int64_t img = t / g.Cout;
    const float* xp = x + (img * g.C + co / Cog) * g.H * g.W;
    const float* wp = w + int64_t{co} * taps;
    float acc = 0.f;
    for (int kh = 0; kh < g.KH; ++kh) {
      const int ih = oh * g.sh - g.ph + kh * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      for (int kw = 0; kw < g.KW; ++kw) {
        const int iw = ow * g.sw - g.pw + kw * g.dw;
        if (iw < 0 || iw >= g.W) continue;
        acc = fmaf(wp[kh * g.KW + kw], xp[ih * g.W + iw], acc);
      }
    }
    y[i] = b ? acc + b[co] : acc;
  }
}

__global__ void depthwise_backward_data_kernel(Geom g, const float* __restrict__ gy, const float* __restrict__ w,
                                               const float* __restrict__ b, float* __restrict__ gx, int64_t total) {
  const int Cog = g.Cout / g.groups, taps = g.KH * g.KW, plane = g.OH * g.OW;
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    const int iw = static_cast<int>(i % g.W);
    int64_t t = i / g.W;
    const int ih = static_cast<int>(t % g.H);
    t /= g.H;
    const int ci = static_cast<int>(t % g.C);
    const int64_t img = t / g.C;
    float acc = 0.f;
    for (int j = 0; j < Cog; ++j) {
      const int co = ci * Cog + j;
      const float* gp = gy + (img * g.Cout + co) * plane;
      const float* wp = w + int64_t{co} * taps;
      for (int kh = 0; kh < g.KH; ++kh) {
        const int hs = ih + g.ph - kh * g.dh;
        if (hs < 0 || hs % g.sh != 0 || hs / g.sh >= g.OH) continue;
        for (int kw = 0; kw < g.KW; ++kw) {
          const int ws = iw + g.pw - kw * g.dw;
          if (ws < 0 || ws % g.sw != 0 || ws / g.sw >= g.OW) continue;
          acc = fmaf(wp[kh * g.KW + kw], gp[(hs / g.sh) * g.OW + ws / g.sw], acc);
        }
      }
    }
    gx[i] = b ? acc + b[ci] : acc;
  }
}

constexpr int kDwTaps = 16;     // the depthwise weight gradient keeps a register per tap
constexpr int kDwThreads = 256;

// Block co: dw[co, 0, :, :] = sum over (img, oh, ow) of gy * the tap's x; each thread sums a
// strided share of the positions for every tap, then a tree in shared memory (fixed order).
__global__ void __launch_bounds__(kDwThreads) depthwise_weight_grad_kernel(Geom g, const float* __restrict__ x,
                                                                           const float* __restrict__ gy,
                                                                           float* __restrict__ dw) {
  __shared__ float red[kDwThreads];
  __shared__ int tap_y[kDwTaps], tap_x[kDwTaps];  // each tap's offset from the window's corner
  const int co = blockIdx.x, ci = co / (g.Cout / g.groups), taps = g.KH * g.KW, plane = g.OH * g.OW;
  const int K = g.N * plane;
  if (const int t = static_cast<int>(threadIdx.x); t < taps) {
    const int kh = t / g.KW, kw = t - kh * g.KW;
    tap_y[t] = kh * g.dh - g.ph;
    tap_x[t] = kw * g.dw - g.pw;
  }
  __syncthreads();
  float acc[kDwTaps];
#pragma unroll
  for (int t = 0; t < kDwTaps; ++t) acc[t] = 0.f;
  for (int k = threadIdx.x; k < K; k += kDwThreads) {
    const int img = k / plane, pos = k - img * plane, oh = pos / g.OW, ow = pos - oh * g.OW;
    const float v = gy[(int64_t{img} * g.Cout + co) * plane + pos];
    const float* xp = x + (int64_t{img} * g.C + ci) * g.H * g.W;
#pragma unroll
    for (int t = 0; t < kDwTaps; ++t) {
      if (t < taps) {
        const int ih = oh * g.sh + tap_y[t], iw = ow * g.sw + tap_x[t];
        if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) acc[t] = fmaf(v, xp[ih * g.W + iw], acc[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kDwTaps; ++t) {
    if (t >= taps) break;  // uniform across the block
    red[threadIdx.x] = acc[t];
    __syncthreads();
    for (unsigned h = kDwThreads / 2; h > 0; h /= 2) {
      if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
      __syncthreads();
    }
    if (threadIdx.x == 0) dw[int64_t{co} * taps + t] = red[0];
    __syncthreads();  // red is rewritten for the next tap
  }
}

// ---- host side ----

bool depthwise(const Geom& g) { return g.C == g.groups; }

// A device attribute, read once per device.
template <cudaDeviceAttr kAttr>
int device_attribute(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) device = 0;
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    check_cuda(static_cast<int>(cudaDeviceGetAttribute(&v, kAttr, device)), "cudaDeviceGetAttribute",
               "conv2d implicit GEMM");
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v;
}
int sm_count(int device) { return device_attribute<cudaDevAttrMultiProcessorCount>(device); }
int max_block_smem(int device) { return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device); }

// Dynamic shared memory of a launch of pass P: the pipeline (or the C tile) and, for the
// forward and backward-data passes, the k table.
template <Pass P>
int64_t launch_smem(const Geom& g) {
  constexpr int64_t pipe = sizeof(Smem<MathMode::exact>);
  static_assert(sizeof(Smem<MathMode::tf32>) == pipe && sizeof(Smem<MathMode::bf16>) == pipe, "one size for all modes");
  return P == Pass::backward_weight ? pipe : pipe + table_bytes(igemm::dims(g, P).K);
}

igemm::SplitK weight_grad_split(const Geom& g, int device) {
  return igemm::split_k(g, BM, BN, BK, 4 * sm_count(device));
}

template <Pass P, MathMode M>
void launch_igemm(const Geom& g, const float* A, const float* B, const float* bias, float* C, int splits, int chunk,
                  int64_t split_stride, void* stream, const char* name) {
  const Dims d = igemm::dims(g, P, igemm::phase_of<P>(g, 0));  // phase 0 has the most pixels
  if (d.M <= 0 || d.N <= 0) return;
  const int subs = P == Pass::backward_data ? igemm::phases(g, P) : splits;
  const dim3 grid((d.M + BM - 1) / BM, (d.N + BN - 1) / BN, g.groups * subs);
  // The opt-in above 48 KB, once per device, to all the device allows (it limits, it does not
  // reserve; conv_igemm_supports kept launch_smem within it).
  int device = 0;
  check_cuda(static_cast<int>(cudaGetDevice(&device)), "cudaGetDevice", name);
  static std::atomic<uint64_t> opted_in{0};
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (!(opted_in.load(std::memory_order_relaxed) & bit)) {
    check_cuda(static_cast<int>(cudaFuncSetAttribute(igemm_kernel<P, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     max_block_smem(device))),
               "cudaFuncSetAttribute", name);
    opted_in.fetch_or(bit, std::memory_order_relaxed);
  }
  const size_t smem = static_cast<size_t>(launch_smem<P>(g));
  igemm_kernel<P, M><<<grid, kBlock, smem, static_cast<cudaStream_t>(stream)>>>(g, A, B, bias, C, splits, chunk,
                                                                             split_stride);
  EMBER_CUDA_LAUNCHED(name);
}

template <Pass P>
void launch_igemm_mode(MathMode mode, const Geom& g, const float* A, const float* B, const float* bias, float* C,
                       int splits, int chunk, int64_t split_stride, void* stream, const char* name) {
  switch (mode) {
    case MathMode::tf32:
      launch_igemm<P, MathMode::tf32>(g, A, B, bias, C, splits, chunk, split_stride, stream, name);
      return;
    case MathMode::bf16:
      launch_igemm<P, MathMode::bf16>(g, A, B, bias, C, splits, chunk, split_stride, stream, name);
      return;
    default:
      launch_igemm<P, MathMode::exact>(g, A, B, bias, C, splits, chunk, split_stride, stream, name);
      return;
  }
}

}  // namespace

bool conv_igemm_supports(const igemm::Geom& g, int device) {
  if (g.groups < 1 || g.C % g.groups != 0 || g.Cout % g.groups != 0 || !igemm::fits(g)) return false;
  const int taps = g.KH * g.KW;
  if (depthwise(g) && taps <= kDwTaps) return true;  // no GEMM grid at all
  // the k tables within a block's shared memory (K up to ~10,300 on sm_90: 1,144 channels of 3x3)
  const int64_t smem = std::max(launch_smem<Pass::forward>(g), launch_smem<Pass::backward_data>(g));
  if (smem > max_block_smem(device)) return false;
  // the GEMM grid: N tiles within gridDim.y, groups times at most 64 splits within gridDim.z
  const Dims f = igemm::dims(g, Pass::forward), b = igemm::dims(g, Pass::backward_data),
             w = igemm::dims(g, Pass::backward_weight);
  const int max_n = std::max(f.N, std::max(b.N, w.N));
  return (max_n + BN - 1) / BN <= 65535 && g.groups <= 65535 / 64 &&
         int64_t{g.groups} * igemm::phases(g, Pass::backward_data) <= 65535;
}

void conv_igemm_forward(MathMode mode, const igemm::Geom& shape, const float* x, const float* w, const float* b,
                        float* y, void* stream) {
  const Geom g = igemm::with_divisors(shape);
  if (depthwise(g)) {
    const int64_t total = int64_t{g.N} * g.Cout * g.OH * g.OW;
    conv_detail::launch(depthwise_forward_kernel, total, stream, "conv2d (depthwise)", g, x, w, b, y, total);
    return;
  }
  launch_igemm_mode<Pass::forward>(mode, g, x, w, b, y, 1, igemm::dims(g, Pass::forward).K, 0, stream,
                                   "conv2d (implicit GEMM)");
}

void conv_igemm_backward_data(MathMode mode, const igemm::Geom& shape, const float* gy, const float* w, const float* b,
                              float* gx, void* stream) {
  const Geom g = igemm::with_divisors(shape);
  if (depthwise(g)) {
    const int64_t total = int64_t{g.N} * g.C * g.H * g.W;
    conv_detail::launch(depthwise_backward_data_kernel, total, stream, "conv2d backward-data (depthwise)", g, gy, w,
                        b, gx, total);
    return;
  }
  launch_igemm_mode<Pass::backward_data>(mode, g, gy, w, b, gx, 1, igemm::dims(g, Pass::backward_data).K, 0, stream,
                                         "conv2d backward-data (implicit GEMM)");
}

int64_t conv_igemm_weight_grad_workspace(const igemm::Geom& g, int device) {
  if (depthwise(g) && g.KH * g.KW <= kDwTaps) return 0;
  const igemm::SplitK sk = weight_grad_split(g, device);
  const Dims d = igemm::dims(g, Pass::backward_weight);
  return sk.splits > 1 ? int64_t{sk.splits} * g.groups * d.M * d.N : 0;
}

void conv_igemm_backward_weight(MathMode mode, const igemm::Geom& shape, const float* x, const float* gy, float* dw,
                                float* workspace, int device, void* stream) {
  const Geom g = igemm::with_divisors(shape);
  if (depthwise(g) && g.KH * g.KW <= kDwTaps) {
    if (g.Cout <= 0) return;
    depthwise_weight_grad_kernel<<<g.Cout, kDwThreads, 0, static_cast<cudaStream_t>(stream)>>>(g, x, gy, dw);
    EMBER_CUDA_LAUNCHED("conv2d weight grad (depthwise)");
    return;
  }
  const igemm::SplitK sk = weight_grad_split(g, device);
  const Dims d = igemm::dims(g, Pass::backward_weight);
  const int64_t total = int64_t{g.groups} * d.M * d.N;
  if (sk.splits > 1) {
    EMBER_CHECK(workspace != nullptr, "conv2d weight grad: the split-K workspace is missing");
    launch_igemm_mode<Pass::backward_weight>(mode, g, gy, x, nullptr, workspace, sk.splits, sk.chunk, total, stream,
                                             "conv2d weight grad (implicit GEMM)");
    conv_detail::launch(sum_splits_kernel, total, stream, "conv2d weight grad (split sum)", workspace, dw, sk.splits,
                        total);
  } else {
    launch_igemm_mode<Pass::backward_weight>(mode, g, gy, x, nullptr, dw, 1, sk.chunk, 0, stream,
                                             "conv2d weight grad (implicit GEMM)");
  }
}

}  // namespace ember::kernels::cuda
