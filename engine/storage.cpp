#include "ember/engine/storage.h"

#include <cstdlib>
#include <new>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/error.h"

namespace ember {

void* host_alloc(size_t nbytes) {
  // Round up so aligned_alloc's size rule holds; 64 bytes is a cache line and an AVX-512 vector.
  size_t n = (nbytes + 63) / 64 * 64;
  if (n == 0) n = 64;
  void* p = std::aligned_alloc(64, n);
  if (!p) EMBER_FAIL("out of host memory allocating ", nbytes, " bytes");
  return p;
}

void host_free(void* p) { std::free(p); }

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cuda()) {
    cuda::check_device(device, "allocate");
    const int index = device.index;
    data_ = cuda::device_alloc(nbytes, index);
    deleter_ = [index](void* p) { cuda::device_free(p, index); };
    return;
  }
  data_ = host_alloc(nbytes);
  deleter_ = host_free;
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

Storage::~Storage() {
  if (deleter_ && data_) deleter_(data_);
}

}  // namespace ember
