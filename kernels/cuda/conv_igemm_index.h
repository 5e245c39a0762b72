// The index math of the implicit-GEMM convolution kernels (conv_igemm.cu): which element of
// which tensor each GEMM operand element is, for the three passes of a 2-D convolution. One
// header compiled by nvcc for the kernels and by the C++ compiler for a host test that
// evaluates these same functions as a plain triple loop and compares with the CPU conv
// (tests/cuda/test_cuda_conv_igemm.cpp, IgemmIndexSelfCheck), so the gathers, the padding and
// stride/dilation tests and the output addressing are checked on a machine without a GPU.
//
// Per group grp (G groups, Cig = C/G input and Cog = Cout/G output channels, taps = KH*KW,
// P = OH*OW window positions), C[m, n] = sum_k A[m, k] B[k, n]:
//   forward          y  = conv2d(x, w):  M = N*P,    N = Cog,       K = Cig*taps
//                    A[m, k] = x[img, ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] (0 outside)
//                    B[k, n] = w[co, ci, kh, kw],  C[m, n] -> y[img, co, oh, ow]
//   backward_data    gx = conv2d's adjoint in x (conv_transpose2d): M = N*H*W, N = Cig, K = Cog*taps
//                    A[m, k] = gy[img, co, oh, ow] where oh*sh = ih + ph - kh*dh (0 where that
//                              does not divide or lands outside; the same for columns)
//                    B[k, n] = w[co, ci, kh, kw],  C[m, n] -> gx[img, ci, ih, iw]
//                    split into sh*sw GEMMs by the stride phase of (ih, iw), each with only the
//                    taps that divide (see Phase below)
//   backward_weight  dw = sum over the batch:   M = Cog, N = Cig*taps, K = N*P
//                    A[m, k] = gy[img, co, oh, ow],  B[k, n] = x[img, ci, ih, iw] (gathered
//                    as in the forward),  C[m, n] -> dw[co, ci, kh, kw]
// (ci, co are within the group; the tensors' channel is grp*Cig + ci, grp*Cog + co.)
//
// Every operand element is split into a part that depends only on the row/column index of the
// output (outer(), m for A and n for B) and a part that depends only on k (inner()), combined by
// at() with two adds and unsigned bound tests: each part carries its share of the element offset
// and of the spatial row and column, so no multiply or division is left for at(). A kernel
// thread keeps the outer part of its fixed rows in registers for the whole K loop. The k part
// of the forward and backward-data passes (K = channels x taps: 1,152 for 128 channels of 3x3) is
// tabulated once per block in shared memory (k_entry: A's and B's k halves in 16 bytes), so
// that an element of the gather costs one broadcast shared load, two adds, two compares and an
// address; the weight gradient's K (the batch times the output plane) is too long for a table,
// and there a thread computes its one k's part per K-step by multiply-shift divisions (FastDiv).
// Indices within a GEMM are 32-bit (the host refuses, via fits(), shapes whose M, N or K do not
// fit); element offsets are 64-bit, except a table entry's, which fits() bounds to 32 bits.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define EMBER_IGEMM_HD __host__ __device__ __forceinline__
#else
#define EMBER_IGEMM_HD inline
#endif

namespace ember::kernels::cuda::igemm {

enum class Pass : int { forward, backward_data, backward_weight };

// n / d for 0 <= n < 2^31 and a divisor d >= 1 fixed per launch, by a multiply-high, an add and
// a shift instead of a division (Granlund and Montgomery, PLDI 1994, round-up variant): with
// l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1, n / d = (mulhi(n, m) + n) >> l.
struct FastDiv {
  uint32_t d = 1, m = 1, l = 0;
};

EMBER_IGEMM_HD FastDiv fast_div(int d) {
  FastDiv f;
  f.d = static_cast<uint32_t>(d < 1 ? 1 : d);
  f.l = 0;
  while ((uint64_t{1} << f.l) < f.d) ++f.l;
  f.m = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << f.l) - f.d)) / f.d + 1);
  return f;
}

EMBER_IGEMM_HD int divide(int n, const FastDiv& f) {
#if defined(__CUDA_ARCH__)
  const uint32_t hi = __umulhi(static_cast<uint32_t>(n), f.m);
#else
  const uint32_t hi = static_cast<uint32_t>((uint64_t{static_cast<uint32_t>(n)} * f.m) >> 32);
#endif
  return static_cast<int>((hi + static_cast<uint32_t>(n)) >> f.l);
}

