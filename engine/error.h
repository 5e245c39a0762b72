// ember::Error: the one exception type. Every message names the op (or file), the shapes
// involved and what the user can do about it. EMBER_CHECK builds such a message lazily.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ember {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace ember

// EMBER_CHECK(cond, "op: ", a, " vs ", b) throws ember::Error with the streamed message.
#define EMBER_CHECK(cond, ...)                                          \
  do {                                                                  \
    if (!(cond)) throw ::ember::Error(::ember::detail::concat(__VA_ARGS__)); \
  } while (0)

#define EMBER_FAIL(...) throw ::ember::Error(::ember::detail::concat(__VA_ARGS__))
