// The GPU paths of softmax, attention, the norms (the fused GroupNorm+SiLU kernel too), dropout, binary cross-entropy, the fused
// optimizers, gradient clipping and the host-side factorizations, against the CPU: forward,
// first and second derivative (tests/cuda/cuda_parity.h). They skip without a GPU.
#include <gtest/gtest.h>

#include <memory>

#include "cuda_parity.h"
#include "ember/nn/optim.h"
#include "ember/ops/attention.h"
#include "ember/ops/linalg.h"
#include "ember/ops/loss.h"
#include "ember/ops/norm.h"

namespace ember {
namespace {

TEST(Cuda, GraphOptimizerStepIsForGpuParameters) {
  Tensor p = ones({3}).requires_grad_(true);
  nn::Adam opt({p}, {});
  EXPECT_THROW(opt.prepare_step(), Error);  // CPU parameters: step() is the way
  EXPECT_THROW(opt.launch_step(), Error);
}

// A random [a, b, c] tensor laid out as a permuted view (not contiguous).
Tensor permuted(const Shape& abc, uint64_t seed, DType dt) {
  return rnd({abc[2], abc[0], abc[1]}, seed, dt).permute({1, 2, 0});
}

TEST(CudaGpu, SoftmaxAlongEveryDim) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    // rows of 3 (shorter than a warp), 67 and 1031 (longer than a block) along the last dim
    for (int64_t n : {3, 67, 1031}) {
      Tensor x = mul(permuted({5, 7, n}, 40 + n, dt), 3.0);
      expect_parity([](const Tensor& t) { return softmax(t, -1); }, x, tol(dt), "softmax, last dim");
      expect_parity([](const Tensor& t) { return log_softmax(t, -1); }, x, tol(dt), "log_softmax, last dim");
    }
    Tensor x = mul(permuted({9, 13, 11}, 3, dt), 3.0);
    for (int64_t d : {0, 1}) {
      expect_parity([d](const Tensor& t) { return softmax(t, d); }, x, tol(dt), "softmax, leading dim");
      expect_parity([d](const Tensor& t) { return log_softmax(t, d); }, x, tol(dt), "log_softmax, leading dim");
    }
  }
}

TEST(CudaGpu, SoftmaxOfABlockedRowIsNaNAsOnTheCpu) {
  EMBER_REQUIRE_GPU();
  Tensor x = rnd({4, 9}, 5);
  x.select(0, 2).fill_(-INFINITY);
  Tensor c = softmax(x, 1), g = softmax(x.to(kGpu), 1).to(Device::cpu());
  auto cv = c.to_vector<double>(), gv = g.to_vector<double>();
  for (size_t i = 0; i < cv.size(); ++i) {
    EXPECT_EQ(std::isnan(cv[i]), std::isnan(gv[i])) << i;
    if (!std::isnan(cv[i])) EXPECT_NEAR(gv[i], cv[i], 1e-6) << i;
  }
}

TEST(CudaGpu, AttentionMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  const DType dt = DType::f64;
  Tensor q = rnd({2, 3, 7, 5}, 11, dt), k = rnd({2, 3, 9, 5}, 12, dt), v = rnd({2, 3, 9, 6}, 13, dt);
  Tensor mask = rnd({7, 9}, 14, dt);
  expect_parity_n([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); }, {q, k, v},
                  tol(dt), "plain");
  expect_parity_n([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], t[3]); },
                  {q, k, v, mask}, tol(dt), "additive mask");
  Tensor q2 = rnd({2, 3, 9, 5}, 15, dt);
  expect_parity_n(
      [](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], Tensor(), /*is_causal=*/true); },
      {q2, k, v}, tol(dt), "causal");
}

