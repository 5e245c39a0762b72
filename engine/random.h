// One counter-based generator: Philox 4x32-10 (Salmon et al., SC'11). A (seed, offset) pair
// names a position in the stream; element i of a draw uses counter (offset + i/4) and lane
// i%4, so the CUDA backend can produce the very same numbers in parallel.
#pragma once
#include <array>
#include <cstdint>

#include "ember/engine/tensor.h"
#include "ember/kernels/philox.h"

namespace ember {

namespace philox {
// One Philox 4x32-10 block: four 32-bit outputs for a 128-bit counter and a 64-bit key (the
// function shared with the GPU kernels is in kernels/philox.h).
std::array<uint32_t, 4> block(uint64_t counter_lo, uint64_t counter_hi, uint64_t key);
}  // namespace philox

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eedull) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  uint64_t seed() const { return seed_; }
  // Reserves `n` 128-bit counters and returns the first; the stream position moves on.
  uint64_t reserve(uint64_t n) { uint64_t o = offset_; offset_ += n; return o; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t o) { offset_ = o; }
  // State for checkpoints: {seed, offset}.
  std::array<uint64_t, 2> state() const { return {seed_, offset_}; }
  void set_state(std::array<uint64_t, 2> s) { seed_ = s[0]; offset_ = s[1]; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

// Uniform [low, high), normal (Box-Muller on pairs of uniforms), integers in [low, high).
Tensor rand(const Shape& sizes, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randn(const Shape& sizes, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor uniform(const Shape& sizes, double low, double high, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor normal(const Shape& sizes, double mean, double std, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions opts = {.dtype = DType::i64},
               Generator* gen = nullptr);
Tensor bernoulli(const Tensor& p, Generator* gen = nullptr);  // 0/1 with probabilities p, dtype of p
Tensor randperm(int64_t n, TensorOptions opts = {.dtype = DType::i64}, Generator* gen = nullptr);
Tensor rand_like(const Tensor& t, Generator* gen = nullptr);
Tensor randn_like(const Tensor& t, Generator* gen = nullptr);

}  // namespace ember
