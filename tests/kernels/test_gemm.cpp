// sgemm / dgemm / batched against a naive double-precision reference: odd sizes, all four
// transpose combinations, alpha / beta, padded leading dimensions, NaN-poisoned C with beta = 0,
// every micro-kernel the host can run (portable, avx2, avx512), one and several threads.
//
// Tolerance: |C - ref| <= tol * (|alpha| * sum_p |A(i,p) B(p,j)| + |beta C0(i,j)|) with
// tol = 4 (K + 2) eps (the worst-case bound of a length-K dot product, so a wrong index or a
// dropped term, which gives an O(1) relative error, always fails).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "ember/kernels/cpu/gemm.h"
#include "ember/kernels/cpu/parallel.h"

namespace {

using namespace ember::kernels::cpu;

// Restores the micro-kernel and thread count a test changed.
struct KernelScope {
  std::string isa = gemm_isa();
  int threads = num_threads();
  ~KernelScope() {
    set_gemm_isa(isa.c_str());
    set_num_threads(threads);
  }
};

std::vector<std::string> runnable_isas() {
  KernelScope keep;
  std::vector<std::string> out;
  for (const char* isa : {"portable", "avx2", "avx512"})
    if (set_gemm_isa(isa)) out.push_back(isa);
  return out;
}

template <typename T>
std::vector<T> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.1, 1.0);
  std::bernoulli_distribution sign(0.5);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(sign(gen) ? u(gen) : -u(gen));  // never zero
  return v;
}

template <typename T>
void gemm_call(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template <typename T>
void gemm_batched_call(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                       int64_t lda, int64_t sa, const T* B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc,
                       int64_t sc) {
  if constexpr (std::is_same_v<T, float>) {
    sgemm_batched(batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc);
  } else {
    dgemm_batched(batch, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc);
  }
}

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  double alpha, beta;
  int64_t pad = 0;  // extra elements at the end of every row (lda, ldb, ldc > columns)
};

std::string describe(const Case& c, const std::string& isa) {
  return isa + " " + (c.ta ? "T" : "N") + (c.tb ? "T" : "N") + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + " pad=" + std::to_string(c.pad);
}

// Checks one product (batch products when batch > 0, through the batched entry point).
template <typename T>
void check(const Case& c, const std::string& isa, int64_t batch = 0) {
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  const int64_t nb = std::max<int64_t>(batch, 1);
  const int64_t sa = a_rows * lda + 3, sb = b_rows * ldb + 5, sc = c.M * ldc + 7;  // gaps between matrices
  const uint32_t seed = static_cast<uint32_t>(c.M * 131 + c.N * 31 + c.K * 7 + c.ta * 2 + c.tb + c.pad);
  std::vector<T> A = random_values<T>(std::max<int64_t>(1, nb * sa), seed);
  std::vector<T> B = random_values<T>(std::max<int64_t>(1, nb * sb), seed + 1);
  std::vector<T> C0 = random_values<T>(std::max<int64_t>(1, nb * sc), seed + 2);
  std::vector<T> C = C0;
  const bool poison = c.beta == 0.0;
  if (poison) std::fill(C.begin(), C.end(), std::numeric_limits<T>::quiet_NaN());
  // Padding of C (between ldc and N, and between matrices) must come back untouched.
  const T sentinel = T(12345);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = c.N; j < ldc; ++j) C[b * sc + i * ldc + j] = sentinel;
    for (int64_t x = c.M * ldc; x < sc; ++x) C[b * sc + x] = sentinel;
  }

  const T alpha = static_cast<T>(c.alpha), beta = static_cast<T>(c.beta);
  if (batch > 0) {
    gemm_batched_call<T>(batch, c.ta, c.tb, c.M, c.N, c.K, alpha, A.data(), lda, sa, B.data(), ldb, sb, beta,
                         C.data(), ldc, sc);
  } else {
    gemm_call<T>(c.ta, c.tb, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  }

  const double tol = 4.0 * (c.K + 2) * std::numeric_limits<T>::epsilon();
  int failures = 0;
  for (int64_t b = 0; b < nb && failures < 5; ++b) {
    const T* a = A.data() + b * sa;
    const T* bm = B.data() + b * sb;
    for (int64_t i = 0; i < c.M; ++i) {
      for (int64_t j = 0; j < c.N; ++j) {
        double sum = 0, mag = 0;
        for (int64_t p = 0; p < c.K; ++p) {
          const double x = c.ta ? a[p * lda + i] : a[i * lda + p];
          const double y = c.tb ? bm[j * ldb + p] : bm[p * ldb + j];
          sum += x * y;
          mag += std::abs(x * y);
        }
        const double c0 = C0[b * sc + i * ldc + j];
        const double ref = c.alpha * sum + (poison ? 0.0 : c.beta * c0);
        const double bound = tol * (std::abs(c.alpha) * mag + (poison ? 0.0 : std::abs(c.beta * c0))) + 1e-30;
        const double got = C[b * sc + i * ldc + j];
        if (!(std::abs(got - ref) <= bound) && failures++ < 5) {
          ADD_FAILURE() << describe(c, isa) << " batch " << b << ": C[" << i << "," << j << "] = " << got
                        << ", expected " << ref << " (bound " << bound << ")";
        }
      }
      for (int64_t j = c.N; j < ldc; ++j)
        if (C[b * sc + i * ldc + j] != sentinel && failures++ < 5)
          ADD_FAILURE() << describe(c, isa) << ": wrote the padding of row " << i << " at column " << j;
    }
    for (int64_t x = c.M * ldc; x < sc; ++x)
      if (C[b * sc + x] != sentinel && failures++ < 5)
        ADD_FAILURE() << describe(c, isa) << ": wrote between batch matrices at offset " << x;
  }
}

