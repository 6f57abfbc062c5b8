// The benchmarks' main(): runs `run` and turns an exception into a one-line message on
// stderr and exit status 1, naming the program; and parse_list for their list arguments.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace sinkrouter {

template <typename Run>
int bench_main(const char* program, Run run, int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

namespace bench {
// "4096,8192" -> {4096, 8192}; empty where any item is not an integer.
inline std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long x = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') return {};
    v.push_back(x);
  }
  return v;
}
}  // namespace bench

}  // namespace sinkrouter
