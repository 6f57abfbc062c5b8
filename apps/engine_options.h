// Command-line options that build an Engine (model, device, threads, context, KV layout),
// shared by generate, compare, eval and analyze.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "sinkrouter/engine/engine.h"

namespace sinkrouter::apps {

struct EngineCliOptions {
  EngineOptions engine;
  std::string kv_dtype = "bf16";

  // default_matmul: "q8" for generation speed; "f32" where outputs are compared across
  // policies (q8's int8 activations turn 1e-7 perturbations into ~0.5 logit jumps).
  void add_to(CLI::App* cmd, bool model_required = true, const std::string& default_matmul = "q8");
  EngineOptions resolve() const;
};

// Prints "\rprefill  1536/6000 tokens  25%  2.1 s" on stderr (a progress indicator).
ProgressFn stderr_progress(const std::string& label);

}  // namespace sinkrouter::apps
