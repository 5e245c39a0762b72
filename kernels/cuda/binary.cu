// Binary elementwise ops (z = f(x, y) in one promoted type), comparisons (bool = f(x, y)),
// where (out = c ? a : b), masked_scale (out = c ? x scale : 0), the ternary softplus_curvature,
// softplus_double_backward (two outputs) and softplus_backward_accumulate (in place).
// Broadcasting arrives as zero strides, so a bias add or a scalar operand takes the strided path;
// equal shapes take the vectorised contiguous one. The formulas are the CPU's
// (ops/elementwise.cpp); NaN wins in maximum/minimum as there.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/math.cuh"

namespace ember::kernels::cuda {

namespace {

template <BinaryOp OP, typename T>
struct BinaryFn {
  T p0, p1;
  __device__ __forceinline__ T operator()(T x, T y) const {
    if constexpr (OP == BinaryOp::add) return x + y;
    else if constexpr (OP == BinaryOp::sub) return x - y;
    else if constexpr (OP == BinaryOp::mul) return x * y;
    else if constexpr (OP == BinaryOp::div) return x / y;
    else if constexpr (OP == BinaryOp::pow) return m_pow(x, y);
    else if constexpr (OP == BinaryOp::maximum) return (x > y || x != x) ? x : y;
    else if constexpr (OP == BinaryOp::minimum) return (x < y || x != x) ? x : y;
    else if constexpr (OP == BinaryOp::softplus_backward) {
      const T by = y * p0;
      return by > p1 ? x : x * sigmoid_of(by);
    } else if constexpr (OP == BinaryOp::silu_backward) {
      const T s = sigmoid_of(y);
      return x * s * (T(1) + y * (T(1) - s));
    }
  }
};

constexpr bool floating_only(BinaryOp op) {
  return op == BinaryOp::div || op == BinaryOp::pow || op == BinaryOp::softplus_backward ||
         op == BinaryOp::silu_backward;
}

template <BinaryOp OP>
void run_binary(ElemType t, const Strided<3>& s, double p0, double p1, void* stream, const char* name) {
  bool done = false;
  dispatch_elem(t, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool is_float = std::is_same_v<T, float> || std::is_same_v<T, double>;
    constexpr bool is_int = std::is_same_v<T, int64_t> || std::is_same_v<T, int32_t> || std::is_same_v<T, uint8_t>;
    if constexpr (is_float || (is_int && !floating_only(OP))) {
      launch_map<T, T, T>(s, BinaryFn<OP, T>{static_cast<T>(p0), static_cast<T>(p1)}, stream, name);
      done = true;
    }
  });
  EMBER_CHECK(done, name, ": no CUDA kernel for this element type (f32 and f64", floating_only(OP) ? "" : ", i64, i32, u8",
              " are supported)");
}

template <CompareOp OP, typename T>
struct CompareFn {
  __device__ __forceinline__ bool operator()(T x, T y) const {
    if constexpr (OP == CompareOp::eq) return x == y;
    else if constexpr (OP == CompareOp::ne) return x != y;
    else if constexpr (OP == CompareOp::lt) return x < y;
    else if constexpr (OP == CompareOp::le) return x <= y;
    else if constexpr (OP == CompareOp::gt) return x > y;
    else if constexpr (OP == CompareOp::ge) return x >= y;
    else if constexpr (OP == CompareOp::logical_and) return x != T(0) && y != T(0);
    else if constexpr (OP == CompareOp::logical_or) return x != T(0) || y != T(0);
    else if constexpr (OP == CompareOp::isfinite) {
      if constexpr (std::is_floating_point_v<T>) return ::isfinite(x);
      else return true;
    }
  }
};

template <CompareOp OP>
void run_compare(ElemType t, const Strided<3>& s, void* stream, const char* name) {
  bool done = false;
  dispatch_elem(t, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      launch_map<bool, T, T>(s, CompareFn<OP, T>{}, stream, name);
      done = true;
    }
  });
  EMBER_CHECK(done, name, ": no CUDA kernel for this element type (f32, f64, i64, i32, u8 are supported)");
}

