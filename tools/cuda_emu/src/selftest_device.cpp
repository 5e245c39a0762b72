// Self-test of the emulated device side (emu/device.h, src/device.cpp, mma.h, cuda_bf16.h,
// cuda_fp16.h): thread coordinates, barriers and what happens when a kernel misuses them,
// warp shuffles, launch configuration checks, dynamic shared memory poisoning, cp.async
// groups and alignment, WMMA, mma.sync's fragment layouts, the bf16/half conversions, a kernel
// under graph capture, and atomics.
//
// Written the way cmake/cuda_emu_convert.cmake leaves a .cu file: launches are spelled
// `kernel ^ ::emu::cfg(...) ^ ::emu::args(...)` and dynamic shared memory comes from
// ::emu::dynamic_shared(), so the test exercises exactly what ember's converted kernels use.
// The emulator reports failed launches on stderr; those lines are expected here. Returns
// nonzero on any failed check.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "selftest.h"

// For element-wise comparisons: one line per mismatch would drown the report, so only the
// first few are printed.
#define CHECK_EQ_AT(what, i, got, want)                                                                   \
  do {                                                                                                    \
    if (!((got) == (want))) {                                                                             \
      if (++failures <= 40)                                                                               \
        std::fprintf(stderr, "FAIL %s:%d: %s[%d]: got %.9g, want %.9g\n", __FILE__, __LINE__, what,        \
                     static_cast<int>(i), static_cast<double>(got), static_cast<double>(want));           \
    }                                                                                                     \
  } while (0)

template <typename T>
static T* dev_alloc(size_t n) {
  T* p = nullptr;
  CHECK(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return p;
}
template <typename T>
static T* dev_copy(const std::vector<T>& h) {
  T* p = dev_alloc<T>(h.size());
  CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return p;
}
template <typename T>
static std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> h(n);
  CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}
static float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- thread coordinates ----------------------------------------------------------------

constexpr int kCoordFields = 12;

__global__ void coords_kernel(unsigned* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  unsigned* o = out + (b * blockDim.x * blockDim.y * blockDim.z + t) * kCoordFields;
  const unsigned v[kCoordFields] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                                    blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int i = 0; i < kCoordFields; ++i) o[i] = v[i];
}

static void test_coordinates() {
  const dim3 grid(3, 2, 2), block(4, 3, 5);
  const size_t threads = 3 * 2 * 2 * 4 * 3 * 5;
  unsigned* d = dev_alloc<unsigned>(threads * kCoordFields);
  coords_kernel ^ ::emu::cfg(__FILE__, __LINE__, grid, block, 0, 0) ^ ::emu::args(d);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<unsigned> h = host_copy(d, threads * kCoordFields);
  size_t i = 0;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx)
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx, ++i) {
              const unsigned want[kCoordFields] = {tx, ty, tz, bx, by, bz, block.x, block.y, block.z,
                                                   grid.x, grid.y, grid.z};
              for (int f = 0; f < kCoordFields; ++f) CHECK_EQ_AT("coords", i * kCoordFields + f, h[i * kCoordFields + f], want[f]);
            }
  cudaFree(d);
}

// ---- barriers ------------------------------------------------------------------------------

constexpr int kReduceThreads = 256;

// The classic tree: each level reads what other threads wrote at the level before, so every
// level needs the barrier.
__global__ void tree_sum_kernel(const int* in, int* out) {
  __shared__ int s[kReduceThreads];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// The same tree without barriers. The emulator runs each thread until it finishes here, so
// thread 0 adds slots that threads 1..255 have not written yet.
__global__ void tree_sum_unsynced_kernel(const int* in, int* out) {
  __shared__ int s[kReduceThreads];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = in[blockIdx.x * blockDim.x + t];
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2)
    if (t < stride) s[t] += s[t + stride];
  if (t == 0) out[blockIdx.x] = s[0];
}

// Half the threads (the odd ones, interleaved with the others) leave before the barrier; the
// rest must still get through it and see each other's writes.
__global__ void early_exit_kernel(int* out) {
  __shared__ int s[64];
  const int t = static_cast<int>(threadIdx.x);
  if (t % 2 == 1) return;
  s[t] = t * 10;
  __syncthreads();
  out[t] = s[(t + 2) % 64];
}

// In block `bad`, threads 0..31 and 48..63 wait at the block barrier, lanes 0..15 of warp 1
// at a full-warp barrier that lanes 16..31 of that warp never reach: no call site disagrees,
// and nobody can move. The other blocks pass the block barrier normally.
__global__ void deadlock_kernel(int* out, unsigned bad) {
  const int t = static_cast<int>(threadIdx.x);
  if (blockIdx.x == bad && t >= 32 && t < 48) __syncwarp();
  else __syncthreads();
  out[blockIdx.x * blockDim.x + t] = 1;
}

// Even threads at one __syncthreads, odd threads at another: the counts match, the sites don't.
__global__ void divergent_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t % 2 == 0) __syncthreads();
  else __syncthreads();
  out[t] = 1;
}

__global__ void fill_kernel(int* out, int v) { out[blockIdx.x * blockDim.x + threadIdx.x] = v; }

