// Tests of the safetensors container format (engine/serialization/safetensors_format.h):
// valid files of every dtype, metadata, alignment, and each way a file can be malformed.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ember/engine/error.h"
#include "ember/engine/serialization/safetensors_format.h"

namespace {

using ember::Error;
using ember::serialization::build_safetensors_header;
using ember::serialization::kSafetensorsMaxHeaderBytes;
using ember::serialization::parse_safetensors;
using ember::serialization::parse_safetensors_header;
using ember::serialization::read_safetensors_header_length;
using ember::serialization::safetensors_dtype_size;
using ember::serialization::SafetensorsHeader;
using ember::serialization::TensorRecord;

using Metadata = std::vector<std::pair<std::string, std::string>>;
const std::string kFile = "model.safetensors";

SafetensorsHeader parse(const std::string& file) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(file.data()), file.size(), kFile);
}

// Header + a data buffer of `data_size` bytes (a byte pattern, so that nothing is zero).
std::string with_data(std::string header, uint64_t data_size) {
  for (uint64_t i = 0; i < data_size; ++i) header += static_cast<char>(i * 7 + 1);
  return header;
}

// A file from a raw header text (not padded) followed by `data_size` bytes.
std::string raw_file(const std::string& json, uint64_t data_size) {
  std::string f(8, '\0');
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((uint64_t{json.size()} >> (8 * i)) & 0xFF);
  return with_data(f + json, data_size);
}

// Parsing `file` must throw an ember::Error naming the file and containing `part`.
void expect_error(const std::string& file, const std::string& part) {
  try {
    parse(file);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(kFile, 0), 0u) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << "expected \"" << part << "\" in: " << msg;
    return;
  }
  ADD_FAILURE() << "parsed without error; expected an error containing \"" << part << "\"";
}

// One tensor "w" with the given entry text and a data buffer of `data_size` bytes.
void expect_entry_error(const std::string& entry, uint64_t data_size, const std::string& part) {
  SCOPED_TRACE(entry);
  expect_error(raw_file("{\"w\":" + entry + "}", data_size), part);
}

// A valid file with tensors of several dtypes, an empty tensor and a scalar.
std::vector<TensorRecord> sample_records() {
  std::vector<TensorRecord> r = {
      {"conv.weight", "F32", {2, 3}, 0, 24},
      {"conv.bias", "F64", {2}, 24, 40},
      {"empty", "F32", {0, 3}, 40, 40},
      {"half", "F16", {3}, 40, 46},
      {"brain", "BF16", {1}, 46, 48},
      {"step", "I64", {}, 48, 56},
      {"idx", "I32", {2}, 56, 64},
      {"short", "I16", {2, 1}, 64, 68},
      {"tiny", "I8", {3}, 68, 71},
      {"mask", "BOOL", {2}, 71, 73},
      {"pixels", "U8", {3}, 73, 76},
  };
  return r;
}

void expect_same(const std::vector<TensorRecord>& got, const std::vector<TensorRecord>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, want[i].name);
    EXPECT_EQ(got[i].dtype, want[i].dtype);
    EXPECT_EQ(got[i].shape, want[i].shape);
    EXPECT_EQ(got[i].begin, want[i].begin);
    EXPECT_EQ(got[i].end, want[i].end);
  }
}

