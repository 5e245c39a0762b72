// The GPU paths of the convolution family (conv2d, conv_transpose2d, conv2d_weight_grad, avg and
// max pooling, nearest upsampling, pixel (un)shuffle) against the CPU: forward, first and
// second derivatives.
//
// Every test body takes the device to compare with the CPU. It runs twice: under CudaGpuConv on
// the GPU (skipped without one), and under CudaConvSelfCheck with the CPU standing in for the
// GPU, so that a machine without a GPU still runs every line of the test itself (shapes, the
// parameters' validity, which inputs are differentiable) and only the comparison is owed to a
// GPU machine.
//
// Inputs: sizes that are multiples of no tile (N=3, C=5, H=11, W=13), reached through permuted
// views so no op sees a contiguous tensor, values of magnitude in (0.5, 2) with random signs
// (never zero; continuous, so max pooling meets no ties). Outputs are squared before the
// derivatives are taken, so the second derivative runs each op's backward through its own
// backward. Tolerances as in cuda_parity.h: f64 1e-12, f32 1e-5 relative to the output's scale,
// 10x for first derivatives, 100x for second; TF32 convolutions 2e-3 and BF16 2e-2, forward.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "ember/engine/precision.h"

namespace ember {
namespace {

using Fn = std::function<Tensor(const TensorList& xs)>;

const std::vector<DType> kReal = {DType::f64, DType::f32};

// Magnitude in (0.5, 2), random sign: never zero.
Tensor nonzero(uint64_t seed, DType dt, const Shape& s) {
  Generator g(seed);
  Tensor mag = uniform(s, 0.5, 2.0, {.dtype = dt}, &g);
  Tensor u = uniform(s, -1.0, 1.0, {.dtype = dt}, &g);
  return where(gt(u, 0.0), mag, neg(mag));
}

// An image [N, C, H, W] is stored as [C, H, N, W] and reached through image_view; a weight
// [A, B, kh, kw] is stored as [kh, A, kw, B] and reached through weight_view. The stored
// tensors are the differentiated inputs; the ops only ever see the permuted views.
Tensor image_base(uint64_t seed, DType dt, int64_t N, int64_t C, int64_t H, int64_t W) {
  return nonzero(seed, dt, {C, H, N, W});
}
Tensor image_view(const Tensor& b) { return b.permute({2, 0, 1, 3}); }
Tensor weight_base(uint64_t seed, DType dt, int64_t A, int64_t B, int64_t kh, int64_t kw) {
  return nonzero(seed, dt, {kh, A, kw, B});
}
Tensor weight_view(const Tensor& b) { return b.permute({1, 3, 0, 2}); }
// A bias [C] as every other element of a [2C] tensor.
Tensor bias_base(uint64_t seed, DType dt, int64_t C) { return nonzero(seed, dt, {2 * C}); }
Tensor bias_view(const Tensor& b) { return b.slice(0, 0, b.size(0), 2); }

// f on the CPU and on d agree to second order (tolerance by dtype).
void expect_same(const Fn& f, const TensorList& inputs, const Device& d, const std::string& what) {
  expect_parity_n(f, inputs, tol(inputs.at(0).dtype()), what, d);
}

Tensor squared(const Tensor& y) { return mul(y, y); }

// Each test body runs on the GPU (skipped without one) and, as a check of the test itself,
// with the CPU in the GPU's place.
#define EMBER_CONV_TEST(name) EMBER_GPU_AND_SELF_CHECK_TEST(CudaGpuConv, CudaConvSelfCheck, name)

// One conv2d case: input [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw], optional bias.
struct ConvCase {
  const char* what;
  int64_t N, Cin, H, W, Cout, kh, kw;
  Size2 stride, padding, dilation;
  int64_t groups;
  bool bias;
};

const std::vector<ConvCase> kConvCases = {
    {"3x3, stride 1, padding 1, bias", 3, 5, 11, 13, 7, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {"3x3, stride 2, padding (1, 2), dilation (2, 1)", 3, 5, 11, 13, 4, 3, 3, {2, 2}, {1, 2}, {2, 1}, 1, false},
    {"1x1, stride 1, unpadded (the direct path), bias", 3, 5, 11, 13, 6, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"1x1, stride 2", 3, 5, 11, 13, 6, 1, 1, {2, 2}, {0, 0}, {1, 1}, 1, false},
    {"4x4, stride (2, 1), padding 1, bias", 3, 5, 11, 13, 3, 4, 4, {2, 1}, {1, 1}, {1, 1}, 1, true},
    {"1x3, padding (0, 1)", 3, 5, 11, 13, 4, 1, 3, {1, 1}, {0, 1}, {1, 1}, 1, false},
    {"groups 3 (no more groups than samples), bias", 3, 6, 11, 13, 9, 3, 3, {1, 1}, {1, 1}, {1, 1}, 3, true},
    {"groups 2, 1x1 direct path", 3, 6, 11, 13, 4, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2, false},
    {"depthwise x2 (more groups than samples), stride 2, dilation 2", 3, 6, 11, 13, 12, 3, 3, {2, 2}, {2, 2},
     {2, 2}, 6, true},
    {"depthwise 4x4, one sample", 1, 5, 11, 13, 5, 4, 4, {1, 1}, {2, 1}, {1, 1}, 5, false},
};

TensorList conv_inputs(const ConvCase& c, DType dt) {
  TensorList in{image_base(1, dt, c.N, c.Cin, c.H, c.W), weight_base(2, dt, c.Cout, c.Cin / c.groups, c.kh, c.kw)};
  if (c.bias) in.push_back(bias_base(3, dt, c.Cout));
  return in;
}

Tensor run_conv(const ConvCase& c, const TensorList& xs) {
  return conv2d(image_view(xs[0]), weight_view(xs[1]), c.bias ? bias_view(xs[2]) : Tensor(), c.stride, c.padding,
                c.dilation, c.groups);
}

// ---- conv2d (its backward is conv_transpose2d and conv2d_weight_grad) ----

EMBER_CONV_TEST(Conv2d) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (const ConvCase& c : kConvCases)
      expect_same([&c](const TensorList& xs) { return squared(run_conv(c, xs)); }, conv_inputs(c, dt), d, c.what);
    // an unbatched [C, H, W] input
    expect_same(
        [](const TensorList& xs) {
          return squared(conv2d(image_view(xs[0]).select(0, 1), weight_view(xs[1]), Tensor(), {2, 2}, {1, 1}));
        },
        {image_base(4, dt, 3, 5, 11, 13), weight_base(5, dt, 7, 5, 3, 3)}, d, "unbatched input");
  }
}

// ---- conv_transpose2d (its backward is conv2d and conv2d_weight_grad) ----

struct TransposeCase {
  const char* what;
  int64_t N, Cin, H, W, CoutPerGroup, kh, kw;
  Size2 stride, padding, output_padding;
  int64_t groups;
  Size2 dilation;
  bool bias;
};

const std::vector<TransposeCase> kTransposeCases = {
    {"3x3, stride 2, padding 1, output_padding 1, bias", 3, 5, 11, 13, 4, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1, {1, 1},
     true},
    {"3x3, stride 1, padding 1", 3, 5, 11, 13, 3, 3, 3, {1, 1}, {1, 1}, {0, 0}, 1, {1, 1}, false},
    {"4x4, stride 2, padding 1, groups 2", 3, 6, 11, 13, 3, 4, 4, {2, 2}, {1, 1}, {0, 0}, 2, {1, 1}, true},
    {"1x1 (the direct path)", 3, 5, 11, 13, 7, 1, 1, {1, 1}, {0, 0}, {0, 0}, 1, {1, 1}, true},
    {"depthwise, stride (2, 1), dilation 2", 3, 6, 11, 13, 1, 3, 3, {2, 1}, {2, 1}, {1, 0}, 6, {2, 2}, false},
};

EMBER_CONV_TEST(ConvTranspose2d) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (const TransposeCase& c : kTransposeCases) {
      TensorList in{image_base(6, dt, c.N, c.Cin, c.H, c.W), weight_base(7, dt, c.Cin, c.CoutPerGroup, c.kh, c.kw)};
      if (c.bias) in.push_back(bias_base(8, dt, c.CoutPerGroup * c.groups));
      expect_same(
          [&c](const TensorList& xs) {
            return squared(conv_transpose2d(image_view(xs[0]), weight_view(xs[1]), c.bias ? bias_view(xs[2]) : Tensor(),
                                            c.stride, c.padding, c.output_padding, c.groups, c.dilation));
          },
          in, d, c.what);
    }
  }
}

