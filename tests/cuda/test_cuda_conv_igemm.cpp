// The implicit-GEMM convolution kernels (kernels/cuda/conv_igemm.cu), which ops/conv.cpp uses
// on the GPU for every f32 conv2d, conv_transpose2d and conv2d_weight_grad except the 1x1
// stride-1 unpadded ones (cuBLAS): against the CPU.
//
// CudaConvIgemm (skipped without a GPU): forward, backward-data (conv_transpose2d and the
// input gradient), backward-weight, under each precision setting, on inputs that are multiples
// of no tile (N = 3; C = 5, 13, 70; H = W = 11, 13, 32), reached through permuted views (no op
// sees a contiguous tensor), values of magnitude in (0.5, 2) with random signs; the model
// convolutions (3x3 s1 p1, 4x4 s2 p1, 1x1, 3x3 s2, dilation 2) with groups 1, 2 and depthwise
// (multiplier 1 and 2). Tolerances, relative to the output's largest magnitude: exact f32
// 1e-5, TF32 2e-3, BF16 2e-2; second order (expect_parity_n, at `highest`) 10x / 100x the f32
// tolerance for the first / second derivatives, as in cuda_parity.h. Under `medium` the conv
// keeps its image for the weight gradient as a BF16 copy; MediumKeepsTheImageInBf16 checks that
// the f32 image is freed and the gradients, first and second order, are unchanged.
//
// IgemmIndexSelfCheck (runs anywhere): the kernels' own index functions (conv_igemm_index.h,
// the code that decides every address the kernels read and write) evaluated on the host as the
// kernel evaluates them, tile padding and split-K ranges included, then compared in f64 with
// the CPU convolutions; every address they produce is also checked to lie inside its tensor and
// every output element to be written exactly once.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "ember/engine/precision.h"
#include "ember/kernels/cuda/conv_igemm.h"
#include "ember/kernels/cuda/conv_igemm_index.h"

