#include "policy_options.h"

namespace sinkrouter::apps {

void PolicyOptions::add_to(CLI::App* cmd) {
  cmd->add_option("--policy", name, "attention policy: dense, sinkrouter, streaming, quest, blasst")
      ->check(CLI::IsMember({"dense", "sinkrouter", "streaming", "quest", "blasst"}))
      ->capture_default_str();
  cmd->add_option("--mode", mode, "sinkrouter mode: certified (epsilon) or fast (tau)")
      ->check(CLI::IsMember({"certified", "fast"}))
      ->capture_default_str();
  cmd->add_option("--epsilon", policy.epsilon, "certified: bound on the skipped softmax mass per head")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--tau", policy.tau, "fast: per-block mass threshold against the sink signal")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--window", policy.window, "recent tokens always read")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  cmd->add_option("--sink-tokens", policy.sink_tokens, "streaming: first tokens kept")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--quest-budget", policy.quest_budget, "quest: tokens read per head, window included")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  cmd->add_option("--bound", bound, "sinkrouter: block score bound: box, basis (principal key basis) or min")
      ->check(CLI::IsMember({"box", "basis", "min"}))
      ->capture_default_str();
  cmd->add_option("--estimate", estimate,
                  "fast: block score estimate from its box: bound (centre + spread * L1 half-width; spread 1 = "
                  "the bound) or gauss (centre + spread * L2 norm of q * half-widths)")
      ->check(CLI::IsMember({"bound", "gauss"}))
      ->capture_default_str();
  cmd->add_option("--spread", policy.spread, "fast: the estimate's spread factor (see --estimate)")
      ->check(CLI::Range(0.0, 16.0))
      ->capture_default_str();
  cmd->add_option("--blasst-threshold", policy.blasst_threshold, "blasst: skip V when exp(s - m_A) < this")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
}

AttentionPolicy PolicyOptions::resolve() const {
  AttentionPolicy p = policy;
  p.kind = parse_policy_kind(name);
  p.mode = parse_router_mode(mode);
  p.bound = parse_bound_kind(bound);
  p.estimate = parse_estimate_kind(estimate);
  p.validate();
  return p;
}

}  // namespace sinkrouter::apps
