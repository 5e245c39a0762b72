// The data layer: TensorDataset and the loaders of IDX, CIFAR-10 and PNG folders (the real
// Fashion-MNIST where Debian's package put it, synthetic files in a temp folder otherwise),
// the DataLoader's batching, seeded shuffling and checkpoint state, and the transforms'
// values checked against naive formulas written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "ember/engine/error.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/nn/data/dataset.h"
#include "ember/nn/data/loader.h"
#include "ember/nn/data/png.h"
#include "ember/nn/data/transforms.h"
#include "ember/ops/reduce.h"

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
            ("ember_data_" + std::string(info->name()) + "_" + std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  ASSERT_TRUE(f.good()) << path;
}

// Runs f, expecting an ember::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an ember::Error mentioning '" << parts.at(0) << "'";
  } catch (const ember::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// N items of 3 values each, item i holding 3i, 3i+1, 3i+2; labels i % 4.
TensorDataset make_items(int64_t n) {
  Tensor data = arange(0, double(3 * n), 1.0, {.dtype = DType::f32}).reshape({n, 3});
  std::vector<int64_t> lab(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) lab[size_t(i)] = i % 4;
  return TensorDataset(data, from_vector(lab, {n}));
}

// Checks a batch's x and y against the items its indices name (make_items layout).
void expect_batch_matches(const Batch& b) {
  const int64_t rows = static_cast<int64_t>(b.indices.size());
  ASSERT_EQ(b.x.sizes(), (Shape{rows, 3}));
  ASSERT_EQ(b.y.sizes(), (Shape{rows}));
  auto x = b.x.to_vector<float>();
  auto y = b.y.to_vector<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = b.indices[size_t(r)];
    for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(x[size_t(r * 3 + k)], float(3 * i + k));
    EXPECT_EQ(y[size_t(r)], i % 4);
  }
}

// All index lists of the rest of the current epoch.
std::vector<std::vector<int64_t>> rest_of_epoch(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (Batch& b : loader) out.push_back(b.indices);
  return out;
}

// ---- TensorDataset ----------------------------------------------------------------------

TEST(NnData, TensorDatasetGathersItemsAndLabels) {
  TensorDataset ds = make_items(10);
  EXPECT_EQ(ds.size(), 10);
  EXPECT_EQ(ds.item_shape(), (Shape{3}));
  EXPECT_TRUE(ds.has_labels());
  Batch b;
  b.indices = {3, 1, 3, 9};
  b.x = ds.get_batch(b.indices);
  b.y = ds.get_labels(b.indices);
  expect_batch_matches(b);

  EXPECT_EQ(ds.get_batch({}).sizes(), (Shape{0, 3}));

  TensorDataset unlabeled(zeros({5, 2, 2}));
  EXPECT_FALSE(unlabeled.has_labels());
  EXPECT_FALSE(unlabeled.get_labels({0, 1}).defined());
  EXPECT_EQ(unlabeled.get_batch({4, 0}).sizes(), (Shape{2, 2, 2}));

  // u8 labels are kept as i64
  TensorDataset u8lab(zeros({3, 1}), from_vector(std::vector<uint8_t>{7, 8, 9}, {3}));
  EXPECT_EQ(u8lab.labels().dtype(), DType::i64);
  EXPECT_EQ(u8lab.get_labels({2}).to_vector<int64_t>(), std::vector<int64_t>{9});

  expect_error([&] { ds.get_batch({0, 10}); }, {"TensorDataset::get_batch", "10", "out of range"});
  expect_error([&] { ds.get_labels({-1}); }, {"TensorDataset::get_labels", "-1"});
  expect_error([] { TensorDataset(zeros({4, 2}), zeros({3}, {.dtype = DType::i64})); }, {"labels", "[4]"});
  expect_error([] { TensorDataset(zeros({4, 2}), zeros({4})); }, {"integers"});
  expect_error([] { TensorDataset(scalar_tensor(1.0)); }, {"0-dim"});
}

