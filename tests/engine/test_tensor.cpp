// The core that everything stands on: factories, dtypes and conversions (bf16/f16 included),
// item / to_vector / printing, views sharing storage, contiguity, reshape vs view, and the
// random number generator (Philox 4x32-10 known answers, stream layout, distributions,
// reproducibility and state save / restore).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "ember/ember.h"

using namespace ember;

namespace {

std::string printed(const Tensor& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

void expect_contains(const std::string& s, const std::string& part) {
  EXPECT_NE(s.find(part), std::string::npos) << "'" << part << "' not found in:\n" << s;
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// factories

TEST(TensorCore, ConstantFactories) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.dtype(), DType::f32);  // the default
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_TRUE(z.is_contiguous());
  for (double v : values(z)) EXPECT_EQ(v, 0.0);
  for (double v : values(ones({4}, {.dtype = DType::i32}))) EXPECT_EQ(v, 1.0);
  Tensor f = full({2, 2}, -2.5, {.dtype = DType::f64});
  EXPECT_EQ(f.dtype(), DType::f64);
  for (double v : values(f)) EXPECT_EQ(v, -2.5);
  Tensor s = scalar_tensor(7.0);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item(), 7.0);
  EXPECT_EQ(empty({3, 0, 2}).numel(), 0);
  Tensor rg = zeros({2}, {.dtype = DType::f64, .requires_grad = true});
  EXPECT_TRUE(rg.requires_grad());
  EXPECT_TRUE(rg.is_leaf());
  EXPECT_THROW(zeros({2, -1}), Error);
  EXPECT_THROW(zeros({2}, {.dtype = DType::i64, .requires_grad = true}), Error);
}

TEST(TensorCore, RangesAndEye) {
  EXPECT_EQ(values(arange(5)), (std::vector<double>{0, 1, 2, 3, 4}));
  EXPECT_EQ(values(arange(1, 2, 0.25)), (std::vector<double>{1, 1.25, 1.5, 1.75}));
  EXPECT_EQ(values(arange(5, 0, -2)), (std::vector<double>{5, 3, 1}));
  Tensor ai = arange(0, 4, 1, {.dtype = DType::i64});
  EXPECT_EQ(ai.dtype(), DType::i64);
  EXPECT_EQ(ai.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(arange(3, 3).numel(), 0);
  Tensor ag = arange(0, 3, 1, {.dtype = DType::f64, .requires_grad = true});
  EXPECT_TRUE(ag.requires_grad());
  EXPECT_TRUE(ag.is_leaf());
  EXPECT_THROW(arange(0, 1, 0), Error);
  EXPECT_THROW(arange(0, 5, -1), Error);

  Tensor l = linspace(0, 1, 5, {.dtype = DType::f64});
  EXPECT_EQ(values(l), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  Tensor l3 = linspace(-1, 0.3, 7, {.dtype = DType::f64});
  auto lv = values(l3);
  EXPECT_EQ(lv.front(), -1.0);
  EXPECT_EQ(lv.back(), 0.3);  // exactly the end point
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(lv[i], -1 + 1.3 * i / 6, 1e-15);
  EXPECT_EQ(values(linspace(2, 5, 1)), (std::vector<double>{2}));
  EXPECT_EQ(linspace(2, 5, 0).numel(), 0);
  EXPECT_THROW(linspace(0, 1, -1), Error);

  EXPECT_EQ(values(eye(3)), (std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1}));
  Tensor e23 = eye(2, 3, {.dtype = DType::i64});
  EXPECT_EQ(e23.sizes(), (Shape{2, 3}));
  EXPECT_EQ(values(e23), (std::vector<double>{1, 0, 0, 0, 1, 0}));
  Tensor eb = eye(2, {.dtype = DType::boolean});
  EXPECT_EQ(eb.dtype(), DType::boolean);
  EXPECT_EQ(values(eb), (std::vector<double>{1, 0, 0, 1}));
}

TEST(TensorCore, LikeFactoriesAndHostData) {
  Tensor a = arange(6, {.dtype = DType::f64}).reshape({2, 3});
  for (const Tensor& t : {empty_like(a), zeros_like(a), ones_like(a), full_like(a, 3.0)}) {
    EXPECT_EQ(t.sizes(), a.sizes());
    EXPECT_EQ(t.dtype(), DType::f64);
    EXPECT_TRUE(t.is_contiguous());
  }
  EXPECT_EQ(values(zeros_like(a)), std::vector<double>(6, 0.0));
  EXPECT_EQ(values(ones_like(a)), std::vector<double>(6, 1.0));
  EXPECT_EQ(values(full_like(a, 3.0)), std::vector<double>(6, 3.0));
  // *_like of a transposed view: same shape, fresh contiguous storage
  Tensor lt = zeros_like(a.t());
  EXPECT_EQ(lt.sizes(), (Shape{3, 2}));
  EXPECT_TRUE(lt.is_contiguous());
  TensorOptions o = options_of(a);
  EXPECT_EQ(o.dtype, DType::f64);
  EXPECT_FALSE(o.requires_grad);

  Tensor fi = from_vector(std::vector<int64_t>{1, -2, 3, 4}, {2, 2});
  EXPECT_EQ(fi.dtype(), DType::i64);
  EXPECT_EQ(fi.to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3, 4}));
  Tensor fu = from_vector(std::vector<uint8_t>{0, 255, 7}, {3});
  EXPECT_EQ(fu.dtype(), DType::u8);
  EXPECT_EQ(fu.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 255, 7}));
  Tensor f32i = from_vector(std::vector<int32_t>{5, 6}, {2});
  EXPECT_EQ(f32i.dtype(), DType::i32);
  Tensor conv = from_vector(std::vector<double>{1.5, 2.5}, {2}, {.dtype = DType::f32});
  EXPECT_EQ(conv.dtype(), DType::f32);
  EXPECT_EQ(conv.to_vector<float>(), (std::vector<float>{1.5f, 2.5f}));
  Tensor fg = from_vector(std::vector<double>{1, 2}, {2}, {.dtype = DType::f64, .requires_grad = true});
  EXPECT_TRUE(fg.requires_grad());
  EXPECT_THROW(from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Error);

  Tensor t = tensor({1, 2, 3});
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.sizes(), (Shape{3}));
  Tensor t2 = tensor({1, 2, 3, 4}, {2, 2}, {.dtype = DType::i64});
  EXPECT_EQ(t2.sizes(), (Shape{2, 2}));
  EXPECT_EQ(t2.dtype(), DType::i64);
  EXPECT_THROW(tensor({1, 2, 3}, {2, 2}), Error);
}