TEST(CudaGpu, NormsMatchTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double t = tol(dt);
    Tensor x = add(mul(rnd({3, 6, 5, 7}, 21, dt).permute({0, 1, 3, 2}), 2.0), 0.5);  // [3, 6, 7, 5], a view
    Tensor w = add(rnd({6}, 22, dt), 1.0), b = rnd({6}, 23, dt);
    Tensor lw = add(rnd({7, 5}, 24, dt), 1.0), lb = rnd({7, 5}, 25, dt);
    expect_parity_n([](const TensorList& a) { return layer_norm(a[0], {7, 5}, a[1], a[2]); }, {x, lw, lb}, t,
                    "layer_norm, affine");
    expect_parity([](const Tensor& a) { return layer_norm(a, {5}); }, x, t, "layer_norm, plain");
    expect_parity_n([](const TensorList& a) { return group_norm(a[0], 3, a[1], a[2]); }, {x, w, b}, t,
                    "group_norm, affine");
    expect_parity([](const Tensor& a) { return group_norm(a, 2); }, x, t, "group_norm, plain");
    // [N, C] and [N, C, L]: the fused kernels with one spatial element, and with an odd count
    expect_parity_n([](const TensorList& a) { return group_norm(a[0], 3, a[1], a[2]); },
                    {add(rnd({11, 6}, 27, dt), 0.25), w, b}, t, "group_norm, [N, C]");
    expect_parity_n([](const TensorList& a) { return group_norm(a[0], 2, a[1], a[2]); },
                    {rnd({4, 6, 9}, 28, dt), w, b}, t, "group_norm, [N, C, L]");
    expect_parity_n(
        [](const TensorList& a) { return batch_norm(a[0], Tensor(), Tensor(), a[1], a[2], /*training=*/true, 0.1, 1e-5); },
        {x, w, b}, t, "batch_norm, training");
    Tensor x2 = rnd({11, 6}, 26, dt);  // [N, C]
    expect_parity_n(
        [](const TensorList& a) { return batch_norm(a[0], Tensor(), Tensor(), a[1], a[2], true, 0.1, 1e-5); },
        {x2, w, b}, t, "batch_norm, [N, C]");
  }
}

TEST(CudaGpu, FusedGroupNormSiluMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double t = tol(dt);
    // [3, 12, 7, 9] as a view; groups of 4 and 12 channels; spatial 63 (not a warp multiple)
    Tensor x = add(mul(rnd({3, 12, 9, 7}, 51, dt).transpose(2, 3), 2.0), 0.3);
    Tensor w = add(rnd({12}, 52, dt), 1.0), b = rnd({12}, 53, dt), tb = rnd({3, 12}, 54, dt);
    for (int64_t G : {3, 1}) {
      auto full = [G](const TensorList& a) { return group_norm_silu(a[0], G, a[1], a[2], a[3]); };
      expect_first_order_parity(full, {x, w, b, tb}, t, "fused backward, everything");
      expect_parity_n(full, {x, w, b, tb}, t, "second order (composite backward)");
      auto plain = [G](const TensorList& a) { return group_norm_silu(a[0], G, Tensor(), Tensor(), Tensor(), 1e-5, false); };
      expect_first_order_parity(plain, {x}, t, "fused backward, plain group norm");
      expect_first_order_parity([G](const TensorList& a) { return group_norm(a[0], G, a[1], a[2]); }, {x, w, b}, t,
                                "group_norm");
    }
    // H*W a multiple of 4 (the forward's 16-byte vectors, 2 doubles in f64), groups of 2 and 6
    // channels, the time bias
    Tensor xv = add(mul(rnd({3, 12, 4, 6}, 58, dt), 1.5), 0.2), tv = rnd({3, 12}, 59, dt);
    for (int64_t G : {6, 2}) {
      auto full = [G](const TensorList& a) { return group_norm_silu(a[0], G, a[1], a[2], a[3]); };
      expect_first_order_parity(full, {xv, w, b, tv}, t, "vectors, everything");
    }
    // the same values one element into their GPU buffer: a vector there would be misaligned,
    // so the forward takes one element at a time
    {
      Tensor buf = rnd({1 + xv.numel()}, 60, dt).to(kGpu);
      buf.slice(0, 1, 1 + xv.numel()).copy_(xv.reshape({-1}).to(kGpu));
      Tensor shifted = buf.slice(0, 1, 1 + xv.numel()).reshape(xv.sizes());
      ASSERT_TRUE(shifted.is_contiguous());
      ASSERT_NE(reinterpret_cast<uintptr_t>(shifted.device_data()) % 16, 0u);
      shifted.requires_grad_(true);
      Tensor xc = xv.detach().requires_grad_(true);
      Tensor y_gpu = group_norm_silu(shifted, 6, w.to(kGpu), b.to(kGpu), tv.to(kGpu));
      Tensor y_cpu = group_norm_silu(xc, 6, w, b, tv);
      EXPECT_LT(rel_diff(y_gpu, y_cpu), t) << "misaligned forward";
      Tensor u = rnd(xv.sizes(), 61, dt);
      TensorList gg = grad({mul(y_gpu, u.to(kGpu)).sum()}, {shifted}), gc = grad({mul(y_cpu, u).sum()}, {xc});
      EXPECT_LT(rel_diff(gg[0], gc[0]), t * 10) << "misaligned backward";
    }
    // a group too large for the shared-memory cache (the forward reads it twice)
    Tensor big = rnd({2, 4, 96, 97}, 55, dt);
    Tensor bw = add(rnd({4}, 56, dt), 1.0), bb = rnd({4}, 57, dt);
    expect_first_order_parity([](const TensorList& a) { return group_norm_silu(a[0], 1, a[1], a[2]); }, {big, bw, bb},
                              t, "uncached group");
  }
}

