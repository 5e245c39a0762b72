// Row reductions: one block per row of a contiguous [outer, inner] matrix; the threads stride
// through the row (coalesced reads), combine in registers, then across the block with warp
// shuffles and one shared-memory step. logsumexp and var make two passes over the row in the
// same block (maximum, then the sum of exponentials; mean, then squared deviations), so they
// need no scratch. A sum whose rows are few and long (a loss reduced to a scalar) is split
// over many blocks per row instead, and the partial sums are added by a second launch.
// prod multiplies in f64 like the CPU (in a different order, so it agrees to rounding); norm is
// two passes too (max |x|, then the sum of the scaled powers), so it neither overflows nor
// underflows where the CPU does not.
// Bound by bytes read: each element is read once (twice for the two-pass ops).
#include <cfloat>

#include "ember/engine/error.h"
#include "ember/kernels/cuda/block_reduce.cuh"
#include "ember/kernels/cuda/map.cuh"
#include "ember/kernels/cuda/reduce.h"

namespace ember::kernels::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kChunk = 16384;  // elements per block in the split sum

template <typename T, RowOp OP>
__global__ void reduce_rows_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t inner, double p0) {
  const T* row = x + static_cast<int64_t>(blockIdx.x) * inner;
  if constexpr (OP == RowOp::sum) {
    double s = 0;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) s += static_cast<double>(row[j]);
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<T>(s);
  } else if constexpr (OP == RowOp::max || OP == RowOp::min) {
    constexpr bool is_max = OP == RowOp::max;
    T best = row[0];
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const T v = row[j];
      if (is_nan(v) || (!is_nan(best) && (is_max ? v > best : v < best))) best = v;
    }
    best = block_extreme(best, is_max);
    if (threadIdx.x == 0) out[blockIdx.x] = best;
  } else if constexpr (OP == RowOp::logsumexp) {
    double m = -INFINITY;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const double v = static_cast<double>(row[j]);
      if (v != v || v > m) m = (m != m) ? m : v;
    }
    m = block_extreme(m, true);
    double s = 0;
    if (m == m && !isinf(m))
      for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) s += ::exp(static_cast<double>(row[j]) - m);
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<T>((m != m || isinf(m)) ? m : m + ::log(s));
  } else if constexpr (OP == RowOp::prod) {
    double p = 1;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) p *= static_cast<double>(row[j]);
    p = block_product(p);
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<T>(p);
  } else if constexpr (OP == RowOp::norm) {
    double scale = 0;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const double v = ::fabs(static_cast<double>(row[j]));
      if (v != v || v > scale) scale = (scale != scale) ? scale : v;
    }
    scale = block_extreme(scale, true);
    const bool degenerate = scale != scale || scale == 0 || isinf(scale);  // the CPU returns scale itself
    double s = 0;
    if (!degenerate) {
      for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
        const double v = static_cast<double>(row[j]) / scale;
        s += p0 == 2.0 ? v * v : ::pow(::fabs(v), p0);
      }
    }
    s = block_sum(s);
    if (threadIdx.x == 0)
      out[blockIdx.x] = static_cast<T>(degenerate ? scale : p0 == 2.0 ? scale * ::sqrt(s) : scale * ::pow(s, 1.0 / p0));
  } else {  // var, std
    double s = 0;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) s += static_cast<double>(row[j]);
    const double mean = block_sum(s) / static_cast<double>(inner);
    double ss = 0;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const double d = static_cast<double>(row[j]) - mean;
      ss += d * d;
    }
    const double v = block_sum(ss) / p0;
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<T>(OP == RowOp::std ? ::sqrt(v) : v);
  }
}

