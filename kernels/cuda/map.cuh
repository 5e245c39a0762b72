// The elementwise engine of the CUDA backend: out = f(in...) over a Strided<N> view.
//
// Two kernels, chosen per call on the host:
//  - contiguous (every operand dense and in order, after the engine coalesced the dims): a
//    grid-stride loop over flat indices; where all operands have one element size and 16-byte
//    aligned pointers each thread moves 16 bytes per operand per step (float4-wide loads for
//    f32, 2 doubles, 8 halves), which is what keeps a memory-bound op at the copy bandwidth;
//  - strided (broadcast or non-contiguous operands): each thread turns its flat index into
//    per-operand byte offsets by dividing through the sizes, innermost dim first.
// Elementwise ops are bound by bytes moved, not by arithmetic; the index division of the
// strided path is the one cost above the copy, paid only by views.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/check.h"
#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

constexpr int kThreads = 256;

// Whether 16-byte vectors may be loaded from and stored to every pointer given.
inline bool aligned_16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// The operands come by value: each is one 16-byte load before any arithmetic. Bound by
// reference to global memory, two or more operands were read element by element (four 4-byte
// loads per float4, seen in the SASS of binary add), one alone was still combined.
template <int V, typename Out, typename F, typename... In>
__device__ __forceinline__ void apply_vec(Vec<Out, V>& o, const F& f, const Vec<In, V>... in) {
#pragma unroll
  for (int j = 0; j < V; ++j) o.v[j] = f(in.v[j]...);
}

template <int V, typename Out, typename F, typename... In>
__global__ void map_contiguous_kernel(int64_t n, Out* __restrict__ out, F f, const In* __restrict__... in) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < n; i += step) {
    if (V > 1 && i + V <= n) {
      Vec<Out, V> o;
      apply_vec<V>(o, f, *reinterpret_cast<const Vec<In, V>*>(in + i)...);
      *reinterpret_cast<Vec<Out, V>*>(out + i) = o;
    } else {
      for (int64_t j = i; j < n && j < i + V; ++j) out[j] = f(in[j]...);
    }
  }
}

template <typename Out, typename... In, typename F, size_t... I>
__device__ __forceinline__ void apply_at(char* const* ptrs, const int64_t* off, const F& f, std::index_sequence<I...>) {
  *reinterpret_cast<Out*>(ptrs[0] + off[0]) = f(*reinterpret_cast<const In*>(ptrs[1 + I] + off[1 + I])...);
}

template <typename Out, typename F, typename... In>
__global__ void map_strided_kernel(Strided<1 + sizeof...(In)> s, F f) {
  constexpr int N = 1 + sizeof...(In);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < s.numel; i += step) {
    int64_t off[N];
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    int64_t rem = i;
    for (int d = s.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % s.sizes[d];
      rem /= s.sizes[d];
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += idx * s.strides[k][d];
    }
    apply_at<Out, In...>(s.ptrs, off, f, std::index_sequence_for<In...>{});
  }
}

inline unsigned blocks_for(int64_t work) {
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));  // grid-stride beyond
}