// The softplus family's own entry points: f32 and f64 only.
template <typename F>
void dispatch_f32_f64(ElemType t, const char* name, F&& f) {
  switch (t) {
    case ElemType::f32: return f(std::type_identity<float>{});
    case ElemType::f64: return f(std::type_identity<double>{});
    default: EMBER_FAIL(name, ": no CUDA kernel for this element type (f32 and f64 are supported)");
  }
}

template <typename T>
struct SoftplusCurvatureFn {
  T beta, threshold;
  __device__ __forceinline__ T operator()(T x, T y, T a) const {
    const T ba = a * beta, s = sigmoid_of(ba);
    return ba > threshold ? T(0) : x * y * (beta * s * (T(1) - s));
  }
};

// One thread an element (grid-stride): both gradients from one sigmoid, two stores.
template <typename T>
__global__ void softplus_double_backward_kernel(int64_t n, T* __restrict__ dg, T* __restrict__ da,
                                                const T* __restrict__ gg, const T* __restrict__ g,
                                                const T* __restrict__ a, T beta, T threshold) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const T x = gg[i], ba = a[i] * beta, s = sigmoid_of(ba);
    const bool above = ba > threshold;
    dg[i] = above ? x : x * s;
    da[i] = above ? T(0) : x * g[i] * (beta * s * (T(1) - s));
  }
}

// acc += softplus_backward(g, a), the binary op's own formula, in place.
template <typename T>
__global__ void softplus_backward_accumulate_kernel(int64_t n, T* __restrict__ acc, const T* __restrict__ g,
                                                    const T* __restrict__ a,
                                                    BinaryFn<BinaryOp::softplus_backward, T> f) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    acc[i] += f(g[i], a[i]);
}

// acc + g softplus'(a), for the elementwise engine with acc both the output and the first input:
// each element is read, then written, by one thread, so the aliasing is harmless.
template <typename T>
struct SoftplusBackwardAddFn {
  BinaryFn<BinaryOp::softplus_backward, T> f;
  __device__ __forceinline__ T operator()(T acc, T g, T a) const { return acc + f(g, a); }
};

// dropout's step: the kept elements scaled, the others zero (a multiply would turn inf into NaN).
template <typename T>
struct MaskedScaleFn {
  T scale;
  __device__ __forceinline__ T operator()(bool keep, T x) const { return keep ? x * scale : T(0); }
};

// where moves bits: one kernel per element size serves every type of that size.
template <typename Bits>
struct SelectFn {
  __device__ __forceinline__ Bits operator()(bool c, Bits a, Bits b) const { return c ? a : b; }
};

}  // namespace

void binary(BinaryOp op, ElemType t, const Strided<3>& s, double p0, double p1, void* stream) {
  switch (op) {
    case BinaryOp::add: return run_binary<BinaryOp::add>(t, s, p0, p1, stream, "add");
    case BinaryOp::sub: return run_binary<BinaryOp::sub>(t, s, p0, p1, stream, "sub");
    case BinaryOp::mul: return run_binary<BinaryOp::mul>(t, s, p0, p1, stream, "mul");
    case BinaryOp::div: return run_binary<BinaryOp::div>(t, s, p0, p1, stream, "div");
    case BinaryOp::pow: return run_binary<BinaryOp::pow>(t, s, p0, p1, stream, "pow");
    case BinaryOp::maximum: return run_binary<BinaryOp::maximum>(t, s, p0, p1, stream, "maximum");
    case BinaryOp::minimum: return run_binary<BinaryOp::minimum>(t, s, p0, p1, stream, "minimum");
    case BinaryOp::softplus_backward:
      return run_binary<BinaryOp::softplus_backward>(t, s, p0, p1, stream, "softplus_backward");
    case BinaryOp::silu_backward: return run_binary<BinaryOp::silu_backward>(t, s, p0, p1, stream, "silu_backward");
  }
}

