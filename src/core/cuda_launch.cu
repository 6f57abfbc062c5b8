// Programmatic dependent launch: whether launches get the attribute (cuda_launch.cuh).
#include "core/cuda_launch.cuh"

#include <cstdlib>
#include <cstring>

namespace sinkrouter::cuda {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SINKROUTER_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return enabled;
}

}  // namespace sinkrouter::cuda
