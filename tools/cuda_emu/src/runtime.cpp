// The emulated CUDA runtime: "device" memory is host memory kept in a registry, streams run
// their work at once on the calling thread, and graph capture records that work (as closures)
// instead of running it. The point is not speed but catching on the CPU the mistakes a GPU
// would punish: copies in the wrong direction or past an allocation, reads of uninitialised
// device memory (poisoned with NaN bytes), and calls that break a CUDA graph capture.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <cuda_runtime_api.h>

#include "emu/hooks.h"

using Work = std::function<void()>;

struct CUgraph_st {
  std::vector<Work> nodes;
};
struct CUgraphExec_st {
  std::vector<Work> nodes;
};
struct CUstream_st {
  int device = 0;
  unsigned flags = 0;
  // Capture state: `graph` is non-null while capturing.
  CUgraph_st* graph = nullptr;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  unsigned long long capture_id = 0;
};
struct CUevent_st {
  unsigned flags = 0;
  std::chrono::steady_clock::time_point when{};
};

namespace {

constexpr int kSmCount = 132;                     // an H100 SXM
constexpr int kMaxOptinSmem = 232448;             // 227 KiB: the opt-in per-block limit
constexpr int kDefaultSmem = 48 * 1024;           // without cudaFuncSetAttribute
constexpr size_t kDefaultMemory = size_t{80} << 30;  // what cudaMemGetInfo reports as total

struct Alloc {
  size_t size;
  int device;  // -1: pinned host memory
  bool owned;  // false: cudaHostRegister'ed memory the caller owns
};

// Everything shared between threads, behind one mutex (the emulator is not about speed).
struct State {
  std::mutex m;
  std::map<uintptr_t, Alloc> device;  // base -> allocation
  std::map<uintptr_t, Alloc> pinned;
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  std::unordered_map<const void*, int> smem;  // kernel -> allowed dynamic shared bytes
  std::vector<size_t> used;                   // bytes allocated per device
  size_t limit = kDefaultMemory;
  int devices = 1;
  unsigned long long next_capture = 1;
};

State& state() {
  static State* s = [] {
    auto* st = new State();  // never destroyed: ember frees tensors after main returns
    if (const char* n = std::getenv("EMBER_EMU_DEVICES")) st->devices = std::max(0, std::atoi(n));
    if (const char* b = std::getenv("EMBER_EMU_DEVICE_MEMORY")) st->limit = std::strtoull(b, nullptr, 10);
    st->used.assign(std::max(st->devices, 1), 0);
    return st;
  }();
  return *s;
}

thread_local int current_device = 0;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
thread_local cudaError_t last_error = cudaSuccess;   // what cudaGetLastError returns
thread_local cudaError_t async_error = cudaSuccess;  // a kernel fault, for the next synchronisation

// Every failing call leaves its error for cudaGetLastError, as the real runtime does.
cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}
cudaError_t fail(cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "[cuda-emu] %s: %s\n", cudaGetErrorName(e), why.c_str());
  return fail(e);
}

// The allocation in `table` containing address p, or nullptr. The caller holds the mutex.
const std::pair<const uintptr_t, Alloc>* find(const std::map<uintptr_t, Alloc>& table, const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = table.upper_bound(a);
  if (it == table.begin()) return nullptr;
  --it;
  return a < it->first + std::max<size_t>(it->second.size, 1) ? &*it : nullptr;
}

// Whether this thread may make a capture-unsafe call now. If not, every capture the call
// would break is invalidated, as the real runtime does, and the caller returns
// cudaErrorStreamCaptureUnsupported. The caller holds the mutex.
bool unsafe_call_allowed(State& s) {
  if (thread_mode == cudaStreamCaptureModeRelaxed) return true;
  bool ok = true;
  for (CUstream_st* st : s.streams) {
    if (!st->graph || st->mode == cudaStreamCaptureModeRelaxed) continue;
    const bool mine = st->capture_thread == std::this_thread::get_id();
    if (mine || (thread_mode == cudaStreamCaptureModeGlobal && st->mode == cudaStreamCaptureModeGlobal)) {
      st->invalidated = true;
      ok = false;
    }
  }
  return ok;
}

cudaError_t capture_unsupported(const char* call) {
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(call) + " is not allowed during a stream capture in this thread's capture mode; the "
                                  "capture is invalidated");
}