void compare(CompareOp op, ElemType t, const Strided<3>& s, void* stream) {
  switch (op) {
    case CompareOp::eq: return run_compare<CompareOp::eq>(t, s, stream, "eq");
    case CompareOp::ne: return run_compare<CompareOp::ne>(t, s, stream, "ne");
    case CompareOp::lt: return run_compare<CompareOp::lt>(t, s, stream, "lt");
    case CompareOp::le: return run_compare<CompareOp::le>(t, s, stream, "le");
    case CompareOp::gt: return run_compare<CompareOp::gt>(t, s, stream, "gt");
    case CompareOp::ge: return run_compare<CompareOp::ge>(t, s, stream, "ge");
    case CompareOp::logical_and: return run_compare<CompareOp::logical_and>(t, s, stream, "logical_and");
    case CompareOp::logical_or: return run_compare<CompareOp::logical_or>(t, s, stream, "logical_or");
    case CompareOp::isfinite: return run_compare<CompareOp::isfinite>(t, s, stream, "isfinite");
  }
}

void softplus_curvature(ElemType t, const Strided<4>& s, double beta, double threshold, void* stream) {
  dispatch_f32_f64(t, "softplus_curvature", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map<T, T, T, T>(s, SoftplusCurvatureFn<T>{static_cast<T>(beta), static_cast<T>(threshold)}, stream,
                           "softplus_curvature");
  });
}

void softplus_double_backward(ElemType t, int64_t n, void* dg, void* da, const void* gg, const void* g,
                              const void* a, double beta, double threshold, void* stream) {
  if (n == 0) return;
  dispatch_f32_f64(t, "softplus_double_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softplus_double_backward_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        n, static_cast<T*>(dg), static_cast<T*>(da), static_cast<const T*>(gg), static_cast<const T*>(g),
        static_cast<const T*>(a), static_cast<T>(beta), static_cast<T>(threshold));
    EMBER_CUDA_LAUNCHED("softplus_double_backward");
  });
}

void softplus_backward_accumulate(ElemType t, int64_t n, void* acc, const void* g, const void* a, double beta,
                                  double threshold, void* stream) {
  if (n == 0) return;
  dispatch_f32_f64(t, "softplus_backward_accumulate", [&](auto tag) {
    using T = typename decltype(tag)::type;
    softplus_backward_accumulate_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        n, static_cast<T*>(acc), static_cast<const T*>(g), static_cast<const T*>(a),
        BinaryFn<BinaryOp::softplus_backward, T>{static_cast<T>(beta), static_cast<T>(threshold)});
    EMBER_CUDA_LAUNCHED("softplus_backward_accumulate");
  });
}

void softplus_backward_accumulate_strided(ElemType t, const Strided<4>& s, double beta, double threshold,
                                          void* stream) {
  dispatch_f32_f64(t, "softplus_backward_accumulate", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const SoftplusBackwardAddFn<T> f{{static_cast<T>(beta), static_cast<T>(threshold)}};
    launch_map<T, T, T, T>(s, f, stream, "softplus_backward_accumulate");
  });
}

void where(ElemType t, const Strided<4>& s, void* stream) {
  switch (t) {
    case ElemType::f64: case ElemType::i64: return launch_map<uint64_t, bool, uint64_t, uint64_t>(s, SelectFn<uint64_t>{}, stream, "where");
    case ElemType::f32: case ElemType::i32: return launch_map<uint32_t, bool, uint32_t, uint32_t>(s, SelectFn<uint32_t>{}, stream, "where");
    case ElemType::bf16: case ElemType::f16: return launch_map<uint16_t, bool, uint16_t, uint16_t>(s, SelectFn<uint16_t>{}, stream, "where");
    case ElemType::u8: case ElemType::boolean: return launch_map<uint8_t, bool, uint8_t, uint8_t>(s, SelectFn<uint8_t>{}, stream, "where");
  }
}

void masked_scale(ElemType t, const Strided<3>& s, double scale, void* stream) {
  dispatch_f32_f64(t, "masked_scale", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map<T, bool, T>(s, MaskedScaleFn<T>{static_cast<T>(scale)}, stream, "masked_scale");
  });
}

}  // namespace ember::kernels::cuda
