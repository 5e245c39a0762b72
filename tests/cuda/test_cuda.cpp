// The CUDA backend against the CPU. Tests that need a GPU skip, saying why, on a machine
// without one (or in a CPU-only build); the rest check what a CUDA build must do anywhere.
//
// Parity: each op runs on a random input on both devices and must agree within a tolerance
// stated per dtype: f64 to 1e-12 relative (the CUDA math library is within 2 ulp), f32 to 1e-5,
// TF32 matmuls to 2e-3 and BF16 to 2e-2 relative to the output's scale. First and second
// derivatives are compared the same way (the grads are taken on each device).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "ember/engine/cuda/runtime.h"
#include "ember/engine/precision.h"
#include "ember/models/dde/dde.h"
#include "ember/models/dde/trainer.h"
#include "ember/models/mlp.h"
#include "cuda_parity.h"
#if EMBER_CUDA_EMULATION
#include "emu/hooks.h"  // the emulator's launch counts
#endif

namespace ember {
namespace {

using test::rnd;
using test::traced;

// ---- anywhere ----

TEST(Cuda, ReportsWhetherItCanRun) {
  EXPECT_EQ(cuda::built(), EMBER_WITH_CUDA != 0);
  const int n = cuda::device_count();  // must not throw, with or without a driver
  EXPECT_GE(n, 0);
  EXPECT_EQ(cuda::available(), n > 0);
  if (!cuda::available()) EXPECT_FALSE(cuda::unavailable_reason().empty());
}

TEST(Cuda, NoGpuIsAClearError) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present: the no-GPU message cannot be provoked";
  try {
    Tensor t = zeros({3}, {.device = kGpu});
    FAIL() << "allocated on a GPU that is not there";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ones({2}).to(kGpu), Error);
}

TEST(Cuda, PrecisionSetting) {
  EXPECT_EQ(matmul_precision(), MatmulPrecision::highest);
  EXPECT_EQ(parse_matmul_precision("high"), MatmulPrecision::high);
  EXPECT_EQ(parse_matmul_precision("medium"), MatmulPrecision::medium);
  EXPECT_THROW(parse_matmul_precision("fast"), Error);
}

// ---- on a GPU ----

TEST(CudaGpu, CopiesEveryDtypeAndLayout) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i64, DType::i32, DType::u8, DType::boolean}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor src = mul(rnd({29, 31}, 1), 10.0).to(dt);
    Tensor view = src.t().slice(0, 3, 28, 2);  // strided, offset
    Tensor back = view.to(kGpu).to(Device::cpu());
    EXPECT_EQ(rel_diff(back.to(DType::f64), view.to(DType::f64)), 0.0);
    // a strided view on the GPU, made contiguous there, then cast there
    Tensor g = src.to(kGpu).t().slice(0, 3, 28, 2).contiguous().to(DType::f64);
    EXPECT_EQ(rel_diff(g, view.to(DType::f64)), 0.0);
  }
}

// cat of dense pieces on the GPU: one launch per 8 pieces, each moving the widest word the
// widths and pointers allow (16 bytes down to 1), bit for bit the CPU's, along every dim, with
// empty pieces and an offset view; a strided piece or mixed dtypes take a copy per piece.
TEST(CudaGpu, CatCopiesItsPiecesInOneLaunchLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  auto launches = [](const std::function<void()>& f) -> int64_t {
#if EMBER_CUDA_EMULATION
    const emu::WorkCounts before = emu::work_counts();
    f();
    return static_cast<int64_t>(emu::work_counts().kernels - before.kernels);
#else
    f();
    return -1;  // only the emulator counts launches
#endif
  };
  for (DType dt : {DType::f32, DType::f64, DType::u8, DType::bf16}) {
    for (int64_t dim = 0; dim < 3; ++dim) {
      for (int n : {2, 3, 9}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " dim " + std::to_string(dim) + ", " + std::to_string(n) +
                     " pieces");
        TensorList cpu, gpu;
        for (int i = 0; i < n; ++i) {
          Shape shape{5, 3, 7};
          shape[dim] = i == 1 ? 0 : 1 + (5 * i) % 4;  // an empty piece; odd widths
          cpu.push_back(mul(add(abs(rnd(shape, 90 + i)), 0.5), 50.0).to(dt));  // positive, for u8
          gpu.push_back(cpu.back().to(kGpu));
        }
        // an offset view: its pointer is not aligned like a fresh tensor's
        Tensor big = mul(add(abs(rnd({5, 11, 7}, 89)), 0.5), 50.0).to(dt);
        cpu.push_back(big.reshape({-1}).slice(0, 1, 5 * 3 * 7 + 1).reshape({5, 3, 7}));
        gpu.push_back(big.to(kGpu).reshape({-1}).slice(0, 1, 5 * 3 * 7 + 1).reshape({5, 3, 7}));
        Tensor on_gpu;
        const int64_t k = launches([&] { on_gpu = cat(gpu, dim); });
        if (k >= 0) EXPECT_EQ(k, (n + 7) / 8);  // n pieces that are not empty, 8 per launch
        EXPECT_EQ(rel_diff(on_gpu.to(Device::cpu()).to(DType::f64), cat(cpu, dim).to(DType::f64)), 0.0);
      }
    }
  }
  // rows of 32 bytes that would take 16-byte words, but one piece starts 4 bytes off: 4-byte words
  {
    Tensor a = rnd({6, 8}, 95), big = rnd({6 * 8 + 1}, 96);
    Tensor b = big.slice(0, 1, 6 * 8 + 1).reshape({6, 8});
    Tensor on_gpu = cat({a.to(kGpu), big.to(kGpu).slice(0, 1, 6 * 8 + 1).reshape({6, 8})}, 1);
    EXPECT_EQ(rel_diff(on_gpu.to(Device::cpu()), cat({a, b}, 1)), 0.0);
  }
  // a transposed piece: the copy per piece
  Tensor a = rnd({6, 4}, 97), b = rnd({4, 6}, 98);
  Tensor on_gpu;
  const int64_t k = launches([&] { on_gpu = cat({a.to(kGpu), b.to(kGpu).t()}, 1); });
  if (k >= 0) EXPECT_EQ(k, 2);
  EXPECT_EQ(rel_diff(on_gpu.to(Device::cpu()), cat({a, b.t()}, 1)), 0.0);
}

