// The benchmarks' main(): runs `run` and turns an exception into a one-line message on
// stderr and exit status 1, naming the program.
#pragma once

#include <cstdio>
#include <exception>

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

}  // namespace sinkrouter
