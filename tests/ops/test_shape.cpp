// Shape ops: the view methods (reshape, view, permute, transpose, expand, squeeze, unsqueeze,
// slice with step, narrow, select, flatten), the copies (contiguous, clone, to) and the joins
// (cat, stack, split, chunk). Values against index arithmetic done here, gradients by gradcheck
// and gradgradcheck in f64 (each op also under a square, so the backward's own backward is
// exercised), and the errors.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/kernels/cpu/parallel.h"
#include "test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

// 0, 1, 2, ... in shape s: every value names its position.
Tensor iota(const Shape& s, DType dt = DType::f64) { return arange(shape_numel(s), {.dtype = dt}).reshape(s); }

std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// y[i] == a[src(i)] for every element i of y (a holds iota values, so src is checked exactly).
void expect_gather(const Tensor& y, const Shape& want_shape, const Shape& a_shape,
                   const std::function<Shape(const Shape&)>& src, const std::string& what) {
  ASSERT_EQ(y.sizes(), want_shape) << what;
  auto v = vals(y);
  for (int64_t k = 0; k < y.numel(); ++k)
    ASSERT_EQ(v[k], static_cast<double>(ravel(src(unravel(k, want_shape)), a_shape))) << what << " element " << k;
}

void expect_grads_ok(const TensorFunction& f, const TensorList& in, const std::string& what) {
  GradcheckResult r1 = gradcheck(f, in);
  EXPECT_TRUE(r1.ok) << what << ": " << r1.message;
  GradcheckResult r2 = gradgradcheck(f, in);
  EXPECT_TRUE(r2.ok) << what << ": " << r2.message;
  // Under a square the gradient depends on x through the op's backward, so the second-order
  // check runs the backward of that backward.
  TensorFunction sq = [f](const TensorList& x) { return square(f(x)); };
  GradcheckResult r3 = gradgradcheck(sq, in);
  EXPECT_TRUE(r3.ok) << what << " (squared): " << r3.message;
}

// One-input view op checked on a contiguous and on a transposed input.
void check_unary_grads(const std::function<Tensor(const Tensor&)>& op, const Shape& s, uint64_t seed,
                       const std::string& what) {
  Tensor x = leaf64(s, seed);
  expect_grads_ok([op](const TensorList& in) { return op(in[0]); }, {x}, what);
  if (s.size() >= 2) {
    Shape st = s;
    std::swap(st[0], st[1]);
    Tensor xt = leaf64(st, seed + 1);
    // transpose(0, 1) of [s1, s0, ...] has shape s and is not contiguous
    expect_grads_ok([op](const TensorList& in) { return op(in[0].transpose(0, 1)); }, {xt}, what + " (transposed input)");
  }
}

