#include "ember/nn/data/loader.h"

#include <algorithm>
#include <numeric>

#include "ember/engine/error.h"

namespace ember::data {

namespace {

// SplitMix64's finaliser: a bijective mix of 64 bits, so distinct inputs give distinct,
// unrelated-looking generator seeds.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Streams derived from the loader seed, one per purpose.
enum Stream : uint64_t { kShuffleStream = 1, kTransformStream = 2 };

uint64_t derive_seed(uint64_t seed, Stream stream, int64_t a, int64_t b = 0) {
  uint64_t h = mix64(seed ^ mix64(stream));
  h = mix64(h ^ static_cast<uint64_t>(a));
  return mix64(h ^ mix64(static_cast<uint64_t>(b)));
}

}  // namespace

DataLoader::DataLoader(const Dataset& data, int64_t batch_size, bool shuffle, bool drop_last, uint64_t seed)
    : data_(&data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), seed_(seed) {
  init();
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> data, int64_t batch_size, bool shuffle, bool drop_last,
                       uint64_t seed)
    : owned_(std::move(data)), data_(owned_.get()), batch_size_(batch_size), shuffle_(shuffle),
      drop_last_(drop_last), seed_(seed) {
  EMBER_CHECK(data_ != nullptr, "DataLoader: the data set is null");
  init();
}

void DataLoader::init() {
  EMBER_CHECK(batch_size_ >= 1, "DataLoader: batch_size must be at least 1, got ", batch_size_);
  const int64_t n = data_->size();
  EMBER_CHECK(n >= 1, "DataLoader: the data set is empty");
  EMBER_CHECK(size() >= 1, "DataLoader: drop_last with a batch size of ", batch_size_, " leaves no batch of a data set of ",
              n, " items; use a smaller batch or drop_last = false");
}

int64_t DataLoader::size() const {
  const int64_t n = data_->size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

DataLoader& DataLoader::set_transform(Transform transform) {
  transform_ = std::move(transform);
  return *this;
}

DataLoader& DataLoader::to(Device device) {
  device_ = device;
  return *this;
}

void DataLoader::set_state(LoaderState state) {
  EMBER_CHECK(state.epoch >= 0 && state.position >= 0 && state.position <= size(), "DataLoader::set_state: epoch ",
              state.epoch, ", position ", state.position, " is not a valid state for a loader of ", size(),
              " batches per epoch (expected epoch >= 0 and position in 0..", size(),
              "); was the checkpoint made with another data set or batch size?");
  if (state.position == size()) state = {state.epoch + 1, 0};
  state_ = state;
}

const std::vector<int64_t>& DataLoader::order(int64_t epoch) const {
  if (cached_epoch_ != epoch) {
    const int64_t n = data_->size();
    if (shuffle_) {
      Generator gen(derive_seed(seed_, kShuffleStream, epoch));
      cached_order_ = randperm(n, {.dtype = DType::i64}, &gen).to_vector<int64_t>();
    } else {
      cached_order_.resize(static_cast<size_t>(n));
      std::iota(cached_order_.begin(), cached_order_.end(), int64_t(0));
    }
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  EMBER_CHECK(epoch >= 0, "DataLoader::epoch_order: epoch must be >= 0, got ", epoch);
  return order(epoch);
}

Batch DataLoader::next() {
  const auto& ord = order(state_.epoch);
  const int64_t n = static_cast<int64_t>(ord.size());
  const int64_t begin = state_.position * batch_size_, end = std::min(n, begin + batch_size_);
  Batch b;
  b.indices.assign(ord.begin() + begin, ord.begin() + end);
  b.x = data_->get_batch(b.indices);
  b.y = data_->get_labels(b.indices);
  if (!(b.x.device() == device_)) b.x = b.x.to(device_);
  if (b.y.defined() && !(b.y.device() == device_)) b.y = b.y.to(device_);
  if (transform_) {
    Generator gen(derive_seed(seed_, kTransformStream, state_.epoch, state_.position));
    const int64_t rows = end - begin;
    Tensor tx = transform_(b.x, gen);
    EMBER_CHECK(tx.defined() && tx.dim() >= 1 && tx.size(0) == rows, "DataLoader: the transform turned a batch of ",
                shape_str(b.x.sizes()), " into ", tx.defined() ? shape_str(tx.sizes()) : std::string("an undefined tensor"),
                "; a transform must keep the batch dim (", rows, " items)");
    b.x = std::move(tx);
  }
  if (++state_.position == size()) state_ = {state_.epoch + 1, 0};
  return b;
}

DataLoader::Iterator::Iterator(DataLoader* loader) : loader_(loader) { fetch(); }

void DataLoader::Iterator::fetch() {
  const int64_t e = loader_->epoch();
  batch_ = loader_->next();
  last_ = loader_->epoch() != e;
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  if (last_) {
    loader_ = nullptr;
    batch_ = Batch();
  } else {
    fetch();
  }
  return *this;
}

}  // namespace ember::data
