// CPU GEMM driver: C = alpha * op(A) * op(B) + beta * C, row-major, f32 and f64.
//
// Blocking (Goto / BLIS): for each NC-wide column panel of C, for each KC-deep slice of K, B's
// KC x NC block is packed into NR-wide panels (k-major, zero-padded); for each MC-tall block of
// A, A is packed into MR-tall panels; then the micro-kernel (gemm_ukernel.h) sweeps MR x NR
// tiles, jr outer / ir inner, so that one KC x NR panel of B stays in L1 while MR x KC panels
// of A stream from L2 (f32 AVX2: 16 KiB and 144 KiB). The first KC slice applies beta, the
// later ones add. Panels are spaced one cache line apart (panel_stride) so that a pack which
// writes one source row into every panel does not hit a single cache set.
//
// Small products skip the packing that does not pay: A is read in place (the micro-kernel takes
// any row/column stride) unless its block serves several B panels, and B is read in place when
// it is stored K x N and only one row of tiles uses it. Products with M or N of 1 to 4 (output
// layers of width 1, their gradients, a batch of one) go to dot-product / row-axpy kernels
// instead of tiles that would mostly compute padding.
//
// Threads: C is cut into a tm x tn grid of blocks (tm * tn <= threads, aligned to MR / NR,
// the grid chosen for balance, then for squarer blocks), one parallel_for chunk a block, each
// with its own pack buffers (thread_local, 64-byte aligned, grown on demand). Products with too
// few FLOPs for the threads to pay run on the calling thread. Every element is computed by one
// thread in a fixed order, so results do not depend on the thread count.
//
// What bounds it: FMA throughput of the micro-kernel for large products (packing is O(MK + KN)
// copies against O(MNK) FMAs); memory traffic and call overhead for small and thin ones.
#include "ember/kernels/cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include "ember/kernels/cpu/gemm_ukernel.h"
#include "ember/kernels/cpu/parallel.h"

