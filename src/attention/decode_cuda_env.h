// Decode options left to the environment (CudaDecodeOptions fields at -1): internal header
// of the CUDA decoder's plan (decode_cuda.cu, decode_cuda_cluster_plan.cu).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>

#include "sinkrouter/core/error.h"

namespace sinkrouter::decode_env {

// The value of an option left to the environment: variable `name` (read per decoder) holds
// one of `choices`' names, `fallback`'s when unset; anything else is a clear error.
inline int option_from_env(const char* name, const char* fallback,
                    std::initializer_list<std::pair<const char*, int>> choices, const char* allowed) {
  const char* env = std::getenv(name);
  const std::string value = env == nullptr ? fallback : env;
  for (const auto& [text, v] : choices)
    if (value == text) return v;
  fail("decode (CUDA): {} must be {}, not '{}'", name, allowed, value);
}

// An integer option from the environment variable `name`: unset, `unset` (0: the decoder
// chooses); else the whole text must be a decimal integer (its range is checked by the caller).
inline int int_option_from_env(const char* name, int unset = 0) {
  const char* env = std::getenv(name);
  if (env == nullptr) return unset;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  SR_CHECK(*env != '\0' && *end == '\0' && v >= INT32_MIN && v <= INT32_MAX,
           "decode (CUDA): {} must be an integer, not '{}'", name, env);
  return int(v);
}

}  // namespace sinkrouter::decode_env
