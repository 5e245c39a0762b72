// Tensors to and from safetensors files (the format PyTorch users read with
// safetensors.torch.load_file). Writes are crash-safe (write, flush, rename); reads validate
// the whole layout first (safetensors_format.h), so a bad file is an ember::Error naming it.
#pragma once
#include <map>
#include <string>

#include "ember/engine/tensor.h"

namespace ember {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafetensorsFile load_safetensors(const std::string& path);
// From bytes in memory (the fuzz target and tests); `name` appears in errors.
SafetensorsFile parse_safetensors_tensors(const uint8_t* bytes, size_t size, const std::string& name);

}  // namespace ember