namespace ember::kernels::cpu {
namespace gemm_detail {
namespace {

// ---- portable micro-kernel ---------------------------------------------------------------
// Plain C++; the compiler vectorizes the j loop for the baseline ISA (SSE2 on x86-64). The tile
// is small enough (4 x 8 f32, 4 x 4 f64) to stay in the 16 registers of SSE2.

template <typename T, int MR, int NR>
void ukernel_portable(int64_t k, const T* a, int64_t rs_a, int64_t cs_a, const T* b, int64_t rs_b, T* c,
                      int64_t ldc, int m, int n, T alpha, T beta) {
  T acc[MR][NR] = {};
  const T* ar[MR];
  for (int i = 0; i < MR; ++i) ar[i] = a + std::min(i, m - 1) * rs_a;
  for (int64_t p = 0; p < k; ++p) {
    const T* bp = b + p * rs_b;
    for (int i = 0; i < MR; ++i) {
      const T av = ar[i][p * cs_a];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * bp[j];
    }
  }
  for (int i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    if (beta == T(0)) {
      for (int j = 0; j < n; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < n; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

// ---- packing -----------------------------------------------------------------------------
// Panels are [p][R] (R = MR for A, NR for B), zero-padded to R. The copy-style cases (A stored
// transposed, B stored as is) walk the source row by row so that reads stream; the transposing
// cases (R source rows, each contiguous in p) go through a PackRows routine, which an ISA can
// replace with an in-register transpose.

template <typename T>
using PackRows = void (*)(T* dst, const T* src, int64_t ld, int64_t k);  // dst[p*R + i] = src[i*ld + p]

template <typename T, int R>
void pack_rows(T* dst, const T* src, int64_t ld, int64_t k) {
  const T* rows[R];
  for (int i = 0; i < R; ++i) rows[i] = src + i * ld;
  for (int64_t p = 0; p < k; ++p)
    for (int i = 0; i < R; ++i) dst[p * R + i] = rows[i][p];
}

// Distance between consecutive panels of k steps: one cache line more than the panel itself,
// so that the panels do not all start in the same cache set (a copying pack writes one row
// into every panel; with power-of-two spacing those writes would all fight for one L1/L2 set).
template <typename T>
constexpr int64_t panel_stride(int64_t k, int R) {
  return k * R + 64 / static_cast<int64_t>(sizeof(T));
}

// Packs `len` rows of a matrix whose rows are contiguous in p (src row i at src + i*ld) into
// R-row panels of k steps: panel r holds row r*R + i at [p * R + i].
template <typename T, int R>
void pack_transposing(T* dst, const T* src, int64_t ld, int64_t len, int64_t k, PackRows<T> rows_fn) {
  const int64_t stride = panel_stride<T>(k, R);
  for (int64_t r = 0; r < len; r += R, dst += stride) {
    const int n = static_cast<int>(std::min<int64_t>(R, len - r));
    if (n == R) {
      rows_fn(dst, src + r * ld, ld, k);
      continue;
    }
    for (int64_t p = 0; p < k; ++p)
      for (int i = 0; i < R; ++i) dst[p * R + i] = i < n ? src[(r + i) * ld + p] : T(0);
  }
}

// Packs k source rows, each holding `len` contiguous elements (row p at src + p*ld), into R-wide
// panels: panel r holds element (p, r*R + i) at [p * R + i]. Reads stream row by row.
template <typename T, int R>
void pack_copying(T* dst, const T* src, int64_t ld, int64_t len, int64_t k) {
  const int64_t stride = panel_stride<T>(k, R);
  const int64_t full = len / R * R;
  for (int64_t p = 0; p < k; ++p) {
    const T* row = src + p * ld;
    T* d = dst + p * R;
    for (int64_t r = 0; r < full; r += R, d += stride) std::memcpy(d, row + r, R * sizeof(T));  // vector moves
    if (full < len)
      for (int i = 0; i < R; ++i) d[i] = full + i < len ? row[full + i] : T(0);
  }
}

// op(A)[0:mc, 0:kc] (a points at its first element) into MR-row panels.
template <typename T, int MR>
void pack_a(T* dst, const T* a, int64_t lda, bool trans, int64_t mc, int64_t kc, PackRows<T> rows_fn) {
  if (trans) {
    pack_copying<T, MR>(dst, a, lda, mc, kc);
  } else {
    pack_transposing<T, MR>(dst, a, lda, mc, kc, rows_fn);
  }
}

// op(B)[0:kc, 0:nc] (b points at its first element) into NR-column panels.
template <typename T, int NR>
void pack_b(T* dst, const T* b, int64_t ldb, bool trans, int64_t kc, int64_t nc, PackRows<T> rows_fn) {
  if (trans) {
    pack_transposing<T, NR>(dst, b, ldb, nc, kc, rows_fn);
  } else {
    pack_copying<T, NR>(dst, b, ldb, nc, kc);
  }
}

// ---- scratch -----------------------------------------------------------------------------

// One growing 64-byte-aligned buffer per (thread, slot); freed when the thread exits.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }
  void release() {
    if (p) ::operator delete(p, std::align_val_t{64});
    p = nullptr;
    bytes = 0;
  }
  void* get(size_t want) {
    if (want > bytes) {
      release();
      want = (want + 4095) & ~size_t{4095};
      p = ::operator new(want, std::align_val_t{64});
      bytes = want;
    }
    return p;
  }
};

enum Slot { kSlotA = 0, kSlotB = 1, kSlotEdge = 2 };

template <typename T>
T* scratch(Slot slot, int64_t elems) {
  thread_local Scratch bufs[3];
  return static_cast<T*>(bufs[slot].get(static_cast<size_t>(elems) * sizeof(T)));
}

// ---- the blocked product -----------------------------------------------------------------

template <typename T>
struct Problem {
  bool trans_a, trans_b;
  int64_t M, N, K;
  T alpha;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  T beta;
  T* C;
  int64_t ldc;
  const T* bias = nullptr;  // when set: C = alpha op(A) op(B) + bias (one row, N long), beta unused
};

struct Blocking {
  int64_t mc, kc, nc;
};

template <typename T>
struct Packers {
  PackRows<T> a_rows;  // MR rows
  PackRows<T> b_rows;  // NR rows
};

// op(A)(i, p) and op(B)(p, j) addresses, and their strides along the two indices.
template <typename T>
inline const T* a_at(const Problem<T>& P, int64_t i, int64_t p) {
  return P.trans_a ? P.A + p * P.lda + i : P.A + i * P.lda + p;
}
template <typename T>
inline const T* b_at(const Problem<T>& P, int64_t p, int64_t j) {
  return P.trans_b ? P.B + j * P.ldb + p : P.B + p * P.ldb + j;
}

// C[m0:m1, n0:n1] of problem P on the calling thread.
template <typename T, int MR, int NR>
void gemm_block(const Problem<T>& P, UKernel<T> ukr, const Blocking& bk, const Packers<T>& pk, int64_t m0,
                int64_t m1, int64_t n0, int64_t n1) {
  const int64_t M = m1 - m0, N = n1 - n0, K = P.K;
  // Pack A when its block is reused across several B strips. Pack B when it is transposed or
  // when a strip serves more than one MR-row tile: a strip read in place has row stride ldb,
  // which for power-of-two widths maps all its rows to a few cache sets, so it would not stay
  // in L1 from one tile to the next.
  const bool pack_a_blocks = N > 4 * NR && M > MR;
  const bool pack_b_blocks = P.trans_b || (M > MR && N > NR);
  const int64_t KC = std::min(bk.kc, K);
  const int64_t MC = std::min(bk.mc, (M + MR - 1) / MR * MR);
  const int64_t NC = std::min(bk.nc, (N + NR - 1) / NR * NR);

  T* bp = pack_b_blocks ? scratch<T>(kSlotB, NC / NR * panel_stride<T>(KC, NR)) : nullptr;
  T* ap = pack_a_blocks ? scratch<T>(kSlotA, MC / MR * panel_stride<T>(KC, MR)) : nullptr;
  T* edge = pack_b_blocks ? nullptr : scratch<T>(kSlotEdge, panel_stride<T>(KC, NR));

  const int64_t rs_a = P.trans_a ? 1 : P.lda, cs_a = P.trans_a ? P.lda : 1;

  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const T beta = pc == 0 ? P.beta : T(1);
      const int64_t n_full = nc / NR * NR;  // in-place B: full strips; the last partial one is packed
      if (pack_b_blocks) {
        pack_b<T, NR>(bp, b_at(P, pc, n0 + jc), P.ldb, P.trans_b, kc, nc, pk.b_rows);
      } else if (n_full < nc) {
        pack_b<T, NR>(edge, b_at(P, pc, n0 + jc + n_full), P.ldb, false, kc, nc - n_full, pk.b_rows);
      }
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        if (pack_a_blocks) pack_a<T, MR>(ap, a_at(P, m0 + ic, pc), P.lda, P.trans_a, mc, kc, pk.a_rows);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int n = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const T* b;
          int64_t rs_b;
          if (pack_b_blocks) {
            b = bp + (jr / NR) * panel_stride<T>(kc, NR);
            rs_b = NR;
          } else if (jr < n_full) {
            b = b_at(P, pc, n0 + jc + jr);
            rs_b = P.ldb;
          } else {
            b = edge;
            rs_b = NR;
          }
          T* c = P.C + (m0 + ic) * P.ldc + n0 + jc + jr;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            if (pack_a_blocks) {
              ukr(kc, ap + (ir / MR) * panel_stride<T>(kc, MR), 1, MR, b, rs_b, c + ir * P.ldc, P.ldc, m, n,
                  P.alpha, beta);
            } else {
              ukr(kc, a_at(P, m0 + ic + ir, pc), rs_a, cs_a, b, rs_b, c + ir * P.ldc, P.ldc, m, n, P.alpha, beta);
            }
          }
        }
      }
    }
  }
}

// ---- thin products (GEMV-like) -----------------------------------------------------------
// When M or N is 1 or 2 (a 1-unit output layer, its weight gradient, a batch of one), a 6 x 16
// tile would mostly compute padding. Each output row (or column) is then a set of dot products
// ("dots": the long operand's rows run along K) or a sum of scaled rows ("axpys": its rows run
// along the output). What bounds it: reading the long operand once.

constexpr int kThin = 4;       // the thin path for min(M, N) <= kThin when it makes dots ...
constexpr int kThinAxpys = 2;  // ... and for min(M, N) <= kThinAxpys when it makes axpys

template <typename T>
using DotsFn = void (*)(const T* X, int64_t ldx, int64_t rows, int64_t K, const T* w, T* y, int64_t incy);
template <typename T>
using AxpysFn = void (*)(const T* X, int64_t ldx, int64_t len, int64_t K, const T* w, int64_t ldw, int nv, T* y,
                         int64_t ldy);

// y[r * incy] = sum_p X[r * ldx + p] * w[p]: 8 independent partial sums per row, summed in a
// fixed order.
template <typename T>
void dots_portable(const T* X, int64_t ldx, int64_t rows, int64_t K, const T* w, T* y, int64_t incy) {
  constexpr int L = 8;
  const int64_t kv = K / L * L;
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = X + r * ldx;
    T acc[L] = {};
    for (int64_t p = 0; p < kv; p += L)
      for (int l = 0; l < L; ++l) acc[l] += x[p + l] * w[p + l];
    for (int64_t p = kv; p < K; ++p) acc[p - kv] += x[p] * w[p];
    y[r * incy] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
}

// y[v * ldy + j] = sum_p X[p * ldx + j] * w[v * ldw + p] for v < nv <= kThinAxpys, j < len: X
// streams row by row into sums that stay in cache (nv * len elements).
template <typename T>
void axpys_portable(const T* X, int64_t ldx, int64_t len, int64_t K, const T* w, int64_t ldw, int nv, T* y,
                    int64_t ldy) {
  for (int v = 0; v < nv; ++v) std::fill(y + v * ldy, y + v * ldy + len, T(0));
  for (int64_t p = 0; p < K; ++p) {
    const T* x = X + p * ldx;
    for (int v = 0; v < nv; ++v) {
      const T coef = w[v * ldw + p];
      T* yv = y + v * ldy;
      for (int64_t j = 0; j < len; ++j) yv[j] += coef * x[j];
    }
  }
}

template <typename T>
struct ThinFns {
  DotsFn<T> dots;
  AxpysFn<T> axpys;
};

// Whether P takes the thin path.
template <typename T>
bool is_thin(const Problem<T>& P) {
  const bool thin_n = P.N <= P.M;
  const bool dots = thin_n ? !P.trans_a : P.trans_b;
  return std::min(P.M, P.N) <= (dots ? kThin : kThinAxpys);
}

// The thin path: nv = min(M, N) output rows or columns; `threads` split the long side.
template <typename T>
void gemm_thin(const Problem<T>& P, const ThinFns<T>& fn, int threads) {
  const bool thin_n = P.N <= P.M;  // nv output columns (else nv output rows)
  const int nv = static_cast<int>(thin_n ? P.N : P.M);
  const int64_t len = thin_n ? P.M : P.N, K = P.K;
  // The nv short vectors w (columns of op(B), or rows of op(A)), contiguous along K.
  const T* w;
  int64_t ldw;
  if (thin_n ? P.trans_b : !P.trans_a) {
    w = thin_n ? P.B : P.A;
    ldw = thin_n ? P.ldb : P.lda;
  } else {
    T* g = scratch<T>(kSlotEdge, nv * K);
    for (int v = 0; v < nv; ++v)
      for (int64_t p = 0; p < K; ++p) g[v * K + p] = thin_n ? P.B[p * P.ldb + v] : P.A[p * P.lda + v];
    w = g;
    ldw = K;
  }
  // The long operand X: rows along K (dots) or along the output (axpys).
  const T* X = thin_n ? P.A : P.B;
  const int64_t ldx = thin_n ? P.lda : P.ldb;
  const bool dots = thin_n ? !P.trans_a : P.trans_b;
  auto run = [&](int64_t l0, int64_t l1) {
    const int64_t n = l1 - l0;
    T* y = scratch<T>(kSlotA, nv * n);  // dots: y[l * nv + v]; axpys: y[v * n + l]
    if (dots) {
      for (int v = 0; v < nv; ++v) fn.dots(X + l0 * ldx, ldx, n, K, w + v * ldw, y + v, nv);
    } else {
      for (int v = 0; v < nv; v += kThinAxpys)
        fn.axpys(X + l0, ldx, n, K, w + v * ldw, ldw, std::min(kThinAxpys, nv - v), y + v * n, n);
    }
    for (int v = 0; v < nv; ++v) {
      for (int64_t l = 0; l < n; ++l) {
        const T val = P.alpha * (dots ? y[l * nv + v] : y[v * n + l]);
        T& c = thin_n ? P.C[(l0 + l) * P.ldc + v] : P.C[v * P.ldc + l0 + l];
        c = P.beta == T(0) ? val : val + P.beta * c;
      }
    }
  };
  const int64_t t = std::min<int64_t>(threads, std::max<int64_t>(1, len * K * nv / (int64_t{1} << 16)));
  if (t <= 1) {
    run(0, len);
  } else {
    // chunks of whole 32-element blocks, so the axpys kernels keep full-width blocks
    const int64_t grain = (len / t + 31) / 32 * 32;
    parallel_for(0, len, std::max<int64_t>(grain, 1), run);
  }
}

template <typename T>
using BlockFn = void (*)(const Problem<T>&, UKernel<T>, const Blocking&, const Packers<T>&, int64_t, int64_t,
                         int64_t, int64_t);

template <typename T>
struct Kernel {
  const char* isa;
  int mr, nr;
  Blocking blocking;
  UKernel<T> ukr;
  Packers<T> pack;
  BlockFn<T> block;
  ThinFns<T> thin;
};

// Blocking: KC x NR of B (f32: 256 x 16 x 4 B = 16 KiB) stays in a 32 KiB L1 next to the A
// strip; MC x KC of A (f32: 144 x 256 x 4 B = 144 KiB) in a 512 KiB..2 MiB L2; KC x NC of B in L3.
template <typename T, int MR, int NR>
constexpr Kernel<T> make_kernel(const char* isa, Blocking bk, UKernel<T> ukr, PackRows<T> a_rows = pack_rows<T, MR>,
                                PackRows<T> b_rows = pack_rows<T, NR>, ThinFns<T> thin = {dots_portable<T>,
                                                                                          axpys_portable<T>}) {
  return Kernel<T>{isa, MR, NR, bk, ukr, {a_rows, b_rows}, gemm_block<T, MR, NR>, thin};
}

const Kernel<float> kPortableS = make_kernel<float, 4, 8>("portable", {128, 256, 2048}, ukernel_portable<float, 4, 8>);
const Kernel<double> kPortableD =
    make_kernel<double, 4, 4>("portable", {128, 256, 2048}, ukernel_portable<double, 4, 4>);
#if EMBER_GEMM_X86
const Kernel<float> kAvx2S =
    make_kernel<float, kAvx2SMR, kAvx2SNR>("avx2", {144, 256, 4080}, sgemm_ukernel_avx2, pack_rows6_f32_avx2,
                                           pack_rows16_f32_avx2, {sgemv_dots_avx2, sgemv_axpys_avx2});
const Kernel<double> kAvx2D = make_kernel<double, kAvx2DMR, kAvx2DNR>("avx2", {72, 256, 2040}, dgemm_ukernel_avx2);
const Kernel<float> kAvx512S =
    make_kernel<float, kAvx512SMR, kAvx512SNR>("avx512", {144, 256, 4096}, sgemm_ukernel_avx512,
                                               pack_rows12_f32_avx2, pack_rows32_f32_avx2,
                                               {sgemv_dots_avx2, sgemv_axpys_avx2});  // AVX-512F hosts have AVX2
const Kernel<double> kAvx512D =
    make_kernel<double, kAvx512DMR, kAvx512DNR>("avx512", {96, 256, 2048}, dgemm_ukernel_avx512);
#endif

// ---- runtime dispatch ----------------------------------------------------------------------

enum Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

int host_isa() {
#if EMBER_GEMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kPortable;
}

int isa_from_name(const char* name) {
  if (!name) return -1;
  if (std::strcmp(name, "avx512") == 0) return kAvx512;
  if (std::strcmp(name, "avx2") == 0) return kAvx2;
  if (std::strcmp(name, "portable") == 0) return kPortable;
  return -1;
}

std::atomic<int>& selected_isa() {
  static std::atomic<int> isa{[] {
    int best = host_isa();
    int asked = isa_from_name(std::getenv("EMBER_GEMM_ISA"));
    return asked >= 0 && asked <= best ? asked : best;
  }()};
  return isa;
}

template <typename T>
const Kernel<T>& kernel();

template <>
const Kernel<float>& kernel<float>() {
#if EMBER_GEMM_X86
  switch (selected_isa().load(std::memory_order_relaxed)) {
    case kAvx512: return kAvx512S;
    case kAvx2: return kAvx2S;
    default: break;
  }
#endif
  return kPortableS;
}

template <>
const Kernel<double>& kernel<double>() {
#if EMBER_GEMM_X86
  switch (selected_isa().load(std::memory_order_relaxed)) {
    case kAvx512: return kAvx512D;
    case kAvx2: return kAvx2D;
    default: break;
  }
#endif
  return kPortableD;
}

// ---- threading ----------------------------------------------------------------------------

// Below this many multiply-adds per thread, another thread costs more than it saves.
constexpr int64_t kMinFmaPerThread = int64_t{1} << 16;

struct Grid {
  int tm = 1, tn = 1;
};

// The tm x tn split of an M x N product over at most `threads` threads.
Grid choose_grid(int64_t M, int64_t N, int64_t K, int threads, int mr, int nr) {
  Grid g;
  const int64_t mt = (M + mr - 1) / mr, nt = (N + nr - 1) / nr;  // tiles
  const int64_t fmas = M * N * K;
  int64_t t = std::min<int64_t>({threads, std::max<int64_t>(1, fmas / kMinFmaPerThread), mt * nt});
  if (t <= 1) return g;
  int64_t best_load = -1, best_perimeter = 0;
  for (int64_t tm = 1; tm <= t; ++tm) {
    const int64_t tn = t / tm;
    if (tm > mt || tn > nt) continue;
    const int64_t rows = (mt + tm - 1) / tm, cols = (nt + tn - 1) / tn;
    const int64_t load = rows * cols;                 // tiles of the busiest thread
    const int64_t perimeter = rows * mr + cols * nr;  // its A rows + B columns: smaller reuses more
    if (best_load < 0 || load < best_load || (load == best_load && perimeter < best_perimeter)) {
      best_load = load;
      best_perimeter = perimeter;
      g.tm = static_cast<int>(tm);
      g.tn = static_cast<int>(tn);
    }
  }
  return g;
}

inline int64_t split(int64_t tiles, int64_t parts, int64_t i, int64_t tile, int64_t total) {
  const int64_t base = tiles / parts, rem = tiles % parts;
  return std::min(total, (i * base + std::min(i, rem)) * tile);
}

template <typename T>
void scale_c(T* C, int64_t ldc, int64_t M, int64_t N, T beta) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

// C[m0:m1, n0:n1] = the bias row, repeated.
template <typename T>
void fill_bias_rows(const Problem<T>& P, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t i = m0; i < m1; ++i) std::copy(P.bias + n0, P.bias + n1, P.C + i * P.ldc + n0);
}

