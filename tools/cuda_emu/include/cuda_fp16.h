// IEEE half precision for the emulated kernels (round to nearest even, subnormals kept).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

struct __half {
  uint16_t bits;
  __half() = default;
  __half(float f) : bits(from_float(f)) {}
  operator float() const { return to_float(bits); }
  static float to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const int exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ffu;
    float mag;
    if (exp == 0) mag = std::ldexp(static_cast<float>(mant), -24);
    else if (exp == 31) mag = mant ? NAN : INFINITY;
    else mag = std::ldexp(static_cast<float>(mant | 0x400u), exp - 25);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
  }
  static uint16_t from_float(float f) {
    const uint16_t sign = static_cast<uint16_t>((std::bit_cast<uint32_t>(f) >> 16) & 0x8000u);
    const float a = std::fabs(f);
    if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
    if (a < std::ldexp(1.0f, -14)) {  // subnormal: a multiple of 2^-24, rounded to nearest even
      const float q = std::nearbyint(a * 16777216.0f);
      return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
    }
    int e;
    const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
    const float scaled = std::nearbyint(m * 2048.0f);  // 11 significant bits
    uint32_t mant = static_cast<uint32_t>(scaled);
    if (mant == 2048u) { mant = 1024u; ++e; }
    const uint32_t biased = static_cast<uint32_t>(e - 1 + 15);
    if (biased >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | (biased << 10) | (mant & 0x3ffu));
  }
};
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return static_cast<float>(h); }