namespace ember {
namespace {

namespace ig = kernels::cuda::igemm;

// Magnitude in (0.5, 2), random sign: never zero.
Tensor nonzero(uint64_t seed, DType dt, const Shape& s) {
  Generator g(seed);
  Tensor mag = uniform(s, 0.5, 2.0, {.dtype = dt}, &g);
  Tensor u = uniform(s, -1.0, 1.0, {.dtype = dt}, &g);
  return where(gt(u, 0.0), mag, neg(mag));
}

// An image [N, C, H, W] stored as [C, H, N, W]; a weight [A, B, kh, kw] stored as [kh, A, kw, B].
Tensor image_base(uint64_t seed, int64_t N, int64_t C, int64_t H, int64_t W, DType dt = DType::f32) {
  return nonzero(seed, dt, {C, H, N, W});
}
Tensor image_view(const Tensor& b) { return b.permute({2, 0, 1, 3}); }
Tensor weight_base(uint64_t seed, int64_t A, int64_t B, int64_t kh, int64_t kw, DType dt = DType::f32) {
  return nonzero(seed, dt, {kh, A, kw, B});
}
Tensor weight_view(const Tensor& b) { return b.permute({1, 3, 0, 2}); }

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

struct Case {
  std::string what;
  int64_t N, Cin, H, W, Cout, kh, kw;
  Size2 stride, padding, dilation;
  int64_t groups;
  bool bias;
  int64_t OH() const { return out_size(H, kh, stride[0], padding[0], dilation[0]); }
  int64_t OW() const { return out_size(W, kw, stride[1], padding[1], dilation[1]); }
};

// The model convolutions on sizes that are multiples of no tile.
std::vector<Case> gpu_cases() {
  std::vector<Case> cs;
  for (int64_t C : {5, 13, 70}) {
    for (int64_t H : {11, 13, 32}) {
      if (C == 70 && H == 11) continue;  // enough of the big ones
      const std::string sz = "C" + std::to_string(C) + " H" + std::to_string(H);
      cs.push_back({"3x3 s1 p1 bias, " + sz, 3, C, H, H, C + 2, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true});
      cs.push_back({"4x4 s2 p1, " + sz, 3, C, H, H, 2 * C - 1, 4, 4, {2, 2}, {1, 1}, {1, 1}, 1, false});
      cs.push_back({"3x3 s2 p1 bias, " + sz, 3, C, H, H, 7, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1, true});
      cs.push_back({"1x1 (cuBLAS), " + sz, 3, C, H, H, 9, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, false});
      cs.push_back({"depthwise 3x3 s1 p1 bias, " + sz, 3, C, H, H, C, 3, 3, {1, 1}, {1, 1}, {1, 1}, C, true});
    }
  }
  cs.push_back({"3x3 dilation 2 p2", 3, 13, 13, 11, 6, 3, 3, {1, 1}, {2, 2}, {2, 2}, 1, false});
  cs.push_back({"3x3 s(2,1) p(1,2) d(2,1)", 3, 13, 13, 11, 6, 3, 3, {2, 1}, {1, 2}, {2, 1}, 1, true});
  cs.push_back({"1x1 s2", 3, 13, 13, 13, 5, 1, 1, {2, 2}, {0, 0}, {1, 1}, 1, false});
  cs.push_back({"1x1 p1 (implicit GEMM)", 3, 13, 11, 13, 5, 1, 1, {1, 1}, {1, 1}, {1, 1}, 1, true});
  cs.push_back({"groups 2, 3x3 s1 p1", 3, 14, 13, 13, 10, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2, true});
  cs.push_back({"groups 2, 4x4 s2 p1", 3, 70, 32, 32, 70, 4, 4, {2, 2}, {1, 1}, {1, 1}, 2, false});
  cs.push_back({"depthwise x2, 3x3 s2 d2", 3, 13, 13, 11, 26, 3, 3, {2, 2}, {2, 2}, {2, 2}, 13, true});
  cs.push_back({"depthwise 4x4 s2 p1", 3, 13, 32, 32, 13, 4, 4, {2, 2}, {1, 1}, {1, 1}, 13, false});
  cs.push_back({"depthwise 5x5 (more than 16 taps)", 3, 5, 13, 13, 5, 5, 5, {1, 1}, {2, 2}, {1, 1}, 5, false});
  cs.push_back({"one input channel", 3, 1, 13, 11, 8, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true});
  cs.push_back({"70 -> 130, 3x3 s1 p1, H32 (several tiles, split-K)", 3, 70, 32, 32, 130, 3, 3, {1, 1}, {1, 1},
                {1, 1}, 1, true});
  return cs;
}

// ======================================================================================
// on the GPU
// ======================================================================================

struct PrecisionGuard {
  explicit PrecisionGuard(MatmulPrecision p) : previous(matmul_precision()) { set_matmul_precision(p); }
  ~PrecisionGuard() { set_matmul_precision(previous); }
  MatmulPrecision previous;
};

const std::vector<std::pair<MatmulPrecision, double>> kPrecisions = {
    {MatmulPrecision::highest, 1e-5}, {MatmulPrecision::high, 2e-3}, {MatmulPrecision::medium, 2e-2}};

// The three passes of case c on device d: conv2d, conv_transpose2d (the backward-data pass),
// conv2d_weight_grad, and the input gradient of conv2d (backward-data through autograd).
TensorList passes(const Case& c, const Device& d) {
  Tensor x = image_view(image_base(1, c.N, c.Cin, c.H, c.W).to(d));
  Tensor w = weight_view(weight_base(2, c.Cout, c.Cin / c.groups, c.kh, c.kw).to(d));
  Tensor b = c.bias ? nonzero(3, DType::f32, {2 * c.Cout}).to(d).slice(0, 0, 2 * c.Cout, 2) : Tensor();
  Tensor gy = image_view(image_base(4, c.N, c.Cout, c.OH(), c.OW()).to(d));
  Tensor bt = c.bias ? nonzero(5, DType::f32, {2 * c.Cin}).to(d).slice(0, 0, 2 * c.Cin, 2) : Tensor();
  // conv_transpose2d of gy [N, Cout, OH, OW] with w [Cout, Cin/G, kh, kw]: output padding so that
  // the output is exactly [N, Cin, H, W] (as the backward of the conv2d).
  const int64_t oph = c.H - ((c.OH() - 1) * c.stride[0] - 2 * c.padding[0] + c.dilation[0] * (c.kh - 1) + 1);
  const int64_t opw = c.W - ((c.OW() - 1) * c.stride[1] - 2 * c.padding[1] + c.dilation[1] * (c.kw - 1) + 1);
  Tensor xg = x.detach().requires_grad_(true);
  Tensor gx = grad(TensorList{conv2d(xg, w, b, c.stride, c.padding, c.dilation, c.groups)}, TensorList{xg},
                   TensorList{gy})[0];
  TensorList out{conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups),
                 conv2d_weight_grad(x, gy, {c.kh, c.kw}, c.stride, c.padding, c.dilation, c.groups), gx};
  if (oph >= 0 && opw >= 0 && oph < std::max(c.stride[0], c.dilation[0]) &&
      opw < std::max(c.stride[1], c.dilation[1]))
    out.push_back(conv_transpose2d(gy, w, bt, c.stride, c.padding, {oph, opw}, c.groups, c.dilation));
  return out;
}

TEST(CudaConvIgemm, ForwardBackwardDataBackwardWeightUnderEachPrecision) {
  EMBER_REQUIRE_GPU();
  const char* names[] = {"conv2d", "conv2d_weight_grad", "conv2d input gradient", "conv_transpose2d"};
  for (const Case& c : gpu_cases()) {
    SCOPED_TRACE(c.what);
    const TensorList ref = passes(c, Device::cpu());
    for (const auto& [p, tolerance] : kPrecisions) {
      SCOPED_TRACE(precision_name(p));
      PrecisionGuard guard(p);
      const TensorList got = passes(c, kGpu);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].device(), kGpu) << names[i];
        EXPECT_LT(rel_diff(got[i], ref[i]), tolerance) << names[i];
      }
    }
  }
}