// One product on up to `threads` threads (1: the calling thread only).
template <typename T>
void gemm_run(const Problem<T>& P, int threads) {
  if (P.M <= 0 || P.N <= 0) return;
  // With a bias the product accumulates onto bias rows (beta = 1), written block by block by
  // the thread that computes the block, right before it does: one pass over C, in cache.
  Problem<T> Q = P;
  if (P.bias) {
    Q.beta = T(1);
    Q.bias = nullptr;
  }
  if (P.K <= 0 || P.alpha == T(0)) {
    if (P.bias) fill_bias_rows(P, 0, P.M, 0, P.N);
    else scale_c(P.C, P.ldc, P.M, P.N, P.beta);
    return;
  }
  const Kernel<T>& kr = kernel<T>();
  auto run_block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if (P.bias) fill_bias_rows(P, m0, m1, n0, n1);
    kr.block(Q, kr.ukr, kr.blocking, kr.pack, m0, m1, n0, n1);
  };
  if (is_thin(P)) {  // one of M, N is at most 4: the rows are short or few
    if (P.bias) fill_bias_rows(P, 0, P.M, 0, P.N);
    gemm_thin(Q, kr.thin, threads);
    return;
  }
  const Grid g = choose_grid(P.M, P.N, P.K, threads, kr.mr, kr.nr);
  if (g.tm * g.tn == 1) {
    run_block(0, P.M, 0, P.N);
    return;
  }
  const int64_t mt = (P.M + kr.mr - 1) / kr.mr, nt = (P.N + kr.nr - 1) / kr.nr;
  parallel_for(0, int64_t{g.tm} * g.tn, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t / g.tn, j = t % g.tn;
      const int64_t m0 = split(mt, g.tm, i, kr.mr, P.M), m1 = split(mt, g.tm, i + 1, kr.mr, P.M);
      const int64_t n0 = split(nt, g.tn, j, kr.nr, P.N), n1 = split(nt, g.tn, j + 1, kr.nr, P.N);
      if (m0 < m1 && n0 < n1) run_block(m0, m1, n0, n1);
    }
  });
}