TEST(CudaGpu, BatchNormRunningStatisticsMatchTheCpu) {
  EMBER_REQUIRE_GPU();
  Tensor x = add(rnd({4, 3, 5, 6}, 31, DType::f64), 2.0);
  Tensor rm_c = rnd({3}, 32, DType::f64), rv_c = add(square(rnd({3}, 33, DType::f64)), 0.5);
  Tensor rm_g = rm_c.to(kGpu), rv_g = rv_c.to(kGpu);
  batch_norm(x, rm_c, rv_c, Tensor(), Tensor(), true, 0.3, 1e-5);
  batch_norm(x.to(kGpu), rm_g, rv_g, Tensor(), Tensor(), true, 0.3, 1e-5);
  EXPECT_LT(rel_diff(rm_g, rm_c), 1e-12);
  EXPECT_LT(rel_diff(rv_g, rv_c), 1e-12);
  // evaluation with those statistics, to second order
  expect_parity([&](const Tensor& a) {
    const bool gpu = a.device().is_cuda();
    return batch_norm(a, gpu ? rm_g : rm_c, gpu ? rv_g : rv_c, Tensor(), Tensor(), false, 0.1, 1e-5);
  }, x, 1e-12, "batch_norm, evaluation");
  // a non-positive running variance is refused on the GPU too
  Tensor bad = full({3}, -1.0, {.dtype = DType::f64, .device = kGpu});
  EXPECT_THROW(batch_norm(x.to(kGpu), rm_g, bad, Tensor(), Tensor(), false, 0.1, 1e-5), Error);
}

TEST(CudaGpu, DropoutDrawsTheCpuMask) {
  EMBER_REQUIRE_GPU();
  Tensor x = add(rnd({37, 53}, 41), 3.0);  // never zero, so a zero in the output is a dropped element
  Generator gc(7), gg(7);
  Tensor yc = dropout(x, 0.3, true, &gc), yg = dropout(x.to(kGpu), 0.3, true, &gg);
  EXPECT_LT(rel_diff(yg, yc), 1e-6);
  expect_parity([](const Tensor& a) {
    Generator g(9);
    return dropout(a, 0.4, true, &g);
  }, odd_input(42, DType::f64), 1e-12, "dropout");
  // its step alone, on a transposed view (odd_input), with a full mask and one broadcast along rows
  const Tensor mask = gt(rnd({37, 53}, 44), 0.0), row_mask = gt(rnd({53}, 46), 0.0);
  expect_parity([&](const Tensor& a) { return masked_scale(a, mask.to(a.device()), 0.6); },
                odd_input(43, DType::f64), 1e-12, "masked_scale");
  expect_parity([&](const Tensor& a) { return masked_scale(a, row_mask.to(a.device()), 1.7); },
                odd_input(45, DType::f64), 1e-12, "masked_scale, broadcast mask");
}