// A larger batch and channel count: more M tiles and more K splits than the cases above, and
// 136 channels: two N tiles (of 128) in every pass.
TEST(CudaConvIgemm, LargerShapesAtEachPrecision) {
  EMBER_REQUIRE_GPU();
  const Case c{"N4 C136 H16 -> 136, 3x3 s1 p1", 4, 136, 16, 16, 136, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true};
  const TensorList ref = passes(c, Device::cpu());
  for (const auto& [p, tolerance] : kPrecisions) {
    SCOPED_TRACE(precision_name(p));
    PrecisionGuard guard(p);
    const TensorList got = passes(c, kGpu);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_LT(rel_diff(got[i], ref[i]), tolerance) << i;
  }
}

// The k table of the forward and backward-data passes lives in shared memory, 16 bytes per
// input (or output) channel and tap: 1000 channels of 3x3 (a 144 KB table beside the 68 KB
// pipeline) still take the kernels, 1200 (169 KB) are past an H100's 227 KB a block and take
// im2col + cuBLAS. Both against the CPU, every pass.
TEST(CudaConvIgemm, LargeKTablesAndTheIm2colPastThem) {
  EMBER_REQUIRE_GPU();
  for (int64_t C : {1000, 1200}) {
    const Case c{"C" + std::to_string(C) + " 3x3 s1 p1", 1, C, 5, 6, 3, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true};
    SCOPED_TRACE(c.what);
#if EMBER_WITH_CUDA
    auto i = [](int64_t v) { return static_cast<int>(v); };
    const ig::Geom g{i(c.N), i(c.Cin), i(c.H), i(c.W), i(c.Cout), i(c.OH()), i(c.OW()), i(c.kh), i(c.kw),
                     i(c.stride[0]), i(c.stride[1]), i(c.padding[0]), i(c.padding[1]), i(c.dilation[0]),
                     i(c.dilation[1]), i(c.groups)};
    EXPECT_EQ(kernels::cuda::conv_igemm_supports(g, 0), C == 1000);
#endif
    const TensorList ref = passes(c, Device::cpu()), got = passes(c, kGpu);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t k = 0; k < got.size(); ++k) EXPECT_LT(rel_diff(got[k], ref[k]), 1e-5) << k;
  }
}

// Second order at `highest`: each backward is itself a convolution on the new kernels.
TEST(CudaConvIgemm, SecondOrderParity) {
  EMBER_REQUIRE_GPU();
  const std::vector<Case> cs = {
      {"3x3 s1 p1 bias", 3, 13, 11, 11, 7, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true},
      {"4x4 s2 p1", 3, 5, 13, 13, 9, 4, 4, {2, 2}, {1, 1}, {1, 1}, 1, false},
      {"groups 2, dilation 2", 3, 6, 13, 11, 4, 3, 3, {1, 1}, {2, 2}, {2, 2}, 2, true},
      {"depthwise 3x3 s2", 3, 5, 13, 13, 10, 3, 3, {2, 2}, {1, 1}, {1, 1}, 5, true},
  };
  for (const Case& c : cs) {
    TensorList in{image_base(6, c.N, c.Cin, c.H, c.W), weight_base(7, c.Cout, c.Cin / c.groups, c.kh, c.kw)};
    if (c.bias) in.push_back(nonzero(8, DType::f32, {c.Cout}));
    expect_parity_n(
        [&c](const TensorList& xs) {
          Tensor y = conv2d(image_view(xs[0]), weight_view(xs[1]), c.bias ? xs[2] : Tensor(), c.stride, c.padding,
                            c.dilation, c.groups);
          return mul(y, y);
        },
        in, 1e-5, c.what.c_str());
    // conv_transpose2d's own second order (its backward: conv2d and the weight gradient)
    expect_parity_n(
        [&c](const TensorList& xs) {
          Tensor y = conv_transpose2d(image_view(xs[0]), weight_view(xs[1]), Tensor(), c.stride, c.padding, {0, 0},
                                      c.groups, c.dilation);
          return mul(y, y);
        },
        {image_base(9, c.N, c.Cout, 7, 6), weight_base(10, c.Cout, c.Cin / c.groups, c.kh, c.kw)}, 1e-5,
        (c.what + ", transposed").c_str());
  }
}

