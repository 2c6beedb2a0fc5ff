// provides: PYCLVP_CHECK(cond, msg...) -> throws std::invalid_argument (pybind11 maps it to ValueError);
//           concat(parts...) -> std::string, the message builder every error in the core uses.
// The core never exits or aborts: a bad argument is reported to Python before any memory is touched.
//
// Messages are built without iostreams: an ostream formats numbers through the locale's num_put facet,
// which breaks in a process holding two copies of libstdc++ (a statically linked one beside the system's);
// std::to_string and snprintf touch no C++ locale.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace pyclvp {

namespace detail {
template <typename T>
void append(std::string& s, const T& v) {
  using U = std::decay_t<T>;
  if constexpr (std::is_same_v<U, char>) {
    s += v;
  } else if constexpr (std::is_same_v<U, bool>) {
    s += v ? "1" : "0";  // as an ostream prints a bool
  } else if constexpr (std::is_integral_v<U>) {
    s += std::to_string(v);
  } else if constexpr (std::is_floating_point_v<U>) {
    char buf[32];  // "%g": an ostream's default format (6 significant digits)
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
    s += buf;
  } else {
    static_assert(std::is_convertible_v<const T&, std::string_view>, "concat: a string, a character or a number");
    s += std::string_view(v);
  }
}
}  // namespace detail

template <typename... Args>
std::string concat(const Args&... args) {
  std::string s;
  (detail::append(s, args), ...);
  return s;
}

template <typename... Args>
[[noreturn]] inline void fail(const char* where, const Args&... args) {
  throw std::invalid_argument(concat(where, ": ", args...));
}

}  // namespace pyclvp

#define PYCLVP_CHECK(cond, ...)                          \
  do {                                                   \
    if (!(cond)) ::pyclvp::fail(__func__, __VA_ARGS__);  \
  } while (0)
