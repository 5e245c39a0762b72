#include "ember/engine/copy.h"

#include <cstring>

#include "ember/engine/dispatch.h"
#include "ember/engine/loop_builder.h"

namespace ember {

namespace {
bool broadcastable_to(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  for (size_t i = 0; i < from.size(); ++i) {
    int64_t f = from[from.size() - 1 - i], t = to[to.size() - 1 - i];
    if (f != t && f != 1) return false;
  }
  return true;
}
}  // namespace

void copy_into(const Tensor& dst, const Tensor& src) {
  EMBER_CHECK(dst.device() == src.device(), "copy: source on ", src.device().str(), ", destination on ",
              dst.device().str(), "; move one with .to(device)");
  EMBER_CHECK(dst.device().is_cpu(), "copy: the CUDA backend is not built into this ember");
  EMBER_CHECK(broadcastable_to(src.sizes(), dst.sizes()), "copy: source of shape ", shape_str(src.sizes()),
              " does not broadcast to destination shape ", shape_str(dst.sizes()));
  if (dst.numel() == 0) return;
  // Same dtype, both contiguous, same size: one memcpy.
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous() && dst.numel() == src.numel()) {
    std::memmove(dst.raw_data(), src.raw_data(), dst.numel() * dst.element_size());
    return;
  }
  auto loop = make_loop<2>(dst.sizes(), {&dst, &src});
  dispatch_all(dst.dtype(), "copy", [&](auto out_tag) {
    using O = typename decltype(out_tag)::type;
    dispatch_all(src.dtype(), "copy", [&](auto in_tag) {
      using I = typename decltype(in_tag)::type;
      kernels::cpu::map<O, I>(loop, [](I v) { return convert<O>(v); });
    });
  });
}

void fill_tensor(const Tensor& dst, double value) {
  EMBER_CHECK(dst.device().is_cpu(), "fill: the CUDA backend is not built into this ember");
  if (dst.numel() == 0) return;
  dispatch_all(dst.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = convert<T>(value);
    auto loop = make_loop<1>(dst.sizes(), {&dst});
    kernels::cpu::for_each(loop, [&](char** p, const int64_t* s, int64_t n) {
      for (int64_t i = 0; i < n; ++i) *reinterpret_cast<T*>(p[0] + i * s[0]) = v;
    });
  });
}

}  // namespace ember
