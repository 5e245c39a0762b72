// Philox 4x32-10 and the random factories.
//
// Stream layout (the CUDA backend reproduces it): a draw of n values reserves ceil(n / k)
// counters starting at the generator's offset; counter c yields four 32-bit words. f32 uniform
// and normal draws take k = 4 values per counter (normals by Box-Muller on word pairs (0,1)
// and (2,3)); f64 draws take k = 2 (each double from two words; normals from the two doubles).
#include "ember/engine/random.h"

#include <cmath>
#include <numbers>

#include "ember/engine/dispatch.h"
#include "ember/engine/factory.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/kernels/cuda/random.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif

namespace ember {

namespace philox {
std::array<uint32_t, 4> block(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  const Words w = philox4x32_10(counter_lo, counter_hi, key);
  return {w.w[0], w.w[1], w.w[2], w.w[3]};
}
}  // namespace philox

Generator& default_generator() {
  static Generator g;
  return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {
Generator& pick(Generator* g) { return g ? *g : default_generator(); }

// Fills n values: per counter, `emit(words, out_index_base)` writes up to k values.
template <typename Emit>
void draw(Generator& g, int64_t n, int64_t k, const Emit& emit) {
  const uint64_t counters = static_cast<uint64_t>((n + k - 1) / k);
  const uint64_t base = g.reserve(counters);
  const uint64_t seed = g.seed();
  kernels::cpu::parallel_for(0, static_cast<int64_t>(counters), 2048, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) emit(philox::block(base + static_cast<uint64_t>(c), 0, seed), c * k);
  });
}

// uniform [0,1) in T, then affine-mapped
template <typename T>
void fill_uniform(T* out, int64_t n, double low, double high, Generator& g) {
  if constexpr (std::is_same_v<T, float>) {
    draw(g, n, 4, [&](std::array<uint32_t, 4> w, int64_t i0) {
      for (int j = 0; j < 4 && i0 + j < n; ++j)
        out[i0 + j] = static_cast<float>(low + (high - low) * philox::to_unit_float(w[j]));
    });
  } else {
    draw(g, n, 2, [&](std::array<uint32_t, 4> w, int64_t i0) {
      for (int j = 0; j < 2 && i0 + j < n; ++j)
        out[i0 + j] = low + (high - low) * philox::to_unit_double(w[2 * j], w[2 * j + 1]);
    });
  }
}

template <typename T>
void fill_normal(T* out, int64_t n, double mean, double std, Generator& g) {
  constexpr double two_pi = 2.0 * std::numbers::pi;
  if constexpr (std::is_same_v<T, float>) {
    draw(g, n, 4, [&](std::array<uint32_t, 4> w, int64_t i0) {
      for (int pair = 0; pair < 2; ++pair) {
        // 1 - u keeps the log argument in (0, 1]
        float u1 = 1.0f - philox::to_unit_float(w[2 * pair]);
        float u2 = philox::to_unit_float(w[2 * pair + 1]);
        float r = std::sqrt(-2.0f * std::log(u1));
        float z0 = r * std::cos(static_cast<float>(two_pi) * u2), z1 = r * std::sin(static_cast<float>(two_pi) * u2);
        int64_t i = i0 + 2 * pair;
        if (i < n) out[i] = static_cast<float>(mean + std * z0);
        if (i + 1 < n) out[i + 1] = static_cast<float>(mean + std * z1);
      }
    });
  } else {
    draw(g, n, 2, [&](std::array<uint32_t, 4> w, int64_t i0) {
      double u1 = 1.0 - philox::to_unit_double(w[0], w[1]);
      double u2 = philox::to_unit_double(w[2], w[3]);
      double r = std::sqrt(-2.0 * std::log(u1));
      if (i0 < n) out[i0] = mean + std * r * std::cos(two_pi * u2);
      if (i0 + 1 < n) out[i0 + 1] = mean + std * r * std::sin(two_pi * u2);
    });
  }
}

// A uniform or normal draw made on the GPU: the same counters reserved as the CPU reserves, the
// same words per counter (kernels/cuda/random.cu).
Tensor draw_on_gpu(bool normal, const Shape& sizes, double a, double b, const TensorOptions& opts, Generator& g) {
  const char* op = normal ? "normal" : "uniform";
  dispatch_floating(opts.dtype, op, [](auto) {});
  Tensor t = Tensor::empty(sizes, {.dtype = opts.dtype, .device = opts.device});
#if EMBER_WITH_CUDA
  const int64_t n = t.numel(), k = opts.dtype == DType::f32 ? 4 : 2;
  const uint64_t base = g.reserve(static_cast<uint64_t>((n + k - 1) / k));
  const auto et = cuda::elem_type(opts.dtype);
  if (normal) kernels::cuda::philox_normal(et, t.device_data(), n, a, b, g.seed(), base, cuda::stream_of(t));
  else kernels::cuda::philox_uniform(et, t.device_data(), n, a, b, g.seed(), base, cuda::stream_of(t));
#endif
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor finish(Tensor t, const TensorOptions& opts) {
  if (!opts.device.is_cpu()) t = t.to(opts.device);
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}
}  // namespace

Tensor uniform(const Shape& sizes, double low, double high, TensorOptions opts, Generator* gen) {
  EMBER_CHECK(low <= high, "uniform: low ", low, " > high ", high);
  if (opts.device.is_cuda()) return draw_on_gpu(false, sizes, low, high, opts, pick(gen));
  Tensor t = Tensor::empty(sizes, {.dtype = opts.dtype});
  dispatch_floating(opts.dtype, "uniform", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_uniform<T>(t.data<T>(), t.numel(), low, high, pick(gen));
  });
  return finish(t, opts);
}
Tensor rand(const Shape& sizes, TensorOptions opts, Generator* gen) { return uniform(sizes, 0, 1, opts, gen); }

