// `ember dde`: the DDE paper's training procedure as a program (see trainer.h).
#include "ember/models/dde/trainer.h"

#include <filesystem>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "ember/engine/autograd/engine.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/cuda/graph.h"
#include "ember/engine/cuda/runtime.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/engine/serialization/file_io.h"
#include "ember/engine/serialization/safetensors.h"
#include "ember/kernels/cpu/parallel.h"
#include "ember/models/dde/dde.h"
#include "ember/models/mlp.h"
#include "ember/nn/data/colormap.h"
#include "ember/nn/data/dataset.h"
#include "ember/nn/data/idx.h"
#include "ember/nn/data/transforms.h"
#include "ember/nn/data/png.h"
#include "ember/nn/data/toy.h"
#include "ember/nn/optim.h"
#include "ember/nn/progress.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"

namespace ember::models::dde {

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// ---------------------------------------------------------------------------------------
// arguments

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::vector<std::string> split_str(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// ---------------------------------------------------------------------------------------
// data

struct Data {
  std::string kind;  // toy | image | tabular
  int64_t dim = 0;
  std::unique_ptr<data::ToyDataset> toy;
  Tensor train, test;  // image / tabular: [N, D] f32
  // gaussian6d: the exact smoothed density is N(mean, cov + sigma^2 I)
  bool gaussian = false;
  std::vector<double> g_mean, g_cov;

  Tensor batch(int64_t n, Generator& gen) const {
    if (toy) return toy->sample(n, &gen);
    Tensor idx = randint(0, train.size(0), {n}, {.dtype = DType::i64}, &gen);
    Tensor out = Tensor::empty({n, dim});
    const int64_t* ip = idx.data<int64_t>();
    const float* src = train.data<float>();
    float* dst = out.data<float>();
    for (int64_t i = 0; i < n; ++i) std::copy(src + ip[i] * dim, src + (ip[i] + 1) * dim, dst + i * dim);
    return out;
  }
};

// Cholesky of a small SPD matrix (row-major), for the exact Gaussian reference.
std::vector<double> cholesky(std::vector<double> a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    EMBER_CHECK(d > 0, "cholesky: matrix is not positive definite");
    a[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / a[j * n + j];
    }
    for (int64_t k = j + 1; k < n; ++k) a[j * n + k] = 0;
  }
  return a;
}

// Exact log N(x; mean, cov + sigma^2 I) for rows of x.
std::vector<double> gaussian_logpdf(const Data& d, const Tensor& x, double sigma) {
  const int64_t n = d.dim;
  std::vector<double> c = d.g_cov;
  for (int64_t i = 0; i < n; ++i) c[i * n + i] += sigma * sigma;
  std::vector<double> L = cholesky(c, n);
  double logdet = 0;
  for (int64_t i = 0; i < n; ++i) logdet += 2 * std::log(L[i * n + i]);
  auto xv = x.to_vector<double>();
  const int64_t m = x.size(0);
  std::vector<double> out(m), z(n);
  for (int64_t r = 0; r < m; ++r) {
    double q = 0;
    for (int64_t i = 0; i < n; ++i) {  // solve L z = x - mean
      double s = xv[r * n + i] - d.g_mean[i];
      for (int64_t k = 0; k < i; ++k) s -= L[i * n + k] * z[k];
      z[i] = s / L[i * n + i];
      q += z[i] * z[i];
    }
    out[r] = -0.5 * (q + logdet + static_cast<double>(n) * std::log(2 * M_PI));
  }
  return out;
}

Tensor load_csv(const std::string& path) {
  std::ifstream f(path);
  EMBER_CHECK(f, path, ": cannot open");
  std::vector<float> vals;
  int64_t cols = -1, rows = 0;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cells = split_str(line, ',');
    std::vector<float> row;
    bool numeric = true;
    for (auto& c : cells) {
      char* end = nullptr;
      float v = std::strtof(c.c_str(), &end);
      if (end == c.c_str()) numeric = false;
      row.push_back(v);
    }
    if (!numeric) {
      EMBER_CHECK(rows == 0, path, ":", lineno, ": non-numeric value in a data row");
      continue;  // a header line
    }
    if (cols < 0) cols = static_cast<int64_t>(row.size());
    EMBER_CHECK(static_cast<int64_t>(row.size()) == cols, path, ":", lineno, ": ", row.size(), " columns, expected ", cols);
    for (float v : row) EMBER_CHECK(std::isfinite(v), path, ":", lineno, ": non-finite value");
    vals.insert(vals.end(), row.begin(), row.end());
    ++rows;
  }
  EMBER_CHECK(rows > 1 && cols > 0, path, ": no data rows");
  return from_vector(vals, {rows, cols});
}

