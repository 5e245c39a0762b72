// CUDA graphs: a step of GPU work (say, a training step's forward and backward) recorded once
// and replayed with one launch, which removes the per-kernel launch cost of small networks. No
// CUDA header is included here: in a CPU-only build the class exists and every use raises.
//
// How to use it (the DDE trainer's `--cuda-graphs` does exactly this, models/dde/trainer.cpp):
//   1. Run the step eagerly once first (a warm-up): cuBLAS creates its handle and workspace,
//      and the caching allocator holds every block size the step needs.
//   2. Allocate static inputs on the device (Tensor::empty) and capture the step reading them:
//        cuda::CudaGraph g(0);
//        g.capture([&] { loss = f(x_static, noise_static); loss.backward(); });
//      Capturing queues nothing: the kernels run at the first replay().
//   3. Each iteration: copy new values into the static inputs (x_static.copy_(batch)), then
//      g.replay(). Outputs (loss, parameters' .grad()) are the tensors made during capture; they
//      hold the new values after each replay.
//
// What a captured step may not do (each raises an ember::Error naming it, not a CUDA error):
// read GPU memory on the host (item(), to_vector, .to(cpu), printing, NaN checks), copy host
// memory to the device (tensors made from host values), synchronise, or run an op that draws
// random numbers on the CPU. Scalars given to ops (a learning rate, a sigma, Adam's bias
// corrections) are baked into the graph as constants, and so is the Philox offset of a GPU
// randn: draw random numbers outside and copy them into a static input, and capture again when
// a scalar changes. Shapes are static.
//
// Memory: while capturing, the device's allocations come from a private pool of the caching
// allocator owned by this graph (engine/cuda/allocator.cpp), so the addresses the graph's
// kernels use are given to no other tensor while the graph lives; replays allocate nothing.
// The pool returns to the cache when the graph is reset or destroyed.
//
// One stream per device (runtime.h): the replay is ordered after everything queued before it
// and before everything queued after it, like any op. Captures do not nest; one thread captures
// at a time per device (other threads must not allocate on that device meanwhile).
#pragma once
#include <functional>
#include <memory>

namespace ember::cuda {

class CudaGraph {
 public:
  explicit CudaGraph(int device = 0);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records the GPU work `step` queues on the device's stream (cudaStreamBeginCapture in
  // thread-local mode ... cudaStreamEndCapture, cudaGraphInstantiate). Replaces an earlier
  // capture. If `step` throws, the capture is abandoned, nothing is kept, and the error
  // propagates.
  void capture(const std::function<void()>& step);
  // Queues the captured work on the device's stream (cudaGraphLaunch); returns without waiting.
  void replay();
  bool captured() const;
  int device() const;
  // Drops the captured graph (waiting for its replays) and returns its memory pool to the cache.
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember::cuda
