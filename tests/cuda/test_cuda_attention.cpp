// The fused (flash) attention kernels (kernels/cuda/flash_attention.cu) against the CPU composite:
// forward and first derivatives in each precision, and second order (the composite path the
// backward takes under create_graph). They skip without a GPU.
//
// Reference: the CPU composite in f64 on the same random inputs (never zeros). Tolerances are
// relative to the result's scale (max |ref|, at least 1; tests/cuda/cuda_parity.h):
//   exact f32 (precision `highest`)  forward 1e-5, first derivatives 1e-4
//   TF32      (precision `high`)     forward 2e-3, first derivatives 2e-2
//   BF16      (precision `medium`)   forward 2e-2, first derivatives 2e-1
//   second order (expect_parity_n, f32 CPU vs GPU, `highest`): 1e-5, 1e-4, 1e-3.
// Shapes: sequence lengths that are multiples of no tile (Tq = 77, Tk = 131, and the other way
// round), head dims 32, 48, 64, 128, 256 (and Dv != D), batch and heads broadcast, q/k/v given
// as transposed views, with and without an additive mask (with -inf entries), a bool mask,
// causal, and mask with causal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cuda_parity.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/precision.h"
#include "ember/ops/attention.h"

namespace ember {
namespace {

struct PrecisionScope {
  MatmulPrecision prev;
  explicit PrecisionScope(MatmulPrecision p) : prev(matmul_precision()) { set_matmul_precision(p); }
  ~PrecisionScope() { set_matmul_precision(prev); }
};

struct KernelScope {
  AttentionKernel prev;
  explicit KernelScope(AttentionKernel k) : prev(attention_kernel()) {
    set_attention_kernel(k);
  }
  ~KernelScope() { set_attention_kernel(prev); }
};

// The tensor-core precisions have two sets of kernels (registers, shared memory); exact has one.
std::vector<AttentionKernel> kernels_of(MatmulPrecision p) {
  if (p == MatmulPrecision::highest) return {AttentionKernel::register_accumulators};
  return {AttentionKernel::register_accumulators, AttentionKernel::shared_accumulators};
}
const char* kernel_name(AttentionKernel k) {
  return k == AttentionKernel::register_accumulators ? "register accumulators" : "shared-memory accumulators";
}

struct PrecisionCase {
  MatmulPrecision p;
  double tolerance;
};
constexpr PrecisionCase kPrecisions[] = {
    {MatmulPrecision::highest, 1e-5}, {MatmulPrecision::high, 2e-3}, {MatmulPrecision::medium, 2e-2}};

using AttnFn = std::function<Tensor(const TensorList&)>;

// f on the CPU in f64 (the reference) and on the GPU in f32, to first order (the fused backward).
void flash_parity(const AttnFn& f, const TensorList& inputs_f64, double tolerance, const std::string& what) {
  expect_first_order_parity(f, inputs_f64, tolerance, what, DType::f32);
}

// t stored [..., X, T] and handed to attention as its transpose [..., T, X]: a strided view.
Tensor stored_transposed(const Shape& s, uint64_t seed) {
  Shape st = s;
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return rnd(st, seed, DType::f64);
}
Tensor tr(const Tensor& t) { return t.transpose(-2, -1); }

// An additive [Tq, Tk] mask: normal values, about one entry in nine -inf.
Tensor additive_mask(int64_t Tq, int64_t Tk, uint64_t seed) {
  Tensor m = rnd({Tq, Tk}, seed, DType::f64);
  return where(le(rnd({Tq, Tk}, seed + 1, DType::f64), 1.2), m, -INFINITY);
}

Tensor on_like(const Tensor& m, const Tensor& like) {
  return m.dtype() == DType::boolean ? m.to(like.device()) : m.to(like.dtype()).to(like.device());
}

TEST(CudaGpu, FlashAttentionMatchesTheCpuInEachPrecision) {
  EMBER_REQUIRE_GPU();
  for (const PrecisionCase& pc : kPrecisions)
    for (AttentionKernel fk : kernels_of(pc.p)) {
      PrecisionScope scope(pc.p);
      KernelScope kernel(fk);
      SCOPED_TRACE(std::string(precision_name(pc.p)) + ", " + kernel_name(fk));
      for (int64_t D : {32, 48, 64, 128, 256}) {
        // The shared-memory set (no longer the default) at two head dims, for the emulator's time.
        if (fk == AttentionKernel::shared_accumulators && D != 48 && D != 128) continue;
        SCOPED_TRACE("D = " + std::to_string(D));
        const int64_t Tq = 77, Tk = 131;
        // q [2, 3, Tq, D]; k shared by the heads [2, 1, Tk, D]; v shared by the batch [3, Tk, D].
        Tensor q = stored_transposed({2, 3, Tq, D}, 100 + D), k = stored_transposed({2, 1, Tk, D}, 200 + D),
               v = stored_transposed({3, Tk, D}, 300 + D);
        Tensor mask = additive_mask(Tq, Tk, 400 + D);
        flash_parity([](const TensorList& t) { return scaled_dot_product_attention(tr(t[0]), tr(t[1]), tr(t[2])); },
                     {q, k, v}, pc.tolerance, "plain");
        flash_parity(
            [mask](const TensorList& t) {
              return scaled_dot_product_attention(tr(t[0]), tr(t[1]), tr(t[2]), on_like(mask, t[0]));
            },
            {q, k, v}, pc.tolerance, "additive mask with -inf");
        flash_parity(
            [](const TensorList& t) {
              return scaled_dot_product_attention(tr(t[0]), tr(t[1]), tr(t[2]), Tensor(), /*is_causal=*/true);
            },
            {q, k, v}, pc.tolerance, "causal");
        flash_parity(
            [mask](const TensorList& t) {
              return scaled_dot_product_attention(tr(t[0]), tr(t[1]), tr(t[2]), on_like(mask, t[0]), true, 0.3);
            },
            {q, k, v}, pc.tolerance, "mask, causal and an explicit scale");
        // Contiguous rows: the register kernels stage them by 16-byte copies. 130 queries and 70
        // keys: several query and key tiles, causal so that the tiles stop at different keys.
        Tensor qc = rnd({2, 130, D}, 500 + D, DType::f64), kc = rnd({2, 70, D}, 600 + D, DType::f64),
               vc = rnd({2, 70, D}, 700 + D, DType::f64);
        flash_parity([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], Tensor(), true); },
                     {qc, kc, vc}, pc.tolerance, "contiguous, causal");
      }
    }
}

