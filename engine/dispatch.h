// Turning a run-time DType into a compile-time C++ element type. Ops write their kernels as
// templates and call dispatch_*(dtype, "op", [&](auto tag) { using T = typename decltype(tag)::type; ... }).
// The op name goes into the error for a dtype the op does not support.
#pragma once
#include <cstdint>
#include <type_traits>

#include "ember/engine/dtype.h"
#include "ember/engine/error.h"
#include "ember/kernels/cpu/half.h"

namespace ember {

template <> struct dtype_of<kernels::cpu::bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<kernels::cpu::f16> { static constexpr DType value = DType::f16; };

// f32 and f64: the types the CPU computes in.
template <typename F>
decltype(auto) dispatch_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(std::type_identity<float>{});
    case DType::f64: return f(std::type_identity<double>{});
    default: EMBER_FAIL(op, ": expected a f32 or f64 tensor, got ", dtype_name(t),
                        " (convert with .to(DType::f32))");
  }
}

// Floating and integer types (not bool, not the 16-bit storage types).
template <typename F>
decltype(auto) dispatch_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(std::type_identity<float>{});
    case DType::f64: return f(std::type_identity<double>{});
    case DType::i64: return f(std::type_identity<int64_t>{});
    case DType::i32: return f(std::type_identity<int32_t>{});
    case DType::u8: return f(std::type_identity<uint8_t>{});
    default: EMBER_FAIL(op, ": dtype ", dtype_name(t), " is not supported here");
  }
}

// Every dtype, the 16-bit floats included (copies, casts, fills, printing).
template <typename F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(std::type_identity<float>{});
    case DType::f64: return f(std::type_identity<double>{});
    case DType::bf16: return f(std::type_identity<kernels::cpu::bf16>{});
    case DType::f16: return f(std::type_identity<kernels::cpu::f16>{});
    case DType::i64: return f(std::type_identity<int64_t>{});
    case DType::i32: return f(std::type_identity<int32_t>{});
    case DType::u8: return f(std::type_identity<uint8_t>{});
    case DType::boolean: return f(std::type_identity<bool>{});
  }
  EMBER_FAIL(op, ": unknown dtype");
}

// Converts between any two element types through double (exact for every value the
// narrower types hold; bf16/f16 round to nearest even).
template <typename To, typename From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return static_cast<double>(v) != 0.0;
  } else if constexpr (std::is_same_v<To, kernels::cpu::bf16> || std::is_same_v<To, kernels::cpu::f16>) {
    return To(static_cast<float>(static_cast<double>(v)));
  } else {
    return static_cast<To>(static_cast<double>(v));
  }
}

}  // namespace ember
