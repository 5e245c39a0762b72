// libFuzzer target for the safetensors reader and the JSON parser under it.
//
// Each input is read as a file as it is, and again with its length prefix repaired (see
// with_repaired_length). Findings are: a crash or sanitizer report (out-of-bounds read, overflow, leak, UB), an
// exception other than ember::Error, and a broken round trip:
//   - the header's JSON, when it parses, must dump and re-parse to an equal value;
//   - a file that parses must rebuild with build_safetensors_header (the writer accepts
//     everything the reader accepts) and re-parse to the same records and metadata.
// Built by cmake/fuzz.cmake with clang++ -fsanitize=fuzzer,address,undefined; seeds are in
// tests/fuzz/corpus (regenerate with tests/fuzz/make_seed_corpus.cpp).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ember/engine/error.h"
#include "ember/engine/serialization/json.h"
#include "ember/engine/serialization/safetensors_format.h"

namespace {

using namespace ember::serialization;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors finding: %s\n", what);
  std::abort();
}

// The JSON header of the input when its length prefix fits, else the whole input.
std::string_view json_part(const uint8_t* data, size_t size) {
  if (size >= 8) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
    if (n <= size - 8) return {reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n)};
  }
  return {reinterpret_cast<const char*>(data), size};
}

void check_json_round_trip(std::string_view text) {
  Json j;
  try {
    j = parse_json(text, "fuzz");
  } catch (const ember::Error&) {
    return;  // rejected input: fine
  }
  const std::string compact = j.dump();
  const Json again = parse_json(compact, "fuzz dump");  // must not throw
  if (!(again == j)) finding("JSON dump does not re-parse to an equal value");
  if (again.dump() != compact) finding("JSON dump is not stable");
  if (!(parse_json(j.dump_pretty(), "fuzz pretty") == j)) finding("pretty JSON does not re-parse to an equal value");
}

bool same(const SafetensorsHeader& a, const SafetensorsHeader& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorRecord& x = a.tensors[i];
    const TensorRecord& y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || x.begin != y.begin || x.end != y.end) {
      return false;
    }
  }
  return true;
}

void check_safetensors(const uint8_t* data, size_t size) {
  SafetensorsHeader h;
  try {
    h = parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const ember::Error&) {
    return;
  }
  // A valid file: every range lies inside the input.
  for (const TensorRecord& r : h.tensors) {
    if (r.begin > r.end || h.data_start + r.end > size) finding("accepted a tensor outside the file");
  }
  std::string rebuilt = build_safetensors_header(h.tensors, h.metadata);  // must not throw
  if (rebuilt.size() % 8 != 0) finding("rebuilt header is not padded to 8 bytes");
  rebuilt.append(reinterpret_cast<const char*>(data + h.data_start), size - h.data_start);
  const SafetensorsHeader again =
      parse_safetensors(reinterpret_cast<const uint8_t*>(rebuilt.data()), rebuilt.size(), "rebuilt");
  if (!same(h, again)) finding("rebuilt file parses to different records");
}

// Inserting or deleting a byte of the header breaks the length prefix, so nearly every
// mutant of a valid file would stop at the first check. The second view of each input
// repairs the prefix: N = distance from byte 8 to the first NUL byte (the header is JSON
// text, which has none; the seeds' data buffers start with a NUL), so that mutated headers
// reach the field, size and layout checks.
std::string with_repaired_length(const uint8_t* data, size_t size) {
  std::string file(reinterpret_cast<const char*>(data), size);
  const size_t nul = file.find('\0', 8);
  const uint64_t n = (nul == std::string::npos ? size : nul) - 8;
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    check_json_round_trip(json_part(data, size));
    check_safetensors(data, size);
    if (size >= 8) {
      const std::string repaired = with_repaired_length(data, size);
      if (repaired.compare(0, 8, reinterpret_cast<const char*>(data), 8) != 0) {
        const auto* bytes = reinterpret_cast<const uint8_t*>(repaired.data());
        check_json_round_trip(json_part(bytes, repaired.size()));
        check_safetensors(bytes, repaired.size());
      }
    }
  } catch (const ember::Error& e) {
    // Only the first parse of each check may fail; an error anywhere else is a finding.
    std::fprintf(stderr, "unexpected ember::Error: %s\n", e.what());
    finding("ember::Error thrown by a round trip");
  }
  return 0;
}