// Sizes around the tile edges of every kernel (4x8, 6x16, 6x8, 12x32, 12x16); 1, 2 and 3 take
// the thin (GEMV-like) path in some transpose combinations.
const int64_t kOdd[] = {1, 2, 3, 7, 13, 33, 65};

template <typename T>
void sweep_odd_sizes(const std::string& isa) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : kOdd)
        for (int64_t N : kOdd)
          for (int64_t K : {int64_t{1}, int64_t{13}, int64_t{65}})
            check<T>({ta, tb, M, N, K, 1.0, 0.0}, isa);
}

TEST(Gemm, IsaIsKnown) {
  const std::string isa = gemm_isa();
  EXPECT_TRUE(isa == "avx512" || isa == "avx2" || isa == "portable") << isa;
  EXPECT_FALSE(set_gemm_isa("sse9"));
  EXPECT_EQ(isa, gemm_isa());
}

TEST(Gemm, FloatOddSizesAllTransposes) {
  KernelScope keep;
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    sweep_odd_sizes<float>(isa);
  }
}

TEST(Gemm, DoubleOddSizesAllTransposes) {
  KernelScope keep;
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    sweep_odd_sizes<double>(isa);
  }
}

// Alpha, beta and padded leading dimensions on shapes that cross the MC/KC blocking (K > 256
// takes several K slices, so beta must be applied once), on one thread and on several.
template <typename T>
void sweep_alpha_beta(const std::string& isa) {
  const Case cases[] = {
      {false, false, 127, 129, 257, 1.0, 1.0, 3},   {true, false, 33, 65, 300, -0.5, 0.25, 1},
      {false, true, 257, 17, 513, 2.0, 0.0, 5},     {true, true, 65, 127, 7, 0.75, -1.5, 2},
      {false, false, 300, 40, 33, 1.0, 0.0, 0},     {true, true, 13, 290, 260, -1.0, 1.0, 4},
      {false, true, 2048 / 16, 32, 32, 1.0, 0.0, 0}, {true, false, 32, 32, 700, 1.0, 1.0, 0},
  };
  for (const Case& c : cases) check<T>(c, isa);
}

TEST(Gemm, AlphaBetaStridesAndBlocking) {
  KernelScope keep;
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    for (int threads : {1, 3}) {
      set_num_threads(threads);
      sweep_alpha_beta<float>(isa);
      sweep_alpha_beta<double>(isa);
    }
  }
}

