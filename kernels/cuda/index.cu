// The indexing kernels: remap (index_select, flip, pad, repeat, roll), its adjoint remap_add
// (index_select's and reflect pad's backwards), gather, scatter_add, tril/triu.
//
// Each is one thread per element in a grid-stride loop with 64-bit offsets; the thread turns its
// flat index into coordinates (innermost dim first) and the plan built on the host turns those
// into source offsets. No kernel here reads an index it has not been told is in range: the ops
// check ranges before launching.
//
// The additive kernels are written so that every output element is owned by one thread that
// adds its terms in the CPU's order (remap_add through inverted maps, scatter_add one line per
// thread): no atomics, the same bits as the CPU, and the same bits run to run. Their cost is
// parallelism when many terms land on few elements (a scatter into one short line); these are
// gradient paths, and determinism was judged worth more than that speed.
//
// Ops that only move elements (remap, gather, triangle) are templated on the element's size,
// not its type: one instantiation per size serves all eight dtypes.
#include "ember/engine/error.h"
#include "ember/kernels/cuda/index.h"
#include "ember/kernels/cuda/map.cuh"

namespace ember::kernels::cuda {

namespace {

// Calls f(std::type_identity<unsigned type of that many bytes>{}).
template <typename F>
void dispatch_size(size_t elem_size, const char* op, F&& f) {
  switch (elem_size) {
    case 1: f(std::type_identity<uint8_t>{}); return;
    case 2: f(std::type_identity<uint16_t>{}); return;
    case 4: f(std::type_identity<uint32_t>{}); return;
    case 8: f(std::type_identity<uint64_t>{}); return;
    default: EMBER_FAIL(op, ": no CUDA kernel for elements of ", elem_size, " bytes");
  }
}

template <typename B>
__global__ void remap_kernel(const B* __restrict__ x, B* __restrict__ out, const int64_t* __restrict__ table,
                             RemapPlan plan, int64_t numel, B fill) {
  for (int64_t i = first_index(); i < numel; i += grid_step()) {
    int64_t rem = i, src = 0;
    bool filled = false;
    for (int d = plan.ndim - 1; d >= 0; --d) {
      const int64_t c = rem % plan.sizes[d];
      rem /= plan.sizes[d];
      const int64_t o = table[plan.start[d] + c];
      if (o < 0) filled = true;
      else src += o;
    }
    out[i] = filled ? fill : x[src];
  }
}

template <typename T>
__global__ void remap_add_kernel(const T* __restrict__ g, T* __restrict__ out, const int64_t* __restrict__ table,
                                 RemapAddPlan plan, int64_t numel) {
  for (int64_t i = first_index(); i < numel; i += grid_step()) {
    // This element's range of preimages in each dim; an empty one means no term reaches it.
    int64_t lo[kMaxDims], hi[kMaxDims], pos[kMaxDims];
    int64_t rem = i;
    bool empty = false;
    for (int d = plan.ndim - 1; d >= 0; --d) {
      const int64_t s = rem % plan.sizes[d];
      rem /= plan.sizes[d];
      lo[d] = table[plan.ptr[d] + s];
      hi[d] = table[plan.ptr[d] + s + 1];
      pos[d] = lo[d];
      empty = empty || lo[d] == hi[d];
    }
    T acc = T(0);
    if (!empty) {
      // An odometer over the product of the preimage lists, the last dim fastest: g's
      // row-major order, which is the order the CPU adds in.
      while (true) {
        int64_t off = 0;
        for (int d = 0; d < plan.ndim; ++d) off += table[plan.list[d] + pos[d]];
        acc = acc + g[off];
        int d = plan.ndim - 1;
        for (; d >= 0; --d) {
          if (++pos[d] < hi[d]) break;
          pos[d] = lo[d];
        }
        if (d < 0) break;
      }
    }
    out[i] = acc;
  }
}

template <typename B>
__global__ void gather_kernel(const B* __restrict__ x, const int64_t* __restrict__ index, B* __restrict__ out,
                              GatherPlan plan, int64_t numel) {
  for (int64_t i = first_index(); i < numel; i += grid_step()) {
    int64_t rem = i, src = index[i] * plan.x_strides[plan.dim];
    for (int d = plan.ndim - 1; d >= 0; --d) {
      const int64_t c = rem % plan.index_sizes[d];
      rem /= plan.index_sizes[d];
      if (d != plan.dim) src += c * plan.x_strides[d];
    }
    out[i] = x[src];
  }
}

// One thread per line along plan.dim: `lines` = the index's numel / its size along dim.
template <typename T>
__global__ void scatter_add_kernel(T* __restrict__ out, const int64_t* __restrict__ index, const T* __restrict__ src,
                                   ScatterPlan plan, int64_t lines) {
  const int64_t n = plan.index_sizes[plan.dim];
  int64_t index_strides[kMaxDims];  // the index is dense
  int64_t st = 1;
  for (int d = plan.ndim - 1; d >= 0; --d) {
    index_strides[d] = st;
    st *= plan.index_sizes[d];
  }
  for (int64_t line = first_index(); line < lines; line += grid_step()) {
    // The line's coordinates in every dim but `dim`, innermost first.
    int64_t rem = line, ibase = 0, obase = 0, sbase = 0;
    for (int d = plan.ndim - 1; d >= 0; --d) {
      if (d == plan.dim) continue;
      const int64_t c = rem % plan.index_sizes[d];
      rem /= plan.index_sizes[d];
      ibase += c * index_strides[d];
      obase += c * plan.out_strides[d];
      sbase += c * plan.src_strides[d];
    }
    for (int64_t j = 0; j < n; ++j) {
      T& o = out[obase + index[ibase + j * index_strides[plan.dim]] * plan.out_strides[plan.dim]];
      o = static_cast<T>(o + src[sbase + j * plan.src_strides[plan.dim]]);
    }
  }
}

template <typename B>
__global__ void triangle_kernel(const B* __restrict__ x, B* __restrict__ out, int64_t numel, int64_t rows,
                                int64_t cols, int64_t k, bool lower) {
  for (int64_t e = first_index(); e < numel; e += grid_step()) {
    const int64_t j = e % cols, i = (e / cols) % rows;
    const bool keep = lower ? j - i <= k : j - i >= k;
    out[e] = keep ? x[e] : B(0);  // zero bits are 0 in every dtype
  }
}

void check_dims(int ndim, const char* op) {
  EMBER_CHECK(ndim >= 0 && ndim <= kMaxDims, op, ": the CUDA kernel takes at most ", kMaxDims, " dims, got ", ndim,
              "; reshape the tensor to fewer dims first");
}

}  // namespace

void remap(size_t elem_size, const void* x, void* out, const int64_t* table, const RemapPlan& plan,
           uint64_t fill_bits, void* stream) {
  check_dims(plan.ndim, "remap");
  int64_t numel = 1;
  for (int d = 0; d < plan.ndim; ++d) numel *= plan.sizes[d];
  if (numel == 0) return;
  dispatch_size(elem_size, "remap", [&](auto tag) {
    using B = typename decltype(tag)::type;
    remap_kernel<B><<<blocks_for(numel), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const B*>(x), static_cast<B*>(out), table, plan, numel, static_cast<B>(fill_bits));
    EMBER_CUDA_LAUNCHED("remap");
  });
}

