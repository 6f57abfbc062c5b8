// Attention policies: which cached tokens a decode step reads. All share one interface
// (plan, then run) so that they are compared on the same cache, model and tasks.
#pragma once

#include <string>

namespace sinkrouter {

enum class PolicyKind {
  Dense,       // every token, exactly
  SinkRouter,  // anchors + window + blocks whose bound is not negligible against the sink
  Streaming,   // first sink_tokens + recent window only (StreamingLLM)
  Quest,       // top blocks by min/max score bound under a token budget (Quest)
  Blasst,      // all keys read; a block's values skipped when its scores are negligible
};

enum class RouterMode {
  Certified,  // skip only what the bound proves: total skipped mass <= epsilon per head
  Fast,       // skip block j when R * exp(u_j - m_A) <= tau * Z_A (per-block threshold)
};

// Which key summary bounds a routable block's scores (sinkrouter; quest always ranks by
// the box, as Quest does).
enum class BoundKind {
  Box,    // per-dimension min/max of the block's keys
  Basis,  // the same box in a per-KV-head principal basis of the keys (kv/key_basis.h)
  Min,    // the smaller of the two (reads both summaries)
};

// The fast mode's estimate of a block's largest score, from the same summary box (centre
// c = q . (lo + hi) / 2, half-widths w = (hi - lo) / 2, in the bound's basis).
enum class EstimateKind {
  Bound,  // c + spread * sum_d |q_d| w_d   (spread 1: the bound itself)
  Gauss,  // c + spread * sqrt(sum_d (q_d w_d)^2): the size of the maximum of R roughly
          // Gaussian scores, not their worst case (much closer to the true block maximum)
};

struct AttentionPolicy {
  PolicyKind kind = PolicyKind::Dense;
  RouterMode mode = RouterMode::Certified;
  double epsilon = 1e-3;           // certified: bound on the skipped softmax mass per query head
  double tau = 1e-3;               // fast: per-block mass threshold against the sink signal
  int window = 64;                 // recent tokens always read (the open block always is)
  int sink_tokens = 4;             // streaming: first tokens kept
  int quest_budget = 1024;         // quest: tokens read, window included
  double blasst_threshold = 1e-3;  // blasst: skip V when exp(max score - m_A) < this
  BoundKind bound = BoundKind::Box;  // sinkrouter: the summary that bounds block scores
  // fast: a block's score is estimated from its box (EstimateKind); the certificate delta
  // always uses the bound.
  EstimateKind estimate = EstimateKind::Bound;
  double spread = 1.0;

  // sinkrouter fast mode deciding on an estimate of each block's largest score (EstimateKind,
  // spread), not on its bound; the certificate still uses the bound.
  bool fast_estimates() const {
    return kind == PolicyKind::SinkRouter && mode == RouterMode::Fast &&
           (spread != 1.0 || estimate != EstimateKind::Bound);
  }
  void validate() const;           // throws Error on out-of-range parameters
  std::string describe() const;    // "sinkrouter(certified, eps=0.001, window=64)"
};

// The product's routed policy, chosen from the measurements of docs/RESULTS.md (SmolLM2 at
// 8K): fast mode, Gauss estimate with spread 1, tau 0.001, window 64, box bound: the fewest
// KV bytes among the settings measured that keep task accuracy equal to dense (passkey,
// NIAH) and >= 99 % top-1 agreement on the books (45-76 % of the bytes read; tau 0.03 reads
// 42 % but loses NIAH retrievals). The command line's defaults for --policy sinkrouter.
AttentionPolicy default_sinkrouter_policy();

const char* policy_name(PolicyKind k);
// "dense", "sinkrouter", "streaming", "quest", "blasst"; throws Error otherwise.
PolicyKind parse_policy_kind(const std::string& name);
RouterMode parse_router_mode(const std::string& name);  // "certified" or "fast"
const char* bound_name(BoundKind b);                    // "box", "basis", "min"
BoundKind parse_bound_kind(const std::string& name);
const char* estimate_name(EstimateKind e);              // "bound", "gauss"
EstimateKind parse_estimate_kind(const std::string& name);

}  // namespace sinkrouter
