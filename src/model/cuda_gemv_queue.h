// The decode step's GEMVs on their way to the device (host side, CUDA builds only). Under
// GemvVersion::Chain, consecutive GEMVs (up to kMaxChainStages) with nothing else launched
// between them share one launch (gemv_chain): the caller flushes before any other kernel
// that reads their outputs, and at the end (nothing is launched until then). Under V1 / V2 each GEMV launches as it is pushed.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include "model/cuda_ops.h"

namespace sinkrouter::cuda {

class GemvQueue {
 public:
  // barriers: `count` zeroed device words; a chain uses the next one round-robin, so that
  // launches still in flight under programmatic dependent launch never share a word
  // (a step has more words than chains: the engine gives one per layer and one spare).
  GemvQueue(GemvVersion version, unsigned* barriers, int count, cudaStream_t stream)
      : version_(version), barriers_(barriers), count_(count), stream_(stream) {}
  GemvQueue(const GemvQueue&) = delete;
  GemvQueue& operator=(const GemvQueue&) = delete;

  void push(const GemvArgs& args, GemvIn in, GemvOut out) {
    if (version_ != GemvVersion::Chain) return gemv(args, in, out, stream_, version_);
    if (pending_ == kMaxChainStages) flush();
    stages_[pending_++] = GemvStage{args, in, out};
  }

  // Profiling: chain launch i stamps into trace + i * words_per_launch (see gemv_chain).
  void set_trace(long long* trace, int64_t words_per_launch) {
    trace_ = trace;
    trace_words_ = words_per_launch;
  }

  void flush() {
    if (pending_ == 0) return;
    const int n = pending_;
    pending_ = 0;
    gemv_chain(stages_, n, barriers_ + next_, stream_, trace_ ? trace_ + launches_ * trace_words_ : nullptr);
    next_ = (next_ + 1) % count_;
    ++launches_;
  }

 private:
  GemvVersion version_;
  unsigned* barriers_;
  int count_;
  cudaStream_t stream_;
  GemvStage stages_[kMaxChainStages];
  int pending_ = 0, next_ = 0;
  long long* trace_ = nullptr;
  int64_t trace_words_ = 0, launches_ = 0;
};

}  // namespace sinkrouter::cuda

#endif  // SINKROUTER_HAVE_CUDA