TEST(CudaGpu, UnaryOpsMatchTheCpuToSecondOrder) {
  EMBER_REQUIRE_GPU();
  using F = std::function<Tensor(const Tensor&)>;
  const std::vector<std::pair<const char*, F>> ops = {
      {"neg", [](const Tensor& x) { return neg(x); }},
      {"exp", [](const Tensor& x) { return exp(x); }},
      {"log", [](const Tensor& x) { return log(add(abs(x), 0.5)); }},
      {"log1p", [](const Tensor& x) { return log1p(abs(x)); }},
      {"expm1", [](const Tensor& x) { return expm1(x); }},
      {"sqrt", [](const Tensor& x) { return sqrt(add(abs(x), 0.5)); }},
      {"rsqrt", [](const Tensor& x) { return rsqrt(add(abs(x), 0.5)); }},
      {"sin", [](const Tensor& x) { return sin(x); }},
      {"cos", [](const Tensor& x) { return cos(x); }},
      {"tanh", [](const Tensor& x) { return tanh(x); }},
      {"erf", [](const Tensor& x) { return erf(x); }},
      {"square", [](const Tensor& x) { return square(x); }},
      {"reciprocal", [](const Tensor& x) { return reciprocal(add(abs(x), 0.5)); }},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }},
      {"logsigmoid", [](const Tensor& x) { return logsigmoid(x); }},
      {"silu", [](const Tensor& x) { return silu(x); }},
      {"gelu", [](const Tensor& x) { return gelu(x); }},
      {"elu", [](const Tensor& x) { return elu(x, 0.7); }},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.1); }},
      {"softplus", [](const Tensor& x) { return softplus(x, 1.5, 2.0); }},
      {"pow", [](const Tensor& x) { return pow(add(abs(x), 0.5), 1.7); }},
      {"clamp", [](const Tensor& x) { return clamp(x, -1.0, 0.8); }},
      {"scalars", [](const Tensor& x) { return rsub(mul(add(x, 0.3), 2.5), 1.0); }},
  };
  for (DType dt : {DType::f64, DType::f32})
    for (const auto& [name, f] : ops) expect_parity(f, odd_input(7, dt), tol(dt) * (dt == DType::f32 ? 10 : 1), name);
}

