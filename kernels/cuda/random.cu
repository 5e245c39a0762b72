// Philox fills: one thread per 128-bit counter, so thread c writes the same elements from the
// same words as the CPU's loop iteration c. Uniforms are bit-identical to the CPU's; normals
// go through logf/cosf/sinf (f32) or log/cos/sin (f64) of the CUDA math library, which are
// within 2 ulp of glibc's, so they agree with the CPU to a few ulp, not always bit for bit.
// Bound by the stores (Philox's 10 rounds are cheap next to them).
#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/random.h"
#include "ember/kernels/philox.h"

namespace ember::kernels::cuda {

namespace {

using kernels::add_rn;
using kernels::mul_rn;

constexpr double kTwoPi = 6.283185307179586476925286766559;

template <typename T, bool Normal>
__global__ void philox_kernel(T* __restrict__ out, int64_t n, double a, double b, uint64_t seed, uint64_t base) {
  constexpr int k = std::is_same_v<T, float> ? 4 : 2;
  const int64_t counters = (n + k - 1) / k;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < counters; c += step) {
    const philox::Words w = philox::philox4x32_10(base + static_cast<uint64_t>(c), 0, seed);
    const int64_t i0 = c * k;
    if constexpr (!Normal) {  // a = low, b = high
      if constexpr (k == 4) {
        for (int j = 0; j < 4 && i0 + j < n; ++j)
          out[i0 + j] = static_cast<float>(add_rn(a, mul_rn(b - a, philox::to_unit_float(w.w[j]))));
      } else {
        for (int j = 0; j < 2 && i0 + j < n; ++j)
          out[i0 + j] = add_rn(a, mul_rn(b - a, philox::to_unit_double(w.w[2 * j], w.w[2 * j + 1])));
      }
    } else {  // a = mean, b = std
      if constexpr (k == 4) {
        for (int pair = 0; pair < 2; ++pair) {
          const float u1 = 1.0f - philox::to_unit_float(w.w[2 * pair]);
          const float u2 = philox::to_unit_float(w.w[2 * pair + 1]);
          const float r = sqrtf(-2.0f * logf(u1));
          const float z0 = r * cosf(static_cast<float>(kTwoPi) * u2), z1 = r * sinf(static_cast<float>(kTwoPi) * u2);
          const int64_t i = i0 + 2 * pair;
          if (i < n) out[i] = static_cast<float>(add_rn(a, mul_rn(b, z0)));
          if (i + 1 < n) out[i + 1] = static_cast<float>(add_rn(a, mul_rn(b, z1)));
        }
      } else {
        const double u1 = 1.0 - philox::to_unit_double(w.w[0], w.w[1]);
        const double u2 = philox::to_unit_double(w.w[2], w.w[3]);
        const double r = ::sqrt(-2.0 * ::log(u1));
        if (i0 < n) out[i0] = add_rn(a, mul_rn(mul_rn(b, r), ::cos(kTwoPi * u2)));
        if (i0 + 1 < n) out[i0 + 1] = add_rn(a, mul_rn(mul_rn(b, r), ::sin(kTwoPi * u2)));
      }
    }
  }
}

__global__ void randint_kernel(int64_t* __restrict__ out, int64_t n, int64_t low, uint64_t range, uint64_t seed,
                               uint64_t base) {
  const int64_t counters = (n + 1) / 2;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < counters; c += step) {
    const philox::Words w = philox::philox4x32_10(base + static_cast<uint64_t>(c), 0, seed);
    for (int j = 0; j < 2 && 2 * c + j < n; ++j) {
      const uint64_t r = (static_cast<uint64_t>(w.w[2 * j]) << 32) | w.w[2 * j + 1];
      out[2 * c + j] = low + static_cast<int64_t>(r % range);
    }
  }
}

template <bool Normal>
void run(ElemType t, void* out, int64_t n, double a, double b, uint64_t seed, uint64_t base, void* stream,
         const char* name) {
  if (n == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32)
    philox_kernel<float, Normal><<<blocks_for((n + 3) / 4), kThreads, 0, st>>>(static_cast<float*>(out), n, a, b, seed, base);
  else if (t == ElemType::f64)
    philox_kernel<double, Normal><<<blocks_for((n + 1) / 2), kThreads, 0, st>>>(static_cast<double*>(out), n, a, b, seed, base);
  else
    EMBER_FAIL(name, ": the CUDA kernel fills f32 or f64 only");
  EMBER_CUDA_LAUNCHED(name);
}

}  // namespace

void philox_uniform(ElemType t, void* out, int64_t n, double low, double high, uint64_t seed, uint64_t base,
                    void* stream) {
  run<false>(t, out, n, low, high, seed, base, stream, "uniform");
}

void philox_normal(ElemType t, void* out, int64_t n, double mean, double std, uint64_t seed, uint64_t base,
                   void* stream) {
  run<true>(t, out, n, mean, std, seed, base, stream, "normal");
}

void philox_randint(int64_t* out, int64_t n, int64_t low, int64_t high, uint64_t seed, uint64_t base, void* stream) {
  if (n == 0) return;
  const uint64_t range = static_cast<uint64_t>(high - low);
  randint_kernel<<<blocks_for((n + 1) / 2), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(out, n, low, range, seed,
                                                                                            base);
  EMBER_CUDA_LAUNCHED("randint");
}

}  // namespace ember::kernels::cuda