// A convolution in conv2d's terms: input x [N, C, H, W], weight [Cout, C/groups, KH, KW],
// output y [N, Cout, OH, OW]. The divisors at the end are filled by with_divisors() (the entry
// points of conv_igemm.h call it; the fields above are all a caller sets).
struct Geom {
  int N, C, H, W;
  int Cout, OH, OW;
  int KH, KW;
  int sh, sw, ph, pw, dh, dw;
  int groups;
  FastDiv taps_div{}, kw_div{}, ow_div{}, plane_div{};  // KH*KW, KW, OW, OH*OW
};

inline Geom with_divisors(Geom g) {
  g.taps_div = fast_div(g.KH * g.KW);
  g.kw_div = fast_div(g.KW);
  g.ow_div = fast_div(g.OW);
  g.plane_div = fast_div(g.OH * g.OW);
  return g;
}

struct Dims {
  int M, N, K;
};

// The part of an operand element's address that one index (a row, a column or k) decides:
// an element offset, a spatial row and column (meaning depends on the pass), and whether the
// index is inside the GEMM.
struct Ix {
  int64_t off;
  int y, x;
  bool ok;
};

// The spatial coordinate of a row or k past the end of the GEMM in the forward and
// backward-data passes: every bound test of a_at then fails without a flag of its own. fits()
// keeps every real coordinate (a row's or a tap's) within +-2^29, so a sum with kFar (or of two)
// stays negative and within int.
constexpr int kFar = -(1 << 30);

EMBER_IGEMM_HD Dims dims(const Geom& g, Pass p) {
  const int Cig = g.C / g.groups, Cog = g.Cout / g.groups, taps = g.KH * g.KW;
  switch (p) {
    case Pass::forward: return {g.N * g.OH * g.OW, Cog, Cig * taps};
    case Pass::backward_data: return {g.N * g.H * g.W, Cig, Cog * taps};
    default: return {Cog, Cig * taps, g.N * g.OH * g.OW};
  }
}

// ---- the stride phases of backward-data ----
//
// Pixel ih of gx receives tap kh only where ih + ph - kh*dh is a multiple of sh. The pixels
// with ih = q (mod sh) all take the same taps: the kh with kh*dh = ih + ph (mod sh), an
// arithmetic progression of step sh / gcd(sh, dh). So backward-data runs as sh*sw GEMMs, one
// per phase (ih mod sh, iw mod sw), each over only its pixels and its taps: no multiply is
// spent on a tap that a stride skips. (At stride 1 there is one phase: all pixels, all taps.)
// Forward and weight-gradient passes have one trivial phase.
struct Phase {
  int ih0 = 0, iw0 = 0;          // the phase's first pixel row / column
  int rows = 0, cols = 0;        // its pixel rows / columns (every sh-th, every sw-th)
  int kh0 = 0, kw0 = 0;          // its first tap row / column
  int kh_step = 1, kw_step = 1;  // tap rows / columns apart
  int th = 0, tw = 0;            // its tap rows / columns (0: the phase's pixels get no term)
  // Pixel row ih0 + r sh takes its a-th tap row from gy's row r + y0 - a y_step (below, in
  // a_inner_of); the same for columns. Set for backward-data only.
  int y0 = 0, x0 = 0, y_step = 0, x_step = 0;
  FastDiv tw_div{}, taps_div{}, cols_div{}, plane_div{};  // tw, th*tw, cols, rows*cols
};

EMBER_IGEMM_HD int phases(const Geom& g, Pass p) { return p == Pass::backward_data ? g.sh * g.sw : 1; }

// The taps of one axis for the pixels = q (mod s): the first k in [0, K) with k*d + pad = q
// (mod s), the step between them, and how many.
EMBER_IGEMM_HD void phase_taps(int q, int s, int d, int pad, int K, int& k0, int& step, int& n) {
  int a = s, b = d % s;  // step = s / gcd(s, d)
  while (b != 0) {
    const int t = a % b;
    a = b;
    b = t;
  }
  step = s / a;
  k0 = -1;
  for (int k = 0; k < K && k < step; ++k)
    if ((k * d - q - pad) % s == 0) {
      k0 = k;
      break;
    }
  n = k0 < 0 ? 0 : (K - k0 + step - 1) / step;
  if (k0 < 0) k0 = 0;
}