// ---- DataLoader -------------------------------------------------------------------------

TEST(NnData, LoaderBatchesInOrderAndDropsLast) {
  TensorDataset ds = make_items(10);
  DataLoader keep(ds, 4, /*shuffle=*/false, /*drop_last=*/false, 1);
  EXPECT_EQ(keep.size(), 3);
  std::vector<int64_t> seen;
  std::vector<int64_t> sizes;
  for (Batch& b : keep) {
    expect_batch_matches(b);
    sizes.push_back(b.x.size(0));
    seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  std::vector<int64_t> iota(10);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(seen, iota);
  EXPECT_EQ(keep.state(), (LoaderState{1, 0}));  // the loop leaves it at the next epoch

  DataLoader drop(ds, 4, false, /*drop_last=*/true, 1);
  EXPECT_EQ(drop.size(), 2);
  sizes.clear();
  for (Batch& b : drop) sizes.push_back(b.x.size(0));
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4}));

  // next() runs on across epochs
  DataLoader cyc(ds, 4, false, true, 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(cyc.next().indices.front(), (i % 2) * 4);
  EXPECT_EQ(cyc.state(), (LoaderState{2, 1}));

  // a loader can own its data set; a temporary one would dangle, so it does not compile
  static_assert(!std::is_constructible_v<DataLoader, TensorDataset&&, int64_t>);
  static_assert(std::is_constructible_v<DataLoader, const TensorDataset&, int64_t>);
  DataLoader owning(std::make_shared<TensorDataset>(make_items(5)), 2, false, false, 0);
  EXPECT_EQ(owning.size(), 3);
  expect_batch_matches(owning.next());

  // unlabeled data: y undefined
  TensorDataset unlabeled(zeros({3, 2}));
  DataLoader ul(unlabeled, 2, true, false, 0);
  EXPECT_FALSE(ul.next().y.defined());

  expect_error([&] { DataLoader(ds, 0, false, false, 0); }, {"batch_size"});
  expect_error([&] { DataLoader(ds, 11, false, true, 0); }, {"drop_last", "11"});
}

TEST(NnData, ShuffleIsAPermutationAndSeedsDecide) {
  TensorDataset ds = make_items(103);
  DataLoader a(ds, 10, /*shuffle=*/true, /*drop_last=*/false, /*seed=*/42);
  std::vector<int64_t> seen;
  for (Batch& b : a) {
    expect_batch_matches(b);
    seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  }
  ASSERT_EQ(seen.size(), 103u);
  EXPECT_EQ(seen, a.epoch_order(0));
  std::vector<int64_t> sorted = seen, iota(103);
  std::sort(sorted.begin(), sorted.end());
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);  // a permutation
  EXPECT_NE(seen, iota);    // and shuffled

  DataLoader same(ds, 10, true, false, 42), other(ds, 10, true, false, 43);
  EXPECT_EQ(same.epoch_order(0), seen);
  EXPECT_EQ(same.epoch_order(5), a.epoch_order(5));
  EXPECT_NE(other.epoch_order(0), seen);
  EXPECT_NE(a.epoch_order(1), a.epoch_order(0));  // epochs differ
  EXPECT_NE(a.epoch_order(2), a.epoch_order(1));
  // The epoch order depends on (seed, epoch) only, not on what was read before.
  const std::vector<int64_t> order1 = a.epoch_order(1);
  EXPECT_EQ(rest_of_epoch(a).front(), std::vector<int64_t>(order1.begin(), order1.begin() + 10));
}