bool known_stream(State& s, cudaStream_t st) { return !st || s.streams.count(st); }

// Where a copy's end lies. The caller holds the mutex.
enum class Where { pageable, pinned, device };
struct Side {
  Where where;
  const std::pair<const uintptr_t, Alloc>* alloc;
};
Side locate(State& s, const void* p) {
  if (auto* a = find(s.device, p)) return {Where::device, a};
  if (auto* a = find(s.pinned, p)) return {Where::pinned, a};
  return {Where::pageable, nullptr};
}

// Checks that [p, p + n) lies inside its allocation (device or pinned).
cudaError_t check_extent(const Side& side, const void* p, size_t n, const char* call, const char* which) {
  if (!side.alloc) return cudaSuccess;
  const size_t off = reinterpret_cast<uintptr_t>(p) - side.alloc->first, size = side.alloc->second.size;
  if (off + n <= size) return cudaSuccess;
  return fail(cudaErrorInvalidValue, std::string(call) + ": " + std::to_string(n) + " bytes at offset " +
                                         std::to_string(off) + " of a " + std::to_string(size) + "-byte " +
                                         (side.where == Where::device ? "device" : "pinned host") + " allocation (" +
                                         which + ") run past its end");
}

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "an unknown cudaMemcpyKind";
}

cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream, bool async) {
  const char* call = async ? "cudaMemcpyAsync" : "cudaMemcpy";
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.m);
    if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle, std::string(call) + ": unknown stream");
    if (!async && !unsafe_call_allowed(s)) return capture_unsupported(call);
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return fail(cudaErrorInvalidValue, std::string(call) + ": null pointer");
    const Side d = locate(s, dst), sr = locate(s, src);
    const bool dd = d.where == Where::device, sd = sr.where == Where::device;
    bool ok = true;
    switch (kind) {
      case cudaMemcpyHostToHost: ok = !dd && !sd; break;
      case cudaMemcpyHostToDevice: ok = dd && !sd; break;
      case cudaMemcpyDeviceToHost: ok = !dd && sd; break;
      case cudaMemcpyDeviceToDevice: ok = dd && sd; break;
      case cudaMemcpyDefault: break;
      default: return fail(cudaErrorInvalidMemcpyDirection, std::string(call) + ": bad cudaMemcpyKind");
    }
    if (!ok)
      return fail(cudaErrorInvalidValue, std::string(call) + " with " + kind_name(kind) + ": the destination is " +
                                             (dd ? "device" : "host") + " memory and the source is " +
                                             (sd ? "device" : "host") + " memory");
    if (cudaError_t e = check_extent(d, dst, n, call, "destination")) return e;
    if (cudaError_t e = check_extent(sr, src, n, call, "source")) return e;
    // A capture can only record copies whose host side is page-locked: pageable memory would
    // be copied through a staging buffer at capture time, which a graph cannot replay.
    if (stream && stream->graph && (dd || sd) &&
        (d.where == Where::pageable || sr.where == Where::pageable)) {
      stream->invalidated = true;
      return fail(cudaErrorStreamCaptureUnsupported,
                  std::string(call) + ": a copy between device and pageable host memory cannot be captured; the "
                                      "capture is invalidated");
    }
  }
  return emu::submit(stream, [dst, src, n] { std::memmove(dst, src, n); });
}

cudaError_t memset_(void* p, int value, size_t n, cudaStream_t stream, bool async) {
  const char* call = async ? "cudaMemsetAsync" : "cudaMemset";
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.m);
    if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle, std::string(call) + ": unknown stream");
    if (!async && !unsafe_call_allowed(s)) return capture_unsupported(call);
    if (n == 0) return cudaSuccess;
    const Side d = locate(s, p);
    if (d.where != Where::device) return fail(cudaErrorInvalidValue, std::string(call) + ": not device memory");
    if (cudaError_t e = check_extent(d, p, n, call, "destination")) return e;
  }
  return emu::submit(stream, [p, value, n] { std::memset(p, value, n); });
}

cudaError_t host_alloc(void** ptr, size_t size, const char* call) {
  if (!ptr) return fail(cudaErrorInvalidValue, std::string(call) + ": null result pointer");
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported(call);
  void* p = ::operator new(std::max<size_t>(size, 1), std::align_val_t{256}, std::nothrow);
  if (!p) return fail(cudaErrorMemoryAllocation);
  s.pinned[reinterpret_cast<uintptr_t>(p)] = Alloc{size, -1, true};
  *ptr = p;
  return cudaSuccess;
}

}  // namespace

