// Command-line options that choose an attention policy, shared by generate, compare,
// eval and analyze.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "sinkrouter/attention/policy.h"

namespace sinkrouter::apps {

// Defaults: the sinkrouter options are default_sinkrouter_policy()'s (policy.h; chosen
// from docs/RESULTS.md), so that `--policy sinkrouter` alone runs the product's policy.
struct PolicyOptions {
  std::string name = "dense";
  std::string mode = "fast";
  std::string bound = "box";
  std::string estimate = "gauss";
  AttentionPolicy policy = default_sinkrouter_policy();  // numeric parameters (kind/mode/... from the names)

  // Adds --policy, --mode, --epsilon, --tau, --window, --sink-tokens, --quest-budget,
  // --bound, --estimate, --spread, --blasst-threshold to `cmd`.
  void add_to(CLI::App* cmd);
  // Resolves names into `policy` (throws Error on bad values).
  AttentionPolicy resolve() const;
};

}  // namespace sinkrouter::apps