TEST(NnData, StateRestoreReproducesTheRestOfAnEpoch) {
  TensorDataset ds(arange(0, 60 * 4, 1.0, {.dtype = DType::f32}).reshape({60, 4}).to(DType::u8),
                   arange(0, 60, 1.0, {.dtype = DType::i64}));
  // A random transform: the restored loader must also reproduce the random draws.
  auto dequant = [](const Tensor& x, Generator& g) { return uniform_dequantize(x, g); };
  DataLoader a(ds, 7, true, false, 2024);
  a.set_transform(dequant);
  for (int i = 0; i < 9 + 3; ++i) a.next();  // one epoch of 9 batches, then 3 more
  const LoaderState saved = a.state();
  EXPECT_EQ(saved, (LoaderState{1, 3}));
  std::vector<Batch> rest;
  for (Batch& b : a) rest.push_back(b);
  EXPECT_EQ(rest.size(), 6u);
  rest.push_back(a.next());  // into epoch 2

  DataLoader b(ds, 7, true, false, 2024);
  b.set_transform(dequant);
  b.set_state(saved);
  std::vector<Batch> again;
  for (Batch& x : b) again.push_back(x);
  again.push_back(b.next());
  ASSERT_EQ(again.size(), rest.size());
  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(again[i].indices, rest[i].indices) << "batch " << i;
    EXPECT_EQ(again[i].x.to_vector<float>(), rest[i].x.to_vector<float>()) << "batch " << i;
    EXPECT_EQ(again[i].y.to_vector<int64_t>(), rest[i].y.to_vector<int64_t>()) << "batch " << i;
  }
  // the transform saw different draws in different batches
  EXPECT_NE(rest[0].x.to_vector<float>()[0] * 256 - float(rest[0].indices[0] * 4),
            rest[1].x.to_vector<float>()[0] * 256 - float(rest[1].indices[0] * 4));

  // position == size() is the start of the next epoch; anything beyond is refused.
  b.set_state({4, 9});
  EXPECT_EQ(b.state(), (LoaderState{5, 0}));
  expect_error([&] { b.set_state({0, 10}); }, {"set_state", "10"});
  expect_error([&] { b.set_state({-1, 0}); }, {"set_state"});

  // a transform that loses the batch dim is an error
  DataLoader bad(ds, 7, false, false, 0);
  bad.set_transform([](const Tensor& x, Generator&) { return x.narrow(0, 0, 1); });
  expect_error([&] { bad.next(); }, {"transform", "batch dim"});
  EXPECT_EQ(bad.state(), (LoaderState{0, 0}));  // the failed batch was not consumed

  // to(cpu) is a no-op device move on the CPU build
  DataLoader dev(ds, 5, false, false, 0);
  dev.to(Device::cpu());
  EXPECT_TRUE(dev.next().x.device().is_cpu());
}

// ---- IDX / Fashion-MNIST ----------------------------------------------------------------

