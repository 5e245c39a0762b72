// Readers for the two binary data set formats the trainers use: IDX (MNIST, Fashion-MNIST),
// gzip-compressed or not, and CIFAR-10's binary batches. Files may be truncated downloads or
// the wrong file altogether, so every check fails with an ember::Error that names the file
// and says what was expected.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ember::data {

// IDX element type codes (the third byte of the magic number).
enum IdxType : uint8_t {
  kIdxU8 = 0x08,
  kIdxI8 = 0x09,
  kIdxI16 = 0x0B,
  kIdxI32 = 0x0C,
  kIdxF32 = 0x0D,
  kIdxF64 = 0x0E,
};

// Bytes per element of an IDX type code; 0 for a code that is not one of the six above.
size_t idx_element_size(uint8_t type_code);

// An IDX array: dims as stored (outermost first), and the elements in row-major order as raw
// bytes in host byte order (the file's big-endian values are already swapped), so
// `reinterpret_cast<const float*>(data.data())` is valid for type kIdxF32.
struct IdxArray {
  std::vector<int64_t> dims;
  uint8_t type_code = 0;
  std::vector<uint8_t> data;
  int64_t numel() const;
};

// Reads an IDX file, gzip-compressed (".gz") or raw: the format is detected from the bytes,
// not the name. Checks the magic (two zero bytes, a known type, 1..4 dims), that every dim is
// positive and the payload at most 2^31 bytes, that the payload is exactly the declared size
// (no fewer bytes, no trailing bytes), and the gzip stream's integrity.
IdxArray read_idx(const std::string& path);

// A CIFAR-10 binary batch (data_batch_N.bin, test_batch.bin): n records of one label byte
// then a 3 x 32 x 32 image, stored channel-major (all red, then green, then blue).
struct Cifar10Batch {
  int64_t n = 0;
  std::vector<uint8_t> images;  // n * 3 * 32 * 32, NCHW
  std::vector<uint8_t> labels;  // n, each in 0..9
};

// Reads a CIFAR-10 batch (raw, or gzip-compressed). The size must be a nonzero multiple of
// the 3073-byte record and every label below 10.
Cifar10Batch read_cifar10_batch(const std::string& path);

// Where Debian's dataset-fashion-mnist package installs train-images-idx3-ubyte.gz,
// train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.
std::string default_fashion_mnist_dir();

}  // namespace ember::data
