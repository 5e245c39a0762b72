#include "ember/engine/storage.h"

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/host_allocator.h"

namespace ember {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cuda()) {
    cuda::check_device(device, "allocate");
    const int index = device.index;
    data_ = cuda::device_alloc(nbytes, index);
    deleter_ = [index](void* p) { cuda::device_free(p, index); };
    return;
  }
  data_ = host::allocate(nbytes);
  deleter_ = host::release;
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

Storage::~Storage() {
  if (deleter_ && data_) deleter_(data_);
}

}  // namespace ember