// ---- conv2d_weight_grad (its backward is conv_transpose2d and conv2d) ----

EMBER_CONV_TEST(Conv2dWeightGrad) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (const ConvCase& c : kConvCases) {
      // grad_out has the conv's output size
      const int64_t OH = (c.H + 2 * c.padding[0] - c.dilation[0] * (c.kh - 1) - 1) / c.stride[0] + 1;
      const int64_t OW = (c.W + 2 * c.padding[1] - c.dilation[1] * (c.kw - 1) - 1) / c.stride[1] + 1;
      expect_same(
          [&c](const TensorList& xs) {
            return squared(conv2d_weight_grad(image_view(xs[0]), image_view(xs[1]), {c.kh, c.kw}, c.stride, c.padding,
                                              c.dilation, c.groups));
          },
          {image_base(9, dt, c.N, c.Cin, c.H, c.W), image_base(10, dt, c.N, c.Cout, OH, OW)}, d, c.what);
    }
  }
}

// ---- pooling ----

struct PoolCase {
  const char* what;
  Size2 kernel, stride, padding;
};

const std::vector<PoolCase> kPoolCases = {
    {"3x3, stride 2, padding 1", {3, 3}, {2, 2}, {1, 1}},
    {"2x2, stride = kernel", {2, 2}, {0, 0}, {0, 0}},
    {"4x4, stride 1, padding 2 (overlapping windows)", {4, 4}, {1, 1}, {2, 2}},
    {"3x1, stride (1, 2)", {3, 1}, {1, 2}, {1, 0}},
    {"1x1", {1, 1}, {1, 1}, {0, 0}},
};

