// Fused scaled dot-product attention, flash-style: O = softmax(scale Q K^T + mask) V without a
// Tq x Tk matrix in global memory, and its backward.
//
// Forward (one block of 128 threads per tile of BR query rows of one (batch, head)):
//   the Q tile stays in shared memory; the K and V tiles (BC keys each) are staged through
//   shared memory one after the other; per K/V tile
//     S = Q K^T                    (BR x BC, in shared memory)
//     online softmax, one warp per row: new running max m, p = exp(scale s + mask - m),
//       alpha = exp(m_old - m), l = alpha l + sum p
//     O = alpha O + P V            (BR x Dp accumulator in shared memory)
//   then O / l, and the row's shift m and sum l (kept apart: m + log l in f32 loses log l
//   when |m| is large) are written. Causal attention
//   stops at the last key the tile's last query can see.
// Backward (FlashAttention-2's split, one block per tile of BC keys, looping over the query
//   tiles): with D = rowsum(dO * O) from a small kernel and P recomputed from m and l,
//     S = Q K^T, dP = dO V^T, P = exp(scale S + mask - m) / l, dS = P * (dP - D)
//     dV += P^T dO, dK += scale dS^T Q   (accumulated in shared memory, written once)
//     dQ += scale dS K                   (atomicAdd into a zeroed f32 dQ: every key tile adds)
//
// Products: one helper (tile_mma) multiplies shared-memory tiles in three ways, by the
// precision setting: exact f32 FMA on the CUDA cores (each thread owns a register tile of the
// output), TF32 tensor cores (WMMA m16n16k8, operands rounded with __float_to_tf32) or BF16
// tensor cores (WMMA m16n16k16, operands stored as bf16 in shared memory); accumulation is f32
// in all three, and the softmax is always f32 with expf (no fast math).
//
// Head dims: the kernels are compiled for Dp = 32, 64, 128, 256; D and Dv (1..256) are padded
// with zeros in shared memory up to the bucket of max(D, Dv). Tile sizes shrink as Dp grows so
// that a block fits in the 227 KB of shared memory of an H100 (static_asserts below): the
// largest, the TF32 backward at Dp = 128, takes about 200 KB. Every global load and store is
// bounds-checked, so any sequence length works.
//
// What bounds it: the two (forward) or five (backward) products, 4 Tq Tk D and 10 Tq Tk D
// flops; global traffic is O((Tq + Tk) D) per (batch, head) times the number of tiles on the
// other side. The shared-memory accumulators keep the code simple (and the exact path the
// most trustworthy) at some cost in speed against register-resident ones.
//
// Second set, TF32 and BF16 only (further down: flash_forward_mma_kernel and, for D <= 128,
// flash_backward_mma_kernel): the same algorithm with every accumulator in registers, through
// PTX mma.sync (mma_fragments.cuh) instead of WMMA, and Q/K/V/dO staged by cp.async with the next
// tile in flight. They are the default; FlashAttentionArgs::shared_accumulators selects the first
// set, so that a GPU run can measure one against the other (bench_attention_cuda.cpp) before the
// slower one is deleted.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/async_copy.cuh"
#include "ember/kernels/cuda/check.h"
#include "ember/kernels/cuda/flash_attention.h"
#include "ember/kernels/cuda/mma_fragments.cuh"