inline int available_threads() { return in_parallel_region() ? 1 : num_threads(); }

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const T* bias = nullptr) {
  gemm_run(Problem<T>{ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias}, available_threads());
}

template <typename T>
void gemm_batched(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, int64_t sa, const T* B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc,
                  int64_t sc) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const int threads = available_threads();
  auto one = [&](int64_t i, int th) {
    gemm_run(Problem<T>{ta, tb, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc}, th);
  };
  const int64_t fmas = M * N * std::max<int64_t>(K, 1);
  // Large products use all threads inside each; small ones spread the batch over the threads.
  if (threads <= 1 || batch == 1 || fmas >= threads * kMinFmaPerThread * 4) {
    for (int64_t i = 0; i < batch; ++i) one(i, threads);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kMinFmaPerThread / fmas);
  parallel_for(0, batch, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) one(i, 1);
  });
}

}  // namespace
}  // namespace gemm_detail

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_detail::gemm<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
           const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_detail::gemm<double>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc) {
  gemm_detail::gemm<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc, bias);
}

void dgemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                int64_t lda, const double* B, int64_t ldb, const double* bias, double* C, int64_t ldc) {
  gemm_detail::gemm<double>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, 0.0, C, ldc, bias);
}

void sgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
  gemm_detail::gemm_batched<float>(batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta,
                                   C, ldc, stride_c);
}

void dgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                   const double* A, int64_t lda, int64_t stride_a, const double* B, int64_t ldb, int64_t stride_b,
                   double beta, double* C, int64_t ldc, int64_t stride_c) {
  gemm_detail::gemm_batched<double>(batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b,
                                    beta, C, ldc, stride_c);
}

const char* gemm_isa() {
  switch (gemm_detail::selected_isa().load(std::memory_order_relaxed)) {
    case gemm_detail::kAvx512: return "avx512";
    case gemm_detail::kAvx2: return "avx2";
    default: return "portable";
  }
}

bool set_gemm_isa(const char* isa) {
  const int want = gemm_detail::isa_from_name(isa);
  if (want < 0 || want > gemm_detail::host_isa()) return false;
  gemm_detail::selected_isa().store(want, std::memory_order_relaxed);
  return true;
}

}  // namespace ember::kernels::cpu
