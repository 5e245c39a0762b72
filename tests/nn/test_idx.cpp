// IDX and CIFAR-10 readers: the real Fashion-MNIST files where Debian's package put them,
// synthetic files of every element type (raw and gzip), and broken files that must each give
// an ember::Error naming the file.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "ember/engine/error.h"
#include "ember/nn/data/idx.h"

namespace ember::data {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("ember_" + std::string(info->name()) + "_" + std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  ASSERT_TRUE(f.good()) << path;
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!b.empty()) {
    ASSERT_EQ(gzwrite(f, b.data(), unsigned(b.size())), int(b.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// An IDX header followed by `payload` (already big-endian).
Bytes idx_file(uint8_t type, const std::vector<uint32_t>& dims, const Bytes& payload) {
  Bytes b = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// Values of type T in big-endian byte order, as IDX stores them.
template <typename T>
Bytes big_endian(const std::vector<T>& v) {
  Bytes out;
  for (T x : v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &x, sizeof(T));
    if constexpr (std::endian::native == std::endian::little) std::reverse(b, b + sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
  }
  return out;
}

template <typename T>
std::vector<T> as(const IdxArray& a) {
  std::vector<T> v(a.data.size() / sizeof(T));
  std::memcpy(v.data(), a.data.data(), v.size() * sizeof(T));
  return v;
}

// Expects read_idx(path) to throw an ember::Error naming the file and containing `what`.
void expect_idx_error(const std::string& path, const std::string& what) {
  try {
    read_idx(path);
    ADD_FAILURE() << "read_idx(" << path << ") succeeded; expected an error about '" << what << "'";
  } catch (const ember::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message '" << msg << "' lacks '" << what << "'";
  }
}

// ---- real data ------------------------------------------------------------------------------

TEST(IdxTest, ReadsFashionMnist) {
  const std::string dir = default_fashion_mnist_dir();
  EXPECT_EQ(dir, "/usr/share/datasets/fashion-mnist");
  const std::string images = dir + "/train-images-idx3-ubyte.gz", labels = dir + "/train-labels-idx1-ubyte.gz",
                    test_labels = dir + "/t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(images) || !fs::exists(labels) || !fs::exists(test_labels))
    GTEST_SKIP() << "Fashion-MNIST not found in " << dir << " (apt-get install dataset-fashion-mnist)";

  IdxArray x = read_idx(images);
  EXPECT_EQ(x.type_code, kIdxU8);
  EXPECT_EQ(x.dims, (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(x.numel(), 60000 * 28 * 28);
  ASSERT_EQ(x.data.size(), size_t(60000 * 28 * 28));
  uint64_t sum = 0;
  for (uint8_t v : x.data) sum += v;
  EXPECT_GT(sum, 0u);  // real pictures, not zeros

  IdxArray y = read_idx(labels);
  EXPECT_EQ(y.type_code, kIdxU8);
  EXPECT_EQ(y.dims, (std::vector<int64_t>{60000}));
  std::vector<int> per_class(10, 0);
  for (uint8_t l : y.data) {
    ASSERT_LT(l, 10);
    ++per_class[l];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 6000) << "class " << c;  // balanced by design

  IdxArray t = read_idx(test_labels);
  EXPECT_EQ(t.dims, (std::vector<int64_t>{10000}));
}

// ---- synthetic files --------------------------------------------------------------------

TEST(IdxTest, ReadsEveryTypeRawAndGzip) {
  TempDir tmp;
  const std::vector<uint8_t> u8 = {0, 1, 127, 128, 255, 42};
  const std::vector<int8_t> i8 = {-128, -1, 0, 1, 127, 5};
  const std::vector<int16_t> i16 = {-32768, -2, 0, 258, 32767, 1000};
  const std::vector<int32_t> i32 = {INT32_MIN, -70000, 0, 1, 16909060, INT32_MAX};
  const std::vector<float> f32 = {-1.5f, 0.0f, 3.25f, 1e-20f, 6.5e10f, -0.125f};
  const std::vector<double> f64 = {-1.5, 0.0, 3.141592653589793, 1e-300, 6.5e100, -0.125};
  struct Case {
    uint8_t type;
    Bytes payload;
  };
  const Case cases[] = {{kIdxU8, big_endian(u8)},   {kIdxI8, big_endian(i8)},   {kIdxI16, big_endian(i16)},
                        {kIdxI32, big_endian(i32)}, {kIdxF32, big_endian(f32)}, {kIdxF64, big_endian(f64)}};
  // The same six values under 1 to 4 dims.
  const std::vector<std::vector<uint32_t>> shapes = {{6}, {2, 3}, {3, 1, 2}, {1, 2, 1, 3}};
  int k = 0;
  for (const Case& c : cases)
    for (const auto& dims : shapes)
      for (bool gz : {false, true}) {
        const std::string path = tmp.file("a" + std::to_string(k++) + (gz ? ".gz" : ""));
        Bytes f = idx_file(c.type, dims, c.payload);
        if (gz) {
          write_gz(path, f);
        } else {
          write_raw(path, f);
        }
        IdxArray a = read_idx(path);
        EXPECT_EQ(a.type_code, c.type);
        EXPECT_EQ(a.dims, std::vector<int64_t>(dims.begin(), dims.end()));
        EXPECT_EQ(a.numel(), 6);
        ASSERT_EQ(a.data.size(), c.payload.size());
        switch (c.type) {
          case kIdxU8: EXPECT_EQ(as<uint8_t>(a), u8); break;
          case kIdxI8: EXPECT_EQ(as<int8_t>(a), i8); break;
          case kIdxI16: EXPECT_EQ(as<int16_t>(a), i16); break;
          case kIdxI32: EXPECT_EQ(as<int32_t>(a), i32); break;
          case kIdxF32: EXPECT_EQ(as<float>(a), f32); break;
          case kIdxF64: EXPECT_EQ(as<double>(a), f64); break;
        }
      }
  EXPECT_EQ(idx_element_size(kIdxF64), 8u);
  EXPECT_EQ(idx_element_size(0x0A), 0u);
}

TEST(IdxTest, TruncatedAndTrailingPayloads) {
  TempDir tmp;
  Bytes full = idx_file(kIdxI16, {2, 5}, big_endian(std::vector<int16_t>(10, 7)));
  Bytes short1(full.begin(), full.end() - 1);
  Bytes longer = full;
  longer.push_back(0);
  for (bool gz : {false, true}) {
    const std::string ext = gz ? ".gz" : "";
    auto write = [&](const std::string& p, const Bytes& b) { gz ? write_gz(p, b) : write_raw(p, b); };
    write(tmp.file("short" + ext), short1);
    expect_idx_error(tmp.file("short" + ext), "expected 20 payload bytes after the header, got 19");
    write(tmp.file("long" + ext), longer);
    expect_idx_error(tmp.file("long" + ext), "trailing bytes");
    // Cut inside the header.
    write(tmp.file("hdr" + ext), Bytes(full.begin(), full.begin() + 3));
    expect_idx_error(tmp.file("hdr" + ext), "too short");
    write(tmp.file("dims" + ext), Bytes(full.begin(), full.begin() + 9));
    expect_idx_error(tmp.file("dims" + ext), "ends inside its header");
    write(tmp.file("empty" + ext), {});
    expect_idx_error(tmp.file("empty" + ext), "too short");
  }
  // A file that claims 2^30 bytes but holds 10 fails without reading (or allocating) more.
  write_raw(tmp.file("claims"), idx_file(kIdxU8, {1024, 1024, 1024}, Bytes(10, 1)));
  expect_idx_error(tmp.file("claims"), "expected 1073741824 payload bytes after the header, got 10");
}

TEST(IdxTest, BadMagicAndDims) {
  TempDir tmp;
  auto check = [&](const std::string& name, const Bytes& b, const std::string& what) {
    write_raw(tmp.file(name), b);
    expect_idx_error(tmp.file(name), what);
  };
  check("nonzero", Bytes{1, 0, 8, 1, 0, 0, 0, 1, 5}, "two zero bytes");
  check("nonzero2", Bytes{0, 9, 8, 1, 0, 0, 0, 1, 5}, "two zero bytes");
  check("type", Bytes{0, 0, 0x0A, 1, 0, 0, 0, 1, 5}, "unknown element type code 10");
  check("ndims0", Bytes{0, 0, 8, 0, 5}, "declares 0 dimensions");
  check("ndims5", idx_file(kIdxU8, {1, 1, 1, 1, 1}, Bytes{5}), "declares 5 dimensions");
  check("zerodim", idx_file(kIdxU8, {3, 0}, {}), "dimension 1 of size 0");
  check("huge", idx_file(kIdxF64, {65536, 65536}, Bytes(8, 0)), "larger than");
  check("huge2", idx_file(kIdxU8, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {}), "larger than");
  // A PNG or text file handed over by mistake.
  check("text", Bytes{'h', 'e', 'l', 'l', 'o', '\n'}, "not an IDX file");
}

TEST(IdxTest, CorruptGzipAndMissingFiles) {
  TempDir tmp;
  Bytes f = idx_file(kIdxU8, {64, 64}, Bytes(4096, 0));
  for (size_t i = 0; i < 4096; ++i) f[12 + i] = uint8_t((i / 16) * 3);
  const std::string good = tmp.file("good.gz");
  write_gz(good, f);
  ASSERT_NO_THROW(read_idx(good));
  Bytes z = read_raw(good);
  ASSERT_GT(z.size(), 40u);

  // Damage inside the deflate data, in the CRC-32 trailer, and a cut in the middle.
  Bytes mid = z;
  mid[z.size() / 2] ^= 0x55;
  write_raw(tmp.file("mid.gz"), mid);
  EXPECT_THROW(read_idx(tmp.file("mid.gz")), ember::Error);
  Bytes crc = z;
  crc[z.size() - 6] ^= 1;
  write_raw(tmp.file("crc.gz"), crc);
  expect_idx_error(tmp.file("crc.gz"), "corrupt");
  write_raw(tmp.file("cut.gz"), Bytes(z.begin(), z.begin() + z.size() / 2));
  expect_idx_error(tmp.file("cut.gz"), "cut short");
  write_raw(tmp.file("trailer.gz"), Bytes(z.begin(), z.end() - 3));  // payload intact, trailer cut
  expect_idx_error(tmp.file("trailer.gz"), "cut short");
  // Every truncation of the gzip file is an error.
  for (size_t n = 0; n < z.size(); ++n) {
    // A new name each time: rewriting one file over and over is slow on some file systems.
    const std::string path = tmp.file("t" + std::to_string(n) + ".gz");
    write_raw(path, Bytes(z.begin(), z.begin() + n));
    EXPECT_THROW(read_idx(path), ember::Error) << "cut at " << n;
  }

  expect_idx_error(tmp.file("absent.gz"), "cannot open");
  fs::create_directories(tmp.file("folder"));
  expect_idx_error(tmp.file("folder"), "is a directory");
}

// ---- CIFAR-10 ---------------------------------------------------------------------------

Bytes cifar_records(const std::vector<uint8_t>& labels) {
  Bytes b;
  for (size_t i = 0; i < labels.size(); ++i) {
    b.push_back(labels[i]);
    for (int p = 0; p < 3072; ++p) b.push_back(uint8_t(i * 31 + p * 7 + p / 1024));
  }
  return b;
}

TEST(CifarTest, RoundTripRawAndGzip) {
  TempDir tmp;
  const std::vector<uint8_t> labels = {0, 9, 4};
  Bytes file = cifar_records(labels);
  write_raw(tmp.file("data_batch_1.bin"), file);
  write_gz(tmp.file("data_batch_1.bin.gz"), file);
  for (std::string name : {"data_batch_1.bin", "data_batch_1.bin.gz"}) {
    Cifar10Batch b = read_cifar10_batch(tmp.file(name));
    EXPECT_EQ(b.n, 3);
    EXPECT_EQ(b.labels, labels);
    ASSERT_EQ(b.images.size(), 3u * 3072);
    for (size_t i = 0; i < 3; ++i)
      for (int p = 0; p < 3072; p += 97) EXPECT_EQ(b.images[i * 3072 + p], uint8_t(i * 31 + p * 7 + p / 1024));
  }
}

TEST(CifarTest, BadSizesAndLabels) {
  TempDir tmp;
  auto expect_error = [&](const std::string& name, const Bytes& b, const std::string& what) {
    const std::string path = tmp.file(name);
    write_raw(path, b);
    try {
      read_cifar10_batch(path);
      ADD_FAILURE() << name << " was accepted";
    } catch (const ember::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  };
  Bytes two = cifar_records({1, 2});
  expect_error("empty", {}, "0 bytes");
  expect_error("short", Bytes(two.begin(), two.begin() + 3072), "3072 bytes");
  expect_error("long", Bytes(two.begin(), two.begin() + 3074), "3074 bytes");
  Bytes plus = two;
  plus.push_back(0);
  expect_error("plus", plus, "6147 bytes");
  expect_error("label", cifar_records({3, 10}), "record 1 has label 10");
  EXPECT_THROW(read_cifar10_batch(tmp.file("absent")), ember::Error);
}

}  // namespace
}  // namespace ember::data