Tensor load_npy(const std::string& path) {
  std::vector<uint8_t> b = serialization::read_file(path);
  EMBER_CHECK(b.size() >= 10 && std::string(b.begin() + 1, b.begin() + 6) == "NUMPY", path, ": not a .npy file");
  const int major = b[6];
  size_t hl = major == 1 ? (b[8] | (b[9] << 8)) : (b.size() >= 12 ? (b[8] | (b[9] << 8) | (b[10] << 16) | (size_t(b[11]) << 24)) : 0);
  size_t hstart = major == 1 ? 10 : 12;
  EMBER_CHECK(hstart + hl <= b.size(), path, ": truncated .npy header");
  std::string h(b.begin() + hstart, b.begin() + hstart + hl);
  EMBER_CHECK(h.find("'fortran_order': False") != std::string::npos, path, ": Fortran-order arrays are not supported");
  bool f64 = h.find("'<f8'") != std::string::npos, f32 = h.find("'<f4'") != std::string::npos;
  EMBER_CHECK(f64 || f32, path, ": only little-endian f4/f8 arrays are supported (header ", h, ")");
  size_t sp = h.find("'shape': ("), se = h.find(')', sp);
  EMBER_CHECK(sp != std::string::npos && se != std::string::npos, path, ": no shape in header");
  std::vector<int64_t> shape;
  for (auto& s : split_str(h.substr(sp + 10, se - sp - 10), ','))
    if (s.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(s));
  EMBER_CHECK(shape.size() == 2 && shape[0] > 1 && shape[1] > 0, path, ": expected a 2-D array [rows, features]");
  size_t es = f64 ? 8 : 4, need = static_cast<size_t>(shape[0] * shape[1]) * es, off = hstart + hl;
  EMBER_CHECK(b.size() - off == need, path, ": data holds ", b.size() - off, " bytes, the header says ", need);
  Tensor t = Tensor::empty(shape, {.dtype = f64 ? DType::f64 : DType::f32});
  std::memcpy(t.raw_data(), b.data() + off, need);
  return t.to(DType::f32);
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Splits rows into train / held-out (last 10%, after a seeded shuffle).
void split_rows(Data& d, const Tensor& all, uint64_t seed) {
  Generator g(seed ^ 0xda7aull);
  Tensor perm = randperm(all.size(0), {.dtype = DType::i64}, &g);
  const int64_t n = all.size(0), n_test = std::max<int64_t>(1, n / 10);
  const int64_t D = all.size(1);
  Tensor shuffled = Tensor::empty({n, D});
  const int64_t* p = perm.data<int64_t>();
  Tensor src = all.contiguous();
  for (int64_t i = 0; i < n; ++i)
    std::copy(src.data<float>() + p[i] * D, src.data<float>() + (p[i] + 1) * D, shuffled.data<float>() + i * D);
  d.train = shuffled.slice(0, 0, n - n_test).contiguous();
  d.test = shuffled.slice(0, n - n_test, n).contiguous();
}

Data load_data(const TrainConfig& cfg) {
  Data d;
  const std::string& name = cfg.data;
  auto toys = data::toy_names();
  if (std::find(toys.begin(), toys.end(), name) != toys.end()) {
    d.kind = "toy";
    d.toy = data::make_toy(name);
    d.dim = d.toy->dim();
    EMBER_CHECK(d.dim == 2, "dde: toy set '", name, "' is ", d.dim, "-D; `ember dde` trains on the 2-D toys");
    return d;
  }
  if (name == "fashion-mnist" || name == "mnist") {
    EMBER_CHECK(!cfg.data_dir.empty() || name == "fashion-mnist", "dde: --data mnist needs --data-dir with its IDX files");
    data::TensorDataset ds = name == "fashion-mnist" && cfg.data_dir.empty()
                                 ? data::load_fashion_mnist("train")
                                 : data::load_mnist_idx(cfg.data_dir + "/train-images-idx3-ubyte.gz",
                                                        cfg.data_dir + "/train-labels-idx1-ubyte.gz");
    Tensor x = data::to_float_unit(ds.data());
    d.kind = "image";
    d.dim = x.numel() / x.size(0);
    d.train = x.reshape({x.size(0), d.dim}).contiguous();
    return d;
  }
  if (name == "gaussian6d") {
    // A fixed 6-D Gaussian with a known, non-diagonal covariance: cov = A A^T / 6 + 0.2 I.
    const int64_t D = 6;
    Generator g(6006);
    auto A = randn({D, D}, {.dtype = DType::f64}, &g).to_vector<double>();
    d.g_cov.assign(D * D, 0);
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = 0; j < D; ++j) {
        double s = 0;
        for (int64_t k = 0; k < D; ++k) s += A[i * D + k] * A[j * D + k];
        d.g_cov[i * D + j] = s / D + (i == j ? 0.2 : 0.0);
      }
    d.g_mean = randn({D}, {.dtype = DType::f64}, &g).to_vector<double>();
    std::vector<double> L = cholesky(d.g_cov, D);
    const int64_t n = 60000;
    auto z = randn({n, D}, {.dtype = DType::f64}, &g).to_vector<double>();
    std::vector<float> x(n * D);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < D; ++i) {
        double s = d.g_mean[i];
        for (int64_t k = 0; k <= i; ++k) s += L[i * D + k] * z[r * D + k];
        x[r * D + i] = static_cast<float>(s);
      }
    d.kind = "tabular";
    d.gaussian = true;
    d.dim = D;
    split_rows(d, from_vector(x, {n, D}), cfg.seed);
    return d;
  }
  if (ends_with(name, ".csv") || ends_with(name, ".npy")) {
    Tensor all = ends_with(name, ".csv") ? load_csv(name) : load_npy(name);
    d.kind = "tabular";
    d.dim = all.size(1);
    split_rows(d, all, cfg.seed);
    return d;
  }
  std::string all;
  for (auto& t : toys) all += t + ", ";
  EMBER_FAIL("dde: unknown --data '", name, "'. Use a toy set (", all,
             "), fashion-mnist, mnist, gaussian6d, or a path to a .csv / .npy file of shape [rows, features]");
}

void apply_defaults(TrainConfig& c, const Data& d) {
  const bool toy = d.kind == "toy", image = d.kind == "image";
  if (c.sigma < 0) c.sigma = toy ? 0.2 : image ? 0.5 : 0.1;
  if (c.batch < 0) c.batch = toy ? 2048 : image ? 100 : 512;
  if (c.width < 0) c.width = toy ? 32 : image ? 256 : (d.dim > 16 ? 128 : 64);
  if (c.depth < 0) c.depth = toy ? 25 : image ? 16 : 25;
  if (c.steps < 0) c.steps = toy ? 1000 : image ? 2000 : 8000;
  if (c.gen_steps < 0) c.gen_steps = (!c.generator || d.kind == "tabular") ? 0 : (toy ? 60 : 500);
  if (!c.generator) c.gen_steps = 0;
  if (c.lr_schedule.empty()) c.lr_schedule = toy ? "cosine" : "step";
  // measured on 8gaussians (docs/results.md): 1e-3 barely moves a toy generator in 300
  // iterations; 3e-3 reached a lower MMD^2 after 400 than 1e-2
  if (c.gen_lr < 0) c.gen_lr = toy ? 3e-3 : c.lr;
  if (c.sq_init_steps < 0) c.sq_init_steps = std::max<int64_t>(1, c.steps / 5);
  if (c.eval_every < 0) c.eval_every = std::max<int64_t>(1, c.steps / 10);
  EMBER_CHECK(c.sigma > 0 && c.batch > 0 && c.steps >= 0 && c.gen_steps >= 0 && c.k_dde > 0 && c.lr > 0,
              "dde: sigma, batch, k and lr must be > 0 and steps >= 0");
  const Device dev = Device::parse(c.device);
  if (dev.is_cuda()) cuda::check_device(dev, "dde --device");
}

// ---------------------------------------------------------------------------------------
// networks

struct Nets {
  std::shared_ptr<nn::Module> sp, sq, g;
  int64_t zdim = 0;
};

