// ember against PyTorch on committed golden fixtures (tests/reference/make_fixtures.py, float64):
// the DDE networks (MLP, ResidualMLP, DenseNetMLP) — outputs, input and parameter gradients, and
// the DDE loss's double backward (parameter gradients of a loss on d s / d x~) — and the
// differentiable ops (conv2d, depthwise, dilated, conv_transpose2d, group/layer/batch norm,
// softmax, log_softmax, attention with a float mask, pooling, upsampling) at first and second
// order. No Python at test time: the fixtures are committed.
//
// Tolerance: max |ember - torch| <= 1e-10 * max(|torch|) over each tensor (1e-12 absolute floor
// for all-zero references). Both sides compute in f64; the differences are summation order only
// (observed ~1e-15 relative).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ember/ember.h"
#include "ember/engine/serialization/safetensors.h"
#include "ember/models/dde/dde.h"
#include "ember/models/mlp.h"

using namespace ember;

namespace {

constexpr double kRtol = 1e-10;
const char* kRegenerate = "regenerate with: python3 tests/reference/make_fixtures.py (needs torch)";

// A fixture file, loaded once. Missing files are a test failure: the fixtures are committed.
class Fixture {
 public:
  explicit Fixture(const std::string& file) : file_(file) {
    path_ = std::string(EMBER_SOURCE_DIR) + "/tests/reference/fixtures/" + file;
    if (std::filesystem::exists(path_)) data_ = load_safetensors(path_);
  }
  bool ok() const { return std::filesystem::exists(path_); }
  std::string missing() const { return "fixture " + path_ + " is missing; " + kRegenerate; }
  bool has(const std::string& k) const { return data_.tensors.count(k) > 0; }
  Tensor get(const std::string& k) const {
    auto it = data_.tensors.find(k);
    if (it == data_.tensors.end()) throw Error("fixture " + file_ + ": entry '" + k + "' missing; " + kRegenerate);
    return it->second;
  }
  // The "model." entries with the prefix removed: a state_dict.
  std::map<std::string, Tensor> state_dict() const {
    std::map<std::string, Tensor> sd;
    for (auto& [k, v] : data_.tensors)
      if (k.rfind("model.", 0) == 0) sd[k.substr(6)] = v;
    return sd;
  }

 private:
  std::string file_, path_;
  SafetensorsFile data_;
};

const Fixture& fixture(const std::string& file) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(file);
  if (it == cache.end()) it = cache.emplace(file, Fixture(file)).first;
  return it->second;
}

#define REQUIRE_FIXTURE(f) ASSERT_TRUE((f).ok()) << (f).missing()

// An undefined `got` stands for zeros (a gradient ember reports as unused).
void expect_close(const Tensor& got_in, const Tensor& want, const std::string& what) {
  Tensor got = got_in.defined() ? got_in : zeros_like(want);
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.dtype(), DType::f64) << what;
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  double scale = 1e-12, worst = 0;
  for (double x : w)
    if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(w[i])) {
      EXPECT_EQ(g[i], w[i]) << what << " element " << i;
      continue;
    }
    worst = std::max(worst, std::isfinite(g[i]) ? std::abs(g[i] - w[i]) : INFINITY);
  }
  EXPECT_LE(worst, kRtol * scale) << what << ": max abs difference " << worst << " (scale " << scale << ")";
}

// Loads the fixture's weights into `m` (strict: every name must match both ways).
void load_weights(nn::Module& m, const Fixture& f) {
  m.to(DType::f64);
  m.load_state_dict(f.state_dict());
}

// Output, d sum(y * w)/d x and / d every parameter (w = ones when the fixture has no "w").
void check_forward_and_gradients(nn::Module& m, const Fixture& f, const std::string& name) {
  Tensor x = f.get("x").clone();
  x.requires_grad_(true);
  Tensor y = m(x);
  expect_close(y, f.get("y"), name + " output");
  Tensor w = f.has("w") ? f.get("w") : ones_like(y);
  TensorList inputs{x};
  auto params = m.named_parameters();
  for (auto& [k, p] : params) inputs.push_back(p);
  TensorList g = grad({sum(mul(y, w))}, inputs);
  expect_close(g[0], f.get("grad.x"), name + " grad x");
  for (size_t i = 0; i < params.size(); ++i)
    expect_close(g[i + 1], f.get("grad." + params[i].first), name + " grad " + params[i].first);
}