template <typename F>
void expect_error_mentions(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an ember::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// reshape, view, flatten

TEST(ShapeOps, ReshapeViewFlatten) {
  Tensor a = iota({2, 3, 4});
  Tensor r = a.reshape({4, 6});
  EXPECT_EQ(r.sizes(), (Shape{4, 6}));
  EXPECT_EQ(vals(r), vals(a));  // row-major order kept
  EXPECT_EQ(a.reshape({-1, 2}).sizes(), (Shape{12, 2}));
  EXPECT_EQ(a.reshape({2, -1, 3}).sizes(), (Shape{2, 4, 3}));
  EXPECT_EQ(a.view({24}).sizes(), (Shape{24}));
  // reshape of a transposed tensor copies in the transposed (logical) order
  Tensor at = a.transpose(0, 2);  // [4, 3, 2]
  Tensor rt = at.reshape({4, 6});
  expect_gather(rt, {4, 6}, {2, 3, 4}, [](const Shape& i) {
    const int64_t k = i[0] * 6 + i[1];  // element k of at, shape [4, 3, 2]
    return Shape{k % 2, (k / 2) % 3, k / 6};
  }, "reshape(transposed)");
  // flatten
  EXPECT_EQ(a.flatten().sizes(), (Shape{24}));
  EXPECT_EQ(a.flatten(1).sizes(), (Shape{2, 12}));
  EXPECT_EQ(a.flatten(0, 1).sizes(), (Shape{6, 4}));
  EXPECT_EQ(a.flatten(-2, -1).sizes(), (Shape{2, 12}));
  EXPECT_EQ(a.flatten(1, 1).sizes(), (Shape{2, 3, 4}));
  EXPECT_EQ(vals(at.flatten(1)), vals(at.contiguous()));
  EXPECT_EQ(scalar_tensor(3).flatten().sizes(), (Shape{1}));
  // a 0-dim reshape and an empty one
  EXPECT_EQ(tensor({5}).reshape({}).dim(), 0);
  EXPECT_EQ(zeros({0, 3}).reshape({3, 0}).sizes(), (Shape{3, 0}));
  EXPECT_EQ(zeros({0, 3}).reshape({-1, 3}).sizes(), (Shape{0, 3}));

  check_unary_grads([](const Tensor& x) { return x.reshape({6, 2}); }, {3, 4}, 1, "reshape");
  check_unary_grads([](const Tensor& x) { return x.reshape({2, -1, 2}); }, {3, 4}, 3, "reshape -1");
  check_unary_grads([](const Tensor& x) { return x.flatten(); }, {3, 4, 2}, 5, "flatten");
  check_unary_grads([](const Tensor& x) { return x.flatten(1, 2); }, {3, 2, 2}, 7, "flatten(1, 2)");
  Tensor x = leaf64({3, 4}, 9);
  expect_grads_ok([](const TensorList& in) { return in[0].view({2, 6}); }, {x}, "view");
}

TEST(ShapeOps, ReshapeAndViewErrors) {
  Tensor a = iota({2, 3, 4});
  expect_error_mentions([&] { a.reshape({5, 5}); }, {"reshape", "[2, 3, 4]", "[5, 5]"});
  expect_error_mentions([&] { a.view({-1, -1}); }, {"view", "-1"});
  EXPECT_THROW(a.reshape({7, -1}), Error);  // 24 not divisible by 7
  EXPECT_THROW(a.reshape({-2, 12}), Error);
  expect_error_mentions([&] { a.transpose(0, 2).view({24}); }, {"view", "reshape"});
  EXPECT_THROW(a.flatten(2, 1), Error);
  EXPECT_THROW(a.flatten(0, 3), Error);
}

// ---------------------------------------------------------------------------------------------
// permute, transpose

TEST(ShapeOps, PermuteAndTranspose) {
  Tensor a = iota({2, 3, 4});
  Tensor p = a.permute({2, 0, 1});  // p[i][j][k] = a[j][k][i]
  expect_gather(p, {4, 2, 3}, {2, 3, 4}, [](const Shape& i) { return Shape{i[1], i[2], i[0]}; }, "permute");
  EXPECT_EQ(p.storage(), a.storage());
  EXPECT_EQ(p.strides(), (Shape{1, 12, 4}));
  expect_gather(a.permute({-1, -3, -2}), {4, 2, 3}, {2, 3, 4}, [](const Shape& i) { return Shape{i[1], i[2], i[0]}; },
                "permute negative dims");
  expect_gather(a.transpose(0, 2), {4, 3, 2}, {2, 3, 4}, [](const Shape& i) { return Shape{i[2], i[1], i[0]}; },
                "transpose");
  expect_gather(a.transpose(-1, -2), {2, 4, 3}, {2, 3, 4}, [](const Shape& i) { return Shape{i[0], i[2], i[1]}; },
                "transpose(-1, -2)");
  Tensor m = iota({3, 5});
  expect_gather(m.t(), {5, 3}, {3, 5}, [](const Shape& i) { return Shape{i[1], i[0]}; }, "t");
  EXPECT_EQ(vals(a.transpose(1, 1)), vals(a));
  EXPECT_EQ(vals(a.permute({2, 0, 1}).permute({1, 2, 0})), vals(a));  // the inverse permutation

  check_unary_grads([](const Tensor& x) { return x.permute({2, 0, 1}); }, {2, 3, 2}, 11, "permute");
  check_unary_grads([](const Tensor& x) { return x.transpose(-1, -3); }, {2, 3, 2}, 13, "transpose");
  check_unary_grads([](const Tensor& x) { return x.t(); }, {3, 4}, 15, "t");

  expect_error_mentions([&] { a.permute({0, 1}); }, {"permute", "[2, 3, 4]"});
  expect_error_mentions([&] { a.permute({0, 1, 1}); }, {"permute", "repeated"});
  EXPECT_THROW(a.permute({0, 1, 3}), Error);
  EXPECT_THROW(a.transpose(0, 3), Error);
  EXPECT_THROW(a.transpose(-4, 0), Error);
}

// ---------------------------------------------------------------------------------------------
// expand, squeeze, unsqueeze

TEST(ShapeOps, ExpandSqueezeUnsqueeze) {
  Tensor c = iota({3, 1});
  Tensor e = c.expand({2, 3, 4});
  expect_gather(e, {2, 3, 4}, {3, 1}, [](const Shape& i) { return Shape{i[1], 0}; }, "expand");
  EXPECT_EQ(e.storage(), c.storage());
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(e.strides()[2], 0);
  EXPECT_EQ(c.expand({-1, 5}).sizes(), (Shape{3, 5}));
  EXPECT_EQ(c.expand({3, 1}).impl(), c.impl());  // nothing to expand
  EXPECT_EQ(iota({1, 4}).expand_as(zeros({3, 4})).sizes(), (Shape{3, 4}));
  // expand of a transposed view
  Tensor r = iota({4, 1}).t();  // [1, 4]
  expect_gather(r.expand({3, 4}), {3, 4}, {4, 1}, [](const Shape& i) { return Shape{i[1], 0}; }, "expand(t)");
  // expand a 0-dim tensor
  EXPECT_EQ(vals(scalar_tensor(2.0).expand({2, 2})), (std::vector<double>{2, 2, 2, 2}));

  Tensor s = iota({1, 3, 1, 2});
  EXPECT_EQ(s.squeeze().sizes(), (Shape{3, 2}));
  EXPECT_EQ(s.squeeze(0).sizes(), (Shape{3, 1, 2}));
  EXPECT_EQ(s.squeeze(-2).sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(s.squeeze(1).sizes(), (Shape{1, 3, 1, 2}));  // not size 1: unchanged
  EXPECT_EQ(vals(s.squeeze()), vals(s));
  EXPECT_EQ(scalar_tensor(1).squeeze().dim(), 0);
  EXPECT_EQ(scalar_tensor(1).squeeze(0).dim(), 0);
  Tensor u = iota({3, 2});
  EXPECT_EQ(u.unsqueeze(0).sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(u.unsqueeze(1).sizes(), (Shape{3, 1, 2}));
  EXPECT_EQ(u.unsqueeze(2).sizes(), (Shape{3, 2, 1}));
  EXPECT_EQ(u.unsqueeze(-1).sizes(), (Shape{3, 2, 1}));
  EXPECT_EQ(u.unsqueeze(-3).sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(scalar_tensor(1).unsqueeze(0).sizes(), (Shape{1}));
  EXPECT_EQ(vals(u.t().unsqueeze(1)), vals(u.t()));
  EXPECT_EQ(u.unsqueeze(1).storage(), u.storage());
  EXPECT_TRUE(u.unsqueeze(1).is_contiguous());

  check_unary_grads([](const Tensor& x) { return x.expand({2, 3, 4}); }, {3, 1}, 21, "expand");
  check_unary_grads([](const Tensor& x) { return x.unsqueeze(1).expand({2, 3, 4}); }, {2, 4}, 23, "unsqueeze+expand");
  check_unary_grads([](const Tensor& x) { return x.squeeze(); }, {1, 3, 1}, 25, "squeeze");
  check_unary_grads([](const Tensor& x) { return x.squeeze(1); }, {3, 1, 2}, 27, "squeeze(1)");
  check_unary_grads([](const Tensor& x) { return x.unsqueeze(-1); }, {3, 2}, 29, "unsqueeze");

  expect_error_mentions([&] { c.expand({3, 2, 4}); }, {"expand", "[3, 1]"});  // 3 -> 2
  EXPECT_THROW(c.expand({4}), Error);           // fewer dims
  EXPECT_THROW(c.expand({-1, 3, 1}), Error);    // -1 on a new leading dim
  EXPECT_THROW(u.squeeze(2), Error);
  EXPECT_THROW(u.unsqueeze(3), Error);
  EXPECT_THROW(u.unsqueeze(-4), Error);
}

// ---------------------------------------------------------------------------------------------
// slice, narrow, select

TEST(ShapeOps, SliceNarrowSelect) {
  Tensor a = iota({3, 8});
  expect_gather(a.slice(1, 1, 7, 2), {3, 3}, {3, 8}, [](const Shape& i) { return Shape{i[0], 1 + 2 * i[1]}; },
                "slice step 2");
  expect_gather(a.slice(1, 0, 8, 3), {3, 3}, {3, 8}, [](const Shape& i) { return Shape{i[0], 3 * i[1]}; },
                "slice step 3");
  expect_gather(a.slice(0, 1, 3), {2, 8}, {3, 8}, [](const Shape& i) { return Shape{i[0] + 1, i[1]}; }, "slice rows");
  expect_gather(a.slice(-1, -3, 8), {3, 3}, {3, 8}, [](const Shape& i) { return Shape{i[0], 5 + i[1]}; },
                "negative start");
  expect_gather(a.slice(1, 2, -2), {3, 4}, {3, 8}, [](const Shape& i) { return Shape{i[0], 2 + i[1]}; },
                "negative end");
  EXPECT_EQ(a.slice(1, 5, 100).sizes(), (Shape{3, 3}));  // end clamped
  EXPECT_EQ(a.slice(1, 6, 2).sizes(), (Shape{3, 0}));    // empty
  EXPECT_EQ(a.slice(1, 7, 8, 4).sizes(), (Shape{3, 1}));
  EXPECT_EQ(a.slice(1, 1, 7, 2).storage(), a.storage());
  // slice of a slice, and of a transposed view
  expect_gather(a.slice(1, 1, 8, 2).slice(1, 1, 4, 2), {3, 2}, {3, 8},
                [](const Shape& i) { return Shape{i[0], 3 + 4 * i[1]}; }, "slice of slice");
  expect_gather(a.t().slice(0, 2, 8, 3), {2, 3}, {3, 8}, [](const Shape& i) { return Shape{i[1], 2 + 3 * i[0]}; },
                "slice of t");
  expect_gather(a.narrow(1, 2, 3), {3, 3}, {3, 8}, [](const Shape& i) { return Shape{i[0], 2 + i[1]}; }, "narrow");
  expect_gather(a.select(1, 5), {3}, {3, 8}, [](const Shape& i) { return Shape{i[0], 5}; }, "select");
  expect_gather(a.select(0, -1), {8}, {3, 8}, [](const Shape& i) { return Shape{2, i[0]}; }, "select -1");
  expect_gather(a[1], {8}, {3, 8}, [](const Shape& i) { return Shape{1, i[0]}; }, "operator[]");
  EXPECT_EQ(a[2][3].dim(), 0);
  EXPECT_EQ(a[2][3].item(), 19.0);

  check_unary_grads([](const Tensor& x) { return x.slice(1, 1, 7, 2); }, {3, 8}, 31, "slice step");
  check_unary_grads([](const Tensor& x) { return x.slice(0, -2, 3); }, {3, 4}, 33, "slice negative");
  check_unary_grads([](const Tensor& x) { return x.narrow(1, 1, 2); }, {2, 4}, 35, "narrow");
  check_unary_grads([](const Tensor& x) { return x.select(1, 2); }, {3, 4}, 37, "select");
  check_unary_grads([](const Tensor& x) { return x.select(0, -1); }, {3, 4}, 39, "select -1");
  check_unary_grads([](const Tensor& x) { return x.slice(1, 0, 4, 3).slice(0, 1, 3); }, {3, 4}, 41, "slice twice");
  // a sliced view used twice: its gradients add up
  Tensor y = leaf64({6}, 43);
  expect_grads_ok([](const TensorList& in) { return mul(in[0].slice(0, 0, 3), in[0].slice(0, 3, 6)); }, {y},
                  "two slices");

  expect_error_mentions([&] { a.slice(1, 0, 8, 0); }, {"slice", "step"});
  EXPECT_THROW(a.slice(2, 0, 1), Error);
  expect_error_mentions([&] { a.select(1, 8); }, {"select", "8", "[3, 8]"});
  EXPECT_THROW(a.select(0, -4), Error);
  EXPECT_THROW(a.select(2, 0), Error);
}

// ---------------------------------------------------------------------------------------------
// contiguous, clone, to

TEST(ShapeOps, ContiguousCloneTo) {
  Tensor a = iota({3, 4});
  Tensor t = a.t();
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), a.storage());
  EXPECT_EQ(vals(c), vals(t));
  EXPECT_EQ(a.contiguous().impl(), a.impl());
  Tensor k = a.clone();
  EXPECT_NE(k.storage(), a.storage());
  EXPECT_EQ(vals(k), vals(a));
  EXPECT_EQ(vals(t.clone()), vals(t));
  EXPECT_TRUE(t.clone().is_contiguous());
  Tensor f = a.to(DType::f32);
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_EQ(vals(f), vals(a));
  EXPECT_EQ(vals(t.to(DType::i32)), vals(t));
  EXPECT_EQ(a.to(Device::cpu()).impl(), a.impl());
  EXPECT_THROW(a.to(Device::cuda(0)), Error);

  check_unary_grads([](const Tensor& x) { return x.contiguous(); }, {3, 4}, 51, "contiguous");
  check_unary_grads([](const Tensor& x) { return x.clone(); }, {3, 4}, 53, "clone");
  // to() between floating types is differentiable; f32 rounding makes the check coarse, so
  // round-trip back to f64 (the gradient of the cast is the identity)
  Tensor x = leaf64({3, 4}, 55);
  Tensor g = grad({sum(mul(x.to(DType::f32), x.to(DType::f32)))}, {x})[0];
  EXPECT_EQ(g.dtype(), DType::f64);
  auto gv = vals(g), xv = vals(x);
  for (size_t i = 0; i < gv.size(); ++i) EXPECT_NEAR(gv[i], 2 * xv[i], 1e-6);
  GradcheckOptions loose;
  loose.eps = 1e-3;
  loose.atol = 1e-4;
  loose.rtol = 1e-2;
  GradcheckResult r = gradcheck([](const TensorList& in) { return square(in[0].to(DType::f32)).to(DType::f64); }, {x}, loose);
  EXPECT_TRUE(r.ok) << r.message;
  GradcheckResult r2 = gradgradcheck([](const TensorList& in) { return square(in[0].to(DType::f32)).to(DType::f64); }, {x}, loose);
  EXPECT_TRUE(r2.ok) << r2.message;
  // a clone is independent of its source for in-place writes
  Tensor src = iota({2, 2});
  Tensor cl = src.clone();
  src.fill_(0.0);
  EXPECT_EQ(vals(cl), (std::vector<double>{0, 1, 2, 3}));
}

// ---------------------------------------------------------------------------------------------
// cat, stack, split, chunk

// cat of dense pieces of one dtype copies each output row from the pieces' rows in one pass:
// along every dim, with empty pieces, in every element size, and split over threads.
TEST(ShapeOps, CatOfDensePiecesPutsEachPieceInItsSlice) {
  for (DType dt : {DType::f64, DType::f32, DType::i64, DType::u8, DType::bf16}) {
    for (int64_t dim = 0; dim < 3; ++dim) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " along dim " + std::to_string(dim));
      TensorList pieces;
      const int64_t widths[] = {4, 0, 1, 9};
      for (int i = 0; i < 4; ++i) {
        Shape shape{4, 2, 3};
        shape[dim] = widths[i];
        pieces.push_back(add(iota(shape), 40.0 * i).to(dt));  // distinct values, under 256
      }
      Tensor y = cat(pieces, dim);
      int64_t pos = 0;
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(vals(y.slice(dim, pos, pos + widths[i])), vals(pieces[i])) << "piece " << i;
        pos += widths[i];
      }
      EXPECT_EQ(pos, y.size(dim));
    }
  }
  struct RestoreThreads {
    int n = kernels::cpu::num_threads();
    ~RestoreThreads() { kernels::cpu::set_num_threads(n); }
  } restore;
  kernels::cpu::set_num_threads(3);  // 3,000 rows of 28 bytes: two tasks of at most 64 KiB
  Tensor a = iota({3000, 2}, DType::f32), b = add(iota({3000, 5}), 1e6).to(DType::f32);
  Tensor y = cat({a, b}, 1);
  EXPECT_EQ(vals(y.slice(1, 0, 2)), vals(a));
  EXPECT_EQ(vals(y.slice(1, 2, 7)), vals(b));
}