TEST(CudaGpu, BinaryOpsBroadcastAndMatchTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor b_cpu = rnd({1, 53}, 3, dt);  // broadcast along dim 0 of the [37, 53] view
    using F = std::function<Tensor(const Tensor&, const Tensor&)>;
    const std::vector<std::pair<const char*, F>> ops = {
        {"add", [](const Tensor& x, const Tensor& y) { return add(x, y); }},
        {"sub", [](const Tensor& x, const Tensor& y) { return sub(x, y); }},
        {"mul", [](const Tensor& x, const Tensor& y) { return mul(x, y); }},
        {"div", [](const Tensor& x, const Tensor& y) { return div(x, add(abs(y), 0.5)); }},
        {"pow", [](const Tensor& x, const Tensor& y) { return pow(add(abs(x), 0.5), y); }},
        {"maximum", [](const Tensor& x, const Tensor& y) { return maximum(x, y); }},
        {"minimum", [](const Tensor& x, const Tensor& y) { return minimum(x, y); }},
        {"softplus_backward", [](const Tensor& x, const Tensor& y) { return softplus_backward(x, y, 1.0, 20.0); }},
        {"softplus_curvature",  // three operands: x, the broadcast y, and a third built from both
         [](const Tensor& x, const Tensor& y) { return softplus_curvature(x, y, sub(x, y), 1.5, 2.0); }},
        {"where", [](const Tensor& x, const Tensor& y) { return where(gt(x, y), x, mul(y, 2.0)); }},
    };
    for (const auto& [name, f] : ops) {
      Tensor bg = b_cpu.to(kGpu);
      expect_parity([&, f = f](const Tensor& x) { return f(x, x.device().is_cuda() ? bg : b_cpu); }, odd_input(5, dt),
                    tol(dt) * (dt == DType::f32 ? 10 : 1), name);
    }
  }
  // integers and comparisons
  Tensor a = randint(-5, 5, {17, 9}), b = randint(-5, 5, {9});
  EXPECT_EQ(rel_diff(add(a.to(kGpu), b.to(kGpu)).to(DType::f64), add(a, b).to(DType::f64)), 0.0);
  EXPECT_EQ(rel_diff(mul(a.to(kGpu), b.to(kGpu)).to(DType::f64), mul(a, b).to(DType::f64)), 0.0);
  using Cmp = Tensor (*)(const Tensor&, const Tensor&);
  for (Cmp c : {Cmp(&lt), Cmp(&le), Cmp(&gt), Cmp(&ge), Cmp(&eq), Cmp(&ne)}) {
    EXPECT_EQ(rel_diff(c(a.to(kGpu), b.to(kGpu)).to(DType::f64), c(a, b).to(DType::f64)), 0.0);
  }
}

// softplus_backward's backward wanting both gradients of contiguous operands of one shape takes
// the fused two-output kernel (softplus_double_backward); its outputs and their own gradients
// match the CPU's. 37 x 53 elements: not a multiple of the block.
TEST(CudaGpu, SoftplusDoubleBackwardMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor g = rnd({37, 53}, 31, dt).to(d).requires_grad_(true), a = rnd({37, 53}, 32, dt).to(d).requires_grad_(true);
      Tensor u = rnd({37, 53}, 33, dt).to(d);
      TraceScope trace;
      TensorList d1 = grad({softplus_backward(g, a, 1.5, 2.0)}, {g, a}, {u}, {.create_graph = true});
      EXPECT_EQ(traced(trace.events(), "softplus_double_backward"), 1);
      TensorList d2 = grad({add(mul(d1[0], d1[0]).sum(), mul(d1[1], d1[1]).sum())}, {g, a});
      return TensorList{d1[0].detach(), d1[1].detach(), d2[0], d2[1]};
    };
    TensorList c = run(Device::cpu()), gpu = run(kGpu);
    for (size_t i = 0; i < c.size(); ++i)
      EXPECT_LT(rel_diff(gpu[i], c[i]), tol(dt) * (i < 2 ? 10 : 100)) << "output " << i;
  }
}

// A weight gradient meeting another on the GPU: the GEMM adds into the waiting one (cuBLAS with
// beta = 1, "matmul_accumulate"); the result matches the CPU's.
TEST(CudaGpu, GemmAddsIntoAWaitingGradientLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor x = rnd({37, 29}, 41, dt).to(d), y = rnd({19, 29}, 42, dt).to(d), z = rnd({23, 29}, 46, dt).to(d);
      Tensor u1 = rnd({37, 13}, 43, dt).to(d), u2 = rnd({19, 13}, 44, dt).to(d), u3 = rnd({23, 13}, 47, dt).to(d);
      Tensor w = rnd({29, 13}, 45, dt).to(d).requires_grad_(true);
      TraceScope trace;
      add(add(sum(mul(matmul(x, w), u1)), sum(mul(matmul(y, w), u2))), sum(mul(linear(z, w.t()), u3))).backward();
      EXPECT_GE(traced(trace.events(), "matmul_accumulate"), 1);
      return w.grad();
    };
    EXPECT_LT(rel_diff(run(kGpu), run(Device::cpu())), tol(dt) * 10);
  }
}

// A bias gradient added where one waits, on the GPU: the column-sum kernel adds into acc for 32
// columns or more; narrower ones take the row kernel and an add. Equal to the CPU's.
TEST(CudaGpu, SumRowsIntoMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32})
    for (const Shape& shape : {Shape{1001, 37}, Shape{2048, 32}, Shape{77, 5}}) {
      SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dt));
      Tensor m = rnd(shape, 48, dt), acc = rnd({shape[1]}, 49, dt);
      Tensor gpu = sum_rows_into(acc.to(kGpu), m.to(kGpu)), cpu = sum_rows_into(acc.clone(), m);
      EXPECT_LT(rel_diff(gpu, cpu), tol(dt));
      Tensor mt = m.t().contiguous().to(kGpu).t();  // m's values, not contiguous
      EXPECT_LT(rel_diff(sum_rows_into(acc.to(kGpu), mt), cpu), tol(dt)) << "a transposed m";
    }
}