namespace ember::kernels::cuda {

namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 128;  // every kernel here: 4 warps
constexpr int kWarps = kThreads / 32;
constexpr size_t kMaxSmem = 227 * 1024;  // opt-in dynamic shared memory per block on sm_90

// Operand type in shared memory and row padding (in elements) by precision. WMMA needs rows
// that are multiples of 16 bytes; the exact path pads by one element so that a warp reading a
// column touches 32 different banks.
template <MathMode M>
struct Prec {
  using In = float;
  static constexpr int pad_in = 4, pad_f = 4;
};
template <>
struct Prec<MathMode::exact> {
  using In = float;
  static constexpr int pad_in = 1, pad_f = 1;
};
template <>
struct Prec<MathMode::bf16> {
  using In = __nv_bfloat16;
  static constexpr int pad_in = 8, pad_f = 4;
};

template <typename In>
__device__ __forceinline__ In to_in(float x) {
  if constexpr (std::is_same_v<In, float>) return x;
  else return __float2bfloat16_rn(x);
}

constexpr size_t align128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// One (batch, head)'s operands, from the two batch dims' strides: q, k, v, the mask and dO
// (null where absent: the mask without one, dO in the forward).
struct HeadOperands {
  const float *q, *k, *v, *mask, *dout;
};
__device__ __forceinline__ HeadOperands head_operands(const FlashAttentionArgs& a, int64_t bh,
                                                      const FlashTensor& dout = FlashTensor()) {
  const int64_t b1 = bh / a.B2, b2 = bh % a.B2;
  auto at = [&](const FlashTensor& t) { return t.data ? t.data + b1 * t.stride[0] + b2 * t.stride[1] : nullptr; };
  return {at(a.q), at(a.k), at(a.v), at(a.mask), at(dout)};
}

// The backward's per-query rows of one (batch, head): the forward's shift m and sum l, the
// rowsum D = rowsum(dO * O), and dQ (dense [B1 B2, Tq, D]).
struct HeadRows {
  const float *m, *l, *d;
  float* dq;
};
__device__ __forceinline__ HeadRows head_rows(const FlashAttentionArgs& a, int64_t bh, const float* stats,
                                              const float* rowsum, float* dq) {
  return {stats + bh * a.Tq, stats + a.B1 * a.B2 * a.Tq + bh * a.Tq, rowsum + bh * a.Tq, dq + bh * a.Tq * a.D};
}

// A running max of -inf (nothing seen yet, or every key blocked) shifts by 0, so that the
// arithmetic gives 0 / 0 = NaN for a fully blocked row, as the composite softmax does.
__device__ __forceinline__ float usable_shift(float m) { return m == -INFINITY ? 0.f : m; }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// C[M x N] = (ACC ? C : 0) + A[M x K] B[K x N], every matrix in shared memory; C is f32
// row-major with row stride ldc. A(i, k) is A[i * lda + k], or A[k * lda + i] when A_COL;
// B(k, j) is B[k * ldb + j], or B[j * ldb + k] when B_COL. Called by all 128 threads of the
// block; each thread (exact) or warp (WMMA) writes its own part of C, so the caller puts a
// __syncthreads() between this and any use of C or any rewrite of A and B.
template <MathMode MODE, int M, int N, int K, bool A_COL, bool B_COL, bool ACC, typename In>
__device__ __forceinline__ void tile_mma(float* C, int ldc, const In* A, int lda, const In* B, int ldb) {
  if constexpr (MODE == MathMode::exact) {
    // 16 x 8 threads; thread (ty, tx) owns rows ty + 16 a and columns tx + 8 b of C.
    static_assert(M % 16 == 0 && N % 8 == 0, "exact tile shape");
    constexpr int RM = M / 16, RN = N / 8;
    const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
    float acc[RM][RN];
#pragma unroll
    for (int a = 0; a < RM; ++a)
#pragma unroll
      for (int b = 0; b < RN; ++b) acc[a][b] = ACC ? C[(ty + 16 * a) * ldc + tx + 8 * b] : 0.f;
#pragma unroll 2
    for (int k = 0; k < K; ++k) {
      float av[RM], bv[RN];
#pragma unroll
      for (int a = 0; a < RM; ++a) av[a] = A_COL ? A[k * lda + ty + 16 * a] : A[(ty + 16 * a) * lda + k];
#pragma unroll
      for (int b = 0; b < RN; ++b) bv[b] = B_COL ? B[(tx + 8 * b) * ldb + k] : B[k * ldb + tx + 8 * b];
#pragma unroll
      for (int a = 0; a < RM; ++a)
#pragma unroll
        for (int b = 0; b < RN; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
    }
#pragma unroll
    for (int a = 0; a < RM; ++a)
#pragma unroll
      for (int b = 0; b < RN; ++b) C[(ty + 16 * a) * ldc + tx + 8 * b] = acc[a][b];
  } else {
    // The warps share out the 16 x 16 tiles of C; each walks K in fragment steps.
    constexpr bool kTf32 = MODE == MathMode::tf32;
    constexpr int FK = kTf32 ? 8 : 16;
    using FragT = std::conditional_t<kTf32, wmma::precision::tf32, __nv_bfloat16>;
    using LayA = std::conditional_t<A_COL, wmma::col_major, wmma::row_major>;
    using LayB = std::conditional_t<B_COL, wmma::col_major, wmma::row_major>;
    static_assert(M % 16 == 0 && N % 16 == 0 && K % FK == 0, "WMMA tile shape");
    constexpr int TN = N / 16, NT = (M / 16) * TN;
    const int warp = threadIdx.x / 32;
    for (int t = warp; t < NT; t += kWarps) {  // uniform within a warp
      const int i0 = (t / TN) * 16, j0 = (t % TN) * 16;
      wmma::fragment<wmma::accumulator, 16, 16, FK, float> c;
      if constexpr (ACC) wmma::load_matrix_sync(c, C + i0 * ldc + j0, ldc, wmma::mem_row_major);
      else wmma::fill_fragment(c, 0.f);
      for (int k = 0; k < K; k += FK) {
        wmma::fragment<wmma::matrix_a, 16, 16, FK, FragT, LayA> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, FK, FragT, LayB> fb;
        wmma::load_matrix_sync(fa, A_COL ? A + k * lda + i0 : A + i0 * lda + k, lda);
        wmma::load_matrix_sync(fb, B_COL ? B + j0 * ldb + k : B + k * ldb + j0, ldb);
        if constexpr (kTf32) {
#pragma unroll
          for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
#pragma unroll
          for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
        }
        wmma::mma_sync(c, fa, fb, c);
      }
      wmma::store_matrix_sync(C + i0 * ldc + j0, c, ldc, wmma::mem_row_major);
    }
  }
}

// Which slots of a tile C slots wide the kThreads threads of a block each take, so that a thread's
// row and column are its first ones plus compile-time constants (its source pointer then
// advances by a fixed stride): C <= kThreads, column tid % C of every kRowStep-th row from
// tid / C; C > kThreads, columns tid + j kThreads (j < kCols) of every row. Consecutive threads
// take consecutive columns. load_tile and stage_rows walk their tiles so.
template <int C>
struct TileSlots {
  static_assert(C % kThreads == 0 || kThreads % C == 0, "a thread's slots: fixed columns");
  static constexpr int kCols = C > kThreads ? C / kThreads : 1;
  static constexpr int kRowStep = C > kThreads ? 1 : kThreads / C;
  __device__ static int first_row(int tid) { return C > kThreads ? 0 : tid / C; }
  __device__ static int column(int tid, int j) { return C > kThreads ? tid + j * kThreads : tid % C; }
};

// Rows [r0, r0 + R) of a [T, X] slice (element strides st, sx) into shared memory as In, rows
// padded to XP columns; zeros outside T x X. Each thread takes a fixed column (or two, at
// XP = 256; TileSlots), so its source pointer advances by a fixed stride (until 2026-12-02 a
// loop from threadIdx.x divided each element's index and multiplied its row by st in 64 bits,
// as stage_rows below did). Unrolled by 8, not whole: the loads are synchronous, and 64 in
// flight would cost registers these kernels need.
template <int R, int XP, typename In>
__device__ __forceinline__ void load_tile(In* dst, int ld, const float* __restrict__ src, int64_t st, int64_t sx,
                                          int64_t r0, int64_t T, int64_t X) {
  using Slots = TileSlots<XP>;
  constexpr int RSTEP = Slots::kRowStep;
  static_assert(R % RSTEP == 0, "every thread the same number of rows");
  const int tid = static_cast<int>(threadIdx.x), r_first = Slots::first_row(tid);
#pragma unroll
  for (int j = 0; j < Slots::kCols; ++j) {
    const int c = Slots::column(tid, j);
    const bool col_ok = c < X;
    const float* p = src + (r0 + r_first) * st + c * sx;  // rows past T are not read
#pragma unroll 8
    for (int i = 0; i < R / RSTEP; ++i, p += RSTEP * st) {
      const int r = r_first + i * RSTEP;
      const float val = col_ok && r0 + r < T ? *p : 0.f;
      dst[r * ld + c] = to_in<In>(val);
    }
  }
}

// Tile sizes by head-dim bucket: BR query rows, BC keys.
template <int DP>
struct FwdTiles;
template <>
struct FwdTiles<32> { static constexpr int BR = 64, BC = 64; };
template <>
struct FwdTiles<64> { static constexpr int BR = 64, BC = 64; };
template <>
struct FwdTiles<128> { static constexpr int BR = 64, BC = 32; };
template <>
struct FwdTiles<256> { static constexpr int BR = 32, BC = 32; };

template <int DP>
struct BwdTiles;
template <>
struct BwdTiles<32> { static constexpr int BR = 64, BC = 64; };
template <>
struct BwdTiles<64> { static constexpr int BR = 64, BC = 64; };
template <>
struct BwdTiles<128> { static constexpr int BR = 32, BC = 64; };
template <>
struct BwdTiles<256> { static constexpr int BR = 16, BC = 32; };

// Shared memory of the forward, in bytes from the base (each array 128-byte aligned).
template <MathMode MODE, int DP, int BR, int BC>
struct FwdLayout {
  using In = typename Prec<MODE>::In;
  static constexpr bool kSeparateP = !std::is_same_v<In, float>;  // BF16: P needs its own copy
  static constexpr int ld_d = DP + Prec<MODE>::pad_in;             // Q, K, V rows
  static constexpr int ld_o = DP + Prec<MODE>::pad_f;              // O rows (f32)
  static constexpr int ld_s = BC + Prec<MODE>::pad_f;              // S rows (f32)
  static constexpr int ld_p = kSeparateP ? BC + Prec<MODE>::pad_in : ld_s;  // P rows
  static constexpr size_t q = 0;
  static constexpr size_t k = q + align128(sizeof(In) * BR * ld_d);
  static constexpr size_t v = k + align128(sizeof(In) * BC * ld_d);
  static constexpr size_t s = v + align128(sizeof(In) * BC * ld_d);
  static constexpr size_t p = s + align128(sizeof(float) * BR * ld_s);
  static constexpr size_t o = p + (kSeparateP ? align128(sizeof(In) * BR * ld_p) : 0);
  static constexpr size_t rows = o + align128(sizeof(float) * BR * ld_o);
  static constexpr size_t bytes = rows + align128(sizeof(float) * 3 * BR);
  static_assert(bytes <= kMaxSmem, "forward tile does not fit in shared memory");
  static_assert(BC % 32 == 0 && BR % 16 == 0, "forward tile shape");
};

template <MathMode MODE, int DP, int BR, int BC>
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(const FlashAttentionArgs a, float* __restrict__ o, float* __restrict__ stats) {
  using Lay = FwdLayout<MODE, DP, BR, BC>;
  using In = typename Lay::In;
  extern __shared__ __align__(128) unsigned char smem[];
  In* Qs = reinterpret_cast<In*>(smem + Lay::q);
  In* Ks = reinterpret_cast<In*>(smem + Lay::k);
  In* Vs = reinterpret_cast<In*>(smem + Lay::v);
  float* Ss = reinterpret_cast<float*>(smem + Lay::s);
  // P overwrites S in place (f32 operands); BF16 keeps a bf16 copy of its own.
  In* Ps = Lay::kSeparateP ? reinterpret_cast<In*>(smem + Lay::p) : reinterpret_cast<In*>(Ss);
  float* Os = reinterpret_cast<float*>(smem + Lay::o);
  float* row_m = reinterpret_cast<float*>(smem + Lay::rows);  // running max (may be -inf)
  float* row_l = row_m + BR;                                   // running sum of exp
  float* row_alpha = row_l + BR;                               // this step's rescale of O

  const int64_t nqt = (a.Tq + BR - 1) / BR;
  const int64_t bh = blockIdx.x / nqt, q0 = (blockIdx.x % nqt) * BR;
  const HeadOperands in = head_operands(a, bh);
  const float *qp = in.q, *kp = in.k, *vp = in.v, *mp = in.mask;

  load_tile<BR, DP>(Qs, Lay::ld_d, qp, a.q.stride[2], a.q.stride[3], q0, a.Tq, a.D);
  for (int idx = threadIdx.x; idx < BR * DP; idx += kThreads) Os[(idx / DP) * Lay::ld_o + idx % DP] = 0.f;
  for (int r = threadIdx.x; r < BR; r += kThreads) {
    row_m[r] = -INFINITY;
    row_l[r] = 0.f;
  }

  // Causal: key j is blocked for every query of the tile once j > q0 + BR - 1.
  const int64_t kend = a.causal ? (a.Tk < q0 + BR ? a.Tk : q0 + BR) : a.Tk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t k0 = 0; k0 < kend; k0 += BC) {
    load_tile<BC, DP>(Ks, Lay::ld_d, kp, a.k.stride[2], a.k.stride[3], k0, a.Tk, a.D);
    load_tile<BC, DP>(Vs, Lay::ld_d, vp, a.v.stride[2], a.v.stride[3], k0, a.Tk, a.Dv);
    __syncthreads();  // Q (first pass), K and V are in; the last pass's P V is done
    tile_mma<MODE, BR, BC, DP, false, true, false>(Ss, Lay::ld_s, Qs, Lay::ld_d, Ks, Lay::ld_d);
    __syncthreads();

    // Online softmax: one warp per row, a lane per column (BC / 32 each).
    for (int r = warp; r < BR; r += kWarps) {  // uniform within a warp
      const int64_t i = q0 + r;
      float sv[BC / 32];
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < BC / 32; ++c) {
        const int col = lane + 32 * c;
        const int64_t j = k0 + col;
        float s = -INFINITY;
        if (j < a.Tk && !(a.causal && j > i)) {
          s = Ss[r * Lay::ld_s + col] * a.scale;
          if (mp != nullptr && i < a.Tq) s += mp[i * a.mask.stride[2] + j * a.mask.stride[3]];
        }
        sv[c] = s;
        mx = fmaxf(mx, s);
      }
      mx = warp_max(mx);
      const float m_old = row_m[r];
      const float m_new = fmaxf(m_old, mx);
      const float shift = usable_shift(m_new);
      float sum = 0.f;
#pragma unroll
      for (int c = 0; c < BC / 32; ++c) {
        const float p = expf(sv[c] - shift);
        sum += p;
        Ps[r * Lay::ld_p + lane + 32 * c] = to_in<In>(p);
      }
      sum = warp_sum(sum);
      __syncwarp();
      if (lane == 0) {
        // O and l are still 0 while the running max is -inf: rescale by 0, not by expf(-m_new),
        // which overflows to inf (and 0 * inf = NaN) once every score so far is below -88.
        const float alpha = m_old == -INFINITY ? 0.f : expf(m_old - shift);
        row_alpha[r] = alpha;
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = m_new;
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < BR * DP; idx += kThreads) {
      const int r = idx / DP;
      Os[r * Lay::ld_o + idx % DP] *= row_alpha[r];
    }
    __syncthreads();
    tile_mma<MODE, BR, DP, BC, false, false, true>(Os, Lay::ld_o, Ps, Lay::ld_p, Vs, Lay::ld_d);
    __syncthreads();  // before the next pass overwrites K, V (and S / P)
  }

  // Row r: O / l (0 / 0 = NaN for a fully blocked row), and the row's shift m and sum l kept
  // apart for the backward: L = m + log l in f32 would lose log l when |m| is large (a row
  // masked at -1e9), and P = exp(s - L) with it.
  for (int idx = threadIdx.x; idx < BR * DP; idx += kThreads) {
    const int r = idx / DP, c = idx % DP;
    const int64_t i = q0 + r;
    if (i < a.Tq && c < a.Dv) o[(bh * a.Tq + i) * a.Dv + c] = Os[r * Lay::ld_o + c] / row_l[r];
  }
  for (int r = threadIdx.x; r < BR; r += kThreads) {
    const int64_t i = q0 + r;
    if (i < a.Tq) {
      stats[bh * a.Tq + i] = usable_shift(row_m[r]);
      stats[a.B1 * a.B2 * a.Tq + bh * a.Tq + i] = row_l[r];
    }
  }
}

// ---- the tensor-core forward with its accumulators in registers (mma.sync) ----
//
// The same algorithm as flash_forward_kernel, shaped like FlashAttention-2's forward: each warp
// owns 16 query rows and keeps its S tile (16 x BC) and its O accumulator (16 x DP) in
// registers, in mma.sync's accumulator layout, so the online softmax reads and rescales them in
// place (a row's max and sum over the four lanes of a quad) and P goes from S's registers
// straight into the A operand of P V. Nothing but Q, K and V passes through shared
// memory, and the warps never wait for one another inside a K/V tile.
//
// Q, K and V are staged as f32 by cp.async, K/V double-buffered: tile t + 1 is in flight while
// tile t is multiplied. 16-byte copies where every row is contiguous and 16-byte aligned (VEC),
// 4-byte ones otherwise (transposed views, odd head dims); zero fill past the edges. Operands are
// rounded to TF32 or BF16 as they are loaded into registers, k paired in both modes
// (mma_fragments.cuh): a lane reads the pair (row g, columns 2t, 2t + 1) of Q or K with one 8-byte
// load, conflict-free when the row length is 8 (mod 32), and V down its columns, (2t, g) and
// (2t + 1, g), conflict-free when it is 4 (mod 16).

// Keys per K/V tile by head-dim bucket: S takes BC / 2 registers per lane and O DP / 2.
template <int DP>
constexpr int kRegFwdKeys = DP <= 64 ? 64 : 32;

template <MathMode MODE, int DP, int BC>
struct RegFwdLayout {
  static constexpr int BR = kWarps * 16;  // query rows per block: 16 per warp
  static constexpr int ld_qk = DP + 8;  // rows read in pairs (g, 2t): conflict-free at 8 (mod 32)
  static constexpr int ld_v = DP + 4;   // read down a column, (2t, g): conflict-free at 4 (mod 16)
  static constexpr size_t q = 0;
  static constexpr size_t k_stage = align128(sizeof(float) * BC * ld_qk);
  static constexpr size_t v_stage = align128(sizeof(float) * BC * ld_v);
  static constexpr size_t k = q + align128(sizeof(float) * BR * ld_qk);
  static constexpr size_t v = k + 2 * k_stage;
  static constexpr size_t bytes = v + 2 * v_stage;
  static_assert(bytes <= kMaxSmem, "register forward tile does not fit in shared memory");
  static_assert(BC % 16 == 0 && DP % 16 == 0, "register forward tile shape");
};

// Issues the copies of rows [r0, r0 + R) of a [T, X] slice (element strides st, sx) into
// shared memory rows of DP floats (stride ld): zeros outside T x X. VEC: sx = 1 and every row
// 16-byte aligned, X a multiple of 4 (so a 4-float chunk is all in or all out).
//
// Copy i of a thread is chunk threadIdx.x + i kThreads of the R x DP/W tile (W floats a chunk),
// with i a compile-time count, so its row and column are the thread's first ones plus
// constants: the source pointer advances by a fixed stride and the destination is an immediate
// offset. (Until 2026-12-02 a loop from threadIdx.x divided each chunk's index and multiplied
// its row by st in 64 bits: about 30 instructions a copy, a quarter of the forward's loop at
// D = 128.) A copy past T or X reads nothing (cp.async's zero fill), so its source address is
// not selected.
template <int R, int DP, bool VEC>
__device__ __forceinline__ void stage_rows(float* dst, int ld, const float* __restrict__ src, int64_t st, int64_t sx,
                                           int64_t r0, int64_t T, int64_t X) {
  constexpr int W = VEC ? 4 : 1, CPR = DP / W;  // floats a copy, copies a row
  using Slots = TileSlots<CPR>;
  static_assert((R * CPR) % kThreads == 0, "every thread the same number of copies");
  const auto chunk = [](float* d, const float* p, bool valid) {
    if constexpr (VEC) cp_async16(d, p, valid);
    else cp_async4(d, p, valid);
  };
  const int tid = static_cast<int>(threadIdx.x);
  if constexpr (Slots::kCols == 1) {  // one column; rows r_first, r_first + RSTEP, ...
    constexpr int RSTEP = Slots::kRowStep, kCopies = R / RSTEP;
    const int c = Slots::column(tid, 0) * W, r_first = Slots::first_row(tid);
    const bool col_ok = c < X;
    const float* p = src + (r0 + r_first) * st + c * (VEC ? 1 : sx);
    const int64_t step = RSTEP * st;
#pragma unroll
    for (int i = 0; i < kCopies; ++i, p += step) {
      const int r = r_first + i * RSTEP;
      chunk(dst + r * ld + c, p, col_ok && r0 + r < T);
    }
  } else {  // kCols copies a row (4-byte copies at D = 256)
    int64_t col_off[Slots::kCols];
    bool col_ok[Slots::kCols];
#pragma unroll
    for (int j = 0; j < Slots::kCols; ++j) {
      const int c = Slots::column(tid, j) * W;
      col_off[j] = c * (VEC ? 1 : sx);
      col_ok[j] = c < X;
    }
    const float* p = src + r0 * st;
    // Not unrolled whole: the D = 256 forward holds 128 accumulators a lane already, and 64
    // unrolled copies with their own addresses made ptxas spill.
#pragma unroll 2
    for (int r = 0; r < R; ++r, p += st) {
      const bool row_ok = r0 + r < T;
#pragma unroll
      for (int j = 0; j < Slots::kCols; ++j)
        chunk(dst + r * ld + Slots::column(tid, j) * W, p + col_off[j], row_ok && col_ok[j]);
    }
  }
}

template <MathMode MODE, int DP, int BC, bool VEC>
__global__ void __launch_bounds__(kThreads, 1)
    flash_forward_mma_kernel(const FlashAttentionArgs a, float* __restrict__ o, float* __restrict__ stats) {
  using Lay = RegFwdLayout<MODE, DP, BC>;
  constexpr int BR = Lay::BR, KS = mma::kStep<MODE>, NT = BC / 8, OT = DP / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  float* Qs = reinterpret_cast<float*>(smem + Lay::q);

  const int64_t nqt = (a.Tq + BR - 1) / BR;
  const int64_t bh = blockIdx.x / nqt, q0 = (blockIdx.x % nqt) * BR;
  const HeadOperands in = head_operands(a, bh);
  const float *qp = in.q, *kp = in.k, *vp = in.v, *mp = in.mask;
  auto k_tile = [&](int stage) { return reinterpret_cast<float*>(smem + Lay::k + stage * Lay::k_stage); };
  auto v_tile = [&](int stage) { return reinterpret_cast<float*>(smem + Lay::v + stage * Lay::v_stage); };
  auto stage_kv = [&](int64_t tile, int stage) {
    stage_rows<BC, DP, VEC>(k_tile(stage), Lay::ld_qk, kp, a.k.stride[2], a.k.stride[3], tile * BC, a.Tk, a.D);
    stage_rows<BC, DP, VEC>(v_tile(stage), Lay::ld_v, vp, a.v.stride[2], a.v.stride[3], tile * BC, a.Tk, a.Dv);
  };

  // Causal: key j is blocked for every query of the tile once j > q0 + BR - 1.
  const int64_t kend = a.causal ? (a.Tk < q0 + BR ? a.Tk : q0 + BR) : a.Tk;
  const int64_t ntiles = (kend + BC - 1) / BC;  // >= 1: Tk > 0
  stage_rows<BR, DP, VEC>(Qs, Lay::ld_qk, qp, a.q.stride[2], a.q.stride[3], q0, a.Tq, a.D);
  stage_kv(0, 0);
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int r0 = warp * 16;  // the warp's first row in the block's tile
  // This lane's rows g and g + 8 (h = 0, 1): their mask rows, and for each key tile the first
  // key (in the tile) that the row may not see: past the end, or past the row itself (causal).
  const int64_t row[2] = {q0 + r0 + g, q0 + r0 + g + 8};
  const float* mask_row[2] = {mp != nullptr && row[0] < a.Tq ? mp + row[0] * a.mask.stride[2] : nullptr,
                              mp != nullptr && row[1] < a.Tq ? mp + row[1] * a.mask.stride[2] : nullptr};
  const int64_t ms = a.mask.stride[3];

  float acc[OT][4];
  float row_m[2] = {-INFINITY, -INFINITY};  // running max of rows g, g + 8
  float row_l[2] = {0.f, 0.f};              // this lane's part of their sums of exponentials
#pragma unroll
  for (int ot = 0; ot < OT; ++ot)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[ot][e] = 0.f;

  for (int64_t tile = 0; tile < ntiles; ++tile) {
    const int stage = static_cast<int>(tile & 1);
    if (tile + 1 < ntiles) stage_kv(tile + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // this thread's copies of Q and of this tile have landed...
    __syncthreads();     // ...and everyone's
    const float* Ks = k_tile(stage);
    const float* Vs = v_tile(stage);
    const int64_t k0 = tile * BC;

    float s[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP; kk += KS) {  // S = Q K^T
      uint32_t af[4];
      mma::load_a<MODE>(af, Qs + r0 * Lay::ld_qk + kk, Lay::ld_qk, g, t);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        uint32_t bf[2];
        mma::load_b_n_major<MODE>(bf, Ks + nt * 8 * Lay::ld_qk + kk, Lay::ld_qk, g, t);
        mma::mma<MODE>(s[nt], af, bf);
      }
    }
    // Online softmax of rows g (elements 0, 1) and g + 8 (elements 2, 3).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int64_t stop = a.Tk - k0;  // keys at or past `stop` (in the tile) are blocked
      if (a.causal && row[h] + 1 - k0 < stop) stop = row[h] + 1 - k0;
      const int seen = stop < 0 ? 0 : stop > BC ? BC : static_cast<int>(stop);
      const float* mrow = mask_row[h] ? mask_row[h] + k0 * ms : nullptr;
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int jl = nt * 8 + 2 * t + e;
          float v = -INFINITY;
          if (jl < seen) {
            v = s[nt][2 * h + e] * a.scale;
            if (mrow != nullptr) v += mrow[jl * ms];
          }
          s[nt][2 * h + e] = v;
          mx = fmaxf(mx, v);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_old = row_m[h], m_new = fmaxf(m_old, mx), shift = usable_shift(m_new);
      // As in flash_forward_kernel: rescale by 0 while nothing has been seen (O and l are 0).
      const float alpha = m_old == -INFINITY ? 0.f : expf(m_old - shift);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = expf(s[nt][2 * h + e] - shift);
          s[nt][2 * h + e] = p;
          sum += p;
        }
      row_l[h] = row_l[h] * alpha + sum;
      row_m[h] = m_new;
#pragma unroll
      for (int ot = 0; ot < OT; ++ot) {
        acc[ot][2 * h] *= alpha;
        acc[ot][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int ks = 0; ks < BC / KS; ++ks) {  // O += P V
      uint32_t af[4];
      mma::accumulators_as_a<MODE, NT>(af, s, ks);
#pragma unroll
      for (int ot = 0; ot < OT; ++ot) {
        uint32_t bf[2];
        mma::load_b_k_major<MODE>(bf, Vs + ks * KS * Lay::ld_v + ot * 8, Lay::ld_v, g, t);
        mma::mma<MODE>(acc[ot], af, bf);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next pass refills it
  }

  // O / l (0 / 0 = NaN for a fully blocked row), and the row's shift and sum for the backward.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_l[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int64_t i = row[h];
    if (i >= a.Tq) continue;
    float* orow = o + (bh * a.Tq + i) * a.Dv;
#pragma unroll
    for (int ot = 0; ot < OT; ++ot)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = ot * 8 + 2 * t + e;
        if (c < a.Dv) orow[c] = acc[ot][2 * h + e] / l;
      }
    if (t == 0) {
      stats[bh * a.Tq + i] = usable_shift(row_m[h]);
      stats[a.B1 * a.B2 * a.Tq + bh * a.Tq + i] = l;
    }
  }
}

// rowsum[b, i] = sum_d dO[b, i, d] O[b, i, d]: one warp per row.
__global__ void __launch_bounds__(kThreads)
    flash_rowsum_kernel(const float* __restrict__ o, const FlashTensor dout, float* __restrict__ rowsum, int64_t B2,
                        int64_t Tq, int64_t Dv, int64_t rows) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform within a warp
  const int64_t bh = row / Tq, i = row % Tq, b1 = bh / B2, b2 = bh % B2;
  const float* g = dout.data + b1 * dout.stride[0] + b2 * dout.stride[1] + i * dout.stride[2];
  const float* orow = o + row * Dv;
  float acc = 0.f;
  for (int64_t d = lane; d < Dv; d += 32) acc = fmaf(g[d * dout.stride[3]], orow[d], acc);
  acc = warp_sum(acc);
  if (lane == 0) rowsum[row] = acc;
}