TEST(ShapeOps, CatAndStack) {
  Tensor a = iota({2, 3}), b = add(iota({2, 2}), 100.0), c = add(iota({2, 1}), 200.0);
  Tensor y = cat({a, b, c}, 1);
  ASSERT_EQ(y.sizes(), (Shape{2, 6}));
  EXPECT_EQ(vals(y), (std::vector<double>{0, 1, 2, 100, 101, 200, 3, 4, 5, 102, 103, 201}));
  EXPECT_EQ(vals(cat({a, b, c}, -1)), vals(y));
  Tensor z = cat({a, add(iota({1, 3}), 50.0)}, 0);
  EXPECT_EQ(vals(z), (std::vector<double>{0, 1, 2, 3, 4, 5, 50, 51, 52}));
  EXPECT_EQ(vals(cat({a}, 0)), vals(a));
  // empty pieces and non-contiguous pieces
  EXPECT_EQ(vals(cat({zeros({0, 3}, {.dtype = DType::f64}), a}, 0)), vals(a));
  EXPECT_EQ(vals(cat({a.t(), a.t()}, 1)), (std::vector<double>{0, 3, 0, 3, 1, 4, 1, 4, 2, 5, 2, 5}));
  // dtypes promote
  EXPECT_EQ(cat({a.to(DType::f32), a}, 0).dtype(), DType::f64);
  EXPECT_EQ(cat({a.to(DType::i64), a.to(DType::i64)}, 0).dtype(), DType::i64);

  Tensor s = stack({a, add(a, 10.0)}, 0);
  ASSERT_EQ(s.sizes(), (Shape{2, 2, 3}));
  EXPECT_EQ(vals(s), (std::vector<double>{0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}));
  Tensor s2 = stack({a, add(a, 10.0)}, -1);
  ASSERT_EQ(s2.sizes(), (Shape{2, 3, 2}));
  EXPECT_EQ(vals(s2), (std::vector<double>{0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15}));
  EXPECT_EQ(stack({a, a, a}, 1).sizes(), (Shape{2, 3, 3}));

  Tensor la = leaf64({2, 3}, 61), lb = leaf64({2, 2}, 62), lc = leaf64({3, 2}, 63);
  expect_grads_ok([](const TensorList& in) { return cat({in[0], in[1], in[2].t()}, 1); }, {la, lb, lc}, "cat");
  expect_grads_ok([](const TensorList& in) { return cat({in[0], in[0]}, 0); }, {la}, "cat of one tensor twice");
  Tensor ld = leaf64({2, 3}, 64);
  expect_grads_ok([](const TensorList& in) { return stack({in[0], in[1], in[0]}, 1); }, {la, ld}, "stack");
  // a f32 piece gets its gradient in f32
  Tensor f32 = zeros({2, 3});
  f32.requires_grad_(true);
  auto gs = grad({sum(cat({la, f32}, 0))}, {la, f32});
  EXPECT_EQ(gs[1].dtype(), DType::f32);
  EXPECT_EQ(gs[0].dtype(), DType::f64);

  EXPECT_THROW(cat({}, 0), Error);
  expect_error_mentions([&] { cat({a, iota({3, 3})}, 1); }, {"cat", "[3, 3]", "[2, 3]"});
  expect_error_mentions([&] { cat({a, iota({3})}, 0); }, {"cat"});
  EXPECT_THROW(cat({a, b}, 2), Error);
  EXPECT_THROW(stack({}, 0), Error);
  expect_error_mentions([&] { stack({a, b}, 0); }, {"stack", "[2, 2]", "[2, 3]"});
  EXPECT_THROW(stack({a, a}, 3), Error);
}