// A parameter's .grad lent to the next backward on the GPU: the GEMM and the column sum add into
// it (cuBLAS with beta = 1, the accumulating sum kernel), no add after; values as on the CPU.
TEST(CudaGpu, LentLeafGradsTakeTheGemmAndTheSumLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor w = rnd({45, 29}, 71, dt).to(d).requires_grad_(true), b = rnd({45}, 72, dt).to(d).requires_grad_(true);
      Tensor x1 = rnd({37, 29}, 73, dt).to(d), u1 = rnd({37, 45}, 74, dt).to(d);
      Tensor x2 = rnd({19, 29}, 75, dt).to(d), u2 = rnd({19, 45}, 76, dt).to(d);
      sum(mul(linear(x1, w, b), u1)).backward();
      TraceScope trace;
      sum(mul(linear(x2, w, b), u2)).backward();
      EXPECT_EQ(traced(trace.events(), "matmul_accumulate"), 1);
      EXPECT_EQ(traced(trace.events(), "sum_accumulate"), 1);
      EXPECT_EQ(traced(trace.events(), "add_accumulate"), 0);
      return TensorList{w.grad(), b.grad()};
    };
    TensorList gpu = run(kGpu), cpu = run(Device::cpu());
    for (size_t i = 0; i < gpu.size(); ++i) EXPECT_LT(rel_diff(gpu[i], cpu[i]), tol(dt) * 10) << "gradient " << i;
  }
}

// A linear layer's weight and bias gradients from one cuBLASLt call on the GPU (the GEMM's
// bias-gradient epilogue): new, and with the weight's gradient added into one already waiting
// for it (the same weight used again later in the graph); not under create_graph, where the
// two recorded ops run. Under the emulator the fused call must run; on a GPU whose cuBLASLt
// offers no algorithm for it, the GEMM and the column sum run instead, with the same values.
TEST(CudaGpu, LinearWeightAndBiasGradientsFromOneGemmLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    for (bool weight_used_again : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (weight_used_again ? ", weight used again" : ", one use"));
      int64_t fused = 0;
      auto run = [&](const Device& d) {
        Tensor w = rnd({45, 29}, 81, dt).to(d).requires_grad_(true), b = rnd({45}, 82, dt).to(d).requires_grad_(true);
        Tensor x = rnd({37, 29}, 83, dt).to(d), u = rnd({37, 45}, 84, dt).to(d);
        Tensor x3 = rnd({23, 45}, 85, dt).to(d), v = rnd({23, 29}, 86, dt).to(d);
        Tensor loss = sum(mul(linear(x, w, b), u));
        if (weight_used_again) loss = add(loss, sum(mul(matmul(x3, w), v)));  // its backward runs first
        TraceScope trace;
        loss.backward();
        if (d.is_cuda()) {
          const auto& ev = trace.events();
          fused = traced(ev, weight_used_again ? "matmul_bias_grad_accumulate" : "matmul_bias_grad");
          if (fused) EXPECT_EQ(traced(ev, "sum") + traced(ev, "sum_accumulate"), 0);
          else EXPECT_EQ(traced(ev, "sum"), 1);  // the fallback: the column sum
        }
        return TensorList{w.grad(), b.grad()};
      };
      TensorList gpu = run(kGpu), cpu = run(Device::cpu());
      for (size_t i = 0; i < gpu.size(); ++i) EXPECT_LT(rel_diff(gpu[i], cpu[i]), tol(dt) * 10) << "gradient " << i;
#if EMBER_CUDA_EMULATION
      EXPECT_EQ(fused, 1) << "the emulated cuBLASLt offers the bias-gradient epilogue";
#else
      if (!fused) std::printf("[ note ] cuBLASLt offered no bias-gradient epilogue for %s\n", dtype_name(dt));
#endif
    }
  }
  // Under create_graph the two recorded ops run, so the gradients differentiate again.
  Tensor w = rnd({45, 29}, 81, DType::f64).to(kGpu).requires_grad_(true);
  Tensor b = rnd({45}, 82, DType::f64).to(kGpu).requires_grad_(true);
  Tensor x = rnd({37, 29}, 83, DType::f64).to(kGpu), u = rnd({37, 45}, 84, DType::f64).to(kGpu);
  TraceScope trace;
  TensorList g = grad({sum(mul(square(linear(x, w, b)), u))}, {w, b}, {}, {.create_graph = true});
  EXPECT_EQ(traced(trace.events(), "matmul_bias_grad"), 0);
  EXPECT_GE(traced(trace.events(), "sum"), 1);
  EXPECT_TRUE(g[1].requires_grad());
}