template <MathMode MODE, int DP, int BR, int BC>
struct BwdLayout {
  using In = typename Prec<MODE>::In;
  static constexpr bool kSeparateP = !std::is_same_v<In, float>;  // BF16: P and dS need copies
  static constexpr int ld_d = DP + Prec<MODE>::pad_in;             // K, V, Q, dO rows
  static constexpr int ld_f = DP + Prec<MODE>::pad_f;              // dK, dV, dQ rows (f32)
  static constexpr int ld_s = BC + Prec<MODE>::pad_f;              // S / P and dP / dS rows (f32)
  static constexpr int ld_p = kSeparateP ? BC + Prec<MODE>::pad_in : ld_s;  // P, dS operand rows
  static constexpr size_t k = 0;
  static constexpr size_t v = k + align128(sizeof(In) * BC * ld_d);
  static constexpr size_t dk = v + align128(sizeof(In) * BC * ld_d);
  static constexpr size_t dv = dk + align128(sizeof(float) * BC * ld_f);
  static constexpr size_t q = dv + align128(sizeof(float) * BC * ld_f);
  static constexpr size_t dout = q + align128(sizeof(In) * BR * ld_d);
  static constexpr size_t dq = dout + align128(sizeof(In) * BR * ld_d);
  static constexpr size_t s = dq + align128(sizeof(float) * BR * ld_f);
  static constexpr size_t dp = s + align128(sizeof(float) * BR * ld_s);
  static constexpr size_t pb = dp + align128(sizeof(float) * BR * ld_s);
  static constexpr size_t dsb = pb + (kSeparateP ? align128(sizeof(In) * BR * ld_p) : 0);
  static constexpr size_t rows = dsb + (kSeparateP ? align128(sizeof(In) * BR * ld_p) : 0);
  static constexpr size_t bytes = rows + align128(sizeof(float) * 3 * BR);
  static_assert(bytes <= kMaxSmem, "backward tile does not fit in shared memory");
  static_assert(BC % 16 == 0 && BR % 16 == 0, "backward tile shape");
};

