// One sequence on the CPU: a paged KV cache per layer, chunked dense prefill through
// BLAS, decode steps through the quantised GEMVs and plan_decode/decode_cpu under the
// session's attention policy.
#pragma once

#include <memory>
#include <vector>

#include "model/llama_ops.h"
#include "model/llama_weights.h"
#include "sinkrouter/engine/engine.h"
#include "sinkrouter/kv/paged_kv_cache.h"

namespace sinkrouter {

struct CpuModel {
  ModelConfig config;
  LlamaWeights weights;
  EngineOptions options;
  int64_t capacity = 0;  // tokens per session
  std::unique_ptr<Rope> rope;
  std::unique_ptr<ThreadPool> pool;
};

class CpuSession final : public Session {
 public:
  CpuSession(const CpuModel& model, const AttentionPolicy& policy);
  const std::vector<float>& prefill(const std::vector<int32_t>& tokens, const ProgressFn& progress) override;
  const std::vector<float>& decode(int32_t token) override;
  int64_t length() const override { return length_; }
  const AttentionPolicy& policy() const override { return policy_; }
  void set_policy(const AttentionPolicy& policy) override;
  const HeadStats& last_step_stats() const override { return last_; }
  const HeadStats& total_stats() const override { return total_; }
  const std::vector<HeadStats>& last_step_layer_stats() const override { return layer_stats_; }
  std::unique_ptr<Session> fork() const override;

 private:
  void prefill_chunk(const int32_t* tokens, int64_t c, bool last_chunk);
  void detect_sinks(int layer, const std::vector<float>& received);
  void check_capacity(int64_t more) const;
  static bool needs_key_basis(const AttentionPolicy& p);
  void ensure_key_basis();

  const CpuModel& m_;
  AttentionPolicy policy_;
  std::vector<std::unique_ptr<PagedKVCache>> caches_;  // one per layer
  std::vector<int> seq_;                                // the sequence id in each cache
  int64_t length_ = 0;
  std::vector<float> logits_;
  HeadStats last_, total_;
  std::vector<HeadStats> layer_stats_;
};

}  // namespace sinkrouter