void remap_add(ElemType t, const void* g, void* out, const int64_t* table, const RemapAddPlan& plan, void* stream) {
  check_dims(plan.ndim, "remap_add");
  int64_t numel = 1;
  for (int d = 0; d < plan.ndim; ++d) numel *= plan.sizes[d];
  if (numel == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  if (t == ElemType::f32)
    remap_add_kernel<float><<<blocks_for(numel), kThreads, 0, st>>>(static_cast<const float*>(g),
                                                                     static_cast<float*>(out), table, plan, numel);
  else if (t == ElemType::f64)
    remap_add_kernel<double><<<blocks_for(numel), kThreads, 0, st>>>(static_cast<const double*>(g),
                                                                      static_cast<double*>(out), table, plan, numel);
  else
    EMBER_FAIL("remap_add: the CUDA kernel takes f32 or f64 only");
  EMBER_CUDA_LAUNCHED("remap_add");
}

void gather(size_t elem_size, const void* x, const int64_t* index, void* out, const GatherPlan& plan, void* stream) {
  check_dims(plan.ndim, "gather");
  EMBER_CHECK(plan.dim >= 0 && plan.dim < plan.ndim, "gather: dim ", plan.dim, " out of range");
  int64_t numel = 1;
  for (int d = 0; d < plan.ndim; ++d) numel *= plan.index_sizes[d];
  if (numel == 0) return;
  dispatch_size(elem_size, "gather", [&](auto tag) {
    using B = typename decltype(tag)::type;
    gather_kernel<B><<<blocks_for(numel), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const B*>(x), index, static_cast<B*>(out), plan, numel);
    EMBER_CUDA_LAUNCHED("gather");
  });
}

void scatter_add(ElemType t, void* out, const int64_t* index, const void* src, const ScatterPlan& plan, void* stream) {
  check_dims(plan.ndim, "scatter_add");
  EMBER_CHECK(plan.dim >= 0 && plan.dim < plan.ndim, "scatter_add: dim ", plan.dim, " out of range");
  int64_t numel = 1;
  for (int d = 0; d < plan.ndim; ++d) numel *= plan.index_sizes[d];
  if (numel == 0) return;
  const int64_t lines = numel / plan.index_sizes[plan.dim];
  bool done = false;
  dispatch_elem(t, "scatter_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool supported = std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t> ||
                               std::is_same_v<T, int32_t> || std::is_same_v<T, uint8_t>;
    if constexpr (supported) {
      scatter_add_kernel<T><<<blocks_for(lines), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
          static_cast<T*>(out), index, static_cast<const T*>(src), plan, lines);
      EMBER_CUDA_LAUNCHED("scatter_add");
      done = true;
    }
  });
  EMBER_CHECK(done, "scatter_add: no CUDA kernel for this element type");
}

void triangle(size_t elem_size, const void* x, void* out, int64_t rows_total, int64_t rows, int64_t cols,
              int64_t k, bool lower, void* stream) {
  const int64_t numel = rows_total * cols;
  if (numel == 0) return;
  dispatch_size(elem_size, lower ? "tril" : "triu", [&](auto tag) {
    using B = typename decltype(tag)::type;
    triangle_kernel<B><<<blocks_for(numel), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const B*>(x), static_cast<B*>(out), numel, rows, cols, k, lower);
    EMBER_CUDA_LAUNCHED(lower ? "tril" : "triu");
  });
}

}  // namespace ember::kernels::cuda
