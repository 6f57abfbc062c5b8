// The inference engine: loads a Llama-family GGUF, owns the weights and the per-layer
// paged KV caches, and runs chunked dense prefill and decode steps whose attention
// follows a per-session policy (dense, sinkrouter, streaming, quest, blasst).
//
// A Session is one sequence. Typical use:
//   Engine engine({.model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf"});
//   auto s = engine.new_session(policy);
//   auto logits = s->prefill(engine.tokenizer().encode(prompt, true));
//   int32_t next = argmax(logits); logits = s->decode(next); ...
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/attention/policy.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/model/tokenizer.h"

namespace sinkrouter {

struct ModelConfig {
  std::string architecture;  // "llama"
  std::string name;          // general.name
  int n_layers = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
  int64_t context_length = 0;  // trained context
  float rope_base = 10000.f;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;
  std::vector<float> rope_freq_divisors;  // rope_freqs.weight (llama3 scaling); empty if none
};

struct EngineOptions {
  std::string model_path;
  // "cpu", "cuda", or "auto" (cuda when the library was built with CUDA and a device is
  // present). The GPU engine keeps bf16 weights and a bf16 KV cache on the device.
  std::string device = "cpu";
  int threads = 0;              // 0: all cores
  int64_t max_context = 0;      // KV capacity per session in tokens; 0: the trained context
  bool allow_beyond_trained_context = false;  // else a prompt longer than it is an Error
  DType kv_dtype = DType::BF16;
  int page_size = 16;
  int block_size = 64;          // routing block R
  int prefill_chunk = 512;      // tokens per prefill chunk (CPU)
  int cuda_prefill_chunk = 32768;  // tokens per GPU prefill chunk (more rows: fuller grids; PERF.md run 10g)
  int first_anchors = 4;        // the first tokens are anchors in every head
  int detected_sinks = 4;       // extra anchors per head found at prefill (0: none)
  bool verify_checksum = true;  // check models/*.sha256 beside the file when present
  // Decode matmuls: "q8" quantises each activation to int8 blocks of 32 (as llama.cpp;
  // fast), "f32" dots dequantised weight rows with float activations (slower; the
  // reference mode the golden tests use).
  std::string matmul = "q8";
};

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// Sees each layer's attention as a session runs (sinkrouter analyze, debugging). Called on
// the session's thread; the references are valid only during the call. A session without
// an observer pays nothing for the hook.
class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  // After the decode attention of `layer`: q [1, n_head, head_dim] f32 (RoPE applied,
  // not scaled), the layer's KV cache with the new token appended, the plan that ran.
  virtual void on_decode(int layer, const TensorView& q, const PagedKV& kv, const RoutePlan& plan) {
    (void)layer, (void)q, (void)kv, (void)plan;
  }
  // At the end of a prefill, before sink detection: the layer's cache, and `received`
  // [n_kv_heads, n], the mean attention each key got from the prompt's last queries
  // (averaged over those queries and the query heads of the KV head).
  virtual void on_prefill_end(int layer, const PagedKV& kv, const std::vector<float>& received) {
    (void)layer, (void)kv, (void)received;
  }
};

class Session {
 public:
  virtual ~Session() = default;
  // Appends the tokens and runs them through the model (dense, chunked). Returns the
  // logits of the last token, [n_vocab]. At the end of a prefill, sinks are detected and
  // registered as anchors (EngineOptions::detected_sinks).
  virtual const std::vector<float>& prefill(const std::vector<int32_t>& tokens,
                                            const ProgressFn& progress = {}) = 0;
  // One decode step under the session's policy: appends `token`, returns its logits.
  virtual const std::vector<float>& decode(int32_t token) = 0;
  // The same step for greedy decoding: returns the next token, the first index of the
  // largest logit (sample_token at temperature 0). The GPU session takes the argmax on the
  // device and downloads only the id; the logits are then not available on the host.
  virtual int32_t decode_greedy(int32_t token) {
    const std::vector<float>& logits = decode(token);
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  virtual int64_t length() const = 0;
  virtual const AttentionPolicy& policy() const = 0;
  virtual void set_policy(const AttentionPolicy& policy) = 0;
  // Attention statistics summed over layers and KV heads: of the last decode step, and of
  // every decode step so far (delta and the error bound are maxima).
  virtual const HeadStats& last_step_stats() const = 0;
  virtual const HeadStats& total_stats() const = 0;
  // Per layer, of the last decode step.
  virtual const std::vector<HeadStats>& last_step_layer_stats() const = 0;
  // An independent copy of this session (KV caches, anchors, position, policy): prefill
  // once, then continue under several policies.
  virtual std::unique_ptr<Session> fork() const = 0;
  // Observer of every layer's attention (nullptr: none). Not copied by fork().
  void set_observer(AttentionObserver* observer) { observer_ = observer; }

 protected:
  AttentionObserver* observer_ = nullptr;
};

struct GenerateOptions {
  int max_new_tokens = 128;
  float temperature = 0.f;  // 0: greedy
  float top_p = 1.f;
  uint64_t seed = 0;
  ProgressFn prefill_progress;
  // Called with each new token and its text (UTF-8 complete); return false to stop.
  std::function<bool(int32_t id, const std::string& text)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  // generated, end-of-generation token excluded
  std::string text;
  double prefill_seconds = 0, decode_seconds = 0;
  HeadStats stats;  // over all decode steps
  bool stopped_at_eos = false;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options);
  ~Engine();
  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;
  const EngineOptions& options() const;
  std::unique_ptr<Session> new_session(const AttentionPolicy& policy) const;
  GenerateResult generate(const std::vector<int32_t>& prompt, const AttentionPolicy& policy,
                          const GenerateOptions& options) const;
  // generate() after the prefill: samples from `logits` (the prefill's last logits) and
  // decodes in `session` (e.g. a fork of one prefilled session per policy). The result's
  // prompt_tokens and prefill_seconds are left empty; stats are the session's totals.
  GenerateResult continue_generation(Session& session, std::vector<float> logits,
                                     const GenerateOptions& options) const;
  // Several prompts of different lengths. On the GPU one decode step advances every
  // sequence (batched weights reads and attention); on the CPU it is generate() per prompt.
  // Each result equals generate()'s for that prompt up to the arithmetic of batching;
  // options.on_token and options.prefill_progress are not called.
  std::vector<GenerateResult> generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                             const AttentionPolicy& policy, const GenerateOptions& options) const;
  // The device sessions run on: "cpu" or "cuda" ("auto" resolved).
  const std::string& device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sampling from logits: greedy when temperature == 0, else temperature + nucleus (top-p).
int32_t sample_token(const std::vector<float>& logits, float temperature, float top_p, uint64_t& rng_state);

}  // namespace sinkrouter