// Under `medium` a conv keeps its image for the weight gradient as a BF16 copy
// (autograd/narrow_saved.h): the f32 activation is freed after the forward, and the gradients,
// first and second order, are what they are when the image is a leaf the conv keeps in f32. Bit
// for bit on the implicit-GEMM path (the kernel rounds its operands to nearest-even BF16 as the
// copy did); within the BF16 tolerance on cuBLAS's (a 1x1 convolution), whose own conversion is
// its business. The second derivative reaches the image's producer through the widened copy.
TEST(CudaConvIgemm, MediumKeepsTheImageInBf16) {
  EMBER_REQUIRE_GPU();
  const Device d = Device::cuda(0);
  const std::vector<Case> cs = {
      {"3x3 s1 p1 bias", 3, 13, 11, 11, 7, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true},
      {"4x4 s2 p1", 3, 5, 13, 13, 9, 4, 4, {2, 2}, {1, 1}, {1, 1}, 1, false},
      {"groups 2, 3x3", 3, 6, 13, 11, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2, false},
      {"1x1 (cuBLAS)", 3, 13, 11, 13, 9, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},
  };
  for (const Case& c : cs) {
    SCOPED_TRACE(c.what);
    const bool igemm = c.kh > 1;
    Tensor a = image_base(11, c.N, c.Cin, c.H, c.W).to(d).requires_grad_(true);  // [C, H, N, W]
    Tensor w = weight_base(12, c.Cout, c.Cin / c.groups, c.kh, c.kw).to(d).requires_grad_(true);
    Tensor b = c.bias ? nonzero(13, DType::f32, {c.Cout}).to(d).requires_grad_(true) : Tensor();
    Tensor gy = image_view(image_base(14, c.N, c.Cout, c.OH(), c.OW()).to(d));
    Tensor cw = weight_base(15, c.Cout, c.Cin / c.groups, c.kh, c.kw).to(d);  // w's layout, as its gradient
    auto conv = [&](const Tensor& x) {
      return conv2d(x, weight_view(w), b, c.stride, c.padding, c.dilation, c.groups);
    };
    // dL/dW for L = <conv(x), gy>, then d<dL/dW, cw>/dx.
    auto weight_grad_and_back = [&](const Tensor& y, const Tensor& x) {
      Tensor gw = grad({y}, {w}, {gy}, {.create_graph = true})[0];
      return TensorList{gw.detach(), grad({sum(mul(gw, cw))}, {x})[0]};
    };
    PrecisionGuard guard(MatmulPrecision::medium);
    // The image as an activation (doubling is exact), kept narrowed...
    Tensor x = mul(image_view(a), 2.0);
    const std::weak_ptr<Storage> x_buffer = x.storage();
    Tensor y = conv(x);
    x = Tensor();
    EXPECT_TRUE(x_buffer.expired()) << "the conv kept the f32 image";
    TensorList narrowed = weight_grad_and_back(y, a);
    // ...and as a leaf, which the conv keeps as it is.
    Tensor xl = mul(image_view(a), 2.0).detach().requires_grad_(true);
    TensorList kept = weight_grad_and_back(conv(xl), xl);
    const Tensor kept_back = mul(kept[1], 2.0).permute({1, 2, 0, 3});  // d/da = 2 d/dxl, in a's layout
    if (igemm) {
      EXPECT_EQ(rel_diff(narrowed[0], kept[0]), 0.0) << "the weight gradient";
      EXPECT_EQ(rel_diff(narrowed[1], kept_back), 0.0) << "the second derivative";
    } else {
      EXPECT_LT(rel_diff(narrowed[0], kept[0]), 2e-2) << "the weight gradient";
      EXPECT_LT(rel_diff(narrowed[1], kept_back), 2e-2) << "the second derivative";
    }
    // Where a backward already holds the image (a GroupNorm before a ResBlock's skip
    // convolution), the conv adds no copy: its forward allocates what it does under `highest`.
    auto allocated_by_conv = [&](MatmulPrecision p) {
      PrecisionGuard in(p);
      Tensor xh = mul(image_view(a), 2.0);
      Tensor holder = sin(xh);  // keeps xh for its backward
      const size_t before = cuda::memory_stats(d.index).allocated;
      Tensor yh = conv(xh);
      return cuda::memory_stats(d.index).allocated - before;
    };
    EXPECT_EQ(allocated_by_conv(MatmulPrecision::medium), allocated_by_conv(MatmulPrecision::highest));
  }
  // Under `highest` the image is kept as it is.
  Tensor a = image_base(16, 2, 6, 9, 9).to(d).requires_grad_(true);
  Tensor w = weight_base(17, 4, 6, 3, 3).to(d).requires_grad_(true);
  Tensor x = mul(image_view(a), 2.0);
  const std::weak_ptr<Storage> x_buffer = x.storage();
  Tensor y = conv2d(x, weight_view(w), Tensor(), {1, 1}, {1, 1});
  x = Tensor();
  EXPECT_FALSE(x_buffer.expired()) << "under highest the conv keeps the f32 image";
}

