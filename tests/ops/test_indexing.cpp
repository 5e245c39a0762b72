// Indexing ops: index_select, gather, scatter_add, masked_fill, flip, pad (constant, reflect),
// repeat, roll, tril, triu. Forward values against naive loops, gradients by gradcheck and
// gradgradcheck in f64 (non-contiguous inputs included), bounds and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "ember/ember.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

Tensor i64(std::initializer_list<double> v, const Shape& s) { return tensor(v, s, {.dtype = DType::i64}); }

// Checks y[i] == a[src(i)] for every output element (src returns the source multi-index, or
// an empty Shape for `fill`).
template <typename F>
void expect_remap(const Tensor& y, const Tensor& a, const Shape& out_shape, F src, double fill = 0.0) {
  ASSERT_EQ(y.sizes(), out_shape);
  auto yv = y.to_vector<double>();
  auto av = a.to_vector<double>();
  for (int64_t k = 0; k < y.numel(); ++k) {
    Shape s = src(unravel(k, out_shape));
    const double want = s.size() == a.sizes().size() ? av[ravel(s, a.sizes())] : fill;
    ASSERT_EQ(yv[k], want) << "element " << k;
  }
}

template <typename F>
void expect_error(F f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- index_select ----

TEST(IndexingOps, IndexSelectMatchesNaive) {
  Generator gen(1);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  Tensor ix = i64({2, 0, 2, 1}, {4});
  for (int64_t dim : {0, 1, 2, -1}) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    Shape os = a.sizes();
    os[d] = 4;
    auto iv = ix.to_vector<int64_t>();
    expect_remap(index_select(a, dim, ix), a, os, [&](Shape i) {
      i[d] = iv[i[d]];
      return i;
    });
    // i32 indices give the same result
    EXPECT_EQ(index_select(a, dim, ix.to(DType::i32)).to_vector<double>(), index_select(a, dim, ix).to_vector<double>());
  }
  // non-contiguous input, integer dtype, empty index
  Tensor t = a.transpose(0, 2);
  expect_remap(index_select(t, 1, i64({3, 3}, {2})), t, {5, 2, 3}, [](Shape i) {
    i[1] = 3;
    return i;
  });
  Tensor n = tensor({1, 2, 3, 4}, {2, 2}, {.dtype = DType::i32});
  EXPECT_EQ(index_select(n, 1, i64({1}, {1})).to_vector<int32_t>(), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(index_select(a, 1, zeros({0}, {.dtype = DType::i64})).sizes(), (Shape{3, 0, 5}));
}

TEST(IndexingOps, IndexSelectGradients) {
  Tensor x = leaf64({4, 3}, 2), x3 = leaf64({2, 3, 4}, 3);
  Tensor ix = i64({1, 3, 1, 0, 1}, {5});  // repeats: the gradient adds up
  expect_grads_ok([&](const TensorList& in) { return index_select(in[0], 0, ix); }, {x});
  expect_grads_ok([&](const TensorList& in) { return index_select(in[0].t(), 1, ix); }, {x});
  expect_grads_ok([&](const TensorList& in) { return index_select(in[0], 2, ix.to(DType::i32)); }, {x3});
  expect_grads_ok([&](const TensorList& in) { return square(index_select(in[0], 1, i64({2, 2}, {2}))); }, {x3});
  Tensor a = leaf64({4}, 4);
  sum(index_select(a, 0, ix)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{1, 3, 0, 1}));
}

// ---- gather / scatter_add ----

TEST(IndexingOps, GatherMatchesNaive) {
  Generator gen(5);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  for (int64_t dim : {0, 1, 2}) {
    Shape is = {2, 3, 4};  // smaller than a in the other dims
    is[dim] = 6;
    Tensor ix = randint(0, a.size(dim), is, {.dtype = DType::i64}, &gen);
    auto iv = ix.to_vector<int64_t>();
    expect_remap(gather(a, dim, ix), a, is, [&](Shape i) {
      int64_t k = ravel(i, is);
      i[dim] = iv[k];
      return i;
    });
    EXPECT_EQ(gather(a, dim, ix.to(DType::i32)).to_vector<double>(), gather(a, dim, ix).to_vector<double>());
  }
  // non-contiguous input and index
  Tensor t = a.transpose(0, 1);  // [4, 3, 5]
  Tensor ix = randint(0, 4, {5, 3, 2}, {.dtype = DType::i64}, &gen).transpose(0, 2);  // [2, 3, 5]
  auto iv = ix.to_vector<int64_t>();
  expect_remap(gather(t, 0, ix), t, {2, 3, 5}, [&](Shape i) {
    int64_t k = ravel(i, {2, 3, 5});
    i[0] = iv[k];
    return i;
  });
}