Nets make_nets(const TrainConfig& c, const Data& d) {
  Nets n;
  if (d.kind == "image") {
    n.sp = std::make_shared<DenseNetMLP>(d.dim, c.width, c.depth, 1);
    n.sq = std::make_shared<DenseNetMLP>(d.dim, c.width, c.depth, 1);
    n.zdim = 16;
    n.g = std::make_shared<DenseNetMLP>(n.zdim, 64, 16, d.dim, /*end_sigmoid=*/true);
  } else {
    n.sp = std::make_shared<ResidualMLP>(d.dim, c.width, c.depth, 1);
    n.sq = std::make_shared<ResidualMLP>(d.dim, c.width, c.depth, 1);
    n.zdim = d.dim;
    n.g = std::make_shared<ResidualMLP>(d.dim, c.width, c.depth, d.dim, /*residual_output=*/true);
  }
  return n;
}

void set_trainable(nn::Module& m, bool on) {
  for (auto& p : m.parameters()) p.requires_grad_(on);
}

std::map<std::string, Tensor> prefixed(const std::map<std::string, Tensor>& in, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : in) out[prefix + k] = v;
  return out;
}
std::map<std::string, Tensor> with_prefix(const std::map<std::string, Tensor>& in, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : in)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

// ---------------------------------------------------------------------------------------
// evaluation and pictures

// The grid's points, row 0 at the top (y = +extent), as [grid^2, 2].
Tensor grid_points(double extent, int64_t n) {
  std::vector<float> v(n * n * 2);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      v[(r * n + c) * 2] = static_cast<float>(-extent + (c + 0.5) * 2 * extent / n);
      v[(r * n + c) * 2 + 1] = static_cast<float>(extent - (r + 0.5) * 2 * extent / n);
    }
  return from_vector(v, {n * n, 2});
}

void write_heatmap(const std::string& path, const Tensor& log_density, int64_t n) {
  // normalised density on the grid (exp of a softmax-shifted log density)
  auto lv = log_density.to_vector<double>();
  double m = -INFINITY;
  for (double v : lv) m = std::max(m, v);
  std::vector<double> p(lv.size());
  for (size_t i = 0; i < lv.size(); ++i) p[i] = std::exp(lv[i] - m);
  data::write_png(path, data::heatmap(p, static_cast<int>(n), static_cast<int>(n)));
}

void write_samples(const std::string& path, const Tensor& x, double extent) {
  auto v = x.to_vector<double>();
  data::write_png(path, data::scatter_histogram(v, -extent, extent, -extent, extent, 256, 256));
}

void write_image_grid(const std::string& path, const Tensor& x, int64_t count) {
  const int64_t n = std::min<int64_t>(count, x.size(0));
  const int64_t side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(x.size(1)))));
  std::vector<float> v = x.slice(0, 0, n).to_vector<float>();
  data::write_png(path, data::image_grid(v, static_cast<int>(n), 1, static_cast<int>(side), static_cast<int>(side),
                                         static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n)))), false));
}

// n samples of the generator, on its device (the latents are drawn there: the same Philox
// numbers as on the CPU).
// The generator's latents for n samples, drawn in chunks of 4,096 rows (generate's order).
Tensor draw_latents(int64_t n, int64_t zdim, const Device& device, Generator& gen) {
  TensorList parts;
  for (int64_t b = 0; b < n; b += 4096)
    parts.push_back(randn({std::min<int64_t>(4096, n - b), zdim}, {.device = device}, &gen));
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

// g applied to latents z, 4,096 rows at a time, without a graph.
Tensor generate_from(nn::Module& g, const Tensor& z) {
  NoGrad ng;
  TensorList parts;
  for (int64_t b = 0; b < z.size(0); b += 4096)
    parts.push_back(g(z.slice(0, b, std::min<int64_t>(z.size(0), b + 4096))));
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

Tensor generate(nn::Module& g, int64_t n, int64_t zdim, Generator& gen) {
  return generate_from(g, draw_latents(n, zdim, g.device(), gen));
}

// Annealed Langevin dynamics with grad s as the score at every level (DDE+ALD): the step at
// level l is alpha_l = step * (sigma_l / sigma_L)^2; x <- x + alpha/2 grad s(x) + sqrt(alpha) z.
Tensor langevin(nn::Module& s, int64_t n, int64_t dim, const TrainConfig& c, Generator& gen) {
  const Device dev = s.device();
  Tensor x = mul(randn({n, dim}, {.device = dev}, &gen), c.langevin_sigma_max);
  const int64_t L = c.langevin_levels;
  for (int64_t l = 0; l < L; ++l) {
    double sig = L > 1 ? c.langevin_sigma_max * std::pow(c.sigma / c.langevin_sigma_max, double(l) / double(L - 1)) : c.sigma;
    double alpha = c.langevin_step * (sig / c.sigma) * (sig / c.sigma) * c.sigma * c.sigma;
    for (int64_t t = 0; t < c.langevin_steps; ++t) {
      Tensor xs = x.detach();
      xs.requires_grad_(true);
      Tensor gr = grad({sum(s(xs))}, {xs})[0];
      NoGrad ng;
      x = add(add(x, mul(gr, alpha / 2)), mul(randn({n, dim}, {.device = dev}, &gen), std::sqrt(alpha)));
    }
  }
  return x.detach().to(Device::cpu());
}

struct Held {
  double mean_ll = 0, spread = 0, exact = NAN;
};

// Held-out log-likelihood: log p~(x) = s(x) - log Z, Z by importance sampling (trainer.h).
Held heldout_likelihood(nn::Module& s, const Data& d, double sigma, int64_t estimates, int64_t samples, Generator& gen) {
  Tensor mean = d.train.to(DType::f64).mean({0});
  Tensor var = add(sub(square(d.train.to(DType::f64)).mean({0}), square(mean)), sigma * sigma);
  std::vector<double> lz = log_partition(s, mean, var, estimates, samples, &gen);
  double m = -INFINITY;
  for (double v : lz) m = std::max(m, v);
  double acc = 0;
  for (double v : lz) acc += std::exp(v - m);
  double log_z = m + std::log(acc / static_cast<double>(lz.size()));
  double lo = *std::min_element(lz.begin(), lz.end()), hi = *std::max_element(lz.begin(), lz.end());
  Held h;
  h.mean_ll = evaluate(s, d.test).mean().item() - log_z;
  h.spread = hi - lo;
  if (d.gaussian) {
    auto ex = gaussian_logpdf(d, d.test, sigma);
    double t = 0;
    for (double v : ex) t += v;
    h.exact = t / static_cast<double>(ex.size());
  }
  return h;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// the run

namespace {

struct Run {
  TrainConfig cfg;
  Data data;
  Nets nets;
  std::unique_ptr<nn::Adam> opt_sp, opt_sq, opt_g;
  Generator gen;
  int64_t step = 0;      // DDE steps done on the data
  int64_t gen_step = 0;  // generator iterations done
  bool sq_ready = false;  // Algorithm 1, line 2: s_q fitted to the initial generator
  double sigma_now = 0;
  std::string dir;
  Device device;  // where the networks and every training tensor live
};

// Builds the three networks on --device; before the optimizers, which hold their parameters.
void build_nets(Run& r) {
  r.device = Device::parse(r.cfg.device);
  r.nets = make_nets(r.cfg, r.data);
  if (r.device.is_cuda())
    for (nn::Module* m : {r.nets.sp.get(), r.nets.sq.get(), r.nets.g.get()}) m->to(r.device);
}

double sigma_at(const Run& r, int64_t step) {
  if (r.data.kind != "tabular") return r.cfg.sigma;
  // tabular: sigma annealed from cfg.sigma by 1/1.1 every anneal_every steps, down to a floor
  double s = r.cfg.sigma / std::pow(1.1, static_cast<double>(step / std::max<int64_t>(1, r.cfg.anneal_every)));
  return std::max(s, r.cfg.sigma_min);
}

double lr_at(const Run& r, int64_t step) {
  if (r.cfg.lr_schedule == "cosine") {
    // cosine decay to 10% over the DDE phase: the density stops drifting at the end
    double t = std::min(1.0, static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, r.cfg.steps)));
    return r.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * t)));
  }
  if (r.cfg.lr_decay_every <= 0) return r.cfg.lr;
  return r.cfg.lr * std::pow(r.cfg.lr_decay, static_cast<double>(step / r.cfg.lr_decay_every));
}

