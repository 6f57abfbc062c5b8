// CUDA graph capture (internal header, CUDA builds only): what a function enqueues on a
// stream, captured and instantiated. Used by the engine's decode step, the tests and the
// kernel benchmark.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>

namespace sinkrouter::cuda {

// What `enqueue` puts on `stream` (thread-local capture mode), captured into an
// instantiated graph; throws Error on a CUDA failure. The stream stays usable when
// enqueue throws (the capture is ended and discarded, the exception passed on).
cudaGraphExec_t capture_graph(cudaStream_t stream, const std::function<void()>& enqueue);

}  // namespace sinkrouter::cuda
