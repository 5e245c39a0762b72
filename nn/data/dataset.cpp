#include "ember/nn/data/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "ember/engine/error.h"
#include "ember/engine/factory.h"
#include "ember/nn/data/png.h"
#include "ember/ops/shape.h"

namespace ember::data {

namespace fs = std::filesystem;

namespace {

// The indices as an i64 tensor, each checked against the data set size.
Tensor index_tensor(const char* op, const std::vector<int64_t>& indices, int64_t n) {
  for (size_t i = 0; i < indices.size(); ++i)
    EMBER_CHECK(indices[i] >= 0 && indices[i] < n, op, ": index ", indices[i], " (position ", i,
                " of the batch) is out of range for a data set of ", n, " items (valid: 0..", n - 1, ")");
  return from_vector(indices, {static_cast<int64_t>(indices.size())});
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// A u8 host tensor holding a copy of `bytes`, of shape `sizes`.
Tensor u8_tensor(const std::vector<uint8_t>& bytes, const Shape& sizes) {
  Tensor t = Tensor::empty(sizes, {.dtype = DType::u8});
  EMBER_CHECK(static_cast<int64_t>(bytes.size()) == t.numel(), "u8_tensor: internal size mismatch");
  if (!bytes.empty()) std::memcpy(t.raw_data(), bytes.data(), bytes.size());
  return t;
}

Tensor labels_i64(const std::vector<uint8_t>& bytes) {
  std::vector<int64_t> v(bytes.begin(), bytes.end());
  return from_vector(v, {static_cast<int64_t>(v.size())});
}

}  // namespace

// ---- TensorDataset ----------------------------------------------------------------------

TensorDataset::TensorDataset(Tensor data, Tensor labels) {
  EMBER_CHECK(data.defined(), "TensorDataset: the data tensor is undefined");
  EMBER_CHECK(data.dim() >= 1, "TensorDataset: the data must have a leading item dim [N, ...], got a 0-dim tensor ",
              data.str());
  data_ = data.detach();
  if (labels.defined()) {
    EMBER_CHECK(labels.dim() == 1 && labels.size(0) == data.size(0), "TensorDataset: labels of shape ",
                shape_str(labels.sizes()), " do not match data of shape ", shape_str(data.sizes()),
                "; expected one label per item, shape [", data.size(0), "]");
    EMBER_CHECK(labels.dtype() == DType::i64 || labels.dtype() == DType::i32 || labels.dtype() == DType::u8,
                "TensorDataset: labels must be integers (i64, i32 or u8), got ", labels.str());
    EMBER_CHECK(labels.device() == data.device(), "TensorDataset: data is on ", data.device().str(),
                " but labels are on ", labels.device().str());
    labels_ = labels.detach().to(DType::i64);
  }
}

Tensor TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  return index_select(data_, 0, index_tensor("TensorDataset::get_batch", indices, size()).to(data_.device()));
}

Tensor TensorDataset::get_labels(const std::vector<int64_t>& indices) const {
  if (!labels_.defined()) return Tensor();
  return index_select(labels_, 0, index_tensor("TensorDataset::get_labels", indices, size()).to(labels_.device()));
}

Shape TensorDataset::item_shape() const { return Shape(data_.sizes().begin() + 1, data_.sizes().end()); }

// ---- MNIST-style IDX pairs and Fashion-MNIST ---------------------------------------------

TensorDataset load_mnist_idx(const std::string& images_path, const std::string& labels_path) {
  IdxArray images = read_idx(images_path);
  EMBER_CHECK(images.type_code == kIdxU8 && images.dims.size() == 3, "load_mnist_idx: '", images_path,
              "' holds a ", images.dims.size(), "-dim array of IDX type 0x", std::hex, int(images.type_code), std::dec,
              ", shape ", shape_str(images.dims), "; expected u8 images [N, H, W] (an idx3-ubyte file)");
  IdxArray labels = read_idx(labels_path);
  EMBER_CHECK(labels.type_code == kIdxU8 && labels.dims.size() == 1, "load_mnist_idx: '", labels_path, "' holds a ",
              labels.dims.size(), "-dim array of IDX type 0x", std::hex, int(labels.type_code), std::dec, ", shape ",
              shape_str(labels.dims), "; expected u8 labels [N] (an idx1-ubyte file)");
  EMBER_CHECK(images.dims[0] == labels.dims[0], "load_mnist_idx: '", images_path, "' has ", images.dims[0],
              " images but '", labels_path, "' has ", labels.dims[0],
              " labels; are they the same split (train with train, t10k with t10k)?");
  const int64_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  return TensorDataset(u8_tensor(images.data, {n, 1, h, w}), labels_i64(labels.data));
}

TensorDataset load_fashion_mnist(const std::string& split, const std::string& dir) {
  EMBER_CHECK(split == "train" || split == "test", "load_fashion_mnist: split must be \"train\" or \"test\", got \"",
              split, "\"");
  const std::string prefix = split == "train" ? "train" : "t10k";
  auto locate = [&](const std::string& name) {
    const std::string gz = join_path(dir, name + ".gz"), raw = join_path(dir, name);
    if (is_file(gz)) return gz;
    if (is_file(raw)) return raw;
    EMBER_FAIL("load_fashion_mnist: '", gz, "' not found (nor '", raw,
               "'); install Debian's Fashion-MNIST package (apt-get install dataset-fashion-mnist) or pass the "
               "folder that holds the four IDX files");
  };
  const std::string images_path = locate(prefix + "-images-idx3-ubyte");
  const std::string labels_path = locate(prefix + "-labels-idx1-ubyte");
  TensorDataset ds = load_mnist_idx(images_path, labels_path);
  const Shape& s = ds.data().sizes();
  EMBER_CHECK(s[2] == 28 && s[3] == 28, "load_fashion_mnist: '", images_path, "' holds images of ", s[2], "x", s[3],
              "; Fashion-MNIST images are 28x28");
  const int64_t* lp = ds.labels().data<int64_t>();
  for (int64_t i = 0; i < ds.size(); ++i)
    EMBER_CHECK(lp[i] >= 0 && lp[i] < 10, "load_fashion_mnist: '", labels_path, "' label ", i, " is ", lp[i],
                "; Fashion-MNIST labels are 0..9");
  return ds;
}

// ---- CIFAR-10 ---------------------------------------------------------------------------

TensorDataset load_cifar10(const std::string& dir, const std::string& split) {
  EMBER_CHECK(split == "train" || split == "test", "load_cifar10: split must be \"train\" or \"test\", got \"", split,
              "\"");
  std::vector<std::string> names;
  if (split == "train")
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else
    names.push_back("test_batch.bin");

  // The archive unpacks into cifar-10-batches-bin/: accept its parent too.
  std::string root = dir;
  const std::string nested = join_path(dir, "cifar-10-batches-bin");
  if (!is_file(join_path(dir, names[0])) && is_file(join_path(nested, names[0]))) root = nested;
  for (const std::string& name : names) {
    const std::string path = join_path(root, name);
    EMBER_CHECK(is_file(path), "load_cifar10: '", path, "' not found; the ", split, " split needs ",
                split == "train" ? "data_batch_1.bin .. data_batch_5.bin" : "test_batch.bin",
                " from CIFAR-10's binary version (cifar-10-binary.tar.gz) in '", dir, "'");
  }

  std::vector<uint8_t> images, labels;
  for (const std::string& name : names) {
    Cifar10Batch b = read_cifar10_batch(join_path(root, name));
    images.insert(images.end(), b.images.begin(), b.images.end());
    labels.insert(labels.end(), b.labels.begin(), b.labels.end());
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  return TensorDataset(u8_tensor(images, {n, 3, 32, 32}), labels_i64(labels));
}

// ---- ImageFolder ------------------------------------------------------------------------

struct ImageFolder::Loaded {
  Tensor data;
  std::vector<std::string> files;
};

namespace {

bool has_png_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png";
}

uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2] + 500) / 1000);
}

