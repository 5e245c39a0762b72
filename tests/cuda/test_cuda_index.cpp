// The GPU paths of the indexing ops (index_select, gather, scatter_add, masked_fill, flip, pad,
// repeat, roll, tril/triu) and of the reductions that used to run on the CPU only (cumsum,
// prod, norm(p), and the any-zero / all-finite checks inside prod's and logsumexp's backwards),
// against the CPU: forward, first and second derivatives.
//
// Every test body takes the device to compare with the CPU. It runs twice: under CudaGpuIndex on
// the GPU (skipped without one), and under CudaIndexSelfCheck with the CPU standing in for the
// GPU, so that a machine without a GPU still runs every line of the test itself (shapes, index
// ranges, which inputs are differentiable, the error expectations) and only the comparison is
// owed to a GPU machine.
//
// Inputs: odd sizes ([7, 13, 5]), reached through permuted views so no op sees a contiguous
// tensor, never zero where a division could meet one; indices with repeats; negative dims.
// Tolerances as in cuda_parity.h: f64 1e-12, f32 1e-5 relative to the output's scale, 10x for
// first derivatives, 100x for second. Non-differentiable dtypes must match exactly.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "cuda_parity.h"

namespace ember {
namespace {

using Fn = std::function<Tensor(const TensorList& xs, const Device& d)>;

const std::vector<DType> kReal = {DType::f64, DType::f32};

Tensor i64(const std::vector<int64_t>& v, const Shape& s) { return from_vector(v, s); }

// A base tensor of shape [s2, s0, s1] whose elements have magnitude in (lo, hi) and a random
// sign (never zero); view(b) permutes it to [s0, s1, s2] with non-row-major strides.
Tensor base3(uint64_t seed, DType dt, const Shape& s = {7, 13, 5}, double lo = 0.5, double hi = 2.0) {
  Generator g(seed);
  Tensor mag = uniform({s[2], s[0], s[1]}, lo, hi, {.dtype = dt}, &g);
  Tensor u = uniform({s[2], s[0], s[1]}, -1.0, 1.0, {.dtype = dt}, &g);
  return where(gt(u, 0.0), mag, neg(mag));
}
Tensor view(const Tensor& b) { return b.permute({1, 2, 0}); }

// Random indices in [0, high) of shape s (repeats are all but certain at these sizes).
Tensor random_index(uint64_t seed, int64_t high, const Shape& s) {
  Generator g(seed);
  return randint(0, high, s, {.dtype = DType::i64}, &g);
}

// f on the CPU and on d agree to second order (floating inputs), or exactly (any other dtype).
void expect_same(const Fn& f, const TensorList& inputs, const Device& d, const std::string& what) {
  const DType dt = inputs.at(0).dtype();
  auto on_its_device = [&f](const TensorList& xs) { return f(xs, xs.at(0).device()); };
  if (dt == DType::f32 || dt == DType::f64) return expect_parity_n(on_its_device, inputs, tol(dt), what, d);
  SCOPED_TRACE(what);
  TensorList xs;
  for (const Tensor& x : inputs) xs.push_back(x.to(d));
  Tensor c = f(inputs, Device::cpu()), g = f(xs, d);
  EXPECT_EQ(c.dtype(), g.dtype());
  EXPECT_EQ(rel_diff(g.to(DType::f64), c.to(DType::f64)), 0.0) << "forward";
}

// Wraps a one-input op so its derivatives are not constant: sum(0.75 y^2) has a second
// derivative that runs the op's backward through its own backward.
Fn squared(std::function<Tensor(const Tensor& x, const Device& d)> op) {
  return [op](const TensorList& xs, const Device& d) {
    Tensor y = op(view(xs[0]), d);
    return mul(y, y);
  };
}

// Each test body runs on the GPU (skipped without one) and, as a check of the test itself,
// with the CPU in the GPU's place.
#define EMBER_INDEX_TEST(name) EMBER_GPU_AND_SELF_CHECK_TEST(CudaGpuIndex, CudaIndexSelfCheck, name)

// ---- index_select ----

EMBER_INDEX_TEST(IndexSelect) {
  const Tensor repeated = i64({0, 12, 3, 3, 7, 0, 12, 12, 5}, {9});
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(1, dt);
    expect_same(squared([&](const Tensor& x, const Device& dv) { return index_select(x, 1, repeated.to(dv)); }), {b},
                d, "dim 1, repeated indices");
    expect_same(squared([](const Tensor& x, const Device& dv) { return index_select(x, -1, i64({4, 0, 4, 2}, {4}).to(dv)); }),
                {b}, d, "dim -1");
    expect_same(squared([](const Tensor& x, const Device& dv) { return index_select(x, -3, i64({6, 6, 1}, {3}).to(dv)); }),
                {b}, d, "dim -3");
    expect_same(squared([](const Tensor& x, const Device& dv) { return index_select(x, 0, i64({2}, {}).to(dv)); }), {b},
                d, "0-d index");
    expect_same(squared([](const Tensor& x, const Device& dv) {
                  return index_select(x, 1, Tensor::empty({0}, {.dtype = DType::i64, .device = dv}));
                }),
                {b}, d, "empty index");
    // a 32-bit index, and a 0-d input
    expect_same(squared([](const Tensor& x, const Device& dv) {
                  return index_select(x, 1, i64({1, 1, 11}, {3}).to(DType::i32).to(dv));
                }),
                {b}, d, "i32 index");
    expect_same([](const TensorList& xs, const Device& dv) {
                  Tensor y = index_select(xs[0].sum(), 0, i64({0, 0}, {2}).to(dv));
                  return mul(y, y);
                },
                {b}, d, "0-d input");
  }
}

EMBER_INDEX_TEST(IndexSelectEveryDtype) {
  for (DType dt : {DType::bf16, DType::f16, DType::i64, DType::i32, DType::u8, DType::boolean}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = mul(base3(2, DType::f32), 10.0).to(dt);
    expect_same([](const TensorList& xs, const Device& dv) {
                  return index_select(view(xs[0]), -2, i64({12, 0, 5, 5, 1}, {5}).to(dv));
                },
                {b}, d, "dim -2");
  }
}

// ---- gather / scatter_add ----

EMBER_INDEX_TEST(Gather) {
  const Tensor along1 = random_index(3, 13, {7, 9, 5});
  const Tensor along_last = random_index(4, 5, {6, 11, 8});  // smaller in dims 0 and 1
  const Tensor along0 = random_index(5, 7, {10, 13, 5});
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(6, dt);
    expect_same(squared([&](const Tensor& x, const Device& dv) { return gather(x, 1, along1.to(dv)); }), {b}, d,
                "dim 1");
    expect_same(squared([&](const Tensor& x, const Device& dv) { return gather(x, -1, along_last.to(dv)); }), {b}, d,
                "dim -1, index smaller than the input");
    expect_same(squared([&](const Tensor& x, const Device& dv) { return gather(x, 0, along0.to(dv)); }), {b}, d,
                "dim 0");
    expect_same(squared([&](const Tensor& x, const Device& dv) { return gather(x, 1, along1.to(DType::i32).to(dv)); }),
                {b}, d, "i32 index");
  }
  for (DType dt : {DType::i64, DType::i32, DType::u8, DType::boolean, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = mul(base3(7, DType::f32), 10.0).to(dt);
    expect_same([&](const TensorList& xs, const Device& dv) { return gather(view(xs[0]), -2, along1.to(dv)); }, {b},
                d, "every dtype");
  }
}

EMBER_INDEX_TEST(ScatterAdd) {
  const Tensor along1 = random_index(8, 13, {7, 9, 5});
  const Tensor along_last = random_index(9, 5, {6, 11, 3});
  const Tensor along0 = random_index(10, 7, {4, 11, 5});
  const Tensor all_same = zeros({7, 11, 5}, {.dtype = DType::i64});  // every term of a line on one element
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor self = base3(11, dt), src = base3(12, dt, {7, 11, 5});
    auto case_of = [&](const Tensor& ix, int64_t dim) {
      return [ix, dim](const TensorList& xs, const Device& dv) {
        Tensor y = scatter_add(view(xs[0]), dim, ix.to(dv), view(xs[1]));
        return mul(y, y);
      };
    };
    expect_same(case_of(along1, 1), {self, src}, d, "dim 1, repeated indices, src larger than the index");
    expect_same(case_of(along_last, -1), {self, src}, d, "dim -1");
    expect_same(case_of(along0, 0), {self, src}, d, "dim 0");
    expect_same(case_of(all_same, -2), {self, src}, d, "every index 0");
    // the same bits every run: each element's terms are added by one thread in a fixed order
    Tensor s = view(self).to(d), r = view(src).to(d), ix = along1.to(d);
    EXPECT_EQ(rel_diff(scatter_add(s, 1, ix, r), scatter_add(s, 1, ix, r)), 0.0) << "deterministic";
    // ... and the CPU's order, so the CPU's bits
    EXPECT_EQ(rel_diff(scatter_add(s, 1, ix, r), scatter_add(view(self), 1, along1, view(src))), 0.0)
        << "the CPU's bits";
  }
  for (DType dt : {DType::i64, DType::i32, DType::u8}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor self = abs(mul(base3(13, DType::f32), 10.0)).to(dt), src = abs(mul(base3(14, DType::f32, {7, 11, 5}), 10.0)).to(dt);
    expect_same([&](const TensorList& xs, const Device& dv) {
                  return scatter_add(view(xs[0]), 1, along1.to(dv), view(xs[1]));
                },
                {self, src}, d, "integers");
  }
}