// ---------------------------------------------------------------------------------------------
// dtypes and conversions

TEST(TensorCore, DtypesSizesAndNames) {
  struct Row {
    DType t;
    size_t size;
    const char* name;
    bool floating;
  };
  for (const Row& r : {Row{DType::f32, 4, "f32", true}, Row{DType::f64, 8, "f64", true},
                       Row{DType::bf16, 2, "bf16", true}, Row{DType::f16, 2, "f16", true},
                       Row{DType::i64, 8, "i64", false}, Row{DType::i32, 4, "i32", false},
                       Row{DType::u8, 1, "u8", false}, Row{DType::boolean, 1, "bool", false}}) {
    EXPECT_EQ(dtype_size(r.t), r.size);
    EXPECT_EQ(std::string(dtype_name(r.t)), r.name);
    EXPECT_EQ(is_floating(r.t), r.floating);
    Tensor z = zeros({3}, {.dtype = r.t});
    EXPECT_EQ(z.dtype(), r.t);
    EXPECT_EQ(z.element_size(), r.size);
    EXPECT_EQ(z.is_floating_point(), r.floating);
    EXPECT_EQ(z.str(), std::string(r.name) + "[3] cpu");
  }
  EXPECT_EQ(promote_types(DType::f32, DType::f64), DType::f64);
  EXPECT_EQ(promote_types(DType::i64, DType::f32), DType::f32);
  EXPECT_EQ(promote_types(DType::bf16, DType::f16), DType::f32);
  EXPECT_EQ(promote_types(DType::bf16, DType::i64), DType::bf16);
  EXPECT_EQ(promote_types(DType::i32, DType::i64), DType::i64);
  EXPECT_EQ(promote_types(DType::u8, DType::boolean), DType::u8);
  EXPECT_EQ(promote_types(DType::boolean, DType::boolean), DType::boolean);
}

