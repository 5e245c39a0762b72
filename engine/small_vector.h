// SmallVector<T, N>: a vector that keeps up to N elements inside itself and moves to the heap
// only beyond that. An op's bookkeeping is made of short lists (a tensor's sizes and strides, a
// node's edges, an op's inputs), and with std::vector each one was a malloc and a free: 36 of
// them per op in a DDE step, a third of the host's time per op on the GPU path
// (docs/performance.md, "Allocations per op"). The interface is the part of std::vector that
// ember uses, with the same meaning; iterators are pointers, invalidated as std::vector's are.
#pragma once
#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember {

template <typename T, size_t N>
class SmallVector {
  static_assert(N > 0, "SmallVector needs room for at least one element inside");

 public:
  using value_type = T;
  using size_type = size_t;
  using difference_type = std::ptrdiff_t;
  using reference = T&;
  using const_reference = const T&;
  using pointer = T*;
  using const_pointer = const T*;
  using iterator = T*;
  using const_iterator = const T*;
  using reverse_iterator = std::reverse_iterator<iterator>;
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;

  SmallVector() noexcept : data_(inline_data()) {}
  explicit SmallVector(size_t n) : SmallVector() { resize(n); }
  SmallVector(size_t n, const T& value) : SmallVector() { assign(n, value); }
  SmallVector(std::initializer_list<T> values) : SmallVector() { append(values.begin(), values.end()); }
  template <std::input_iterator It>
  SmallVector(It first, It last) : SmallVector() { append(first, last); }
  // From a std::vector, so code that builds a list as one can pass it where a SmallVector goes.
  SmallVector(const std::vector<T>& values) : SmallVector() { append(values.begin(), values.end()); }  // NOLINT
  SmallVector(const SmallVector& other) : SmallVector() { append(other.begin(), other.end()); }
  SmallVector(SmallVector&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : SmallVector() {
    take(std::move(other));
  }
  ~SmallVector() { release(); }

  SmallVector& operator=(const SmallVector& other) {
    if (this != &other) {
      clear();
      append(other.begin(), other.end());
    }
    return *this;
  }
  SmallVector& operator=(SmallVector&& other) noexcept(std::is_nothrow_move_constructible_v<T>) {
    if (this != &other) {
      release();
      data_ = inline_data();
      capacity_ = N;
      take(std::move(other));
    }
    return *this;
  }
  SmallVector& operator=(std::initializer_list<T> values) {
    assign(values.begin(), values.end());
    return *this;
  }

  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

  // ---- access ----
  size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  size_t capacity() const noexcept { return capacity_; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  T& operator[](size_t i) noexcept { return data_[i]; }
  const T& operator[](size_t i) const noexcept { return data_[i]; }
  T& at(size_t i) { return data_[checked(i)]; }
  const T& at(size_t i) const { return data_[checked(i)]; }
  T& front() noexcept { return data_[0]; }
  const T& front() const noexcept { return data_[0]; }
  T& back() noexcept { return data_[size_ - 1]; }
  const T& back() const noexcept { return data_[size_ - 1]; }

  iterator begin() noexcept { return data_; }
  iterator end() noexcept { return data_ + size_; }
  const_iterator begin() const noexcept { return data_; }
  const_iterator end() const noexcept { return data_ + size_; }
  const_iterator cbegin() const noexcept { return data_; }
  const_iterator cend() const noexcept { return data_ + size_; }
  reverse_iterator rbegin() noexcept { return reverse_iterator(end()); }
  reverse_iterator rend() noexcept { return reverse_iterator(begin()); }
  const_reverse_iterator rbegin() const noexcept { return const_reverse_iterator(end()); }
  const_reverse_iterator rend() const noexcept { return const_reverse_iterator(begin()); }

  // ---- changes ----
  void reserve(size_t n) {
    if (n > capacity_) grow_to(n);
  }
  void clear() noexcept {
    std::destroy(begin(), end());
    size_ = 0;
  }
  template <typename... Args>
  T& emplace_back(Args&&... args) {
    if (size_ == capacity_) {
      // The value may refer into this vector (v.push_back(v[0])): build it before moving house.
      T value(std::forward<Args>(args)...);
      grow_to(next_capacity(size_ + 1));
      ::new (static_cast<void*>(data_ + size_)) T(std::move(value));
    } else {
      ::new (static_cast<void*>(data_ + size_)) T(std::forward<Args>(args)...);
    }
    return data_[size_++];
  }
  void push_back(const T& value) { emplace_back(value); }
  void push_back(T&& value) { emplace_back(std::move(value)); }
  void pop_back() noexcept { std::destroy_at(data_ + --size_); }

  void resize(size_t n) {
    if (n < size_) return shrink(n);
    reserve(n);
    for (; size_ < n; ++size_) ::new (static_cast<void*>(data_ + size_)) T();
  }
  void resize(size_t n, const T& value) {
    if (n < size_) return shrink(n);
    if (n > capacity_) {
      const T copy(value);
      grow_to(n);
      for (; size_ < n; ++size_) ::new (static_cast<void*>(data_ + size_)) T(copy);
      return;
    }
    for (; size_ < n; ++size_) ::new (static_cast<void*>(data_ + size_)) T(value);
  }
  void assign(size_t n, const T& value) {
    const T copy(value);
    clear();
    resize(n, copy);
  }
  template <std::input_iterator It>
  void assign(It first, It last) {
    clear();
    append(first, last);
  }
  void assign(std::initializer_list<T> values) { assign(values.begin(), values.end()); }

  iterator insert(const_iterator pos, const T& value) { return insert_one(pos, T(value)); }
  iterator insert(const_iterator pos, T&& value) { return insert_one(pos, std::move(value)); }
  template <typename... Args>
  iterator emplace(const_iterator pos, Args&&... args) { return insert_one(pos, T(std::forward<Args>(args)...)); }
  iterator insert(const_iterator pos, size_t n, const T& value) {
    const size_t at = index_of(pos), old = size_;
    resize(size_ + n, value);
    std::rotate(begin() + at, begin() + old, end());
    return begin() + at;
  }
  template <std::input_iterator It>
  iterator insert(const_iterator pos, It first, It last) {
    const size_t at = index_of(pos);
    // A copy first: the range may lie inside this vector.
    SmallVector added(first, last);
    const size_t old = size_;
    reserve(size_ + added.size());
    for (T& v : added) ::new (static_cast<void*>(data_ + size_++)) T(std::move(v));
    std::rotate(begin() + at, begin() + old, end());
    return begin() + at;
  }
  iterator insert(const_iterator pos, std::initializer_list<T> values) {
    return insert(pos, values.begin(), values.end());
  }
  iterator erase(const_iterator pos) { return erase(pos, pos + 1); }
  iterator erase(const_iterator first, const_iterator last) {
    const size_t at = index_of(first), n = static_cast<size_t>(last - first);
    if (n == 0) return begin() + at;  // no self-moves: a moved-onto-itself string comes out empty
    std::move(begin() + at + n, end(), begin() + at);
    shrink(size_ - n);
    return begin() + at;
  }

  // ---- comparison, as std::vector's ----
  friend bool operator==(const SmallVector& a, const SmallVector& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend auto operator<=>(const SmallVector& a, const SmallVector& b) {
    return std::lexicographical_compare_three_way(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  T* inline_data() noexcept { return std::launder(reinterpret_cast<T*>(inline_)); }
  bool on_heap() const noexcept { return data_ != reinterpret_cast<const T*>(inline_); }
  size_t index_of(const_iterator pos) const noexcept { return static_cast<size_t>(pos - begin()); }
  size_t checked(size_t i) const {
    if (i >= size_) throw std::out_of_range("SmallVector::at: index out of range");
    return i;
  }
  size_t next_capacity(size_t needed) const noexcept { return std::max(needed, 2 * size_t{capacity_}); }

  template <typename It>
  void append(It first, It last) {
    if constexpr (std::forward_iterator<It>) reserve(size_ + static_cast<size_t>(std::distance(first, last)));
    for (; first != last; ++first) emplace_back(*first);
  }
  iterator insert_one(const_iterator pos, T&& value) {
    const size_t at = index_of(pos);
    emplace_back(std::move(value));
    std::rotate(begin() + at, end() - 1, end());
    return begin() + at;
  }
  void shrink(size_t n) noexcept {
    std::destroy(begin() + n, end());
    size_ = static_cast<uint32_t>(n);
  }
  void grow_to(size_t n) {
    if (n > UINT32_MAX) throw std::length_error("SmallVector: more than 2^32 - 1 elements");
    T* fresh = std::allocator<T>().allocate(n);
    std::uninitialized_move(begin(), end(), fresh);
    std::destroy(begin(), end());
    if (on_heap()) std::allocator<T>().deallocate(data_, capacity_);
    data_ = fresh;
    capacity_ = static_cast<uint32_t>(n);
  }
  // Frees everything; leaves data_ dangling for the caller to reset.
  void release() noexcept {
    std::destroy(begin(), end());
    if (on_heap()) std::allocator<T>().deallocate(data_, capacity_);
    size_ = 0;
  }
  // This vector is empty and inline; takes other's elements, leaving it empty.
  void take(SmallVector&& other) {
    if (other.on_heap()) {
      data_ = other.data_;
      size_ = other.size_;
      capacity_ = other.capacity_;
      other.data_ = other.inline_data();
      other.size_ = 0;
      other.capacity_ = N;
      return;
    }
    std::uninitialized_move(other.begin(), other.end(), data_);
    size_ = other.size_;
    other.clear();
  }

  // 32-bit counts keep a Shape at 64 bytes, so a closure holding two fits a node's BackwardFn.
  T* data_;
  uint32_t size_ = 0;
  uint32_t capacity_ = N;
  alignas(T) unsigned char inline_[N * sizeof(T)];
};

}  // namespace ember