void save_checkpoint(const Run& r) {
  std::map<std::string, Tensor> t;
  for (auto& [k, v] : prefixed(r.nets.sp->state_dict(), "sp.")) t[k] = v;
  for (auto& [k, v] : prefixed(r.nets.sq->state_dict(), "sq.")) t[k] = v;
  for (auto& [k, v] : prefixed(r.nets.g->state_dict(), "g.")) t[k] = v;
  for (auto& [k, v] : prefixed(r.opt_sp->state_dict(), "opt_sp.")) t[k] = v;
  for (auto& [k, v] : prefixed(r.opt_sq->state_dict(), "opt_sq.")) t[k] = v;
  for (auto& [k, v] : prefixed(r.opt_g->state_dict(), "opt_g.")) t[k] = v;
  auto st = r.gen.state();
  std::map<std::string, std::string> meta{{"format", "ember-dde-checkpoint-1"},
                                          {"step", std::to_string(r.step)},
                                          {"gen_step", std::to_string(r.gen_step)},
                                          {"sq_ready", r.sq_ready ? "1" : "0"},
                                          {"rng_seed", std::to_string(st[0])},
                                          {"rng_offset", std::to_string(st[1])},
                                          {"args", join(r.cfg.args_for_resume, "\x1f")}};
  save_safetensors(r.dir + "/checkpoint.safetensors", t, meta);
}

void load_checkpoint(Run& r, const SafetensorsFile& f) {
  auto need = [&](const char* k) {
    auto it = f.metadata.find(k);
    EMBER_CHECK(it != f.metadata.end(), r.dir, "/checkpoint.safetensors: metadata '", k, "' missing; not a DDE checkpoint");
    return it->second;
  };
  EMBER_CHECK(need("format") == "ember-dde-checkpoint-1", r.dir, "/checkpoint.safetensors: unknown checkpoint format");
  r.nets.sp->load_state_dict(with_prefix(f.tensors, "sp."));
  r.nets.sq->load_state_dict(with_prefix(f.tensors, "sq."));
  r.nets.g->load_state_dict(with_prefix(f.tensors, "g."));
  r.opt_sp->load_state_dict(with_prefix(f.tensors, "opt_sp."));
  r.opt_sq->load_state_dict(with_prefix(f.tensors, "opt_sq."));
  r.opt_g->load_state_dict(with_prefix(f.tensors, "opt_g."));
  r.step = std::stoll(need("step"));
  r.gen_step = std::stoll(need("gen_step"));
  r.sq_ready = need("sq_ready") == "1";
  r.gen.set_state({std::stoull(need("rng_seed")), std::stoull(need("rng_offset"))});
}

void write_config(const Run& r) {
  const TrainConfig& c = r.cfg;
  std::ostringstream o;
  o << "{\n  \"method\": \"dde\",\n  \"data\": \"" << nn::json_escape(c.data) << "\",\n  \"sigma\": " << c.sigma
    << ",\n  \"steps\": " << c.steps << ",\n  \"gen_steps\": " << c.gen_steps << ",\n  \"k_dde\": " << c.k_dde
    << ",\n  \"batch\": " << c.batch << ",\n  \"lr\": " << c.lr << ",\n  \"width\": " << c.width
    << ",\n  \"depth\": " << c.depth << ",\n  \"seed\": " << c.seed << ",\n  \"device\": \"" << c.device
    << "\",\n  \"cuda_graphs\": " << (c.cuda_graphs ? "true" : "false")
    << ",\n  \"threads\": " << kernels::cpu::num_threads() << ",\n  \"args\": \""
    << nn::json_escape(join(c.args_for_resume, " ")) << "\"\n}\n";
  serialization::atomic_write_file(r.dir + "/config.json", o.str());
}

void check_finite(double loss, const char* what, int64_t step, const Run& r) {
  EMBER_CHECK(std::isfinite(loss), "dde: the ", what, " loss is ", loss, " at step ", step,
              ". Lower --lr or raise --sigma; the last good checkpoint is ", r.dir, "/checkpoint.safetensors (resume with --resume ",
              r.dir, ")");
}

// Scores of the toy density estimate: KL(p~ || exp(s)/Z) on the grid.
double toy_kl(Run& r, nn::Module& s) {
  Tensor pts = grid_points(r.data.toy->extent(), r.cfg.grid);
  return grid_kl(r.data.toy->log_density(pts, r.sigma_now), evaluate(s, pts));
}

double toy_mmd(Run& r, int64_t n) {
  Generator eval_gen(r.cfg.seed + 977);  // the same points at every evaluation
  Tensor gx = generate(*r.nets.g, n, r.nets.zdim, eval_gen).to(Device::cpu());
  Tensor dx = r.data.toy->sample(n, &eval_gen);
  return mmd2_rbf(gx, dx, 0.5);
}