template <MathMode MODE, int DP, int BR, int BC>
__global__ void __launch_bounds__(kThreads)
    flash_backward_kernel(const FlashAttentionArgs a, const float* __restrict__ stats, const FlashTensor dout,
                          const float* __restrict__ rowsum, float* __restrict__ dq, float* __restrict__ dk,
                          float* __restrict__ dv) {
  using Lay = BwdLayout<MODE, DP, BR, BC>;
  using In = typename Lay::In;
  extern __shared__ __align__(128) unsigned char smem[];
  In* Ks = reinterpret_cast<In*>(smem + Lay::k);
  In* Vs = reinterpret_cast<In*>(smem + Lay::v);
  float* dKs = reinterpret_cast<float*>(smem + Lay::dk);
  float* dVs = reinterpret_cast<float*>(smem + Lay::dv);
  In* Qs = reinterpret_cast<In*>(smem + Lay::q);
  In* dOs = reinterpret_cast<In*>(smem + Lay::dout);
  float* dQs = reinterpret_cast<float*>(smem + Lay::dq);
  float* Ss = reinterpret_cast<float*>(smem + Lay::s);   // S, then P
  float* dPs = reinterpret_cast<float*>(smem + Lay::dp);  // dP, then dS
  In* Pop = Lay::kSeparateP ? reinterpret_cast<In*>(smem + Lay::pb) : reinterpret_cast<In*>(Ss);
  In* dSop = Lay::kSeparateP ? reinterpret_cast<In*>(smem + Lay::dsb) : reinterpret_cast<In*>(dPs);
  float* row_M = reinterpret_cast<float*>(smem + Lay::rows);  // the forward's shift of each row
  float* row_S = row_M + BR;                                   // and its sum of exponentials
  float* row_D = row_S + BR;

  const int64_t nkt = (a.Tk + BC - 1) / BC;
  const int64_t bh = blockIdx.x / nkt, k0 = (blockIdx.x % nkt) * BC;
  const HeadOperands in = head_operands(a, bh, dout);
  const float *qp = in.q, *kp = in.k, *vp = in.v, *gp = in.dout, *mp = in.mask;
  const HeadRows rows = head_rows(a, bh, stats, rowsum, dq);
  const float *Mp = rows.m, *Sp = rows.l, *Dp = rows.d;
  float* dqp = rows.dq;

  load_tile<BC, DP>(Ks, Lay::ld_d, kp, a.k.stride[2], a.k.stride[3], k0, a.Tk, a.D);
  load_tile<BC, DP>(Vs, Lay::ld_d, vp, a.v.stride[2], a.v.stride[3], k0, a.Tk, a.Dv);
  for (int idx = threadIdx.x; idx < BC * DP; idx += kThreads) {
    const int r = idx / DP, c = idx % DP;
    dKs[r * Lay::ld_f + c] = 0.f;
    dVs[r * Lay::ld_f + c] = 0.f;
  }

  // Causal: queries i < k0 see none of this tile's keys.
  const int64_t qstart = a.causal ? (k0 / BR) * BR : 0;
  for (int64_t q0 = qstart; q0 < a.Tq; q0 += BR) {
    load_tile<BR, DP>(Qs, Lay::ld_d, qp, a.q.stride[2], a.q.stride[3], q0, a.Tq, a.D);
    load_tile<BR, DP>(dOs, Lay::ld_d, gp, dout.stride[2], dout.stride[3], q0, a.Tq, a.Dv);
    for (int r = threadIdx.x; r < BR; r += kThreads) {
      const int64_t i = q0 + r;
      row_M[r] = i < a.Tq ? Mp[i] : 0.f;
      row_S[r] = i < a.Tq ? Sp[i] : 1.f;
      row_D[r] = i < a.Tq ? Dp[i] : 0.f;
    }
    __syncthreads();
    tile_mma<MODE, BR, BC, DP, false, true, false>(Ss, Lay::ld_s, Qs, Lay::ld_d, Ks, Lay::ld_d);    // Q K^T
    tile_mma<MODE, BR, BC, DP, false, true, false>(dPs, Lay::ld_s, dOs, Lay::ld_d, Vs, Lay::ld_d);  // dO V^T
    __syncthreads();
    for (int idx = threadIdx.x; idx < BR * BC; idx += kThreads) {
      const int r = idx / BC, c = idx % BC;
      const int64_t i = q0 + r, j = k0 + c;
      float p = 0.f, ds = 0.f;
      if (i < a.Tq && j < a.Tk && !(a.causal && j > i)) {
        float s = Ss[r * Lay::ld_s + c] * a.scale;
        if (mp != nullptr) s += mp[i * a.mask.stride[2] + j * a.mask.stride[3]];
        p = expf(s - row_M[r]) / row_S[r];
        ds = p * (dPs[r * Lay::ld_s + c] - row_D[r]);
      }
      Ss[r * Lay::ld_s + c] = p;
      dPs[r * Lay::ld_s + c] = ds;
      if constexpr (Lay::kSeparateP) {
        Pop[r * Lay::ld_p + c] = to_in<In>(p);
        dSop[r * Lay::ld_p + c] = to_in<In>(ds);
      }
    }
    __syncthreads();
    tile_mma<MODE, BC, DP, BR, true, false, true>(dVs, Lay::ld_f, Pop, Lay::ld_p, dOs, Lay::ld_d);   // += P^T dO
    tile_mma<MODE, BC, DP, BR, true, false, true>(dKs, Lay::ld_f, dSop, Lay::ld_p, Qs, Lay::ld_d);  // += dS^T Q
    tile_mma<MODE, BR, DP, BC, false, false, false>(dQs, Lay::ld_f, dSop, Lay::ld_p, Ks, Lay::ld_d);  // dS K
    __syncthreads();
    for (int idx = threadIdx.x; idx < BR * DP; idx += kThreads) {
      const int r = idx / DP, c = idx % DP;
      const int64_t i = q0 + r;
      if (i < a.Tq && c < a.D) atomicAdd(dqp + i * a.D + c, dQs[r * Lay::ld_f + c] * a.scale);
    }
    __syncthreads();  // before the next query tile overwrites Q, dO, S and dP
  }

  for (int idx = threadIdx.x; idx < BC * DP; idx += kThreads) {
    const int r = idx / DP, c = idx % DP;
    const int64_t j = k0 + r;
    if (j >= a.Tk) continue;
    if (c < a.D) dk[(bh * a.Tk + j) * a.D + c] = dKs[r * Lay::ld_f + c] * a.scale;
    if (c < a.Dv) dv[(bh * a.Tk + j) * a.Dv + c] = dVs[r * Lay::ld_f + c];
  }
}