// ---- masked_fill, flip, roll, repeat, tril / triu ----

EMBER_INDEX_TEST(MaskedFill) {
  const Tensor mask = gt(test::rnd({13, 1}, 15), 0.0);
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(16, dt);
    expect_same(squared([&](const Tensor& x, const Device& dv) { return masked_fill(x, mask.to(dv), 2.5); }), {b}, d,
                "bool mask, broadcast");
    expect_same(squared([&](const Tensor& x, const Device& dv) {
                  return masked_fill(x, mask.to(DType::u8).to(dv), -1.0);
                }),
                {b}, d, "u8 mask");
  }
}

EMBER_INDEX_TEST(FlipRollRepeat) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(17, dt);
    expect_same(squared([](const Tensor& x, const Device&) { return flip(x, {0, -1}); }), {b}, d, "flip {0, -1}");
    expect_same(squared([](const Tensor& x, const Device&) { return flip(x, {1}); }), {b}, d, "flip {1}");
    expect_same(squared([](const Tensor& x, const Device&) { return roll(x, 4, -1); }), {b}, d, "roll 4, dim -1");
    expect_same(squared([](const Tensor& x, const Device&) { return roll(x, -3, 0); }), {b}, d, "roll -3, dim 0");
    expect_same(squared([](const Tensor& x, const Device&) { return roll(x, 15, 1); }), {b}, d, "roll past the size");
    expect_same(squared([](const Tensor& x, const Device&) { return repeat(x, {2, 1, 3}); }), {b}, d, "repeat");
    expect_same(squared([](const Tensor& x, const Device&) { return repeat(x, {2, 1, 1, 3}); }), {b}, d,
                "repeat with a new leading dim");
  }
  for (DType dt : {DType::i64, DType::boolean, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = mul(base3(18, DType::f32), 10.0).to(dt);
    expect_same([](const TensorList& xs, const Device&) { return flip(view(xs[0]), {-2}); }, {b}, d, "flip");
    expect_same([](const TensorList& xs, const Device&) { return roll(view(xs[0]), 2, 2); }, {b}, d, "roll");
    expect_same([](const TensorList& xs, const Device&) { return repeat(view(xs[0]), {1, 2, 2}); }, {b}, d, "repeat");
  }
}