// Under create_graph, a DenseNet layer's input gradient (dZ W plus the slice cat's backward left
// for it) is one recorded addmm, on the GPU one cuBLASLt call reading the slice and writing a new
// matrix; the score and its gradient equal the CPU's.
TEST(CudaGpu, AddmmUnderCreateGraphLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor x = rnd({37, 29}, 71, dt).to(d).requires_grad_(true);
      Tensor w = rnd({13, 29}, 72, dt).to(d).requires_grad_(true), b = rnd({13}, 73, dt).to(d).requires_grad_(true);
      Tensor u = rnd({37, 42}, 74, dt).to(d), v = rnd({37, 29}, 75, dt).to(d);
      Tensor e = sum(mul(softplus(cat({linear(x, w, b), x}, 1)), u));
      Tensor score;
      {
        TraceScope trace;
        score = grad({e}, {x}, {}, {.create_graph = true})[0];
        EXPECT_EQ(traced(trace.events(), "addmm"), 1);
      }
      TensorList g = grad({sum(mul(score, v))}, {x, w, b});
      return TensorList{score.detach(), g[0], g[1], g[2]};
    };
    TensorList gpu = run(kGpu), cpu = run(Device::cpu());
    for (size_t i = 0; i < gpu.size(); ++i) EXPECT_LT(rel_diff(gpu[i], cpu[i]), tol(dt) * 100) << "output " << i;
  }
}

// softplus's backward added in place into a gradient waiting for its input, on the GPU.
TEST(CudaGpu, SoftplusBackwardAddsIntoAWaitingGradientLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor h = rnd({37, 53}, 51, dt).to(d).requires_grad_(true);
      Tensor u = rnd({37, 53}, 52, dt).to(d), v = rnd({37, 53}, 53, dt).to(d);
      TraceScope trace;
      Tensor through_softplus = sum(mul(softplus(h, 1.5, 2.0), u));  // recorded first: runs last
      Tensor direct = sum(mul(h, v));
      add(through_softplus, direct).backward();
      EXPECT_EQ(traced(trace.events(), "softplus_backward_accumulate"), 1);
      return h.grad();
    };
    EXPECT_LT(rel_diff(run(kGpu), run(Device::cpu())), tol(dt) * 10);
    // the incoming gradient a strided slice of cat's (a DenseNet layer): the strided kernel
    auto through_cat = [&](const Device& d) {
      Tensor h = rnd({37, 53}, 54, dt).to(d).requires_grad_(true);
      Tensor u = rnd({37, 60}, 55, dt).to(d), v = rnd({37, 53}, 56, dt).to(d), rest = rnd({37, 7}, 57, dt).to(d);
      TraceScope trace;
      Tensor through_softplus = sum(mul(cat({softplus(h, 1.5, 2.0), rest}, 1), u));
      Tensor direct = sum(mul(h, v));
      add(through_softplus, direct).backward();
      EXPECT_EQ(traced(trace.events(), "softplus_backward_accumulate"), 1);
      return h.grad();
    };
    EXPECT_LT(rel_diff(through_cat(kGpu), through_cat(Device::cpu())), tol(dt) * 10);
  }
}

// Gradients added in place on the GPU as on the CPU: a DenseNet's input gradients by the GEMM
// into their row-strided slice of the features' gradient (cuBLAS with ldc = the row stride),
// split parts into one slot (add_accumulate, the binary kernel with its output aliasing its
// first input), a parameter's .grad across two backward calls.
TEST(CudaGpu, GradientsAddInPlaceLikeTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto run = [&](const Device& d) {
      Tensor x = rnd({37, 29}, 61, dt).to(d).requires_grad_(true);
      Tensor w1 = rnd({13, 29}, 62, dt).to(d).requires_grad_(true), b1 = rnd({13}, 63, dt).to(d).requires_grad_(true);
      Tensor w2 = rnd({11, 42}, 64, dt).to(d).requires_grad_(true), u = rnd({37, 53}, 65, dt).to(d);
      int64_t adds = 0, gemm_adds = 0, in_place_adds = 0;
      for (int call = 0; call < 2; ++call) {  // the second call adds into each .grad
        Tensor x1 = cat({softplus(linear(x, w1, b1)), x}, 1);   // [37, 42]
        Tensor x2 = cat({softplus(linear(x1, w2)), x1}, 1);     // [37, 53]
        TensorList parts = split(x2, {20, 33}, 1);
        Tensor loss = add(sum(mul(parts[0], u.slice(1, 0, 20))), sum(mul(softplus(parts[1]), u.slice(1, 20, 53))));
        TraceScope trace;
        loss.backward();
        adds += traced(trace.events(), "add");
        gemm_adds += traced(trace.events(), "matmul_accumulate");
        in_place_adds += traced(trace.events(), "add_accumulate");
      }
      EXPECT_EQ(adds, 0);
      EXPECT_GE(gemm_adds, 4);
      EXPECT_GE(in_place_adds, 2);
      return TensorList{x.grad(), w1.grad(), b1.grad(), w2.grad()};
    };
    TensorList gpu = run(kGpu), cpu = run(Device::cpu());
    for (size_t i = 0; i < gpu.size(); ++i) EXPECT_LT(rel_diff(gpu[i], cpu[i]), tol(dt) * 10) << "gradient " << i;
  }
}