// ---- hooks for the kernel side (emu/hooks.h) ----

namespace emu {

namespace {
std::atomic<uint64_t> stream_work_run{0}, kernels_run{0};
}  // namespace

void note_kernel_run() { ++kernels_run; }

bool skip_device_work() {
  static const bool skip = [] {
    const char* v = std::getenv("EMBER_EMU_SKIP_KERNELS");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return skip;
}
WorkCounts work_counts() { return {kernels_run.load(), stream_work_run.load()}; }

cudaError_t submit(cudaStream_t stream, std::function<void()> work) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.m);
    if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle, "work submitted to an unknown stream");
    if (stream && stream->graph) {
      if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
      stream->graph->nodes.push_back(std::move(work));
      return cudaSuccess;
    }
  }
  ++stream_work_run;
  work();  // outside the lock: the work may itself call into the runtime
  return cudaSuccess;
}

void record_error(cudaError_t error, const std::string& what) {
  std::fprintf(stderr, "[cuda-emu] %s: %s\n", cudaGetErrorName(error), what.c_str());
  last_error = error;
  async_error = error;
}

int max_dynamic_shared_bytes(const void* kernel) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  auto it = s.smem.find(kernel);
  return it == s.smem.end() ? kDefaultSmem : it->second;
}

// For the emulated cuBLAS: whether [p, p + bytes) lies inside one device allocation.
bool is_device_range(const void* p, size_t bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  auto* a = find(s.device, p);
  return a && reinterpret_cast<uintptr_t>(p) - a->first + bytes <= a->second.size;
}

}  // namespace emu

// ---- errors ----

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  async_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define EMU_NAME(x) \
  case x: return #x;
    EMU_NAME(cudaSuccess) EMU_NAME(cudaErrorInvalidValue) EMU_NAME(cudaErrorMemoryAllocation)
    EMU_NAME(cudaErrorInitializationError) EMU_NAME(cudaErrorInvalidConfiguration)
    EMU_NAME(cudaErrorInvalidPitchValue) EMU_NAME(cudaErrorInvalidSymbol) EMU_NAME(cudaErrorInvalidHostPointer)
    EMU_NAME(cudaErrorInvalidDevicePointer) EMU_NAME(cudaErrorInvalidMemcpyDirection)
    EMU_NAME(cudaErrorInsufficientDriver) EMU_NAME(cudaErrorInvalidDeviceFunction) EMU_NAME(cudaErrorNoDevice)
    EMU_NAME(cudaErrorInvalidDevice) EMU_NAME(cudaErrorInvalidKernelImage) EMU_NAME(cudaErrorNoKernelImageForDevice)
    EMU_NAME(cudaErrorInvalidResourceHandle) EMU_NAME(cudaErrorIllegalState) EMU_NAME(cudaErrorNotReady)
    EMU_NAME(cudaErrorIllegalAddress) EMU_NAME(cudaErrorLaunchOutOfResources) EMU_NAME(cudaErrorLaunchTimeout)
    EMU_NAME(cudaErrorAssert) EMU_NAME(cudaErrorHostMemoryAlreadyRegistered)
    EMU_NAME(cudaErrorHostMemoryNotRegistered) EMU_NAME(cudaErrorIllegalInstruction)
    EMU_NAME(cudaErrorMisalignedAddress) EMU_NAME(cudaErrorLaunchFailure) EMU_NAME(cudaErrorNotSupported)
    EMU_NAME(cudaErrorStreamCaptureUnsupported) EMU_NAME(cudaErrorStreamCaptureInvalidated)
    EMU_NAME(cudaErrorStreamCaptureMerge) EMU_NAME(cudaErrorStreamCaptureUnmatched)
    EMU_NAME(cudaErrorStreamCaptureUnjoined) EMU_NAME(cudaErrorStreamCaptureIsolation)
    EMU_NAME(cudaErrorStreamCaptureImplicit) EMU_NAME(cudaErrorCapturedEvent)
    EMU_NAME(cudaErrorStreamCaptureWrongThread) EMU_NAME(cudaErrorUnknown)