EMBER_INDEX_TEST(TrilTriu) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(19, dt);
    expect_same(squared([](const Tensor& x, const Device&) { return tril(x); }), {b}, d, "tril");
    expect_same(squared([](const Tensor& x, const Device&) { return tril(x, 2); }), {b}, d, "tril 2");
    expect_same(squared([](const Tensor& x, const Device&) { return triu(x, -1); }), {b}, d, "triu -1");
    expect_same(squared([](const Tensor& x, const Device&) { return triu(x.transpose(-1, -2), 3); }), {b}, d,
                "triu 3 of the transposed matrices");
  }
  for (DType dt : {DType::i64, DType::boolean, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = mul(base3(20, DType::f32), 10.0).to(dt);
    expect_same([](const TensorList& xs, const Device&) { return tril(view(xs[0]), -1); }, {b}, d, "tril");
    expect_same([](const TensorList& xs, const Device&) { return triu(view(xs[0])); }, {b}, d, "triu");
  }
}

// ---- pad ----

EMBER_INDEX_TEST(Pad) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(21, dt);
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {1, 2, 0, 3}, PadMode::constant, 0.5); }),
                {b}, d, "constant");
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {-1, 2, 1, -2}, PadMode::constant, -1.0); }),
                {b}, d, "constant with a crop");
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {2, 1, 1, 1, 1, 1}); }), {b}, d,
                "constant, every dim");
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {2, 3, 1, 4}, PadMode::reflect); }), {b}, d,
                "reflect");
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {4, 4}, PadMode::reflect); }), {b}, d,
                "reflect by size - 1");
    expect_same(squared([](const Tensor& x, const Device&) { return pad(x, {1, 1, 2, 2, 3, 3}, PadMode::reflect); }),
                {b}, d, "reflect, every dim");
  }
  for (DType dt : {DType::i64, DType::boolean, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = mul(base3(22, DType::f32), 10.0).to(dt);
    expect_same([](const TensorList& xs, const Device&) { return pad(view(xs[0]), {1, 2, 3, 0}, PadMode::constant, 1.0); },
                {b}, d, "constant");
    expect_same([](const TensorList& xs, const Device&) { return pad(view(xs[0]), {2, 2}, PadMode::reflect); }, {b}, d,
                "reflect");
  }
}