TEST(CudaGpu, ReductionsMatchTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double t = tol(dt) * 10;
    expect_parity([](const Tensor& x) { return x.sum({0}); }, odd_input(11, dt), t, "sum dim 0");
    expect_parity([](const Tensor& x) { return x.sum({1}, true); }, odd_input(11, dt), t, "sum dim 1 keepdim");
    expect_parity([](const Tensor& x) { return x.mean(); }, odd_input(11, dt), t, "mean");
    expect_parity([](const Tensor& x) { return logsumexp(x, {1}); }, odd_input(11, dt), t, "logsumexp");
    expect_parity([](const Tensor& x) { return var(x, {0}); }, odd_input(11, dt), t, "var");
    expect_parity([](const Tensor& x) { return std(x, {1}); }, odd_input(11, dt), t, "std");
    expect_parity([](const Tensor& x) { return amax(x, {1}); }, odd_input(11, dt), t, "amax");
    expect_parity([](const Tensor& x) { return max(x, 0).first; }, odd_input(11, dt), t, "max(dim)");
    Tensor x = odd_input(12, dt);
    EXPECT_EQ(rel_diff(argmax(x.to(kGpu), 1).to(DType::f64), argmax(x, 1).to(DType::f64)), 0.0);
    // contiguous [rows, cols >= 32]: the in-place column-sum kernel
    Tensor wide = rnd({301, 67}, 13, dt);
    EXPECT_LT(rel_diff(wide.to(kGpu).sum({0}), wide.sum({0})), t);
    // one long row: the split sum
    Tensor big = rnd({3 << 18}, 14, dt);
    EXPECT_LT(rel_diff(big.to(kGpu).sum(), big.sum()), t);
  }
}

TEST(CudaGpu, MatmulMatchesTheCpuInEachPrecision) {
  EMBER_REQUIRE_GPU();
  Tensor a = rnd({3, 1, 33, 47}, 21, DType::f64), b = rnd({2, 47, 29}, 22, DType::f64);
  expect_parity([&](const Tensor& x) { return matmul(x, x.device().is_cuda() ? b.to(kGpu) : b); }, a, 1e-12,
                "batched f64");
  Tensor w = rnd({19, 53}, 23), bias = rnd({19}, 24), x = odd_input(25, DType::f32);
  const Tensor ref = linear(x.to(DType::f64), w.to(DType::f64), bias.to(DType::f64));
  for (auto [p, tolerance] : {std::pair{MatmulPrecision::highest, 1e-5}, std::pair{MatmulPrecision::high, 2e-3},
                              std::pair{MatmulPrecision::medium, 2e-2}}) {
    SCOPED_TRACE(precision_name(p));
    set_matmul_precision(p);
    EXPECT_LT(rel_diff(linear(x.to(kGpu), w.to(kGpu), bias.to(kGpu)), ref), tolerance);
    EXPECT_LT(rel_diff(matmul(x.to(kGpu), w.t().to(kGpu)), matmul(x, w.t())), tolerance);
  }
  set_matmul_precision(MatmulPrecision::highest);
}

// linear with a bias runs one cuBLASLt call with the bias in its epilogue; operands at odd
// offsets (4-byte aligned views) and transposed layouts must plan algorithms that accept them.
TEST(CudaGpu, LinearWithTheBiasEpilogueMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor w = rnd({19, 53}, 31, dt), bias_storage = rnd({20}, 32, dt);
    Tensor bias = bias_storage.slice(0, 1, 20);  // an odd offset: not 16-byte aligned
    expect_parity_n([](const TensorList& t) { return linear(t[0], t[1], t[2]); }, {odd_input(33, dt), w, bias}, tol(dt),
                    "transposed input, offset bias");
    Tensor x = rnd({7, 54}, 34, dt).slice(1, 1, 54);  // rows of 53 at an odd offset
    expect_parity_n([](const TensorList& t) { return linear(t[0], t[1], t[2]); }, {x, w, bias}, tol(dt),
                    "offset input");
    expect_parity_n([](const TensorList& t) { return linear(t[0], t[1].t(), t[2]); }, {x, w.t().contiguous(), bias},
                    tol(dt), "transposed weight");
  }
}

// Copies between overlapping views of one buffer go through a temporary, as memmove would.
TEST(CudaGpu, OverlappingCopyIsLikeTheCpus) {
  EMBER_REQUIRE_GPU();
  Tensor c = rnd({100}, 35), g = c.to(kGpu);
  c.slice(0, 1, 100).copy_(c.slice(0, 0, 99));
  g.slice(0, 1, 100).copy_(g.slice(0, 0, 99));
  EXPECT_EQ(rel_diff(g, c), 0.0);
}

// linear with no input features: the bias rows (or zeros), as on the CPU.
TEST(CudaGpu, LinearWithoutInputFeatures) {
  EMBER_REQUIRE_GPU();
  Tensor x = zeros({4, 0}), w = zeros({3, 0}), b = rnd({3}, 36);
  EXPECT_EQ(rel_diff(linear(x.to(kGpu), w.to(kGpu), b.to(kGpu)), linear(x, w, b)), 0.0);
  EXPECT_EQ(rel_diff(linear(x.to(kGpu), w.to(kGpu), Tensor()), linear(x, w, Tensor())), 0.0);
}