template <Pass P>
EMBER_IGEMM_HD Phase phase_of(const Geom& g, int phase) {
  Phase f;
  if constexpr (P == Pass::backward_data) {
    const int qh = phase / g.sw, qw = phase - qh * g.sw;
    f.ih0 = qh;
    f.iw0 = qw;
    f.rows = qh < g.H ? (g.H - qh + g.sh - 1) / g.sh : 0;
    f.cols = qw < g.W ? (g.W - qw + g.sw - 1) / g.sw : 0;
    phase_taps(qh, g.sh, g.dh, g.ph, g.KH, f.kh0, f.kh_step, f.th);
    phase_taps(qw, g.sw, g.dw, g.pw, g.KW, f.kw0, f.kw_step, f.tw);
    // Exact divisions where the phase has taps: kh0 dh = qh + ph (mod sh), and kh_step dh is
    // lcm(sh, dh). (Without taps the values go unused.)
    f.y0 = (qh + g.ph - f.kh0 * g.dh) / g.sh;
    f.x0 = (qw + g.pw - f.kw0 * g.dw) / g.sw;
    f.y_step = f.kh_step * g.dh / g.sh;
    f.x_step = f.kw_step * g.dw / g.sw;
  } else {
    f.rows = g.OH;
    f.cols = g.OW;
    f.th = g.KH;
    f.tw = g.KW;
  }
  f.tw_div = fast_div(f.tw);
  f.taps_div = fast_div(f.th * f.tw);
  f.cols_div = fast_div(f.cols);
  f.plane_div = fast_div(f.rows * f.cols);
  return f;
}

// The GEMM of one phase (backward-data) or of the whole pass (the others).
EMBER_IGEMM_HD Dims dims(const Geom& g, Pass p, const Phase& f) {
  if (p != Pass::backward_data) return dims(g, p);
  return {g.N * f.rows * f.cols, g.C / g.groups, g.Cout / g.groups * f.th * f.tw};
}

// Whether every GEMM index of the pass fits in 32 bits (with a tile's worth to spare), every
// spatial coordinate within +-2^29 (kFar), and a k table entry's offsets (k_entry) in 32 bits.
inline bool fits(const Geom& g) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1024, kCoord = int64_t{1} << 28;
  const int64_t taps = int64_t{g.KH} * g.KW;
  const int64_t reach_h = int64_t{g.KH} * g.dh + g.ph, reach_w = int64_t{g.KW} * g.dw + g.pw;
  const int64_t sizes[] = {int64_t{g.N} * g.OH * g.OW, int64_t{g.N} * g.H * g.W, int64_t{g.C} * taps,
                           int64_t{g.Cout} * taps,
                           // table offsets: a channel plane's start plus a tap's reach into it
                           int64_t{g.C} * g.H * g.W + reach_h * g.W + reach_w,
                           int64_t{g.Cout} * g.OH * g.OW + (g.H + reach_h) * g.OW + g.W + reach_w,
                           int64_t{g.Cout} * (g.C / (g.groups < 1 ? 1 : g.groups)) * taps};
  for (int64_t s : sizes)
    if (s >= kMax) return false;
  const int64_t coords[] = {g.H, g.W, int64_t{g.OH} * g.sh, int64_t{g.OW} * g.sw, reach_h, reach_w};
  for (int64_t c : coords)
    if (c >= kCoord) return false;
  return true;
}

// ---- A: rows m, depth k ----

// A row's half: for the forward and backward-data passes the spatial position of the row's
// window (y, x: kFar past the end of the GEMM) and the offset of its element at tap offset 0.
template <Pass P>
EMBER_IGEMM_HD Ix a_outer(const Geom& g, const Phase& f, int grp, int m) {
  const Dims d = dims(g, P, f);
  const int Cog = g.Cout / g.groups;
  if (m >= d.M) return {0, kFar, kFar, false};
  if constexpr (P == Pass::forward) {  // m -> (img, oh, ow): the window's top-left corner (y, x)
    const int plane = g.OH * g.OW, img = divide(m, g.plane_div), pos = m - img * plane, oh = divide(pos, g.ow_div),
              ow = pos - oh * g.OW;
    const int Cig = g.C / g.groups, y = oh * g.sh - g.ph, x = ow * g.sw - g.pw;
    return {(int64_t{img} * g.C + int64_t{grp} * Cig) * g.H * g.W + int64_t{y} * g.W + x, y, x, true};
  } else if constexpr (P == Pass::backward_data) {  // m -> (img, r, c): the phase's pixel (ih0 + r sh, iw0 + c sw)
    const int plane = f.rows * f.cols, img = divide(m, f.plane_div), pos = m - img * plane,
              r = divide(pos, f.cols_div), c = pos - r * f.cols;
    return {(int64_t{img} * g.Cout + int64_t{grp} * Cog) * g.OH * g.OW + int64_t{r} * g.OW + c, r, c, true};
  } else {  // m -> co: gy's channel plane
    return {int64_t{grp * Cog + m} * g.OH * g.OW, 0, 0, true};
  }
}

