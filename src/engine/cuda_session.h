// One sequence on a CUDA device (the Session interface of engine.h), and batched
// generation of several prompts of different lengths in one decode loop.
//
// Plain C++ header: engine.cpp (g++) includes it.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <memory>
#include <vector>

#include "engine/cuda_forward.h"
#include "engine/cuda_model.h"
#include "sinkrouter/engine/engine.h"

namespace sinkrouter {

class CudaSession final : public Session {
 public:
  CudaSession(const CudaModel& model, const AttentionPolicy& policy);
  const std::vector<float>& prefill(const std::vector<int32_t>& tokens, const ProgressFn& progress) override;
  const std::vector<float>& decode(int32_t token) override;
  int32_t decode_greedy(int32_t token) override;  // the argmax on the device (CudaForward::decode_greedy)
  int64_t length() const override { return forward_.length(0); }
  const AttentionPolicy& policy() const override { return forward_.policy(); }
  void set_policy(const AttentionPolicy& policy) override;
  const HeadStats& last_step_stats() const override { return last_; }
  const HeadStats& total_stats() const override { return total_; }
  const std::vector<HeadStats>& last_step_layer_stats() const override { return layer_stats_; }
  // A copy made by replaying this session's prefills and decode steps (the device cache
  // has no copy operation): the kernels are deterministic, so the copy holds the same bits.
  std::unique_ptr<Session> fork() const override;

  // For the benchmark and the tests.
  CudaForward& forward() { return forward_; }

 private:
  struct Event {  // one prefill call, or a run of decode steps under one policy
    bool prefill = false;
    std::vector<int32_t> tokens;
    AttentionPolicy policy;
  };

  int32_t step(int32_t token, bool greedy);  // decode / decode_greedy: -1 unless greedy

  const CudaModel& m_;
  CudaForward forward_;
  std::vector<float> logits_;
  HeadStats last_, total_;
  std::vector<HeadStats> layer_stats_;
  std::vector<Event> history_;
};

// Greedy or sampled generation for every prompt at once (one decode step feeds a token to
// every sequence). Each sequence samples with its own generator seeded as generate() seeds
// one; a sequence that stopped is fed its last token until all stop (its results are kept
// as they were). options.on_token and options.prefill_progress are not called.
std::vector<GenerateResult> cuda_generate_batch(const CudaModel& model, const Tokenizer& tokenizer,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const AttentionPolicy& policy, const GenerateOptions& options);

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