// After a failed launch, cudaDeviceSynchronize and cudaGetLastError report it once, and the
// next launch runs normally.
static void expect_failed_launch_then_recovery(const char* what) {
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  const cudaError_t last = cudaGetLastError();
  if (last != cudaErrorLaunchFailure) {
    std::fprintf(stderr, "FAIL %s: cudaGetLastError gave %s\n", what, cudaGetErrorName(last));
    ++failures;
  }
  CHECK(cudaGetLastError() == cudaSuccess);
  int* d = dev_alloc<int>(64);
  fill_kernel ^ ::emu::cfg(__FILE__, __LINE__, 2, 32, 0, 0) ^ ::emu::args(d, 7);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  const std::vector<int> h = host_copy(d, 64);
  for (int i = 0; i < 64; ++i) CHECK_EQ_AT("launch after a failed one", i, h[i], 7);
  cudaFree(d);
}

static void test_barriers() {
  std::vector<int> in(2 * kReduceThreads);
  for (int i = 0; i < 2 * kReduceThreads; ++i) in[i] = i + 1;
  const int want0 = kReduceThreads * (kReduceThreads + 1) / 2;
  const int want1 = want0 + kReduceThreads * kReduceThreads;
  int* d_in = dev_copy(in);
  int* d_out = dev_alloc<int>(2);

  tree_sum_kernel ^ ::emu::cfg(__FILE__, __LINE__, 2, kReduceThreads, 0, 0) ^ ::emu::args(d_in, d_out);
  CHECK(cudaGetLastError() == cudaSuccess);
  std::vector<int> h = host_copy(d_out, 2);
  CHECK_EQ_AT("tree sum", 0, h[0], want0);
  CHECK_EQ_AT("tree sum", 1, h[1], want1);

  tree_sum_unsynced_kernel ^ ::emu::cfg(__FILE__, __LINE__, 2, kReduceThreads, 0, 0) ^ ::emu::args(d_in, d_out);
  CHECK(cudaGetLastError() == cudaSuccess);  // a race is no launch error; its result is wrong
  h = host_copy(d_out, 2);
  CHECK(h[0] != want0);
  CHECK(h[1] != want1);

  int* d = dev_alloc<int>(64);
  CHECK(cudaMemset(d, 0, 64 * sizeof(int)) == cudaSuccess);
  early_exit_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 64, 0, 0) ^ ::emu::args(d);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  h = host_copy(d, 64);
  for (int t = 0; t < 64; ++t) CHECK_EQ_AT("early exit", t, h[t], t % 2 ? 0 : (t + 2) % 64 * 10);

  std::fprintf(stderr, "[selftest] a deadlock and a divergent barrier are reported next, as expected:\n");
  CHECK(cudaMemset(d, 0, 64 * sizeof(int)) == cudaSuccess);
  deadlock_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 64, 0, 0) ^ ::emu::args(d, 0u);
  expect_failed_launch_then_recovery("deadlock");

  divergent_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 64, 0, 0) ^ ::emu::args(d);
  expect_failed_launch_then_recovery("divergent barrier");

  // A deadlock in a later block of a grid fails the launch just the same.
  int* d3 = dev_alloc<int>(3 * 64);
  deadlock_kernel ^ ::emu::cfg(__FILE__, __LINE__, 3, 64, 0, 0) ^ ::emu::args(d3, 1u);
  CHECK(host_copy(d3, 1)[0] == 1);  // block 0 ran to the end
  cudaFree(d3);
  expect_failed_launch_then_recovery("deadlock in a grid");

  cudaFree(d);
  cudaFree(d_in);
  cudaFree(d_out);
}

// ---- warp shuffles -------------------------------------------------------------------------

constexpr int kShuffleResults = 12;

// Each lane's value: distinct per lane and warp, and not an integer for the floating types, so
// a value that lost its fraction or came from the wrong lane shows.
template <typename T>
static T lane_value(int t) {
  return static_cast<T>(t * 3 + 1) + (std::is_integral_v<T> ? T(0) : static_cast<T>(0.25));
}

template <typename T>
__global__ void shuffle_kernel(T* out) {
  const int t = static_cast<int>(threadIdx.x);
  const T v = lane_value<T>(t);
  T* o = out + t * kShuffleResults;
  const unsigned all = 0xffffffffu;
  o[0] = __shfl_xor_sync(all, v, 5);
  o[1] = __shfl_down_sync(all, v, 3);
  o[2] = __shfl_up_sync(all, v, 2);
  o[3] = __shfl_sync(all, v, 7);
  o[4] = __shfl_sync(all, v, 37);  // the source lane is taken modulo the width
  o[5] = __shfl_xor_sync(all, v, 2, 8);
  o[6] = __shfl_down_sync(all, v, 3, 8);
  o[7] = __shfl_up_sync(all, v, 1, 8);
  o[8] = __shfl_sync(all, v, 5, 8);
  o[9] = __shfl_down_sync(all, v, 4, 16);
  // Butterfly sum: every lane ends with the warp's total.
  T s = v;
  for (int m = 16; m > 0; m /= 2) s += __shfl_xor_sync(all, s, m);
  o[10] = s;
  // Shift-down sum: lane 0 ends with the total.
  T d = v;
  for (int k = 16; k > 0; k /= 2) d += __shfl_down_sync(all, d, static_cast<unsigned>(k));
  o[11] = d;
}

