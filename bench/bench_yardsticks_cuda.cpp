// Library yardsticks on the GPU, next to ember's own kernels in the same binary: cuDNN's
// convolutions on issue 6's conv3x3 shapes and cuBLAS's square SGEMM (the roofline probe of
// ../shared/reference/torch_workloads.py). Built only where the CUDA backend is (and, for the
// convolutions, cuDNN's headers and library are found: EMBER_HAVE_CUDNN); never a dependency of
// ember itself. Names: yardstick_cudnn_<workload>/<prec>, yardstick_cublas_sgemm8192/<prec>, so
// the side-by-side runner's ember rows (kernels_<workload>/<prec>) can be read against them.
//
// Each timed iteration runs the work and waits for the device, as the PyTorch reference does.
// cuDNN's algorithms are chosen once per shape with cudnnFind* (measured, fastest first).
#include <benchmark/benchmark.h>

#if EMBER_HAVE_CUDA_BENCH
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if EMBER_HAVE_CUDNN
#include <cudnn.h>
#endif

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "ember/engine/cuda/runtime.h"
#include "gpu_bench.h"

namespace {

using ember::bench::gpu_or_skip;

// Device memory of n floats filled with a small non-zero pattern (never zeros).
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) p = nullptr;
    else cudaMemset(p, 0x3c, bytes);  // 0x3c3c3c3c: 0.0115 in f32, 0.0115 in bf16 pairs
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// ---- cuBLAS SGEMM 8192^3: the probe of torch_workloads.py (fp32 and tf32) ----
void BM_cublas_sgemm(benchmark::State& state, bool tf32) {
  if (!gpu_or_skip(state)) return;
  const int n = 8192;
  DeviceBuffer a(size_t(n) * n * 4), b(size_t(n) * n * 4), c(size_t(n) * n * 4);
  cublasHandle_t h;
  if (!a.p || !b.p || !c.p || cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cuBLAS setup failed");
    return;
  }
  const float one = 1, zero = 0;
  const cublasComputeType_t ct = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  for (auto _ : state) {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.p, CUDA_R_32F, n, b.p, CUDA_R_32F, n, &zero, c.p,
                 CUDA_R_32F, n, ct, CUBLAS_GEMM_DEFAULT);
    cudaDeviceSynchronize();
  }
  cublasDestroy(h);
  state.counters["TFLOP/s"] =
      benchmark::Counter(2.0 * n * n * double(n) * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

#if EMBER_HAVE_CUDNN
// ---- cuDNN conv3x3, stride 1, padding 1, C -> C channels ----
struct CudnnConv {
  cudnnHandle_t h = nullptr;
  cudnnTensorDescriptor_t x = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t workspace = 0;
  bool ok = false;

  CudnnConv(int N, int C, int H, const std::string& prec, void* xp, void* wp, void* yp) {
    const cudnnDataType_t dt = prec == "bf16" ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) return;
    cudnnCreateTensorDescriptor(&x);
    cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, dt, N, C, H, H);
    cudnnCreateFilterDescriptor(&w);
    cudnnSetFilter4dDescriptor(w, dt, CUDNN_TENSOR_NCHW, C, C, 3, 3);
    cudnnCreateConvolutionDescriptor(&conv);
    cudnnSetConvolution2dDescriptor(conv, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    // fp32: no tensor cores (FMA only); tf32 and bf16: tensor cores.
    cudnnSetConvolutionMathType(conv, prec == "fp32" ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH);
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t f{};
    cudnnConvolutionBwdDataAlgoPerf_t d{};
    cudnnConvolutionBwdFilterAlgoPerf_t g{};
    if (cudnnFindConvolutionForwardAlgorithm(h, x, w, conv, x, 1, &found, &f) != CUDNN_STATUS_SUCCESS || !found) return;
    if (cudnnFindConvolutionBackwardDataAlgorithm(h, w, x, conv, x, 1, &found, &d) != CUDNN_STATUS_SUCCESS || !found)
      return;
    if (cudnnFindConvolutionBackwardFilterAlgorithm(h, x, x, conv, w, 1, &found, &g) != CUDNN_STATUS_SUCCESS || !found)
      return;
    fwd = f.algo;
    bwd_data = d.algo;
    bwd_filter = g.algo;
    workspace = std::max({f.memory, d.memory, g.memory});
    (void)xp, (void)wp, (void)yp;
    ok = true;
  }
  ~CudnnConv() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (x) cudnnDestroyTensorDescriptor(x);
    if (h) cudnnDestroy(h);
  }
};

void BM_cudnn_conv3x3(benchmark::State& state, int N, int C, int H, std::string prec, bool backward) {
  if (!gpu_or_skip(state)) return;
  const size_t elem = prec == "bf16" ? 2 : 4;
  const size_t act = size_t(N) * C * H * H * elem, wbytes = size_t(C) * C * 9 * elem;
  DeviceBuffer x(act), y(act), gy(act), gx(act), w(wbytes), gw(wbytes);
  if (!x.p || !y.p || !gy.p || !gx.p || !w.p || !gw.p) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  CudnnConv c(N, C, H, prec, x.p, w.p, y.p);
  if (!c.ok) {
    state.SkipWithError("cuDNN has no algorithm for this case (or cuDNN could not start)");
    return;
  }
  DeviceBuffer ws(std::max<size_t>(c.workspace, 1));
  const float one = 1, zero = 0;
  for (auto _ : state) {
    cudnnConvolutionForward(c.h, &one, c.x, x.p, c.w, w.p, c.conv, c.fwd, ws.p, c.workspace, &zero, c.x, y.p);
    if (backward) {
      cudnnConvolutionBackwardData(c.h, &one, c.w, w.p, c.x, gy.p, c.conv, c.bwd_data, ws.p, c.workspace, &zero, c.x,
                                   gx.p);
      cudnnConvolutionBackwardFilter(c.h, &one, c.x, x.p, c.x, gy.p, c.conv, c.bwd_filter, ws.p, c.workspace, &zero,
                                     c.w, gw.p);
    }
    cudaDeviceSynchronize();
  }
  const double flops = 2.0 * N * C * C * 9.0 * H * H * (backward ? 3 : 1);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

int register_cudnn() {
  for (const char* prec : {"fp32", "tf32", "bf16"})
    for (const std::array<int, 3>& s : std::vector<std::array<int, 3>>{{128, 128, 32}, {128, 256, 16}, {128, 256, 8}})
      for (bool backward : {false, true}) {
        const std::string name = std::string("yardstick_cudnn_conv3x3_") + (backward ? "fwd+bwd" : "fwd") + "(N" +
                                 std::to_string(s[0]) + ",C" + std::to_string(s[1]) + ",H" + std::to_string(s[2]) +
                                 ")/" + prec;
        benchmark::RegisterBenchmark(name.c_str(), BM_cudnn_conv3x3, s[0], s[1], s[2], std::string(prec), backward)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
  return 0;
}
const int cudnn_registered = register_cudnn();
#endif  // EMBER_HAVE_CUDNN

}  // namespace

BENCHMARK_CAPTURE(BM_cublas_sgemm, fp32, false)->Name("yardstick_cublas_sgemm8192/fp32")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_cublas_sgemm, tf32, true)->Name("yardstick_cublas_sgemm8192/tf32")->Unit(benchmark::kMillisecond)->UseRealTime();
#endif  // EMBER_HAVE_CUDA_BENCH
