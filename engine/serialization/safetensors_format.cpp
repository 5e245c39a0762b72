#include "ember/engine/serialization/safetensors_format.h"

#include <algorithm>
#include <limits>
#include <sstream>
#include <string_view>
#include <unordered_set>

#include "ember/engine/error.h"
#include "ember/engine/serialization/json.h"

namespace ember::serialization {

namespace {

constexpr const char* kMetadataKey = "__metadata__";

struct DTypeInfo {
  const char* name;
  size_t size;
};
// Every fixed-width dtype of the format. The format layer accepts them all; whether ember
// can hold a tensor of that dtype is the tensor loader's question, with its own message.
constexpr DTypeInfo kDTypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I64", 8}, {"I32", 4},
    {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2},     {"U8", 1},      {"BOOL", 1},
};

// 0 for an unknown dtype.
size_t dtype_size_or_zero(std::string_view dtype) {
  for (const auto& d : kDTypes) {
    if (dtype == d.name) return d.size;
  }
  return 0;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDTypes) {
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

// 'name' for messages, with quotes and control characters escaped (names come from
// untrusted files and should not break the message apart).
std::string quoted(const std::string& name) {
  std::string j = Json(name).dump();  // "..." with JSON escapes
  return "'" + j.substr(1, j.size() - 2) + "'";
}

// "F32[2, 3]"
std::string describe(const std::string& dtype, const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << dtype << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

// "a number", "an array", ... for messages.
std::string a_type(const Json& j) {
  const std::string t = j.type_name();
  return (t == "array" || t == "object" ? "an " : "a ") + t;
}

std::string offsets(const TensorRecord& r) {
  return "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + "]";
}

// Sets *out to the bytes the tensor's elements take; false when that overflows uint64.
// A zero dimension makes the tensor empty whatever the other dimensions are.
bool tensor_nbytes(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* out) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) {
    *out = 0;
    return true;
  }
  uint64_t n = elem_size;
  for (int64_t d : shape) {
    const auto ud = static_cast<uint64_t>(d);  // d > 0 here (checked by the callers)
    if (n > std::numeric_limits<uint64_t>::max() / ud) return false;
    n *= ud;
  }
  *out = n;
  return true;
}

// Checks one record on its own: known dtype, non-negative dims, begin <= end and a byte
// range that matches dtype x shape. `where` starts every message ("x.safetensors: ").
void check_record(const TensorRecord& r, const std::string& where) {
  const std::string t = "tensor " + quoted(r.name);
  const size_t elem = dtype_size_or_zero(r.dtype);
  EMBER_CHECK(elem != 0, where, t, " has unknown dtype ", quoted(r.dtype), " (known: ", known_dtypes(), ")");
  for (size_t i = 0; i < r.shape.size(); ++i) {
    EMBER_CHECK(r.shape[i] >= 0, where, t, " has negative dimension ", r.shape[i], " at shape[", i, "]");
  }
  uint64_t nbytes = 0;
  EMBER_CHECK(tensor_nbytes(r.shape, elem, &nbytes), where, t, " of ", describe(r.dtype, r.shape),
              " has more bytes than fit in 64 bits");
  EMBER_CHECK(r.begin <= r.end, where, t, " data_offsets ", offsets(r), " end before they begin");
  EMBER_CHECK(r.end - r.begin == nbytes, where, t, " data_offsets ", offsets(r), " hold ", r.end - r.begin,
              " bytes but ", describe(r.dtype, r.shape), " needs ", nbytes, " bytes");
}

