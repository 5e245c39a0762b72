// Copies with conversion between any two element types (the engine's copy_into, .to(dtype),
// contiguous()), and fills. Conversion goes through double like the CPU's convert<To>(), so
// both backends give the same bits; a same-type copy moves raw bits (vectorised when dense).
#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"

namespace ember::kernels::cuda {

namespace {

template <typename To, typename From>
struct ConvertFn {
  __device__ __forceinline__ To operator()(From v) const { return convert<To>(v); }
};

template <typename Bits>
struct IdentityFn {
  __device__ __forceinline__ Bits operator()(Bits v) const { return v; }
};

template <typename T>
struct FillFn {
  double value;
  __device__ __forceinline__ T operator()() const { return convert<T>(value); }
};

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::f64: case ElemType::i64: return 8;
    case ElemType::f32: case ElemType::i32: return 4;
    case ElemType::bf16: case ElemType::f16: return 2;
    case ElemType::u8: case ElemType::boolean: return 1;
  }
  return 0;
}

}  // namespace

void copy(ElemType out, ElemType in, const Strided<2>& s, void* stream) {
  if (out == in) {
    switch (elem_size(out)) {
      case 8: return launch_map<uint64_t, uint64_t>(s, IdentityFn<uint64_t>{}, stream, "copy");
      case 4: return launch_map<uint32_t, uint32_t>(s, IdentityFn<uint32_t>{}, stream, "copy");
      case 2: return launch_map<uint16_t, uint16_t>(s, IdentityFn<uint16_t>{}, stream, "copy");
      default: return launch_map<uint8_t, uint8_t>(s, IdentityFn<uint8_t>{}, stream, "copy");
    }
  }
  dispatch_elem(out, "copy", [&](auto out_tag) {
    using O = typename decltype(out_tag)::type;
    dispatch_elem(in, "copy", [&](auto in_tag) {
      using I = typename decltype(in_tag)::type;
      if constexpr (!std::is_same_v<O, I>) launch_map<O, I>(s, ConvertFn<O, I>{}, stream, "copy");
    });
  });
}

void fill(ElemType t, const Strided<1>& s, double value, void* stream) {
  dispatch_elem(t, "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map<T>(s, FillFn<T>{value}, stream, "fill");
  });
}

}  // namespace ember::kernels::cuda