// ---- cumsum, prod, norm, logsumexp ----

EMBER_INDEX_TEST(Cumsum) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(23, dt);
    for (int64_t dim : {0, 1, -1}) {
      SCOPED_TRACE(dim);
      expect_same(squared([dim](const Tensor& x, const Device&) { return cumsum(x, dim); }), {b}, d, "cumsum");
    }
    Generator g(24);
    Tensor line = uniform({1001}, -1, 1, {.dtype = dt}, &g);
    expect_same([](const TensorList& xs, const Device&) {
                  Tensor y = cumsum(xs[0], 0);
                  return mul(y, y);
                },
                {line}, d, "one long row");
  }
}

EMBER_INDEX_TEST(Prod) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(25, dt, {7, 13, 5}, 0.8, 1.25);
    expect_same(squared([](const Tensor& x, const Device&) { return prod(x, {1}); }), {b}, d, "dim 1");
    expect_same(squared([](const Tensor& x, const Device&) { return prod(x, {0, -1}, true); }), {b}, d,
                "dims {0, -1} keepdim");
    expect_same(squared([](const Tensor& x, const Device&) { return prod(x, {}); }), {b}, d, "everything");
    // rows with no, one, two and three zeros: the exclusive products and their adjoint
    Tensor z = from_vector(std::vector<double>{1.5, -0.5, 2, 0.75, -1.25, 0.5,  //
                                               1.5, 0, 2, 0.75, -1.25, 0.5,     //
                                               0, -0.5, 2, 0.75, 0, 0.5,        //
                                               1.5, 0, 2, 0, -1.25, 0},
                           {4, 6}, {.dtype = dt});
    expect_same([](const TensorList& xs, const Device&) {
                  Tensor y = prod(xs[0], {1});
                  return mul(y, y);
                },
                {z}, d, "rows with zeros");
    expect_same([](const TensorList& xs, const Device&) {
                  Tensor y = prod(xs[0].t(), {0});
                  return mul(y, y);
                },
                {z}, d, "rows with zeros, transposed");
  }
}

