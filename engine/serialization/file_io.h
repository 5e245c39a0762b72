// Whole-file reads and crash-safe writes. A write goes to "<path>.tmp-<pid>", is flushed to
// disk, then renamed over <path>: a kill at any moment leaves either the old file or the new
// one, never a torn one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ember::serialization {

std::vector<uint8_t> read_file(const std::string& path);
void atomic_write_file(const std::string& path, const void* data, size_t size);
inline void atomic_write_file(const std::string& path, const std::string& text) {
  atomic_write_file(path, text.data(), text.size());
}

}  // namespace ember::serialization