// Split sum, pass 1: block (c, r) sums chunk c of row r into partial[r * chunks + c].
template <typename T>
__global__ void partial_sum_kernel(const T* __restrict__ x, double* __restrict__ partial, int64_t inner,
                                   int64_t chunks) {
  const int64_t r = blockIdx.y, c = blockIdx.x;
  const T* row = x + r * inner;
  const int64_t end = min(inner, (c + 1) * kChunk);
  double s = 0;
  for (int64_t j = c * kChunk + threadIdx.x; j < end; j += blockDim.x) s += static_cast<double>(row[j]);
  s = block_sum(s);
  if (threadIdx.x == 0) partial[r * chunks + c] = s;
}

// Pass 2: one block per row adds its partial sums.
template <typename T>
__global__ void finish_sum_kernel(const double* __restrict__ partial, T* __restrict__ out, int64_t chunks) {
  double s = 0;
  for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) s += partial[blockIdx.x * chunks + j];
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<T>(s);
}

template <typename T>
__global__ void arg_extreme_kernel(const T* __restrict__ x, T* __restrict__ values, int64_t* __restrict__ indices,
                                   int64_t inner, bool is_max) {
  const T* row = x + static_cast<int64_t>(blockIdx.x) * inner;
  T best = row[0];
  int64_t at = 0;
  for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
    const T v = row[j];
    if (!is_nan(best) && (is_nan(v) || (is_max ? v > best : v < best))) {
      best = v;
      at = j;
    }
  }
  // Across the block: the better value, ties (and NaNs) to the smaller index.
  __shared__ T vals[kBlock];
  __shared__ int64_t idx[kBlock];
  vals[threadIdx.x] = best;
  idx[threadIdx.x] = at;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      const T a = vals[threadIdx.x], b = vals[threadIdx.x + half];
      const int64_t ia = idx[threadIdx.x], ib = idx[threadIdx.x + half];
      bool take_b;
      if (is_nan(a) || is_nan(b)) take_b = is_nan(b) && (!is_nan(a) || ib < ia);
      else take_b = (is_max ? b > a : b < a) || (b == a && ib < ia);
      if (take_b) {
        vals[threadIdx.x] = b;
        idx[threadIdx.x] = ib;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    values[blockIdx.x] = vals[0];
    indices[blockIdx.x] = idx[0];
  }
}

// 32 columns per block, 8 threads down each column; the 8 partial sums meet in shared memory.
template <typename T>
__global__ void sum_leading_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t rows, int64_t cols,
                                   bool accumulate) {
  __shared__ double part[8][33];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  double s = 0;
  if (j < cols)
    for (int64_t i = threadIdx.y; i < rows; i += 8) s += static_cast<double>(x[i * cols + j]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    double t = 0;
    for (int k = 0; k < 8; ++k) t += part[k][threadIdx.x];
    out[j] = accumulate ? out[j] + static_cast<T>(t) : static_cast<T>(t);
  }
}

unsigned block_for(int64_t inner) {
  unsigned b = 32;
  while (b < kBlock && b < inner) b *= 2;
  return b;
}

bool split_sum(RowOp op, int64_t outer, int64_t inner) { return op == RowOp::sum && outer < 264 && inner > 4 * kChunk; }

}  // namespace

size_t reduce_rows_workspace(RowOp op, int64_t outer, int64_t inner) {
  if (!split_sum(op, outer, inner)) return 0;
  return static_cast<size_t>(outer * ((inner + kChunk - 1) / kChunk)) * sizeof(double);
}