TEST(SafetensorsFormatTest, DTypeSizes) {
  EXPECT_EQ(safetensors_dtype_size("F64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("F32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("F16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("BF16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("I64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("I32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("I16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("I8"), 1u);
  EXPECT_EQ(safetensors_dtype_size("U8"), 1u);
  EXPECT_EQ(safetensors_dtype_size("BOOL"), 1u);
  EXPECT_THROW(safetensors_dtype_size("f32"), Error);  // names are case-sensitive
  EXPECT_THROW(safetensors_dtype_size(""), Error);
}

TEST(SafetensorsFormatTest, RoundTripSeveralDTypesWithMetadata) {
  const auto records = sample_records();
  const Metadata meta = {{"format", "pt"}, {"note", "q\"uote \\ \u00e9\n"}, {"a", ""}};
  const std::string header = build_safetensors_header(records, meta);
  const std::string file = with_data(header, 76);
  const SafetensorsHeader h = parse(file);
  expect_same(h.tensors, records);  // file order is kept
  EXPECT_EQ(h.metadata, meta);
  EXPECT_EQ(h.data_start, header.size());
  EXPECT_EQ(h.data_start % 8, 0u);
  // The JSON starts right after the length and lists __metadata__ first.
  EXPECT_EQ(header.compare(8, 16, "{\"__metadata__\":"), 0) << header;
}

TEST(SafetensorsFormatTest, HeaderIsPaddedToMultipleOfEight) {
  for (size_t len = 1; len <= 16; ++len) {
    const std::vector<TensorRecord> r = {{std::string(len, 'n'), "U8", {3}, 0, 3}};
    const std::string header = build_safetensors_header(r, {});
    EXPECT_EQ(header.size() % 8, 0u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(header[i]);
    EXPECT_EQ(n + 8, header.size());
    const size_t json_end = header.find_last_not_of(' ') + 1;
    EXPECT_EQ(header[json_end - 1], '}');
    EXPECT_LT(header.size() - json_end, 8u);  // only padding spaces after the JSON
    EXPECT_EQ(parse(with_data(header, 3)).tensors[0].name, r[0].name);
  }
}

TEST(SafetensorsFormatTest, EmptyFilesAndEmptyTensors) {
  // No tensors at all: "{}" and an empty data buffer.
  SafetensorsHeader h = parse(build_safetensors_header({}, {}));
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(h.data_start, 16u);
  // Only empty tensors, also with huge other dimensions.
  const std::vector<TensorRecord> r = {{"a", "F32", {0}, 0, 0},
                                       {"b", "F64", {4611686018427387904, 0, 1000}, 0, 0}};
  h = parse(build_safetensors_header(r, {{"k", "v"}}));
  expect_same(h.tensors, r);
  EXPECT_EQ(h.metadata.size(), 1u);
}

TEST(SafetensorsFormatTest, AcceptsFilesFromOtherWriters) {
  // Unpadded header, whitespace, fields in any order, metadata last, offsets not sorted by
  // file order, integers spelled "-0".
  const std::string json =
      " { \"b\" : {\"shape\":[2],\"data_offsets\":[8,16],\"dtype\":\"I32\"},\n"
      "   \"a\" : {\"data_offsets\":[0,8],\"dtype\":\"F32\",\"shape\":[1,2]},\n"
      "   \"__metadata__\":{\"format\":\"pt\"}, \"s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]} } ";
  const SafetensorsHeader h = parse(raw_file(json, 17));
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "b");
  EXPECT_EQ(h.tensors[1].name, "a");
  EXPECT_EQ(h.tensors[2].shape, std::vector<int64_t>{});
  EXPECT_EQ(h.data_start, 8 + json.size());
  EXPECT_EQ(h.metadata, (Metadata{{"format", "pt"}}));
  EXPECT_NO_THROW(parse(raw_file(R"({"w":{"dtype":"U8","shape":[-0],"data_offsets":[0,-0]}})", 0)));
}

TEST(SafetensorsFormatTest, PartialReaderApi) {
  const std::string file = with_data(build_safetensors_header(sample_records(), {}), 76);
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  const uint64_t n = read_safetensors_header_length(bytes, 8, file.size(), kFile);
  const SafetensorsHeader h = parse_safetensors_header(bytes, 8 + n, file.size(), kFile);
  EXPECT_EQ(h.data_start, 8 + n);
  expect_same(h.tensors, sample_records());
  EXPECT_THROW(parse_safetensors_header(bytes, 8 + n - 1, file.size(), kFile), Error);
  EXPECT_THROW(parse_safetensors_header(bytes, 8 + n, file.size() - 1, kFile), Error);  // data short
  EXPECT_THROW(read_safetensors_header_length(bytes, 7, file.size(), kFile), Error);
}

TEST(SafetensorsFormatTest, EveryTruncationIsAnError) {
  const std::string file = with_data(build_safetensors_header(sample_records(), {{"format", "pt"}}), 76);
  ASSERT_NO_THROW(parse(file));
  for (size_t len = 0; len < file.size(); ++len) {
    SCOPED_TRACE(len);
    // A copy of exactly len bytes, so that ASan would see any read past the end.
    const std::vector<uint8_t> prefix(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(len));
    try {
      parse_safetensors(prefix.data(), prefix.size(), kFile);
      ADD_FAILURE() << "truncated file parsed";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(kFile + ": ", 0), 0u) << e.what();
    }
  }
  // One byte too many is an error as well (a hole at the end).
  expect_error(file + "x", "bytes [76, 77) at the end of the data buffer belong to no tensor");
}

TEST(SafetensorsFormatTest, HeaderLengthErrors) {
  expect_error("", "file is 0 bytes, too short");
  expect_error("abc", "file is 3 bytes, too short");
  expect_error(std::string(8, '\0'), "header length is 0");
  std::string f = raw_file("{}", 0);
  f[0] = 3;  // N = 3 > the 2 bytes that follow
  expect_error(f, "header length 3 exceeds the 2 bytes that follow");
  f = raw_file("{}", 0);
  f[7] = 1;  // N = 2^56 + 2
  expect_error(f, "exceeds the limit of 100000000 bytes");
  f = raw_file("{}", 0);
  const uint64_t over = kSafetensorsMaxHeaderBytes + 1;
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((over >> (8 * i)) & 0xFF);
  expect_error(f, "header length 100000001 exceeds the limit");
  f.assign(8, '\xFF');  // N = 2^64 - 1: no overflow in the bounds checks
  expect_error(f, "exceeds the limit");
}

TEST(SafetensorsFormatTest, BadJson) {
  expect_error(raw_file("{", 0), "model.safetensors header: invalid JSON at byte 1");
  expect_error(raw_file("{\"w\":}", 0), "invalid JSON at byte 5");
  expect_error(raw_file("{} x", 0), "after the JSON value");
  expect_error(raw_file(std::string("{}\0\0", 4), 0), "byte 0x00");  // padding is spaces, not NULs
  expect_error(raw_file("{\"\xFF\":1}", 0), "invalid UTF-8");
  expect_error(raw_file("[]", 0), "header is an array, expected a JSON object");
  expect_error(raw_file("\"x\"", 0), "header is a string");
  // A tensor listed twice is a duplicate key, never a silent choice of one entry.
  expect_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                        R"("w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                        1),
               "duplicate key \"w\"");
  expect_error(raw_file(std::string(70, '[') + std::string(70, ']'), 0), "nesting deeper than 64");
}

TEST(SafetensorsFormatTest, EntryFieldErrors) {
  expect_entry_error("[]", 0, "tensor 'w' is an array, expected an object");
  expect_entry_error(R"({"shape":[1],"data_offsets":[0,4]})", 4, "tensor 'w' has no \"dtype\" field");
  expect_entry_error(R"({"dtype":"F32","data_offsets":[0,4]})", 4, "tensor 'w' has no \"shape\" field");
  expect_entry_error(R"({"dtype":"F32","shape":[1]})", 4, "tensor 'w' has no \"data_offsets\" field");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1})", 4,
                     "tensor 'w' has unexpected field 'extra'");
  expect_entry_error(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", 4, "tensor 'w' dtype is a number");
  expect_entry_error(R"({"dtype":"F128","shape":[1],"data_offsets":[0,4]})", 4, "tensor 'w' has unknown dtype 'F128'");
  expect_entry_error(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", 4, "unknown dtype 'f32'");
  expect_entry_error(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", 4, "tensor 'w' shape is a string");
  expect_entry_error(R"({"dtype":"F32","shape":[1,"2"],"data_offsets":[0,4]})", 4, "shape[1] is a string");
  expect_entry_error(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})", 4, "shape[0] is 1.0, expected a non-negative integer");
  expect_entry_error(R"({"dtype":"F32","shape":[1e0],"data_offsets":[0,4]})", 4, "shape[0] is 1e0");
  expect_entry_error(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4, "shape[0] is -1");
  expect_entry_error(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]})", 4,
                     "shape[0] is 9223372036854775808, which is too large");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":{"begin":0}})", 4, "data_offsets is an object, expected [begin, end]");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", 4, "data_offsets is an array of 1 elements");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 4, "an array of 3 elements");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4, "data_offsets[0] is -4");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.0]})", 4, "data_offsets[1] is 4.0");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,null]})", 4, "data_offsets[1] is a null");
  expect_entry_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]})", 4,
                     "data_offsets[1] is 18446744073709551616, which is too large");
  // Metadata must be an object of strings.
  expect_error(raw_file(R"({"__metadata__":[]})", 0), "__metadata__ is an array, expected an object of strings");
  expect_error(raw_file(R"({"__metadata__":{"epoch":3}})", 0), "__metadata__ value of 'epoch' is a number");
  // Names with odd characters are escaped in messages.
  expect_error(raw_file("{\"a\\nb\":1}", 0), "tensor 'a\\nb' is a number");
}

