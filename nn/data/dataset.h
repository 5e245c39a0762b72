// Data sets: a fixed collection of N items that a DataLoader reads in batches. An item is
// one tensor of item_shape() (an image [C, H, W], a point [D]); a batch is the items stacked
// along a new first dim, [B, ...]. Labels, where a data set has them, are i64 [B].
//
// The loaders here read whole data sets into memory once (Fashion-MNIST is 47 MB of u8,
// CIFAR-10 180 MB), as u8 pixels exactly as stored; turning them into floats, dequantizing
// and augmenting is the job of nn/data/transforms.h, applied per batch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/engine/tensor.h"
#include "ember/nn/data/idx.h"

namespace ember::data {

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Number of items N.
  virtual int64_t size() const = 0;
  // The items at `indices` (each in 0..N-1, repeats allowed), stacked: [B, item_shape()...].
  virtual Tensor get_batch(const std::vector<int64_t>& indices) const = 0;
  // Their labels, i64 [B]; an undefined Tensor when the data set has no labels.
  virtual Tensor get_labels(const std::vector<int64_t>& indices) const { return Tensor(); }
  // The shape of one item (without the batch dim).
  virtual Shape item_shape() const = 0;
  // Whether get_labels gives labels.
  virtual bool has_labels() const { return false; }
};

// Items are the slices data[i] along dim 0; labels (optional) are one integer per item.
// Both are kept as given (no copy), detached from any autograd graph.
class TensorDataset : public Dataset {
 public:
  // data: [N, ...] of any dtype, at least 1-D. labels: undefined, or a 1-D integer tensor
  // (i64, i32 or u8) of N elements, kept as i64.
  explicit TensorDataset(Tensor data, Tensor labels = Tensor());

  int64_t size() const override { return data_.size(0); }
  Tensor get_batch(const std::vector<int64_t>& indices) const override;
  Tensor get_labels(const std::vector<int64_t>& indices) const override;
  Shape item_shape() const override;
  bool has_labels() const override { return labels_.defined(); }

  const Tensor& data() const { return data_; }
  const Tensor& labels() const { return labels_; }

 private:
  Tensor data_, labels_;
};

// Reads an MNIST-style pair of IDX files (gzip-compressed or raw): images u8 [N, H, W] and
// labels u8 [N]. Returns images u8 [N, 1, H, W] with labels i64 [N]. Errors name the file
// when a file is not such an array, and both files when their counts differ.
TensorDataset load_mnist_idx(const std::string& images_path, const std::string& labels_path);

// Fashion-MNIST from `dir` (Debian's dataset-fashion-mnist package by default): split "train"
// (60000 images) or "test" (10000), u8 [N, 1, 28, 28] with labels 0..9. Reads
// train-images-idx3-ubyte.gz etc., or the same names without ".gz" where only those exist.
TensorDataset load_fashion_mnist(const std::string& split = "train",
                                 const std::string& dir = default_fashion_mnist_dir());

// CIFAR-10's binary version from `dir`: split "train" reads data_batch_1.bin ..
// data_batch_5.bin (50000 images), "test" reads test_batch.bin (10000). Returns u8
// [N, 3, 32, 32] with labels 0..9. If `dir` lacks the files but holds the archive's folder
// cifar-10-batches-bin, that folder is used. A missing file is an error naming it.
TensorDataset load_cifar10(const std::string& dir, const std::string& split = "train");

// Every .png file directly in `dir` (not in subfolders; ".png" in any letter case), in
// sorted file-name order, as u8 [N, C, H, W] without labels. All images must have the same
// width and height. channels = 0 keeps the files' own channel count (1 gray, 2 gray + alpha,
// 3 RGB, 4 RGBA), which must then agree too; channels = 1..4 converts every image to that
// count (gray is repeated into RGB; RGB becomes gray by the Rec. 601 luma 0.299 R + 0.587 G +
// 0.114 B; a missing alpha is 255; a dropped alpha is discarded, not composited).
class ImageFolder : public TensorDataset {
 public:
  explicit ImageFolder(const std::string& dir, int channels = 0);
  // The files, in item order.
  const std::vector<std::string>& files() const { return files_; }

 private:
  struct Loaded;
  explicit ImageFolder(Loaded&& loaded);
  std::vector<std::string> files_;
};

}  // namespace ember::data