// ---- the tensor-core backward with its accumulators in registers (mma.sync), D <= 128 ----
//
// FlashAttention-2's backward, warp by warp: a block owns BC = 64 keys, each warp 16 of them,
// and keeps their dK and dV (16 x DP each) in registers for the whole walk over the query tiles
// (BR = 32 queries a step, Q and dO double-buffered by cp.async). Per step a warp computes the
// transposed scores of its keys, S^T = K Q^T and dP^T = V dO^T (16 x BR, registers), then
//   P^T = exp(scale S^T + mask^T - m) / l,  dS^T = P^T (dP^T - D)   (m, l, D: per query)
//   dV += P^T dO,  dK += dS^T Q                                       (A operands from registers)
// and leaves dS^T in shared memory, from which every warp then takes a 16-query x DP / 2 block
// of dQ = dS K (over all 64 keys) and adds it to dQ with atomics. At D = 256 dK and dV alone
// would take 256 registers a lane: that bucket keeps the shared-memory kernel.
// Paddings: the S^T and dP^T products read K, V as A and Q, dO as n-major B, conflict-free by the
// forward's rule; their k-major reads (dV, dK, dQ) may meet 2-way conflicts. dS^T's rows are
// padded so that dQ's column-major A loads are conflict-free.
template <MathMode MODE, int DP>
struct RegBwdLayout {
  static constexpr int BC = kWarps * 16, BR = 32;
  static constexpr int ld_d = DP + 8;   // K, V, Q, dO rows
  static constexpr int ld_ds = BR + 4;  // dS^T rows
  static constexpr size_t k = 0;
  static constexpr size_t v = k + align128(sizeof(float) * BC * ld_d);
  static constexpr size_t q_stage = align128(sizeof(float) * BR * ld_d);
  static constexpr size_t q = v + align128(sizeof(float) * BC * ld_d);
  static constexpr size_t dout = q + 2 * q_stage;
  static constexpr size_t ds = dout + 2 * q_stage;
  static constexpr size_t bytes = ds + align128(sizeof(float) * BC * ld_ds);
  static_assert(bytes <= kMaxSmem, "register backward tile does not fit in shared memory");
  static_assert(DP <= 128 && DP % 16 == 0, "register backward head dims");
};