TEST(CudaGpu, FlashAttentionOddLayouts) {
  EMBER_REQUIRE_GPU();
  for (const PrecisionCase& pc : kPrecisions)
    for (AttentionKernel fk : kernels_of(pc.p)) {
      PrecisionScope scope(pc.p);
      KernelScope kernel(fk);
      SCOPED_TRACE(std::string(precision_name(pc.p)) + ", " + kernel_name(fk));
      // More queries than keys, causal (top-left: query i sees keys 0..min(i, Tk - 1)).
      Tensor q = rnd({2, 131, 64}, 1, DType::f64), k = rnd({2, 77, 64}, 2, DType::f64),
             v = rnd({2, 77, 64}, 3, DType::f64);
      flash_parity([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], Tensor(), true); },
                   {q, k, v}, pc.tolerance, "Tq > Tk, causal, contiguous, one batch dim");
      // Dv != D, a bool mask broadcast over the batch [1, Tk] and 3 batch dims.
      Tensor q3 = rnd({2, 2, 3, 19, 48}, 4, DType::f64), k3 = rnd({2, 2, 3, 45, 48}, 5, DType::f64),
             v3 = rnd({2, 1, 3, 45, 40}, 6, DType::f64);
      Tensor keep = gt(rnd({1, 45}, 7, DType::f64), -1.0);  // ~84% kept
      flash_parity(
          [keep](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], on_like(keep, t[0])); },
          {q3, k3, v3}, pc.tolerance, "Dv != D, bool mask, three batch dims");
      // One query, one key; a 2-D problem with no batch dims.
      Tensor q1 = rnd({1, 32}, 8, DType::f64), k1 = rnd({1, 32}, 9, DType::f64), v1 = rnd({1, 32}, 10, DType::f64);
      flash_parity([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); }, {q1, k1, v1},
                   pc.tolerance, "Tq = Tk = 1");
    }
}

