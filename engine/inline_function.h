// InlineFunction<R(A...), Bytes>: a move-only std::function that keeps a callable of up to
// `Bytes` inside itself and goes to the heap only for a larger one. Every recorded op stores
// its backward closure, which captures a few tensors, shapes and flags (32 to 144 bytes); in a
// std::function, whose inline room is 16 bytes, each one was a malloc at record time and a
// free when the graph died (docs/performance.md, "Allocations per op").
#pragma once
#include <cstddef>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

namespace ember {

template <typename Signature, size_t Bytes>
class InlineFunction;

template <typename R, typename... Args, size_t Bytes>
class InlineFunction<R(Args...), Bytes> {
 public:
  InlineFunction() noexcept = default;
  InlineFunction(std::nullptr_t) noexcept {}  // NOLINT
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, InlineFunction> &&
             std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
  InlineFunction(F&& f) {  // NOLINT: converts from any callable, as std::function does
    using D = std::decay_t<F>;
    if constexpr (std::is_same_v<D, std::function<R(Args...)>> || std::is_pointer_v<D>) {
      if (!f) return;  // an empty std::function or a null pointer: empty, as std::function
    }
    if constexpr (fits_inline<D>()) {
      ::new (static_cast<void*>(storage_)) D(std::forward<F>(f));
      ops_ = &inline_ops<D>;
    } else {
      ::new (static_cast<void*>(storage_)) D*(new D(std::forward<F>(f)));
      ops_ = &heap_ops<D>;
    }
  }
  InlineFunction(InlineFunction&& other) noexcept { take(other); }
  InlineFunction& operator=(InlineFunction&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  InlineFunction& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }
  InlineFunction(const InlineFunction&) = delete;
  InlineFunction& operator=(const InlineFunction&) = delete;
  ~InlineFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Whether a callable of type D is kept inside (else it goes to the heap).
  template <typename D>
  static constexpr bool fits_inline() {
    return sizeof(D) <= Bytes && alignof(D) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<D>;
  }

  R operator()(Args... args) const {
    if (!ops_) throw std::bad_function_call();
    return ops_->call(const_cast<unsigned char*>(storage_), std::forward<Args>(args)...);
  }

 private:
  struct Ops {
    R (*call)(void* storage, Args&&... args);
    void (*move)(void* from, void* to) noexcept;  // move-constructs into `to`, destroys `from`
    void (*destroy)(void* storage) noexcept;
  };

  template <typename D>
  static D& inline_object(void* storage) { return *std::launder(static_cast<D*>(storage)); }
  template <typename D>
  static D*& heap_object(void* storage) { return *std::launder(static_cast<D**>(storage)); }

  template <typename D>
  static constexpr Ops inline_ops{
      [](void* s, Args&&... args) -> R { return std::invoke(inline_object<D>(s), std::forward<Args>(args)...); },
      [](void* from, void* to) noexcept {
        ::new (to) D(std::move(inline_object<D>(from)));
        inline_object<D>(from).~D();
      },
      [](void* s) noexcept { inline_object<D>(s).~D(); }};
  template <typename D>
  static constexpr Ops heap_ops{
      [](void* s, Args&&... args) -> R { return std::invoke(*heap_object<D>(s), std::forward<Args>(args)...); },
      [](void* from, void* to) noexcept { ::new (to) D*(heap_object<D>(from)); },
      [](void* s) noexcept { delete heap_object<D>(s); }};

  void take(InlineFunction& other) noexcept {
    if (!other.ops_) return;
    other.ops_->move(other.storage_, storage_);
    ops_ = other.ops_;
    other.ops_ = nullptr;
  }
  void reset() noexcept {
    if (ops_) ops_->destroy(storage_);
    ops_ = nullptr;
  }

  const Ops* ops_ = nullptr;
  alignas(std::max_align_t) unsigned char storage_[Bytes < sizeof(void*) ? sizeof(void*) : Bytes];
};

}  // namespace ember