template <typename T>
static void test_shuffles_of(const char* type) {
  const int threads = 64;  // two warps: lanes are per warp, not per block
  T* d = dev_alloc<T>(threads * kShuffleResults);
  shuffle_kernel<T> ^ ::emu::cfg(__FILE__, __LINE__, 1, threads, 0, 0) ^ ::emu::args(d);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<T> h = host_copy(d, threads * kShuffleResults);
  for (int t = 0; t < threads; ++t) {
    const int warp = t / 32 * 32, lane = t % 32;
    auto at = [&](int l) { return lane_value<T>(warp + l); };
    // Within a segment of `w` lanes: the source lane, or the lane itself when out of range.
    auto seg = [&](int w, int src) { return src >= 0 && src < w ? at(lane / w * w + src) : at(lane); };
    T want[kShuffleResults] = {
        at(lane ^ 5),           seg(32, lane + 3),     seg(32, lane - 2),     at(7),
        at(5),                  seg(8, lane % 8 ^ 2),  seg(8, lane % 8 + 3),  seg(8, lane % 8 - 1),
        seg(8, 5),              seg(16, lane % 16 + 4), T(0),                 T(0)};
    T total = 0;
    for (int l = 0; l < 32; ++l) total += at(l);
    want[10] = total;
    const T* o = &h[static_cast<size_t>(t) * kShuffleResults];
    for (int k = 0; k < 11; ++k) {
      if (o[k] != want[k]) {
        if (++failures <= 40)
          std::fprintf(stderr, "FAIL shuffle<%s> result %d, thread %d: got %.17g, want %.17g\n", type, k, t,
                       static_cast<double>(o[k]), static_cast<double>(want[k]));
      }
    }
    if (lane == 0) CHECK_EQ_AT("shuffle-down sum", t, o[11], total);
  }
  cudaFree(d);
}

// The edges of the shuffle rules: the halves of a warp shuffling apart with their own masks
// (legal since Volta), a __syncwarp naming lanes that have exited, __shfl_xor_sync reading an
// earlier group, and a negative source lane (taken modulo the width).
__global__ void shuffle_edges_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  int* o = out + lane * 4;
  if (lane < 16) o[0] = __shfl_xor_sync(0x0000ffffu, lane, 1);
  else o[0] = __shfl_xor_sync(0xffff0000u, lane, 2);
  o[1] = __shfl_xor_sync(0xffffffffu, lane, 8, 8);
  o[2] = __shfl_sync(0xffffffffu, lane, -1);
  if (lane >= 2) return;
  __syncwarp(0x3u | 0x4u);  // lane 2 has exited: lanes 0 and 1 still pass
  o[3] = 1;
}

static void test_shuffle_edges() {
  int* d = dev_alloc<int>(32 * 4);
  shuffle_edges_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(d);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<int> h = host_copy(d, 32 * 4);
  for (int lane = 0; lane < 32; ++lane) {
    CHECK_EQ_AT("divergent-halves xor", lane, h[lane * 4 + 0], lane < 16 ? lane ^ 1 : lane ^ 2);
    // width 8, lane mask 8: a lane reads the group before its own; the first group keeps its value
    CHECK_EQ_AT("xor into an earlier group", lane, h[lane * 4 + 1], (lane ^ 8) < lane ? lane ^ 8 : lane);
    CHECK_EQ_AT("negative source lane", lane, h[lane * 4 + 2], 31);
  }
  CHECK(h[0 * 4 + 3] == 1 && h[1 * 4 + 3] == 1);
  cudaFree(d);
}

static void test_shuffles() {
  test_shuffles_of<float>("float");
  test_shuffles_of<double>("double");
  test_shuffles_of<int>("int");
  test_shuffle_edges();
}

// ---- launch configuration ------------------------------------------------------------------

__global__ void touch_dynamic_shared_kernel(int* out, unsigned bytes) {
  unsigned char* smem = ::emu::dynamic_shared();
  smem[bytes - 1] = 42;  // the far end of the buffer exists
  if (threadIdx.x == 0) out[0] = smem[bytes - 1];
}
__global__ void other_shared_kernel(int* out, unsigned bytes) {
  unsigned char* smem = ::emu::dynamic_shared();
  smem[bytes - 1] = 9;
  out[0] = smem[bytes - 1];
}