TEST(CudaGpu, BinaryCrossEntropyMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  Tensor p = uniform({13, 17}, 0.02, 0.98, {.dtype = DType::f64});
  Tensor target = uniform({13, 17}, 0, 1, {.dtype = DType::f64});
  expect_parity_n([](const TensorList& a) { return binary_cross_entropy(a[0], a[1], Reduction::none); },
                  {p, target}, 1e-12, "binary_cross_entropy");
  Tensor out_of_range = full({4}, 1.5, {.device = kGpu}), t4 = full({4}, 1.0, {.device = kGpu});
  EXPECT_THROW(binary_cross_entropy(out_of_range, t4), Error);
  Tensor nan_p = full({4}, NAN, {.device = kGpu});
  EXPECT_THROW(binary_cross_entropy(nan_p, t4), Error);
}

// Three steps of `make` on the same parameters on both devices; the parameters must agree.
template <typename MakeOpt>
void expect_optimizer_parity(const MakeOpt& make, const char* what) {
  SCOPED_TRACE(what);
  std::vector<Tensor> pc, pg;
  for (int i = 0; i < 40; ++i) {  // more than one launch's 32 tensors
    Tensor p = rnd({(i * 37) % 101 + 1}, 60 + i);
    pc.push_back(p.clone().requires_grad_(true));
    pg.push_back(p.to(kGpu).requires_grad_(true));
  }
  std::vector<Tensor> ps2;  // a third copy stepped through prepare_step + launch_step (the CUDA-graph path)
  for (const Tensor& p : pg) ps2.push_back(p.detach().clone().requires_grad_(true));
  auto oc = make(pc), og = make(pg), o2 = make(ps2);
  for (int step = 0; step < 3; ++step) {
    for (auto* o : {oc.get(), og.get(), o2.get()}) {
      o->zero_grad();
      const std::vector<Tensor>& ps = o->params();
      Tensor l = zeros({}, {.device = ps[0].device()});
      for (size_t i = 0; i < ps.size(); ++i) l = add(l, mul(square(ps[i]), static_cast<double>(i + 1)).sum());
      l.backward();
      o->lr *= 0.9;  // a schedule: the device scalars must follow it
      if (o == o2.get()) {
        o->prepare_step();
        o->launch_step();
      } else {
        o->step();
      }
    }
  }
  for (size_t i = 0; i < pc.size(); ++i) {
    EXPECT_LT(rel_diff(pg[i], pc[i]), 1e-5) << "param " << i;
    EXPECT_LT(rel_diff(ps2[i], pg[i]), 1e-7) << "param " << i << ", prepare_step + launch_step";
  }
}

TEST(CudaGpu, FusedOptimizersMatchTheCpu) {
  EMBER_REQUIRE_GPU();
  using P = std::vector<Tensor>;
  expect_optimizer_parity([](const P& p) { return std::make_unique<nn::Adam>(p, nn::AdamOptions{.lr = 1e-2, .weight_decay = 0.1}); },
                          "Adam");
  expect_optimizer_parity([](const P& p) { return std::make_unique<nn::AdamW>(p, nn::AdamOptions{.lr = 1e-2, .weight_decay = 0.1}); },
                          "AdamW");
  expect_optimizer_parity([](const P& p) { return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 1e-2}); }, "SGD");
  expect_optimizer_parity([](const P& p) {
    return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 1e-2, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  }, "SGD, momentum");
  expect_optimizer_parity([](const P& p) {
    return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 1e-2, .momentum = 0.9, .nesterov = true});
  }, "SGD, nesterov");
  expect_optimizer_parity([](const P& p) {
    return std::make_unique<nn::Adamax>(p, nn::AdamOptions{.lr = 1e-2, .weight_decay = 0.1});
  }, "Adamax");
}

