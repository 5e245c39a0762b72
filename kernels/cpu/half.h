// bf16 and f16 storage types with float conversions (round to nearest even). The CPU computes
// in f32; these exist so that tensors of these types can be stored, cast and checked.
#pragma once
#include <cstdint>
#include <cstring>

namespace ember::kernels::cpu {

struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) {  // NOLINT: implicit like a float
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { bits = 0x7fc0; return; }  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    bits = static_cast<uint16_t>(u >> 16);
  }
  operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

struct f16 {
  uint16_t bits = 0;
  f16() = default;
  f16(float f) {  // NOLINT
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) { bits = static_cast<uint16_t>(sign | 0x7e00u); return; }  // NaN
    if (mag >= 0x477ff000u) { bits = static_cast<uint16_t>(sign | 0x7c00u); return; }  // overflow -> inf
    if (mag < 0x38800000u) {  // subnormal or zero in f16
      float a;
      std::memcpy(&a, &mag, 4);
      // scale so the f16 subnormal unit (2^-24) becomes 1, then round to nearest even
      float scaled = a * 16777216.0f;
      uint32_t q = static_cast<uint32_t>(scaled);
      float rem = scaled - static_cast<float>(q);
      if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
      bits = static_cast<uint16_t>(sign | q);
      return;
    }
    uint32_t e = ((mag >> 23) - 112u) << 10;
    uint32_t m = (mag >> 13) & 0x3ffu;
    uint32_t h = e | m;
    uint32_t rest = mag & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    bits = static_cast<uint16_t>(sign | h);
  }
  operator float() const {
    uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    uint32_t e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
    uint32_t u;
    if (e == 0) {
      float f = static_cast<float>(m) * (1.0f / 16777216.0f);
      std::memcpy(&u, &f, 4);
      u |= sign;
    } else if (e == 31) {
      u = sign | 0x7f800000u | (m << 13);
    } else {
      u = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

}  // namespace ember::kernels::cpu
