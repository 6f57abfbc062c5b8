#include "core/cuda_graph.h"

#include "core/cuda_check.h"

namespace sinkrouter::cuda {

cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()>& enqueue) {
  cudaGraph_t g = nullptr;
  SR_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  SR_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t st = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  SR_CUDA_CHECK(st);
  return exec;
}

}  // namespace sinkrouter::cuda
