// The sink mechanism, measured on a real model (DESIGN.md section 6, "mechanism
// evidence"): an AttentionObserver that recomputes every layer's exact decode attention
// from the query and the cache, and reports per layer and query head
//   - where the attention goes: position 0, the other first tokens, the sinks detected at
//     prefill, the recent window, the rest; and how much the fixed first 8 tokens catch;
//   - the value norm of the sinks against the others;
//   - how stable the sink signal is from one step to the next (anchor share, m_A);
//   - how tight each block-score bound is (bound minus the block's true maximum score) and
//     how much a router could skip with it: per block, at a mass threshold tau; and per
//     head, the certified skip at epsilon (the skipped blocks' bound terms summed), with
//     the oracle (the true block masses) beside it;
//   - how wrong the sink route (anchors + window only) would be: ||o - o_AW|| / ||o||;
//   - for block-score estimators, the bytes-versus-error curves of threshold and top-k
//     routing on this exact attention (routing_curves.h);
// and, at prefill, per KV head, which tokens receive outsized attention (is position 0 the
// only sink?).
//
// Bound kinds: "box" (per-dimension min/max of the keys, as the cache keeps it), "basis"
// (the same box in a principal basis fitted on the prompt's keys, kv/key_basis.h), "min"
// (the smaller of the two), "ball" (centroid + radius: q.c + ||q|| max ||k - c||).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sinkrouter/engine/engine.h"
#include "sinkrouter/eval/routing_curves.h"

namespace sinkrouter::eval {

struct SinkAnalysisOptions {
  int window = 64;             // recent tokens, aligned down to the block grid as the router does
  int first_anchors = 4;       // positions below this are the "first" anchors (engine option)
  int fixed_first = 8;         // the fixed first-k anchor set compared with detection
  double sink_share = 0.02;    // prefill: a key receiving at least this share is a sink
  double dormant_share = 0.9;  // a head-step is sink-dominated when anchors take this share
};

constexpr int kBoundKinds = 4;  // box, basis, min, ball
const char* analysis_bound_name(int kind);
constexpr std::array<double, 3> kSkipTaus = {1e-4, 1e-3, 1e-2};  // per-block mass thresholds
constexpr std::array<double, 2> kSkipEpsilons = {1e-3, 1e-2};    // certified skipped-mass budgets

// One (layer, query head, decode step).
struct HeadStep {
  float share_pos0 = 0, share_first = 0, share_detected = 0, share_window = 0, share_rest = 0;
  float share_fixed_first = 0;  // the first `fixed_first` positions, anchors or not
  float m_a = 0;                // max scaled score over anchors and window
  float top_share = 0;          // the largest single share outside the window
  int32_t top_pos = -1;
  float out_norm = 0;           // ||o||
  float sink_route_error = 0;   // ||o - o_AW||, o_AW: attention over anchors and window only
  int32_t blocks = 0;           // routable blocks
  // Blocks whose mass term (against the sink signal) is <= tau: [kind+1][tau], kind 0 = true.
  std::array<std::array<int32_t, kSkipTaus.size()>, kBoundKinds + 1> skippable{};
  // Certified skip: blocks skipped with a total of at most epsilon: [kind+1][eps].
  std::array<std::array<int32_t, kSkipEpsilons.size()>, kBoundKinds + 1> certified{};
};

// One (layer, KV head) at the end of the prefill.
struct PrefillSinks {
  std::vector<std::pair<int32_t, float>> sinks;  // positions receiving >= sink_share, by share
  float v_norm_pos0 = 0, v_norm_sinks = 0, v_norm_others = 0;  // mean ||v||: token 0, other sinks, the rest
  float k_norm_pos0 = 0, k_norm_others = 0;
  std::vector<float> basis_variance;  // share of the key variance in each principal direction
};

// Per (layer, KV head): the analyzer's own summaries of the finished routing blocks, in
// float, as a router would keep them (the rotated box rounded outward to the KV dtype).
struct AnalysisBlocks {
  std::vector<float> basis;          // [D, D] principal basis of the prompt's keys
  std::vector<float> rot_lo, rot_hi; // [blocks, D] box of the rotated keys
  std::vector<float> centre;         // [blocks, D] mean key
  std::vector<float> radius;         // [blocks] max ||k - centre||, rounded up
  int64_t done = 0;                  // blocks summarised so far
};

class SinkAnalyzer final : public AttentionObserver {
 public:
  SinkAnalyzer(const ModelConfig& config, SinkAnalysisOptions options);
  void on_prefill_end(int layer, const PagedKV& kv, const std::vector<float>& received) override;
  void on_decode(int layer, const TensorView& q, const PagedKV& kv, const RoutePlan& plan) override;

  int steps() const { return steps_; }
  const std::vector<HeadStep>& head_steps(int layer, int q_head) const;
  const PrefillSinks& prefill_sinks(int layer, int kv_head) const;
  // Gaps (bound - true block max, in scaled-score units) of one head, all steps and blocks.
  const std::vector<float>& gaps(int layer, int q_head, int kind) const;

  // {"config", "layers": [{"heads": [per-head summary]}], "kv_heads": [...], "summary",
  //  "curves" (routing_curves.h)}
  nlohmann::json report() const;
  const RoutingCurves& curves() const { return curves_; }
  // dir/analysis.json (report), dir/heads.csv (one row per layer and head), dir/steps.csv
  // (one row per layer, head and step: the series behind the stability numbers).
  void write(const std::string& dir) const;

 private:
  void ensure_blocks(int layer, int h, const PagedKV& kv, int64_t routable_blocks);

  ModelConfig cfg_;
  SinkAnalysisOptions o_;
  int steps_ = 0;
  std::vector<std::vector<HeadStep>> steps_by_head_;    // [layer * n_head + qh]
  std::vector<std::array<std::vector<float>, kBoundKinds>> gaps_;  // [layer * n_head + qh][kind]
  std::vector<PrefillSinks> prefill_;                    // [layer * n_kv_head + h]
  std::vector<AnalysisBlocks> blocks_;                   // [layer * n_kv_head + h]
  std::vector<uint8_t> prefill_seen_;                    // [layer]
  RoutingCurves curves_;
};

}  // namespace sinkrouter::eval