Bytes idx_u8(const std::vector<uint32_t>& dims, const Bytes& payload) {
  Bytes b = {0, 0, 0x08, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

TEST(NnData, MnistIdxPairsAreChecked) {
  TempDir dir;
  Bytes pixels(3 * 2 * 5);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 7);
  write_raw(dir.file("img"), idx_u8({3, 2, 5}, pixels));
  write_raw(dir.file("lab"), idx_u8({3}, {4, 0, 2}));
  write_raw(dir.file("lab2"), idx_u8({2}, {4, 0}));
  write_raw(dir.file("lab_2d"), idx_u8({3, 1}, {4, 0, 2}));

  TensorDataset ds = load_mnist_idx(dir.file("img"), dir.file("lab"));
  EXPECT_EQ(ds.data().sizes(), (Shape{3, 1, 2, 5}));
  EXPECT_EQ(ds.data().dtype(), DType::u8);
  EXPECT_EQ(ds.data().to_vector<uint8_t>(), pixels);
  EXPECT_EQ(ds.labels().to_vector<int64_t>(), (std::vector<int64_t>{4, 0, 2}));

  expect_error([&] { load_mnist_idx(dir.file("img"), dir.file("lab2")); },
               {dir.file("img"), dir.file("lab2"), "3 images", "2 labels"});
  expect_error([&] { load_mnist_idx(dir.file("img"), dir.file("lab_2d")); }, {dir.file("lab_2d"), "labels [N]"});
  expect_error([&] { load_mnist_idx(dir.file("lab"), dir.file("lab")); }, {dir.file("lab"), "[N, H, W]"});
  expect_error([&] { load_fashion_mnist("train", dir.str()); },
               {dir.file("train-images-idx3-ubyte.gz"), "apt-get install dataset-fashion-mnist"});
  expect_error([&] { load_fashion_mnist("valid", dir.str()); }, {"split", "valid"});
}

TEST(NnData, FashionMnistLoads) {
  const std::string dir = default_fashion_mnist_dir();
  if (!fs::exists(dir))
    GTEST_SKIP() << dir << " not found: apt-get install dataset-fashion-mnist to run this test";
  for (auto [split, n] : {std::pair<std::string, int64_t>{"train", 60000}, {"test", 10000}}) {
    TensorDataset ds = load_fashion_mnist(split, dir);
    EXPECT_EQ(ds.size(), n) << split;
    EXPECT_EQ(ds.data().sizes(), (Shape{n, 1, 28, 28})) << split;
    EXPECT_EQ(ds.data().dtype(), DType::u8);
    EXPECT_EQ(ds.item_shape(), (Shape{1, 28, 28}));
    std::vector<int64_t> count(10, 0);
    for (int64_t l : ds.labels().to_vector<int64_t>()) {
      ASSERT_TRUE(l >= 0 && l < 10) << l;
      ++count[size_t(l)];
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(count[size_t(c)], n / 10) << split << " class " << c;  // balanced
    if (split == "test") {
      DataLoader loader(ds, 256, true, true, 0);
      Batch b = loader.next();
      EXPECT_EQ(b.x.sizes(), (Shape{256, 1, 28, 28}));
      Tensor f = to_float_unit(b.x);
      EXPECT_GT(max(f).item(), 0.5);
    }
  }
}

// ---- CIFAR-10 ---------------------------------------------------------------------------

// A batch file of `n` records; record r of file f has label (f + r) % 10 and every pixel
// byte (f * 31 + r * 7 + c * 3 + p) % 256 for channel c and pixel p.
Bytes cifar_file(int f, int n) {
  Bytes b;
  for (int r = 0; r < n; ++r) {
    b.push_back(uint8_t((f + r) % 10));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) b.push_back(uint8_t((f * 31 + r * 7 + c * 3 + p) % 256));
  }
  return b;
}

void expect_cifar(const TensorDataset& ds, const std::vector<std::pair<int, int>>& files) {
  int64_t total = 0;
  for (auto [f, n] : files) total += n;
  ASSERT_EQ(ds.data().sizes(), (Shape{total, 3, 32, 32}));
  ASSERT_EQ(ds.data().dtype(), DType::u8);
  auto px = ds.data().to_vector<uint8_t>();
  auto lab = ds.labels().to_vector<int64_t>();
  int64_t i = 0;
  for (auto [f, n] : files)
    for (int r = 0; r < n; ++r, ++i) {
      EXPECT_EQ(lab[size_t(i)], (f + r) % 10);
      for (int c = 0; c < 3; ++c)
        for (int p : {0, 33, 1023}) EXPECT_EQ(px[size_t((i * 3 + c) * 1024 + p)], (f * 31 + r * 7 + c * 3 + p) % 256);
    }
}

TEST(NnData, Cifar10FromBatchFiles) {
  TempDir dir;
  for (int f = 1; f <= 5; ++f) write_raw(dir.file("data_batch_" + std::to_string(f) + ".bin"), cifar_file(f, f));
  write_raw(dir.file("test_batch.bin"), cifar_file(0, 3));
  expect_cifar(load_cifar10(dir.str(), "train"), {{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}});
  expect_cifar(load_cifar10(dir.str(), "test"), {{0, 3}});

  // the archive's own folder inside dir
  TempDir parent;
  fs::create_directories(parent.file("cifar-10-batches-bin"));
  write_raw(parent.file("cifar-10-batches-bin/test_batch.bin"), cifar_file(0, 2));
  expect_cifar(load_cifar10(parent.str(), "test"), {{0, 2}});

  fs::remove(dir.file("data_batch_3.bin"));
  expect_error([&] { load_cifar10(dir.str(), "train"); }, {dir.file("data_batch_3.bin"), "not found"});
  expect_error([&] { load_cifar10(dir.str(), "val"); }, {"split"});
}

// ---- ImageFolder ------------------------------------------------------------------------

Image make_image(int w, int h, int c, int seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels.resize(size_t(w * h * c));
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t((i * 13 + size_t(seed) * 101) % 256);
  return img;
}

TEST(NnData, ImageFolderReadsSortedPngs) {
  TempDir dir;
  const int w = 5, h = 4;
  // written out of order; read back sorted by name
  write_png(dir.file("b.png"), make_image(w, h, 3, 1));
  write_png(dir.file("a.png"), make_image(w, h, 3, 0));
  write_png(dir.file("c.PNG"), make_image(w, h, 3, 2));
  write_raw(dir.file("notes.txt"), {1, 2, 3});
  fs::create_directories(dir.file("sub"));
  write_png(dir.file("sub/z.png"), make_image(9, 9, 1, 0));  // subfolders are not read

  ImageFolder folder(dir.str());
  ASSERT_EQ(folder.size(), 3);
  EXPECT_EQ(folder.files(), (std::vector<std::string>{dir.file("a.png"), dir.file("b.png"), dir.file("c.PNG")}));
  EXPECT_EQ(folder.item_shape(), (Shape{3, h, w}));
  EXPECT_FALSE(folder.has_labels());
  auto px = folder.data().to_vector<uint8_t>();
  for (int n = 0; n < 3; ++n) {
    Image img = make_image(w, h, 3, n);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          EXPECT_EQ(px[size_t(((n * 3 + c) * h + y) * w + x)], img.pixels[size_t((y * w + x) * 3 + c)]);
  }
  // batches come out of a loader like any data set
  DataLoader loader(folder, 2, false, false, 0);
  EXPECT_EQ(loader.next().x.sizes(), (Shape{2, 3, h, w}));

  // a gray image among RGB ones: an error by default, converted with channels = 3
  write_png(dir.file("d.png"), make_image(w, h, 1, 3));
  expect_error([&] { ImageFolder f(dir.str()); }, {dir.file("d.png"), "channels"});
  ImageFolder rgb(dir.str(), 3);
  Tensor d = rgb.get_batch({3});
  Image gray = make_image(w, h, 1, 3);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(d[0][c][1][2].item(), double(gray.pixels[size_t(1 * w + 2)]));
  ImageFolder one(dir.str(), 1);
  Image a = make_image(w, h, 3, 0);
  EXPECT_EQ(one.get_batch({0})[0][0][0][0].item(),
            std::round(0.299 * a.pixels[0] + 0.587 * a.pixels[1] + 0.114 * a.pixels[2]));

  // a different size: an error naming the file
  write_png(dir.file("e.png"), make_image(w + 1, h, 3, 4));
  expect_error([&] { ImageFolder f(dir.str(), 3); }, {dir.file("e.png"), "6x4", dir.file("a.png"), "same size"});

  TempDir empty;
  expect_error([&] { ImageFolder f(empty.str()); }, {empty.str(), "no .png"});
  expect_error([&] { ImageFolder f(empty.file("missing")); }, {"not a folder"});
}

// ---- transforms -------------------------------------------------------------------------

Tensor all_bytes() {  // u8 [2, 1, 8, 16] holding 0..255
  std::vector<uint8_t> v(256);
  std::iota(v.begin(), v.end(), 0);
  return from_vector(v, {2, 1, 8, 16});
}

TEST(NnData, PixelScalingAndDequantization) {
  Tensor x = all_bytes();
  auto unit = to_float_unit(x).to_vector<float>();
  auto sym = to_float_symmetric(x).to_vector<float>();
  auto unit64 = to_float_unit(x, DType::f64).to_vector<double>();
  for (int p = 0; p < 256; ++p) {
    EXPECT_NEAR(unit[size_t(p)], p / 255.0, 1e-7);
    EXPECT_NEAR(sym[size_t(p)], p / 127.5 - 1.0, 1e-6);
    EXPECT_NEAR(unit64[size_t(p)], p / 255.0, 1e-15);
  }
  EXPECT_EQ(unit.front(), 0.0f);
  EXPECT_EQ(unit.back(), 1.0f);
  EXPECT_EQ(sym.front(), -1.0f);
  EXPECT_EQ(sym.back(), 1.0f);

  Generator g(11), g_copy = g;
  auto dq = uniform_dequantize(x, g, DType::f64).to_vector<double>();
  auto u = rand({2, 1, 8, 16}, {.dtype = DType::f64}, &g_copy).to_vector<double>();
  EXPECT_EQ(g.state(), g_copy.state());  // it used exactly one rand() of x's shape
  for (int p = 0; p < 256; ++p) {
    EXPECT_DOUBLE_EQ(dq[size_t(p)], (p + u[size_t(p)]) / 256.0);
    EXPECT_GE(dq[size_t(p)], p / 256.0);
    EXPECT_LT(dq[size_t(p)], (p + 1) / 256.0);
  }
  expect_error([&] { to_float_unit(x.to(DType::f32)); }, {"to_float_unit", "u8"});
  expect_error([&] { uniform_dequantize(x.to(DType::f32), g); }, {"uniform_dequantize", "u8"});
}

TEST(NnData, LogitTransformAndItsLogDet) {
  const double alpha = 0.05;
  Generator g(3);
  Tensor x = rand({3, 2, 4}, {.dtype = DType::f64}, &g);
  auto [y, logdet] = logit_transform(x, alpha);
  ASSERT_EQ(y.sizes(), x.sizes());
  ASSERT_EQ(logdet.sizes(), (Shape{3}));
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>(), ld = logdet.to_vector<double>();
  auto logit = [&](double v) {
    const double s = alpha + (1 - 2 * alpha) * v;
    return std::log(s / (1 - s));
  };
  const double h = 1e-6;
  for (int b = 0; b < 3; ++b) {
    double analytic = 0, numeric = 0;
    for (int i = 0; i < 8; ++i) {
      const double v = xv[size_t(b * 8 + i)];
      EXPECT_NEAR(yv[size_t(b * 8 + i)], logit(v), 1e-12);
      const double s = alpha + (1 - 2 * alpha) * v;
      analytic += std::log((1 - 2 * alpha) / (s * (1 - s)));
      // the Jacobian is diagonal: log|det| = sum of log dy_i/dx_i, by central differences
      numeric += std::log((logit(v + h) - logit(v - h)) / (2 * h));
    }
    EXPECT_NEAR(ld[size_t(b)], analytic, 1e-10);
    EXPECT_NEAR(ld[size_t(b)], numeric, 1e-6);
  }
  // the inverse, and the ends of [0, 1] with alpha > 0
  auto back = logit_inverse(y, alpha).to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(back[i], xv[i], 1e-12);
  auto ends = logit_transform(tensor({0.0, 1.0}, {2, 1}, {.dtype = DType::f64}), alpha);
  EXPECT_NEAR(ends.y.to_vector<double>()[0], std::log(alpha / (1 - alpha)), 1e-12);
  EXPECT_NEAR(ends.y.to_vector<double>()[1], -std::log(alpha / (1 - alpha)), 1e-12);
  // differentiable: d(sum y)/dx is the Jacobian's diagonal
  Tensor xr = x.detach().requires_grad_();
  logit_transform(xr, alpha).y.sum().backward();
  auto gx = xr.grad().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) {
    const double s = alpha + (1 - 2 * alpha) * xv[i];
    EXPECT_NEAR(gx[i], (1 - 2 * alpha) / (s * (1 - s)), 1e-10);
  }

  expect_error([] { logit_transform(tensor({0.5, 1.5}, {2})); }, {"logit_transform", "[0, 1]"});
  expect_error([] { logit_transform(tensor({0.0, 0.5}, {2}), 0.0); }, {"logit_transform", "(0, 1)"});
  expect_error([] { logit_transform(tensor({0.5}, {1}), 0.5); }, {"alpha"});
}

