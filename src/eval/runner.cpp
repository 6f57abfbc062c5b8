#include "sinkrouter/eval/runner.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "eval/task_support.h"
#include "eval/text_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/datasets.h"
#include "sinkrouter/eval/fidelity.h"

namespace sinkrouter::eval {
namespace {

// "\r[=========           ] 12/40  passkey@4096 dense  1m02s elapsed, ETA 3m20s" on stderr.
class ProgressBar {
 public:
  ProgressBar(int64_t total, bool enabled) : total_(total), enabled_(enabled && total > 0) {}
  void update(int64_t done, const std::string& what) {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 24, filled = int(width * done / total_);
    const std::string eta = done ? clock(s / double(done) * double(total_ - done)) : std::string("?");
    std::fprintf(stderr, "\r[%s%s] %lld/%lld  %-40.40s %s elapsed, ETA %s  ", std::string(size_t(filled), '=').c_str(),
                 std::string(size_t(width - filled), ' ').c_str(), (long long)done, (long long)total_, what.c_str(),
                 clock(s).c_str(), eta.c_str());
    if (done == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  static std::string clock(double s) {
    const int64_t t = int64_t(s + 0.5);
    return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
  }
  int64_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

AttentionPolicy dense_policy() { return AttentionPolicy{}; }

std::string depth_key(const std::optional<double>& d) { return d ? fmt::format("{:g}", *d) : std::string("spread"); }

struct Work {
  std::string task;
  int64_t context;
  int index;
  AttentionPolicy policy;
  std::string key;
};

}  // namespace

EvalRunner::EvalRunner(const Engine& engine, RunnerOptions options) : engine_(engine), o_(std::move(options)) {
  SR_CHECK(o_.samples >= 1, "eval: samples {} (expected >= 1)", o_.samples);
  const Tokenizer& tok = engine_.tokenizer();
  try {
    overhead_ = int64_t(tok.encode(tok.apply_chat_template({{"user", ""}}, true), false).size());
  } catch (const Error&) {
    chat_ok_ = false;  // no chat template we know: prompts are fed plain
  }
  if (tok.add_bos()) overhead_ += 1;
}

int64_t EvalRunner::count_tokens(const std::string& text) const {
  return int64_t(engine_.tokenizer().encode(text, false).size());
}

std::vector<int32_t> EvalRunner::prompt_tokens(const TaskSample& s) const {
  const Tokenizer& tok = engine_.tokenizer();
  std::string text;
  if (s.chat && chat_ok_)
    text = tok.apply_chat_template({{"user", s.prompt}}, true) + text::strip(s.answer_prefix);
  else
    text = s.prompt + s.answer_prefix;
  return tok.encode(text, tok.add_bos());
}

std::vector<TaskSample> EvalRunner::load_file_task(const std::string& task, int64_t context) {
  const bool lb = task.rfind("longbench:", 0) == 0;
  const std::string path = task.substr(task.find(':') + 1);
  std::vector<TaskSample> samples = lb ? load_longbench(path) : load_infinitebench(path);
  if (int64_t(samples.size()) > o_.samples) samples.resize(size_t(o_.samples));
  const Tokenizer& tok = engine_.tokenizer();
  for (TaskSample& s : samples) {
    // Both benchmarks cut the prompt in the middle to the model's budget before wrapping it.
    const int64_t budget = context - (s.chat ? overhead_ : (tok.add_bos() ? 1 : 0)) - count_tokens(s.answer_prefix);
    s.prompt = truncate_middle(
        s.prompt, budget, [&](const std::string& t) { return tok.encode(t, false); },
        [&](const std::vector<int32_t>& ids) { return tok.decode(ids); });
    s.target_tokens = context;
    s.id = fmt::format("{}-{}", s.task, s.id);
  }
  return samples;
}

PrefilledPrompt& EvalRunner::prefilled(const std::vector<int32_t>& prompt) {
  if (prefilled_.session && prefilled_.prompt == prompt) return prefilled_;
  prefilled_ = PrefilledPrompt{};
  prefilled_.prompt = prompt;
  prefilled_.session = engine_.new_session(dense_policy());
  const auto t0 = std::chrono::steady_clock::now();
  prefilled_.logits = prefilled_.session->prefill(prompt);
  prefilled_.prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return prefilled_;
}

SampleRecord EvalRunner::run_generation(const TaskSample& s, const AttentionPolicy& p, int64_t context) {
  const std::vector<int32_t> prompt = prompt_tokens(s);
  GenerateOptions g;
  g.max_new_tokens = s.max_new_tokens;
  const int64_t capacity =
      engine_.options().max_context > 0 ? engine_.options().max_context : engine_.config().context_length;
  SR_CHECK(int64_t(prompt.size()) + g.max_new_tokens <= capacity,
           "context over capacity: {} prompt tokens and {} new tokens exceed the limit of {} tokens (raise --max-context)",
           prompt.size(), g.max_new_tokens, capacity);
  // Prefill once per sample (dense under every policy), then a fork per policy.
  PrefilledPrompt& pre = prefilled(prompt);
  std::unique_ptr<Session> session = pre.session->fork();
  session->set_policy(p);
  GenerateResult r = engine_.continue_generation(*session, pre.logits, g);
  r.prompt_tokens = prompt;
  r.prefill_seconds = pre.prefill_seconds;
  SampleRecord rec;
  rec.task = s.task;
  rec.context = context;
  rec.policy = p.describe();
  rec.policy_kind = policy_name(p.kind);
  rec.sample_id = s.id;
  rec.prediction = r.text;
  rec.answers = s.answers;
  rec.score = score_sample(s, r.text);
  rec.bytes_read = r.stats.bytes_read();
  rec.bytes_dense = r.stats.bytes_dense;
  rec.delta_max = r.stats.delta;
  rec.prompt_tokens = int64_t(prompt.size());
  rec.prefill_seconds = r.prefill_seconds;
  rec.decode_seconds = r.decode_seconds;
  nlohmann::json needles = nlohmann::json::array();
  for (const Needle& n : s.needles) needles.push_back({{"depth", n.depth}, {"token_offset", n.token_offset}});
  rec.extra = {{"needles", needles}, {"metric", metric_name(s.metric)}, {"generated_tokens", r.tokens.size()}};
  return rec;
}

SampleRecord EvalRunner::run_fidelity(int index, int64_t context, const AttentionPolicy& p) {
  const auto& docs = fidelity_documents();
  const std::string doc = docs[size_t(index) % docs.size()];
  const std::string& text = detail::read_data_file(o_.data_dir, "texts/" + doc + ".txt");
  // A window starting at a line chosen from the seed, in the first half of the book.
  detail::Rng rng(detail::mix_seed(o_.seed, uint64_t(index) + 0xF1DE));
  size_t start = size_t(rng.uniform(0, int64_t(text.size() / 2)));
  start = std::min(text.size(), text.find('\n', start) == std::string::npos ? start : text.find('\n', start) + 1);
  const Tokenizer& tok = engine_.tokenizer();
  std::vector<int32_t> tokens;
  if (tok.add_bos()) tokens.push_back(tok.bos());
  const std::vector<int32_t> body = tok.encode(text.substr(start, size_t(context) * 12), false);
  SR_CHECK(int64_t(tokens.size() + body.size()) >= context,
           "fidelity: {} from character {} has {} tokens, fewer than the {} asked for", doc, start, body.size(), context);
  tokens.insert(tokens.end(), body.begin(), body.begin() + long(context - int64_t(tokens.size())));
  const int64_t steps = std::min<int64_t>(o_.fidelity_tokens, context - 1);
  const int64_t first = context - steps;  // positions [first, context) are predicted one step at a time
  const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + long(first));

  const bool is_dense = p.kind == PolicyKind::Dense;
  // The prefix is prefilled once (dense, as under every policy) and the dense logits of
  // every teacher-forced step are kept; each policy then decodes a fork of the prefill.
  PrefilledPrompt& pre = prefilled(prefix);
  if (pre.dense_steps.empty()) {
    std::unique_ptr<Session> dense = pre.session->fork();
    const auto t0 = std::chrono::steady_clock::now();
    pre.dense_steps.push_back(pre.logits);
    for (int64_t t = first; t + 1 < context; ++t) pre.dense_steps.push_back(dense->decode(tokens[size_t(t)]));
    pre.dense_decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    pre.dense_stats = dense->total_stats();
  }
  FidelityAccumulator acc(even_bucket_edges(first, context, o_.fidelity_buckets));
  HeadStats stats = pre.dense_stats;
  double decode_seconds = pre.dense_decode_seconds;
  if (is_dense) {
    for (int64_t t = first; t < context; ++t) {
      const auto& ld = pre.dense_steps[size_t(t - first)];
      acc.add(t, ld, ld, tokens[size_t(t)]);
    }
  } else {
    std::unique_ptr<Session> routed = pre.session->fork();
    routed->set_policy(p);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> lp = pre.logits;
    for (int64_t t = first; t < context; ++t) {
      acc.add(t, pre.dense_steps[size_t(t - first)], lp, tokens[size_t(t)]);
      if (t + 1 == context) break;
      lp = routed->decode(tokens[size_t(t)]);
    }
    decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stats = routed->total_stats();
  }
  const FidelityBucket total = acc.total();
  SampleRecord rec;
  rec.task = "fidelity";
  rec.context = context;
  rec.policy = p.describe();
  rec.policy_kind = policy_name(p.kind);
  rec.sample_id = fmt::format("fidelity-{}-s{}-{}-{}", context, o_.seed, index, doc);
  rec.score = total.top1_agreement();
  rec.bytes_read = stats.bytes_read();
  rec.bytes_dense = stats.bytes_dense;
  rec.delta_max = stats.delta;
  rec.prompt_tokens = context;
  rec.prefill_seconds = pre.prefill_seconds;
  rec.decode_seconds = decode_seconds;
  rec.extra = {{"document", doc}, {"start_char", start}, {"fidelity", acc.to_json()},
               {"kl_mean", total.kl_mean()}, {"kl_max", total.kl_max}, {"ppl_dense", total.ppl_dense()},
               {"ppl_policy", total.ppl_policy()}};
  return rec;
}

void EvalRunner::run(const std::vector<std::string>& tasks, const std::vector<int64_t>& contexts,
                     const std::vector<AttentionPolicy>& policies, ResultsLog& log) {
  // Dense first, then each other policy once (a policy listed twice runs once).
  std::vector<AttentionPolicy> ps{dense_policy()};
  for (const auto& p : policies) {
    p.validate();
    bool seen = false;
    for (const auto& q : ps) seen |= q.describe() == p.describe();
    if (!seen) ps.push_back(p);
  }
  std::vector<Work> todo;
  for (const auto& task : tasks)
    for (int64_t ctx : contexts)
      for (int i = 0; i < o_.samples; ++i)
        for (const auto& p : ps) {
          const std::string key = fmt::format("{}|{}|s{}|{}/{}|d={}|f={}|{}", task, ctx, o_.seed, i, o_.samples,
                                              depth_key(o_.depth), task == "fidelity" ? o_.fidelity_tokens : 0,
                                              p.describe());
          if (!log.has(key)) todo.push_back({task, ctx, i, p, key});
        }
  ProgressBar bar(int64_t(todo.size()), o_.progress);
  bar.update(0, "starting");
  // Samples are made once per (task, context, index) and shared by the policies.
  std::string made_for;
  TaskSample sample;
  std::string loaded_for;
  std::vector<TaskSample> loaded;
  int64_t done = 0;
  for (const Work& w : todo) {
    SampleRecord rec;
    if (w.task == "fidelity") {
      rec = run_fidelity(w.index, w.context, w.policy);
    } else if (is_synthetic_task(w.task)) {
      const std::string id = fmt::format("{}|{}|{}", w.task, w.context, w.index);
      if (id != made_for) {
        TaskOptions to;
        to.context_tokens = w.context;
        to.reserved_tokens = overhead_;
        to.num_samples = o_.samples;
        to.seed = o_.seed;
        to.depth = o_.depth;
        to.data_dir = o_.data_dir;
        sample = generate_sample(w.task, to, [this](const std::string& t) { return count_tokens(t); }, w.index);
        made_for = id;
      }
      rec = run_generation(sample, w.policy, w.context);
    } else {
      const std::string id = fmt::format("{}|{}", w.task, w.context);
      if (id != loaded_for) {
        loaded = load_file_task(w.task, w.context);
        loaded_for = id;
      }
      if (w.index >= int(loaded.size())) {
        ++done;
        continue;  // the file has fewer lines than samples asked for
      }
      rec = run_generation(loaded[size_t(w.index)], w.policy, w.context);
    }
    rec.key = w.key;
    log.append(rec);
    bar.update(++done, fmt::format("{}@{} {}", w.task, w.context, policy_name(w.policy.kind)));
  }
}

}  // namespace sinkrouter::eval