void final_outputs(Run& r, nn::MetricsLog& log) {
  std::map<std::string, double> res;
  Generator eval_gen(r.cfg.seed + 4242);
  const std::string& dir = r.dir;
  if (r.data.kind == "toy") {
    const int64_t side = 2 * r.cfg.grid;  // pictures at twice the KL grid's resolution
    Tensor pts = grid_points(r.data.toy->extent(), side);
    write_heatmap(dir + "/density_true_smoothed.png", r.data.toy->log_density(pts, r.cfg.sigma), side);
    write_heatmap(dir + "/density_dde.png", evaluate(*r.nets.sp, pts), side);
    res["kl_dde"] = toy_kl(r, *r.nets.sp);
    write_samples(dir + "/samples_data.png", r.data.toy->sample(10000, &eval_gen), r.data.toy->extent());
    if (r.cfg.gen_steps > 0) {
      write_heatmap(dir + "/density_generator_dde.png", evaluate(*r.nets.sq, pts), side);
      write_samples(dir + "/samples_generator.png", generate(*r.nets.g, 10000, r.nets.zdim, eval_gen).to(Device::cpu()),
                    r.data.toy->extent());
      res["mmd2_generator"] = toy_mmd(r, 10000);
    }
    if (r.cfg.sampler == "langevin") {
      Tensor x = langevin(*r.nets.sp, 2000, 2, r.cfg, eval_gen);
      write_samples(dir + "/samples_langevin.png", x, r.data.toy->extent());
      res["mmd2_langevin"] = mmd2_rbf(x, r.data.toy->sample(2000, &eval_gen), 0.5);
    }
  } else if (r.data.kind == "image") {
    if (r.cfg.gen_steps > 0) write_image_grid(dir + "/samples_generator.png", generate(*r.nets.g, 64, r.nets.zdim, eval_gen).to(Device::cpu()), 64);
    write_image_grid(dir + "/samples_data.png", r.data.batch(64, eval_gen), 64);
  } else {
    Held h = heldout_likelihood(*r.nets.sp, r.data, r.sigma_now, 5, 51200, eval_gen);
    res["heldout_loglik"] = h.mean_ll;
    res["log_z_spread"] = h.spread;
    if (std::isfinite(h.exact)) {
      res["heldout_loglik_exact"] = h.exact;
      res["loglik_error"] = h.mean_ll - h.exact;
    }
  }
  std::ostringstream o;
  o << "{";
  bool first = true;
  for (auto& [k, v] : res) {
    o << (first ? "" : ", ") << "\"" << k << "\": " << v;
    first = false;
    std::fprintf(stderr, "  %-22s %.6g\n", k.c_str(), v);
  }
  o << "}\n";
  serialization::atomic_write_file(dir + "/results.json", o.str());
  log.write(res, {{"phase", "final"}});
}

// --cuda-graphs: phase 1's step captured once and replayed. The batch (drawn on the CPU) and the
// noise (drawn on the GPU from r.gen, the same Philox numbers as the eager step's randn_like) are
// made outside the graph and copied into static buffers the graph reads; a randn inside the
// graph would replay its first numbers. Captured: zero_grad, the loss with its double backward,
// backward and Adam's fused update, which reads the step's learning rate and bias corrections
// from a device buffer that prepare_step() fills before each replay (nn/optim.h). Not
// captured: reading the loss and the NaN check. sigma is baked in: a new sigma (tabular
// annealing) captures again.
struct GraphStep {
  std::unique_ptr<cuda::CudaGraph> graph;
  Tensor x, noise;  // the static inputs
  Tensor loss;      // the captured output
  double sigma = NAN;
};

Tensor graph_dde_step(Run& r, GraphStep& gs) {
  Tensor batch = r.data.batch(r.cfg.batch, r.gen);
  {
    NoGrad ng;
    if (!gs.x.defined()) {
      gs.x = Tensor::empty(batch.sizes(), {.dtype = batch.dtype(), .device = r.device});
      gs.noise = Tensor::empty(batch.sizes(), {.dtype = batch.dtype(), .device = r.device});
    }
    EMBER_CHECK(batch.sizes() == gs.x.sizes(), "dde --cuda-graphs: a batch of shape ", shape_str(batch.sizes()),
                " for a graph captured with ", shape_str(gs.x.sizes()), " (shapes must be static)");
    gs.x.copy_(batch);                           // host -> device through pinned staging
    gs.noise.copy_(randn_like(gs.x, &r.gen));     // the draw dde_loss makes eagerly
  }
  r.opt_sp->prepare_step();  // this step's count and scalars, uploaded outside the graph
  if (!gs.graph || !gs.graph->captured() || gs.sigma != r.sigma_now) {
    if (!gs.graph) gs.graph = std::make_unique<cuda::CudaGraph>(r.device.index);
    const double sigma = r.sigma_now;
    gs.loss = Tensor();
    gs.graph->capture([&] {
      r.opt_sp->zero_grad();
      gs.loss = dde_loss_given_noise(*r.nets.sp, gs.x, gs.noise, sigma);
      gs.loss.backward();
      r.opt_sp->launch_step();
    });
    gs.sigma = sigma;
  }
  gs.graph->replay();
  return gs.loss;
}

// --cuda-graphs in phase 2, the same way: s_q's DDE step on the generator's samples (K per
// generator iteration, and the sq_init_steps before them) and the generator's step are each
// captured once and replayed. Their draws (the latents, then the noise, in the eager step's
// order) are made outside the graph into static buffers, and the optimizer's prepare_step() runs
// before every replay, so s_q's K replays count K steps of Adam. The generator step is captured
// with s_q frozen, as it runs eagerly.
struct GraphSampleStep {
  std::unique_ptr<cuda::CudaGraph> graph;
  Tensor z, noise;  // the static inputs: the latents and the noise of the step's loss
  Tensor loss;      // the captured output
};

// Copies src into the static buffer dst, made like src on first use.
void into_static(Tensor& dst, const Tensor& src) {
  if (!dst.defined()) dst = Tensor::empty(src.sizes(), {.dtype = src.dtype(), .device = src.device()});
  EMBER_CHECK(dst.sizes() == src.sizes(), "dde --cuda-graphs: an input of shape ", shape_str(src.sizes()),
              " for a graph captured with ", shape_str(dst.sizes()), " (shapes must be static)");
  dst.copy_(src);
}

// The noise of a DDE loss on the generator's samples: their shape and dtype, drawn from r.gen.
Tensor sample_noise(Run& r, const Tensor& z, Tensor& noise) {
  if (noise.defined()) return randn(noise.sizes(), options_of(noise), &r.gen);
  return randn_like(generate_from(*r.nets.g, z), &r.gen);  // first call: the samples' shape, once
}