TEST(IndexingOps, ScatterAddMatchesNaive) {
  Generator gen(6);
  Tensor self = randn({3, 4}, {.dtype = DType::f64}, &gen);
  Tensor src = randn({4, 5}, {.dtype = DType::f64}, &gen);  // larger than the index
  Tensor ix = i64({0, 2, 2, 1, 0, 0, 3, 3, 2, 1, 1, 1}, {2, 6});
  EXPECT_THROW(scatter_add(self, 1, ix, src), Error);  // index [2, 6] larger than src in dim 1
  Tensor ix1 = ix.slice(1, 0, 4);                       // [2, 4], non-contiguous
  for (int64_t dim : {0, 1}) {
    Tensor ixd = dim == 0 ? i64({0, 2, 2, 1, 0, 0, 1, 2}, {2, 4}) : ix1;
    Tensor y = scatter_add(self, dim, ixd, src);
    std::vector<double> want = self.to_vector<double>();
    auto iv = ixd.to_vector<int64_t>();
    auto sv = src.to_vector<double>();
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        int64_t r = dim == 0 ? iv[i * 4 + j] : i, c = dim == 0 ? j : iv[i * 4 + j];
        want[r * 4 + c] += sv[i * 5 + j];
      }
    auto got = y.to_vector<double>();
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-12);
  }
  // integers, and self is not modified
  Tensor ni = zeros({4}, {.dtype = DType::i64});
  Tensor r = scatter_add(ni, 0, i64({1, 1, 3}, {3}), i64({5, 6, 7}, {3}));
  EXPECT_EQ(r.to_vector<int64_t>(), (std::vector<int64_t>{0, 11, 0, 7}));
  EXPECT_EQ(ni.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(IndexingOps, GatherScatterAddGradients) {
  Generator gen(7);
  Tensor x = leaf64({3, 4}, 8), x3 = leaf64({2, 3, 4}, 9);
  Tensor ix = randint(0, 3, {5, 4}, {.dtype = DType::i64}, &gen);
  Tensor ix3 = randint(0, 4, {2, 2, 6}, {.dtype = DType::i64}, &gen);
  expect_grads_ok([&](const TensorList& in) { return gather(in[0], 0, ix); }, {x});
  expect_grads_ok([&](const TensorList& in) { return gather(in[0].t(), 1, ix.t().slice(0, 0, 3)); }, {x});
  expect_grads_ok([&](const TensorList& in) { return square(gather(in[0], 2, ix3)); }, {x3});
  // scatter_add: both self and src, src larger than the index
  Tensor self = leaf64({3, 4}, 10), src = leaf64({5, 5}, 11);
  expect_grads_ok([&](const TensorList& in) { return scatter_add(in[0], 0, ix, in[1]); }, {self, src});
  expect_grads_ok([&](const TensorList& in) { return square(scatter_add(in[0].t(), 1, ix.t(), in[1])); }, {self, src});
  Tensor s3 = leaf64({2, 3, 4}, 12), src3 = leaf64({2, 2, 6}, 13);
  expect_grads_ok([&](const TensorList& in) { return scatter_add(in[0], 2, ix3, in[1]); }, {s3, src3});
}

// ---- masked_fill ----

TEST(IndexingOps, MaskedFill) {
  Tensor a = leaf64({2, 3}, 14);
  Tensor mask = tensor({1, 0, 1}, {3}, {.dtype = DType::boolean});  // broadcasts over rows
  Tensor y = masked_fill(a, mask, -5.0);
  expect_remap(y, a.detach(), {2, 3}, [](Shape i) { return i[1] == 1 ? i : Shape{}; }, -5.0);
  sum(mul(y, y)).backward();
  auto g = a.grad().to_vector<double>(), av = a.to_vector<double>();
  for (int k = 0; k < 6; ++k) EXPECT_EQ(g[k], k % 3 == 1 ? 2 * av[k] : 0.0);
  expect_grads_ok([&](const TensorList& in) { return masked_fill(in[0].t(), mask.unsqueeze(1), 2.0); }, {a});
  Tensor n = masked_fill(tensor({1, 2}, {2}, {.dtype = DType::i64}), tensor({0, 1}, {2}, {.dtype = DType::boolean}), 9);
  EXPECT_EQ(n.to_vector<int64_t>(), (std::vector<int64_t>{1, 9}));
  expect_error([&] { masked_fill(a, ones({3, 2, 3}, {.dtype = DType::boolean}), 0); }, {"masked_fill", "[3, 2, 3]"});
  expect_error([&] { masked_fill(a, ones({3}, {.dtype = DType::f32}), 0); }, {"masked_fill", "bool"});
}

// ---- flip / roll ----

TEST(IndexingOps, FlipAndRollMatchNaive) {
  Generator gen(15);
  Tensor a = randn({3, 4, 5}, {.dtype = DType::f64}, &gen);
  expect_remap(flip(a, {0, 2}), a, a.sizes(), [](Shape i) {
    i[0] = 2 - i[0];
    i[2] = 4 - i[2];
    return i;
  });
  expect_remap(flip(a, {-2}), a, a.sizes(), [](Shape i) {
    i[1] = 3 - i[1];
    return i;
  });
  Tensor t = a.transpose(0, 1);
  expect_remap(flip(t, {1}), t, t.sizes(), [](Shape i) {
    i[1] = 2 - i[1];
    return i;
  });
  for (int64_t shift : {1, -1, 7, -9, 0}) {
    for (int64_t dim : {0, 1, 2}) {
      const int64_t n = a.size(dim);
      expect_remap(roll(a, shift, dim), a, a.sizes(), [&](Shape i) {
        i[dim] = (((i[dim] - shift) % n) + n) % n;
        return i;
      });
    }
  }
  EXPECT_EQ(roll(tensor({1, 2, 3, 4}, {4}), 1, 0).to_vector<float>(), (std::vector<float>{4, 1, 2, 3}));
  EXPECT_EQ(flip(tensor({1, 2, 3}, {3}, {.dtype = DType::i32}), {0}).to_vector<int32_t>(), (std::vector<int32_t>{3, 2, 1}));
}

TEST(IndexingOps, FlipAndRollGradients) {
  Tensor x = leaf64({3, 4}, 16), x3 = leaf64({2, 3, 4}, 17);
  expect_grads_ok([](const TensorList& in) { return flip(in[0], {0, 1}); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(flip(in[0].transpose(0, 2), {1})); }, {x3});
  expect_grads_ok([](const TensorList& in) { return roll(in[0], 2, 1); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(roll(in[0].t(), -5, 0)); }, {x});
  expect_grads_ok([](const TensorList& in) { return roll(in[0], 1, -1); }, {x3});
}

// ---- pad ----

TEST(IndexingOps, PadConstantAndReflectMatchNaive) {
  Generator gen(18);
  Tensor a = randn({2, 3, 4}, {.dtype = DType::f64}, &gen);
  // last dim (1, 2), second-last (0, 3)
  expect_remap(pad(a, {1, 2, 0, 3}, PadMode::constant, 7.5), a, {2, 6, 7}, [](Shape i) {
    i[2] -= 1;
    return i[2] >= 0 && i[2] < 4 && i[1] < 3 ? i : Shape{};
  }, 7.5);
  // negative pads crop
  expect_remap(pad(a, {-1, 0, 1, -2}), a, {2, 2, 3}, [](Shape i) {
    i[2] += 1;
    i[1] -= 1;
    return i[1] >= 0 ? i : Shape{};
  });
  auto reflect = [](int64_t i, int64_t n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
  };
  expect_remap(pad(a, {3, 2, 2, 1}, PadMode::reflect), a, {2, 6, 9}, [&](Shape i) {
    i[2] = reflect(i[2] - 3, 4);
    i[1] = reflect(i[1] - 2, 3);
    return i;
  });
  Tensor t = a.transpose(1, 2);  // [2, 4, 3], non-contiguous
  expect_remap(pad(t, {2, 2}, PadMode::reflect), t, {2, 4, 7}, [&](Shape i) {
    i[2] = reflect(i[2] - 2, 3);
    return i;
  });
  // torch.nn.functional.pad(torch.tensor([1., 2, 3, 4]), (2, 1), mode='reflect') == [3, 2, 1, 2, 3, 4, 3]
  EXPECT_EQ(pad(tensor({1, 2, 3, 4}, {1, 4}), {2, 1}, PadMode::reflect).to_vector<float>(),
            (std::vector<float>{3, 2, 1, 2, 3, 4, 3}));
}

TEST(IndexingOps, PadGradients) {
  Tensor x = leaf64({3, 4}, 19), x3 = leaf64({2, 3, 4}, 20);
  expect_grads_ok([](const TensorList& in) { return pad(in[0], {1, 2, 2, 0}, PadMode::constant, 3.0); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(pad(in[0].t(), {-1, 2})); }, {x});
  expect_grads_ok([](const TensorList& in) { return pad(in[0], {3, 2, 1, 2}, PadMode::reflect); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(pad(in[0].transpose(0, 2), {1, 1}, PadMode::reflect)); }, {x3});
  expect_grads_ok([](const TensorList& in) { return pad(in[0], {2, 3, 2, 2, 1, 1}, PadMode::reflect); }, {x3});
  // The reflect gradient adds the mirrored copies.
  Tensor a = leaf64({4}, 21);
  sum(pad(a.unsqueeze(0), {2, 1}, PadMode::reflect)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{1, 2, 3, 1}));
}

