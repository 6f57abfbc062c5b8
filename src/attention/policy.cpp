#include "sinkrouter/attention/policy.h"

#include <fmt/format.h>

#include "sinkrouter/core/error.h"

namespace sinkrouter {

const char* policy_name(PolicyKind k) {
  switch (k) {
    case PolicyKind::Dense: return "dense";
    case PolicyKind::SinkRouter: return "sinkrouter";
    case PolicyKind::Streaming: return "streaming";
    case PolicyKind::Quest: return "quest";
    case PolicyKind::Blasst: return "blasst";
  }
  return "?";
}

PolicyKind parse_policy_kind(const std::string& name) {
  for (PolicyKind k : {PolicyKind::Dense, PolicyKind::SinkRouter, PolicyKind::Streaming,
                       PolicyKind::Quest, PolicyKind::Blasst})
    if (name == policy_name(k)) return k;
  fail("unknown attention policy '{}' (expected dense, sinkrouter, streaming, quest or blasst)",
       name);
}

RouterMode parse_router_mode(const std::string& name) {
  if (name == "certified") return RouterMode::Certified;
  if (name == "fast") return RouterMode::Fast;
  fail("unknown router mode '{}' (expected certified or fast)", name);
}

const char* bound_name(BoundKind b) {
  switch (b) {
    case BoundKind::Box: return "box";
    case BoundKind::Basis: return "basis";
    case BoundKind::Min: return "min";
  }
  return "?";
}

BoundKind parse_bound_kind(const std::string& name) {
  for (BoundKind b : {BoundKind::Box, BoundKind::Basis, BoundKind::Min})
    if (name == bound_name(b)) return b;
  fail("unknown bound '{}' (expected box, basis or min)", name);
}

const char* estimate_name(EstimateKind e) {
  switch (e) {
    case EstimateKind::Bound: return "bound";
    case EstimateKind::Gauss: return "gauss";
  }
  return "?";
}

EstimateKind parse_estimate_kind(const std::string& name) {
  for (EstimateKind e : {EstimateKind::Bound, EstimateKind::Gauss})
    if (name == estimate_name(e)) return e;
  fail("unknown estimate '{}' (expected bound or gauss)", name);
}

void AttentionPolicy::validate() const {
  SR_CHECK(epsilon >= 0 && epsilon <= 1, "policy: epsilon {} out of range (expected 0 to 1)", epsilon);
  SR_CHECK(tau >= 0 && tau <= 1, "policy: tau {} out of range (expected 0 to 1)", tau);
  SR_CHECK(window >= 1, "policy: window {} must be at least 1 token", window);
  SR_CHECK(sink_tokens >= 0, "policy: sink_tokens {} must not be negative", sink_tokens);
  SR_CHECK(quest_budget >= 1, "policy: quest_budget {} must be at least 1 token", quest_budget);
  SR_CHECK(blasst_threshold >= 0 && blasst_threshold <= 1,
           "policy: blasst_threshold {} out of range (expected 0 to 1)", blasst_threshold);
  SR_CHECK(spread >= 0 && spread <= (estimate == EstimateKind::Bound ? 1.0 : 16.0),
           "policy: spread {} out of range (expected 0 to {} for estimate '{}')", spread,
           estimate == EstimateKind::Bound ? 1 : 16, estimate_name(estimate));
}

AttentionPolicy default_sinkrouter_policy() {
  AttentionPolicy p;
  p.kind = PolicyKind::SinkRouter;
  p.mode = RouterMode::Fast;
  p.estimate = EstimateKind::Gauss;
  p.spread = 1.0;
  p.tau = 0.001;
  p.window = 64;
  p.bound = BoundKind::Box;
  return p;
}

std::string AttentionPolicy::describe() const {
  switch (kind) {
    case PolicyKind::Dense: return "dense";
    case PolicyKind::SinkRouter: {
      // Options at their old defaults are left out, so that earlier result logs still match.
      std::string extra;
      if (bound != BoundKind::Box) extra += fmt::format(", bound={}", bound_name(bound));
      if (mode == RouterMode::Fast && estimate != EstimateKind::Bound)
        extra += fmt::format(", estimate={}", estimate_name(estimate));
      if (fast_estimates())
        extra += fmt::format(", spread={:g}", spread);
      return mode == RouterMode::Certified
                 ? fmt::format("sinkrouter(certified, eps={:g}, window={}{})", epsilon, window, extra)
                 : fmt::format("sinkrouter(fast, tau={:g}, window={}{})", tau, window, extra);
    }
    case PolicyKind::Streaming:
      return fmt::format("streaming(sinks={}, window={})", sink_tokens, window);
    case PolicyKind::Quest: return fmt::format("quest(budget={}, window={})", quest_budget, window);
    case PolicyKind::Blasst:
      return fmt::format("blasst(threshold={:g}, window={})", blasst_threshold, window);
  }
  return "?";
}

}  // namespace sinkrouter