// Checks that the tensors tile [0, data_size) exactly: sorted by offset, each tensor starts
// where the previous one ended (the reference implementation's rule; an empty tensor thus
// sits at a boundary too), and the last one ends at data_size. Overlaps could make two
// tensors alias each other's bytes; holes would be bytes no one can account for.
void check_layout(const std::vector<TensorRecord>& records, uint64_t data_size, const std::string& where) {
  std::vector<const TensorRecord*> sorted;
  sorted.reserve(records.size());
  for (const auto& r : records) sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [](const TensorRecord* a, const TensorRecord* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;  // the data buffer is tiled up to here
  const TensorRecord* prev = nullptr;
  for (const TensorRecord* r : sorted) {
    if (r->begin < covered) {
      EMBER_FAIL(where, "tensors ", quoted(prev->name), " (data_offsets ", offsets(*prev), ") and ", quoted(r->name),
                 " (data_offsets ", offsets(*r), ") overlap");
    }
    if (r->begin > covered) {
      EMBER_FAIL(where, "bytes [", covered, ", ", r->begin, ") of the data buffer belong to no tensor (",
                 prev ? "between " + quoted(prev->name) + " and " : std::string("before "), quoted(r->name),
                 "); safetensors requires the tensors to cover the data buffer without holes");
    }
    covered = r->end;
    prev = r;
  }
  if (covered != data_size) {  // covered < data_size: every end was checked to be <= data_size
    EMBER_FAIL(where, "bytes [", covered, ", ", data_size, ") at the end of the data buffer belong to no tensor",
               prev ? " (after " + quoted(prev->name) + ")" : std::string(" (the file has no tensors)"),
               "; safetensors requires the tensors to cover the data buffer without holes");
  }
}

// A shape dimension or offset: a JSON integer (no fraction / exponent) that is >= 0.
uint64_t read_unsigned(const Json& j, const std::string& where, const std::string& what, uint64_t max) {
  EMBER_CHECK(j.is_number(), where, what, " is ", a_type(j), ", expected a non-negative integer");
  EMBER_CHECK(j.is_integer(), where, what, " is ", j.number_text(), ", expected a non-negative integer");
  EMBER_CHECK(j.number_text()[0] != '-' || j.number_text() == "-0", where, what, " is ", j.number_text(),
              ", expected a non-negative integer");
  uint64_t v = 0;
  try {
    v = j.as_uint64();  // can only fail now by exceeding uint64
  } catch (const Error&) {
    EMBER_FAIL(where, what, " is ", j.number_text(), ", which is too large");
  }
  EMBER_CHECK(v <= max, where, what, " is ", j.number_text(), ", which is too large");
  return v;
}

TensorRecord read_record(const std::string& name, const Json& entry, uint64_t data_size, const std::string& where) {
  const std::string t = "tensor " + quoted(name);
  EMBER_CHECK(entry.is_object(), where, t, " is ", a_type(entry),
              ", expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  const Json* dtype = nullptr;
  const Json* shape = nullptr;
  const Json* data_offsets = nullptr;
  for (const auto& [key, value] : entry.members()) {
    if (key == "dtype") dtype = &value;
    else if (key == "shape") shape = &value;
    else if (key == "data_offsets") data_offsets = &value;
    else EMBER_FAIL(where, t, " has unexpected field ", quoted(key), " (expected dtype, shape, data_offsets)");
  }
  EMBER_CHECK(dtype, where, t, " has no \"dtype\" field");
  EMBER_CHECK(shape, where, t, " has no \"shape\" field");
  EMBER_CHECK(data_offsets, where, t, " has no \"data_offsets\" field");

  TensorRecord r;
  r.name = name;
  EMBER_CHECK(dtype->is_string(), where, t, " dtype is ", a_type(*dtype), ", expected a string such as \"F32\"");
  r.dtype = dtype->as_string();
  EMBER_CHECK(shape->is_array(), where, t, " shape is ", a_type(*shape), ", expected an array of integers");
  for (size_t i = 0; i < shape->size(); ++i) {
    const uint64_t d = read_unsigned(shape->at(i), where, t + " shape[" + std::to_string(i) + "]",
                                     static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    r.shape.push_back(static_cast<int64_t>(d));
  }
  EMBER_CHECK(data_offsets->is_array() && data_offsets->size() == 2, where, t, " data_offsets is ",
              data_offsets->is_array() ? "an array of " + std::to_string(data_offsets->size()) + " elements"
                                       : a_type(*data_offsets),
              ", expected [begin, end]");
  const uint64_t u64max = std::numeric_limits<uint64_t>::max();
  r.begin = read_unsigned(data_offsets->at(0), where, t + " data_offsets[0]", u64max);
  r.end = read_unsigned(data_offsets->at(1), where, t + " data_offsets[1]", u64max);

  check_record(r, where);
  EMBER_CHECK(r.end <= data_size, where, t, " data_offsets ", offsets(r), " run past the end of the data buffer (",
              data_size, " bytes); the file is truncated or the header is wrong");
  return r;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  const size_t n = dtype_size_or_zero(dtype);
  EMBER_CHECK(n != 0, "safetensors: unknown dtype ", quoted(dtype), " (known: ", known_dtypes(), ")");
  return n;
}

uint64_t read_safetensors_header_length(const uint8_t* bytes, size_t size, uint64_t file_size,
                                        const std::string& filename) {
  const std::string where = filename + ": ";
  EMBER_CHECK(file_size >= 8, where, "file is ", file_size,
              " bytes, too short for the 8-byte header length of a safetensors file");
  EMBER_CHECK(size >= 8, where, "need the first 8 bytes of the file to read the header length, got ", size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  EMBER_CHECK(n > 0, where, "header length is 0; not a safetensors file");
  EMBER_CHECK(n <= kSafetensorsMaxHeaderBytes, where, "header length ", n, " exceeds the limit of ",
              kSafetensorsMaxHeaderBytes, " bytes; not a safetensors file, or a corrupt one");
  EMBER_CHECK(n <= file_size - 8, where, "header length ", n, " exceeds the ", file_size - 8,
              " bytes that follow it; the file is truncated or not a safetensors file");
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                                           const std::string& filename) {
  const std::string where = filename + ": ";
  EMBER_CHECK(size <= file_size, where, "given ", size, " bytes of a file of ", file_size, " bytes");
  const uint64_t n = read_safetensors_header_length(bytes, size, file_size, filename);
  EMBER_CHECK(size - 8 >= n, where, "need the first ", 8 + n, " bytes of the file to read the header, got ", size);

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(n));
  const Json root = parse_json(text, filename + " header");
  EMBER_CHECK(root.is_object(), where, "header is ", a_type(root), ", expected a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  for (const auto& [key, value] : root.members()) {
    if (key == kMetadataKey) {
      EMBER_CHECK(value.is_object(), where, "__metadata__ is ", a_type(value),
                  ", expected an object of strings");
      for (const auto& [mkey, mvalue] : value.members()) {
        EMBER_CHECK(mvalue.is_string(), where, "__metadata__ value of ", quoted(mkey), " is ", a_type(mvalue),
                    ", expected a string");
        h.metadata.emplace_back(mkey, mvalue.as_string());
      }
    } else {
      h.tensors.push_back(read_record(key, value, data_size, where));
    }
  }
  check_layout(h.tensors, data_size, where);
  return h;
}

SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& filename) {
  return parse_safetensors_header(bytes, size, size, filename);
}

std::string build_safetensors_header(const std::vector<TensorRecord>& tensors,
                                     const std::vector<std::pair<std::string, std::string>>& metadata) {
  const std::string where = "build_safetensors_header: ";

  // Same rules as the reader, so that what we write always reads back.
  std::unordered_set<std::string_view> names;
  uint64_t data_size = 0;
  // Names must be valid UTF-8: the JSON writer would replace invalid bytes by U+FFFD,
  // writing another name than the one given (or two equal names).
  for (const auto& r : tensors) {
    EMBER_CHECK(is_valid_utf8(r.name), where, "tensor name ", quoted(r.name), " is not valid UTF-8");
    EMBER_CHECK(r.name != kMetadataKey, where, "a tensor cannot be named ", kMetadataKey);
    EMBER_CHECK(names.insert(r.name).second, where, "tensor name ", quoted(r.name), " appears twice");
    check_record(r, where);
    data_size = std::max(data_size, r.end);
  }
  check_layout(tensors, data_size, where);
  std::unordered_set<std::string_view> keys;
  for (const auto& m : metadata) {
    EMBER_CHECK(is_valid_utf8(m.first) && is_valid_utf8(m.second), where, "metadata ", quoted(m.first),
                " is not valid UTF-8");
    EMBER_CHECK(keys.insert(m.first).second, where, "metadata key ", quoted(m.first), " appears twice");
  }

  // Names are unique (checked above), so members are appended directly rather than with
  // Json::set, whose lookup would make a header of many tensors quadratic to build.
  Json root = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta.members().emplace_back(k, Json(v));
    root.members().emplace_back(kMetadataKey, std::move(meta));
  }
  for (const auto& r : tensors) {
    Json shape = Json::array();
    for (int64_t d : r.shape) shape.push_back(Json(d));
    Json entry = Json::object();
    entry.set("dtype", Json(r.dtype)).set("shape", std::move(shape));
    entry.set("data_offsets", Json(Json::Array{Json(r.begin), Json(r.end)}));
    root.members().emplace_back(r.name, std::move(entry));
  }

  std::string json = root.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data buffer starts at a multiple of 8
  const uint64_t n = json.size();
  EMBER_CHECK(n <= kSafetensorsMaxHeaderBytes, where, "header of ", n, " bytes exceeds the limit of ",
              kSafetensorsMaxHeaderBytes, " bytes");
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);  // little-endian
  out += json;
  return out;
}

}  // namespace ember::serialization