// ---- repeat ----

TEST(IndexingOps, RepeatMatchesNaiveAndSumsTiles) {
  Generator gen(22);
  Tensor a = randn({2, 3}, {.dtype = DType::f64}, &gen);
  expect_remap(repeat(a, {2, 3}), a, {4, 9}, [](Shape i) { return Shape{i[0] % 2, i[1] % 3}; });
  expect_remap(repeat(a.t(), {2, 1, 2}), a.t(), {2, 3, 4}, [](Shape i) { return Shape{i[1], i[2] % 2}; });
  EXPECT_EQ(repeat(tensor({1, 2}, {2}), {3}).to_vector<float>(), (std::vector<float>{1, 2, 1, 2, 1, 2}));
  EXPECT_EQ(repeat(a, {0, 1}).sizes(), (Shape{0, 3}));
  Tensor x = leaf64({2, 3}, 23);
  expect_grads_ok([](const TensorList& in) { return repeat(in[0], {2, 3}); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(repeat(in[0].t(), {2, 1, 2})); }, {x});
  Tensor b = leaf64({2}, 24);
  sum(repeat(b, {3, 2})).backward();
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{6, 6}));
}

// ---- tril / triu ----

TEST(IndexingOps, TrilTriu) {
  Generator gen(25);
  Tensor a = randn({2, 3, 4}, {.dtype = DType::f64}, &gen);
  for (int64_t k : {-1, 0, 1, 3}) {
    expect_remap(tril(a, k), a, a.sizes(), [k](Shape i) { return i[2] - i[1] <= k ? i : Shape{}; });
    expect_remap(triu(a, k), a, a.sizes(), [k](Shape i) { return i[2] - i[1] >= k ? i : Shape{}; });
  }
  Tensor t = a.transpose(1, 2);
  expect_remap(tril(t), t, t.sizes(), [](Shape i) { return i[2] <= i[1] ? i : Shape{}; });
  Tensor x = leaf64({3, 4}, 26), x3 = leaf64({2, 4, 3}, 27);
  expect_grads_ok([](const TensorList& in) { return tril(in[0], 1); }, {x});
  expect_grads_ok([](const TensorList& in) { return square(triu(in[0].transpose(1, 2), -1)); }, {x3});
  expect_error([] { tril(randn({3})); }, {"tril", "[3]"});
}

