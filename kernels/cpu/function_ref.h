// FunctionRef<R(A...)>: a non-owning reference to a callable, two pointers wide, for a callee
// that calls it before returning (parallel_for). Passing a lambda where a
// const std::function& was asked built a std::function first, and a lambda with more than
// 16 bytes of captures (most of the kernels') cost a malloc and a free per call: thousands
// per training step. The referenced callable must outlive the call, as a temporary lambda
// passed as the argument does.
#pragma once
#include <memory>
#include <type_traits>
#include <utility>

namespace ember::kernels::cpu {

template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
  FunctionRef(F&& f) noexcept  // NOLINT: converts from any callable, as std::function does
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace ember::kernels::cpu