// ======================================================================================
// the index functions, anywhere
// ======================================================================================

constexpr int kTile = ig::kTileM, kBk = ig::kTileK;  // the kernels' tile
static_assert(ig::kTileM == ig::kTileN);

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// C = sum_k A B for one pass, evaluated through the index functions exactly as igemm_kernel
// does (one GEMM per stride phase for backward-data; the outer part per row, the inner part per
// k, k limited to the split's range; rows and columns padded to whole tiles and k to whole
// steps), reading a, b and writing c (flat f64 vectors). Fails the test on an address outside
// its tensor, a padded row or column that gathers anything, or an output written twice or never.
template <ig::Pass P>
void emulate(const ig::Geom& g, const std::vector<double>& a, const std::vector<double>& b, std::vector<double>& c,
             int splits, int chunk) {
  constexpr bool kPhased = P == ig::Pass::backward_data;
  const int subs = kPhased ? ig::phases(g, P) : splits;
  if (kPhased) {
    splits = 1;
    chunk = ig::dims(g, P).K;
  }
  std::vector<double> part(c.size() * splits, 0.0);
  std::vector<int> writes(c.size(), 0);
  int bad = 0;
  for (int grp = 0; grp < g.groups; ++grp) {
    for (int sub = 0; sub < subs; ++sub) {
      const ig::Phase f = ig::phase_of<P>(g, kPhased ? sub : 0);
      const ig::Dims d = ig::dims(g, P, f);
      const int s = kPhased ? 0 : sub;
      const int k_begin = s * chunk, k_end = std::min(d.K, k_begin + chunk);
      const int steps = k_end > k_begin ? (k_end - k_begin + kBk - 1) / kBk : 0;
      // the inner halves of this split's k (padded to whole steps): the forward and
      // backward-data passes through the kernels' per-block table (k_entry), the weight
      // gradient through a_inner / b_inner
      constexpr bool kTabulated = P != ig::Pass::backward_weight;
      std::vector<ig::Ix> ai(steps * kBk), bi(steps * kBk);
      std::vector<ig::KEntry> table(steps * kBk);
      for (int j = 0; j < steps * kBk; ++j) {
        const int k = k_begin + j;
        if constexpr (kTabulated) {
          table[j] = ig::k_entry<P>(g, f, grp, k);
        } else {
          ai[j] = ig::a_inner<P>(g, f, k);
          ai[j].ok = ai[j].ok && k < k_end;
          bi[j] = ig::b_inner<P>(g, f, grp, k);
          bi[j].ok = bi[j].ok && k < k_end;
        }
      }
      std::vector<ig::Ix> bo(round_up(d.N, kTile));
      for (int n = 0; n < static_cast<int>(bo.size()); ++n) bo[n] = ig::b_outer<P>(g, f, grp, n);
      for (int m = 0; m < round_up(d.M, kTile); ++m) {
        const ig::Ix ao = ig::a_outer<P>(g, f, grp, m);
        for (int n = 0; n < static_cast<int>(bo.size()); ++n) {
          double acc = 0;
          for (int j = 0; j < steps * kBk; ++j) {
            int64_t oa = -1, ob = -1;
            bool va = false, vb = false;
            if constexpr (kTabulated) {
              va = ig::a_at<P>(g, ao, table[j], oa);
              vb = ig::b_at<P>(g, bo[n], table[j], k_begin + j < k_end, ob);
            } else {
              va = ig::a_at<P>(g, ao, ai[j], oa);
              vb = ig::b_at<P>(g, bo[n], bi[j], ob);
            }
            if (va && (oa < 0 || oa >= static_cast<int64_t>(a.size()))) ++bad;
            if (vb && (ob < 0 || ob >= static_cast<int64_t>(b.size()))) ++bad;
            if (va && vb && oa >= 0 && ob >= 0 && oa < static_cast<int64_t>(a.size()) &&
                ob < static_cast<int64_t>(b.size()))
              acc += a[oa] * b[ob];
          }
          if (m >= d.M || n >= d.N) {
            if (acc != 0) ++bad;  // a padded row or column must gather only zeros
            continue;
          }
          const int64_t o = ig::c_row<P>(g, f, grp, m) + ig::c_col<P>(g, n);
          if (o < 0 || o >= static_cast<int64_t>(c.size())) {
            ++bad;
            continue;
          }
          if (s == 0) ++writes[o];
          part[s * c.size() + o] = acc;
        }
      }
    }
  }
  EXPECT_EQ(bad, 0) << "addresses outside a tensor, or non-zero padding";
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(writes[i], 1) << "output element " << i;
    double acc = part[i];
    for (int s = 1; s < splits; ++s) acc += part[s * c.size() + i];
    c[i] = acc;
  }
}