// Launches out = f(in...) on `stream`; `name` goes into a launch error.
template <typename Out, typename... In, typename F>
void launch_map(const Strided<1 + sizeof...(In)>& s, const F& f, void* stream, const char* name) {
  constexpr int N = 1 + sizeof...(In);
  if (s.numel == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  constexpr int64_t elem[N] = {static_cast<int64_t>(sizeof(Out)), static_cast<int64_t>(sizeof(In))...};
  bool contiguous = s.ndim == 1;
  bool aligned = true;
  for (int k = 0; k < N; ++k) {
    contiguous = contiguous && s.strides[k][0] == elem[k];
    aligned = aligned && aligned_16({s.ptrs[k]});
  }
  if (contiguous) {
    constexpr bool same_size = ((sizeof(In) == sizeof(Out)) && ...);
    constexpr int V = same_size && sizeof(Out) <= 8 ? static_cast<int>(16 / sizeof(Out)) : 1;
    [&]<size_t... I>(std::index_sequence<I...>) {
      if (V > 1 && aligned) {
        map_contiguous_kernel<V, Out, F, In...><<<blocks_for((s.numel + V - 1) / V), kThreads, 0, st>>>(
            s.numel, reinterpret_cast<Out*>(s.ptrs[0]), f, reinterpret_cast<const In*>(s.ptrs[1 + I])...);
      } else {
        map_contiguous_kernel<1, Out, F, In...><<<blocks_for(s.numel), kThreads, 0, st>>>(
            s.numel, reinterpret_cast<Out*>(s.ptrs[0]), f, reinterpret_cast<const In*>(s.ptrs[1 + I])...);
      }
    }(std::index_sequence_for<In...>{});
  } else {
    map_strided_kernel<Out, F, In...><<<blocks_for(s.numel), kThreads, 0, st>>>(s, f);
  }
  EMBER_CUDA_LAUNCHED(name);
}

// ---- element types ----

template <ElemType E> struct elem;
template <> struct elem<ElemType::f32> { using type = float; };
template <> struct elem<ElemType::f64> { using type = double; };
template <> struct elem<ElemType::bf16> { using type = __nv_bfloat16; };
template <> struct elem<ElemType::f16> { using type = __half; };
template <> struct elem<ElemType::i64> { using type = int64_t; };
template <> struct elem<ElemType::i32> { using type = int32_t; };
template <> struct elem<ElemType::u8> { using type = uint8_t; };
template <> struct elem<ElemType::boolean> { using type = bool; };

template <typename T>
__device__ __forceinline__ double to_double(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return static_cast<double>(__bfloat162float(v));
  else if constexpr (std::is_same_v<T, __half>) return static_cast<double>(__half2float(v));
  else if constexpr (std::is_same_v<T, bool>) return v ? 1.0 : 0.0;
  else return static_cast<double>(v);
}

// The CPU's convert<To>(From): through double; 16-bit floats round to nearest even from f32.
template <typename To, typename From>
__device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else if constexpr (std::is_same_v<To, bool>) return to_double(v) != 0.0;
  else if constexpr (std::is_same_v<To, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(to_double(v)));
  else if constexpr (std::is_same_v<To, __half>) return __float2half_rn(static_cast<float>(to_double(v)));
  else return static_cast<To>(to_double(v));
}

// Grid-stride loops in 64 bits: this thread's first flat index, and the step between its indices.
__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Calls f(std::type_identity<float or double>{}); the ops refuse other dtypes first, with the
// CPU's message, so reaching the failure here is a bug in the caller.
template <typename F>
void dispatch_float(ElemType t, const char* op, F&& f) {
  switch (t) {
    case ElemType::f32: f(std::type_identity<float>{}); return;
    case ElemType::f64: f(std::type_identity<double>{}); return;
    default: EMBER_FAIL(op, ": the CUDA kernel takes f32 or f64 tensors");
  }
}

// Calls f(std::type_identity<T>{}) for the element type t, for the types `Allowed` admits.
template <typename F>
void dispatch_elem(ElemType t, const char* op, F&& f) {
  switch (t) {
    case ElemType::f32: f(std::type_identity<float>{}); return;
    case ElemType::f64: f(std::type_identity<double>{}); return;
    case ElemType::bf16: f(std::type_identity<__nv_bfloat16>{}); return;
    case ElemType::f16: f(std::type_identity<__half>{}); return;
    case ElemType::i64: f(std::type_identity<int64_t>{}); return;
    case ElemType::i32: f(std::type_identity<int32_t>{}); return;
    case ElemType::u8: f(std::type_identity<uint8_t>{}); return;
    case ElemType::boolean: f(std::type_identity<bool>{}); return;
  }
}

}  // namespace ember::kernels::cuda