static void test_launch_configuration() {
  int* d = dev_alloc<int>(1);
  auto reset = [&] { CHECK(cudaMemset(d, 0, sizeof(int)) == cudaSuccess); };
  auto ran = [&] { return host_copy(d, 1)[0] != 0; };
  std::fprintf(stderr, "[selftest] rejected launch configurations (and one refused cudaFuncSetAttribute) are reported next, as expected:\n");

  reset();
  fill_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 1025, 0, 0) ^ ::emu::args(d, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(!ran());
  fill_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, dim3(16, 16, 8), 0, 0) ^ ::emu::args(d, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  fill_kernel ^ ::emu::cfg(__FILE__, __LINE__, dim3(1, 70000), 1, 0, 0) ^ ::emu::args(d, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(!ran());
  CHECK(cudaGetLastError() == cudaSuccess);  // the error was reported once

  // Exactly 48 KiB needs no opt-in; one byte more does, per kernel.
  touch_dynamic_shared_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 48 * 1024, 0) ^ ::emu::args(d, 48u * 1024);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(host_copy(d, 1)[0] == 42);
  reset();
  touch_dynamic_shared_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 64 * 1024, 0) ^ ::emu::args(d, 64u * 1024);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(!ran());
  CHECK(cudaFuncSetAttribute(touch_dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536) ==
        cudaSuccess);
  touch_dynamic_shared_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 64 * 1024, 0) ^ ::emu::args(d, 64u * 1024);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(host_copy(d, 1)[0] == 42);
  reset();
  other_shared_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 1, 64 * 1024, 0) ^ ::emu::args(d, 64u * 1024);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);  // the opt-in belongs to the other kernel
  CHECK(!ran());
  // Beyond the device's opt-in limit, cudaFuncSetAttribute itself refuses.
  CHECK(cudaFuncSetAttribute(other_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
        cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  cudaFree(d);
}

// ---- dynamic shared memory poison ----------------------------------------------------------

// Reads its slot before writing it, then writes it: the next block must see the poison again.
__global__ void poison_kernel(float* out, unsigned* raw) {
  float* s = reinterpret_cast<float*>(::emu::dynamic_shared());
  const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  out[i] = s[t];
  std::memcpy(&raw[i], &s[t], 4);
  s[t] = 1.0f;
}

static void test_poison() {
  const int blocks = 3, threads = 16;
  float* d = dev_alloc<float>(blocks * threads);
  unsigned* r = dev_alloc<unsigned>(blocks * threads);
  poison_kernel ^ ::emu::cfg(__FILE__, __LINE__, blocks, threads, threads * sizeof(float), 0) ^ ::emu::args(d, r);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<float> h = host_copy(d, blocks * threads);
  const std::vector<unsigned> hr = host_copy(r, blocks * threads);
  for (int i = 0; i < blocks * threads; ++i) {
    if (!std::isnan(h[i])) CHECK_EQ_AT("poisoned shared memory read as a float", i, h[i], NAN);
    CHECK_EQ_AT("poisoned shared memory bits", i, hr[i], 0xffffffffu);
  }
  cudaFree(d);
  cudaFree(r);
}

// ---- cp.async ------------------------------------------------------------------------------

// One thread stages global values into shared memory in groups and records what shared
// memory holds after each step; -1 marks "not landed yet".
__global__ void cp_async_kernel(const float* g, float* out) {
  float* s = reinterpret_cast<float*>(::emu::dynamic_shared());
  for (int i = 0; i < 4; ++i) s[i] = -1.0f;
  int k = 0;
  ::emu::cp_async(&s[0], &g[0], 4, true);
  ::emu::cp_async_commit();
  out[k++] = s[0];  // committed, not waited for
  ::emu::cp_async(&s[1], &g[1], 4, true);
  ::emu::cp_async(&s[2], &g[2], 4, true);
  ::emu::cp_async_commit();
  ::emu::cp_async_wait(1);  // two groups pending: only the older one must land
  out[k++] = s[0];
  out[k++] = s[1];
  out[k++] = s[2];
  ::emu::cp_async_wait(0);
  out[k++] = s[1];
  out[k++] = s[2];
  ::emu::cp_async(&s[3], &g[3], 4, false);  // src-size 0: zero fill, nothing read
  ::emu::cp_async_commit();
  out[k++] = s[3];
  ::emu::cp_async_wait(0);
  out[k++] = s[3];
}

static void test_cp_async() {
  float* g = dev_copy(std::vector<float>{10.0f, 11.0f, 12.0f, 13.0f});
  float* d = dev_alloc<float>(8);
  cp_async_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 1, 4 * sizeof(float), 0) ^ ::emu::args(g, d);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<float> h = host_copy(d, 8);
  const float want[8] = {-1.0f, 10.0f, -1.0f, -1.0f, 11.0f, 12.0f, -1.0f, 0.0f};
  for (int i = 0; i < 8; ++i) CHECK_EQ_AT("cp.async step", i, h[i], want[i]);
  cudaFree(g);
  cudaFree(d);
}

// A 16-byte copy lands whole; one from an address off 16 bytes fails the launch, as the real
// instruction faults.
__global__ void cp_async16_kernel(const float* g, float* out, int offset) {
  float* s = reinterpret_cast<float*>(::emu::dynamic_shared());
  ::emu::cp_async(s, g + offset, 16, true);
  ::emu::cp_async(s + 4, g, 16, false);
  ::emu::cp_async_commit();
  ::emu::cp_async_wait(0);
  for (int i = 0; i < 8; ++i) out[i] = s[i];
}

static void test_cp_async16() {
  float* g = dev_copy(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f, 5.0f});
  float* d = dev_alloc<float>(8);
  cp_async16_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 1, 8 * sizeof(float), 0) ^ ::emu::args(g, d, 0);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<float> h = host_copy(d, 8);
  const float want[8] = {1.0f, 2.0f, 3.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < 8; ++i) CHECK_EQ_AT("cp.async 16 bytes", i, h[i], want[i]);
  std::fprintf(stderr, "[selftest] a failed launch (a misaligned 16-byte cp.async) is expected next\n");
  cp_async16_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 1, 8 * sizeof(float), 0) ^ ::emu::args(g, d, 1);
  expect_failed_launch_then_recovery("misaligned cp.async");
  cudaFree(g);
  cudaFree(d);
}

