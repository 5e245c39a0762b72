// Storage: one allocation that views share. It also holds the version counter: every
// in-place write bumps it, and a backward that saved a view checks it (DESIGN: "saved
// tensors carry a version counter").
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "ember/engine/device.h"

namespace ember {

class Storage {
 public:
  // Allocates nbytes of 64-byte-aligned memory on the device (the host allocator,
  // host_allocator.h, or the CUDA caching allocator).
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere; `deleter` runs when the storage dies (may be empty).
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

  // How many tensors saved for a backward (autograd's saved lists) share this storage. An op
  // that could keep a narrower copy of an input for its backward (conv's BF16 copy under the
  // `medium` precision, autograd/narrow_saved.h) keeps the input itself where a backward
  // already holds it: there a copy would add memory, not free any.
  uint32_t backward_holders() const { return backward_holders_; }
  void add_backward_holder() { ++backward_holders_; }
  void remove_backward_holder() { --backward_holders_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  uint64_t version_ = 0;
  uint32_t backward_holders_ = 0;
  std::function<void(void*)> deleter_;
};

}  // namespace ember