// Large enough to take the packed, threaded path with more than one MC block and NC panel.
TEST(Gemm, LargerPackedThreaded) {
  KernelScope keep;
  set_num_threads(4);
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    check<float>({false, false, 257, 4200, 40, 1.0, 0.5, 1}, isa);
    check<float>({true, true, 401, 150, 270, -1.0, 0.0, 0}, isa);
    check<double>({false, true, 170, 2100, 20, 0.5, 1.0, 2}, isa);
    // thin products split over threads: dots (long rows along K) and axpys (rows along N)
    check<float>({false, true, 3001, 3, 45, 1.0, 0.0, 1}, isa);
    check<float>({false, false, 2, 3001, 37, -1.0, 0.5, 0}, isa);
    check<double>({true, false, 1, 2500, 70, 1.0, 1.0, 3}, isa);
    check<double>({false, false, 2100, 1, 61, 2.0, 0.0, 0}, isa);
  }
}

TEST(Gemm, BetaZeroIgnoresNaNAndAlphaZeroIgnoresInputs) {
  // alpha == 0: C = beta * C without reading A or B (NaN there must not leak).
  std::vector<float> A(6 * 5, std::numeric_limits<float>::quiet_NaN()), B(5 * 7, 1.0f), C(6 * 7, 2.0f);
  sgemm(false, false, 6, 7, 5, 0.0f, A.data(), 5, B.data(), 7, 0.5f, C.data(), 7);
  for (float x : C) EXPECT_EQ(x, 1.0f);
  std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
  sgemm(false, false, 6, 7, 5, 0.0f, A.data(), 5, B.data(), 7, 0.0f, C.data(), 7);
  for (float x : C) EXPECT_EQ(x, 0.0f);
  // K == 0: C = beta * C.
  std::vector<double> D(3 * 4, 3.0);
  dgemm(true, true, 3, 4, 0, 1.0, nullptr, 3, nullptr, 1, 2.0, D.data(), 4);
  for (double x : D) EXPECT_EQ(x, 6.0);
  // M == 0 / N == 0: nothing to do, nothing touched.
  sgemm(false, false, 0, 7, 5, 1.0f, A.data(), 5, B.data(), 7, 0.0f, nullptr, 7);
  sgemm(false, false, 6, 0, 5, 1.0f, A.data(), 5, B.data(), 7, 0.0f, nullptr, 1);
}

// sgemm_bias / dgemm_bias: alpha op(A) op(B) + the bias row, on C holding NaN beforehand, the
// padding of C untouched; bit for bit the product accumulated onto bias rows filled first (the
// same arithmetic, so any difference is a block filled twice, late or not at all).
template <typename T>
void check_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const std::string& what) {
  const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
  const uint32_t seed = static_cast<uint32_t>(M * 7 + N * 3 + K);
  std::vector<T> A = random_values<T>(std::max<int64_t>(1, (ta ? K : M) * lda), seed);
  std::vector<T> B = random_values<T>(std::max<int64_t>(1, (tb ? N : K) * ldb), seed + 1);
  std::vector<T> bias = random_values<T>(N, seed + 2);
  const T sentinel = T(12345);
  std::vector<T> want(M * ldc, sentinel), got(M * ldc, std::numeric_limits<T>::quiet_NaN());
  for (int64_t i = 0; i < M; ++i) {
    std::copy(bias.begin(), bias.end(), want.begin() + i * ldc);
    for (int64_t j = N; j < ldc; ++j) got[i * ldc + j] = sentinel;
  }
  gemm_call<T>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, T(1), want.data(), ldc);
  if constexpr (std::is_same_v<T, float>) {
    sgemm_bias(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, bias.data(), got.data(), ldc);
  } else {
    dgemm_bias(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, bias.data(), got.data(), ldc);
  }
  int failures = 0;
  for (int64_t x = 0; x < M * ldc && failures < 5; ++x)
    if (!(got[x] == want[x]) && failures++ < 5)
      ADD_FAILURE() << what << (ta ? " T" : " N") << (tb ? "T" : "N") << " M=" << M << " N=" << N << " K=" << K
                    << ": element " << x / ldc << "," << x % ldc << " = " << got[x] << ", expected " << want[x];
}