// ---- WMMA ----------------------------------------------------------------------------------

namespace wmma = nvcuda::wmma;

// cvt.rna.tf32.f32 written independently of mma.h: keep 10 mantissa bits, ties away from zero.
static float host_tf32(float f) {
  if (!std::isfinite(f)) return f;
  return from_bits((to_bits(f) + 0x1000u) & 0xffffe000u);
}

// Computes D = A B + C for one 16x16 tile, A (16x8) and B (8x16) in the layouts the template
// names; converts the loaded fragments to TF32 as real code must; stores D in `out_layout`.
template <typename LA, typename LB>
__global__ void wmma_tf32_kernel(const float* a, const float* b, float c, float* d, wmma::layout_t out_layout) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::load_matrix_sync(fa, a, std::is_same_v<LA, wmma::row_major> ? 8 : 16);
  wmma::load_matrix_sync(fb, b, std::is_same_v<LB, wmma::row_major> ? 16 : 8);
  for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
  for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
  wmma::fill_fragment(acc, c);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, out_layout);
}

// The same without the conversion: the tensor cores ignore the operands' low 13 bits. With
// `odd_lane` >= 0 that lane changes one element of its A fragment, so the lanes no longer
// agree on the tile and mma_sync must fail the launch.
__global__ void wmma_tf32_raw_kernel(const float* a, const float* b, float* d, int odd_lane) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 16);
  if (static_cast<int>(threadIdx.x) == odd_lane) fa.x[0] += 1.0f;
  wmma::fill_fragment(acc, 0.0f);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

__global__ void wmma_bf16_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::fill_fragment(acc, 0.0f);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_col_major);
}

__global__ void wmma_fill_kernel(float* d) {
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  // Elementwise access sees the logical tile the same way on every lane in the emulation;
  // here it only needs to change each element alike.
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] += 2.5f;
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_col_major);
}

// Host D[i][j] = C(i, j) + sum_k A[i][k] B[k][j] for a 16 x `cols` tile, C, A and B given as
// accessors (A and B on the rounded inputs). The tolerance allows any order of summation; the
// products of rounded inputs are exact in f32. Shared by the WMMA and mma.sync checks.
template <typename C, typename A, typename B>
static void check_tile(const char* what, const std::vector<float>& got, int cols, bool got_col_major, int kdim, C c,
                       A a, B b) {
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < cols; ++j) {
      double want = c(i, j), mag = std::fabs(want);
      for (int k = 0; k < kdim; ++k) {
        want += static_cast<double>(a(i, k)) * b(k, j);
        mag += std::fabs(static_cast<double>(a(i, k)) * b(k, j));
      }
      const float g = got[got_col_major ? i + j * 16 : i * cols + j];
      if (!(std::fabs(g - want) <= 1e-6 * mag + 1e-30) && ++failures <= 40)
        std::fprintf(stderr, "FAIL %s: D[%d][%d] = %.9g, want %.9g\n", what, i, j, static_cast<double>(g), want);
    }
}

