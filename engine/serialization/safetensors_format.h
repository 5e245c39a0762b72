// The safetensors container format at the byte level, independent of ember's Tensor.
//
// Layout of a file:
//   bytes [0, 8)        N, the header length, a little-endian uint64
//   bytes [8, 8 + N)    the header: a UTF-8 JSON object
//                         { "<tensor name>": {"dtype": "F32", "shape": [2, 3],
//                                             "data_offsets": [begin, end]},
//                           ...,
//                           "__metadata__": {"<key>": "<string value>", ...} }   (optional)
//   bytes [8 + N, end)  the data buffer; [begin, end) of each tensor is relative to its
//                       start, row-major, little-endian.
//
// The parser is strict, as the reference implementation is: each entry has exactly those
// three fields, the byte range of each tensor matches its dtype and shape, tensors do not
// overlap and together cover the whole data buffer. A file from an unknown source can thus
// be trusted for its layout once it parses: every [begin, end) lies inside the buffer. Each
// failure is an ember::Error whose message starts with the file name and says what is
// wrong, e.g. "model.safetensors: tensor 'w' data_offsets [0, 12] but F32[2, 2] needs 16
// bytes". Nothing outside [bytes, bytes + size) is ever read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ember::serialization {

// One tensor entry of the header. begin / end are offsets into the data buffer.
struct TensorRecord {
  std::string name;
  std::string dtype;  // "F32", "BF16", ... (see safetensors_dtype_size)
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorRecord> tensors;  // in file (header) order
  std::vector<std::pair<std::string, std::string>> metadata;  // "__metadata__", in file order
  uint64_t data_start = 0;  // absolute file offset of the data buffer (8 + N)
};

// Header lengths above this are refused (as the reference implementation does), so that a
// corrupt length cannot make a reader allocate gigabytes.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype: F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 I16 I8
// U64 U32 U16 U8 BOOL. Throws ember::Error for any other string.
size_t safetensors_dtype_size(const std::string& dtype);

// Validates a whole file held in memory and returns its header.
SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& filename);

// For readers that do not load the whole file: reads N from the first 8 bytes (size >= 8 is
// checked) and validates it against file_size. Read 8 + N bytes, then call
// parse_safetensors_header with them.
uint64_t read_safetensors_header_length(const uint8_t* bytes, size_t size, uint64_t file_size,
                                        const std::string& filename);
// Same checks as parse_safetensors, given only the first `size` >= 8 + N bytes of a file
// of `file_size` bytes.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                                           const std::string& filename);

// The first data_start bytes of a file holding `tensors` at the offsets given: the 8-byte
// length, then the compact JSON header padded with spaces so that the data buffer starts at
// a multiple of 8 (aligned reads of every dtype when the tensors' offsets are aligned).
// Tensors are written in the order given, "__metadata__" first when not empty. Checks what
// parse_safetensors would check (unique names, known dtypes, sizes matching offsets, no
// overlap, no hole), taking the data buffer to end at the largest `end`, so a file built as
// header + data of that size always parses. Errors start with "build_safetensors_header:".
std::string build_safetensors_header(const std::vector<TensorRecord>& tensors,
                                     const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace ember::serialization
