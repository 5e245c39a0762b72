#include "ember/engine/serialization/safetensors.h"

#include <cstring>

#include "ember/engine/serialization/file_io.h"
#include "ember/engine/serialization/safetensors_format.h"

namespace ember {

namespace {
const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

DType from_st_dtype(const std::string& s, const std::string& file, const std::string& tensor) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "BF16") return DType::bf16;
  if (s == "F16") return DType::f16;
  if (s == "I64") return DType::i64;
  if (s == "I32") return DType::i32;
  if (s == "U8") return DType::u8;
  if (s == "BOOL") return DType::boolean;
  EMBER_FAIL(file, ": tensor '", tensor, "' has dtype ", s,
             ", which ember does not hold (supported: F32 F64 BF16 F16 I64 I32 U8 BOOL); convert it when saving");
}
}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<serialization::TensorRecord> recs;
  std::vector<Tensor> host;
  uint64_t pos = 0;
  for (const auto& [name, t] : tensors) {
    EMBER_CHECK(t.defined(), "save_safetensors ", path, ": tensor '", name, "' is undefined");
    Tensor h = t.detach().to(Device::cpu()).contiguous();
    uint64_t bytes = static_cast<uint64_t>(h.numel()) * h.element_size();
    recs.push_back({name, st_dtype(h.dtype()), h.sizes().to_vector(), pos, pos + bytes});
    host.push_back(h);
    pos += bytes;
  }
  std::vector<std::pair<std::string, std::string>> meta(metadata.begin(), metadata.end());
  std::string out = serialization::build_safetensors_header(recs, meta);
  const size_t header = out.size();
  out.resize(header + pos);
  for (size_t i = 0; i < host.size(); ++i)  // little-endian host: bytes as they are
    if (recs[i].end > recs[i].begin) std::memcpy(&out[header + recs[i].begin], host[i].raw_data(), recs[i].end - recs[i].begin);
  serialization::atomic_write_file(path, out);
}

SafetensorsFile parse_safetensors_tensors(const uint8_t* bytes, size_t size, const std::string& name) {
  serialization::SafetensorsHeader h = serialization::parse_safetensors(bytes, size, name);
  SafetensorsFile f;
  for (const auto& r : h.tensors) {
    DType dt = from_st_dtype(r.dtype, name, r.name);
    Tensor t = Tensor::empty(r.shape, {.dtype = dt});
    if (dt == DType::boolean)  // any byte but 0 or 1 would be an invalid C++ bool
      for (uint64_t k = r.begin; k < r.end; ++k)
        EMBER_CHECK(bytes[h.data_start + k] <= 1, name, ": BOOL tensor '", r.name, "' holds byte value ",
                    int(bytes[h.data_start + k]), " (must be 0 or 1)");
    if (r.end > r.begin) std::memcpy(t.raw_data(), bytes + h.data_start + r.begin, r.end - r.begin);
    f.tensors[r.name] = t;
  }
  for (const auto& [k, v] : h.metadata) f.metadata[k] = v;
  return f;
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::vector<uint8_t> data = serialization::read_file(path);
  return parse_safetensors_tensors(data.data(), data.size(), path);
}

}  // namespace ember