TEST(CudaGpu, FlashAttentionSecondOrderTakesTheComposite) {
  EMBER_REQUIRE_GPU();
  PrecisionScope scope(MatmulPrecision::highest);
  const DType dt = DType::f32;
  for (int64_t D : {32, 64}) {
    SCOPED_TRACE("D = " + std::to_string(D));
    Tensor q = rnd({2, 2, 19, D}, 20 + D, dt), k = rnd({2, 1, 23, D}, 21 + D, dt), v = rnd({2, 2, 23, D}, 22 + D, dt);
    Tensor mask = additive_mask(19, 23, 23 + D).to(dt);
    expect_parity_n([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); },
                    {q, k, v}, tol(dt), "plain");
    expect_parity_n(
        [mask](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], mask.to(t[0].device()), true); },
        {q, k, v}, tol(dt), "mask and causal");
    // A mask that wants its own gradient: the composite from the forward on.
    expect_parity_n([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2], t[3]); },
                    {q, k, v, rnd({19, 23}, 24, dt)}, tol(dt), "mask with a gradient");
  }
}

// Under `medium` the fused attention keeps q, k and v for its backward as BF16 copies
// (autograd/narrow_saved.h), as the U-Net's attention block hands them over: three views of one
// projection. The projection's f32 buffer is freed after the forward, and the first derivatives
// (the fused backward, both kernel sets) are bit for bit those of f32 leaves the kernel keeps as
// they are, since every product of the backward rounds q, k and v to BF16 as the copies did.
// The second derivative (the composite, through cuBLAS's BF16 products) reaches q, k and v
// through the widened copies' edges; it agrees to 5e-2 of its scale, not bit for bit, because
// the composite rounds q s (q times the softmax scale) to BF16, where the copy had rounded q
// first (measured under the emulator: 2.2e-2).
TEST(CudaGpu, FlashAttentionUnderMediumKeepsQkvInBf16) {
  EMBER_REQUIRE_GPU();
  PrecisionScope scope(MatmulPrecision::medium);
  for (AttentionKernel kernel : kernels_of(MatmulPrecision::medium)) {
    SCOPED_TRACE(kernel_name(kernel));
    KernelScope ks(kernel);
    const int64_t B = 2, T = 37, D = 48;
    Tensor a = rnd({B, 3, D, T}, 40).to(kGpu).requires_grad_(true);  // a conv's [B, 3C, HW]
    Tensor go = rnd({B, T, D}, 41).to(kGpu);
    auto views = [](const Tensor& p) { return p.permute({1, 0, 3, 2}); };  // [3, B, T, D]
    Tensor qkv = views(mul(a, 2.0));  // an activation; doubling is exact
    const std::weak_ptr<Storage> qkv_buffer = qkv.storage();
    Tensor q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
    Tensor out = scaled_dot_product_attention(q, k, v);
    TensorList narrowed = grad({out}, {q, k, v}, {go}, {.retain_graph = true});
    q = k = v = qkv = Tensor();
    EXPECT_TRUE(qkv_buffer.expired()) << "the attention kept the f32 projection";
    // The same values as f32 leaves, which the attention keeps as they are.
    Tensor leaves = views(mul(a, 2.0)).detach();
    TensorList ql{leaves.select(0, 0).detach().requires_grad_(true), leaves.select(0, 1).detach().requires_grad_(true),
                  leaves.select(0, 2).detach().requires_grad_(true)};
    TensorList kept = grad({scaled_dot_product_attention(ql[0], ql[1], ql[2])}, ql, {go});
    for (int i = 0; i < 3; ++i) EXPECT_EQ(rel_diff(narrowed[i], kept[i]), 0.0) << "dq, dk, dv: " << i;
    // Second order, d/d(q, k, v) of |dL/dq|^2 through the composite, with q, k and v twice
    // activations (narrowed) against the leaves they double (kept): the first is 8x the second.
    TensorList as;
    for (uint64_t i = 0; i < 3; ++i) as.push_back(rnd({B, T, D}, 42 + i).to(kGpu).requires_grad_(true));
    Tensor dq = grad({scaled_dot_product_attention(mul(as[0], 2.0), mul(as[1], 2.0), mul(as[2], 2.0))}, {as[0]},
                     {go}, {.create_graph = true})[0];
    TensorList h = grad({sum(mul(dq, dq))}, as);
    TensorList ls;
    for (int i = 0; i < 3; ++i) ls.push_back(mul(as[i], 2.0).detach().requires_grad_(true));
    Tensor dql = grad({scaled_dot_product_attention(ls[0], ls[1], ls[2])}, {ls[0]}, {go}, {.create_graph = true})[0];
    TensorList hl = grad({sum(mul(dql, dql))}, ls);
    for (int i = 0; i < 3; ++i) EXPECT_LT(rel_diff(h[i], mul(hl[i], 8.0)), 5e-2) << "second order, input " << i;
  }
}

