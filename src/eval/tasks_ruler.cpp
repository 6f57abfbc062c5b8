// RULER's variable tracking (variable_tracking.py: one chain of 4 hops in noise lines, with
// a one-shot example) and common-words extraction (common_words_extraction.py: 10 words
// repeated 30 times among words repeated 3 times, with a one-shot example).
#include <algorithm>
#include <set>

#include "eval/task_support.h"
#include "eval/text_util.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::eval::detail {
namespace {

constexpr const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr const char* kVtTemplate =
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above.";
constexpr const char* kVtPrefix =
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are: ";
constexpr const char* kCweTemplate =
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
constexpr const char* kCwePrefix = " Answer: The top 10 words that appear most often in the list are:";

struct Chain {
  std::vector<std::string> vars;
  std::vector<std::string> statements;
  std::string value;
};

// RULER: 5-letter names (3 in the one-shot example), a 5-digit value, "VAR B = VAR A "
// statements (the trailing space is RULER's).
Chain make_chain(Rng& rng, int hops, int name_length) {
  Chain c;
  std::set<std::string> seen;
  while (int(c.vars.size()) < hops + 1) {
    std::string v = random_upper(rng, name_length);
    if (seen.insert(v).second) c.vars.push_back(v);
  }
  c.value = std::to_string(rng.uniform(10000, 99998));
  c.statements.push_back("VAR " + c.vars[0] + " = " + c.value);
  for (int j = 0; j < hops; ++j) c.statements.push_back("VAR " + c.vars[size_t(j) + 1] + " = VAR " + c.vars[size_t(j)] + " ");
  return c;
}

// Noise lines with the chain's statements in order at the given fractions (sorted).
Built vt_build(const Chain& c, const std::vector<double>& fractions, int64_t n, const std::string& before) {
  const std::string tmpl = text::replace_all(kVtTemplate, "{query}", c.value);
  const std::string prefix = text::replace_all(
      text::replace_all(kVtPrefix, "{query}", c.value), "{num_v}", std::to_string(c.vars.size()));
  const size_t at = tmpl.find("{context}");
  Built b;
  b.prompt = before + tmpl.substr(0, at);
  b.context_begin = int64_t(b.prompt.size());
  size_t next = 0;
  bool first = true;
  auto line = [&](const std::string& l) {
    if (!first) b.prompt += "\n";
    first = false;
    b.prompt += l;
  };
  for (int64_t u = 0; u <= n; ++u) {
    while (next < c.statements.size() && std::min<int64_t>(n, int64_t(fractions[next] * double(n))) == u) {
      if (!first) b.prompt += "\n";
      first = false;
      b.needles.push_back({c.statements[next], int64_t(b.prompt.size()), -1, n ? double(u) / double(n) : 0.0, true});
      b.prompt += c.statements[next++];
    }
    if (u < n) line(kNoise);
  }
  b.context_end = int64_t(b.prompt.size());
  b.prompt += tmpl.substr(at + 9);
  b.answer_prefix = prefix;
  return b;
}

std::vector<double> sorted_fractions(Rng& rng, size_t k) {
  std::vector<double> f;
  for (size_t i = 0; i < k; ++i) f.push_back(rng.uniform01());
  std::sort(f.begin(), f.end());
  return f;
}

}  // namespace

TaskSample make_variable_tracking(const SampleSpec& s) {
  Rng rng(s.seed);
  // The one-shot example: RULER fits it to 500 tokens, shows its whole prompt, its answer
  // cue and its answer, then the task.
  const Chain example = make_chain(rng, 4, 3);
  const std::vector<double> example_at = sorted_fractions(rng, example.statements.size());
  FitResult ex = fit_to_budget([&](int64_t n) { return vt_build(example, example_at, n, ""); }, *s.count, 500, 0,
                               4096, s.task + " (one-shot example)");
  const std::string shot = ex.built.prompt + ex.built.answer_prefix + " " + text::join(example.vars, " ") + "\n\n";

  const Chain chain = make_chain(rng, 4, 5);
  const std::vector<double> at = sorted_fractions(rng, chain.statements.size());
  auto build = [&](int64_t n) {
    Built b = vt_build(chain, at, n, shot);
    b.metadata["haystack"] = "noise";
    b.metadata["value"] = chain.value;
    return b;
  };
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 0, int64_t(1) << 21, s.task);
  return finish_sample(s, std::move(fit), chain.vars, Metric::RulerMatchAll, 30);
}

