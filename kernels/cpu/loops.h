// Strided N-operand loops: the one iteration engine under every elementwise op, cast and copy.
//
// Operands share one shape (broadcast inputs have stride 0); operand 0 is the output. Adjacent
// dims that are contiguous for every operand are merged, so a contiguous tensor of any rank
// becomes one flat loop. The linear index range is split over the thread pool for large
// tensors; each chunk walks rows of the innermost dim, and the typed inner loop has fast paths
// for the contiguous and the scalar-broadcast cases, which the compiler vectorises.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

#include "ember/kernels/cpu/parallel.h"

namespace ember::kernels::cpu {

constexpr int kMaxDims = 16;
// Elementwise work below this many elements runs on the calling thread.
constexpr int64_t kParallelGrain = 16384;

template <int N>
struct Loop {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];  // bytes
  char* ptrs[N];

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= sizes[d];
    return n;
  }

  // Merge dim d into d+1 where every operand steps through d exactly as a continuation of d+1.
  void coalesce() {
    if (ndim <= 1) return;
    int out = ndim - 1;  // write position, walking from the innermost dim outward
    int64_t sz[kMaxDims];
    int64_t st[N][kMaxDims];
    sz[out] = sizes[ndim - 1];
    for (int k = 0; k < N; ++k) st[k][out] = strides[k][ndim - 1];
    for (int d = ndim - 2; d >= 0; --d) {
      if (sizes[d] == 1) continue;
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && strides[k][d] == st[k][out] * sz[out];
      if (sz[out] == 1) {  // inner dim of size 1: take this one's strides
        sz[out] = sizes[d];
        for (int k = 0; k < N; ++k) st[k][out] = strides[k][d];
      } else if (merge) {
        sz[out] *= sizes[d];
      } else {
        --out;
        sz[out] = sizes[d];
        for (int k = 0; k < N; ++k) st[k][out] = strides[k][d];
      }
    }
    int nd = ndim - out;
    for (int d = 0; d < nd; ++d) {
      sizes[d] = sz[out + d];
      for (int k = 0; k < N; ++k) strides[k][d] = st[k][out + d];
    }
    ndim = nd;
  }
};

// Calls inner(ptrs, inner_strides, n) for runs of the innermost dim covering [begin, end).
template <int N, typename Inner>
void run_range(const Loop<N>& l, int64_t begin, int64_t end, const Inner& inner) {
  if (l.ndim == 0) {
    char* p[N];
    for (int k = 0; k < N; ++k) p[k] = l.ptrs[k];
    int64_t s[N] = {};
    inner(p, s, 1);
    return;
  }
  const int last = l.ndim - 1;
  int64_t idx[kMaxDims];
  int64_t rem = begin;
  for (int d = last; d >= 0; --d) {
    idx[d] = rem % l.sizes[d];
    rem /= l.sizes[d];
  }
  char* p[N];
  int64_t s[N];
  for (int k = 0; k < N; ++k) {
    p[k] = l.ptrs[k];
    for (int d = 0; d <= last; ++d) p[k] += idx[d] * l.strides[k][d];
    s[k] = l.strides[k][last];
  }
  int64_t pos = begin;
  while (pos < end) {
    int64_t n = l.sizes[last] - idx[last];
    if (n > end - pos) n = end - pos;
    inner(p, s, n);
    pos += n;
    if (pos >= end) break;
    // advance to the next row: reset innermost, carry outward
    for (int k = 0; k < N; ++k) p[k] -= idx[last] * l.strides[k][last];
    idx[last] = 0;
    for (int d = last - 1; d >= 0; --d) {
      ++idx[d];
      for (int k = 0; k < N; ++k) p[k] += l.strides[k][d];
      if (idx[d] < l.sizes[d]) break;
      for (int k = 0; k < N; ++k) p[k] -= idx[d] * l.strides[k][d];
      idx[d] = 0;
    }
  }
}

template <int N, typename Inner>
void for_each(Loop<N> l, const Inner& inner) {
  l.coalesce();
  const int64_t n = l.numel();
  if (n == 0) return;
  if (n < kParallelGrain) {
    run_range(l, 0, n, inner);
    return;
  }
  parallel_for(0, n, kParallelGrain, [&](int64_t b, int64_t e) { run_range(l, b, e, inner); });
}

