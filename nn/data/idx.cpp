#include "ember/nn/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "ember/engine/error.h"

namespace ember::data {

namespace {

// The largest payload we accept: ten times the biggest IDX or CIFAR file in common use, and
// a bound that keeps a corrupt header from asking for an absurd allocation.
constexpr uint64_t kMaxPayloadBytes = uint64_t(1) << 31;

// Payloads are read in steps of this size, so the buffer only grows as bytes arrive: a
// truncated file that claims 2 GiB costs what it holds, not what it claims.
constexpr size_t kReadStep = size_t(1) << 24;

constexpr int64_t kCifarSide = 32, kCifarChannels = 3;
constexpr int64_t kCifarImageBytes = kCifarChannels * kCifarSide * kCifarSide;
constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;
constexpr int kCifarClasses = 10;

// A file read through zlib's gz* interface, which decompresses gzip and passes any other
// file through unchanged, so one code path serves ".gz" and raw files.
class GzReader {
 public:
  GzReader(const std::string& path, const char* op) : path_(path), op_(op) {
    // gzopen happily "opens" a directory and fails on the first read; say what is wrong.
    std::error_code ec;
    EMBER_CHECK(!std::filesystem::is_directory(path, ec), op_, ": '", path_, "' is a directory, not a file");
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    EMBER_CHECK(file_ != nullptr, op_, ": cannot open '", path_, "': ",
                errno ? std::strerror(errno) : "out of memory");
    gzbuffer(file_, 1 << 17);  // larger than the 8 KiB default: fewer system calls
  }
  ~GzReader() {
    if (file_) gzclose(file_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes into dst and returns how many arrived; fewer than n only at the end
  // of the data. A corrupt gzip stream throws; a gzip stream that merely stops early is
  // reported by ended_early() so the caller can say how much was missing.
  size_t read(uint8_t* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      unsigned piece = unsigned(std::min<size_t>(n - got, size_t(1) << 30));
      int r = gzread(file_, dst + got, piece);
      if (r < 0) fail_stream();
      if (r == 0) break;
      got += size_t(r);
    }
    int err = Z_OK;
    gzerror(file_, &err);
    if (err != Z_OK && err != Z_BUF_ERROR) fail_stream();
    return got;
  }

  // A note for messages about missing bytes: whether zlib saw the gzip stream cut short.
  std::string ended_early_note() { return cut_short() ? " (the gzip stream is cut short)" : ""; }

  // Call once all data has been read: a gzip file that lost only its last bytes (the
  // CRC-32 and length trailer) can still deliver the whole payload, but it is damaged all
  // the same, and its CRC was never checked.
  void check_complete() {
    EMBER_CHECK(!cut_short(), op_, ": '", path_, "' is truncated: the gzip stream is cut short ",
                "(an interrupted download?)");
  }

 private:
  bool cut_short() {
    int err = Z_OK;
    gzerror(file_, &err);
    return err == Z_BUF_ERROR;
  }

  [[noreturn]] void fail_stream() {
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (err == Z_ERRNO) EMBER_FAIL(op_, ": error reading '", path_, "': ", std::strerror(errno));
    EMBER_FAIL(op_, ": '", path_, "' is not a valid gzip file or its data is corrupt (zlib: ",
               msg && *msg ? msg : "unknown error", ")");
  }

  std::string path_;
  const char* op_;
  gzFile file_ = nullptr;
};

// Reads exactly `expected` bytes, growing the buffer as data arrives. Returns fewer only if
// the file ends first.
std::vector<uint8_t> read_up_to(GzReader& in, size_t expected) {
  std::vector<uint8_t> data;
  size_t got = 0;
  while (got < expected) {
    data.resize(std::min(expected, got + kReadStep));
    size_t want = data.size() - got;
    size_t r = in.read(data.data() + got, want);
    got += r;
    if (r < want) break;
  }
  data.resize(got);
  return data;
}

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

size_t idx_element_size(uint8_t type_code) {
  switch (type_code) {
    case kIdxU8:
    case kIdxI8: return 1;
    case kIdxI16: return 2;
    case kIdxI32:
    case kIdxF32: return 4;
    case kIdxF64: return 8;
    default: return 0;
  }
}

int64_t IdxArray::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

IdxArray read_idx(const std::string& path) {
  GzReader in(path, "read_idx");
  uint8_t magic[4];
  size_t got = in.read(magic, 4);
  EMBER_CHECK(got == 4, "read_idx: '", path, "' is too short for an IDX header (", got, " bytes)",
              in.ended_early_note());
  EMBER_CHECK(magic[0] == 0 && magic[1] == 0, "read_idx: '", path, "' is not an IDX file: its magic number must ",
              "start with two zero bytes, got ", int(magic[0]), ", ", int(magic[1]));
  IdxArray out;
  out.type_code = magic[2];
  const size_t elem = idx_element_size(out.type_code);
  EMBER_CHECK(elem != 0, "read_idx: '", path, "' has unknown element type code ", int(out.type_code),
              " (known: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)");
  const int ndims = magic[3];
  EMBER_CHECK(ndims >= 1 && ndims <= 4, "read_idx: '", path, "' declares ", ndims, " dimensions; expected 1 to 4");

  uint8_t dim_bytes[16];
  got = in.read(dim_bytes, size_t(ndims) * 4);
  EMBER_CHECK(got == size_t(ndims) * 4, "read_idx: '", path, "' ends inside its header (", ndims,
              " dimension sizes need ", ndims * 4, " bytes, got ", got, ")", in.ended_early_note());
  // Every dim is below 2^32 and the running product is kept below kMaxPayloadBytes (< 2^32),
  // so no product here overflows 64 bits.
  uint64_t bytes = elem;
  for (int i = 0; i < ndims; ++i) {
    const uint32_t d = load_be32(dim_bytes + 4 * i);
    EMBER_CHECK(d > 0, "read_idx: '", path, "' has dimension ", i, " of size 0");
    out.dims.push_back(int64_t(d));
    bytes *= d;
    EMBER_CHECK(bytes <= kMaxPayloadBytes, "read_idx: '", path, "' declares a payload larger than ",
                kMaxPayloadBytes, " bytes (dims so far ", i + 1, " of ", ndims, "); corrupt header?");
  }

  out.data = read_up_to(in, size_t(bytes));
  EMBER_CHECK(out.data.size() == bytes, "read_idx: '", path, "' is truncated: expected ", bytes,
              " payload bytes after the header, got ", out.data.size(), in.ended_early_note());
  // Reading one more byte also makes zlib check the gzip trailer (CRC and length).
  uint8_t extra;
  EMBER_CHECK(in.read(&extra, 1) == 0, "read_idx: '", path, "' has trailing bytes after its ", bytes,
              "-byte payload; wrong dims in the header, or two files joined?");
  in.check_complete();

  if constexpr (std::endian::native == std::endian::little) {
    if (elem > 1)
      for (size_t i = 0; i < out.data.size(); i += elem) std::reverse(out.data.begin() + i, out.data.begin() + i + elem);
  }
  return out;
}

Cifar10Batch read_cifar10_batch(const std::string& path) {
  GzReader in(path, "read_cifar10_batch");
  std::vector<uint8_t> raw = read_up_to(in, kMaxPayloadBytes + 1);
  EMBER_CHECK(raw.size() <= kMaxPayloadBytes, "read_cifar10_batch: '", path, "' is larger than ",
              kMaxPayloadBytes, " bytes; not a CIFAR-10 batch");
  in.check_complete();
  EMBER_CHECK(!raw.empty() && raw.size() % kCifarRecordBytes == 0, "read_cifar10_batch: '", path, "' has ",
              raw.size(), " bytes, not a positive multiple of the ", kCifarRecordBytes,
              "-byte record (1 label + 3x32x32 pixels)",
              "; is it a CIFAR-10 binary batch (not the Python or CIFAR-100 version)?");
  Cifar10Batch b;
  b.n = int64_t(raw.size()) / kCifarRecordBytes;
  b.labels.resize(size_t(b.n));
  b.images.resize(size_t(b.n * kCifarImageBytes));
  for (int64_t i = 0; i < b.n; ++i) {
    const uint8_t* rec = raw.data() + i * kCifarRecordBytes;
    EMBER_CHECK(rec[0] < kCifarClasses, "read_cifar10_batch: '", path, "' record ", i, " has label ", int(rec[0]),
                "; CIFAR-10 labels are 0..9");
    b.labels[size_t(i)] = rec[0];
    std::copy(rec + 1, rec + kCifarRecordBytes, b.images.begin() + i * kCifarImageBytes);
  }
  return b;
}

std::string default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

}  // namespace ember::data
