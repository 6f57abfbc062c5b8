// `sinkrouter compare`: the main job. A long real document and a question about it are
// answered under dense attention and under a routed policy (sinkrouter by default). The
// prompt is prefilled once; then
//   - dense answers greedily, and the policy is teacher-forced on dense's answer, so that
//     agreement (top-1 match, KL(dense || policy)) is measured token by token;
//   - the policy also answers on its own (free running), timed.
// Prints both answers, decode tokens/s, KV bytes read per step, and the agreement.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
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

struct CompareCli {
  EngineCliOptions engine;
  PolicyOptions policy;
  std::string doc_file, question;
  int64_t doc_tokens = 6000;
  int n = 48;
  bool json = false;
};

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// KL(p || q) of the softmax distributions of two logit vectors.
double kl_divergence(const std::vector<float>& p_logits, const std::vector<float>& q_logits) {
  auto log_softmax = [](const std::vector<float>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    double s = 0;
    for (float v : x) s += std::exp(double(v) - m);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - m - std::log(s);
    return out;
  };
  const std::vector<double> lp = log_softmax(p_logits), lq = log_softmax(q_logits);
  double kl = 0;
  for (size_t i = 0; i < lp.size(); ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return std::max(0.0, kl);
}

std::string read_document(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SR_CHECK(bool(in), "cannot read document '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Answer {
  std::vector<int32_t> tokens;
  std::string text;
  double seconds = 0;
  HeadStats stats;
};

int run(const CompareCli& o) {
  const AttentionPolicy policy = o.policy.resolve();
  Engine engine(o.engine.resolve());
  const Tokenizer& tok = engine.tokenizer();
  // The document, cut to its first doc_tokens tokens at a token boundary.
  std::vector<int32_t> doc = tok.encode(read_document(o.doc_file), false, /*parse_special=*/false);
  if (int64_t(doc.size()) > o.doc_tokens) doc.resize(size_t(o.doc_tokens));
  const std::string doc_text = tok.decode(doc);
  const std::string user = doc_text + "\n\nAnswer this question about the text above in one sentence.\nQuestion: " +
                           o.question;
  const std::vector<int32_t> prompt =
      tok.encode(tok.apply_chat_template({{"user", user}}, true), tok.add_bos(), true);
  SR_CHECK(int64_t(prompt.size()) + o.n <= (engine.options().max_context > 0 ? engine.options().max_context
                                                                              : engine.config().context_length),
           "the prompt ({} tokens) plus {} new tokens exceed the context; lower --doc-tokens", prompt.size(), o.n);

  auto dense = engine.new_session(AttentionPolicy{});
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> prefill_logits =
      dense->prefill(prompt, o.json ? ProgressFn{} : stderr_progress("prefill"));
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto forced = dense->fork();
  forced->set_policy(policy);
  auto free_run = dense->fork();
  free_run->set_policy(policy);

  // Dense answers; the policy is teacher-forced on the same tokens.
  Answer a_dense;
  std::vector<float> logits_d = prefill_logits, logits_f = prefill_logits;
  int agree = 0, steps = 0;
  double kl_sum = 0, kl_max = 0;
  for (int i = 0; i < o.n; ++i) {
    const int32_t next = argmax(logits_d);
    agree += argmax(logits_f) == next;
    const double kl = kl_divergence(logits_d, logits_f);
    kl_sum += kl;
    kl_max = std::max(kl_max, kl);
    ++steps;
    if (tok.is_end_of_generation(next)) break;
    a_dense.tokens.push_back(next);
    if (i + 1 == o.n) break;
    const auto a = std::chrono::steady_clock::now();
    logits_d = dense->decode(next);
    a_dense.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    logits_f = forced->decode(next);
  }
  a_dense.text = tok.decode(a_dense.tokens);
  a_dense.stats = dense->total_stats();

  // The policy answers on its own, from the same prefill.
  Answer a_policy;
  std::vector<float> logits_p = prefill_logits;
  for (int i = 0; i < o.n; ++i) {
    const int32_t next = argmax(logits_p);
    if (tok.is_end_of_generation(next)) break;
    a_policy.tokens.push_back(next);
    if (i + 1 == o.n) break;
    const auto a = std::chrono::steady_clock::now();
    logits_p = free_run->decode(next);
    a_policy.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
  }
  a_policy.text = tok.decode(a_policy.tokens);
  a_policy.stats = free_run->total_stats();
  size_t same_prefix = 0;
  while (same_prefix < std::min(a_dense.tokens.size(), a_policy.tokens.size()) &&
         a_dense.tokens[same_prefix] == a_policy.tokens[same_prefix])
    ++same_prefix;

  // Decode steps taken: answer length - 1 (the first token comes from the prefill).
  auto per_step = [](const Answer& a, int64_t bytes) {
    return a.tokens.size() > 1 ? double(bytes) / double(a.tokens.size() - 1) : 0.0;
  };
  auto speed = [](const Answer& a) { return a.seconds > 0 ? double(a.tokens.size() - 1) / a.seconds : 0.0; };
  const double frac = double(a_policy.stats.bytes_read()) / double(std::max<int64_t>(1, a_policy.stats.bytes_dense));
  nlohmann::json j = {
      {"document", o.doc_file},
      {"document_tokens", doc.size()},
      {"prompt_tokens", prompt.size()},
      {"question", o.question},
      {"prefill_seconds", prefill_s},
      {"dense", {{"answer", a_dense.text}, {"tokens", a_dense.tokens.size()}, {"decode_tokens_per_second", speed(a_dense)},
                 {"kv_bytes_per_step", per_step(a_dense, a_dense.stats.bytes_read())},
                 {"attention", head_stats_json(a_dense.stats)}}},
      {"policy", {{"name", policy.describe()}, {"answer", a_policy.text}, {"tokens", a_policy.tokens.size()},
                  {"decode_tokens_per_second", speed(a_policy)},
                  {"kv_bytes_per_step", per_step(a_policy, a_policy.stats.bytes_read())},
                  {"attention", head_stats_json(a_policy.stats)}}},
      {"agreement", {{"teacher_forced_steps", steps}, {"top1_agreement", double(agree) / std::max(1, steps)},
                     {"mean_kl", kl_sum / std::max(1, steps)}, {"max_kl", kl_max},
                     {"identical_answer_prefix_tokens", same_prefix},
                     {"answers_identical", a_dense.tokens == a_policy.tokens}}}};
  if (o.json) {
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("Document: {} (first {} tokens), prompt {} tokens, prefilled in {:.1f} s\n", o.doc_file, doc.size(),
             prompt.size(), prefill_s);
  fmt::print("Question: {}\n\n", o.question);
  fmt::print("dense answer:\n  {}\n\n", a_dense.text);
  fmt::print("{} answer:\n  {}\n\n", policy.describe(), a_policy.text);
  const size_t w = std::max<size_t>(10, policy.describe().size());  // the policy column fits its name
  fmt::print("{:<{}} {:>12} {:>16} {:>10}\n", "policy", w, "decode tok/s", "KV bytes/step", "of dense");
  fmt::print("{:<{}} {:>12.1f} {:>16.0f} {:>9.1f}%\n", "dense", w, speed(a_dense),
             per_step(a_dense, a_dense.stats.bytes_read()), 100.0);
  fmt::print("{:<{}} {:>12.1f} {:>16.0f} {:>9.1f}%\n", policy.describe(), w, speed(a_policy),
             per_step(a_policy, a_policy.stats.bytes_read()), 100 * frac);
  fmt::print("\nAgreement, {} under the policy teacher-forced on dense's answer ({} steps): top-1 {:.1f}%, "
             "mean KL {:.2e}, max KL {:.2e}\n",
             policy.describe(), steps, 100.0 * agree / std::max(1, steps), kl_sum / std::max(1, steps), kl_max);
  fmt::print("Free-running answers: {} (first {} of {} tokens identical); {} of {} blocks skipped, max delta {:.2g}\n",
             a_dense.tokens == a_policy.tokens ? "identical" : "differ", same_prefix, a_dense.tokens.size(),
             a_policy.stats.blocks_skipped, a_policy.stats.blocks_total, a_policy.stats.delta);
  return 0;
}

}  // namespace

Runner register_compare(CLI::App& app) {
  auto o = std::make_shared<CompareCli>();
  CLI::App* cmd = app.add_subcommand("compare", "answer a question about a document under dense and a routed policy");
  o->engine.add_to(cmd, true, "f32");
  cmd->add_option("-f,--file", o->doc_file, "the document (plain text)")->required()->check(CLI::ExistingFile);
  cmd->add_option("-q,--question", o->question, "the question")->required();
  cmd->add_option("--doc-tokens", o->doc_tokens, "use the first N tokens of the document")
      ->check(CLI::Range(int64_t(16), int64_t(1) << 30))
      ->capture_default_str();
  cmd->add_option("-n,--n-predict", o->n, "answer length in tokens")->check(CLI::Range(1, 4096))->capture_default_str();
  o->policy.name = "sinkrouter";
  o->policy.add_to(cmd);
  cmd->add_flag("--json", o->json, "print one JSON object");
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
