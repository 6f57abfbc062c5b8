// The forward pass of a batch of sequences on a CUDA device: per layer one DeviceKVCache
// holding every sequence, chunked dense prefill of one sequence at a time, and decode
// steps of the whole batch (one token per sequence, each sequence at its own length)
// captured once as a CUDA graph and replayed.
//
// Prefill chunk (c tokens of sequence s at positions p0 ..):
//   embed -> per layer: rms_norm -> QKV GEMM (cuBLAS) -> rope_split -> cache append ->
//   flash attention -> O GEMM (+= x) -> rms_norm -> gate|up GEMM -> swiglu -> down GEMM (+= x)
//   At the end of a prefill call, sinks are detected per layer and KV head (the attention
//   the keys receive from the last 32 queries) and registered as anchors, as on the CPU.
// Decode step (B tokens, read from device memory):
//   embed -> per layer: GEMV(RMSNorm prologue, RoPE + split epilogue) -> append_step ->
//   CudaDecoder::run (the policy) -> GEMV(O, += x) -> GEMV(RMSNorm, gate|up) ->
//   GEMV(SwiGLU prologue, down, += x) -> GEMV(RMSNorm, output) -> logits [B, n_vocab]
//   Positions come from the caches' device lengths, so one captured graph serves every
//   step; it is captured again only when the policy (the decoders' plan) changes.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "engine/cuda_model.h"
#include "model/cuda_prefill_attention.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sinkrouter {

class CudaForward {
 public:
  // One sequence per capacity (tokens it may ever hold).
  CudaForward(const CudaModel& model, const std::vector<int64_t>& capacities, const AttentionPolicy& policy);
  ~CudaForward();
  CudaForward(const CudaForward&) = delete;
  CudaForward& operator=(const CudaForward&) = delete;

  int batch() const { return int(capacities_.size()); }
  int64_t length(int s) const { return lengths_[size_t(s)]; }
  int64_t capacity(int s) const { return capacities_[size_t(s)]; }

  // Runs n tokens through sequence s (dense attention, chunks of the model's
  // cuda_prefill_chunk), then detects sinks. logits: when not null, the last token's logits.
  void prefill(int s, const int32_t* tokens, int64_t n, const ProgressFn& progress, std::vector<float>* logits);
  // One token for every sequence: tokens [batch] -> logits [batch, n_vocab] (host).
  void decode(const int32_t* tokens, std::vector<float>& logits);
  // The same step for greedy decoding: tokens [batch] -> next [batch], each sequence's
  // argmax taken on the device (cuda::argmax_rows), so only the ids come back, not the
  // logits (0.2 MB a sequence for SmolLM2's vocabulary, and the host's pass over them).
  void decode_greedy(const int32_t* tokens, int32_t* next);

  const AttentionPolicy& policy() const { return policy_; }
  void set_policy(const AttentionPolicy& policy);  // the next decode step re-plans and re-captures
  // Graph replay (default) or plain launches of the same kernels (for tests and debugging).
  void set_use_graph(bool on) { use_graph_ = on; }
  // Download the decoders' statistics after every step (default); off for timing.
  void set_collect_stats(bool on) { collect_stats_ = on; }
  // Of the last decode step: [sequence][layer], summed over the layer's KV heads.
  const std::vector<std::vector<HeadStats>>& last_layer_stats() const { return layer_stats_; }
  // Keep every layer's queries of the decode steps (a device copy per layer, in the step's
  // graph), for time_attention. Changing it re-captures the graph.
  void set_capture_queries(bool on);
  // The attention kernels alone on this forward's KV caches, as the last decode step left
  // them (its token appended), with that step's captured queries: for every layer a
  // CudaDecoder planned for `policy` runs, all layers in one CUDA graph replayed `reps`
  // times. Returns the time per layer and the statistics summed over layers and sequences.
  // The kernel benchmark on KV written by the real model (bench_engine). Needs a decode
  // step made with set_capture_queries(true).
  struct AttentionTiming {
    double us_per_layer = 0;
    HeadStats stats;
  };
  AttentionTiming time_attention(const AttentionPolicy& policy, int reps);
  // The prefill attention kernel (default: SINKROUTER_PREFILL_ATTENTION, else Flash).
  void set_prefill_attention(PrefillAttentionKernel kernel) { prefill_attention_ = kernel; }
  cudaStream_t stream() const { return stream_; }

  // Profiling only (bench_engine --ablate): the decode step's launches of the parts set in
  // `skipped` are left out of the step (its output is then meaningless), so that the time
  // each part costs inside the whole step can be measured by difference. Re-captures.
  enum StepPart : unsigned { kQkv = 1, kAppend = 2, kAttention = 4, kOProj = 8, kGateUp = 16, kDown = 32, kLmHead = 64 };
  void set_step_ablation(unsigned skipped);
  // Profiling only (bench_engine --trace-chain): every GEMV chain of the step stamps its
  // stages' phases (gemv_chain's trace). Re-captures. chain_trace(): the last step's stamps,
  // [launch (n_layers + 1)][cuda::gemv_chain_trace_words()] clock64 values (0: not stamped).
  void set_chain_trace(bool on);
  std::vector<long long> chain_trace() const;

 private:
  struct Buffers;
  void prefill_chunk(int s, const int32_t* tokens, int64_t c, bool detect, std::vector<float>* logits);
  // Sink detection in a prefill's last chunk (see cuda_forward.cu): per layer, the received
  // attention to a pinned slot; the host's choice for a layer; the choices registered.
  void enqueue_received(int layer, int64_t n, const PrefillAttentionArgs& a);
  std::vector<std::vector<int32_t>> choose_sinks(int layer, int s, int64_t n);  // [head] new anchors
  void register_sinks(int s, const std::vector<std::vector<std::vector<int32_t>>>& chosen);  // [layer][head]
  void enqueue_decode_step();
  void make_decoders();
  void drop_graph();  // the next decode step captures its graph again
  void download_logits(int rows, std::vector<float>& logits);
  void run_step(const int32_t* tokens);  // checks, uploads the tokens, enqueues the step
  void after_step();                     // lengths and statistics, once the step has finished

  const CudaModel& m_;
  AttentionPolicy policy_;
  std::vector<int64_t> capacities_, lengths_;
  std::vector<DeviceKVCache> caches_;                   // one per layer, every sequence
  std::vector<std::unique_ptr<CudaDecoder>> decoders_;  // one per layer (made at the first decode)
  // Anchors registered by sink detection, per [layer][sequence * kv_heads + head] (the
  // default first anchors are added by the cache itself).
  std::vector<std::vector<std::vector<int32_t>>> detected_;
  std::unique_ptr<Buffers> buf_;
  int64_t chunk_ = 0;  // prefill rows per chunk
  cudaStream_t stream_ = nullptr;
  cudaGraphExec_t graph_ = nullptr;
  bool use_graph_ = true, collect_stats_ = true;
  PrefillAttentionKernel prefill_attention_ = PrefillAttentionKernel::Flash;
  bool capture_queries_ = false, queries_captured_ = false;
  std::vector<std::vector<HeadStats>> layer_stats_;
  unsigned ablated_ = 0;  // StepPart bits left out of the step (profiling)
  long long* chain_trace_ = nullptr;  // device, or null (profiling)
};

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
