// `sinkrouter generate`: text generation from a prompt under a chosen attention policy.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "engine_options.h"
#include "policy_options.h"
#include "stats_json.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::apps {
namespace {

struct GenerateCli {
  EngineCliOptions engine;
  PolicyOptions policy;
  std::string prompt, prompt_file, system;
  int n = 128;
  bool chat = false, json = false, quiet = false;
  float temp = 0.f, top_p = 1.f;
  uint64_t seed = 0;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SR_CHECK(bool(in), "cannot read prompt file '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run(const GenerateCli& o) {
  SR_CHECK(o.prompt.empty() != o.prompt_file.empty(), "give exactly one of -p TEXT or -f FILE");
  const std::string text = o.prompt_file.empty() ? o.prompt : read_file(o.prompt_file);
  const AttentionPolicy policy = o.policy.resolve();
  Engine engine(o.engine.resolve());
  const Tokenizer& tok = engine.tokenizer();
  std::string prompt = text;
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", text});
    prompt = tok.apply_chat_template(messages, true);
  }
  const std::vector<int32_t> ids = tok.encode(prompt, tok.add_bos(), /*parse_special=*/true);
  GenerateOptions g;
  g.max_new_tokens = o.n;
  g.temperature = o.temp;
  g.top_p = o.top_p;
  g.seed = o.seed;
  if (!o.quiet) g.prefill_progress = stderr_progress("prefill");
  if (!o.json)
    g.on_token = [](int32_t, const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
  const GenerateResult r = engine.generate(ids, policy, g);
  if (o.json) {
    nlohmann::json j = generate_result_json(r, policy);
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("\n");
    if (!o.quiet) fmt::print(stderr, "{}\n", generate_summary_line(r, policy));
  }
  return 0;
}

}  // namespace

Runner register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateCli>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  o->engine.add_to(cmd);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text");
  cmd->add_option("-f,--file", o->prompt_file, "read the prompt from a file")->check(CLI::ExistingFile);
  cmd->add_option("-n,--n-predict", o->n, "tokens to generate")->check(CLI::Range(0, 1 << 24))->capture_default_str();
  cmd->add_flag("--chat", o->chat, "wrap the prompt in the model's chat template");
  cmd->add_option("--system", o->system, "system message (with --chat)");
  o->policy.add_to(cmd);
  cmd->add_option("--temp", o->temp, "sampling temperature (0: greedy)")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object: text, token counts, timings, attention statistics");
  cmd->add_flag("-q,--quiet", o->quiet, "no progress or summary on stderr");
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
