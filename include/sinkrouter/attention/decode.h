// Decode attention over a paged KV cache: one new query per sequence.
//
//   q     [batch, num_q_heads, head_dim]  f32, bf16 or f16
//   kv    PagedKV (kv/paged_kv.h), bf16 or f16, head_dim 64 or 128
//   out   [batch, num_q_heads, head_dim]  f32, bf16 or f16 (f64 for the reference)
//
// num_q_heads = G * num_kv_heads (G = 1: MHA; num_kv_heads = 1: MQA); query head
// h*G + g reads KV head h. Accumulation is float32 (float64 in the reference).
//
// Two steps, as FlashInfer splits them:
//   plan_decode()  routes: for every (sequence, KV head) it decides which tokens are read
//                  (a list of spans, none longer than one routing block), the sink signal,
//                  the certificate delta, and the Split-K partition;
//   decode_cpu() / decode_reference()  read exactly those spans.
// Skipping is data: the fast path, the reference and the CUDA kernels read the same plan.
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/attention/policy.h"
#include "sinkrouter/core/tensor.h"
#include "sinkrouter/core/thread_pool.h"
#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

// What one decode call read and skipped, per (sequence, KV head).
struct HeadStats {
  int64_t bytes_summary = 0;        // key summaries and value-norm maxima read by the router
  int64_t bytes_anchor_window = 0;  // K and V of anchors and the recent window
  int64_t bytes_blocks = 0;         // K and V read from routable blocks (blasst: all K, some V)
  int64_t bytes_dense = 0;          // what dense attention would read: length * K+V bytes
  int32_t blocks_total = 0;         // routable blocks (outside the window)
  int32_t blocks_skipped = 0;       // blocks not read (blasst: whose V was not read)
  float delta = 0;                  // max over the G query heads of the bound on skipped mass
  float output_error_bound = 0;     // max over the G heads of the bound on ||o - o_routed||_2
  bool sink_route = false;          // every routable block skipped: output from anchors + window

  int64_t bytes_read() const { return bytes_summary + bytes_anchor_window + bytes_blocks; }
};

// Sums the byte counts and skip counts; takes the max of delta and the error bound.
HeadStats accumulate(const std::vector<HeadStats>& stats);

enum class SpanKind : uint8_t {
  Anchor = 0,    // a sink token, attended exactly
  Window = 1,    // recent tokens
  Block = 2,     // (part of) a routable block the router kept, or dense
  KeysOnly = 3,  // blasst: keys read; values read only if a score is not negligible
};

// The tokens [begin, end) of one (sequence, KV head); never crosses a routing block.
struct Span {
  int32_t begin;
  int32_t end;
  int32_t block;  // routing block index (begin / block_size)
  SpanKind kind;
};

struct RoutePlan {
  AttentionPolicy policy;
  int batch = 0, num_kv_heads = 0, group = 0, head_dim = 0;
  float scale = 0;
  std::vector<int32_t> span_indptr;  // [batch*kv_heads + 1] spans of (b, h) in position order
  std::vector<Span> spans;
  // Split-K: the spans of (b, h) are cut into split_indptr[bh+1] - split_indptr[bh] splits of
  // nearly equal token counts; split s of (b, h) starts at span split_begin[split_indptr[bh] + s].
  std::vector<int32_t> split_indptr;  // [batch*kv_heads + 1]
  std::vector<int32_t> split_begin;   // [total splits + 1 per (b, h)]: span index where it starts
  // Sink signal per query head over anchors and window (routed policies; 0 for dense).
  std::vector<float> sink_max;  // [batch, num_q_heads]  m_A
  std::vector<float> sink_sum;  // [batch, num_q_heads]  Z_A = sum exp(s - m_A)
  // Certificate per query head: bound on the skipped softmax mass, and sum_j b_j * vmax_j
  // over skipped blocks (the output bound adds delta * ||o_kept||).
  std::vector<float> delta;           // [batch, num_q_heads]
  std::vector<float> skipped_v_bound; // [batch, num_q_heads]
  std::vector<HeadStats> stats;       // [batch, num_kv_heads]; decode adds what only it knows

  int32_t num_splits(int bh) const { return split_indptr[bh + 1] - split_indptr[bh]; }
};

// Checks q / kv / out against each other and the supported set; throws a clear Error.
// out_dtypes lists what the caller's output may be.
void check_decode_shapes(const TensorView& q, const PagedKV& kv, const TensorView* out,
                         bool reference);

// Routes one decode step. scale: softmax scale (usually 1/sqrt(head_dim)). num_workers:
// how many threads the run step will use (it sizes the Split-K partition).
RoutePlan plan_decode(const TensorView& q, const PagedKV& kv, const AttentionPolicy& policy,
                      float scale, int num_workers = 1, ThreadPool* pool = nullptr);

// Fast CPU run of a plan: threads over (sequence, KV head, split), vectorised inner loops,
// float32 accumulation, a merge over the splits. Fills plan.stats fully (blasst V bytes,
// output bounds). out: f32, bf16 or f16.
void decode_cpu(const TensorView& q, const PagedKV& kv, RoutePlan& plan, const TensorView& out,
                ThreadPool& pool = ThreadPool::global());

// float64 reference run of a plan: the same spans (and, for blasst, the same V decisions
// made in float32), summed exactly in float64. out: f64 [batch, q_heads, head_dim].
void decode_reference(const TensorView& q, const PagedKV& kv, const RoutePlan& plan,
                      const TensorView& out);

// float64 exact attention over every token, and the exact softmax mass of the tokens the
// plan did not read, per query head (skipped_mass: [batch * num_q_heads], may be null).
void decode_exact(const TensorView& q, const PagedKV& kv, float scale, const TensorView& out,
                  const RoutePlan* plan = nullptr, std::vector<double>* skipped_mass = nullptr);

// plan_decode + decode_cpu.
std::vector<HeadStats> decode_attention(const TensorView& q, const PagedKV& kv,
                                        const AttentionPolicy& policy, float scale,
                                        const TensorView& out, ThreadPool& pool = ThreadPool::global());

}  // namespace sinkrouter
