# Third-party libraries, all from Debian packages (the Makefile installs them).
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)  # tokenizer pre-tokenisers
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # sha256_file() for the model checksum
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
if(SINKROUTER_TESTS)
  find_package(GTest REQUIRED)
endif()
if(SINKROUTER_BENCH)
  find_package(benchmark REQUIRED)
endif()