// Fills gs's static inputs (the latents z, then the noise drawn after them), counts opt's step,
// captures `step` (which returns the loss) on the first call, and replays it.
template <typename Step>
Tensor replay_sample_step(Run& r, GraphSampleStep& gs, const Tensor& z, nn::Adam& opt, const Step& step) {
  {
    NoGrad ng;
    into_static(gs.z, z);
    into_static(gs.noise, sample_noise(r, gs.z, gs.noise));
  }
  opt.prepare_step();
  if (!gs.graph) {
    gs.graph = std::make_unique<cuda::CudaGraph>(r.device.index);
    gs.graph->capture([&] { gs.loss = step(); });
  }
  gs.graph->replay();
  return gs.loss;
}

// One L_DDE step of s_q on a batch of the generator's samples (eq. 5 on q).
Tensor graph_sq_step(Run& r, GraphSampleStep& gs) {
  return replay_sample_step(r, gs, draw_latents(r.cfg.batch, r.nets.zdim, r.device, r.gen), *r.opt_sq, [&] {
    Tensor gx = generate_from(*r.nets.g, gs.z);
    r.opt_sq->zero_grad();
    Tensor loss = dde_loss_given_noise(*r.nets.sq, gx, gs.noise, r.cfg.sigma);
    loss.backward();
    r.opt_sq->launch_step();
    return loss;
  });
}

// The generator's step (Algorithm 1): s_q and s_p fixed, the gradient through both into g.
Tensor graph_generator_step(Run& r, GraphSampleStep& gs) {
  return replay_sample_step(r, gs, randn({r.cfg.batch, r.nets.zdim}, {.device = r.device}, &r.gen), *r.opt_g, [&] {
    r.opt_g->zero_grad();
    Tensor loss = generator_loss_given_noise(*r.nets.sq, *r.nets.sp, (*r.nets.g)(gs.z), gs.noise, r.cfg.sigma);
    loss.backward();
    r.opt_g->launch_step();
    return loss;
  });
}

}  // namespace

