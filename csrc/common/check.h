// provides: PYCLVP_CHECK(cond, msg...) -> throws std::invalid_argument (pybind11 maps it to ValueError).
// The core never exits or aborts: a bad argument is reported to Python before any memory is touched.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pyclvp {

template <typename... Args>
[[noreturn]] inline void fail(const char* where, Args&&... args) {
  std::ostringstream os;
  os << where << ": ";
  (os << ... << args);
  throw std::invalid_argument(os.str());
}

}  // namespace pyclvp

#define PYCLVP_CHECK(cond, ...)                          \
  do {                                                   \
    if (!(cond)) ::pyclvp::fail(__func__, __VA_ARGS__);  \
  } while (0)