template <MathMode MODE, int DP, bool VEC>
__global__ void __launch_bounds__(kThreads, 1)
    flash_backward_mma_kernel(const FlashAttentionArgs a, const float* __restrict__ stats, const FlashTensor dout,
                              const float* __restrict__ rowsum, float* __restrict__ dq, float* __restrict__ dk,
                              float* __restrict__ dv) {
  using Lay = RegBwdLayout<MODE, DP>;
  constexpr int BC = Lay::BC, BR = Lay::BR, KS = mma::kStep<MODE>, NQ = BR / 8, OT = DP / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  float* Ks = reinterpret_cast<float*>(smem + Lay::k);
  float* Vs = reinterpret_cast<float*>(smem + Lay::v);
  float* dSs = reinterpret_cast<float*>(smem + Lay::ds);
  auto q_tile = [&](int stage) { return reinterpret_cast<float*>(smem + Lay::q + stage * Lay::q_stage); };
  auto do_tile = [&](int stage) { return reinterpret_cast<float*>(smem + Lay::dout + stage * Lay::q_stage); };

  const int64_t nkt = (a.Tk + BC - 1) / BC;
  const int64_t bh = blockIdx.x / nkt, k0 = (blockIdx.x % nkt) * BC;
  const HeadOperands in = head_operands(a, bh, dout);
  const float *qp = in.q, *kp = in.k, *vp = in.v, *gp = in.dout, *mp = in.mask;
  const HeadRows rows = head_rows(a, bh, stats, rowsum, dq);
  const float *Mp = rows.m, *Lp = rows.l, *Dp = rows.d;
  float* dqp = rows.dq;
  auto stage_q = [&](int64_t q0, int stage) {
    stage_rows<BR, DP, VEC>(q_tile(stage), Lay::ld_d, qp, a.q.stride[2], a.q.stride[3], q0, a.Tq, a.D);
    stage_rows<BR, DP, VEC>(do_tile(stage), Lay::ld_d, gp, dout.stride[2], dout.stride[3], q0, a.Tq, a.Dv);
  };

  // Causal: queries i < k0 see none of this tile's keys.
  const int64_t qstart = a.causal ? (k0 / BR) * BR : 0;
  const int64_t nsteps = qstart < a.Tq ? (a.Tq - qstart + BR - 1) / BR : 0;
  stage_rows<BC, DP, VEC>(Ks, Lay::ld_d, kp, a.k.stride[2], a.k.stride[3], k0, a.Tk, a.D);
  stage_rows<BC, DP, VEC>(Vs, Lay::ld_d, vp, a.v.stride[2], a.v.stride[3], k0, a.Tk, a.Dv);
  if (nsteps > 0) stage_q(qstart, 0);
  cp_async_commit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int r0 = warp * 16;                                 // the warp's first key in the block's tile
  const int64_t key[2] = {k0 + r0 + g, k0 + r0 + g + 8};   // this lane's keys (h = 0, 1)
  float dk_acc[OT][4], dv_acc[OT][4];
#pragma unroll
  for (int ot = 0; ot < OT; ++ot)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[ot][e] = dv_acc[ot][e] = 0.f;

  for (int64_t step = 0; step < nsteps; ++step) {
    const int stage = static_cast<int>(step & 1);
    const int64_t q0 = qstart + step * BR;
    if (step + 1 < nsteps) stage_q(q0 + BR, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const float* Qs = q_tile(stage);
    const float* dOs = do_tile(stage);

    float st[NQ][4], dpt[NQ][4];  // S^T and dP^T of the warp's 16 keys x BR queries
#pragma unroll
    for (int n = 0; n < NQ; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP; kk += KS) {
      uint32_t ak[4], av[4];
      mma::load_a<MODE>(ak, Ks + r0 * Lay::ld_d + kk, Lay::ld_d, g, t);
      mma::load_a<MODE>(av, Vs + r0 * Lay::ld_d + kk, Lay::ld_d, g, t);
#pragma unroll
      for (int n = 0; n < NQ; ++n) {
        uint32_t bq[2], bo[2];
        mma::load_b_n_major<MODE>(bq, Qs + n * 8 * Lay::ld_d + kk, Lay::ld_d, g, t);
        mma::load_b_n_major<MODE>(bo, dOs + n * 8 * Lay::ld_d + kk, Lay::ld_d, g, t);
        mma::mma<MODE>(st[n], ak, bq);
        mma::mma<MODE>(dpt[n], av, bo);
      }
    }
    // P^T and dS^T in place of S^T and dP^T; dS^T also to shared memory for dQ.
#pragma unroll
    for (int n = 0; n < NQ; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int ql = n * 8 + 2 * t + e;
        const int64_t i = q0 + ql;
        const bool row_ok = i < a.Tq;
        const float m = row_ok ? Mp[i] : 0.f, l = row_ok ? Lp[i] : 1.f, dd = row_ok ? Dp[i] : 0.f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t j = key[h];
          float p = 0.f, ds = 0.f;
          if (row_ok && j < a.Tk && !(a.causal && j > i)) {
            float sv = st[n][2 * h + e] * a.scale;
            if (mp != nullptr) sv += mp[i * a.mask.stride[2] + j * a.mask.stride[3]];
            p = expf(sv - m) / l;
            ds = p * (dpt[n][2 * h + e] - dd);
          }
          st[n][2 * h + e] = p;
          dpt[n][2 * h + e] = ds;
          dSs[(r0 + g + 8 * h) * Lay::ld_ds + ql] = ds;
        }
      }
#pragma unroll
    for (int ks = 0; ks < BR / KS; ++ks) {  // dV += P^T dO, dK += dS^T Q
      uint32_t ap[4], ads[4];
      mma::accumulators_as_a<MODE, NQ>(ap, st, ks);
      mma::accumulators_as_a<MODE, NQ>(ads, dpt, ks);
#pragma unroll
      for (int ot = 0; ot < OT; ++ot) {
        uint32_t bo[2], bq[2];
        mma::load_b_k_major<MODE>(bo, dOs + ks * KS * Lay::ld_d + ot * 8, Lay::ld_d, g, t);
        mma::load_b_k_major<MODE>(bq, Qs + ks * KS * Lay::ld_d + ot * 8, Lay::ld_d, g, t);
        mma::mma<MODE>(dv_acc[ot], ap, bo);
        mma::mma<MODE>(dk_acc[ot], ads, bq);
      }
    }
    __syncthreads();  // dS^T is complete

    // dQ: warp w takes queries 16 (w % 2) .. + 16 and columns (w / 2) DP / 2 .. + DP / 2.
    {
      constexpr int HT = OT / 2;  // n-tiles in half the columns
      const int qr = 16 * (warp % 2), c0 = (warp / 2) * (DP / 2);
      float dq_acc[HT][4];
#pragma unroll
      for (int n = 0; n < HT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq_acc[n][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BC; kk += KS) {
        uint32_t ads[4];
        mma::load_a_k_major<MODE>(ads, dSs + kk * Lay::ld_ds + qr, Lay::ld_ds, g, t);
#pragma unroll
        for (int n = 0; n < HT; ++n) {
          uint32_t bk[2];
          mma::load_b_k_major<MODE>(bk, Ks + kk * Lay::ld_d + c0 + n * 8, Lay::ld_d, g, t);
          mma::mma<MODE>(dq_acc[n], ads, bk);
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = q0 + qr + g + 8 * h;
        if (i >= a.Tq) continue;
#pragma unroll
        for (int n = 0; n < HT; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int c = c0 + n * 8 + 2 * t + e;
            if (c < a.D) atomicAdd(dqp + i * a.D + c, dq_acc[n][2 * h + e] * a.scale);
          }
      }
    }
    __syncthreads();  // before the next step overwrites dS^T and this stage
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t j = key[h];
    if (j >= a.Tk) continue;
#pragma unroll
    for (int ot = 0; ot < OT; ++ot)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = ot * 8 + 2 * t + e;
        if (c < a.D) dk[(bh * a.Tk + j) * a.D + c] = dk_acc[ot][2 * h + e] * a.scale;
        if (c < a.Dv) dv[(bh * a.Tk + j) * a.Dv + c] = dv_acc[ot][2 * h + e];
      }
  }
}

int bucket(int64_t d) { return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 256; }

unsigned grid_size(int64_t blocks, const char* what) {
  EMBER_CHECK(blocks < (int64_t{1} << 31), what, ": ", blocks, " thread blocks are more than one launch takes");
  return static_cast<unsigned>(blocks);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* what) {
  if (bytes > 48 * 1024)
    check_cuda(static_cast<int>(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(bytes))),
               "cudaFuncSetAttribute", what);
}