// The phases of backward-data take exactly the taps that a stride lets through: every (pixel,
// tap) pair with a term is in its pixel's phase, and no phase holds a tap without one.
TEST(IgemmIndexSelfCheck, StridePhasesHoldExactlyTheLiveTaps) {
  for (int s = 1; s <= 4; ++s)
    for (int d = 1; d <= 3; ++d)
      for (int pad = 0; pad <= 3; ++pad)
        for (int K = 1; K <= 5; ++K)
          for (int q = 0; q < s; ++q) {
            int k0 = 0, step = 0, n = 0;
            ig::phase_taps(q, s, d, pad, K, k0, step, n);
            std::vector<int> got;
            for (int t = 0; t < n; ++t) got.push_back(k0 + t * step);
            std::vector<int> want;
            for (int k = 0; k < K; ++k)
              if (((q + pad - k * d) % s + s) % s == 0) want.push_back(k);
            EXPECT_EQ(got, want) << "stride " << s << " dilation " << d << " pad " << pad << " K " << K << " q " << q;
          }
}

// backward-data reads gy's row r + y0 - a y_step for the phase's a-th tap (phase_of's exact
// divisions): the row whose window puts tap kh0 + a kh_step on pixel row ih0 + r sh. Rows here;
// columns are the same code with the other axis' fields.
TEST(IgemmIndexSelfCheck, PhaseRowOffsetsAreTheTapsRows) {
  for (int s = 1; s <= 4; ++s)
    for (int d = 1; d <= 3; ++d)
      for (int pad = 0; pad <= 3; ++pad)
        for (int K = 1; K <= 5; ++K) {
          ig::Geom g{1, 1, 13, 1, 1, 1, 1, K, 1, s, 1, pad, 0, d, 1, 1};
          for (int q = 0; q < s; ++q) {
            const ig::Phase f = ig::phase_of<ig::Pass::backward_data>(ig::with_divisors(g), q);
            for (int a = 0; a < f.th; ++a) {
              const int kh = f.kh0 + a * f.kh_step, r = 2;
              const int ih = f.ih0 + r * s;
              EXPECT_EQ((r + f.y0 - a * f.y_step) * s, ih + pad - kh * d)
                  << "stride " << s << " dilation " << d << " pad " << pad << " K " << K << " phase " << q;
            }
          }
        }
}

ig::Geom geom_of(const Case& c) {
  auto i = [](int64_t v) { return static_cast<int>(v); };
  return ig::with_divisors({i(c.N), i(c.Cin), i(c.H), i(c.W), i(c.Cout), i(c.OH()), i(c.OW()), i(c.kh), i(c.kw),
                            i(c.stride[0]), i(c.stride[1]), i(c.padding[0]), i(c.padding[1]), i(c.dilation[0]),
                            i(c.dilation[1]), i(c.groups)});
}