TEST(NnData, PadTo32) {
  Generator g(5);
  Tensor x = randint(1, 256, {2, 3, 28, 28}, {.dtype = DType::i64}, &g).to(DType::u8);  // no zeros inside
  Tensor p = pad_to_32(x);
  ASSERT_EQ(p.sizes(), (Shape{2, 3, 32, 32}));
  ASSERT_EQ(p.dtype(), DType::u8);
  auto pv = p.to_vector<uint8_t>(), xv = x.to_vector<uint8_t>();
  for (int n = 0; n < 2 * 3; ++n)
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j) {
        const uint8_t v = pv[size_t((n * 32 + i) * 32 + j)];
        const bool border = i < 2 || i >= 30 || j < 2 || j >= 30;
        if (border)
          EXPECT_EQ(v, 0) << n << " " << i << " " << j;
        else
          EXPECT_EQ(v, xv[size_t((n * 28 + i - 2) * 28 + j - 2)]);
      }
  EXPECT_EQ(pad_to_32(zeros({1, 1, 32, 32})).sizes(), (Shape{1, 1, 32, 32}));
  expect_error([] { pad_to_32(zeros({1, 1, 33, 28})); }, {"pad_to_32", "33x28"});
}

// Every row of w values reversed.
template <typename T>
std::vector<T> naive_hflip(const std::vector<T>& v, int64_t w) {
  std::vector<T> out(v.size());
  for (size_t r = 0; r < v.size() / size_t(w); ++r)
    for (int64_t j = 0; j < w; ++j) out[r * size_t(w) + size_t(j)] = v[r * size_t(w) + size_t(w - 1 - j)];
  return out;
}