TEST(ShapeOps, SplitAndChunk) {
  Tensor a = iota({7, 2});
  TensorList p = split(a, 3, 0);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].sizes(), (Shape{3, 2}));
  EXPECT_EQ(p[2].sizes(), (Shape{1, 2}));  // the last piece is smaller
  EXPECT_EQ(vals(p[1]), (std::vector<double>{6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(vals(p[2]), (std::vector<double>{12, 13}));
  EXPECT_EQ(p[1].storage(), a.storage());  // views
  TensorList q = split(a, Shape{2, 0, 5}, 0);
  ASSERT_EQ(q.size(), 3u);
  EXPECT_EQ(q[1].numel(), 0);
  EXPECT_EQ(vals(q[2]), (std::vector<double>{4, 5, 6, 7, 8, 9, 10, 11, 12, 13}));
  TensorList cols = split(a, 1, -1);
  ASSERT_EQ(cols.size(), 2u);
  EXPECT_EQ(vals(cols[1]), (std::vector<double>{1, 3, 5, 7, 9, 11, 13}));
  EXPECT_EQ(split(a, 10, 0).size(), 1u);
  // chunk: ceil(n / chunks) per piece
  TensorList c3 = chunk(a, 3, 0);
  ASSERT_EQ(c3.size(), 3u);
  EXPECT_EQ(c3[0].size(0), 3);
  EXPECT_EQ(c3[1].size(0), 3);
  EXPECT_EQ(c3[2].size(0), 1);
  EXPECT_EQ(chunk(a, 7, 0).size(), 7u);
  EXPECT_EQ(chunk(a, 10, 0).size(), 7u);  // never more pieces than elements
  EXPECT_EQ(chunk(iota({6}), 3, 0).size(), 3u);
  EXPECT_EQ(chunk(iota({6}), 4, 0).size(), 3u);  // pieces of 2
  // split then cat is the identity, also for a transposed input
  EXPECT_EQ(vals(cat(split(a.t(), 3, 1), 1)), vals(a.t()));

  Tensor x = leaf64({7, 2}, 71);
  // Weight each piece differently so every gradient is checked.
  expect_grads_ok([](const TensorList& in) {
    TensorList ps = split(in[0], 3, 0);
    return cat({mul(ps[0], 2.0), ps[1], mul(ps[2], -1.0)}, 0);
  }, {x}, "split");
  expect_grads_ok([](const TensorList& in) {
    TensorList ps = split(in[0], Shape{1, 4, 2}, 0);
    return mul(ps[0], ps[2].sum());
  }, {x}, "split(sizes)");
  expect_grads_ok([](const TensorList& in) {
    TensorList ps = chunk(in[0].t(), 2, 1);
    return sub(ps[0].slice(1, 0, 3), mul(ps[1], 3.0));
  }, {x}, "chunk of transposed");
  // an unused piece gets no gradient (zeros in the input's gradient)
  Tensor g = grad({sum(split(x, 3, 0)[0])}, {x})[0];
  EXPECT_EQ(vals(g), (std::vector<double>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}));

  expect_error_mentions([&] { split(a, Shape{3, 3}, 0); }, {"split", "7"});
  EXPECT_THROW(split(a, Shape{8, -1}, 0), Error);
  EXPECT_THROW(split(a, 0, 0), Error);
  EXPECT_THROW(split(a, 1, 2), Error);
  EXPECT_THROW(chunk(a, 0, 0), Error);
  EXPECT_THROW(chunk(a, 2, -3), Error);
}

TEST(ShapeOps, ZeroDimTensors) {
  // A 0-dim tensor has no dim to slice, index, concatenate or split: clear errors, no crash.
  Tensor s = scalar_tensor(2.0, {.dtype = DType::f64});
  expect_error_mentions([&] { s.slice(0, 0, 1); }, {"slice", "0-dim"});
  expect_error_mentions([&] { s.narrow(0, 0, 1); }, {"slice", "0-dim"});
  expect_error_mentions([&] { s.select(0, 0); }, {"select", "0-dim"});
  expect_error_mentions([&] { s[0]; }, {"select"});
  expect_error_mentions([&] { cat({s, s}, 0); }, {"cat", "stack"});
  expect_error_mentions([&] { split(s, 1, 0); }, {"split", "0-dim"});
  expect_error_mentions([&] { split(s, Shape{1}, 0); }, {"split", "0-dim"});
  expect_error_mentions([&] { chunk(s, 1, 0); }, {"chunk", "0-dim"});
  // ...while the views that make sense work, with gradients.
  EXPECT_EQ(s.transpose(0, -1).dim(), 0);
  EXPECT_EQ(s.transpose(-1, 0).item(), 2.0);
  EXPECT_EQ(s.permute({}).dim(), 0);
  EXPECT_EQ(s.unsqueeze(0).sizes(), (Shape{1}));
  EXPECT_EQ(s.reshape({1, 1}).sizes(), (Shape{1, 1}));
  EXPECT_EQ(s.flatten().sizes(), (Shape{1}));
  EXPECT_EQ(s.expand({3}).sizes(), (Shape{3}));
  Tensor st = stack({s, add(s, 1.0)}, 0);
  EXPECT_EQ(vals(st), (std::vector<double>{2, 3}));
  Tensor x = leaf64({}, 81);
  expect_grads_ok([](const TensorList& in) { return stack({in[0], in[0].transpose(0, 0)}, 0); }, {x}, "0-dim stack");
  expect_grads_ok([](const TensorList& in) { return in[0].unsqueeze(0).expand({3}).reshape({1, 3}); }, {x},
                  "0-dim views");
}