Tensor normal(const Shape& sizes, double mean, double std, TensorOptions opts, Generator* gen) {
  EMBER_CHECK(std >= 0, "normal: std must be >= 0, got ", std);
  if (opts.device.is_cuda()) return draw_on_gpu(true, sizes, mean, std, opts, pick(gen));
  Tensor t = Tensor::empty(sizes, {.dtype = opts.dtype});
  dispatch_floating(opts.dtype, "normal", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_normal<T>(t.data<T>(), t.numel(), mean, std, pick(gen));
  });
  return finish(t, opts);
}
Tensor randn(const Shape& sizes, TensorOptions opts, Generator* gen) { return normal(sizes, 0, 1, opts, gen); }

Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions opts, Generator* gen) {
  EMBER_CHECK(low < high, "randint: empty range [", low, ", ", high, ")");
  const int64_t n = shape_numel(sizes);
  if (opts.device.is_cuda()) {  // the same counters and words as below, drawn on the device
    Tensor t = Tensor::empty(sizes, {.dtype = DType::i64, .device = opts.device});
#if EMBER_WITH_CUDA
    Generator& g = pick(gen);
    const uint64_t base = g.reserve(static_cast<uint64_t>((n + 1) / 2));
    kernels::cuda::philox_randint(static_cast<int64_t*>(t.device_data()), n, low, high, g.seed(), base,
                                  cuda::stream_of(t));
#endif
    return opts.dtype == DType::i64 ? t : t.to(opts.dtype);
  }
  std::vector<int64_t> v(n);
  const uint64_t range = static_cast<uint64_t>(high - low);
  // Two values per counter, each from 64 random bits (modulo bias < range / 2^64).
  draw(pick(gen), n, 2, [&](std::array<uint32_t, 4> w, int64_t i0) {
    for (int j = 0; j < 2 && i0 + j < n; ++j) {
      uint64_t r = (static_cast<uint64_t>(w[2 * j]) << 32) | w[2 * j + 1];
      v[i0 + j] = low + static_cast<int64_t>(r % range);
    }
  });
  Tensor t = from_vector(v, sizes, {.dtype = opts.dtype});
  return finish(t, {.dtype = opts.dtype, .device = opts.device});
}

Tensor bernoulli(const Tensor& p, Generator* gen) {
  Tensor pc = p.to(Device::cpu()).contiguous();
  Tensor u = rand(p.sizes(), {.dtype = is_floating(p.dtype()) ? p.dtype() : DType::f32}, gen);
  std::vector<double> pv = pc.to_vector<double>(), uv = u.to_vector<double>();
  std::vector<double> out(pv.size());
  for (size_t i = 0; i < pv.size(); ++i) {
    EMBER_CHECK(pv[i] >= 0 && pv[i] <= 1, "bernoulli: probability ", pv[i], " at element ", i, " is outside [0, 1]");
    out[i] = uv[i] < pv[i] ? 1.0 : 0.0;
  }
  return from_vector(out, p.sizes(), {.dtype = p.dtype(), .device = p.device()});
}

Tensor randperm(int64_t n, TensorOptions opts, Generator* gen) {
  EMBER_CHECK(n >= 0, "randperm: n must be >= 0, got ", n);
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  if (n > 1) {
    // Fisher-Yates with one 64-bit draw per swap.
    Tensor r = randint(0, INT64_MAX, {n - 1}, {.dtype = DType::i64}, gen);
    const int64_t* rp = r.data<int64_t>();
    for (int64_t i = n - 1; i > 0; --i) std::swap(v[i], v[rp[n - 1 - i] % (i + 1)]);
  }
  return finish(from_vector(v, {n}, {.dtype = opts.dtype}), {.dtype = opts.dtype, .device = opts.device});
}

Tensor rand_like(const Tensor& t, Generator* gen) { return rand(t.sizes(), options_of(t), gen); }
Tensor randn_like(const Tensor& t, Generator* gen) { return randn(t.sizes(), options_of(t), gen); }

}  // namespace ember