TEST(CudaGpu, GradientClippingMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  std::vector<Tensor> pc, pg;
  for (int i = 0; i < 5; ++i) {
    Tensor p = rnd({7 + i, 3}, 70 + i);
    pc.push_back(p.clone().requires_grad_(true));
    pg.push_back(p.to(kGpu).requires_grad_(true));
  }
  for (std::vector<Tensor>* ps : {&pc, &pg}) {
    Tensor l = zeros({}, {.device = (*ps)[0].device()});
    for (const Tensor& p : *ps) l = add(l, mul(p, p).sum());
    l.backward();
  }
  const double nc = nn::clip_grad_norm_(pc, 0.5), ng = nn::clip_grad_norm_(pg, 0.5);
  EXPECT_NEAR(ng, nc, 1e-5 * nc);
  nn::clip_grad_value_(pc, 0.01);
  nn::clip_grad_value_(pg, 0.01);
  for (size_t i = 0; i < pc.size(); ++i) EXPECT_LT(rel_diff(pg[i].grad(), pc[i].grad()), 1e-5) << i;
}

TEST(CudaGpu, FactorizationsRoundTripThroughTheHost) {
  EMBER_REQUIRE_GPU();
  Tensor a = add(rnd({3, 5, 5}, 81, DType::f64), mul(eye(5, {.dtype = DType::f64}), 3.0));
  expect_parity([](const Tensor& m) { return inverse(m); }, a, 1e-12, "inverse");
  expect_parity([](const Tensor& m) { return slogdet(m).second; }, a, 1e-12, "slogdet");
  expect_parity([](const Tensor& m) { return det(m); }, a, 1e-12, "det");
  auto [P, L, U] = lu(a.to(kGpu));
  EXPECT_TRUE(U.device().is_cuda());
  EXPECT_LT(rel_diff(matmul(P, matmul(L, U)), a.to(kGpu)), 1e-12);
}

TEST(CudaGpu, RandintBernoulliRandpermGiveTheCpuNumbers) {
  EMBER_REQUIRE_GPU();
  for (auto [low, high] : {std::pair<int64_t, int64_t>{-5, 7}, {0, 1000003}}) {
    Generator gc(3), gg(3);
    Tensor c = randint(low, high, {1001}, {.dtype = DType::i64}, &gc);
    Tensor g = randint(low, high, {1001}, {.dtype = DType::i64, .device = kGpu}, &gg);
    EXPECT_EQ(g.to(Device::cpu()).to_vector<int64_t>(), c.to_vector<int64_t>());
    // the generator moved on by the same counters
    EXPECT_EQ(rand({5}, {}, &gg).to_vector<float>(), rand({5}, {}, &gc).to_vector<float>());
  }
  Generator gc(4), gg(4);
  Tensor c = randint(0, 9, {7, 3}, {.dtype = DType::f32}, &gc);
  Tensor g = randint(0, 9, {7, 3}, {.dtype = DType::f32, .device = kGpu}, &gg);
  EXPECT_EQ(g.dtype(), DType::f32);
  EXPECT_EQ(g.to(Device::cpu()).to_vector<float>(), c.to_vector<float>());
  Tensor p = uniform({9, 11}, 0, 1);
  Generator bc(5), bg(5);
  EXPECT_EQ(bernoulli(p.to(kGpu), &bg).to(Device::cpu()).to_vector<float>(), bernoulli(p, &bc).to_vector<float>());
  Generator pc(6), pg(6);
  EXPECT_EQ(randperm(50, {.dtype = DType::i64, .device = kGpu}, &pg).to(Device::cpu()).to_vector<int64_t>(),
            randperm(50, {.dtype = DType::i64}, &pc).to_vector<int64_t>());
}

}  // namespace
}  // namespace ember
