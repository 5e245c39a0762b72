// Devices, streams and copies (see runtime.h). In a CPU-only build every function answers
// "no device" and nothing here touches CUDA.
#include "ember/engine/cuda/runtime.h"

#include <array>
#include <atomic>
#include <mutex>

#include "ember/engine/error.h"

#if EMBER_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ember/kernels/cuda/check.h"
#endif

namespace ember::cuda {

bool built() { return EMBER_WITH_CUDA != 0; }

#if EMBER_WITH_CUDA

using kernels::cuda::check_cuda;

namespace {
struct Probe {
  int count = 0;
  std::string reason;
};
// Asked once: the driver's answer does not change while the process runs.
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      r.reason = std::string("the CUDA runtime finds no usable GPU (") + cudaGetErrorName(e) + ": " +
                 cudaGetErrorString(e) + ")";
      cudaGetLastError();  // not sticky, but leave no error behind
    } else if (n == 0) {
      r.reason = "the CUDA runtime reports 0 GPUs";
    }
    r.count = e == cudaSuccess ? n : 0;
    return r;
  }();
  return p;
}

// Created on first use, never destroyed (tensors may outlive statics). Every op asks for its
// stream, so the common case is one atomic load; the mutex only guards creation.
std::mutex create_mutex;
std::array<std::atomic<cudaStream_t>, kMaxDevices> streams{};
thread_local int current_device = -1;
}  // namespace

int device_count() { return probe().count; }
bool available() { return device_count() > 0; }
std::string unavailable_reason() { return probe().reason; }

void check_device(const Device& d, const char* what) {
  EMBER_CHECK(d.is_cuda(), what, ": expected a CUDA device, got ", d.str());
  EMBER_CHECK(available(), what, ": cannot use ", d.str(), ": ", unavailable_reason(), "; use the CPU (--device cpu)");
  EMBER_CHECK(d.index >= 0 && d.index < device_count(), what, ": ", d.str(), " does not exist (this machine has ",
              device_count(), " GPU", device_count() == 1 ? "" : "s", ": cuda:0..cuda:", device_count() - 1, ")");
}

void set_device(int index) {
  if (current_device == index) return;
  check_cuda(cudaSetDevice(index), "cudaSetDevice", "set_device");
  current_device = index;
}

void* stream(int index) {
  EMBER_CHECK(index >= 0 && index < kMaxDevices, "cuda:", index, ": device indices go up to ", kMaxDevices - 1);
  set_device(index);
  cudaStream_t s = streams[index].load(std::memory_order_acquire);
  if (s) return s;
  std::lock_guard<std::mutex> lock(create_mutex);
  s = streams[index].load(std::memory_order_relaxed);
  if (!s) {
    // Non-blocking: no implicit ordering against the legacy default stream, which ember never
    // uses; a stream of its own is also what CUDA graph capture needs.
    check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", "stream");
    streams[index].store(s, std::memory_order_release);
  }
  return s;
}

void synchronize(int index) {
  if (index >= 0) {
    check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream(index))), "cudaStreamSynchronize",
               "synchronize");
    return;
  }
  for (int i = 0; i < kMaxDevices; ++i)
    if (streams[i].load(std::memory_order_acquire)) synchronize(i);
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  EMBER_CHECK(dst_dev.is_cuda() || src_dev.is_cuda(), "copy_bytes: neither side is on a GPU");
  // Same-device and host<->device copies run on the GPU side's stream. A copy between two GPUs
  // waits for the source's stream, then runs on the destination's (peer access where enabled,
  // else staged by the driver).
  const int dev = dst_dev.is_cuda() ? dst_dev.index : src_dev.index;
  if (dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev.index != src_dev.index) synchronize(src_dev.index);
  auto s = static_cast<cudaStream_t>(stream(dev));
  check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s), "cudaMemcpyAsync",
             dst_dev.is_cpu() ? "device -> host copy" : (src_dev.is_cpu() ? "host -> device copy" : "device copy"));
  if (dst_dev.is_cpu()) check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize", "device -> host copy");
}

#else  // CPU-only build

namespace {
[[noreturn]] void no_cuda(const char* what) {
  EMBER_FAIL(what, ": this ember was built without the CUDA backend (configure with -DEMBER_CUDA=AUTO or ON where "
                   "nvcc exists); use the CPU (--device cpu)");
}
}  // namespace

int device_count() { return 0; }
bool available() { return false; }
std::string unavailable_reason() { return "this ember was built without the CUDA backend"; }
void check_device(const Device& d, const char* what) {
  EMBER_CHECK(d.is_cuda(), what, ": expected a CUDA device, got ", d.str());
  EMBER_FAIL(what, ": cannot use ", d.str(), ": this ember was built without the CUDA backend (configure with "
             "-DEMBER_CUDA=AUTO or ON where nvcc exists); use the CPU (--device cpu)");
}
void set_device(int) { no_cuda("set_device"); }
void* stream(int) { no_cuda("stream"); }
void synchronize(int) {}
void copy_bytes(void*, Device, const void*, Device, size_t) { no_cuda("copy"); }

#endif

}  // namespace ember::cuda