TEST(CudaGpu, PhiloxGivesTheCpuNumbers) {
  EMBER_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gc(99), gg(99);
    Tensor uc = rand({1001}, {.dtype = dt}, &gc), ug = rand({1001}, {.dtype = dt, .device = kGpu}, &gg);
    EXPECT_EQ(rel_diff(ug, uc), 0.0) << "uniforms are bit-identical";
    // a range that is not a power of two: low + (high - low) u must not be fused on the GPU
    uc = uniform({1001}, 0.02, 0.98, {.dtype = dt}, &gc);
    ug = uniform({1001}, 0.02, 0.98, {.dtype = dt, .device = kGpu}, &gg);
    EXPECT_EQ(rel_diff(ug, uc), 0.0) << "uniform(0.02, 0.98) is bit-identical";
    Tensor nc = randn({999}, {.dtype = dt}, &gc), ng = randn({999}, {.dtype = dt, .device = kGpu}, &gg);
    EXPECT_LT(rel_diff(ng, nc), dt == DType::f32 ? 1e-5 : 1e-13) << "normals agree to a few ulp";
    EXPECT_EQ(gc.offset(), gg.offset());
  }
}

TEST(CudaGpu, FusedAdamMatchesTheCpu) {
  EMBER_REQUIRE_GPU();
  for (bool decoupled : {false, true}) {
    std::vector<Tensor> pc, pg;
    for (int i = 0; i < 40; ++i) {  // more than one launch's 32 tensors
      Tensor p = rnd({(i * 37) % 101 + 1}, 30 + i);
      pc.push_back(p.clone().requires_grad_(true));
      pg.push_back(p.to(kGpu).requires_grad_(true));
    }
    nn::AdamOptions o{.lr = 1e-2, .weight_decay = 0.1};
    nn::Adam oc(pc, o, decoupled), og(pg, o, decoupled);
    for (int step = 0; step < 3; ++step) {
      oc.zero_grad();
      og.zero_grad();
      Tensor lc = zeros({}), lg = zeros({}, {.device = kGpu});
      for (size_t i = 0; i < pc.size(); ++i) {
        lc = add(lc, mul(square(pc[i]), static_cast<double>(i + 1)).sum());
        lg = add(lg, mul(square(pg[i]), static_cast<double>(i + 1)).sum());
      }
      lc.backward();
      lg.backward();
      oc.step();
      og.step();
    }
    for (size_t i = 0; i < pc.size(); ++i) EXPECT_LT(rel_diff(pg[i], pc[i]), 1e-5) << "param " << i;
  }
}

TEST(CudaGpu, SteadyStateMakesNoDeviceMalloc) {
  EMBER_REQUIRE_GPU();
  if (!cuda::allocator_caches()) GTEST_SKIP() << "EMBER_CUDA_NO_CACHING is set: no cache to reuse";
  models::MLP net(2, 64, 3, 1);
  net.to(kGpu);
  nn::Adam opt(net.parameters(), {});
  auto step = [&] {
    Tensor x = randn({256, 2}, {.device = kGpu}).requires_grad_(true);
    Tensor s = grad(TensorList{sum(net.forward(x))}, TensorList{x}, {}, {.create_graph = true})[0];
    Tensor loss = square(s).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  step();
  step();
  const uint64_t before = cuda::memory_stats().device_mallocs;
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(cuda::memory_stats().device_mallocs, before);
  const auto s = cuda::memory_stats();
  EXPECT_GT(s.cache_hits, 0u);
  EXPECT_GE(s.peak_allocated, s.allocated);
  cuda::empty_cache();
  EXPECT_LE(cuda::memory_stats().reserved, s.reserved);
}

// EMBER_CUDA_NO_CACHING=1, read once per process, so the test runs itself again in a child
// process with it set: exact sizes, a cudaMalloc per allocation, a cudaFree per free.
TEST(CudaGpu, NoCachingAllocatesExactSizesAndFreesAtOnce) {
  EMBER_REQUIRE_GPU();
  const char* v = std::getenv("EMBER_CUDA_NO_CACHING");
  if (!(v && std::string(v) == "1")) {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string cmd = "EMBER_CUDA_NO_CACHING=1 '" + self +
                            "' --gtest_filter=CudaGpu.NoCachingAllocatesExactSizesAndFreesAtOnce > /dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << "the child run failed: " << cmd;
    return;
  }
  const auto before = cuda::memory_stats();
  {
    Tensor host = rnd({7, 3}, 41);
    Tensor a = host.to(kGpu);  // 84 bytes, not a 512-byte bin
    const auto held = cuda::memory_stats();
    EXPECT_EQ(held.allocated - before.allocated, 84u);
    EXPECT_EQ(held.reserved - before.reserved, 84u);
    EXPECT_GE(held.device_mallocs - before.device_mallocs, 1u);
    EXPECT_LT(rel_diff(mul(a, a).sum(), mul(host, host).sum()), 1e-6);
  }
  const auto after = cuda::memory_stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.reserved, before.reserved) << "every freed block went back to the driver";
  EXPECT_EQ(after.cache_hits, before.cache_hits);
}