static void test_wmma() {
  // Values with more than 10 mantissa bits, so the TF32 rounding matters.
  std::vector<float> a(16 * 8), b(8 * 16);
  for (int i = 0; i < 16 * 8; ++i) a[i] = std::sin(0.37f * static_cast<float>(i) + 0.1f) * 1.7f;
  for (int i = 0; i < 8 * 16; ++i) b[i] = std::cos(0.23f * static_cast<float>(i) - 0.4f) * 0.9f;
  float* da = dev_copy(a);
  float* db = dev_copy(b);
  float* dd = dev_alloc<float>(256);
  const float c = 0.5f;
  auto fill_c = [c](int, int) { return static_cast<double>(c); };
  auto ra = [&](int idx) { return host_tf32(a[idx]); };
  auto rb = [&](int idx) { return host_tf32(b[idx]); };

  // A row-major (16x8, ld 8), B col-major (8x16, ld 8), D row-major.
  wmma_tf32_kernel<wmma::row_major, wmma::col_major> ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^
      ::emu::args(da, db, c, dd, wmma::mem_row_major);
  CHECK(cudaGetLastError() == cudaSuccess);
  check_tile("wmma tf32 row x col", host_copy(dd, 256), 16, false, 8, fill_c,
             [&](int i, int k) { return ra(i * 8 + k); },
             [&](int k, int j) { return rb(k + j * 8); });
  // A col-major (ld 16), B row-major (ld 16), D col-major.
  wmma_tf32_kernel<wmma::col_major, wmma::row_major> ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^
      ::emu::args(da, db, c, dd, wmma::mem_col_major);
  CHECK(cudaGetLastError() == cudaSuccess);
  check_tile("wmma tf32 col x row", host_copy(dd, 256), 16, true, 8, fill_c,
             [&](int i, int k) { return ra(i + k * 16); },
             [&](int k, int j) { return rb(k * 16 + j); });

  // 1 + 2^-12 has bits below TF32's: unconverted, mma_sync must ignore them (8 * 1 * 1 = 8).
  std::vector<float> ones_plus(16 * 8, 1.0f + std::ldexp(1.0f, -12)), ones(8 * 16, 1.0f);
  float* dop = dev_copy(ones_plus);
  float* d1 = dev_copy(ones);
  wmma_tf32_raw_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(dop, d1, dd, -1);
  CHECK(cudaGetLastError() == cudaSuccess);
  std::vector<float> h = host_copy(dd, 256);
  for (int i = 0; i < 256; ++i) CHECK_EQ_AT("wmma tf32 ignores low mantissa bits", i, h[i], 8.0f);
  std::fprintf(stderr, "[selftest] a failed launch (lanes with different WMMA fragments) is expected next\n");
  wmma_tf32_raw_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(dop, d1, dd, 5);
  expect_failed_launch_then_recovery("divergent WMMA fragments");

  // BF16: A col-major, B row-major, D col-major; the host multiplies the same bf16 values.
  std::vector<__nv_bfloat16> ha(256), hb(256);
  for (int i = 0; i < 256; ++i) {
    ha[i] = __float2bfloat16_rn(std::sin(0.11f * static_cast<float>(i)) * 3.0f);
    hb[i] = __float2bfloat16_rn(std::cos(0.07f * static_cast<float>(i) + 1.0f));
  }
  __nv_bfloat16* dha = dev_copy(ha);
  __nv_bfloat16* dhb = dev_copy(hb);
  wmma_bf16_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(dha, dhb, dd);
  CHECK(cudaGetLastError() == cudaSuccess);
  check_tile("wmma bf16", host_copy(dd, 256), 16, true, 16, [](int, int) { return 0.0; },
             [&](int i, int k) { return __bfloat162float(ha[i + k * 16]); },
             [&](int k, int j) { return __bfloat162float(hb[k * 16 + j]); });

  // fill_fragment, elementwise access and a column-major store reach every element.
  CHECK(cudaMemset(dd, 0, 256 * sizeof(float)) == cudaSuccess);
  wmma_fill_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(dd);
  CHECK(cudaGetLastError() == cudaSuccess);
  h = host_copy(dd, 256);
  for (int i = 0; i < 256; ++i) CHECK_EQ_AT("fill_fragment + store col-major", i, h[i], 2.5f);

  // __float_to_tf32 rounds to nearest, ties away from zero (cvt.rna).
  CHECK(wmma::__float_to_tf32(1.0f + std::ldexp(1.0f, -11)) == 1.0f + std::ldexp(1.0f, -10));
  CHECK(wmma::__float_to_tf32(-(1.0f + std::ldexp(1.0f, -11))) == -(1.0f + std::ldexp(1.0f, -10)));
  CHECK(wmma::__float_to_tf32(1.0f + std::ldexp(1.0f, -11) - std::ldexp(1.0f, -23)) == 1.0f);
  CHECK(std::isnan(wmma::__float_to_tf32(NAN)));

  for (void* p : {static_cast<void*>(da), static_cast<void*>(db), static_cast<void*>(dd), static_cast<void*>(dop),
                  static_cast<void*>(d1), static_cast<void*>(dha), static_cast<void*>(dhb)})
    cudaFree(p);
}

// ---- mma.sync (PTX) ------------------------------------------------------------------------

// Each lane gathers its registers from row-major A (16 x K) and B (K x 8) in global memory by
// the PTX ISA's fragment layout, written out here independently of src/device.cpp, multiplies
// onto C = c0 + (row, col) / 64 and stores D by the accumulator layout: a lane that holds the
// wrong element, or a D element stored to the wrong place, shows up as a wrong product.
__global__ void mma_tf32_kernel(const float* a, const float* b, float c0, float* d) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const uint32_t ra[4] = {__float_as_uint(a[g * 8 + t]), __float_as_uint(a[(g + 8) * 8 + t]),
                          __float_as_uint(a[g * 8 + t + 4]), __float_as_uint(a[(g + 8) * 8 + t + 4])};
  const uint32_t rb[2] = {__float_as_uint(b[t * 8 + g]), __float_as_uint(b[(t + 4) * 8 + g])};
  float c[4], out[4];
  for (int i = 0; i < 4; ++i) c[i] = c0 + static_cast<float>((g + 8 * (i / 2)) * 8 + 2 * t + i % 2) / 64.0f;
  ::emu::mma_m16n8k8_tf32(out, ra, rb, c);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = out[i];
}

static uint32_t bf16_pair(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) | static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16;
}

__global__ void mma_bf16_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float c0, float* d) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  uint32_t ra[4], rb[2];
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
    ra[r] = bf16_pair(a[row * 16 + col], a[row * 16 + col + 1]);
  }
  for (int r = 0; r < 2; ++r) {
    const int k = 2 * t + 8 * r;
    rb[r] = bf16_pair(b[k * 8 + g], b[(k + 1) * 8 + g]);
  }
  float c[4], out[4];
  for (int i = 0; i < 4; ++i) c[i] = c0 + static_cast<float>((g + 8 * (i / 2)) * 8 + 2 * t + i % 2) / 64.0f;
  ::emu::mma_m16n8k16_bf16(out, ra, rb, c);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = out[i];
}