TEST(SafetensorsFormatTest, SizeAndRangeErrors) {
  expect_entry_error(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,12]})", 12,
                     "tensor 'w' data_offsets [0, 12] hold 12 bytes but F32[2, 2] needs 16 bytes");
  expect_entry_error(R"({"dtype":"BF16","shape":[],"data_offsets":[0,4]})", 4, "BF16[] needs 2 bytes");
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", 8, "data_offsets [8, 0] end before they begin");
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 7,
                     "data_offsets [0, 8] run past the end of the data buffer (7 bytes)");
  expect_entry_error(R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]})", 4,
                     "run past the end of the data buffer");
  // numel x element size overflows 64 bits.
  expect_entry_error(R"({"dtype":"F32","shape":[4611686018427387904,16],"data_offsets":[0,0]})", 0,
                     "F32[4611686018427387904, 16] has more bytes than fit in 64 bits");
  expect_entry_error(R"({"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0,
                     "more bytes than fit in 64 bits");
  expect_entry_error(R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]})", 0,
                     "more bytes than fit in 64 bits");
}

TEST(SafetensorsFormatTest, LayoutErrors) {
  auto two = [](const std::string& a, const std::string& b) {
    return R"({"a":{"dtype":"U8","shape":[4],"data_offsets":)" + a + R"(},"b":{"dtype":"U8","shape":[4],"data_offsets":)" +
           b + "}}";
  };
  expect_error(raw_file(two("[0,4]", "[2,6]"), 6),
               "tensors 'a' (data_offsets [0, 4]) and 'b' (data_offsets [2, 6]) overlap");
  expect_error(raw_file(two("[0,4]", "[0,4]"), 4), "overlap");
  EXPECT_NO_THROW(parse(raw_file(two("[4,8]", "[0,4]"), 8)));  // file order need not be offset order
  expect_error(raw_file(two("[0,4]", "[6,10]"), 10),
               "bytes [4, 6) of the data buffer belong to no tensor (between 'a' and 'b')");
  expect_error(raw_file(two("[2,6]", "[6,10]"), 10), "bytes [0, 2) of the data buffer belong to no tensor (before 'a')");
  expect_error(raw_file(two("[0,4]", "[4,8]"), 9), "bytes [8, 9) at the end of the data buffer belong to no tensor (after 'b')");
  expect_error(raw_file("{}", 3), "bytes [0, 3) at the end of the data buffer belong to no tensor (the file has no tensors)");
  // An empty tensor must sit at a boundary, not inside another tensor.
  const std::string with_empty_inside =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})";
  expect_error(raw_file(with_empty_inside, 4), "tensors 'a' (data_offsets [0, 4]) and 'e' (data_offsets [2, 2]) overlap");
}