// The DDE loss of models/dde (dde_loss) with the fixture's noise instead of a draw:
// x~ = x + e, L = 0.5 * sum((x~ + sigma^2 d s/d x~ - x)^2), then L.backward() into the
// parameters' .grad as the trainer does (a double backward through s).
void check_dde_double_backward(nn::Module& m, const Fixture& f, const std::string& name) {
  Tensor x = f.get("x"), e = f.get("dde.e");
  const double sigma = f.get("dde.sigma").item();
  m.zero_grad();
  models::dde::ScoreAt at = models::dde::score_at(m, add(x, e));
  expect_close(at.grad, f.get("dde.grad_s"), name + " dde d s/d x~");
  Tensor denoised = add(at.xn, mul(at.grad, sigma * sigma));
  Tensor loss = mul(sum(square(sub(denoised, x))), 0.5);
  expect_close(loss.reshape({1}), f.get("dde.loss"), name + " dde loss");
  loss.backward();
  for (auto& [k, p] : m.named_parameters()) expect_close(p.grad(), f.get("ddegrad." + k), name + " dde grad " + k);
}

using Inputs = std::map<std::string, Tensor>;

// One op case of ops.safetensors: runs `fn` on the fixture's inputs, compares the output, the
// gradients of sum(out * w) in `grad_of`, and the second order: d/d (inputs, w) of the sum of
// the squared first-order gradients (taken with create_graph).
void check_op(const std::string& c, const std::vector<std::string>& names, const std::vector<std::string>& grad_of,
              const std::function<Tensor(Inputs&)>& fn) {
  const Fixture& f = fixture("ops.safetensors");
  Inputs in;
  for (auto& n : names) in[n] = f.get(c + "." + n).clone();
  TensorList leaves;
  for (auto& n : grad_of) {
    in[n].requires_grad_(true);
    leaves.push_back(in[n]);
  }
  Tensor y = fn(in);
  expect_close(y, f.get(c + ".out"), c + " output");
  Tensor w = f.get(c + ".w").clone();
  w.requires_grad_(true);
  TensorList g = grad({sum(mul(y, w))}, leaves, {}, {.create_graph = true});
  ASSERT_EQ(g.size(), grad_of.size());
  Tensor s2;
  for (size_t i = 0; i < g.size(); ++i) {
    expect_close(g[i], f.get(c + ".grad." + grad_of[i]), c + " grad " + grad_of[i]);
    Tensor sq = sum(square(g[i]));
    s2 = s2.defined() ? add(s2, sq) : sq;
  }
  TensorList all = leaves;
  all.push_back(w);
  TensorList gg = grad({s2}, all, {}, {.allow_unused = true});
  for (size_t i = 0; i < grad_of.size(); ++i)
    expect_close(gg[i], f.get(c + ".gg." + grad_of[i]), c + " second order d/d " + grad_of[i]);
  expect_close(gg.back(), f.get(c + ".gg.w"), c + " second order d/d w");
}

}  // namespace

TEST(TorchReference, MLPForwardGradientsAndDDEDoubleBackward) {
  const Fixture& f = fixture("mlp.safetensors");
  REQUIRE_FIXTURE(f);
  models::MLP m(2, 16, 5, 1);
  load_weights(m, f);
  check_forward_and_gradients(m, f, "MLP");
  check_dde_double_backward(m, f, "MLP");
}

TEST(TorchReference, ResidualMLPForwardGradientsAndDDEDoubleBackward) {
  const Fixture& f = fixture("residual_mlp.safetensors");
  REQUIRE_FIXTURE(f);
  models::ResidualMLP m(2, 16, 5, 1);
  load_weights(m, f);
  check_forward_and_gradients(m, f, "ResidualMLP");
  check_dde_double_backward(m, f, "ResidualMLP");
}