std::string train(TrainConfig cfg) {
  std::optional<SafetensorsFile> resume_from;
  if (!cfg.resume.empty()) {
    // The run's own arguments, then the ones given now (later ones win: --steps extends a run).
    resume_from = load_safetensors(cfg.resume + "/checkpoint.safetensors");
    auto it = resume_from->metadata.find("args");
    EMBER_CHECK(it != resume_from->metadata.end(), cfg.resume, "/checkpoint.safetensors: no saved arguments; not a DDE run");
    std::vector<std::string> merged = split_str(it->second, '\x1f');
    for (size_t i = 0; i < cfg.args_for_resume.size(); ++i) {
      if (cfg.args_for_resume[i] == "--resume") {
        ++i;
        continue;
      }
      merged.push_back(cfg.args_for_resume[i]);
    }
    std::string dir = cfg.resume;
    cfg = parse_train_args(merged);
    cfg.resume = dir;
  }
  if (cfg.threads > 0) kernels::cpu::set_num_threads(static_cast<int>(cfg.threads));
  Run r;
  r.cfg = cfg;
  r.data = load_data(r.cfg);
  apply_defaults(r.cfg, r.data);
  manual_seed(r.cfg.seed);  // network initialisation
  build_nets(r);
  r.gen = Generator(r.cfg.seed + 1);  // every training draw comes from here (checkpointed)
  r.opt_sp = std::make_unique<nn::Adam>(r.nets.sp->parameters(), nn::AdamOptions{.lr = r.cfg.lr});
  r.opt_sq = std::make_unique<nn::Adam>(r.nets.sq->parameters(), nn::AdamOptions{.lr = r.cfg.lr});
  r.opt_g = std::make_unique<nn::Adam>(r.nets.g->parameters(), nn::AdamOptions{.lr = r.cfg.gen_lr});

  bool resumed = false;
  if (!r.cfg.resume.empty()) {
    r.dir = r.cfg.resume;
    load_checkpoint(r, *resume_from);
    resumed = true;
  } else {
    if (r.cfg.out.empty()) {
      char stamp[32];
      std::time_t now = std::time(nullptr);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
      std::string safe = r.cfg.data;
      for (char& ch : safe)
        if (ch == '/' || ch == '.') ch = '_';
      r.dir = "runs/dde-" + safe + "-" + stamp;
    } else {
      r.dir = r.cfg.out;
    }
    std::error_code ec;
    std::filesystem::create_directories(r.dir, ec);
    EMBER_CHECK(!ec && std::filesystem::is_directory(r.dir), "dde: cannot create run folder ", r.dir, " (",
                ec.message(), ")");
  }
  write_config(r);
  nn::MetricsLog log(r.dir + "/metrics.jsonl", resumed);
  std::fprintf(stderr, "ember dde: data %s (%s, %lld-D), sigma %g, batch %lld, net %lldx%lld, %d threads -> %s%s\n",
               r.cfg.data.c_str(), r.data.kind.c_str(), static_cast<long long>(r.data.dim), r.cfg.sigma,
               static_cast<long long>(r.cfg.batch), static_cast<long long>(r.cfg.depth),
               static_cast<long long>(r.cfg.width), kernels::cpu::num_threads(), r.dir.c_str(),
               resumed ? " (resumed)" : "");

  g_interrupted = false;
  auto old_handler = std::signal(SIGINT, on_sigint);
  auto interrupted = [&]() {
    if (!g_interrupted) return false;
    save_checkpoint(r);
    std::fprintf(stderr, "\ninterrupted: checkpoint saved; continue with: ember dde --resume %s\n", r.dir.c_str());
    return true;
  };

  // ---- phase 1: the data's DDE s_p (eq. 5) ----
  {
    nn::Progress bar("dde", r.cfg.steps, r.step);
    double last_kl = NAN, lv = NAN;
    GraphStep gs;         // --cuda-graphs
    bool warmed = false;  // a graph is captured after one eager step of this process (cuBLAS, the cache)
    while (r.step < r.cfg.steps) {
      if (interrupted()) return r.dir;
      r.sigma_now = sigma_at(r, r.step);
      r.opt_sp->lr = lr_at(r, r.step);
      Tensor loss;
      const bool replayed = r.cfg.cuda_graphs && warmed;
      if (replayed) {
        loss = graph_dde_step(r, gs);
      } else {
        Tensor x = r.data.batch(r.cfg.batch, r.gen).to(r.device);
        r.opt_sp->zero_grad();
        loss = dde_loss(*r.nets.sp, x, r.sigma_now, &r.gen);
        loss.backward();
        r.opt_sp->step();
        warmed = true;
      }
      ++r.step;
      const bool eval_now = r.step % r.cfg.eval_every == 0 || r.step == r.cfg.steps;
      // Eagerly the loss is read every step; with graphs (whose point is not waiting for the GPU)
      // only where it is logged, evaluated or checked before a checkpoint.
      if (!replayed || r.step % 10 == 0 || eval_now || r.step % r.cfg.checkpoint_every == 0) {
        lv = loss.item() / static_cast<double>(r.cfg.batch);
        check_finite(lv, "DDE", r.step, r);
      }
      std::map<std::string, double> m{{"step", double(r.step)}, {"loss", lv}, {"sigma", r.sigma_now}};
      if (eval_now) {
        if (r.data.kind == "toy") m["kl"] = last_kl = toy_kl(r, *r.nets.sp);
        if (r.data.kind == "tabular") {
          Held h = heldout_likelihood(*r.nets.sp, r.data, r.sigma_now, 2, 8192, r.gen);
          m["heldout_loglik"] = h.mean_ll;
          if (std::isfinite(h.exact)) m["heldout_loglik_exact"] = h.exact;
        }
      }
      if (r.step % 10 == 0 || m.size() > 3) log.write(m, {{"phase", "dde"}});
      if (r.step % r.cfg.checkpoint_every == 0) save_checkpoint(r);
      char extra[64] = "";
      if (std::isfinite(last_kl)) std::snprintf(extra, sizeof extra, "kl %.4f", last_kl);
      bar.update(r.step, lv, extra);
    }
    bar.finish();
  }

  // ---- phase 2: the generator (Algorithm 1) ----
  if (r.cfg.gen_steps > 0) {
    set_trainable(*r.nets.sp, false);  // s_p is fixed: no parameter gradients needed through it
    // --cuda-graphs: each kind of step is captured after one eager step of it in this process
    GraphSampleStep sq_graph, g_graph;
    bool sq_warmed = false, g_warmed = false;
    auto sq_step = [&]() -> Tensor {  // L_DDE on s_q; the samples carry no gradient to g
      if (r.cfg.cuda_graphs && sq_warmed) return graph_sq_step(r, sq_graph);
      Tensor gx = generate(*r.nets.g, r.cfg.batch, r.nets.zdim, r.gen);
      r.opt_sq->zero_grad();
      Tensor loss = dde_loss(*r.nets.sq, gx, r.cfg.sigma, &r.gen);
      loss.backward();
      r.opt_sq->step();
      sq_warmed = true;
      return loss;
    };
    auto generator_step = [&]() -> Tensor {
      if (r.cfg.cuda_graphs && g_warmed) return graph_generator_step(r, g_graph);
      r.opt_g->zero_grad();
      Tensor gz = (*r.nets.g)(randn({r.cfg.batch, r.nets.zdim}, {.device = r.device}, &r.gen));
      Tensor lg = generator_loss(*r.nets.sq, *r.nets.sp, gz, r.cfg.sigma, &r.gen);
      lg.backward();
      r.opt_g->step();
      g_warmed = true;
      return lg;
    };
    if (!r.sq_ready) {
      // Algorithm 1, line 2: s_q = argmin L_DDE on the initial generator's samples, so the
      // first generator steps already follow the right density difference.
      nn::Progress init_bar("fit s_q", r.cfg.sq_init_steps);
      for (int64_t i = 0; i < r.cfg.sq_init_steps; ++i) {
        if (interrupted()) return r.dir;
        const Tensor loss = sq_step();
        init_bar.update(i + 1, loss.item() / static_cast<double>(r.cfg.batch));
      }
      init_bar.finish();
      r.sq_ready = true;
      save_checkpoint(r);
    }
    nn::Progress bar("generator", r.cfg.gen_steps, r.gen_step);
    double last_mmd = NAN;
    while (r.gen_step < r.cfg.gen_steps) {
      if (interrupted()) return r.dir;
      Tensor last_sq;
      for (int64_t k = 0; k < r.cfg.k_dde; ++k) last_sq = sq_step();  // K steps of L_DDE on s_q
      const double lq = last_sq.item() / static_cast<double>(r.cfg.batch);
      check_finite(lq, "generator-DDE", r.gen_step, r);
      set_trainable(*r.nets.sq, false);
      const Tensor lg = generator_step();
      set_trainable(*r.nets.sq, true);
      ++r.gen_step;
      double lgv = lg.item() / static_cast<double>(r.cfg.batch);
      check_finite(lgv, "generator", r.gen_step, r);
      std::map<std::string, double> m{{"gen_step", double(r.gen_step)}, {"loss_sq", lq}, {"loss_g", lgv}};
      const int64_t every = std::max<int64_t>(1, r.cfg.gen_steps / 10);
      if (r.data.kind == "toy" && (r.gen_step % every == 0 || r.gen_step == r.cfg.gen_steps))
        m["mmd2"] = last_mmd = toy_mmd(r, 2000);
      log.write(m, {{"phase", "generator"}});
      if (r.gen_step % std::max<int64_t>(1, r.cfg.checkpoint_every / r.cfg.k_dde) == 0) save_checkpoint(r);
      char extra[64] = "";
      if (std::isfinite(last_mmd)) std::snprintf(extra, sizeof extra, "mmd2 %.5f", last_mmd);
      bar.update(r.gen_step, lgv, extra);
    }
    bar.finish();
    set_trainable(*r.nets.sp, true);
  }
  std::signal(SIGINT, old_handler);
  save_checkpoint(r);
  r.sigma_now = sigma_at(r, r.step);
  final_outputs(r, log);
  std::fprintf(stderr, "done: %s\n", r.dir.c_str());
  return r.dir;
}

// ---------------------------------------------------------------------------------------
// command line

std::string train_usage() {
  return "usage: ember dde [--data NAME] [--sigma S] [--steps N] [--gen-steps N] [--k K] [--sq-init-steps N] [--batch B] [--lr LR] [--gen-lr LR]\n"
         "                [--width W] [--depth D] [--no-generator] [--device cpu|cuda[:N]] [--cuda-graphs] [--seed S] [--out DIR]\n"
         "                [--resume DIR] [--eval-every N] [--checkpoint-every N] [--grid N] [--threads N]\n"
         "                [--sigma-min S] [--anneal-every N] [--lr-schedule cosine|step] [--lr-decay F --lr-decay-every N] [--data-dir DIR]\n"
         "                [--sampler generator|langevin] [--langevin-levels L] [--langevin-steps T]\n"
         "                [--langevin-sigma-max S] [--langevin-step E]\n"
         "       ember dde sample --run DIR [--n N] [--sampler generator|langevin]\n"
         "       ember dde eval --run DIR\n"
         "NAME: a 2-D toy set (checkerboard, 8gaussians, 25gaussians, 2spirals, rings, swissroll, moons,\n"
         "      mixture, vonmises), fashion-mnist, mnist, gaussian6d, or a path to a .csv / .npy table.\n"
         "--cuda-graphs (with --device cuda): each kind of training step (the DDE step on the data, s_q's\n"
         "      step and the generator's) is captured once as a CUDA graph and replayed (the same numbers as\n"
         "      without it; --no-cuda-graphs turns it off on --resume).\n";
}

