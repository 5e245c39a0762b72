// In-place updates for optimizers and initialisers. They are not recorded: autograd refuses
// a tensor that requires grad while grad mode is on (use NoGrad, as optimizers do), and each
// write bumps the storage version so a backward that saved the tensor notices.
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/copy.h"
#include "ember/engine/factory.h"
#include "ember/ops/elementwise.h"

namespace ember {

namespace {
void check_writable(const Tensor& t, const char* op) {
  EMBER_CHECK(!(grad_enabled() && t.requires_grad()), op, ": in-place update of ", t.str(),
              " which requires grad; wrap it in NoGrad (as an optimizer step does) or work on a detached copy");
}
}  // namespace

Tensor& Tensor::zero_() { return fill_(0.0); }

Tensor& Tensor::fill_(double v) {
  check_writable(*this, "fill_");
  fill_tensor(*this, v);
  bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_writable(*this, "copy_");
  copy_into(*this, src);
  bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_writable(*this, "add_");
  NoGrad ng;
  Tensor r = alpha == 1.0 ? add(*this, other) : add(*this, mul(other, alpha));
  EMBER_CHECK(r.sizes() == sizes(), "add_: ", shape_str(other.sizes()), " broadcast into ", shape_str(sizes()),
              " would change its shape");
  copy_into(*this, r);
  bump_version();
  return *this;
}

Tensor& Tensor::mul_(double v) {
  check_writable(*this, "mul_");
  NoGrad ng;
  copy_into(*this, mul(*this, v));
  bump_version();
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other) {
  check_writable(*this, "mul_");
  NoGrad ng;
  Tensor r = mul(*this, other);
  EMBER_CHECK(r.sizes() == sizes(), "mul_: ", shape_str(other.sizes()), " broadcast into ", shape_str(sizes()),
              " would change its shape");
  copy_into(*this, r);
  bump_version();
  return *this;
}

}  // namespace ember