EMBER_CONV_TEST(AvgPool2d) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (const PoolCase& c : kPoolCases)
      expect_same(
          [&c](const TensorList& xs) { return squared(avg_pool2d(image_view(xs[0]), c.kernel, c.stride, c.padding)); },
          {image_base(11, dt, 3, 5, 11, 13)}, d, c.what);
  }
}

// The backward scatters into the argmax (max_pool2d_backward), whose own backward gathers from it
// (max_pool2d_gather): the second derivative runs both.
EMBER_CONV_TEST(MaxPool2d) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (const PoolCase& c : kPoolCases)
      expect_same(
          [&c](const TensorList& xs) { return squared(max_pool2d(image_view(xs[0]), c.kernel, c.stride, c.padding)); },
          {image_base(12, dt, 3, 5, 11, 13)}, d, c.what);
    expect_same(
        [](const TensorList& xs) { return squared(max_pool2d(image_view(xs[0]).select(0, 2), {3, 3}, {2, 2})); },
        {image_base(13, dt, 3, 5, 11, 13)}, d, "unbatched input");
  }
}

EMBER_CONV_TEST(MaxPool2dIndicesAndNaN) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor base = image_base(14, dt, 3, 5, 11, 13);
    // about one element in fifteen NaN: the first NaN of a window wins it, as on the CPU
    base = where(gt(abs(base), 1.9), full_like(base, std::nan("")), base);
    for (const PoolCase& c : kPoolCases) {
      SCOPED_TRACE(c.what);
      auto [yc, ic] = max_pool2d_with_indices(image_view(base), c.kernel, c.stride, c.padding);
      auto [yd, id] = max_pool2d_with_indices(image_view(base.to(d)), c.kernel, c.stride, c.padding);
      EXPECT_EQ(id.device(), d);
      EXPECT_EQ(id.dtype(), DType::i64);
      EXPECT_EQ(id.to(Device::cpu()).to_vector<int64_t>(), ic.to_vector<int64_t>());
      EXPECT_EQ(rel_diff(yd, yc), 0.0);  // a maximum is copied, not computed
    }
  }
}

// ---- upsampling and pixel (un)shuffle ----

EMBER_CONV_TEST(UpsampleNearest2d) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    for (int64_t r : {1, 2, 3})
      expect_same([r](const TensorList& xs) { return squared(upsample_nearest2d(image_view(xs[0]), r)); },
                  {image_base(15, dt, 3, 5, 11, 13)}, d, ("scale " + std::to_string(r)).c_str());
    expect_same([](const TensorList& xs) { return squared(upsample_nearest2d(image_view(xs[0]).select(0, 0), 2)); },
                {image_base(16, dt, 3, 5, 11, 13)}, d, "unbatched input");
  }
}

// Reshapes and permutes: on the GPU they need only copies.
EMBER_CONV_TEST(PixelShuffle) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    expect_same([](const TensorList& xs) { return squared(pixel_shuffle(image_view(xs[0]), 2)); },
                {image_base(17, dt, 3, 12, 5, 7)}, d, "shuffle by 2");
    expect_same([](const TensorList& xs) { return squared(pixel_shuffle(image_view(xs[0]), 3)); },
                {image_base(18, dt, 3, 9, 5, 7)}, d, "shuffle by 3");
    expect_same([](const TensorList& xs) { return squared(pixel_unshuffle(image_view(xs[0]), 2)); },
                {image_base(19, dt, 3, 5, 10, 14)}, d, "unshuffle by 2");
  }
}

// ---- a small network of every op above, to second order ----