TrainConfig parse_train_args(const std::vector<std::string>& args) {
  TrainConfig c;
  c.args_for_resume = args;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      EMBER_CHECK(i + 1 < args.size(), "dde: option ", a, " needs a value\n", train_usage());
      return args[++i];
    };
    auto num = [&]() {
      const std::string& v = value();
      try {
        size_t used = 0;
        double d = std::stod(v, &used);
        if (used == v.size()) return d;
      } catch (const std::exception&) {
      }
      EMBER_FAIL("dde: option ", a, " expects a number, got '", v, "'");
    };
    auto integer = [&]() {
      double d = num();
      EMBER_CHECK(d == std::floor(d), "dde: option ", a, " expects an integer, got ", d);
      return static_cast<int64_t>(d);
    };
    if (a == "--data") c.data = value();
    else if (a == "--data-dir") c.data_dir = value();
    else if (a == "--sigma") c.sigma = num();
    else if (a == "--sigma-min") c.sigma_min = num();
    else if (a == "--anneal-every") c.anneal_every = integer();
    else if (a == "--steps") c.steps = integer();
    else if (a == "--gen-steps") c.gen_steps = integer();
    else if (a == "--k") c.k_dde = integer();
    else if (a == "--sq-init-steps") c.sq_init_steps = integer();
    else if (a == "--batch") c.batch = integer();
    else if (a == "--lr") c.lr = num();
    else if (a == "--gen-lr") c.gen_lr = num();
    else if (a == "--lr-decay") c.lr_decay = num();
    else if (a == "--lr-schedule") c.lr_schedule = value();
    else if (a == "--lr-decay-every") c.lr_decay_every = integer();
    else if (a == "--width") c.width = integer();
    else if (a == "--depth") c.depth = integer();
    else if (a == "--no-generator") c.generator = false;
    else if (a == "--device") c.device = value();
    else if (a == "--cuda-graphs") c.cuda_graphs = true;
    else if (a == "--no-cuda-graphs") c.cuda_graphs = false;
    else if (a == "--seed") c.seed = static_cast<uint64_t>(integer());
    else if (a == "--out") c.out = value();
    else if (a == "--resume") c.resume = value();
    else if (a == "--eval-every") c.eval_every = integer();
    else if (a == "--checkpoint-every") c.checkpoint_every = integer();
    else if (a == "--grid") c.grid = integer();
    else if (a == "--threads") c.threads = integer();
    else if (a == "--sampler") c.sampler = value();
    else if (a == "--langevin-levels") c.langevin_levels = integer();
    else if (a == "--langevin-steps") c.langevin_steps = integer();
    else if (a == "--langevin-sigma-max") c.langevin_sigma_max = num();
    else if (a == "--langevin-step") c.langevin_step = num();
    else EMBER_FAIL("dde: unknown option '", a, "'\n", train_usage());
  }
  EMBER_CHECK(c.lr_schedule.empty() || c.lr_schedule == "cosine" || c.lr_schedule == "step", "dde: --lr-schedule must be cosine or step");
  EMBER_CHECK(c.sampler == "generator" || c.sampler == "langevin", "dde: --sampler must be generator or langevin");
  EMBER_CHECK(c.checkpoint_every > 0 && c.grid >= 8, "dde: --checkpoint-every must be > 0 and --grid >= 8");
  EMBER_CHECK(!c.cuda_graphs || c.device.rfind("cuda", 0) == 0, "dde: --cuda-graphs needs --device cuda (CUDA graphs "
              "replay GPU work; got --device ", c.device, "). Drop --cuda-graphs to train on the CPU");
  return c;
}

namespace {
// Rebuilds a run from its folder: the saved arguments, the checkpoint.
Run open_run(const std::string& dir) {
  SafetensorsFile f = load_safetensors(dir + "/checkpoint.safetensors");
  auto it = f.metadata.find("args");
  EMBER_CHECK(it != f.metadata.end(), dir, "/checkpoint.safetensors: no saved arguments; not a DDE run folder");
  Run r;
  r.cfg = parse_train_args(split_str(it->second, '\x1f'));
  r.data = load_data(r.cfg);
  apply_defaults(r.cfg, r.data);
  build_nets(r);
  r.opt_sp = std::make_unique<nn::Adam>(r.nets.sp->parameters(), nn::AdamOptions{.lr = r.cfg.lr});
  r.opt_sq = std::make_unique<nn::Adam>(r.nets.sq->parameters(), nn::AdamOptions{.lr = r.cfg.lr});
  r.opt_g = std::make_unique<nn::Adam>(r.nets.g->parameters(), nn::AdamOptions{.lr = r.cfg.gen_lr});
  r.dir = dir;
  load_checkpoint(r, f);
  r.sigma_now = sigma_at(r, r.step);
  return r;
}
}  // namespace

void sample(const std::string& dir, int64_t n, const std::string& sampler) {
  Run r = open_run(dir);
  Generator g(static_cast<uint64_t>(std::time(nullptr)));
  Tensor x;
  if (sampler == "langevin") {
    x = langevin(*r.nets.sp, n, r.data.dim, r.cfg, g);
  } else {
    EMBER_CHECK(r.gen_step > 0, "dde sample: the run in ", dir, " trained no generator; use --sampler langevin");
    x = generate(*r.nets.g, n, r.nets.zdim, g).to(Device::cpu());
  }
  std::string path = dir + "/sample_" + sampler + ".png";
  if (r.data.kind == "toy") write_samples(path, x, r.data.toy->extent());
  else if (r.data.kind == "image") write_image_grid(path, x, n);
  else EMBER_FAIL("dde sample: no picture for ", r.data.dim, "-D tabular data");
  std::fprintf(stderr, "wrote %s\n", path.c_str());
}

void eval(const std::string& dir) {
  Run r = open_run(dir);
  nn::MetricsLog log(dir + "/metrics.jsonl", true);
  final_outputs(r, log);
}

}  // namespace ember::models::dde