template <MathMode MODE, int DP>
void forward_for(const FlashAttentionArgs& a, float* o, float* stats, cudaStream_t st) {
  constexpr int BR = FwdTiles<DP>::BR, BC = FwdTiles<DP>::BC;
  constexpr size_t bytes = FwdLayout<MODE, DP, BR, BC>::bytes;
  auto kernel = flash_forward_kernel<MODE, DP, BR, BC>;
  allow_smem(kernel, bytes, "flash_attention_forward");
  const unsigned blocks = grid_size((a.Tq + BR - 1) / BR * a.B1 * a.B2, "flash_attention_forward");
  kernel<<<blocks, kThreads, bytes, st>>>(a, o, stats);
  EMBER_CUDA_LAUNCHED("flash_attention_forward");
}

template <MathMode MODE, int DP>
void backward_for(const FlashAttentionArgs& a, const float* stats, const FlashTensor& dout, const float* rowsum,
                  float* dq, float* dk, float* dv, cudaStream_t st) {
  constexpr int BR = BwdTiles<DP>::BR, BC = BwdTiles<DP>::BC;
  constexpr size_t bytes = BwdLayout<MODE, DP, BR, BC>::bytes;
  auto kernel = flash_backward_kernel<MODE, DP, BR, BC>;
  allow_smem(kernel, bytes, "flash_attention_backward");
  const unsigned blocks = grid_size((a.Tk + BC - 1) / BC * a.B1 * a.B2, "flash_attention_backward");
  kernel<<<blocks, kThreads, bytes, st>>>(a, stats, dout, rowsum, dq, dk, dv);
  EMBER_CUDA_LAUNCHED("flash_attention_backward");
}

// Whether a [B1, B2, T, X] operand's rows can be staged by 16-byte copies: contiguous rows, each
// starting 16-byte aligned, X a multiple of 4.
bool rows_take_16_byte_copies(const FlashTensor& t, int64_t X) {
  return t.stride[3] == 1 && X % 4 == 0 && t.stride[0] % 4 == 0 && t.stride[1] % 4 == 0 && t.stride[2] % 4 == 0 &&
         reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
}