TaskSample make_common_words(const SampleSpec& s) {
  const std::string& dir = s.options->data_dir;
  // RULER's pool: wonderwords' nouns, adjectives and verbs, unique. Beyond it (contexts
  // past ~100K tokens) RULER takes words from another list we do not have; we continue
  // with adjective-noun pairs, which are as unrelated to each other.
  std::vector<std::string> pool;
  {
    std::set<std::string> uniq;
    for (const char* list : {"nouns", "adjectives", "verbs"})
      for (const auto& w : word_list(dir, list)) uniq.insert(w);
    pool.assign(uniq.begin(), uniq.end());
  }
  const auto& adjs = word_list(dir, "adjectives");
  const auto& nouns = word_list(dir, "nouns");
  const size_t base = pool.size();
  auto word_at = [&](int64_t i) {
    if (size_t(i) < base) return pool[size_t(i)];
    const size_t j = size_t(i) - base;
    return adjs[j % adjs.size()] + "-" + nouns[(j / adjs.size()) % nouns.size()];
  };
  const int64_t capacity = int64_t(base + adjs.size() * nouns.size());

  const bool short_context = s.options->context_tokens < 4096;  // RULER's switch
  const int freq_cw = short_context ? 6 : 30, freq_ucw = short_context ? 1 : 3;
  const int shot_words = short_context ? 20 : 40, shot_cw = short_context ? 3 : 10, shot_ucw = short_context ? 1 : 3;

  // A list of `num_words` words: the first 10 of a random permutation are the common ones.
  auto example = [&](uint64_t seed, int64_t num_words, int cw, int ucw, std::vector<std::string>& common) {
    Rng r(seed);
    const std::vector<int64_t> pick = r.sample(capacity, num_words);
    std::vector<std::string> list;
    common.clear();
    for (int64_t i = 0; i < num_words; ++i) {
      const std::string w = word_at(pick[size_t(i)]);
      if (i < 10) common.push_back(w);
      for (int k = 0; k < (i < 10 ? cw : ucw); ++k) list.push_back(w);
    }
    Rng(mix_seed(seed, uint64_t(num_words))).shuffle(list);
    std::string ctx;
    for (size_t i = 0; i < list.size(); ++i) ctx += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
    return ctx;
  };
  auto numbered = [](const std::vector<std::string>& words) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i) out += (i ? " " : "") + std::to_string(i + 1) + ". " + words[i];
    return out;
  };
  const std::string tmpl = kCweTemplate;
  const size_t at = tmpl.find("{context}");
  std::vector<std::string> shot_common;
  const std::string shot_ctx = example(mix_seed(s.seed, 1), shot_words, shot_cw, shot_ucw, shot_common);
  const std::string shot = tmpl.substr(0, at) + shot_ctx + tmpl.substr(at + 9) + kCwePrefix + " " + numbered(shot_common);

  std::vector<std::string> common;
  auto build = [&](int64_t num_words) {
    Built b;
    const std::string ctx = example(mix_seed(s.seed, 2), num_words, freq_cw, freq_ucw, common);
    b.prompt = shot + "\n" + tmpl.substr(0, at);
    b.context_begin = int64_t(b.prompt.size());
    b.prompt += ctx;
    b.context_end = int64_t(b.prompt.size());
    b.prompt += tmpl.substr(at + 9);
    b.answer_prefix = kCwePrefix;
    b.metadata["haystack"] = "numbered_words";
    b.metadata["freq_cw"] = freq_cw;
    b.metadata["freq_ucw"] = freq_ucw;
    return b;
  };
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 10, capacity, s.task);
  example(mix_seed(s.seed, 2), fit.units, freq_cw, freq_ucw, common);  // the fitted size's answer
  return finish_sample(s, std::move(fit), common, Metric::RulerMatchAll, 120);
}

}  // namespace sinkrouter::eval::detail