// The contiguous inner loop, compiled once per x86-64 ISA level and chosen at load time (GCC /
// Clang function multiversioning), so the activations' loops run 8 or 16 lanes wide where the
// host has AVX2 or AVX-512 while the library still runs on any x86-64 (elsewhere: one version).
// Results can differ in the last bit between ISAs, never between runs on one machine.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(EMBER_NO_CLONES)
#define EMBER_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EMBER_ISA_CLONES
#endif

template <typename Out, typename F, typename... In>
EMBER_ISA_CLONES void map_contiguous(Out* __restrict out, int64_t n, const F& f, const In* __restrict... in) {
  for (int64_t i = 0; i < n; ++i) out[i] = f(in[i]...);
}

// Two outputs from one pass: f(out0[i], out1[i], in[i]...) writes both (a fused backward that
// shares its transcendental between two gradients).
template <typename Out, typename F, typename... In>
EMBER_ISA_CLONES void map2_contiguous(Out* __restrict out0, Out* __restrict out1, int64_t n, const F& f,
                                      const In* __restrict... in) {
  for (int64_t i = 0; i < n; ++i) f(out0[i], out1[i], in[i]...);
}

// acc[i] += f(in[i]...): a gradient added into one already waiting, in the same pass.
template <typename T, typename F, typename... In>
EMBER_ISA_CLONES void map_accumulate_contiguous(T* __restrict acc, int64_t n, const F& f, const In* __restrict... in) {
  for (int64_t i = 0; i < n; ++i) acc[i] += f(in[i]...);
}

// out = f(in...) elementwise with typed pointers. Out and In are C++ element types.
template <typename Out, typename... In, typename F>
void map(Loop<1 + sizeof...(In)> l, const F& f) {
  constexpr int N = 1 + sizeof...(In);
  for_each(l, [&](char** p, const int64_t* s, int64_t n) {
    bool contiguous = s[0] == static_cast<int64_t>(sizeof(Out));
    constexpr size_t sizes_in[] = {sizeof(In)...};
    for (int k = 1; k < N; ++k) contiguous = contiguous && s[k] == static_cast<int64_t>(sizes_in[k - 1]);
    [&]<size_t... I>(std::index_sequence<I...>) {
      Out* out = reinterpret_cast<Out*>(p[0]);
      if (contiguous) {
        map_contiguous<Out>(out, n, f, reinterpret_cast<const In*>(p[1 + I])...);
      } else if constexpr (N == 3) {
        // one contiguous operand and one broadcast scalar: bias adds, scalar ops
        if (s[0] == sizeof(Out) && s[1] == sizeof(std::tuple_element_t<0, std::tuple<In...>>) && s[2] == 0) {
          using A = std::tuple_element_t<0, std::tuple<In...>>;
          using B = std::tuple_element_t<1, std::tuple<In...>>;
          const A* a = reinterpret_cast<const A*>(p[1]);
          const B b = *reinterpret_cast<const B*>(p[2]);
          for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b);
        } else if (s[0] == sizeof(Out) && s[1] == 0 && s[2] == sizeof(std::tuple_element_t<1, std::tuple<In...>>)) {
          using A = std::tuple_element_t<0, std::tuple<In...>>;
          using B = std::tuple_element_t<1, std::tuple<In...>>;
          const A a = *reinterpret_cast<const A*>(p[1]);
          const B* b = reinterpret_cast<const B*>(p[2]);
          for (int64_t i = 0; i < n; ++i) out[i] = f(a, b[i]);
        } else {
          for (int64_t i = 0; i < n; ++i)
            *reinterpret_cast<Out*>(p[0] + i * s[0]) = f(*reinterpret_cast<const In*>(p[1 + I] + i * s[1 + I])...);
        }
      } else {
        for (int64_t i = 0; i < n; ++i)
          *reinterpret_cast<Out*>(p[0] + i * s[0]) = f(*reinterpret_cast<const In*>(p[1 + I] + i * s[1 + I])...);
      }
    }(std::index_sequence_for<In...>{});
  });
}

}  // namespace ember::kernels::cpu
