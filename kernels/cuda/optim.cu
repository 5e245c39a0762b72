// Adam / AdamW as one multi-tensor kernel. blockIdx.y picks the tensor (its pointers travel in
// the kernel's parameter block, up to 32 per launch), blockIdx.x a chunk of it; blocks past a
// small tensor's end return at once. Each element reads p, g, m, v and writes p, m, v: 28 bytes
// per f32 element, so the step runs at memory bandwidth and its cost is the launch count.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/optim.h"

namespace ember::kernels::cuda {

namespace {

constexpr int64_t kAdamChunk = 8192;

struct AdamBatch {
  AdamTensor t[kMaxTensorsPerLaunch];
};

template <typename T>
__global__ void adam_kernel(AdamBatch batch, AdamStep s) {
  const AdamTensor& a = batch.t[blockIdx.y];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kAdamChunk;
  if (begin >= a.numel) return;
  const int64_t end = min(a.numel, begin + kAdamChunk);
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  T* m = static_cast<T*>(a.exp_avg);
  T* v = static_cast<T*>(a.exp_avg_sq);
  const T b1 = T(s.beta1), b2 = T(s.beta2), eps = T(s.eps), wd = T(s.weight_decay);
  const T step_size = T(s.step_size), inv_sqrt_bc2 = T(s.inv_sqrt_bc2), decay = T(s.decay);
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    T d = g[k];
    T pk = p[k];
    if (s.decoupled) pk *= decay;
    else d += wd * pk;
    const T mk = b1 * m[k] + (T(1) - b1) * d;
    const T vk = b2 * v[k] + (T(1) - b2) * d * d;
    m[k] = mk;
    v[k] = vk;
    T den;
    if constexpr (std::is_same_v<T, float>) den = sqrtf(vk) * inv_sqrt_bc2 + eps;
    else den = ::sqrt(vk) * inv_sqrt_bc2 + eps;
    p[k] = pk - step_size * mk / den;
  }
}

}  // namespace

void adam_step(ElemType t, const AdamTensor* tensors, int count, const AdamStep& s, void* stream) {
  EMBER_CHECK(count >= 0 && count <= kMaxTensorsPerLaunch, "adam_step: ", count, " tensors in one launch (at most ",
              kMaxTensorsPerLaunch, ")");
  if (count == 0) return;
  AdamBatch batch{};
  int64_t most = 0;
  for (int i = 0; i < count; ++i) {
    batch.t[i] = tensors[i];
    most = std::max(most, tensors[i].numel);
  }
  if (most == 0) return;
  const dim3 grid(static_cast<unsigned>((most + kAdamChunk - 1) / kAdamChunk), static_cast<unsigned>(count));
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32) adam_kernel<float><<<grid, kThreads, 0, st>>>(batch, s);
  else if (t == ElemType::f64) adam_kernel<double><<<grid, kThreads, 0, st>>>(batch, s);
  else EMBER_FAIL("Adam: the fused CUDA step takes f32 or f64 parameters");
  EMBER_CUDA_LAUNCHED("adam_step");
}

}  // namespace ember::kernels::cuda