// One pixel from `ci` channels to `co` channels (see ImageFolder's comment for the rules).
void convert_pixel(const uint8_t* in, int ci, uint8_t* out, int co) {
  const bool in_alpha = ci == 2 || ci == 4;
  const uint8_t alpha = in_alpha ? in[ci - 1] : 255;
  const bool in_gray = ci <= 2;
  const uint8_t gray = in_gray ? in[0] : luma(in);
  switch (co) {
    case 1: out[0] = gray; break;
    case 2: out[0] = gray; out[1] = alpha; break;
    case 3:
    case 4:
      for (int c = 0; c < 3; ++c) out[c] = in_gray ? in[0] : in[c];
      if (co == 4) out[3] = alpha;
      break;
  }
}

}  // namespace

ImageFolder::ImageFolder(const std::string& dir, int channels) : ImageFolder([&] {
  EMBER_CHECK(channels >= 0 && channels <= 4, "ImageFolder: channels must be 0 (as stored) or 1..4, got ", channels);
  std::error_code ec;
  EMBER_CHECK(fs::is_directory(dir, ec), "ImageFolder: '", dir, "' is not a folder");
  Loaded l;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec) && has_png_extension(it->path())) l.files.push_back(it->path().string());
  }
  EMBER_CHECK(!ec, "ImageFolder: cannot list '", dir, "': ", ec.message());
  EMBER_CHECK(!l.files.empty(), "ImageFolder: '", dir, "' holds no .png files");
  std::sort(l.files.begin(), l.files.end());

  const int64_t n = static_cast<int64_t>(l.files.size());
  Image first = read_png(l.files[0]);
  const int64_t h = first.height, w = first.width, c = channels ? channels : first.channels;
  l.data = Tensor::empty({n, c, h, w}, {.dtype = DType::u8});
  uint8_t* out = static_cast<uint8_t*>(l.data.raw_data());
  std::vector<uint8_t> px(static_cast<size_t>(c));
  for (int64_t i = 0; i < n; ++i) {
    Image img = i == 0 ? std::move(first) : read_png(l.files[i]);
    EMBER_CHECK(img.width == w && img.height == h, "ImageFolder: '", l.files[i], "' is ", img.width, "x",
                img.height, " but '", l.files[0], "' (the first file) is ", w, "x", h,
                "; every image in the folder must have the same size");
    EMBER_CHECK(channels != 0 || img.channels == c, "ImageFolder: '", l.files[i], "' has ", img.channels,
                " channels but '", l.files[0], "' (the first file) has ", c,
                "; pass channels = 1 (gray), 3 (RGB) or 4 (RGBA) to convert them all");
    // HWC interleaved -> CHW planes, converting channels where asked.
    uint8_t* dst = out + i * c * h * w;
    for (int64_t p = 0; p < h * w; ++p) {
      const uint8_t* src = img.pixels.data() + p * img.channels;
      const uint8_t* val = src;
      if (img.channels != c) {
        convert_pixel(src, img.channels, px.data(), static_cast<int>(c));
        val = px.data();
      }
      for (int64_t k = 0; k < c; ++k) dst[k * h * w + p] = val[k];
    }
  }
  return l;
}()) {}

ImageFolder::ImageFolder(Loaded&& loaded) : TensorDataset(std::move(loaded.data)), files_(std::move(loaded.files)) {}

}  // namespace ember::data