static void test_mma_sync() {
  // TF32: operands with bits below TF32's, which the tensor cores ignore (truncation, not rounding).
  std::vector<float> a(16 * 8), b(8 * 8);
  for (int i = 0; i < 16 * 8; ++i) a[i] = std::sin(0.37f * static_cast<float>(i) + 0.1f) * 1.7f;
  for (int i = 0; i < 8 * 8; ++i) b[i] = std::cos(0.23f * static_cast<float>(i) - 0.4f) * 0.9f;
  float* da = dev_copy(a);
  float* db = dev_copy(b);
  float* dd = dev_alloc<float>(128);
  const float c0 = 0.25f;
  auto ramp_c = [c0](int i, int j) { return c0 + (i * 8 + j) / 64.0; };  // the kernels' C
  mma_tf32_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(da, db, c0, dd);
  CHECK(cudaGetLastError() == cudaSuccess);
  auto trunc = [](float f) { return from_bits(to_bits(f) & 0xffffe000u); };
  check_tile("mma.sync m16n8k8 tf32", host_copy(dd, 128), 8, false, 8, ramp_c,
             [&](int i, int k) { return trunc(a[i * 8 + k]); },
            [&](int k, int j) { return trunc(b[k * 8 + j]); });

  std::vector<__nv_bfloat16> ha(16 * 16), hb(16 * 8);
  for (int i = 0; i < 16 * 16; ++i) ha[i] = __float2bfloat16_rn(std::sin(0.11f * static_cast<float>(i)) * 3.0f);
  for (int i = 0; i < 16 * 8; ++i) hb[i] = __float2bfloat16_rn(std::cos(0.07f * static_cast<float>(i) + 1.0f));
  __nv_bfloat16* dha = dev_copy(ha);
  __nv_bfloat16* dhb = dev_copy(hb);
  mma_bf16_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 32, 0, 0) ^ ::emu::args(dha, dhb, c0, dd);
  CHECK(cudaGetLastError() == cudaSuccess);
  check_tile("mma.sync m16n8k16 bf16", host_copy(dd, 128), 8, false, 16, ramp_c,
            [&](int i, int k) { return __bfloat162float(ha[i * 16 + k]); },
            [&](int k, int j) { return __bfloat162float(hb[k * 8 + j]); });

  std::fprintf(stderr, "[selftest] a failed launch (mma.sync by a partial warp) is expected next\n");
  mma_tf32_kernel ^ ::emu::cfg(__FILE__, __LINE__, 1, 16, 0, 0) ^ ::emu::args(da, db, c0, dd);
  expect_failed_launch_then_recovery("mma.sync by a partial warp");
  for (void* p : {static_cast<void*>(da), static_cast<void*>(db), static_cast<void*>(dd), static_cast<void*>(dha),
                  static_cast<void*>(dhb)})
    cudaFree(p);
}

// ---- bf16 / half conversions ---------------------------------------------------------------

static void test_conversions() {
  const float e8 = std::ldexp(1.0f, -8), e11 = std::ldexp(1.0f, -11);
  auto bf = [](float f) { return __bfloat162float(__float2bfloat16_rn(f)); };
  // bf16 keeps 7 mantissa bits: ulp(1) = 2^-7, so 1 + 2^-8 is a tie.
  CHECK(bf(1.0f + e8) == 1.0f);                              // tie to even (down)
  CHECK(bf(1.0f + 3 * e8) == 1.0f + 4 * e8);                 // tie to even (up)
  CHECK(bf(1.0f + e8 + std::ldexp(1.0f, -20)) == 1.0f + 2 * e8);  // above the tie
  CHECK(bf(-(1.0f + e8)) == -1.0f);
  CHECK(bf(3.0f) == 3.0f);
  CHECK(std::isnan(bf(NAN)));
  CHECK(std::isnan(bf(from_bits(0x7f800001u))));  // a NaN whose payload sits in the dropped bits
  CHECK(std::isnan(bf(from_bits(0xff800001u))));
  CHECK(bf(INFINITY) == INFINITY);
  CHECK(bf(from_bits(0x7f7fffffu)) == INFINITY);  // FLT_MAX rounds up past bf16's largest
  CHECK(__float2bfloat16(1.0f + 3 * e8).bits == 0x3f82u);

  auto hf = [](float f) { return __half2float(__float2half_rn(f)); };
  auto hbits = [](float f) { return __float2half_rn(f).bits; };
  // half keeps 10 mantissa bits: 1 + 2^-11 is a tie.
  CHECK(hf(1.0f + e11) == 1.0f);
  CHECK(hf(1.0f + 3 * e11) == 1.0f + 4 * e11);
  CHECK(hf(-(1.0f + 3 * e11)) == -(1.0f + 4 * e11));
  CHECK(hbits(1.0f) == 0x3c00u && hbits(-2.0f) == 0xc000u);
  CHECK(hbits(-0.0f) == 0x8000u);
  CHECK(hf(65504.0f) == 65504.0f && hbits(65504.0f) == 0x7bffu);
  CHECK(hf(65519.0f) == 65504.0f);        // below the midpoint to 2^16
  CHECK(hf(65520.0f) == INFINITY);        // the midpoint: ties to even, which is infinity
  CHECK(hf(1.0e6f) == INFINITY && hf(-1.0e6f) == -INFINITY);
  CHECK(hf(INFINITY) == INFINITY);
  CHECK(std::isnan(hf(NAN)));
  CHECK(std::isnan(__half2float(__half(from_bits(0x7f800001u)))));
  // Subnormals: multiples of 2^-24 below 2^-14.
  CHECK(hbits(std::ldexp(1.0f, -24)) == 0x0001u && hf(std::ldexp(1.0f, -24)) == std::ldexp(1.0f, -24));
  CHECK(hbits(std::ldexp(1.0f, -25)) == 0x0000u);       // tie between 0 and 2^-24: even is 0
  CHECK(hbits(3 * std::ldexp(1.0f, -25)) == 0x0002u);   // tie between 1 and 2 ulps: even is 2
  CHECK(hbits(std::ldexp(1.0f, -26)) == 0x0000u);
  CHECK(hbits(-std::ldexp(1.0f, -24)) == 0x8001u);
  CHECK(hbits(1023 * std::ldexp(1.0f, -24)) == 0x03ffu);
  CHECK(hf(1023 * std::ldexp(1.0f, -24)) == 1023 * std::ldexp(1.0f, -24));
  CHECK(hbits(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)) == 0x0400u);  // rounds up into the normals
  CHECK(hbits(std::ldexp(1.0f, -14)) == 0x0400u);
  // Every half value survives the round trip through float.
  int bad = 0;
  for (uint32_t u = 0; u < 0x10000u; ++u) {
    if ((u & 0x7c00u) == 0x7c00u && (u & 0x3ffu)) continue;  // NaNs need not keep their payload
    __half x;
    x.bits = static_cast<uint16_t>(u);
    if (__float2half_rn(__half2float(x)).bits != u) ++bad;
  }
  CHECK(bad == 0);
}

