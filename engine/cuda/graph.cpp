// CUDA graph capture and replay (see graph.h). In a CPU-only build every use raises.
#include "ember/engine/cuda/graph.h"

#include "ember/engine/cuda/graph_pool.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/error.h"

#if EMBER_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ember/kernels/cuda/check.h"
#endif

namespace ember::cuda {

#if EMBER_WITH_CUDA

using kernels::cuda::check_cuda;

struct CudaGraph::Impl {
  int device = 0;
  cudaGraphExec_t exec = nullptr;
  uint64_t pool = 0;  // the allocator pool that holds the graph's memory (0: none)
};

CudaGraph::CudaGraph(int device) : impl_(std::make_unique<Impl>()) {
  EMBER_CHECK(device >= 0 && device < kMaxDevices, "CudaGraph: cuda:", device, ": device indices go up to ",
              kMaxDevices - 1);
  impl_->device = device;
}

CudaGraph::~CudaGraph() {
  try {
    reset();
  } catch (...) {  // a destructor must not throw; reset only fails on a broken CUDA context
  }
}

bool CudaGraph::captured() const { return impl_->exec != nullptr; }
int CudaGraph::device() const { return impl_->device; }

void CudaGraph::reset() {
  Impl& g = *impl_;
  if (g.exec) {
    // Let replays in flight finish before their graph goes (never while this device captures:
    // that would break the capture; the stream's order keeps the blocks safe anyway).
    if (!capturing(g.device)) {
      set_device(g.device);
      cudaStreamSynchronize(static_cast<cudaStream_t>(stream(g.device)));
    }
    cudaGraphExecDestroy(g.exec);
    cudaGetLastError();
    g.exec = nullptr;
  }
  if (g.pool) {
    detail::release_graph_pool(g.device, g.pool);
    g.pool = 0;
  }
}

void CudaGraph::capture(const std::function<void()>& step) {
  Impl& g = *impl_;
  check_device(Device::cuda(g.device), "CudaGraph::capture");
  EMBER_CHECK(!capturing(g.device), "CudaGraph::capture: a capture is already in progress on cuda:", g.device,
              " (captures do not nest)");
  reset();
  // Errors of earlier asynchronous work show here, not as a failed capture.
  synchronize(g.device);
  auto s = static_cast<cudaStream_t>(stream(g.device));
  g.pool = detail::create_graph_pool(g.device);
  detail::begin_pool_capture(g.device, g.pool);
  // Thread-local mode: an unsafe CUDA call (a synchronisation, a plain cudaMalloc) made by this
  // thread invalidates the capture, which ember turns into an error below; other threads (a
  // loader with its own CUDA work) are not restricted. The allocator's own cudaMalloc switches
  // to relaxed mode (allocator.cpp).
  cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    detail::end_pool_capture(g.device);
    reset();
    check_cuda(e, "cudaStreamBeginCapture", "CudaGraph::capture");
  }
  detail::set_capturing(g.device, true);
  auto end_capture = [&](cudaGraph_t* graph) {
    cudaError_t r = cudaStreamEndCapture(s, graph);
    detail::set_capturing(g.device, false);
    detail::end_pool_capture(g.device);
    return r;
  };
  try {
    step();
  } catch (...) {
    cudaGraph_t graph = nullptr;
    end_capture(&graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // the abandoned capture's status is not the error to report
    reset();
    throw;
  }
  cudaGraph_t graph = nullptr;
  e = end_capture(&graph);
  if (e != cudaSuccess || !graph) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    reset();
    EMBER_FAIL("CudaGraph::capture: cudaStreamEndCapture failed (", cudaGetErrorName(e), ": ", cudaGetErrorString(e),
               "): a CUDA call in the captured step is not allowed during capture (a synchronisation, a blocking "
               "copy, or a library that allocates); run the step eagerly once before capturing");
  }
  e = cudaGraphInstantiate(&g.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    g.exec = nullptr;
    reset();
    check_cuda(e, "cudaGraphInstantiate", "CudaGraph::capture");
  }
}

void CudaGraph::replay() {
  Impl& g = *impl_;
  EMBER_CHECK(g.exec, "CudaGraph::replay: nothing captured on cuda:", g.device, " (call capture first)");
  EMBER_CHECK(!capturing(g.device), "CudaGraph::replay: cuda:", g.device, " is capturing another graph");
  check_cuda(cudaGraphLaunch(g.exec, static_cast<cudaStream_t>(stream(g.device))), "cudaGraphLaunch",
             "CudaGraph::replay");
}

#else  // CPU-only build

namespace {
[[noreturn]] void no_graphs(const char* what) {
  EMBER_FAIL(what, ": CUDA graphs need the CUDA backend, and this ember was built without it (configure with "
                   "-DEMBER_CUDA=AUTO or ON where nvcc exists); on the CPU run the step eagerly");
}
}  // namespace

struct CudaGraph::Impl {
  int device = 0;
};

CudaGraph::CudaGraph(int device) : impl_(std::make_unique<Impl>()) { impl_->device = device; }
CudaGraph::~CudaGraph() = default;
bool CudaGraph::captured() const { return false; }
int CudaGraph::device() const { return impl_->device; }
void CudaGraph::reset() {}
void CudaGraph::capture(const std::function<void()>&) { no_graphs("CudaGraph::capture"); }
void CudaGraph::replay() { no_graphs("CudaGraph::replay"); }

#endif

}  // namespace ember::cuda
