// The host-side interface of the CUDA indexing kernels (index.cu): plain C++, so
// ops/indexing.cpp calls them from the C++ compiler.
//
// The ops do the planning on the host exactly as the CPU path does (maps from output to source
// coordinates, range checks, contiguous copies); the kernels only walk those plans. Tables go to
// the GPU as one i64 buffer each. Shapes arrive uncoalesced, so at most kMaxDims dims.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ember/kernels/cuda/elementwise.h"

namespace ember::kernels::cuda {

// remap: out[c] = x[sum_d table[start[d] + c_d]] for the output coordinates c; an entry of -1
// in any dim's map puts `fill_bits` there instead. x and out are dense; the table holds element
// offsets into x. Moves raw elements of `elem_size` bytes, so every dtype takes it (the fill
// value arrives already converted by the CPU's convert<T>).
struct RemapPlan {
  int ndim = 0;
  int64_t sizes[kMaxDims];  // output shape
  int64_t start[kMaxDims];  // where dim d's map begins in the table
};
void remap(size_t elem_size, const void* x, void* out, const int64_t* table, const RemapPlan& plan,
           uint64_t fill_bits, void* stream);

// remap_add, the adjoint: out[s] = sum of g[c] over every c with map_d(c_d) = s_d in all dims.
// The host inverts each dim's map into CSR form: for source coordinate s_d the entries
// table[ptr[d] + s_d] .. table[ptr[d] + s_d + 1] index into table[list[d] + ...], which holds the
// element offsets into g (dense) of the output coordinates that land there, in ascending order.
// Each thread owns one output element and adds its terms in g's row-major order, the order the
// CPU adds them in, so the result is the CPU's to the bit and no atomics are needed. f32/f64.
struct RemapAddPlan {
  int ndim = 0;
  int64_t sizes[kMaxDims];  // the source (output of this kernel) shape
  int64_t ptr[kMaxDims];
  int64_t list[kMaxDims];
};
void remap_add(ElemType t, const void* g, void* out, const int64_t* table, const RemapAddPlan& plan, void* stream);

// gather: out[c] = x[sum_{k != dim} c_k x_strides[k] + index[c] x_strides[dim]] over the index's
// shape; index and out dense, indices already range-checked. Raw elements, every dtype.
struct GatherPlan {
  int ndim = 0;
  int dim = 0;
  int64_t index_sizes[kMaxDims];
  int64_t x_strides[kMaxDims];  // elements
};
void gather(size_t elem_size, const void* x, const int64_t* index, void* out, const GatherPlan& plan, void* stream);

// scatter_add: out[c with c_dim := index[c]] += src[c] over the index's shape. One thread per
// line along `dim` walks it in order: lines land on disjoint lines of out (they differ in a
// coordinate other than dim), and within a line the additions come in the CPU's order, so the
// result is deterministic and the CPU's to the bit. f32, f64, i64, i32, u8.
struct ScatterPlan {
  int ndim = 0;
  int dim = 0;
  int64_t index_sizes[kMaxDims];
  int64_t out_strides[kMaxDims];  // elements
  int64_t src_strides[kMaxDims];  // elements
};
void scatter_add(ElemType t, void* out, const int64_t* index, const void* src, const ScatterPlan& plan, void* stream);

// tril / triu on dense [rows, cols] matrices stacked `rows_total / rows` deep: keep x where
// (lower ? j - i <= k : j - i >= k), zero bits elsewhere. Raw elements, every dtype.
void triangle(size_t elem_size, const void* x, void* out, int64_t rows_total, int64_t rows, int64_t cols,
              int64_t k, bool lower, void* stream);

}  // namespace ember::kernels::cuda
