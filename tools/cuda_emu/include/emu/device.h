// Host stand-ins for the CUDA C++ device language, so kernels/cuda/*.cu compile with g++ and
// run on the CPU (tools/cuda_emu/README.md says why and what is checked).
//
// Every CUDA thread of a block is a fiber (src/device.cpp): the block's threads run one after
// another on the calling host thread and switch only at __syncthreads, __syncwarp, a warp
// shuffle or a WMMA operation, so a kernel's blocks see exactly the orderings its barriers
// guarantee and no more. A barrier that some threads reach at another call site, or never
// reach, is reported as a failed launch instead of hanging. __shared__ arrays are function
// statics (the blocks of a grid run one at a time); dynamic shared memory is a buffer refilled
// with 0xFF bytes (NaN) before every block, so reading it before writing it shows up.
//
// Launches: the build's converter (cmake/cuda_emu_convert.cmake) rewrites
//   kernel<<<grid, block, smem, stream>>>(args...)
// into
//   kernel ^ ::emu::cfg(__FILE__, __LINE__, grid, block, smem, stream) ^ ::emu::args(args...)
// which checks the configuration like the real runtime and queues the grid on the stream
// (emu/hooks.h), copying the arguments as a launch does.
#pragma once
#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include "emu/hooks.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // #pragma unroll
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
// Only a hint; and g++ cannot take the address of a template whose parameter pack is
// __restrict__-qualified (map_contiguous_kernel), which a launch here must do.
#define __restrict__

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// The running fiber's coordinates, set by the scheduler at every switch.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace emu {

struct LaunchConfig {
  const char* file;
  int line;
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
};
inline LaunchConfig cfg(const char* file, int line, dim3 grid, dim3 block, size_t shared_bytes = 0,
                        cudaStream_t stream = nullptr) {
  return {file, line, grid, block, shared_bytes, stream};
}

// Checks `c` (block size, grid limits, dynamic shared memory against the kernel's allowance)
// and queues the grid on c.stream; `body` runs one thread's share of the kernel.
void launch(const LaunchConfig& c, const void* kernel, std::function<void()> body);

// ---- per-thread operations (valid inside a running kernel only) ----
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
unsigned lane();                     // threadIdx's linear index mod 32
uint64_t* warp_exchange_slots();     // 32 slots shared by the calling thread's warp
unsigned char* warp_scratch(size_t bytes);  // bytes shared by the calling thread's warp
bool first_live_lane();              // the calling thread is its warp's lowest unfinished lane
[[noreturn]] void report_divergent_fragments(const char* op);  // fails the launch
unsigned char* dynamic_shared();     // the block's dynamic shared memory
// cp.async.ca/cg.shared.global of 4, 8 or 16 bytes; both addresses must be aligned to the size
// (checked: the real instruction faults otherwise, even for a zero-filling copy).
void cp_async(void* smem, const void* gmem, size_t bytes, bool valid);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 and mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32:
// D = A B + C for a 16x8 tile, warp-collective, every lane passing its registers in the PTX
// ISA's fragment layout (g = lane / 4, t = lane % 4):
//   tf32  A (16x8):  a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//         B (8x8):   b0 (t, g), b1 (t + 4, g)
//   bf16  A (16x16): register r holds (row g + 8 (r % 2), cols 2t + 8 (r / 2) + {0, 1}), low half first
//         B (16x8):  register r holds (rows 2t + 8 r + {0, 1}, col g), low half first
//   C, D (16x8):     c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
// TF32 operands lose their low 13 mantissa bits, as on the tensor cores; accumulation is f32, k in
// order. The whole warp must take part.
void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);

template <typename... P>
struct BoundKernel {
  void (*kernel)(P...);
  LaunchConfig config;
};

template <typename... A>
std::tuple<std::decay_t<A>...> args(A&&... a) {
  return std::tuple<std::decay_t<A>...>(std::forward<A>(a)...);
}

// Shuffles move a value through the warp's slots between two warp barriers: every lane
// writes, all wait, every lane reads its source lane (0..31; -1: its own value), all wait (so
// the slots may be reused).
template <typename T>
T shuffle(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  uint64_t* slots = warp_exchange_slots();
  std::memcpy(&slots[lane()], &v, sizeof(T));
  syncwarp(mask, __FILE__, __LINE__);
  T r = v;
  if (src_lane >= 0) std::memcpy(&r, &slots[src_lane], sizeof(T));
  syncwarp(mask, __FILE__, __LINE__);
  return r;
}

}  // namespace emu

template <typename... P>
emu::BoundKernel<P...> operator^(void (*kernel)(P...), const emu::LaunchConfig& c) {
  return {kernel, c};
}
template <typename... P, typename... A>
void operator^(const emu::BoundKernel<P...>& k, std::tuple<A...> a) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  auto* kernel = k.kernel;
  emu::launch(k.config, reinterpret_cast<const void*>(kernel),
              [kernel, a]() mutable { std::apply([kernel](auto&... v) { kernel(v...); }, a); });
}

#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::emu::syncwarp(::emu_detail_mask(__VA_ARGS__), __FILE__, __LINE__)
constexpr unsigned emu_detail_mask() { return 0xffffffffu; }
constexpr unsigned emu_detail_mask(unsigned m) { return m; }

// Lanes form groups of `width` (a power of two); a source outside the caller's group gives the
// caller its own value, except that __shfl_xor_sync may read an earlier group, as on the GPU.
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int group = static_cast<int>(emu::lane()) / width * width;
  return emu::shuffle(mask, v, group + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int me = static_cast<int>(emu::lane()), src = me ^ lane_mask;
  return emu::shuffle(mask, v, src < me / width * width + width ? src : -1);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int me = static_cast<int>(emu::lane()), in_group = me % width;
  return emu::shuffle(mask, v, in_group + static_cast<int>(delta) < width ? me + static_cast<int>(delta) : -1);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int me = static_cast<int>(emu::lane()), in_group = me % width;
  return emu::shuffle(mask, v, in_group - static_cast<int>(delta) >= 0 ? me - static_cast<int>(delta) : -1);
}

// Fibers of one block never run at the same time, so a read-modify-write is atomic.
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

// Intrinsics with their IEEE meaning (the build passes -ffp-contract=off, so no host FMA
// contraction changes a product that the GPU code kept separate).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline size_t __cvta_generic_to_shared(const void* p) { return reinterpret_cast<size_t>(p); }

template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
using std::isfinite;
using std::isinf;
using std::isnan;