// ---- graph capture -------------------------------------------------------------------------

__global__ void add_one_kernel(int* p, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) p[i] += 1;
}

static void test_graph_capture() {
  const int n = 40;
  int* d = dev_alloc<int>(n);
  CHECK(cudaMemset(d, 0, n * sizeof(int)) == cudaSuccess);
  cudaStream_t s = nullptr;
  CHECK(cudaStreamCreate(&s) == cudaSuccess);
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  add_one_kernel ^ ::emu::cfg(__FILE__, __LINE__, 2, 32, 0, s) ^ ::emu::args(d, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  cudaGraph_t g = nullptr;
  CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
  std::vector<int> h = host_copy(d, n);
  for (int i = 0; i < n; ++i) CHECK_EQ_AT("captured kernel ran during capture", i, h[i], 0);
  cudaGraphExec_t exec = nullptr;
  CHECK(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
  for (int r = 0; r < 3; ++r) CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  h = host_copy(d, n);
  for (int i = 0; i < n; ++i) CHECK_EQ_AT("three graph replays", i, h[i], 3);
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  CHECK(cudaGraphDestroy(g) == cudaSuccess);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  cudaFree(d);
}

// ---- atomics -------------------------------------------------------------------------------

__global__ void atomic_kernel(int* count, int* index_sum, float* half_sum, int* olds) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  olds[i] = atomicAdd(count, 1);
  __syncthreads();  // the second round of additions interleaves the block's threads anew
  atomicAdd(index_sum, i);
  atomicAdd(half_sum, 0.5f);
}

static void test_atomics() {
  const int blocks = 8, threads = 128, n = blocks * threads;
  int* count = dev_alloc<int>(2);
  float* half_sum = dev_alloc<float>(1);
  int* olds = dev_alloc<int>(n);
  CHECK(cudaMemset(count, 0, 2 * sizeof(int)) == cudaSuccess);
  CHECK(cudaMemset(half_sum, 0, sizeof(float)) == cudaSuccess);
  atomic_kernel ^ ::emu::cfg(__FILE__, __LINE__, blocks, threads, 0, 0) ^ ::emu::args(count, count + 1, half_sum, olds);
  CHECK(cudaGetLastError() == cudaSuccess);
  const std::vector<int> c = host_copy(count, 2);
  CHECK(c[0] == n);
  CHECK(c[1] == n * (n - 1) / 2);
  CHECK(host_copy(half_sum, 1)[0] == 0.5f * n);
  // Each thread saw a different old value: together, 0..n-1.
  std::vector<int> h = host_copy(olds, n), seen(n, 0);
  bool permutation = true;
  for (int v : h)
    if (v < 0 || v >= n || seen[v]++) permutation = false;
  CHECK(permutation);
  cudaFree(count);
  cudaFree(half_sum);
  cudaFree(olds);
}

int main() {
  test_coordinates();
  test_barriers();
  test_shuffles();
  test_launch_configuration();
  test_poison();
  test_cp_async();
  test_cp_async16();
  test_wmma();
  test_mma_sync();
  test_conversions();
  test_graph_capture();
  test_atomics();
  CHECK(cudaGetLastError() == cudaSuccess);
  if (failures) {
    std::fprintf(stderr, "cuda_emu device self-test: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("cuda_emu device self-test: all checks passed\n");
  return 0;
}
