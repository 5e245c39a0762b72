// Adam / AdamW, Adamax and SGD as one multi-tensor kernel each. blockIdx.y picks the tensor (its
// pointers travel in the kernel's parameter block, up to 32 per launch), blockIdx.x a chunk of
// it; blocks past a small tensor's end return at once. Adam reads p, g, m, v and writes p, m, v:
// 28 bytes per f32 element, so the step runs at memory bandwidth and its cost is the launch
// count. The rule is a template parameter, so each kernel carries only its own arithmetic.
#include <type_traits>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/math.cuh"
#include "ember/kernels/cuda/optim.h"

namespace ember::kernels::cuda {

namespace {

constexpr int64_t kChunk = 8192;

struct Batch {
  OptimTensor t[kMaxTensorsPerLaunch];
};

template <typename T, OptimRule RULE>
__global__ void optim_kernel(Batch batch, OptimStep s) {
  const OptimTensor& a = batch.t[blockIdx.y];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  if (begin >= a.numel) return;
  const int64_t end = min(a.numel, begin + kChunk);
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  T* s0 = static_cast<T*>(a.state0);
  T* s1 = static_cast<T*>(a.state1);
  const T b1 = T(s.beta1), b2 = T(s.beta2), eps = T(s.eps), wd = T(s.weight_decay);
  double lr = s.lr, step_size = s.step_size, inv_sqrt_bc2 = s.inv_sqrt_bc2, decay = s.decay;
  bool first = s.first;
  if (s.device_scalars) {  // a graph replay: this step's values, uploaded before the launch
    lr = s.device_scalars[0];
    step_size = s.device_scalars[1];
    inv_sqrt_bc2 = s.device_scalars[2];
    decay = s.device_scalars[3];
    first = s.device_scalars[4] != 0;
  }
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    T d = g[k];
    T pk = p[k];
    if constexpr (RULE == OptimRule::adam) {
      if (s.decoupled) pk *= T(decay);
      else d += wd * pk;
      const T mk = b1 * s0[k] + (T(1) - b1) * d;
      const T vk = b2 * s1[k] + (T(1) - b2) * d * d;
      s0[k] = mk;
      s1[k] = vk;
      p[k] = pk - T(step_size) * mk / (m_sqrt(vk) * T(inv_sqrt_bc2) + eps);
    } else if constexpr (RULE == OptimRule::adamax) {
      d += wd * pk;
      const T mk = b1 * s0[k] + (T(1) - b1) * d;
      const T decayed = b2 * s1[k], fresh = m_abs(d) + eps;
      const T uk = decayed < fresh ? fresh : decayed;  // std::max's order, NaN included
      s0[k] = mk;
      s1[k] = uk;
      p[k] = pk - T(step_size) * mk / uk;
    } else {  // sgd
      d += wd * pk;
      if (s0) {
        const T mom = T(s.momentum);
        const T bk = first ? d : mom * s0[k] + (T(1) - T(s.dampening)) * d;
        s0[k] = bk;
        d = s.nesterov ? d + mom * bk : bk;
      }
      p[k] = pk - T(lr) * d;
    }
  }
}

template <typename T>
void launch(const Batch& batch, const OptimStep& s, dim3 grid, cudaStream_t st) {
  switch (s.rule) {
    case OptimRule::adam: optim_kernel<T, OptimRule::adam><<<grid, kThreads, 0, st>>>(batch, s); break;
    case OptimRule::adamax: optim_kernel<T, OptimRule::adamax><<<grid, kThreads, 0, st>>>(batch, s); break;
    case OptimRule::sgd: optim_kernel<T, OptimRule::sgd><<<grid, kThreads, 0, st>>>(batch, s); break;
  }
}

const char* rule_name(OptimRule r) {
  return r == OptimRule::adam ? "adam_step" : (r == OptimRule::adamax ? "adamax_step" : "sgd_step");
}

}  // namespace

void optim_step(ElemType t, const OptimTensor* tensors, int count, const OptimStep& s, void* stream) {
  EMBER_CHECK(count >= 0 && count <= kMaxTensorsPerLaunch, rule_name(s.rule), ": ", count,
              " tensors in one launch (at most ", kMaxTensorsPerLaunch, ")");
  if (count == 0) return;
  Batch batch{};
  int64_t most = 0;
  for (int i = 0; i < count; ++i) {
    batch.t[i] = tensors[i];
    most = std::max(most, tensors[i].numel);
  }
  if (most == 0) return;
  const dim3 grid(static_cast<unsigned>((most + kChunk - 1) / kChunk), static_cast<unsigned>(count));
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32) launch<float>(batch, s, grid, st);
  else if (t == ElemType::f64) launch<double>(batch, s, grid, st);
  else EMBER_FAIL(rule_name(s.rule), ": the fused CUDA step takes f32 or f64 parameters");
  EMBER_CUDA_LAUNCHED(rule_name(s.rule));
}

}  // namespace ember::kernels::cuda