EMBER_INDEX_TEST(Norm) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = base3(26, dt);
    for (double p : {2.0, 3.0, 1.5}) {
      SCOPED_TRACE(p);
      expect_same(squared([p](const Tensor& x, const Device&) { return norm(x, p, {1}); }), {b}, d, "dim 1");
      expect_same(squared([p](const Tensor& x, const Device&) { return norm(x, p, {0, -1}, true); }), {b}, d,
                  "dims {0, -1} keepdim");
      expect_same(squared([p](const Tensor& x, const Device&) { return norm(x, p, {}); }), {b}, d, "everything");
    }
    // a zero row: the norm is 0 and so is its gradient
    Tensor z = mul(base3(27, dt), gt(test::rnd({5, 7, 1}, 28, dt), 0.0).to(dt));
    expect_same(squared([](const Tensor& x, const Device&) { return norm(x, 2.0, {1}); }), {z}, d, "zero rows");
  }
}

EMBER_INDEX_TEST(LogsumexpWithInfiniteRows) {
  for (DType dt : kReal) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor x = base3(29, dt);
    Tensor minus_inf = masked_fill(x, gt(test::rnd({5, 7, 1}, 30), 0.5), -INFINITY);  // whole rows of -inf
    // -inf rows zeroed after the op, so the forward comparison sees the finite rows on a finite scale
    expect_same([](const TensorList& xs, const Device&) {
                  Tensor y = logsumexp(view(xs[0]), {1});
                  return where(isfinite(y.detach()), y, 0.0);
                },
                {minus_inf}, d, "rows of -inf");
  }
}

// ---- errors ----

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles, std::string* message) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    *message = e.what();
  }
}

EMBER_INDEX_TEST(OutOfRangeIndexIsTheCpuError) {
  struct Case {
    const char* what;
    std::function<void(const Device&)> call;
    std::vector<std::string> needles;
  };
  const Tensor a = base3(31, DType::f32);
  const std::vector<Case> cases = {
      {"index_select past the end",
       [&](const Device& dv) { index_select(view(a.to(dv)), 1, i64({0, 13, 2}, {3}).to(dv)); },
       {"index_select", "index 13", "size 13"}},
      {"index_select negative",
       [&](const Device& dv) { index_select(view(a.to(dv)), -1, i64({-1}, {1}).to(dv)); },
       {"index_select", "-1", "size 5"}},
      {"gather",
       [&](const Device& dv) {
         Tensor ix = random_index(32, 7, {7, 2, 5}).to(dv);
         gather(view(a.to(dv)), 1, masked_fill(ix, eq(ix, 3.0), 20));
       },
       {"gather", "index 20", "size 13"}},
      {"scatter_add",
       [&](const Device& dv) {
         Tensor x = view(a.to(dv));
         scatter_add(x, 0, i64({0, 7}, {2, 1, 1}).to(dv), x);
       },
       {"scatter_add", "index 7", "size 7"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::string on_cpu, on_d;
    expect_error([&] { c.call(Device::cpu()); }, c.needles, &on_cpu);
    expect_error([&] { c.call(d); }, c.needles, &on_d);
    EXPECT_EQ(on_d, on_cpu);
  }
}

}  // namespace
}  // namespace ember