TEST(TensorCore, ConversionsBetweenDtypes) {
  Tensor f = tensor({-1.75, -0.5, 0.0, 0.5, 2.9, 300.0}, {}, {.dtype = DType::f64});
  // float -> integer truncates toward zero
  EXPECT_EQ(f.to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{-1, 0, 0, 0, 2, 300}));
  EXPECT_EQ(f.to(DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{-1, 0, 0, 0, 2, 300}));
  // float -> bool: nonzero is true
  Tensor b = f.to(DType::boolean);
  EXPECT_EQ(b.dtype(), DType::boolean);
  EXPECT_EQ(values(b), (std::vector<double>{1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(values(b.to(DType::f32)), (std::vector<double>{1, 1, 0, 1, 1, 1}));
  // integer -> float and back is exact for small integers
  Tensor i = tensor({-3, 0, 7, 1 << 20}, {}, {.dtype = DType::i64});
  EXPECT_EQ(values(i.to(DType::f32)), (std::vector<double>{-3, 0, 7, 1 << 20}));
  EXPECT_EQ(i.to(DType::f64).to(DType::i64).to_vector<int64_t>(), i.to_vector<int64_t>());
  EXPECT_EQ(tensor({0, 200, 255}, {}, {.dtype = DType::u8}).to(DType::i32).to_vector<int32_t>(),
            (std::vector<int32_t>{0, 200, 255}));
  // f64 -> f32 rounds to nearest
  Tensor third = scalar_tensor(1.0 / 3.0, {.dtype = DType::f64});
  EXPECT_EQ(third.to(DType::f32).item<float>(), 1.0f / 3.0f);
  // to(same dtype) is the tensor itself
  Tensor same = f.to(DType::f64);
  EXPECT_EQ(same.impl(), f.impl());
  // a converted non-contiguous view keeps its logical order
  Tensor m = arange(6, {.dtype = DType::f64}).reshape({2, 3});
  EXPECT_EQ(m.t().to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{0, 3, 1, 4, 2, 5}));
  // conversions are differentiable between floating types
  Tensor x = tensor({1.0, 2.0}, {}, {.dtype = DType::f64});
  x.requires_grad_(true);
  Tensor y = sum(mul(x.to(DType::f32), 3.0));
  Tensor g = grad({y}, {x})[0];
  EXPECT_EQ(g.dtype(), DType::f64);
  EXPECT_EQ(values(g), (std::vector<double>{3, 3}));
}

TEST(TensorCore, HalfPrecisionRoundTrips) {
  // Values exactly representable in bf16 (8 significant bits) and f16 (11) survive both ways.
  std::vector<float> exact = {0.0f, 1.0f, -1.5f, 2.25f, -0.0078125f, 96.0f, 0.375f, -1024.0f};
  Tensor e = from_vector(exact, {static_cast<int64_t>(exact.size())});
  for (DType h : {DType::bf16, DType::f16}) {
    Tensor r = e.to(h);
    EXPECT_EQ(r.dtype(), h);
    EXPECT_EQ(r.element_size(), 2u);
    EXPECT_EQ(r.to(DType::f32).to_vector<float>(), exact) << dtype_name(h);
    EXPECT_EQ(r.to(DType::f64).to_vector<float>(), exact) << dtype_name(h);
    EXPECT_EQ(r.to_vector<float>(), exact) << dtype_name(h);
  }
  // Rounding: to nearest, ties to even.
  const float one_plus_tiny_bf16 = 1.0f + std::ldexp(1.0f, -9);   // below half an ulp (2^-7) of bf16
  const float one_plus_half_bf16 = 1.0f + std::ldexp(1.0f, -8);   // exactly half: tie -> even (1.0)
  const float three_halves_ulp = 1.0f + 3 * std::ldexp(1.0f, -8);  // 1 + 1.5 ulp: tie -> even (1 + 2 ulp)
  Tensor rb = from_vector(std::vector<float>{one_plus_tiny_bf16, one_plus_half_bf16, three_halves_ulp}, {3})
                  .to(DType::bf16)
                  .to(DType::f32);
  EXPECT_EQ(rb.to_vector<float>(), (std::vector<float>{1.0f, 1.0f, 1.0f + std::ldexp(1.0f, -6)}));
  const float f16_tiny = 1.0f + std::ldexp(1.0f, -12);  // f16 ulp at 1 is 2^-10
  const float f16_tie = 1.0f + 3 * std::ldexp(1.0f, -11);
  Tensor rf = from_vector(std::vector<float>{f16_tiny, f16_tie, 65504.0f, 1e5f, -1e5f, std::ldexp(1.0f, -24)}, {6})
                  .to(DType::f16)
                  .to(DType::f32);
  auto rfv = rf.to_vector<float>();
  EXPECT_EQ(rfv[0], 1.0f);
  EXPECT_EQ(rfv[1], 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(rfv[2], 65504.0f);  // the largest f16
  EXPECT_TRUE(std::isinf(rfv[3]) && rfv[3] > 0);  // overflow
  EXPECT_TRUE(std::isinf(rfv[4]) && rfv[4] < 0);
  EXPECT_EQ(rfv[5], std::ldexp(1.0f, -24));  // the smallest f16 subnormal
  // NaN stays NaN.
  for (DType h : {DType::bf16, DType::f16}) {
    Tensor n = scalar_tensor(std::numeric_limits<double>::quiet_NaN()).to(h);
    EXPECT_TRUE(std::isnan(n.item())) << dtype_name(h);
  }
  // Random values: relative error bounded by half an ulp (2^-8 for bf16, 2^-11 for f16).
  Generator g(7);
  Tensor r = randn({1000}, {}, &g);
  auto rv = r.to_vector<float>();
  auto bv = r.to(DType::bf16).to_vector<float>(), fv = r.to(DType::f16).to_vector<float>();
  for (size_t k = 0; k < rv.size(); ++k) {
    EXPECT_LE(std::abs(bv[k] - rv[k]), std::ldexp(std::abs(rv[k]), -8) * 1.0001f);
    if (std::abs(rv[k]) > 1e-4f) {
      EXPECT_LE(std::abs(fv[k] - rv[k]), std::ldexp(std::abs(rv[k]), -11) * 1.0001f);
    }
  }
  // Integers through bf16 (integers up to 256 are exact).
  Tensor ints = arange(0, 257, 1, {.dtype = DType::i64});
  EXPECT_EQ(ints.to(DType::bf16).to(DType::i64).to_vector<int64_t>(), ints.to_vector<int64_t>());
}

TEST(TensorCore, ItemAndToVector) {
  EXPECT_EQ(scalar_tensor(2.5).item(), 2.5);
  EXPECT_EQ(tensor({4.0}).item(), 4.0);                                  // one element, 1-D
  EXPECT_EQ(tensor({-3}, {1, 1}, {.dtype = DType::i64}).item<int64_t>(), -3);
  EXPECT_EQ(scalar_tensor(1, {.dtype = DType::boolean}).item(), 1.0);
  EXPECT_EQ(scalar_tensor(0.5, {.dtype = DType::bf16}).item(), 0.5);
  EXPECT_THROW(tensor({1, 2}).item(), Error);
  EXPECT_THROW(zeros({0}).item(), Error);
  // A selected element of a view.
  Tensor m = arange(6, {.dtype = DType::f64}).reshape({2, 3});
  EXPECT_EQ(m.t()[2][1].item(), 5.0);
  // to_vector follows the logical (row-major) order of views and converts.
  EXPECT_EQ(m.t().to_vector<double>(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(m.slice(1, 0, 3, 2).to_vector<int32_t>(), (std::vector<int32_t>{0, 2, 3, 5}));
  EXPECT_EQ(m.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  // data<T>() checks the dtype.
  EXPECT_THROW(m.data<float>(), Error);
  EXPECT_NO_THROW(m.data<double>());
  // Undefined tensors: an error, not a crash.
  Tensor u;
  EXPECT_FALSE(u.defined());
  EXPECT_THROW(u.sizes(), Error);
  EXPECT_EQ(u.str(), "undefined");
}

TEST(TensorCore, PrintingIsReadable) {
  std::string s = printed(tensor({1, 2, 3}));
  expect_contains(s, "tensor(");
  expect_contains(s, "[1, 2, 3]");
  expect_contains(s, "f32[3] cpu");
  std::string m = printed(arange(6, {.dtype = DType::i64}).reshape({2, 3}));
  expect_contains(m, "[[0, 1, 2],");
  expect_contains(m, "[3, 4, 5]]");
  expect_contains(m, "i64[2, 3]");
  std::string fr = printed(tensor({0.5, -1.25}, {}, {.dtype = DType::f64}));
  expect_contains(fr, "0.5");
  expect_contains(fr, "-1.25");
  expect_contains(fr, "f64[2]");
  std::string sc = printed(scalar_tensor(3.5));
  expect_contains(sc, "tensor(3.5");
  // Large tensors are summarised.
  std::string big = printed(arange(5000));
  expect_contains(big, "...");
  EXPECT_LT(big.size(), 200u);
  expect_contains(big, "4999");
  // Autograd state.
  Tensor x = ones({2}, {.dtype = DType::f64, .requires_grad = true});
  expect_contains(printed(x), "requires_grad");
  expect_contains(printed(mul(x, 2.0)), "grad_fn=mul_scalar");
  expect_contains(printed(Tensor()), "undefined");
  // NaN and inf print.
  std::string ni = printed(tensor({INFINITY, NAN}));
  expect_contains(ni, "inf");
  expect_contains(ni, "nan");
}

// ---------------------------------------------------------------------------------------------
// views and contiguity

TEST(TensorCore, ViewsShareStorage) {
  Tensor t = zeros({2, 3}, {.dtype = DType::f64});
  Tensor tr = t.transpose(0, 1);                     // [3, 2]
  EXPECT_EQ(tr.storage(), t.storage());
  tr.select(0, 1).fill_(5.0);                        // column 1 of t
  EXPECT_EQ(values(t), (std::vector<double>{0, 5, 0, 0, 5, 0}));
  Tensor flat = t.view({6});
  EXPECT_EQ(flat.storage(), t.storage());
  flat.slice(0, 0, 6, 2).fill_(1.0);                 // elements 0, 2, 4
  EXPECT_EQ(values(t), (std::vector<double>{1, 5, 1, 0, 1, 0}));
  Tensor row = t[1];
  row.copy_(tensor({7, 8, 9}, {}, {.dtype = DType::f64}));
  EXPECT_EQ(values(t), (std::vector<double>{1, 5, 1, 7, 8, 9}));
  // reads through views see writes to the base
  t.fill_(2.0);
  EXPECT_EQ(values(tr), std::vector<double>(6, 2.0));
  EXPECT_EQ(values(t.unsqueeze(0).expand({4, 2, 3})), std::vector<double>(24, 2.0));
  // A write bumps the shared version counter (what saved-tensor checks read).
  const uint64_t v0 = t.version();
  tr.mul_(2.0);
  EXPECT_GT(t.version(), v0);
  EXPECT_EQ(values(t), std::vector<double>(6, 4.0));
  // detach shares storage too; clone does not.
  EXPECT_EQ(t.detach().storage(), t.storage());
  Tensor c = t.clone();
  EXPECT_NE(c.storage(), t.storage());
  c.fill_(0.0);
  EXPECT_EQ(values(t), std::vector<double>(6, 4.0));
}

TEST(TensorCore, ContiguityReshapeAndView) {
  Tensor a = arange(24, {.dtype = DType::f64}).reshape({2, 3, 4});
  EXPECT_TRUE(a.is_contiguous());
  EXPECT_FALSE(a.transpose(0, 2).is_contiguous());
  EXPECT_FALSE(a.slice(2, 0, 4, 2).is_contiguous());
  EXPECT_TRUE(a.slice(0, 1, 2).is_contiguous());     // one whole block
  EXPECT_FALSE(a.slice(1, 0, 2).is_contiguous());    // rows missing between blocks
  EXPECT_FALSE(a.unsqueeze(0).expand({3, 2, 3, 4}).is_contiguous());
  EXPECT_TRUE(a.unsqueeze(1).is_contiguous());        // size-1 dims do not matter
  EXPECT_TRUE(a[0][1].is_contiguous());
  EXPECT_TRUE(a.permute({0, 1, 2}).is_contiguous());

  // reshape of a contiguous tensor is a view; of a non-contiguous one, a copy in logical order.
  Tensor r = a.reshape({6, 4});
  EXPECT_EQ(r.storage(), a.storage());
  Tensor at = a.transpose(1, 2);  // [2, 4, 3]
  Tensor rc = at.reshape({24});
  EXPECT_NE(rc.storage(), a.storage());
  EXPECT_TRUE(rc.is_contiguous());
  EXPECT_EQ(values(rc), values(at.contiguous()));
  EXPECT_EQ(values(rc)[1], 4.0);  // at[0][0][1] = a[0][1][0]
  // ...but splitting a dim, or merging dims that are contiguous among themselves, is a view.
  Tensor p = a.permute({1, 0, 2});  // [3, 2, 4], strides (4, 12, 1)
  Tensor pv = p.reshape({3, 2, 2, 2});
  EXPECT_EQ(pv.storage(), a.storage());
  EXPECT_EQ(pv.strides(), (Shape{4, 12, 2, 1}));
  EXPECT_EQ(values(pv), values(p));
  EXPECT_NE(p.reshape({3, 8}).storage(), a.storage());  // dims 1, 2 do not merge: a copy
  EXPECT_EQ(values(p.reshape({3, 8})), values(p));
  Tensor q = a.slice(1, 0, 2);  // [2, 2, 4], strides (12, 4, 1)
  EXPECT_EQ(q.reshape({2, 8}).storage(), a.storage());
  EXPECT_EQ(q.reshape({2, 8}).strides(), (Shape{12, 1}));
  // view of a non-viewable tensor is an error that points at reshape.
  try {
    at.view({24});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    expect_contains(msg, "view");
    expect_contains(msg, "reshape");
  }
  EXPECT_THROW(a.view({5, 5}), Error);
  EXPECT_NO_THROW(a.view({4, -1}));
  EXPECT_EQ(a.view({4, -1}).sizes(), (Shape{4, 6}));
  // contiguous() of a contiguous tensor is the tensor itself; of a view, a copy.
  EXPECT_EQ(a.contiguous().impl(), a.impl());
  EXPECT_NE(at.contiguous().storage(), a.storage());
  // Negative dims and out-of-range dims.
  EXPECT_EQ(a.size(-1), 4);
  EXPECT_EQ(a.stride(-2), 4);
  EXPECT_THROW(a.size(3), Error);
  EXPECT_THROW(a.transpose(0, 3), Error);
  // A 0-dim tensor has no sizes to ask for.
  Tensor s = scalar_tensor(1.0);
  EXPECT_THROW(s.size(0), Error);
  EXPECT_THROW(s.stride(-1), Error);
  EXPECT_TRUE(s.is_contiguous());
}

// ---------------------------------------------------------------------------------------------
// random numbers

TEST(TensorCore, PhiloxKnownAnswers) {
  // The Random123 known-answer vectors for philox4x32-10.
  using W = std::array<uint32_t, 4>;
  EXPECT_EQ(philox::block(0, 0, 0), (W{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox::block(~0ull, ~0ull, ~0ull), (W{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  // counter words 243f6a88 85a308d3 13198a2e 03707344, key words a4093822 299f31d0
  EXPECT_EQ(philox::block(0x85a308d3243f6a88ull, 0x0370734413198a2eull, 0x299f31d0a4093822ull),
            (W{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(TensorCore, RandomStreamLayout) {
  // f32 uniform: element i is lane i%4 of counter (offset + i/4), keyed by the seed.
  const uint64_t seed = 1234;
  Generator g(seed);
  Tensor r = rand({10}, {}, &g);
  auto rv = r.to_vector<float>();
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(rv[i], philox::to_unit_float(philox::block(static_cast<uint64_t>(i / 4), 0, seed)[i % 4]));
  EXPECT_EQ(g.offset(), 3u);  // ceil(10 / 4) counters used
  // f64 uniform: two words per value, two values per counter.
  Generator g2(seed);
  auto dv = rand({3}, {.dtype = DType::f64}, &g2).to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    auto w = philox::block(static_cast<uint64_t>(i / 2), 0, seed);
    EXPECT_EQ(dv[i], philox::to_unit_double(w[2 * (i % 2)], w[2 * (i % 2) + 1]));
  }
  EXPECT_EQ(g2.offset(), 2u);
  // Consecutive draws continue the stream.
  Generator a(9), b(9);
  Tensor whole = rand({16}, {}, &a);
  Tensor first = rand({8}, {}, &b), second = rand({8}, {}, &b);
  EXPECT_EQ(values(whole), values(cat({first, second})));
}

TEST(TensorCore, RandomReproducibility) {
  Generator a(42), b(42), c(43);
  for (auto dt : {DType::f32, DType::f64}) {
    Tensor x = randn({100}, {.dtype = dt}, &a), y = randn({100}, {.dtype = dt}, &b), z = randn({100}, {.dtype = dt}, &c);
    EXPECT_EQ(values(x), values(y));
    EXPECT_NE(values(x), values(z));
  }
  EXPECT_EQ(values(rand({7}, {}, &a)), values(rand({7}, {}, &b)));
  // Successive draws from one generator differ.
  EXPECT_NE(values(rand({7}, {}, &a)), values(rand({7}, {}, &a)));
  // The default generator, reseeded, repeats.
  manual_seed(5);
  Tensor d1 = randn({20});
  manual_seed(5);
  Tensor d2 = randn({20});
  EXPECT_EQ(values(d1), values(d2));
  EXPECT_EQ(default_generator().seed(), 5u);
  // manual_seed on a generator resets its position.
  Generator m(1);
  Tensor m1 = rand({5}, {}, &m);
  m.manual_seed(1);
  EXPECT_EQ(values(rand({5}, {}, &m)), values(m1));
}

TEST(TensorCore, GeneratorStateSaveRestore) {
  Generator g(77);
  rand({13}, {}, &g);  // move somewhere into the stream
  const auto state = g.state();
  EXPECT_EQ(state[0], 77u);
  EXPECT_EQ(state[1], g.offset());
  Tensor a = randn({50}, {.dtype = DType::f64}, &g);
  Tensor ai = randint(0, 100, {20}, {.dtype = DType::i64}, &g);
  Tensor ap = randperm(10, {.dtype = DType::i64}, &g);
  Generator h(1);
  h.set_state(state);
  EXPECT_EQ(values(randn({50}, {.dtype = DType::f64}, &h)), values(a));
  EXPECT_EQ(values(randint(0, 100, {20}, {.dtype = DType::i64}, &h)), values(ai));
  EXPECT_EQ(values(randperm(10, {.dtype = DType::i64}, &h)), values(ap));
  EXPECT_EQ(h.state(), g.state());
  // set_offset rewinds within a seed.
  g.set_state(state);
  Tensor again = randn({50}, {.dtype = DType::f64}, &g);
  EXPECT_EQ(values(again), values(a));
}

TEST(TensorCore, UniformAndNormalDistributions) {
  Generator g(2024);
  const int64_t n = 100000;
  for (auto dt : {DType::f32, DType::f64}) {
    auto u = rand({n}, {.dtype = dt}, &g).to_vector<double>();
    double mean = 0, lo = 1, hi = 0;
    for (double v : u) {
      ASSERT_GE(v, 0.0);
      ASSERT_LT(v, 1.0);
      mean += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    mean /= n;
    EXPECT_NEAR(mean, 0.5, 0.005);  // sd of the mean: 0.29 / sqrt(1e5) ~ 0.001
    EXPECT_LT(lo, 1e-3);
    EXPECT_GT(hi, 1 - 1e-3);

    auto z = randn({n}, {.dtype = dt}, &g).to_vector<double>();
    double m = 0, m2 = 0;
    int64_t beyond2 = 0;
    for (double v : z) {
      ASSERT_TRUE(std::isfinite(v));
      m += v;
      if (std::abs(v) > 2) ++beyond2;
    }
    m /= n;
    for (double v : z) m2 += (v - m) * (v - m);
    m2 /= n - 1;
    EXPECT_NEAR(m, 0.0, 0.015);   // sd of the mean: 0.003
    EXPECT_NEAR(m2, 1.0, 0.025);  // sd of the variance: sqrt(2 / 1e5) ~ 0.0045
    EXPECT_NEAR(static_cast<double>(beyond2) / n, 0.0455, 0.005);
  }
  // uniform(low, high) and normal(mean, std)
  auto u = uniform({n}, -3, 5, {.dtype = DType::f64}, &g).to_vector<double>();
  double um = 0;
  for (double v : u) {
    ASSERT_GE(v, -3.0);
    ASSERT_LT(v, 5.0);
    um += v / n;
  }
  EXPECT_NEAR(um, 1.0, 0.05);
  auto nv = normal({n}, 10, 0.5, {.dtype = DType::f64}, &g).to_vector<double>();
  double nm = std::accumulate(nv.begin(), nv.end(), 0.0) / n, nvar = 0;
  for (double v : nv) nvar += (v - nm) * (v - nm) / (n - 1);
  EXPECT_NEAR(nm, 10.0, 0.01);
  EXPECT_NEAR(nvar, 0.25, 0.01);
  // *_like
  Tensor like = zeros({3, 4}, {.dtype = DType::f64});
  EXPECT_EQ(rand_like(like, &g).sizes(), like.sizes());
  EXPECT_EQ(randn_like(like, &g).dtype(), DType::f64);
  EXPECT_THROW(uniform({3}, 2, 1), Error);
  EXPECT_THROW(normal({3}, 0, -1), Error);
  EXPECT_THROW(rand({3}, {.dtype = DType::i64}), Error);
  Tensor rg = randn({3}, {.dtype = DType::f64, .requires_grad = true}, &g);
  EXPECT_TRUE(rg.requires_grad());
}

TEST(TensorCore, RandintRandpermBernoulli) {
  Generator g(99);
  Tensor ri = randint(-3, 4, {10000}, {.dtype = DType::i64}, &g);
  EXPECT_EQ(ri.dtype(), DType::i64);
  std::vector<int64_t> counts(7, 0);
  for (int64_t v : ri.to_vector<int64_t>()) {
    ASSERT_GE(v, -3);
    ASSERT_LT(v, 4);
    ++counts[v + 3];
  }
  for (int64_t c : counts) EXPECT_NEAR(static_cast<double>(c), 10000.0 / 7, 150);  // every value occurs, evenly
  EXPECT_EQ(randint(0, 5, {2, 3}, {.dtype = DType::i32}, &g).dtype(), DType::i32);
  EXPECT_THROW(randint(3, 3, {2}), Error);

  for (int64_t n : {0, 1, 2, 17, 1000}) {
    Tensor p = randperm(n, {.dtype = DType::i64}, &g);
    ASSERT_EQ(p.sizes(), (Shape{n}));
    auto pv = p.to_vector<int64_t>();
    std::vector<int64_t> sorted = pv;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
    if (n == 1000) {
      int64_t fixed = 0;
      for (int64_t i = 0; i < n; ++i) fixed += pv[i] == i;
      EXPECT_LT(fixed, 10);  // a shuffle, not the identity (about one fixed point expected)
    }
  }
  EXPECT_THROW(randperm(-1), Error);

  Tensor probs = full({20000}, 0.3, {.dtype = DType::f64});
  Tensor b = bernoulli(probs, &g);
  EXPECT_EQ(b.dtype(), DType::f64);
  auto bv = b.to_vector<double>();
  double ones_frac = 0;
  for (double v : bv) {
    ASSERT_TRUE(v == 0.0 || v == 1.0);
    ones_frac += v / bv.size();
  }
  EXPECT_NEAR(ones_frac, 0.3, 0.015);  // sd ~ 0.0032
  // p = 0 and p = 1 are certain; per-element probabilities.
  Tensor edge = bernoulli(tensor({0, 1, 0, 1}), &g);
  EXPECT_EQ(values(edge), (std::vector<double>{0, 1, 0, 1}));
  EXPECT_THROW(bernoulli(tensor({0.5, 1.5})), Error);
}