TEST(CudaGpu, FlashAttentionForwardIsTheSameWhicheverBackwardFollows) {
  EMBER_REQUIRE_GPU();
  Tensor q = rnd({2, 37, 64}, 30).to(kGpu), k = rnd({2, 41, 64}, 31).to(kGpu), v = rnd({2, 41, 64}, 32).to(kGpu);
  Tensor a;
  {
    NoGrad no_grad;
    a = scaled_dot_product_attention(q, k, v);
  }
  Tensor qg = q.detach().requires_grad_(true);
  Tensor b = scaled_dot_product_attention(qg, k, v);
  EXPECT_EQ(rel_diff(b.detach(), a), 0.0);
  // The fused first-order backward and the create_graph composite give one gradient.
  Tensor g1 = grad(TensorList{b.sum()}, TensorList{qg}, {}, {.retain_graph = true})[0];
  Tensor g2 = grad(TensorList{b.sum()}, TensorList{qg}, {}, {.create_graph = true})[0];
  EXPECT_LT(rel_diff(g1, g2.detach()), 1e-5);
}

TEST(CudaGpu, FlashAttentionBlockedQueryIsNaNAsOnTheCpu) {
  EMBER_REQUIRE_GPU();
  Tensor q = rnd({5, 32}, 40), k = rnd({9, 32}, 41), v = rnd({9, 32}, 42);
  Tensor mask = rnd({5, 9}, 43);
  mask.select(0, 3).fill_(-INFINITY);  // query 3 sees no key
  Tensor c = scaled_dot_product_attention(q, k, v, mask);
  Tensor g = scaled_dot_product_attention(q.to(kGpu), k.to(kGpu), v.to(kGpu), mask.to(kGpu)).to(Device::cpu());
  auto cv = c.to_vector<double>(), gv = g.to_vector<double>();
  for (size_t i = 0; i < cv.size(); ++i) {
    EXPECT_EQ(std::isnan(cv[i]), std::isnan(gv[i])) << i;
    if (!std::isnan(cv[i])) EXPECT_NEAR(gv[i], cv[i], 1e-5) << i;
  }
}

// A query whose every key carries a large finite negative mask (padding masks of -1e4, -1e9):
// an ordinary softmax, not NaN (the online rescale must not overflow when every score so far is
// below -88), and a backward that keeps the row's sum apart from its shift (in f32, m + log l
// loses log l once |m| is large).
TEST(CudaGpu, FlashAttentionRowsUnderLargeNegativeMasks) {
  EMBER_REQUIRE_GPU();
  const int64_t Tq = 5, Tk = 77, D = 32;
  Tensor q = rnd({1, 1, Tq, D}, 60, DType::f64), k = rnd({1, 1, Tk, D}, 61, DType::f64),
         v = rnd({1, 1, Tk, D}, 62, DType::f64);
  for (const PrecisionCase& pc : kPrecisions)
    for (AttentionKernel fk : kernels_of(pc.p)) {
      PrecisionScope scope(pc.p);
      KernelScope kernel(fk);
      SCOPED_TRACE(std::string(precision_name(pc.p)) + ", " + kernel_name(fk));
      for (double level : {-100.0, -1e4}) {
        SCOPED_TRACE("row 2 masked at " + std::to_string(level));
        Tensor mask = zeros({Tq, Tk}, {.dtype = DType::f64});
        mask.select(0, 2).fill_(level);
        // f32 rounds the masked row's scores to the mask's spacing (1e-3 at -1e4): a looser
        // tolerance. The mask is a constant (a mask that requires grad takes the composite).
        flash_parity([&mask](const TensorList& t) {
          return scaled_dot_product_attention(t[0], t[1], t[2], on_like(mask, t[0]));
        }, {q, k, v}, std::max(pc.tolerance, level < -1000 ? 2e-3 : 1e-5), "masked row");
      }
    }
}

TEST(CudaGpu, AttentionBeyondTheFusedKernelTakesTheComposite) {
  EMBER_REQUIRE_GPU();
  // Head dim 300 (> 256): the composite of cuBLAS products and the softmax kernel.
  Tensor q = rnd({2, 13, 300}, 50), k = rnd({2, 17, 300}, 51), v = rnd({2, 17, 300}, 52);
  expect_parity_n([](const TensorList& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); }, {q, k, v},
                  tol(DType::f32), "D = 300");
}

}  // namespace
}  // namespace ember