// The multiply-shift division the index functions use, against the division it replaces.
TEST(IgemmIndexSelfCheck, FastDivisionIsExact) {
  std::vector<int> ns;
  for (int n = 0; n < 5000; ++n) ns.push_back(n);
  for (int64_t n = 5000; n < (int64_t{1} << 31); n = n * 3 / 2 + 7) ns.push_back(static_cast<int>(n));
  for (int64_t n = (int64_t{1} << 31) - 5000; n < (int64_t{1} << 31); ++n) ns.push_back(static_cast<int>(n));
  std::vector<int> ds;
  for (int d = 1; d <= 1100; ++d) ds.push_back(d);
  for (int d : {4096, 9216, 65536, 1 << 20, 123457, 1 << 30, (1 << 30) + 1, 2147483647}) ds.push_back(d);
  for (int d : ds) {
    const ig::FastDiv f = ig::fast_div(d);
    int wrong = 0;
    for (int n : ns) wrong += ig::divide(n, f) != n / d;
    EXPECT_EQ(wrong, 0) << "divisor " << d;
  }
}

// fits() refuses the shapes whose table offsets (32-bit) or spatial coordinates (kFar's
// margin) the kernels could not hold; those take im2col.
TEST(IgemmIndexSelfCheck, FitsRefusesWhatTheIndicesCannotHold) {
  //                     N  C     H          W    Cout OH         OW   KH KW sh sw ph pw dh dw groups
  const ig::Geom ok{8, 256, 64, 64, 256, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_TRUE(ig::fits(ok));
  const ig::Geom tall{1, 1, 1 << 28, 1, 1, 1 << 28, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1};  // a coordinate of 2^28
  EXPECT_FALSE(ig::fits(tall));
  const ig::Geom wide_image{1, 3000, 900, 900, 4, 900, 900, 3, 3, 1, 1, 1, 1, 1, 1, 1};  // C H W > 2^31
  EXPECT_FALSE(ig::fits(wide_image));
  const ig::Geom big_weight{1, 50000, 4, 4, 50000, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1};  // Cout Cin > 2^31
  EXPECT_FALSE(ig::fits(big_weight));
}

TEST(IgemmIndexSelfCheck, ThePassesOfTheIndexFunctionsAreTheCpuConvolutions) {
  const std::vector<Case> cs = {
      {"3x3 s1 p1", 2, 6, 7, 9, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, false},
      {"4x4 s2 p1", 2, 5, 9, 8, 3, 4, 4, {2, 2}, {1, 1}, {1, 1}, 1, false},
      {"3x3 s2 p(1,2) d(2,1)", 2, 5, 11, 9, 4, 3, 3, {2, 2}, {1, 2}, {2, 1}, 1, false},
      {"5x3 s(3,2) p(2,1)", 2, 3, 10, 9, 5, 5, 3, {3, 2}, {2, 1}, {1, 1}, 1, false},
      {"1x1 s2", 2, 5, 7, 8, 3, 1, 1, {2, 2}, {0, 0}, {1, 1}, 1, false},
      {"1x1 s1 p0", 2, 5, 7, 8, 3, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, false},
      {"groups 3, 3x3 s1 p1", 2, 6, 7, 9, 9, 3, 3, {1, 1}, {1, 1}, {1, 1}, 3, false},
      {"groups 2, 4x4 s2 p1", 3, 4, 9, 9, 6, 4, 4, {2, 2}, {1, 1}, {1, 1}, 2, false},
      {"depthwise, 3x3 s2 d2", 2, 4, 9, 9, 8, 3, 3, {2, 2}, {2, 2}, {2, 2}, 4, false},
      {"more than one tile in M and N", 2, 3, 9, 10, 70, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, false},
      {"3x3 s2 d2 (phases without taps)", 2, 3, 11, 10, 4, 3, 3, {2, 2}, {2, 1}, {2, 2}, 1, false},
      {"4x4 s3 p2 d1, tall", 2, 3, 13, 7, 4, 4, 4, {3, 3}, {2, 2}, {1, 1}, 1, false},
      {"2x5 s(2,3) p(0,2) d(3,2), groups 2", 2, 4, 12, 14, 4, 2, 5, {2, 3}, {0, 2}, {3, 2}, 2, false},
      {"4x4 s2 p1, 70 channels (several N tiles, phases)", 1, 70, 8, 9, 66, 4, 4, {2, 2}, {1, 1}, {1, 1}, 1, false},
  };
  for (const Case& c : cs) {
    SCOPED_TRACE(c.what);
    const ig::Geom g = geom_of(c);
    ASSERT_TRUE(ig::fits(g));
    const DType dt = DType::f64;
    Tensor x = image_view(image_base(11, c.N, c.Cin, c.H, c.W, dt)).contiguous();
    Tensor w = weight_view(weight_base(12, c.Cout, c.Cin / c.groups, c.kh, c.kw, dt)).contiguous();
    Tensor gy = image_view(image_base(13, c.N, c.Cout, c.OH(), c.OW(), dt)).contiguous();
    const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), gv = gy.to_vector<double>();

    // forward
    std::vector<double> y(gy.numel());
    emulate<ig::Pass::forward>(g, xv, wv, y, 1, ig::dims(g, ig::Pass::forward).K);
    const Tensor yref = conv2d(x, w, Tensor(), c.stride, c.padding, c.dilation, c.groups);
    EXPECT_LT(rel_diff(from_vector(y, yref.sizes()), yref), 1e-12) << "forward";

    // backward-data: the input gradient of conv2d
    std::vector<double> gx(x.numel());
    emulate<ig::Pass::backward_data>(g, gv, wv, gx, 1, ig::dims(g, ig::Pass::backward_data).K);
    Tensor xg = x.detach().requires_grad_(true);
    const Tensor gxref = grad(TensorList{conv2d(xg, w, Tensor(), c.stride, c.padding, c.dilation, c.groups)},
                              TensorList{xg}, TensorList{gy})[0];
    EXPECT_LT(rel_diff(from_vector(gx, gxref.sizes()), gxref), 1e-12) << "backward-data";

    // backward-weight, in one piece and split as the kernels split it (small steps, so that
    // these small shapes get several splits, one of them short)
    const Tensor dwref = conv2d_weight_grad(x, gy, {c.kh, c.kw}, c.stride, c.padding, c.dilation, c.groups);
    for (int target : {1, 1000}) {
      SCOPED_TRACE("target blocks " + std::to_string(target));
      ig::SplitK sk = ig::split_k(g, kTile, kTile, 2, target);  // 2-wide steps: many splits
      if (target > 1 && ig::dims(g, ig::Pass::backward_weight).K >= 2 * 16) {  // at least 16 steps of 2
        EXPECT_GT(sk.splits, 1);
      }
      EXPECT_GE(int64_t{sk.splits} * sk.chunk, ig::dims(g, ig::Pass::backward_weight).K);
      EXPECT_LT(int64_t{sk.splits - 1} * sk.chunk, ig::dims(g, ig::Pass::backward_weight).K);  // none empty
      std::vector<double> dw(dwref.numel());
      emulate<ig::Pass::backward_weight>(g, gv, xv, dw, sk.splits, sk.chunk);
      EXPECT_LT(rel_diff(from_vector(dw, dwref.sizes()), dwref), 1e-12) << "backward-weight";
    }
  }
}

