// Helpers shared by the test files: seeded random tensors and the first + second order
// gradient check that every op's tests run.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember::test {

// A seeded f64 normal tensor that requires grad (gradcheck's inputs).
inline Tensor leaf64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  Tensor t = randn(s, {.dtype = DType::f64}, &g);
  t.requires_grad_(true);
  return t;
}

// A seeded normal tensor of any floating dtype, not requiring grad.
inline Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  Generator g(seed);
  return randn(s, {.dtype = dt}, &g);
}

// How many of a trace's events are the op `name` (which fused path ran).
inline int64_t traced(const std::vector<TraceEvent>& events, const std::string& name) {
  return std::count_if(events.begin(), events.end(), [&](const TraceEvent& e) { return e.op == name; });
}

// gradcheck AND gradgradcheck, each reported with its message.
inline void expect_grads_ok(const TensorFunction& f, const TensorList& in) {
  GradcheckResult r1 = gradcheck(f, in);
  EXPECT_TRUE(r1.ok) << r1.message;
  GradcheckResult r2 = gradgradcheck(f, in);
  EXPECT_TRUE(r2.ok) << r2.message;
}

// Row-major multi-index of element k of `shape`, and back.
inline Shape unravel(int64_t k, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = k % shape[d];
    k /= shape[d];
  }
  return idx;
}

inline int64_t ravel(const Shape& idx, const Shape& shape) {
  int64_t k = 0;
  for (size_t d = 0; d < shape.size(); ++d) k = k * shape[d] + idx[d];
  return k;
}

}  // namespace ember::test
