// `sinkrouter analyze`: the sink mechanism on a real model. Prefills a text (dense),
// decodes K teacher-forced steps while a SinkAnalyzer watches every layer, and writes
// analysis.json, heads.csv, steps.csv and heatmaps (tools/plot_analysis.py) under --out.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "engine_options.h"
#include "policy_options.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/sink_analysis.h"

namespace sinkrouter::apps {
namespace {

struct AnalyzeCli {
  EngineCliOptions engine;
  PolicyOptions policy;
  std::string text_file;
  int64_t context = 4096;
  int steps = 32;
  int64_t skip_chars = 0;
  std::string out;
  eval::SinkAnalysisOptions analysis;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SR_CHECK(bool(in), "analyze: cannot read text '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void draw_heatmaps(const std::string& out) {
  const char* env = std::getenv("SINKROUTER_ANALYSIS_PLOT_SCRIPT");
  const std::string script = env ? env : "tools/plot_analysis.py";
  if (!std::filesystem::exists(script)) {
    std::fprintf(stderr, "note: %s not found (run from the repository root): no heatmaps\n", script.c_str());
    return;
  }
  const std::string cmd = fmt::format("python3 '{}' '{}/analysis.json' '{}'", script, out, out);
  if (std::system(cmd.c_str()) != 0)
    std::fprintf(stderr, "note: heatmaps skipped (%s failed; `pip install matplotlib`)\n", script.c_str());
}

int run(AnalyzeCli& o) {
  SR_CHECK(o.steps >= 1 && o.steps < o.context, "analyze: --steps {} must be in [1, context {})", o.steps, o.context);
  EngineOptions eo = o.engine.resolve();
  if (eo.device == "auto") eo.device = "cpu";  // observers run on the CPU engine only
  if (eo.max_context == 0) eo.max_context = o.context;
  SR_CHECK(eo.max_context >= o.context, "analyze: --max-context {} is below --context {}", eo.max_context, o.context);
  const Engine engine(eo);
  const Tokenizer& tok = engine.tokenizer();
  const std::string text = read_text(o.text_file);
  SR_CHECK(o.skip_chars >= 0 && o.skip_chars < int64_t(text.size()),
           "analyze: --skip-chars {} is outside the text ({} characters)", o.skip_chars, text.size());
  std::vector<int32_t> tokens;
  if (tok.add_bos()) tokens.push_back(tok.bos());
  const std::vector<int32_t> body = tok.encode(text.substr(size_t(o.skip_chars), size_t(o.context) * 12), false);
  tokens.insert(tokens.end(), body.begin(), body.end());
  SR_CHECK(int64_t(tokens.size()) >= o.context, "analyze: {} has {} tokens after character {}, fewer than --context {}",
           o.text_file, tokens.size(), o.skip_chars, o.context);
  tokens.resize(size_t(o.context));
  const int64_t first = o.context - o.steps;

  o.analysis.window = o.policy.policy.window;
  o.analysis.first_anchors = eo.first_anchors;
  eval::SinkAnalyzer analyzer(engine.config(), o.analysis);
  auto session = engine.new_session(o.policy.resolve());
  session->set_observer(&analyzer);
  session->prefill(std::vector<int32_t>(tokens.begin(), tokens.begin() + long(first)), stderr_progress("prefill"));
  for (int64_t t = first; t < o.context; ++t) {
    session->decode(tokens[size_t(t)]);
    std::fprintf(stderr, "\rdecode %lld/%d", (long long)(t - first + 1), o.steps);
  }
  std::fprintf(stderr, "\n");
  analyzer.write(o.out);
  draw_heatmaps(o.out);

  const nlohmann::json r = analyzer.report();
  const auto& s = r["summary"];
  fmt::print("{} steps over {} heads ({} layers x {}), context {}\n", s["steps"].get<int>(), s["heads"].get<int>(),
             engine.config().n_layers, engine.config().n_head, o.context);
  fmt::print("attention share: position 0 {:.3f}, all anchors {:.3f} (detected {:.3f}), window {:.3f}, rest {:.3f}; "
             "first {} tokens {:.3f}\n",
             s["share_pos0"].get<double>(), s["share_anchors"].get<double>(), s["share_detected"].get<double>(),
             s["share_window"].get<double>(), s["share_rest"].get<double>(), o.analysis.fixed_first,
             s["share_fixed_first"].get<double>());
  fmt::print("sink-dominated head-steps (anchors >= {:g}): {:.3f}\n", o.analysis.dormant_share,
             s["sink_dominated_head_steps"].get<double>());
  fmt::print("prefill: {} KV heads, {} with sinks, {} with position 0 as the only sink, {} sinks beyond the first {}\n",
             s["kv_heads"].get<int>(), s["kv_heads_with_sinks"].get<int>(), s["kv_heads_only_pos0"].get<int>(),
             s["sinks_beyond_first_anchors"].get<int>(), o.analysis.first_anchors);
  fmt::print("{:<6} {:>10} {:>10} {:>10} {:>14} {:>14}\n", "bound", "gap p50", "gap p90", "skip@1e-3", "certified@1e-3",
             "certified@1e-2");
  for (const char* k : {"true", "box", "basis", "min", "ball"}) {
    const bool t = std::string(k) == "true";
    fmt::print("{:<6} {:>10} {:>10} {:>10.3f} {:>14.3f} {:>14.3f}\n", k,
               t ? std::string("-") : fmt::format("{:.2f}", s["gap"][k]["p50"].get<double>()),
               t ? std::string("-") : fmt::format("{:.2f}", s["gap"][k]["p90"].get<double>()),
               s["skippable"][k]["0.001"].get<double>(), s["certified"][k]["0.001"].get<double>(),
               s["certified"][k]["0.01"].get<double>());
  }
  std::fprintf(stderr, "wrote %s/analysis.json, heads.csv, steps.csv\n", o.out.c_str());
  return 0;
}

}  // namespace

Runner register_analyze(CLI::App& app) {
  auto o = std::make_shared<AnalyzeCli>();
  CLI::App* cmd = app.add_subcommand("analyze", "measure the sink mechanism per layer and head on a text");
  o->engine.add_to(cmd, /*model_required=*/true, /*default_matmul=*/"f32");
  o->policy.add_to(cmd);
  cmd->add_option("-f,--file", o->text_file, "text file to prefill")->required()->check(CLI::ExistingFile);
  cmd->add_option("--context", o->context, "tokens in all (prefill + decode steps)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 30))
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "teacher-forced decode steps observed at the end of the context")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--skip-chars", o->skip_chars, "start this many characters into the text")->capture_default_str();
  cmd->add_option("--fixed-first", o->analysis.fixed_first, "the fixed first-k anchor set compared with detection")
      ->check(CLI::Range(0, 1 << 16))
      ->capture_default_str();
  cmd->add_option("--sink-share", o->analysis.sink_share, "prefill: a key with this share of attention is a sink")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--dormant-share", o->analysis.dormant_share, "a head-step is sink-dominated at this anchor share")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--out", o->out, "output directory")->required();
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