// A second device: its own stream, allocator and current-device switches, copies between the
// devices both ways (contiguous and strided), and mixing them is an error. Skips with one GPU;
// tools/cuda_emu runs it with EMBER_EMU_DEVICES=2.
TEST(CudaGpu, SecondDeviceComputesAndCopiesAcross) {
  EMBER_REQUIRE_GPU();
  if (cuda::device_count() < 2)
    GTEST_SKIP() << "needs two GPUs, found " << cuda::device_count()
                 << " (under tools/cuda_emu: EMBER_EMU_DEVICES=2)";
  const Device d0 = Device::cuda(0), d1 = Device::cuda(1);
  Tensor x = rnd({37, 5}, 61), w = rnd({3, 5}, 62);
  Tensor a = x.to(d0), b = x.to(d1);
  Tensor y1 = linear(softplus(b), w.to(d1));
  EXPECT_EQ(y1.device(), d1);
  EXPECT_LT(rel_diff(y1, linear(softplus(x), w)), 1e-5);
  EXPECT_EQ(rel_diff(a.to(d1), x), 0.0) << "cuda:0 -> cuda:1";
  EXPECT_EQ(rel_diff(mul(b, 2.0).to(d0), mul(x, 2.0)), 0.0) << "cuda:1 -> cuda:0";
  EXPECT_EQ(rel_diff(b.t().to(d0), x.t()), 0.0) << "a strided view across";
  EXPECT_THROW(add(a, b), Error);
  // gradients on the second device, to second order
  Tensor xg = rnd({6, 5}, 63).to(d1).requires_grad_(true);
  Tensor wg = w.to(d1).requires_grad_(true);
  Tensor score = grad({sum(softplus(linear(xg, wg)))}, {xg}, {}, {.create_graph = true})[0];
  square(score).sum().backward();
  Tensor xc = rnd({6, 5}, 63).requires_grad_(true), wc = w.clone().requires_grad_(true);
  Tensor score_c = grad({sum(softplus(linear(xc, wc)))}, {xc}, {}, {.create_graph = true})[0];
  square(score_c).sum().backward();
  EXPECT_EQ(wg.grad().device(), d1);
  EXPECT_LT(rel_diff(wg.grad(), wc.grad()), 1e-4);
  EXPECT_GT(cuda::memory_stats(1).allocated, 0u);
}

// Every op has a CUDA path now; host code that still reads a GPU tensor's memory directly (a
// kernel call site missed, or user code) gets an error that says how to copy it.
TEST(CudaGpu, HostAccessToAGpuTensorIsAClearError) {
  EMBER_REQUIRE_GPU();
  Tensor x = rnd({2, 3}, 40).to(kGpu);
  try {
    (void)x.data<float>();
    FAIL() << "host access to GPU memory was allowed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(".to(Device::cpu())"), std::string::npos) << e.what();
  }
}

TEST(CudaGpu, MixedDevicesAreAnError) {
  EMBER_REQUIRE_GPU();
  EXPECT_THROW(add(ones({3}), ones({3}, {.device = kGpu})), Error);
  EXPECT_THROW(matmul(ones({3, 3}), ones({3, 3}, {.device = kGpu})), Error);
}

// The DDE objective (a loss on d s / dx, so double backward through every layer) trained for 30
// steps from one seed on each device: the curves agree to f32 noise.
TEST(CudaGpu, DdeTrainingFollowsTheCpuCurve) {
  EMBER_REQUIRE_GPU();
  auto curve = [](const Device& d) {
    manual_seed(3);
    models::MLP s(2, 64, 3, 1);
    s.to(d);
    nn::Adam opt(s.parameters(), {.lr = 1e-3});
    Generator g(5);
    std::vector<double> losses;
    for (int step = 0; step < 30; ++step) {
      Tensor x = add(mul(randn({256, 2}, {.device = d}, &g), 0.5), 1.0);
      Tensor loss = models::dde::dde_loss(s, x, 0.2, &g);
      opt.zero_grad();
      loss.backward();
      opt.step();
      losses.push_back(loss.item());
    }
    return losses;
  };
  const auto c = curve(Device::cpu()), g = curve(kGpu);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_NEAR(g[i], c[i], 1e-3 * std::abs(c[i])) << "step " << i;
}

TEST(Cuda, DdeTrainerRefusesAMissingGpu) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  models::dde::TrainConfig c;
  c.device = "cuda";
  try {
    models::dde::train(c);
    FAIL() << "trained on a GPU that is not there";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
