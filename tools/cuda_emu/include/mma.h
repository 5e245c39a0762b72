// WMMA for the emulated kernels. The real fragment layout is opaque (code may only touch
// x[0 .. num_elements) elementwise), so here every lane holds the whole tile, in logical
// row-major order: elementwise code treats all of it alike, and a store writes the same
// values from every lane. Loads and stores are warp-collective like the real ones: the warp
// meets before (all lanes' earlier shared-memory writes are in) and after (no lane runs ahead
// and overwrites what another lane has yet to read). mma_sync reads TF32 operands the way the
// tensor cores do (the low 13 mantissa bits ignored), accumulates in f32, k in order, and fails
// the launch when the lanes' operands differ.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cuda_bf16.h>

#include "emu/device.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };
template <typename T>
struct Storage { using type = T; };
template <>
struct Storage<precision::tf32> { using type = float; };

inline float tf32_truncate(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u &= 0xffffe000u;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void warp_meet(int line) { ::emu::syncwarp(0xffffffffu, "mma.h", line); }
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  using storage_element_type = typename detail::Storage<T>::type;
  storage_element_type x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename L, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  static_assert(!std::is_void_v<L>, "a matrix_a/matrix_b load takes its layout from the fragment");
  static_assert(sizeof(P) == sizeof(typename fragment<Use, M, N, K, T, L>::storage_element_type));
  using F = fragment<Use, M, N, K, T, L>;
  detail::warp_meet(__LINE__);
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<L, col_major> ? p[r + c * ldm] : p[r * ldm + c];
  detail::warp_meet(__LINE__);
}

template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const float* p, unsigned ldm, layout_t l) {
  detail::warp_meet(__LINE__);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_col_major ? p[r + c * ldm] : p[r * ldm + c];
  detail::warp_meet(__LINE__);
}

template <int M, int N, int K, typename T>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
  detail::warp_meet(__LINE__);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (l == mem_col_major ? p[r + c * ldm] : p[r * ldm + c]) = f.x[r * N + c];
  detail::warp_meet(__LINE__);
}

template <typename Use, int M, int N, int K, typename T, typename L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (auto& e : f.x) e = v;
}

// One lane multiplies; every lane checks that it holds the tiles that lane held (the real
// operation is warp-collective and its operands must be the same in all lanes), then takes the
// product. 32 lanes each multiplying their own copy gave the same result 32 times slower.
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  static_assert(std::is_same_v<TA, TB>, "mma_sync: A and B must have one element type");
  static_assert(!std::is_same_v<TA, precision::tf32> || K == 8, "TF32 WMMA is m16n16k8");
  static_assert(std::is_same_v<TA, precision::tf32> || K == 16, "BF16/F16 WMMA is m16n16k16");
  constexpr size_t kA = sizeof(a.x), kB = sizeof(b.x), kC = sizeof(c.x);
  unsigned char* shared = ::emu::warp_scratch(kA + kB + kC + sizeof(d.x));
  detail::warp_meet(__LINE__);
  if (::emu::first_live_lane()) {
    std::memcpy(shared, a.x, kA);
    std::memcpy(shared + kA, b.x, kB);
    std::memcpy(shared + kA + kB, c.x, kC);
    float* out = reinterpret_cast<float*>(shared + kA + kB + kC);
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = c.x[i * N + j];
        for (int k = 0; k < K; ++k) {
          float av = static_cast<float>(a.x[i * K + k]), bv = static_cast<float>(b.x[k * N + j]);
          if constexpr (std::is_same_v<TA, precision::tf32>) {
            av = detail::tf32_truncate(av);
            bv = detail::tf32_truncate(bv);
          }
          s += av * bv;
        }
        out[i * N + j] = s;
      }
  }
  detail::warp_meet(__LINE__);
  if (std::memcmp(shared, a.x, kA) != 0 || std::memcmp(shared + kA, b.x, kB) != 0 ||
      std::memcmp(shared + kA + kB, c.x, kC) != 0)
    ::emu::report_divergent_fragments("mma_sync");
  std::memcpy(d.x, shared + kA + kB + kC, sizeof(d.x));
  detail::warp_meet(__LINE__);
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero.
inline float __float_to_tf32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) >= 0x7f800000u) return f;
  u += 0x1000u;
  u &= 0xffffe000u;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace nvcuda::wmma