TEST(TorchReference, DenseNetMLPForwardAndGradients) {
  const Fixture& f = fixture("densenet.safetensors");
  REQUIRE_FIXTURE(f);
  models::DenseNetMLP m(6, 8, 3, 4, /*end_sigmoid=*/true);
  load_weights(m, f);
  check_forward_and_gradients(m, f, "DenseNetMLP");
}

TEST(TorchReference, Conv) {
  REQUIRE_FIXTURE(fixture("ops.safetensors"));
  const std::vector<std::string> xwb{"x", "weight", "bias"};
  check_op("conv2d", xwb, xwb, [](Inputs& i) {
    return conv2d(i["x"], i["weight"], i["bias"], {2, 2}, {1, 1}, {1, 1}, 2);
  });
  check_op("conv2d_dilated", xwb, xwb, [](Inputs& i) {
    return conv2d(i["x"], i["weight"], i["bias"], {1, 2}, {2, 1}, {2, 1}, 1);
  });
  check_op("conv2d_depthwise", xwb, xwb, [](Inputs& i) {
    return conv2d(i["x"], i["weight"], i["bias"], {1, 1}, {1, 1}, {1, 1}, 3);
  });
  check_op("conv_transpose2d", xwb, xwb, [](Inputs& i) {
    return conv_transpose2d(i["x"], i["weight"], i["bias"], {2, 2}, {1, 1}, {1, 1}, 2);
  });
}

TEST(TorchReference, Norms) {
  REQUIRE_FIXTURE(fixture("ops.safetensors"));
  const std::vector<std::string> xwb{"x", "weight", "bias"};
  check_op("group_norm", xwb, xwb, [](Inputs& i) { return group_norm(i["x"], 3, i["weight"], i["bias"], 1e-5); });
  check_op("layer_norm", xwb, xwb,
           [](Inputs& i) { return layer_norm(i["x"], {3, 4}, i["weight"], i["bias"], 1e-5); });
  Tensor rm, rv;
  check_op("batch_norm", {"x", "weight", "bias", "running_mean", "running_var"}, xwb, [&](Inputs& i) {
    rm = i["running_mean"];
    rv = i["running_var"];
    return batch_norm(i["x"], rm, rv, i["weight"], i["bias"], /*training=*/true, 0.1, 1e-5);
  });
  const Fixture& f = fixture("ops.safetensors");
  expect_close(rm, f.get("batch_norm.running_mean_out"), "batch_norm running_mean after the step");
  expect_close(rv, f.get("batch_norm.running_var_out"), "batch_norm running_var after the step");
}

TEST(TorchReference, SoftmaxAndAttention) {
  REQUIRE_FIXTURE(fixture("ops.safetensors"));
  check_op("softmax", {"x"}, {"x"}, [](Inputs& i) { return softmax(i["x"], 1); });
  check_op("log_softmax", {"x"}, {"x"}, [](Inputs& i) { return log_softmax(i["x"], -1); });
  check_op("sdpa", {"q", "k", "v", "mask"}, {"q", "k", "v"},
           [](Inputs& i) { return scaled_dot_product_attention(i["q"], i["k"], i["v"], i["mask"]); });
}

TEST(TorchReference, PoolingAndUpsampling) {
  REQUIRE_FIXTURE(fixture("ops.safetensors"));
  check_op("avg_pool2d", {"x"}, {"x"}, [](Inputs& i) { return avg_pool2d(i["x"], {3, 3}, {2, 2}, {1, 1}); });
  check_op("max_pool2d", {"x"}, {"x"}, [](Inputs& i) { return max_pool2d(i["x"], {3, 3}, {2, 2}, {1, 1}); });
  check_op("upsample_nearest2d", {"x"}, {"x"}, [](Inputs& i) { return upsample_nearest2d(i["x"], 2); });
}