TEST(Gemm, BiasRowIsAddedToEveryRow) {
  KernelScope keep;
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    for (int threads : {1, 3}) {
      set_num_threads(threads);
      const std::string what = isa + " threads " + std::to_string(threads);
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          check_bias<float>(ta, tb, 2048, 32, 32, 1.0f, what);  // the DDE toy's hidden layers
          check_bias<float>(ta, tb, 301, 67, 45, -0.5f, what);  // tiles cut at every edge
          check_bias<double>(ta, tb, 130, 97, 65, 2.0, what);
          check_bias<float>(ta, tb, 3001, 1, 45, 1.0f, what);   // thin: one output column
          check_bias<double>(ta, tb, 2, 700, 37, 1.0, what);    // thin: two rows
          check_bias<float>(ta, tb, 13, 7, 0, 1.0f, what);      // no inputs: the bias rows alone
          check_bias<double>(ta, tb, 9, 33, 5, 0.0, what);      // alpha 0: the bias rows alone
        }
    }
  }
}

TEST(Gemm, BatchedSmallAndLarge) {
  KernelScope keep;
  for (const auto& isa : runnable_isas()) {
    ASSERT_TRUE(set_gemm_isa(isa.c_str()));
    for (int threads : {1, 2, 5}) {
      set_num_threads(threads);
      // many small products: parallel across the batch
      check<float>({false, true, 7, 13, 5, 1.0, 0.0, 1}, isa, 37);
      check<double>({true, false, 9, 6, 33, -2.0, 0.5, 0}, isa, 11);
      // few large products: parallel inside each
      check<float>({false, false, 130, 97, 65, 1.0, 1.0, 2}, isa, 3);
      check<double>({true, true, 65, 70, 40, 0.5, 0.0, 0}, isa, 2);
    }
  }
}

TEST(Gemm, BatchedBroadcastOperand) {
  // stride 0 reuses one matrix for the whole batch (e.g. a weight shared by a batch of inputs).
  const int64_t batch = 6, M = 5, N = 9, K = 11;
  std::vector<float> A = random_values<float>(batch * M * K, 1), B = random_values<float>(K * N, 2);
  std::vector<float> C(batch * M * N, std::numeric_limits<float>::quiet_NaN());
  sgemm_batched(batch, false, false, M, N, K, 1.0f, A.data(), K, M * K, B.data(), N, 0, 0.0f, C.data(), N, M * N);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<float> one(M * N, std::numeric_limits<float>::quiet_NaN());
    sgemm(false, false, M, N, K, 1.0f, A.data() + b * M * K, K, B.data(), N, 0.0f, one.data(), N);
    for (int64_t x = 0; x < M * N; ++x) EXPECT_EQ(C[b * M * N + x], one[x]) << "batch " << b << " at " << x;
  }
}

TEST(Gemm, SameResultOnAnyThreadCount) {
  // Each element is computed by one thread in one order: the thread count does not change bits
  // (tiled products, whose tile edges move with the split, and thin ones).
  KernelScope keep;
  struct Shape {
    bool ta, tb;
    int64_t M, N, K;
  };
  for (const Shape& s : {Shape{false, false, 203, 190, 300}, Shape{true, true, 77, 301, 290},
                         Shape{false, true, 3001, 3, 45}, Shape{false, false, 2, 3001, 37}}) {
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    std::vector<float> A = random_values<float>(s.M * s.K, 3), B = random_values<float>(s.K * s.N, 4);
    std::vector<float> C1 = random_values<float>(s.M * s.N, 5), C3 = C1;
    set_num_threads(1);
    sgemm(s.ta, s.tb, s.M, s.N, s.K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, C1.data(), s.N);
    set_num_threads(3);
    sgemm(s.ta, s.tb, s.M, s.N, s.K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, C3.data(), s.N);
    EXPECT_EQ(C1, C3) << "M=" << s.M << " N=" << s.N << " K=" << s.K;
  }
}

TEST(Gemm, InsideParallelForRunsOnTheCallingThread) {
  // A GEMM per chunk of a parallel_for (no nested threading) gives the same results.
  KernelScope keep;
  set_num_threads(3);
  const int64_t n = 6, M = 40, N = 50, K = 60;
  std::vector<float> A = random_values<float>(M * K, 5), B = random_values<float>(K * N, 6);
  std::vector<float> ref(M * N), out(n * M * N);
  sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, ref.data(), N);
  parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, out.data() + i * M * N, N);
  });
  for (int64_t i = 0; i < n; ++i)
    for (int64_t x = 0; x < M * N; ++x) ASSERT_EQ(out[i * M * N + x], ref[x]) << "product " << i;
}

}  // namespace