// The kernels' thread -> element maps: every element of an operand's K-step tile is copied by
// exactly one (thread, load), and every element of the C tile stored by one (thread, store);
// the kernel also relies on a thread's row (outer-fast) or k (k-fast) being the same for all
// its loads.
TEST(IgemmIndexSelfCheck, EveryTileElementIsMovedOnce) {
  static_assert(ig::kThreads * ig::kLoadsPerThread == ig::kTileM * ig::kTileK);
  static_assert(ig::kThreads * ig::kOutPerThread == ig::kTileM * ig::kTileN);
  for (bool outer_fast : {true, false}) {
    SCOPED_TRACE(outer_fast ? "outer-fast" : "k-fast");
    std::vector<int> count(ig::kTileM * ig::kTileK, 0);
    for (int tid = 0; tid < ig::kThreads; ++tid)
      for (int i = 0; i < ig::kLoadsPerThread; ++i) {
        const int o = ig::load_outer(outer_fast, tid, i), k = ig::load_k(outer_fast, tid, i);
        ASSERT_TRUE(o >= 0 && o < ig::kTileM && k >= 0 && k < ig::kTileK);
        ++count[o * ig::kTileK + k];
        if (outer_fast) EXPECT_EQ(o, ig::load_outer(true, tid, 0));
        else EXPECT_EQ(k, ig::load_k(false, tid, 0));
      }
    for (int c : count) EXPECT_EQ(c, 1);
  }
  std::vector<int> count(ig::kTileM * ig::kTileN, 0);
  for (int tid = 0; tid < ig::kThreads; ++tid)
    for (int r = 0; r < ig::kOutPerThread; ++r) {
      const int f = ig::store_fast(tid), sl = ig::store_slow(tid, r);
      ASSERT_TRUE(f >= 0 && f < ig::kTileM && sl >= 0 && sl < ig::kTileN);
      ++count[f * ig::kTileN + sl];
    }
  for (int c : count) EXPECT_EQ(c, 1);
}

}  // namespace
}  // namespace ember