#undef EMU_NAME
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidHostPointer: return "invalid host pointer";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidKernelImage: return "device kernel image is invalid";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchTimeout: return "the launch timed out and was terminated";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorHostMemoryAlreadyRegistered: return "part or all of the requested memory range is already mapped";
    case cudaErrorHostMemoryNotRegistered: return "pointer does not correspond to a registered memory region";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureMerge: return "operation would result in a merge of separate capture sequences";
    case cudaErrorStreamCaptureUnmatched: return "capture was not ended in the same stream as it began";
    case cudaErrorStreamCaptureUnjoined: return "capturing stream has unjoined work";
    case cudaErrorStreamCaptureIsolation: return "dependency created on uncaptured work in another stream";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorUnknown: return "unknown error";
  }
  return "unrecognized error code";
}

// ---- devices ----

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = state().devices;
  return state().devices > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= state().devices) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= state().devices) return fail(cudaErrorInvalidDevice);
  switch (attr) {  // an H100 SXM (compute capability 9.0)
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kDefaultSmem; break;
    case cudaDevAttrTotalConstantMemory: *value = 65536; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = kSmCount; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 233472; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kMaxOptinSmem; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.m);
    // Waiting for the device waits for the capturing stream too, which no capture allows.
    bool any = false;
    for (CUstream_st* st : s.streams)
      if (st->graph) st->invalidated = any = true;
    if (any) return capture_unsupported("cudaDeviceSynchronize");
  }
  const cudaError_t e = async_error;
  async_error = cudaSuccess;
  return e;
}

cudaError_t cudaDriverGetVersion(int* v) { return v ? (*v = 13000, cudaSuccess) : fail(cudaErrorInvalidValue); }
cudaError_t cudaRuntimeGetVersion(int* v) { return v ? (*v = 13000, cudaSuccess) : fail(cudaErrorInvalidValue); }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  const size_t used = s.used[std::min<size_t>(current_device, s.used.size() - 1)];
  *total_bytes = s.limit;
  *free_bytes = used < s.limit ? s.limit - used : 0;
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported("cudaMalloc");
  if (s.devices == 0) return fail(cudaErrorNoDevice);
  if (size == 0) {  // the real runtime hands out no memory for 0 bytes
    *ptr = nullptr;
    return cudaSuccess;
  }
  size_t& used = s.used[current_device];
  if (size > s.limit - std::min(used, s.limit)) return fail(cudaErrorMemoryAllocation);
  void* p = ::operator new(size, std::align_val_t{256}, std::nothrow);
  if (!p) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, size);  // NaN in every float type: uninitialised reads show up
  s.device[reinterpret_cast<uintptr_t>(p)] = Alloc{size, current_device, true};
  used += size;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported("cudaFree");
  auto it = s.device.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.device.end())
    return fail(cudaErrorInvalidValue, "cudaFree: pointer was not returned by cudaMalloc (or was freed already)");
  s.used[it->second.device] -= it->second.size;
  s.device.erase(it);
  ::operator delete(ptr, std::align_val_t{256});
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) { return host_alloc(ptr, size, "cudaHostAlloc"); }
cudaError_t cudaMallocHost(void** ptr, size_t size) { return host_alloc(ptr, size, "cudaMallocHost"); }

cudaError_t cudaFreeHost(void* ptr) {
  if (!ptr) return cudaSuccess;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported("cudaFreeHost");
  auto it = s.pinned.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.pinned.end() || !it->second.owned)
    return fail(cudaErrorInvalidValue, "cudaFreeHost: pointer was not returned by cudaHostAlloc/cudaMallocHost");
  s.pinned.erase(it);
  ::operator delete(ptr, std::align_val_t{256});
  return cudaSuccess;
}

cudaError_t cudaHostRegister(void* ptr, size_t size, unsigned int) {
  if (!ptr || size == 0) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported("cudaHostRegister");
  if (find(s.pinned, ptr) || find(s.device, ptr)) return fail(cudaErrorHostMemoryAlreadyRegistered);
  s.pinned[reinterpret_cast<uintptr_t>(ptr)] = Alloc{size, -1, false};
  return cudaSuccess;
}

