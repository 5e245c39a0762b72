// Devices, streams and copies (see runtime.h). In a CPU-only build every function answers
// "no device" and nothing here touches CUDA.
#include "ember/engine/cuda/runtime.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

#include "ember/engine/cuda/graph_pool.h"
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

namespace {
std::array<std::atomic<bool>, kMaxDevices> capture_active{};

const char* const kCaptureHint =
    "; a captured step must run on the GPU only: move host reads (item(), to_vector, .to(cpu), printing, NaN "
    "checks) and host -> device copies (loader batches, tensors made from host values) outside the capture, and "
    "copy new inputs into the graph's static input tensors before replay()";
}  // namespace

bool capturing(int index) {
  if (index >= 0) return index < kMaxDevices && capture_active[index].load(std::memory_order_acquire);
  for (auto& a : capture_active)
    if (a.load(std::memory_order_acquire)) return true;
  return false;
}

namespace detail {
void set_capturing(int index, bool on) {
  EMBER_CHECK(index >= 0 && index < kMaxDevices, "cuda:", index, ": device indices go up to ", kMaxDevices - 1);
  capture_active[index].store(on, std::memory_order_release);
}
}  // namespace detail

void synchronize(int index) {
  if (index >= 0) {
    EMBER_CHECK(!capturing(index), "synchronize(cuda:", index, "): waits for the GPU on the host during CUDA graph "
                "capture", kCaptureHint);
    check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream(index))), "cudaStreamSynchronize",
               "synchronize");
    return;
  }
  for (int i = 0; i < kMaxDevices; ++i)
    if (streams[i].load(std::memory_order_acquire)) synchronize(i);
}

namespace {
// Host -> device copies through page-locked memory: the host copies into the staging buffer and
// returns; the DMA runs on the stream. Before the buffer is written again the previous copy out
// of it must have finished, which its event tells. One buffer per device, grown on demand up to
// kMaxStaging (larger copies go in chunks of that size).
constexpr size_t kMaxStaging = 16u << 20;

struct Staging {
  std::mutex mutex;
  void* buf = nullptr;
  size_t cap = 0;
  cudaEvent_t done = nullptr;  // recorded after the last copy out of buf
  bool pending = false;        // done was recorded and not yet waited for
};
std::array<Staging, kMaxDevices> stagings;  // never destroyed before the streams' last use matters

// Returns false (nothing queued) where no pinned memory can be had; the caller copies directly.
bool staged_to_device(void* dst, const void* src, size_t n, int dev, cudaStream_t s) {
  Staging& st = stagings[dev];
  std::lock_guard<std::mutex> lock(st.mutex);
  if (!st.done)
    check_cuda(cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming), "cudaEventCreateWithFlags",
               "host -> device staging");
  for (size_t off = 0; off < n;) {
    const size_t chunk = std::min(n - off, kMaxStaging);
    if (st.pending) {  // the last copy out of the buffer must have read it
      check_cuda(cudaEventSynchronize(st.done), "cudaEventSynchronize", "host -> device staging");
      st.pending = false;
    }
    if (st.cap < chunk) {
      if (st.buf) cudaFreeHost(st.buf);  // no copy reads it (waited above)
      st.buf = nullptr;
      st.cap = 0;
      const size_t want = std::min(kMaxStaging, std::max(chunk, size_t{1} << 20));
      if (cudaHostAlloc(&st.buf, want, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        st.buf = nullptr;
        if (off == 0) return false;
        // mid-copy: finish the rest without staging
        check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, n - off,
                                   cudaMemcpyHostToDevice, s),
                   "cudaMemcpyAsync", "host -> device copy");
        return true;
      }
      st.cap = want;
    }
    std::memcpy(st.buf, static_cast<const char*>(src) + off, chunk);
    check_cuda(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.buf, chunk, cudaMemcpyHostToDevice, s),
               "cudaMemcpyAsync", "host -> device copy");
    check_cuda(cudaEventRecord(st.done, s), "cudaEventRecord", "host -> device staging");
    st.pending = true;
    off += chunk;
  }
  return true;
}
}  // namespace

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  EMBER_CHECK(dst_dev.is_cuda() || src_dev.is_cuda(), "copy_bytes: neither side is on a GPU");
  const int dev = dst_dev.is_cuda() ? dst_dev.index : src_dev.index;
  // Inside a capture only device-side copies on the capturing device can be recorded.
  if (dst_dev.is_cpu())
    EMBER_CHECK(!capturing(dev), "device -> host copy (item(), to_vector, .to(cpu), printing) of ", n,
                " bytes from ", src_dev.str(), ": reads GPU memory on the host during CUDA graph capture", kCaptureHint);
  if (src_dev.is_cpu())
    EMBER_CHECK(!capturing(dev), "host -> device copy of ", n, " bytes to ", dst_dev.str(),
                ": copies host memory during CUDA graph capture", kCaptureHint);
  if (dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev.index != src_dev.index)
    EMBER_CHECK(!capturing(dst_dev.index) && !capturing(src_dev.index), "copy from ", src_dev.str(), " to ",
                dst_dev.str(), ": a copy between GPUs waits on the host, which a CUDA graph capture forbids",
                kCaptureHint);
  // Same-device and host<->device copies run on the GPU side's stream. A copy between two GPUs
  // waits for the source's stream, then runs on the destination's (peer access where enabled,
  // else staged by the driver), and is waited for before returning: the source's memory may be
  // freed or written by its own stream, which knows nothing of the destination's.
  const bool across = dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev.index != src_dev.index;
  if (across) synchronize(src_dev.index);
  auto s = static_cast<cudaStream_t>(stream(dev));
  if (src_dev.is_cpu() && staged_to_device(dst, src, n, dev, s)) return;
  check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s), "cudaMemcpyAsync",
             dst_dev.is_cpu() ? "device -> host copy" : (src_dev.is_cpu() ? "host -> device copy" : "device copy"));
  if (dst_dev.is_cpu() || across)
    check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize", across ? "copy between GPUs" : "device -> host copy");
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
bool capturing(int) { return false; }
namespace detail {
void set_capturing(int, bool) {}
}  // namespace detail
void copy_bytes(void*, Device, const void*, Device, size_t) { no_cuda("copy"); }

#endif

}  // namespace ember::cuda