void reduce_rows(RowOp op, ElemType t, const void* x, void* out, int64_t outer, int64_t inner, double p0,
                 void* workspace, void* stream) {
  if (outer == 0) return;
  EMBER_CHECK(outer <= 2147483647LL, "reduce: more than 2^31 - 1 rows");
  auto st = static_cast<cudaStream_t>(stream);
  bool done = false;
  dispatch_elem(t, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool is_float = std::is_same_v<T, float> || std::is_same_v<T, double>;
    constexpr bool is_int = std::is_same_v<T, int64_t> || std::is_same_v<T, int32_t> || std::is_same_v<T, uint8_t>;
    const T* xp = static_cast<const T*>(x);
    T* op_out = static_cast<T*>(out);
    const unsigned grid = static_cast<unsigned>(outer), block = block_for(inner);
    if constexpr (is_float) {
      if (split_sum(op, outer, inner)) {
        const int64_t chunks = (inner + kChunk - 1) / kChunk;
        partial_sum_kernel<T><<<dim3(static_cast<unsigned>(chunks), grid), kBlock, 0, st>>>(
            xp, static_cast<double*>(workspace), inner, chunks);
        EMBER_CUDA_LAUNCHED("sum (partial)");
        finish_sum_kernel<T><<<grid, block_for(chunks), 0, st>>>(static_cast<const double*>(workspace), op_out, chunks);
        EMBER_CUDA_LAUNCHED("sum (finish)");
        done = true;
        return;
      }
      switch (op) {
        case RowOp::sum: reduce_rows_kernel<T, RowOp::sum><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::max: reduce_rows_kernel<T, RowOp::max><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::min: reduce_rows_kernel<T, RowOp::min><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::logsumexp:
          reduce_rows_kernel<T, RowOp::logsumexp><<<grid, block, 0, st>>>(xp, op_out, inner, p0);
          break;
        case RowOp::var: reduce_rows_kernel<T, RowOp::var><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::std: reduce_rows_kernel<T, RowOp::std><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::prod: reduce_rows_kernel<T, RowOp::prod><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
        case RowOp::norm: reduce_rows_kernel<T, RowOp::norm><<<grid, block, 0, st>>>(xp, op_out, inner, p0); break;
      }
      EMBER_CUDA_LAUNCHED("reduce_rows");
      done = true;
    } else if constexpr (is_int) {
      if (op == RowOp::max || op == RowOp::min) {
        if (op == RowOp::max) reduce_rows_kernel<T, RowOp::max><<<grid, block, 0, st>>>(xp, op_out, inner, p0);
        else reduce_rows_kernel<T, RowOp::min><<<grid, block, 0, st>>>(xp, op_out, inner, p0);
        EMBER_CUDA_LAUNCHED("reduce_rows");
        done = true;
      }
    }
  });
  EMBER_CHECK(done, "reduce: no CUDA kernel for this op and element type");
}

void arg_extreme_rows(bool is_max, ElemType t, const void* x, void* values, int64_t* indices, int64_t outer,
                      int64_t inner, void* stream) {
  if (outer == 0) return;
  EMBER_CHECK(outer <= 2147483647LL, is_max ? "argmax" : "argmin", ": more than 2^31 - 1 rows");
  bool done = false;
  dispatch_elem(t, "argmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      arg_extreme_kernel<T><<<static_cast<unsigned>(outer), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
          static_cast<const T*>(x), static_cast<T*>(values), indices, inner, is_max);
      EMBER_CUDA_LAUNCHED(is_max ? "max(dim)" : "min(dim)");
      done = true;
    }
  });
  EMBER_CHECK(done, is_max ? "max" : "min", "(dim): no CUDA kernel for this element type");
}

void sum_leading(ElemType t, const void* x, void* out, int64_t rows, int64_t cols, bool accumulate, void* stream) {
  if (cols == 0) return;
  const unsigned grid = static_cast<unsigned>((cols + 31) / 32);
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32)
    sum_leading_kernel<float><<<grid, dim3(32, 8), 0, st>>>(static_cast<const float*>(x), static_cast<float*>(out),
                                                           rows, cols, accumulate);
  else if (t == ElemType::f64)
    sum_leading_kernel<double><<<grid, dim3(32, 8), 0, st>>>(static_cast<const double*>(x), static_cast<double*>(out),
                                                            rows, cols, accumulate);
  else
    EMBER_FAIL("sum: the CUDA kernel takes f32 or f64 only");
  EMBER_CUDA_LAUNCHED("sum (leading dims)");
}

}  // namespace ember::kernels::cuda