// Shapes large enough for the thread pool (parallel gathers and parallel adjoint adds).
TEST(IndexingOps, LargeInputsAgreeWithNaive) {
  Generator gen(28);
  const Shape s = {256, 8, 40};
  Tensor a = randn(s, {.dtype = DType::f64}, &gen);
  a.requires_grad_(true);
  auto reflect = [](int64_t i, int64_t n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
  };
  Tensor p = pad(a, {3, 3, 2, 2}, PadMode::reflect);
  const Shape ps = {256, 12, 46};
  Tensor w = randn(ps, {.dtype = DType::f64}, &gen);
  sum(mul(p, w)).backward();
  std::vector<double> want(a.numel(), 0.0);
  auto wv = w.to_vector<double>();
  for (int64_t k = 0; k < shape_numel(ps); ++k) {
    Shape i = unravel(k, ps);
    want[ravel({i[0], reflect(i[1] - 2, 8), reflect(i[2] - 3, 40)}, s)] += wv[k];
  }
  auto got = a.grad().to_vector<double>();
  for (size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-12) << k;

  // scatter_add along dim 1 (split over dim 0) and gather
  Tensor ix = randint(0, 8, {256, 5, 40}, {.dtype = DType::i64}, &gen);
  Tensor src = randn({256, 5, 40}, {.dtype = DType::f64}, &gen);
  Tensor base = a.detach();
  Tensor y = scatter_add(base, 1, ix, src);
  std::vector<double> sw = base.to_vector<double>();
  auto iv = ix.to_vector<int64_t>();
  auto sv = src.to_vector<double>();
  for (int64_t k = 0; k < ix.numel(); ++k) {
    Shape i = unravel(k, {256, 5, 40});
    sw[ravel({i[0], iv[k], i[2]}, s)] += sv[k];
  }
  auto yv = y.to_vector<double>();
  for (size_t k = 0; k < sw.size(); ++k) ASSERT_NEAR(yv[k], sw[k], 1e-12) << k;
  auto gv = gather(base, 1, ix).to_vector<double>();
  auto bv = base.to_vector<double>();
  for (int64_t k = 0; k < ix.numel(); ++k) {
    Shape i = unravel(k, {256, 5, 40});
    ASSERT_EQ(gv[k], bv[ravel({i[0], iv[k], i[2]}, s)]);
  }
}

