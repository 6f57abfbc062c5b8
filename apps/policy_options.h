// Command-line options that choose an attention policy, shared by generate, compare,
// eval and analyze.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "sinkrouter/attention/policy.h"

namespace sinkrouter::apps {

struct PolicyOptions {
  std::string name = "dense";
  std::string mode = "certified";
  std::string bound = "box";
  std::string estimate = "bound";
  AttentionPolicy policy;  // numeric parameters, defaults as in policy.h

  // Adds --policy, --mode, --epsilon, --tau, --window, --sink-tokens, --quest-budget,
  // --bound, --estimate, --spread, --blasst-threshold to `cmd`.
  void add_to(CLI::App* cmd);
  // Resolves names into `policy` (throws Error on bad values).
  AttentionPolicy resolve() const;
};

// The default routed policy of the product (chosen from measurements: docs/RESULTS.md).
AttentionPolicy default_sinkrouter_policy();

}  // namespace sinkrouter::apps