// a_inner for 0 <= k < K.
template <Pass P>
EMBER_IGEMM_HD Ix a_inner_of(const Geom& g, const Phase& f, int k) {
  const int taps = g.KH * g.KW;
  if constexpr (P == Pass::forward) {  // k -> (ci, kh, kw): the tap's offset (y, x) from the window's corner
    const int ci = divide(k, g.taps_div), t = k - ci * taps, kh = divide(t, g.kw_div), kw = t - kh * g.KW;
    const int y = kh * g.dh, x = kw * g.dw;
    return {int64_t{ci} * g.H * g.W + int64_t{y} * g.W + x, y, x, true};
  } else if constexpr (P == Pass::backward_data) {  // k -> (co, the phase's tap (kh, kw))
    // Pixel (ih, iw) = (ih0 + r sh, iw0 + c sw) takes tap kh = kh0 + a kh_step from gy's row oh
    // with oh sh = ih + ph - kh dh, i.e. oh = r + (ih0 + ph - kh dh) / sh = r + y0 - a y_step:
    // the phase makes that division exact (possibly of a negative number; phase_of does it
    // once), so the row's part is r and the tap's y.
    const int co = divide(k, f.taps_div), t = k - co * f.th * f.tw, a = divide(t, f.tw_div), b = t - a * f.tw;
    const int y = f.y0 - a * f.y_step, x = f.x0 - b * f.x_step;
    return {int64_t{co} * g.OH * g.OW + int64_t{y} * g.OW + x, y, x, true};
  } else {  // k -> (img, oh, ow)
    const int plane = g.OH * g.OW, img = divide(k, g.plane_div), pos = k - img * plane;
    return {int64_t{img} * g.Cout * plane + pos, 0, 0, true};
  }
}

template <Pass P>
EMBER_IGEMM_HD Ix a_inner(const Geom& g, const Phase& f, int k_in) {
  const Dims d = dims(g, P, f);
  // Past the end: k = 0 stands in and ok is false (no early return: no branch in the gather).
  const bool inside = k_in < d.K;
  const int k = inside ? k_in : 0;
  Ix r = a_inner_of<P>(g, f, k);
  r.ok = inside;
  return r;
}

// ---- B: depth k, columns n ----

template <Pass P>
EMBER_IGEMM_HD Ix b_outer(const Geom& g, const Phase& f, int grp, int n) {
  const Dims d = dims(g, P, f);
  if (n >= d.N) return {0, 0, 0, false};
  const int Cig = g.C / g.groups, Cog = g.Cout / g.groups, taps = g.KH * g.KW;
  if constexpr (P == Pass::forward) {  // n -> co: its weight row [Cig*taps]
    return {int64_t{grp * Cog + n} * Cig * taps, 0, 0, true};
  } else if constexpr (P == Pass::backward_data) {  // n -> ci: w[., ci, ., .]
    return {int64_t{n} * taps, 0, 0, true};
  } else {  // n -> (ci, kh, kw): the tap's offset (y, x) from the window's corner
    const int ci = divide(n, g.taps_div), t = n - ci * taps, kh = divide(t, g.kw_div), kw = t - kh * g.KW;
    const int y = kh * g.dh - g.ph, x = kw * g.dw - g.pw;
    return {int64_t{grp * Cig + ci} * g.H * g.W + int64_t{y} * g.W + x, y, x, true};
  }
}

template <Pass P>
EMBER_IGEMM_HD Ix b_inner(const Geom& g, const Phase& f, int grp, int k) {
  const Dims d = dims(g, P, f);
  if (k >= d.K) return {0, 0, 0, false};
  if constexpr (P == Pass::forward) {  // k is the weight row's index
    return {k, 0, 0, true};
  } else if constexpr (P == Pass::backward_data) {  // k -> (co, the phase's tap): w[grp*Cog + co, 0, kh, kw]
    const int Cig = g.C / g.groups, Cog = g.Cout / g.groups, taps = g.KH * g.KW;
    const int co = divide(k, f.taps_div), t = k - co * f.th * f.tw, a = divide(t, f.tw_div), b = t - a * f.tw;
    const int kh = f.kh0 + a * f.kh_step, kw = f.kw0 + b * f.kw_step;
    return {int64_t{grp * Cog + co} * Cig * taps + kh * g.KW + kw, 0, 0, true};
  } else {  // k -> (img, oh, ow): the window's corner (y, x)
    const int plane = g.OH * g.OW, img = divide(k, g.plane_div), pos = k - img * plane, oh = divide(pos, g.ow_div),
              ow = pos - oh * g.OW;
    const int y = oh * g.sh, x = ow * g.sw;
    return {int64_t{img} * g.C * g.H * g.W + int64_t{y} * g.W + x, y, x, true};
  }
}

