// Copies with conversion between any two element types (the engine's copy_into, .to(dtype),
// contiguous()), fills, and cat's copy of several pieces in one launch. Conversion goes through
// double like the CPU's convert<To>(), so both backends give the same bits; a same-type copy
// moves raw bits (vectorised when dense).
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

// A group of cat's pieces for one launch, in units of the launch's word: each piece's pointer,
// its row width, and where its columns start in the group's part of an output row.
constexpr int kCatGroup = 8;
struct CatGroup {
  int n = 0;
  const char* ptrs[kCatGroup];
  int64_t widths[kCatGroup];
  int64_t starts[kCatGroup];
  int64_t total = 0;  // the group's width
};

// One thread per word of the group's columns of the output; the piece a column belongs to is
// found by a scan of at most 8 starts (the pieces of a DenseNet's cat are two).
template <typename Word>
__global__ void cat_rows_kernel(CatGroup g, int64_t rows, Word* out, int64_t out_row) {
  const int64_t n = rows * g.total;
  for (int64_t i = first_index(); i < n; i += grid_step()) {
    const int64_t r = i / g.total, c = i - r * g.total;
    int k = 0;
    while (k + 1 < g.n && c >= g.starts[k + 1]) ++k;
    out[r * out_row + c] = reinterpret_cast<const Word*>(g.ptrs[k])[r * g.widths[k] + (c - g.starts[k])];
  }
}

}  // namespace

void cat_rows(int n, const char* const* pieces, const int64_t* widths, int64_t rows, char* out, void* stream) {
  int64_t out_row = 0;
  for (int i = 0; i < n; ++i) out_row += widths[i];
  if (rows == 0 || out_row == 0) return;
  auto st = static_cast<cudaStream_t>(stream);
  int64_t column = 0;  // bytes: where the next group starts in an output row
  for (int first = 0; first < n;) {
    CatGroup g;
    const int64_t group_start = column;
    for (; first < n && g.n < kCatGroup; ++first) {
      if (widths[first] == 0) continue;
      g.ptrs[g.n] = pieces[first];
      g.widths[g.n] = widths[first];
      g.starts[g.n] = column - group_start;
      column += widths[first];
      ++g.n;
    }
    if (g.n == 0) break;
    // The widest word that divides every width, start and pointer of the group and the row.
    int64_t word = 16;
    auto fits = [&](int64_t w) {
      if (out_row % w != 0 || reinterpret_cast<uintptr_t>(out + group_start) % w != 0) return false;
      for (int k = 0; k < g.n; ++k)
        if (g.widths[k] % w != 0 || g.starts[k] % w != 0 || reinterpret_cast<uintptr_t>(g.ptrs[k]) % w != 0)
          return false;
      return true;
    };
    while (word > 1 && !fits(word)) word /= 2;
    for (int k = 0; k < g.n; ++k) {
      g.widths[k] /= word;
      g.starts[k] /= word;
    }
    g.total = (column - group_start) / word;
    auto launch = [&](auto word_tag) {
      using Word = typename decltype(word_tag)::type;
      cat_rows_kernel<Word><<<blocks_for(rows * g.total), kThreads, 0, st>>>(
          g, rows, reinterpret_cast<Word*>(out + group_start), out_row / word);
    };
    switch (word) {
      case 16: launch(std::type_identity<Vec<uint64_t, 2>>{}); break;
      case 8: launch(std::type_identity<uint64_t>{}); break;
      case 4: launch(std::type_identity<uint32_t>{}); break;
      case 2: launch(std::type_identity<uint16_t>{}); break;
      default: launch(std::type_identity<uint8_t>{}); break;
    }
    EMBER_CUDA_LAUNCHED("cat");
  }
}

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