TEST(SafetensorsFormatTest, BuilderRefusesWhatTheReaderWouldRefuse) {
  auto build_error = [](const std::vector<TensorRecord>& r, const Metadata& m) -> std::string {
    try {
      build_safetensors_header(r, m);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("build_safetensors_header: ", 0), 0u) << msg;
      return msg;
    }
    return "";
  };
  EXPECT_NE(build_error({{"a", "U8", {1}, 0, 1}, {"a", "U8", {1}, 1, 2}}, {}).find("'a' appears twice"), std::string::npos);
  EXPECT_NE(build_error({{"__metadata__", "U8", {1}, 0, 1}}, {}).find("cannot be named"), std::string::npos);
  EXPECT_NE(build_error({{"a", "F32", {2}, 0, 4}}, {}).find("F32[2] needs 8 bytes"), std::string::npos);
  EXPECT_NE(build_error({{"a", "Q4", {2}, 0, 4}}, {}).find("unknown dtype 'Q4'"), std::string::npos);
  EXPECT_NE(build_error({{"a", "U8", {-2}, 0, 0}}, {}).find("negative dimension -2"), std::string::npos);
  EXPECT_NE(build_error({{"a", "U8", {4}, 0, 4}, {"b", "U8", {4}, 2, 6}}, {}).find("overlap"), std::string::npos);
  EXPECT_NE(build_error({{"a", "U8", {4}, 4, 8}}, {}).find("bytes [0, 4)"), std::string::npos);
  EXPECT_NE(build_error({}, {{"k", "1"}, {"k", "2"}}).find("metadata key 'k' appears twice"), std::string::npos);
  EXPECT_NE(build_error({{"a\xFF", "U8", {1}, 0, 1}}, {}).find("is not valid UTF-8"), std::string::npos);
  EXPECT_NE(build_error({}, {{"k", "\xC3"}}).find("metadata 'k' is not valid UTF-8"), std::string::npos);
}

TEST(SafetensorsFormatTest, ManyTensorsStayFast) {
  // A header of a large model: building and parsing stay linear in the tensor count.
  std::vector<TensorRecord> r;
  for (uint64_t i = 0; i < 5000; ++i) r.push_back({"layer." + std::to_string(i) + ".weight", "F32", {2}, 8 * i, 8 * i + 8});
  const std::string file = with_data(build_safetensors_header(r, {}), 8 * r.size());
  const SafetensorsHeader h = parse(file);
  ASSERT_EQ(h.tensors.size(), r.size());
  EXPECT_EQ(h.tensors.back().name, "layer.4999.weight");
}

#ifdef EMBER_SOURCE_DIR
// The fuzzer's seed corpus is kept valid, so that the fuzzer starts from real files.
TEST(SafetensorsFormatTest, FuzzSeedCorpusParses) {
  const std::filesystem::path dir = std::filesystem::path(EMBER_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NO_THROW(parse(bytes)) << entry.path();
    EXPECT_LT(bytes.size(), 1024u) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 3);
}
#endif

}  // namespace