// The element offset of the weight gradient's B[k, n] in x, or false where it reads zero
// (branch-free, as a_ok).
template <Pass P>
EMBER_IGEMM_HD bool b_at(const Geom& g, const Ix& o, const Ix& i, int64_t& off) {
  static_assert(P == Pass::backward_weight, "the forward and backward-data passes take b_at(Ix, KEntry)");
  const int ih = o.y + i.y, iw = o.x + i.x;
  off = o.off + i.off;
  return o.ok & i.ok & (static_cast<unsigned>(ih) < static_cast<unsigned>(g.H)) &
         (static_cast<unsigned>(iw) < static_cast<unsigned>(g.W));
}

// ---- the k table of the forward and backward-data passes ----

// Entry k of a block's table: A's k half (offset and tap position) and B's offset. Past the
// end of K the tap position is kFar, so A reads zero; B's element is then zero by its own test
// (b_at's k_inside), since B's side has no spatial bound to fail.
struct alignas(16) KEntry {
  int a_off, y, x, b_off;
};

template <Pass P>
EMBER_IGEMM_HD KEntry k_entry(const Geom& g, const Phase& f, int grp, int k) {
  static_assert(P != Pass::backward_weight, "the weight gradient's K (the batch) is not tabulated");
  if (k >= dims(g, P, f).K) return {0, kFar, kFar, 0};
  const Ix a = a_inner_of<P>(g, f, k), b = b_inner<P>(g, f, grp, k);
  return {static_cast<int>(a.off), a.y, a.x, static_cast<int>(b.off)};
}

// Whether A[m, k] is inside its tensor (the sum of the row's and the tap's positions within
// the image: x for the forward, gy for backward-data), and its offset there. Branch-free, every
// bound an unsigned compare joined by &; `off` is meaningless where false.
template <Pass P>
EMBER_IGEMM_HD bool a_ok(const Geom& g, const Ix& o, const KEntry& e) {
  static_assert(P != Pass::backward_weight, "the weight gradient's A takes a_at(Ix, Ix)");
  const int y = o.y + e.y, x = o.x + e.x;
  const int rows = P == Pass::forward ? g.H : g.OH, cols = P == Pass::forward ? g.W : g.OW;
  return (static_cast<unsigned>(y) < static_cast<unsigned>(rows)) &
         (static_cast<unsigned>(x) < static_cast<unsigned>(cols));
}
template <Pass P>
EMBER_IGEMM_HD bool a_at(const Geom& g, const Ix& o, const KEntry& e, int64_t& off) {
  off = o.off + e.a_off;
  return a_ok<P>(g, o, e);
}
// The weight gradient's A (gy, read whole: no spatial test).
template <Pass P>
EMBER_IGEMM_HD bool a_at(const Geom&, const Ix& o, const Ix& i, int64_t& off) {
  static_assert(P == Pass::backward_weight, "the forward and backward-data passes take a_at(Ix, KEntry)");
  off = o.off + i.off;
  return o.ok & i.ok;
}

// The forward and backward-data passes' B[k, n] (the weights, read whole) from the column's
// half and k's entry; k_inside: k < the end of K.
template <Pass P>
EMBER_IGEMM_HD bool b_at(const Geom&, const Ix& o, const KEntry& e, bool k_inside, int64_t& off) {
  static_assert(P != Pass::backward_weight, "the weight gradient's B takes b_at(Ix, Ix)");
  off = o.off + e.b_off;
  return o.ok & k_inside;
}

// ---- C: the output element of GEMM entry (m, n) is c_row(m) + c_col(n) ----

