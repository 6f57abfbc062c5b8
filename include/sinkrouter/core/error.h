// One error type for the whole library. Messages say what was wrong and what was
// expected, e.g. "decode: head_dim 96 is not supported (expected 64 or 128)".
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sinkrouter {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sinkrouter

// SR_CHECK(cond, "what {} expected {}", a, b): throws sinkrouter::Error when cond is false.
#define SR_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::sinkrouter::fail(__VA_ARGS__); \
  } while (0)
