# Pick the widest x86 vector level the build machine can run: x86-64-v3 (AVX2, FMA, F16C)
# when available, the compiler default otherwise. Override with -DSINKROUTER_CPU_FLAGS=...
include(CheckCXXSourceRuns)
if(NOT DEFINED SINKROUTER_CPU_FLAGS)
  set(SINKROUTER_CPU_FLAGS "")
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    set(CMAKE_REQUIRED_FLAGS "-march=x86-64-v3")
    check_cxx_source_runs("
      int main() { return (__builtin_cpu_supports(\"avx2\") && __builtin_cpu_supports(\"fma\")
                           && __builtin_cpu_supports(\"f16c\")) ? 0 : 1; }"
      SINKROUTER_HOST_HAS_X86_64_V3)
    unset(CMAKE_REQUIRED_FLAGS)
    if(SINKROUTER_HOST_HAS_X86_64_V3)
      set(SINKROUTER_CPU_FLAGS "-march=x86-64-v3")
    endif()
  endif()
endif()
message(STATUS "SinkRouter: CPU flags '${SINKROUTER_CPU_FLAGS}'")