cudaError_t cudaHostUnregister(void* ptr) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!unsafe_call_allowed(s)) return capture_unsupported("cudaHostUnregister");
  auto it = s.pinned.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.pinned.end() || it->second.owned) return fail(cudaErrorHostMemoryNotRegistered);
  s.pinned.erase(it);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return copy(dst, src, n, kind, nullptr, false);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
  return copy(dst, src, n, kind, stream, true);
}
cudaError_t cudaMemset(void* p, int value, size_t n) { return memset_(p, value, n, nullptr, false); }
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t stream) {
  return memset_(p, value, n, stream, true);
}

// ---- streams and events ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (!stream) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  auto* st = new CUstream_st();
  st->device = current_device;
  st->flags = flags;
  s.streams.insert(st);
  *stream = st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!stream || !s.streams.erase(stream)) return fail(cudaErrorInvalidResourceHandle);
  delete stream->graph;  // a capture never ended goes with its stream
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.m);
    if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
    if (stream && stream->graph) {  // the work is not run yet: there is nothing to wait for
      stream->invalidated = true;
      return capture_unsupported("cudaStreamSynchronize on the capturing stream");
    }
  }
  const cudaError_t e = async_error;
  async_error = cudaSuccess;
  return e;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  if (stream && stream->graph) {
    stream->invalidated = true;
    return capture_unsupported("cudaStreamQuery on the capturing stream");
  }
  return cudaSuccess;  // synchronous streams are always idle
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!known_stream(s, stream) || !s.events.count(event)) return fail(cudaErrorInvalidResourceHandle);
  return cudaSuccess;  // everything before the event has run already
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (!event) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  auto* e = new CUevent_st();
  e->flags = flags;
  s.events.insert(e);
  *event = e;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!s.events.erase(event)) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.m);
    if (!s.events.count(event) || !known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  }
  // Stream-ordered, so a captured record stamps the time at each replay.
  return emu::submit(stream, [event] { event->when = std::chrono::steady_clock::now(); });
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  return s.events.count(event) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return cudaEventSynchronize(event); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!s.events.count(start) || !s.events.count(end)) return fail(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// ---- graph capture and replay ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!stream)
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: the legacy default stream cannot capture");
  if (!s.streams.count(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (stream->graph) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: the stream is capturing already");
  if (mode > cudaStreamCaptureModeRelaxed) return fail(cudaErrorInvalidValue);
  stream->graph = new CUgraph_st();
  stream->invalidated = false;
  stream->mode = mode;
  stream->capture_thread = std::this_thread::get_id();
  stream->capture_id = s.next_capture++;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!stream || !s.streams.count(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (!stream->graph) return fail(cudaErrorIllegalState, "cudaStreamEndCapture: the stream is not capturing");
  if (stream->mode != cudaStreamCaptureModeRelaxed && stream->capture_thread != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  CUgraph_st* g = stream->graph;
  const bool invalidated = stream->invalidated;
  stream->graph = nullptr;
  stream->invalidated = false;
  if (invalidated) {
    delete g;
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, cudaStreamCaptureStatus* status, unsigned long long* id,
                                     cudaGraph_t* graph) {
  if (!status) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  if (!known_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  const bool on = stream && stream->graph;
  *status = !on                  ? cudaStreamCaptureStatusNone
            : stream->invalidated ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
  if (id && on) *id = stream->capture_id;
  if (graph) *graph = on ? stream->graph : nullptr;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  return cudaStreamGetCaptureInfo(stream, status);
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode || *mode > cudaStreamCaptureModeRelaxed) return fail(cudaErrorInvalidValue);
  std::swap(*mode, thread_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphCreate(cudaGraph_t* graph, unsigned int) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *graph = new CUgraph_st();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->nodes};  // a copy: the graph may be destroyed right after
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue);
  // Node by node through submit: run now, or appended to the graph the stream is capturing.
  for (const Work& w : exec->nodes)
    if (cudaError_t e = emu::submit(stream, w)) return e;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

// ---- kernels ----

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize: {
      if (value < 0 || value > kMaxOptinSmem)
        return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(value) +
                                               " bytes of dynamic shared memory exceed the device's " +
                                               std::to_string(kMaxOptinSmem));
      State& s = state();
      std::lock_guard<std::mutex> lock(s.m);
      s.smem[func] = value;
      return cudaSuccess;
    }
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return value >= -1 && value <= 100 ? cudaSuccess : fail(cudaErrorInvalidValue);
  }
  return fail(cudaErrorInvalidValue);
}