// ---- errors ----

TEST(IndexingOps, IndexErrorsNameOpValueAndSize) {
  Tensor a = randn({3, 4});
  expect_error([&] { index_select(a, 1, i64({0, 4}, {2})); }, {"index_select", "index 4", "size 4"});
  expect_error([&] { index_select(a, 0, i64({-1}, {1})); }, {"index_select", "-1", "size 3"});
  expect_error([&] { index_select(a, 0, i64({0, 1}, {1, 2})); }, {"index_select", "1-D"});
  expect_error([&] { index_select(a, 0, tensor({0}, {1})); }, {"index_select", "i64"});
  expect_error([&] { index_select(a, 2, i64({0}, {1})); }, {"index_select", "dim"});
  expect_error([&] { gather(a, 0, i64({3}, {1, 1})); }, {"gather", "index 3", "size 3"});
  expect_error([&] { gather(a, 0, i64({0, 1}, {2})); }, {"gather", "dims"});
  expect_error([&] { gather(a, 0, zeros({1, 5}, {.dtype = DType::i64})); }, {"gather", "[1, 5]"});
  expect_error([&] { scatter_add(a, 1, i64({7}, {1, 1}), ones({1, 1})); }, {"scatter_add", "index 7", "size 4"});
  expect_error([&] { scatter_add(a, 1, i64({0}, {1, 1}), ones({1, 1}, {.dtype = DType::f64})); }, {"scatter_add", "f64"});
  expect_error([&] { pad(a, {1}); }, {"pad", "pairs"});
  expect_error([&] { pad(a, {1, 1, 1, 1, 1, 1}); }, {"pad"});
  expect_error([&] { pad(a, {4, 0}, PadMode::reflect); }, {"pad", "reflect", "size 4"});
  expect_error([&] { pad(a, {0, -5}); }, {"pad", "negative"});
  expect_error([&] { repeat(a, {2}); }, {"repeat"});
  expect_error([&] { flip(a, {0, -2}); }, {"flip", "repeated"});
  expect_error([&] { roll(a, 1, 2); }, {"roll"});
}
