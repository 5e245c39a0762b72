#include "ember/engine/copy.h"

#include <cstring>

#include "ember/engine/dispatch.h"
#include "ember/engine/loop_builder.h"
#if EMBER_WITH_CUDA
#include "ember/engine/cuda/bridge.h"
#endif

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

#if EMBER_WITH_CUDA
namespace {
// Between the host and a GPU, or two GPUs: bytes move only between dense buffers of one dtype,
// so the source is first made dense (and broadcast) on its own device, and a destination that
// is not dense of that dtype receives through a dense buffer on its device.
void copy_across_devices(const Tensor& dst, const Tensor& src) {
  Tensor s = src.detach();
  if (s.sizes() != dst.sizes()) s = s.expand(dst.sizes());
  if (!s.is_contiguous()) {
    Tensor dense = Tensor::empty(dst.sizes(), {.dtype = s.dtype(), .device = s.device()});
    copy_into(dense, s);
    s = dense;
  }
  const bool direct = dst.is_contiguous() && dst.dtype() == s.dtype();
  Tensor landing = direct ? dst : Tensor::empty(dst.sizes(), {.dtype = s.dtype(), .device = dst.device()});
  cuda::copy_bytes(landing.device_data(), landing.device(), s.device_data(), s.device(),
                   static_cast<size_t>(s.numel()) * s.element_size());
  if (!direct) copy_into(dst, landing);
}
}  // namespace
#endif

void copy_into(const Tensor& dst, const Tensor& src) {
  EMBER_CHECK(broadcastable_to(src.sizes(), dst.sizes()), "copy: source of shape ", shape_str(src.sizes()),
              " does not broadcast to destination shape ", shape_str(dst.sizes()));
  if (dst.numel() == 0) return;
#if EMBER_WITH_CUDA
  if (!(dst.device() == src.device())) return copy_across_devices(dst, src);
  if (dst.device().is_cuda()) {
    if (dst.storage() == src.storage()) {  // views of one buffer may overlap: one kernel would race
      Tensor tmp = Tensor::empty(src.sizes(), {.dtype = src.dtype(), .device = src.device()});
      copy_into(tmp, src);
      return copy_into(dst, tmp);
    }
    kernels::cuda::copy(cuda::elem_type(dst.dtype()), cuda::elem_type(src.dtype()),
                        cuda::make_strided<2>(dst.sizes(), {&dst, &src}), cuda::stream_of(dst));
    return;
  }
#endif
  EMBER_CHECK(dst.device() == src.device(), "copy: source on ", src.device().str(), ", destination on ",
              dst.device().str(), "; move one with .to(device)");
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
  if (dst.numel() == 0) return;
#if EMBER_WITH_CUDA
  if (dst.device().is_cuda()) {
    kernels::cuda::fill(cuda::elem_type(dst.dtype()), cuda::make_strided<1>(dst.sizes(), {&dst}), value,
                        cuda::stream_of(dst));
    return;
  }
#endif
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