EMBER_CONV_TEST(ConvNetToSecondOrder) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    expect_same(
        [](const TensorList& xs) {
          // scaled so that tanh does not saturate: max pooling must not meet near-ties
          Tensor h = conv2d(image_view(xs[0]), weight_view(xs[1]), xs[2], {1, 1}, {1, 1});  // [3, 8, 11, 13]
          h = max_pool2d(tanh(mul(h, 0.1)), {3, 3}, {2, 2}, {1, 1});                        // [3, 8, 6, 7]
          h = conv2d(h, weight_view(xs[3]), Tensor(), {1, 1}, {1, 1}, {1, 1}, 8);           // depthwise
          h = pixel_shuffle(upsample_nearest2d(h, 2), 2);                                   // [3, 2, 24, 28]
          h = conv_transpose2d(sigmoid(h), weight_view(xs[4]), Tensor(), {2, 2}, {1, 1}, {1, 1});  // [3, 3, 49, 57]
          return avg_pool2d(h, {4, 4}, {3, 3}, {1, 1});
        },
        {image_base(20, dt, 3, 5, 11, 13), weight_base(21, dt, 8, 5, 3, 3), nonzero(22, dt, {8}),
         weight_base(23, dt, 8, 1, 3, 3), weight_base(24, dt, 2, 3, 4, 4)},
        d, "conv, max pool, depthwise conv, upsample, pixel shuffle, transposed conv, avg pool");
  }
}

// ---- errors ----

// Every op refuses a dtype it has no kernel for with the CPU's message.
EMBER_CONV_TEST(RefusesOtherDtypesLikeTheCpu) {
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  for (DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor xc = rnd({2, 4, 6, 6}, 1).to(dt), wc = rnd({3, 4, 3, 3}, 2).to(dt);
    Tensor xd = xc.to(d), wd = wc.to(d);
    const std::vector<std::pair<const char*, std::function<void(const Tensor&, const Tensor&)>>> ops = {
        {"conv2d", [](const Tensor& x, const Tensor& w) { conv2d(x, w); }},
        {"conv_transpose2d", [](const Tensor& x, const Tensor& w) { conv_transpose2d(x, w.transpose(0, 1)); }},
        {"conv2d_weight_grad", [](const Tensor& x, const Tensor&) { conv2d_weight_grad(x, x, {3, 3}); }},
        {"avg_pool2d", [](const Tensor& x, const Tensor&) { avg_pool2d(x, {2, 2}); }},
        {"max_pool2d", [](const Tensor& x, const Tensor&) { max_pool2d(x, {2, 2}); }},
        {"upsample_nearest2d", [](const Tensor& x, const Tensor&) { upsample_nearest2d(x, 2); }},
    };
    for (const auto& [name, op] : ops) {
      SCOPED_TRACE(name);
      const std::string cpu = message([&, op = op] { op(xc, wc); });
      EXPECT_NE(cpu, "no error");
      EXPECT_EQ(message([&, op = op] { op(xd, wd); }), cpu);
    }
  }
}

// ---- precision (f32 on the GPU; the CPU always computes exactly) ----

// Restores the default precision however the test leaves.
struct PrecisionGuard {
  explicit PrecisionGuard(MatmulPrecision p) { set_matmul_precision(p); }
  ~PrecisionGuard() { set_matmul_precision(MatmulPrecision::highest); }
};

EMBER_CONV_TEST(ConvolutionsHonourThePrecisionSetting) {
  const DType dt = DType::f32;
  Tensor x = image_view(image_base(25, dt, 3, 5, 11, 13)), w = weight_view(weight_base(26, dt, 7, 5, 3, 3));
  Tensor gy = image_view(image_base(27, dt, 3, 7, 6, 7));  // conv2d's output size at stride 2, padding 1
  Tensor wt = weight_view(weight_base(28, dt, 5, 4, 4, 4));
  auto outputs = [&](const Device& dv) {
    Tensor xd = x.to(dv), wd = w.to(dv), gd = gy.to(dv), wtd = wt.to(dv);
    return TensorList{conv2d(xd, wd, Tensor(), {2, 2}, {1, 1}), conv_transpose2d(xd, wtd, Tensor(), {2, 2}, {1, 1}),
                      conv2d_weight_grad(xd, gd, {3, 3}, {2, 2}, {1, 1}),
                      conv2d(xd, weight_view(weight_base(29, dt, 10, 1, 3, 3)).to(dv), Tensor(), {1, 1}, {1, 1},
                             {1, 1}, 5)};
  };
  const TensorList exact = outputs(Device::cpu());
  for (auto [p, tolerance] : {std::pair{MatmulPrecision::highest, 1e-5}, std::pair{MatmulPrecision::high, 2e-3},
                              std::pair{MatmulPrecision::medium, 2e-2}}) {
    SCOPED_TRACE(precision_name(p));
    PrecisionGuard guard(p);
    const TensorList got = outputs(d);
    const char* names[] = {"conv2d", "conv_transpose2d", "conv2d_weight_grad", "depthwise conv2d"};
    for (size_t i = 0; i < got.size(); ++i) EXPECT_LT(rel_diff(got[i], exact[i]), tolerance) << names[i];
  }
}

}  // namespace
}  // namespace ember
