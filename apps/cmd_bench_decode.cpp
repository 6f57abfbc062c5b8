// `sinkrouter bench-decode`: decode speed of the engine at given context lengths.
//
// For each context C: the first C - warmup - steps tokens of a real text are prefilled
// (timed), then for each policy the prefilled session is forked, `warmup` untimed greedy
// steps run (the first routed step fits per-session state such as a key basis), and
// `steps` greedy steps are timed one by one, so that the timed steps end with exactly C
// tokens in the cache. Repeated `repeats` times per policy from the same prefill; the
// figure is the median step. End-of-text tokens do not stop the run (a benchmark, not a
// chat). The same protocol is followed by bench/cpu/llamacpp_decode.py for llama.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "engine_options.h"
#include "policy_options.h"
#include "stats_json.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::apps {
namespace {

// Used when no text file is available (data/ not fetched): a paragraph repeated. Its
// attention patterns are not those of a real document; the JSON says which text ran.
constexpr const char* kBuiltInParagraph =
    "The harbour town woke slowly. Fishermen hauled their nets along the stone quay while gulls "
    "argued over scraps, and the baker on Mill Street pulled the first loaves from an oven older "
    "than anyone could remember. By nine the market square was full: farmers with crates of "
    "apples, a tinker mending pots, children chasing a dog that had stolen a sausage. Nobody "
    "noticed the stranger who stepped off the morning coach, a tall woman in a grey travelling "
    "cloak, carrying a single leather case and a letter addressed to a man who had died ten "
    "years before.\n\n";
constexpr const char* kDefaultText = "data/texts/sherlock.txt";

struct BenchDecodeCli {
  EngineCliOptions engine;
  std::vector<int64_t> contexts{512, 4096, 8192};
  std::vector<std::string> policies{"dense", "sinkrouter"};
  std::string text_file;
  int steps = 32, warmup = 2, repeats = 3;
  int bandwidth_mib = 0;  // > 0: also measure memory bandwidth on buffers of this size
  bool json = false;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SR_CHECK(bool(in), "cannot read text file '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first n tokens of the text (repeated if it is too short), tokenised as one string.
std::vector<int32_t> first_tokens(const Tokenizer& tok, const std::string& text, int64_t n) {
  SR_CHECK(!text.empty(), "bench-decode: the text is empty");
  std::string s = text;
  // ~4 bytes per token in English prose; tokenise a prefix large enough, not the whole book.
  const size_t want = size_t(n) * 8 + 1024;
  while (s.size() < want) s += text;
  if (s.size() > want) s.resize(want);
  std::vector<int32_t> ids = tok.encode(s, tok.add_bos(), /*parse_special=*/false);
  SR_CHECK(int64_t(ids.size()) >= n, "bench-decode: could not make {} tokens from the text (got {})", n, ids.size());
  ids.resize(size_t(n));
  return ids;
}

AttentionPolicy policy_by_name(const std::string& name) {
  if (name == "sinkrouter") return default_sinkrouter_policy();
  AttentionPolicy p;
  p.kind = parse_policy_kind(name);
  p.validate();
  return p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The floor a decode step is measured against: memory bandwidth of `threads` threads over
// buffers far larger than the caches, best of 5 passes. read: each thread sums its share
// of one buffer with 8-byte loads (the GEMV's pattern: read only); copy: memcpy of each
// share to a second buffer, counted as bytes read + bytes written.
nlohmann::json measure_bandwidth(int64_t mib, int threads) {
  const size_t bytes = size_t(mib) << 20;
  std::vector<uint64_t> a(bytes / 8), b(bytes / 8);
  for (size_t i = 0; i < a.size(); ++i) a[i] = i;  // touch every page (no zero-page reads)
  std::fill(b.begin(), b.end(), 1);
  auto best_of = [&](auto&& pass) {
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = Clock::now();
      std::vector<std::thread> pool;
      for (int k = 0; k < threads; ++k) pool.emplace_back(pass, k);
      for (auto& t : pool) t.join();
      best = std::min(best, seconds_since(t0));
    }
    return best;
  };
  const size_t share = a.size() / size_t(threads);
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  const double read_s = best_of([&](int k) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const uint64_t* p = a.data() + size_t(k) * share;
    for (size_t i = 0; i + 4 <= share; i += 4) {
      s0 += p[i];
      s1 += p[i + 1];
      s2 += p[i + 2];
      s3 += p[i + 3];
    }
    sums[size_t(k)] = s0 + s1 + s2 + s3;
  });
  const double copy_s = best_of([&](int k) {
    std::memcpy(b.data() + size_t(k) * share, a.data() + size_t(k) * share, share * 8);
  });
  uint64_t check = 0;
  for (uint64_t v : sums) check += v;
  return {{"buffer_mib", mib},
          {"threads", threads},
          {"read_gb_per_s", double(share * threads * 8) / read_s / 1e9},
          {"copy_gb_per_s", 2.0 * double(share * threads * 8) / copy_s / 1e9},
          {"checksum", check}};
}

// Timed greedy steps of one policy from a prefilled session.
nlohmann::json bench_policy(const Session& prefilled, const std::vector<float>& prefill_logits,
                            const AttentionPolicy& policy, const Tokenizer& tok, const BenchDecodeCli& o) {
  std::vector<double> step_s;
  double total_s = 0;
  int64_t bytes_read = 0, bytes_dense = 0;
  HeadStats worst;
  std::vector<int32_t> generated;
  for (int r = 0; r < o.repeats; ++r) {
    auto s = prefilled.fork();
    s->set_policy(policy);
    std::vector<float> logits = prefill_logits;
    std::vector<int32_t> out;
    for (int i = 0; i < o.warmup; ++i) {
      out.push_back(argmax(logits));
      logits = s->decode(out.back());
    }
    const HeadStats before = s->total_stats();
    for (int i = 0; i < o.steps; ++i) {
      out.push_back(argmax(logits));
      const auto t = Clock::now();
      logits = s->decode(out.back());
      const double dt = seconds_since(t);
      step_s.push_back(dt);
      total_s += dt;
    }
    const HeadStats after = s->total_stats();
    bytes_read += after.bytes_read() - before.bytes_read();
    bytes_dense += after.bytes_dense - before.bytes_dense;
    worst = accumulate({worst, s->last_step_stats()});
    if (r == 0) generated = out;
  }
  const double timed = double(step_s.size());
  const double med = median(step_s);
  return {{"policy", policy_name(policy.kind)},
          {"describe", policy.describe()},
          {"decode_tokens_per_second", med > 0 ? 1.0 / med : 0.0},
          {"decode_tokens_per_second_total", total_s > 0 ? timed / total_s : 0.0},
          {"step_ms_median", 1e3 * med},
          {"step_ms_min", 1e3 * *std::min_element(step_s.begin(), step_s.end())},
          {"step_ms_max", 1e3 * *std::max_element(step_s.begin(), step_s.end())},
          {"timed_steps", step_s.size()},
          {"kv_bytes_read_per_step", double(bytes_read) / timed},
          {"kv_bytes_dense_per_step", double(bytes_dense) / timed},
          {"kv_read_fraction", bytes_dense > 0 ? double(bytes_read) / double(bytes_dense) : 1.0},
          {"max_delta", worst.delta},
          {"generated_text", tok.decode(generated)}};
}

int run(BenchDecodeCli o) {
  SR_CHECK(!o.contexts.empty() && !o.policies.empty(), "bench-decode: give at least one context and one policy");
  std::vector<AttentionPolicy> policies;
  for (const auto& name : o.policies) policies.push_back(policy_by_name(name));
  std::string text_source = o.text_file.empty() ? kDefaultText : o.text_file;
  std::string text;
  if (o.text_file.empty() && !std::ifstream(kDefaultText)) {
    text_source = "built-in paragraph (data/texts not fetched: python3 tools/fetch_data.py)";
    text = kBuiltInParagraph;
  } else {
    text = read_text(text_source);
  }
  const int64_t max_ctx = *std::max_element(o.contexts.begin(), o.contexts.end());
  for (int64_t c : o.contexts)
    SR_CHECK(c > o.warmup + o.steps, "bench-decode: context {} must exceed warmup + steps ({})", c,
             o.warmup + o.steps);
  EngineOptions eo = o.engine.resolve();
  if (eo.max_context == 0) eo.max_context = max_ctx;
  SR_CHECK(eo.max_context >= max_ctx, "bench-decode: --max-context {} is below the largest context {}",
           eo.max_context, max_ctx);
  Engine engine(eo);
  const Tokenizer& tok = engine.tokenizer();
  const std::vector<int32_t> all = first_tokens(tok, text, max_ctx);

  nlohmann::json runs = nlohmann::json::array();
  for (int64_t c : o.contexts) {
    const std::vector<int32_t> prompt(all.begin(), all.begin() + (c - o.warmup - o.steps));
    auto base = engine.new_session(AttentionPolicy{});
    const auto t0 = Clock::now();
    const std::vector<float> logits = base->prefill(prompt, o.json ? ProgressFn{} : stderr_progress("prefill"));
    const double prefill_s = seconds_since(t0);
    nlohmann::json per_policy = nlohmann::json::array();
    for (const auto& p : policies) per_policy.push_back(bench_policy(*base, logits, p, tok, o));
    runs.push_back({{"context", c},
                    {"prompt_tokens", prompt.size()},
                    {"prefill_seconds", prefill_s},
                    {"prefill_tokens_per_second", double(prompt.size()) / prefill_s},
                    {"policies", per_policy}});
    if (!o.json) {
      fmt::print("context {:>6}: prefill {} tokens in {:.2f} s ({:.0f} tok/s)\n", c, prompt.size(), prefill_s,
                 double(prompt.size()) / prefill_s);
      for (const auto& r : per_policy)
        fmt::print("  {:<44} {:>7.1f} tok/s (median step {:.2f} ms)  KV {:>6.2f} MB/step, {:5.1f}% of dense\n",
                   r["describe"].get<std::string>(), r["decode_tokens_per_second"].get<double>(),
                   r["step_ms_median"].get<double>(), r["kv_bytes_read_per_step"].get<double>() / 1e6,
                   100 * r["kv_read_fraction"].get<double>());
      std::fflush(stdout);
    }
  }
  nlohmann::json bandwidth;
  if (o.bandwidth_mib > 0) {
    const int threads = eo.threads > 0 ? eo.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    bandwidth = measure_bandwidth(o.bandwidth_mib, threads);
    if (!o.json)
      fmt::print("memory bandwidth ({} threads, {} MiB): read {:.1f} GB/s, copy {:.1f} GB/s (read + write)\n",
                 threads, o.bandwidth_mib, bandwidth["read_gb_per_s"].get<double>(),
                 bandwidth["copy_gb_per_s"].get<double>());
  }
  if (o.json) {
    const ModelConfig& cfg = engine.config();
    nlohmann::json j = {{"engine", "sinkrouter"},
                        {"model", eo.model_path},
                        {"model_name", cfg.name},
                        {"threads", engine.options().threads},
                        {"matmul", eo.matmul},
                        {"kv_dtype", dtype_name(eo.kv_dtype)},
                        {"page_size", eo.page_size},
                        {"text", text_source},
                        {"steps", o.steps},
                        {"warmup", o.warmup},
                        {"repeats", o.repeats},
                        {"memory_bandwidth", bandwidth},
                        {"runs", runs}};
    fmt::print("{}\n", j.dump(2));
  }
  return 0;
}

}  // namespace

Runner register_bench_decode(CLI::App& app) {
  auto o = std::make_shared<BenchDecodeCli>();
  CLI::App* cmd = app.add_subcommand("bench-decode", "decode tokens/s at given context lengths, per policy");
  o->engine.add_to(cmd);
  cmd->add_option("--context", o->contexts, "KV lengths at the end of the timed steps (comma-separated)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(1), int64_t(1) << 31))
      ->capture_default_str();
  cmd->add_option("--policy", o->policies, "policies (comma-separated): dense, sinkrouter (the default routed "
                                           "policy, docs/RESULTS.md), streaming, quest, blasst")
      ->delimiter(',')
      ->check(CLI::IsMember({"dense", "sinkrouter", "streaming", "quest", "blasst"}))
      ->capture_default_str();
  cmd->add_option("--text", o->text_file, "text to fill the context with (default: " + std::string(kDefaultText) +
                                              ", else a built-in paragraph)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--steps", o->steps, "timed decode steps per repeat")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed decode steps before them")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "repeats per policy (from the same prefill)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--bandwidth-mib", o->bandwidth_mib,
                  "also measure memory bandwidth (read, copy) on buffers of this many MiB (0: no)")
      ->check(CLI::Range(0, 1 << 16))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object");
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