template <Pass P>
EMBER_IGEMM_HD int64_t c_row(const Geom& g, const Phase& f, int grp, int m) {
  const int Cig = g.C / g.groups, Cog = g.Cout / g.groups;
  if constexpr (P == Pass::forward) {
    const int plane = g.OH * g.OW, img = divide(m, g.plane_div), pos = m - img * plane;
    return (int64_t{img} * g.Cout + int64_t{grp} * Cog) * plane + pos;
  } else if constexpr (P == Pass::backward_data) {  // the phase's pixel (r, c) is (ih0 + r*sh, iw0 + c*sw)
    const int plane = f.rows * f.cols, img = divide(m, f.plane_div), pos = m - img * plane,
              r = divide(pos, f.cols_div), c = pos - r * f.cols;
    return (int64_t{img} * g.C + int64_t{grp} * Cig) * g.H * g.W + int64_t{f.ih0 + r * g.sh} * g.W + f.iw0 +
           c * g.sw;
  } else {
    return int64_t{grp * Cog + m} * Cig * g.KH * g.KW;
  }
}

template <Pass P>
EMBER_IGEMM_HD int64_t c_col(const Geom& g, int n) {
  if constexpr (P == Pass::forward) return int64_t{n} * g.OH * g.OW;
  else if constexpr (P == Pass::backward_data) return int64_t{n} * g.H * g.W;
  else return n;
}

// The output channel of column n (for the bias): y's for the forward, gx's for backward_data.
template <Pass P>
EMBER_IGEMM_HD int c_channel(const Geom& g, int grp, int n) {
  if constexpr (P == Pass::forward) return grp * (g.Cout / g.groups) + n;
  else return grp * (g.C / g.groups) + n;
}

// ---- the kernels' tiles and which thread moves which element ----

// A block of kThreads threads computes a kTileM x kTileN tile of C, kTileK deep per step.
constexpr int kTileM = 128, kTileN = 128, kTileK = 16, kThreads = 256;
static_assert(kTileM == kTileN, "one operand tile shape for A and B");
constexpr int kLoadsPerThread = kTileK * kTileM / kThreads;  // of one operand's kTileM x kTileK tile: 8
constexpr int kOutPerThread = kTileM * kTileN / kThreads;    // of the C tile: 64

// Load i (< kLoadsPerThread) of thread tid copies element (outer, k) of an operand's kTileM-row
// (m or n) x kTileK tile: with outer_fast, consecutive threads take consecutive rows of one k
// (the gathered image of the forward and backward-data passes is contiguous along the pixel),
// else consecutive k of one row (the weights, and both operands of the weight gradient).
EMBER_IGEMM_HD int load_outer(bool outer_fast, int tid, int i) {
  return outer_fast ? tid % kTileM : tid / kTileK + (kThreads / kTileK) * i;
}
EMBER_IGEMM_HD int load_k(bool outer_fast, int tid, int i) {
  return outer_fast ? tid / kTileM + (kThreads / kTileM) * i : tid % kTileK;
}
// Store r (< kOutPerThread) of thread tid writes C tile element (fast, slow): the fast index is
// m for the forward and backward-data passes (the output pixel), n for the weight gradient.
EMBER_IGEMM_HD int store_fast(int tid) { return tid % kTileM; }
EMBER_IGEMM_HD int store_slow(int tid, int r) { return tid / kTileM + (kThreads / kTileM) * r; }

// ---- split-K of the weight gradient ----

// The K range [0, N*P) cut into `splits` chunks of `chunk` (a multiple of `bk`) so that the
// grid has about `target_blocks` blocks; every chunk non-empty, each at least 8 K-steps long.
struct SplitK {
  int splits, chunk;
};

inline SplitK split_k(const Geom& g, int tile_m, int tile_n, int bk, int target_blocks) {
  const Dims d = dims(g, Pass::backward_weight);
  const int64_t tiles =
      int64_t{(d.M + tile_m - 1) / tile_m} * ((d.N + tile_n - 1) / tile_n) * g.groups;
  const int64_t steps = (int64_t{d.K} + bk - 1) / bk;
  int64_t s = (target_blocks + tiles - 1) / tiles;
  s = s < 1 ? 1 : s;
  const int64_t max_s = steps / 8 < 1 ? 1 : steps / 8;
  s = s > max_s ? max_s : s;
  s = s > 64 ? 64 : s;
  const int64_t chunk_steps = (steps + s - 1) / s;
  const int64_t chunk = (chunk_steps < 1 ? 1 : chunk_steps) * bk;
  const int64_t splits = d.K == 0 ? 1 : (d.K + chunk - 1) / chunk;
  return {static_cast<int>(splits), static_cast<int>(chunk)};
}

}  // namespace ember::kernels::cuda::igemm
