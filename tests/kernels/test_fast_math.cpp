// The CPU's f32 exp / log1p (kernels/cpu/fast_math.h) against libm in f64: relative error within
// a few ulp over their ranges, the edges (underflow to 0, overflow to inf, NaN through), and
// fast_exp_nonpositive equal to fast_exp bit for bit wherever both apply.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "ember/kernels/cpu/fast_math.h"

using namespace ember::kernels::cpu;

namespace {

constexpr double kUlp = 1.0 / (1 << 23);  // f32's relative spacing at 1 (2^-23)

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

}  // namespace

TEST(FastMath, ExpIsWithinFourUlpOverItsRange) {
  double worst = 0;
  for (float x = -86.0f; x <= 88.5f; x += 0.0037f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(fast_exp(x) - want) / want);
  }
  EXPECT_LT(worst, 4 * kUlp);
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_EQ(fast_exp(-100.0f), 0.0f);
  EXPECT_EQ(fast_exp(100.0f), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(fast_exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST(FastMath, ExpOfNonPositiveArgumentsEqualsExp) {
  double worst = 0;
  for (float x = -90.0f; x <= 0.0f; x += 0.00113f) {
    ASSERT_EQ(bits(fast_exp_nonpositive(x)), bits(fast_exp(x))) << "x = " << x;
    const double want = std::exp(static_cast<double>(x));
    if (x >= -86.5f) worst = std::max(worst, std::abs(fast_exp_nonpositive(x) - want) / want);
  }
  EXPECT_LT(worst, 4 * kUlp);
  EXPECT_EQ(fast_exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(fast_exp_nonpositive(-0.0f), 1.0f);
  EXPECT_EQ(fast_exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(fast_exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(fast_exp_nonpositive(-1.5), std::exp(-1.5));  // f64: libm itself
}

TEST(FastMath, Log1pOnTheUnitIntervalIsWithinFourUlp) {
  double worst = 0;
  for (float t = 1e-6f; t <= 1.0f; t += 0.000731f) {
    const double want = std::log1p(static_cast<double>(t));
    worst = std::max(worst, std::abs(log1p_unit(t) - want) / want);
  }
  EXPECT_LT(worst, 4 * kUlp);
  EXPECT_EQ(log1p_unit(0.0f), 0.0f);
}