TEST(NnData, RandomHflipFlipsExactlyTheSelectedSamples) {
  const int64_t B = 16, C = 2, H = 3, W = 5;
  Tensor x = arange(0, double(B * C * H * W), 1.0, {.dtype = DType::f32}).reshape({B, C, H, W});
  Generator g(9), g_copy = g;
  Tensor out = random_hflip(x, g, 0.5);
  auto u = rand({B}, {.dtype = DType::f32}, &g_copy).to_vector<float>();
  EXPECT_EQ(g.state(), g_copy.state());
  auto xv = x.to_vector<float>(), ov = out.to_vector<float>();
  int flipped = 0;
  for (int64_t b = 0; b < B; ++b) {
    const bool flip = u[size_t(b)] < 0.5f;
    flipped += flip;
    for (int64_t r = 0; r < C * H; ++r)
      for (int64_t j = 0; j < W; ++j) {
        const size_t src = size_t((b * C * H + r) * W + (flip ? W - 1 - j : j));
        EXPECT_EQ(ov[size_t((b * C * H + r) * W + j)], xv[src]) << "sample " << b << (flip ? " (flipped)" : "");
      }
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, B);

  Generator g2(1);
  EXPECT_EQ(random_hflip(x, g2, 0.0).to_vector<float>(), xv);
  EXPECT_EQ(random_hflip(x, g2, 1.0).to_vector<float>(), naive_hflip(xv, W));
  Tensor u8 = all_bytes();  // [2, 1, 8, 16]
  EXPECT_EQ(random_hflip(u8, g2, 1.0).to_vector<uint8_t>(), naive_hflip(u8.to_vector<uint8_t>(), 16));
  expect_error([&] { random_hflip(x, g2, 1.5); }, {"random_hflip", "1.5"});
}

}  // namespace
}  // namespace ember::data
