// Writes the fuzzer's seed corpus: a few small, valid safetensors files covering the
// header's features (several dtypes, empty and scalar tensors, metadata, a header without
// padding and with fields in another order, as other writers produce). Seeds that already
// parse let the fuzzer start mutating real structure instead of discovering it.
//
// Regenerate (from the source root; any directory with an `ember` link to it works):
//   mkdir -p /tmp/inc && ln -sfn "$PWD" /tmp/inc/ember
//   g++ -std=c++20 -I/tmp/inc -o /tmp/make_seed_corpus tests/fuzz/make_seed_corpus.cpp
//       engine/serialization/json.cpp engine/serialization/safetensors_format.cpp   (one line)
//   /tmp/make_seed_corpus tests/fuzz/corpus
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ember/engine/serialization/safetensors_format.h"

namespace {

using ember::serialization::build_safetensors_header;
using ember::serialization::TensorRecord;

// `header` followed by a data buffer of `data_size` bytes of a simple pattern. The first
// byte is 0: the fuzz target finds the header's end at the first NUL when it repairs the
// length prefix of a mutated file.
std::string with_data(std::string header, uint64_t data_size) {
  for (uint64_t i = 0; i < data_size; ++i) header += static_cast<char>(i * 37);
  return header;
}

// A file whose header is the JSON text given, without padding.
std::string raw(const std::string& json, uint64_t data_size) {
  std::string f(8, '\0');
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((uint64_t{json.size()} >> (8 * i)) & 0xFF);
  return with_data(f + json, data_size);
}

bool write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = true;

  ok &= write(dir, "single_f32.safetensors",
              with_data(build_safetensors_header({{"weight", "F32", {2, 2}, 0, 16}}, {}), 16));

  const std::vector<TensorRecord> mixed = {
      {"conv.weight", "F32", {2, 1, 1, 2}, 0, 16}, {"conv.bias", "F64", {2}, 16, 32},
      {"step", "I64", {}, 32, 40},                  {"empty", "F32", {0, 4}, 40, 40},
      {"half", "F16", {2}, 40, 44},                 {"brain", "BF16", {2}, 44, 48},
      {"labels", "I32", {1}, 48, 52},               {"short", "I16", {1}, 52, 54},
      {"byte", "I8", {1}, 54, 55},                  {"mask", "BOOL", {2}, 55, 57},
      {"pixels", "U8", {3}, 57, 60},
  };
  ok &= write(dir, "mixed_dtypes_metadata.safetensors",
              with_data(build_safetensors_header(mixed, {{"format", "pt"}, {"ember", "0.1"}}), 60));

  ok &= write(dir, "metadata_only.safetensors", build_safetensors_header({}, {{"note", "no tensors"}}));

  ok &= write(dir, "other_writer.safetensors",
              raw(" {\"b\\u00e9ta\" : {\"shape\":[3],\"data_offsets\":[4,16],\"dtype\":\"U32\"},\n"
                  "  \"a\":{\"data_offsets\":[0,4],\"dtype\":\"F32\",\"shape\":[1]},"
                  "\"__metadata__\":{\"k\\n\":\"v\\\"\"}}",
                  16));

  if (!ok) {
    std::fprintf(stderr, "could not write to %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
