// Grad mode: whether ops record the graph. NoGrad turns recording off in a scope (sampling,
// optimizer steps); EnableGrad turns it back on inside such a scope.
#pragma once

namespace ember {

bool grad_enabled();
void set_grad_enabled(bool on);

class GradModeGuard {
 public:
  explicit GradModeGuard(bool on) : prev_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeGuard() { set_grad_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

struct NoGrad : GradModeGuard {
  NoGrad() : GradModeGuard(false) {}
};
struct EnableGrad : GradModeGuard {
  EnableGrad() : GradModeGuard(true) {}
};

}  // namespace ember