// Whether the register kernels may stage every operand they read (q, k, v, and dO when given)
// by 16-byte copies.
bool stage_by_16_bytes(const FlashAttentionArgs& a, const FlashTensor* dout = nullptr) {
  return rows_take_16_byte_copies(a.q, a.D) && rows_take_16_byte_copies(a.k, a.D) &&
         rows_take_16_byte_copies(a.v, a.Dv) && (dout == nullptr || rows_take_16_byte_copies(*dout, a.Dv));
}

template <MathMode MODE, int DP, bool VEC>
void forward_mma_launch(const FlashAttentionArgs& a, float* o, float* stats, cudaStream_t st) {
  constexpr int BC = kRegFwdKeys<DP>;
  using Lay = RegFwdLayout<MODE, DP, BC>;
  auto kernel = flash_forward_mma_kernel<MODE, DP, BC, VEC>;
  allow_smem(kernel, Lay::bytes, "flash_attention_forward");
  const unsigned blocks = grid_size((a.Tq + Lay::BR - 1) / Lay::BR * a.B1 * a.B2, "flash_attention_forward");
  kernel<<<blocks, kThreads, Lay::bytes, st>>>(a, o, stats);
  EMBER_CUDA_LAUNCHED("flash_attention_forward (register accumulators)");
}

template <MathMode MODE, int DP>
void forward_for_mode_and_dim(const FlashAttentionArgs& a, float* o, float* stats, cudaStream_t st) {
  if constexpr (MODE != MathMode::exact) {
    if (!a.shared_accumulators) {
      return stage_by_16_bytes(a) ? forward_mma_launch<MODE, DP, true>(a, o, stats, st)
                                  : forward_mma_launch<MODE, DP, false>(a, o, stats, st);
    }
  }
  forward_for<MODE, DP>(a, o, stats, st);
}

template <MathMode MODE>
void forward_mode(const FlashAttentionArgs& a, float* o, float* stats, cudaStream_t st) {
  switch (bucket(a.D > a.Dv ? a.D : a.Dv)) {
    case 32: return forward_for_mode_and_dim<MODE, 32>(a, o, stats, st);
    case 64: return forward_for_mode_and_dim<MODE, 64>(a, o, stats, st);
    case 128: return forward_for_mode_and_dim<MODE, 128>(a, o, stats, st);
    default: return forward_for_mode_and_dim<MODE, 256>(a, o, stats, st);
  }
}

template <MathMode MODE, int DP, bool VEC>
void backward_mma_launch(const FlashAttentionArgs& a, const float* stats, const FlashTensor& dout,
                         const float* rowsum, float* dq, float* dk, float* dv, cudaStream_t st) {
  using Lay = RegBwdLayout<MODE, DP>;
  auto kernel = flash_backward_mma_kernel<MODE, DP, VEC>;
  allow_smem(kernel, Lay::bytes, "flash_attention_backward");
  const unsigned blocks = grid_size((a.Tk + Lay::BC - 1) / Lay::BC * a.B1 * a.B2, "flash_attention_backward");
  kernel<<<blocks, kThreads, Lay::bytes, st>>>(a, stats, dout, rowsum, dq, dk, dv);
  EMBER_CUDA_LAUNCHED("flash_attention_backward (register accumulators)");
}

template <MathMode MODE, int DP>
void backward_for_mode_and_dim(const FlashAttentionArgs& a, const float* stats, const FlashTensor& dout,
                               const float* rowsum, float* dq, float* dk, float* dv, cudaStream_t st) {
  if constexpr (MODE != MathMode::exact && DP <= 128) {
    if (!a.shared_accumulators) {
      return stage_by_16_bytes(a, &dout)
                 ? backward_mma_launch<MODE, DP, true>(a, stats, dout, rowsum, dq, dk, dv, st)
                 : backward_mma_launch<MODE, DP, false>(a, stats, dout, rowsum, dq, dk, dv, st);
    }
  }
  backward_for<MODE, DP>(a, stats, dout, rowsum, dq, dk, dv, st);
}

template <MathMode MODE>
void backward_mode(const FlashAttentionArgs& a, const float* stats, const FlashTensor& dout, const float* rowsum,
                   float* dq, float* dk, float* dv, cudaStream_t st) {
  switch (bucket(a.D > a.Dv ? a.D : a.Dv)) {
    case 32: return backward_for_mode_and_dim<MODE, 32>(a, stats, dout, rowsum, dq, dk, dv, st);
    case 64: return backward_for_mode_and_dim<MODE, 64>(a, stats, dout, rowsum, dq, dk, dv, st);
    case 128: return backward_for_mode_and_dim<MODE, 128>(a, stats, dout, rowsum, dq, dk, dv, st);
    default: return backward_for_mode_and_dim<MODE, 256>(a, stats, dout, rowsum, dq, dk, dv, st);
  }
}

void check_args(const FlashAttentionArgs& a, const char* what) {
  EMBER_CHECK(flash_attention_supported(a.D, a.Dv), what, ": head dims D = ", a.D, ", Dv = ", a.Dv,
              " are outside 1..256");
  EMBER_CHECK(a.q.data && a.k.data && a.v.data, what, ": q, k and v must be given");
}

}  // namespace

bool flash_attention_supported(int64_t D, int64_t Dv) { return D >= 1 && D <= 256 && Dv >= 1 && Dv <= 256; }

void flash_attention_forward(const FlashAttentionArgs& a, float* o, float* stats, MathMode mode, void* stream) {
  check_args(a, "flash_attention_forward");
  if (a.B1 * a.B2 == 0 || a.Tq == 0) return;
  EMBER_CHECK(a.Tk > 0, "flash_attention_forward: no keys (Tk = 0)");
  auto st = static_cast<cudaStream_t>(stream);
  switch (mode) {
    case MathMode::exact: return forward_mode<MathMode::exact>(a, o, stats, st);
    case MathMode::tf32: return forward_mode<MathMode::tf32>(a, o, stats, st);
    case MathMode::bf16: return forward_mode<MathMode::bf16>(a, o, stats, st);
  }
}

void flash_attention_backward(const FlashAttentionArgs& a, const float* o, const float* stats, const FlashTensor& do_,
                              float* dq, float* dk, float* dv, float* rowsum, MathMode mode, void* stream) {
  check_args(a, "flash_attention_backward");
  EMBER_CHECK(do_.data, "flash_attention_backward: the output gradient must be given");
  const int64_t BH = a.B1 * a.B2;
  if (BH == 0 || a.Tk == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  check_cuda(static_cast<int>(cudaMemsetAsync(dq, 0, sizeof(float) * BH * a.Tq * a.D, st)), "cudaMemsetAsync",
             "flash_attention_backward");
  if (a.Tq == 0) {  // no queries: dk = dv = 0
    check_cuda(static_cast<int>(cudaMemsetAsync(dk, 0, sizeof(float) * BH * a.Tk * a.D, st)), "cudaMemsetAsync",
               "flash_attention_backward");
    check_cuda(static_cast<int>(cudaMemsetAsync(dv, 0, sizeof(float) * BH * a.Tk * a.Dv, st)), "cudaMemsetAsync",
               "flash_attention_backward");
    return;
  }
  const int64_t rows = BH * a.Tq;
  flash_rowsum_kernel<<<grid_size((rows + kWarps - 1) / kWarps, "flash_attention_backward"), kThreads, 0, st>>>(
      o, do_, rowsum, a.B2, a.Tq, a.Dv, rows);
  EMBER_CUDA_LAUNCHED("flash_attention_backward (rowsum)");
  switch (mode) {
    case MathMode::exact: return backward_mode<MathMode::exact>(a, stats, do_, rowsum, dq, dk, dv, st);
    case MathMode::tf32: return backward_mode<MathMode::tf32>(a, stats, do_, rowsum, dq, dk, dv, st);
    case MathMode::bf16: return backward_mode<MathMode::bf16>(a, stats, do_, rowsum, dq, dk, dv, st);
  }
}

}  // namespace ember::kernels::cuda
