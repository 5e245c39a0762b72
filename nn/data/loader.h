// DataLoader: a Dataset read in batches, epoch after epoch, reproducibly.
//
// Epoch e visits the items in the order of randperm(N) drawn from a Generator whose seed is
// derived from (seed, e) alone (0, 1, ..., N-1 without shuffle), and batch k of epoch e is
// transformed with a Generator derived from (seed, e, k). Nothing depends on what ran
// before, so a loader restored with set_state({e, k}) produces exactly the batches an
// uninterrupted run would have produced from there on, augmentations included.
//
//   DataLoader loader(ds, 128, /*shuffle=*/true, /*drop_last=*/true, /*seed=*/1);
//   loader.set_transform([](const Tensor& x, Generator& g) { return uniform_dequantize(x, g); });
//   for (int64_t e = loader.epoch(); e < epochs; ++e)
//     for (Batch& b : loader) { ... }          // the rest of the current epoch
//   // or, counting steps rather than epochs:  Batch b = loader.next();
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <vector>

#include "ember/engine/random.h"
#include "ember/engine/tensor.h"
#include "ember/nn/data/dataset.h"

namespace ember::data {

struct Batch {
  Tensor x;                      // [B, ...]: the items, transformed, on the loader's device
  Tensor y;                      // i64 [B], or undefined when the data set has no labels
  std::vector<int64_t> indices;  // the data set items in this batch, in order
};

// Where a loader stands: the batch it produces next is batch `position` of epoch `epoch`.
// Save it with a checkpoint (after the step that used the last batch) and restore it with
// set_state to resume.
struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;
  bool operator==(const LoaderState&) const = default;
};

class DataLoader {
 public:
  // Called on every batch's x after it is moved to the loader's device; it must keep the
  // batch dim. Draw any randomness from `gen` (derived from (seed, epoch, batch)).
  using Transform = std::function<Tensor(const Tensor& x, Generator& gen)>;

  // The loader keeps a reference to `data`, which must outlive it.
  DataLoader(const Dataset& data, int64_t batch_size, bool shuffle = true, bool drop_last = false,
             uint64_t seed = 0);
  // The loader shares ownership of `data`.
  DataLoader(std::shared_ptr<const Dataset> data, int64_t batch_size, bool shuffle = true, bool drop_last = false,
             uint64_t seed = 0);
  // A temporary data set would be destroyed before the loader reads it.
  DataLoader(const Dataset&& data, int64_t batch_size, bool shuffle = true, bool drop_last = false,
             uint64_t seed = 0) = delete;

  // Batches per epoch: N / batch_size, rounded up, or down with drop_last (the last,
  // smaller batch is then dropped).
  int64_t size() const;
  int64_t batch_size() const { return batch_size_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  uint64_t seed() const { return seed_; }
  const Dataset& dataset() const { return *data_; }

  DataLoader& set_transform(Transform transform);
  // Moves every batch (x and y) to `device` before the transform runs.
  DataLoader& to(Device device);
  Device device() const { return device_; }

  int64_t epoch() const { return state_.epoch; }
  int64_t position() const { return state_.position; }
  LoaderState state() const { return state_; }
  // position may equal size(), meaning the start of the next epoch.
  void set_state(LoaderState state);

  // The order in which epoch e visits the items (a permutation of 0..N-1).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // The next batch; after the last batch of an epoch the loader moves on to the next epoch,
  // so this never runs out (for training loops that count steps).
  Batch next();

  // Iterates over the rest of the current epoch (all of it when position() is 0); when the
  // loop ends, the loader stands at the start of the next epoch. State is advanced as each
  // batch is produced, so state() inside the loop body names the batch after the current one.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    Iterator() = default;
    Batch& operator*() { return batch_; }
    Batch* operator->() { return &batch_; }
    Iterator& operator++();
    void operator++(int) { ++*this; }
    bool operator==(const Iterator& o) const { return loader_ == o.loader_; }

   private:
    friend class DataLoader;
    explicit Iterator(DataLoader* loader);
    void fetch();
    DataLoader* loader_ = nullptr;  // null: the end
    Batch batch_;
    bool last_ = false;  // batch_ is the last of its epoch
  };
  Iterator begin() { return Iterator(this); }
  Iterator end() { return Iterator(); }

 private:
  void init();
  const std::vector<int64_t>& order(int64_t epoch) const;

  std::shared_ptr<const Dataset> owned_;
  const Dataset* data_;
  int64_t batch_size_;
  bool shuffle_, drop_last_;
  uint64_t seed_;
  Transform transform_;
  Device device_ = Device::cpu();
  LoaderState state_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace ember::data
