// RULER's needle-in-a-haystack family (scripts/data/synthetic/niah.py, synthetic.yaml):
// needles "One of the special magic {numbers} for {key} is: {value}." in a haystack of
// repeated noise sentences, of Paul Graham's essays, or of distractor needles.
#include <algorithm>
#include <cmath>
#include <map>

#include "eval/task_support.h"
#include "eval/text_util.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::eval::detail {
namespace {

enum class Haystack { Noise, Essay, Needle };

struct NiahConfig {
  const char* name;
  Haystack haystack;
  const char* type_k;  // "words", "numbers", "uuids"
  const char* type_v;
  int num_k, num_v, num_q;
};

// scripts/synthetic.yaml
constexpr NiahConfig kConfigs[] = {
    {"niah_single_1", Haystack::Noise, "words", "numbers", 1, 1, 1},
    {"niah_single_2", Haystack::Essay, "words", "numbers", 1, 1, 1},
    {"niah_single_3", Haystack::Essay, "words", "uuids", 1, 1, 1},
    {"niah_multikey_1", Haystack::Essay, "words", "numbers", 4, 1, 1},
    {"niah_multikey_2", Haystack::Needle, "words", "numbers", 1, 1, 1},
    {"niah_multikey_3", Haystack::Needle, "uuids", "uuids", 1, 1, 1},
    {"niah_multivalue", Haystack::Essay, "words", "numbers", 1, 4, 1},
    {"niah_multiquery", Haystack::Essay, "words", "numbers", 1, 1, 4},
};

constexpr const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

std::string random_of(const std::string& type, Rng& rng, const std::string& data_dir) {
  if (type == "numbers") return random_number(rng, 7);
  if (type == "words") return random_adjective_noun(rng, data_dir);
  return random_uuid4(rng);
}

std::string needle_sentence(const std::string& type_v, const std::string& key, const std::string& value) {
  return "One of the special magic " + type_v + " for " + key + " is: " + value + ".";
}

struct Placed {
  std::string text;
  double depth;  // requested fraction of the haystack units before it
  bool queried;
};

// Joins units with `sep`, inserting each needle before unit floor(depth * n) (needles at
// the same position keep their order); records each needle's offset relative to the
// returned string.
std::string interleave(const std::vector<std::string>& units, const std::vector<Placed>& needles,
                       const std::string& sep, std::vector<Needle>& out) {
  const int64_t n = int64_t(units.size());
  std::vector<std::pair<int64_t, size_t>> at;
  for (size_t i = 0; i < needles.size(); ++i)
    at.emplace_back(std::min<int64_t>(n, int64_t(std::floor(needles[i].depth * double(n)))), i);
  std::stable_sort(at.begin(), at.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::string s;
  size_t next = 0;
  bool first = true;
  auto emit = [&](const std::string& piece) {
    if (!first) s += sep;
    first = false;
    s += piece;
  };
  for (int64_t u = 0; u <= n; ++u) {
    while (next < at.size() && at[next].first == u) {
      const Placed& p = needles[at[next].second];
      if (!first) s += sep;
      first = false;
      out.push_back({p.text, int64_t(s.size()), -1, n ? double(u) / double(n) : 0.0, p.queried});
      s += p.text;
      ++next;
    }
    if (u < n) emit(units[size_t(u)]);
  }
  return s;
}

}  // namespace

TaskSample make_niah(const SampleSpec& s) {
  const NiahConfig* cfg = nullptr;
  for (const auto& c : kConfigs)
    if (s.task == c.name) cfg = &c;
  SR_CHECK(cfg, "make_niah: '{}' is not a RULER NIAH task", s.task);
  const std::string& data_dir = s.options->data_dir;
  const std::string type_k = cfg->type_k, type_v = cfg->type_v;
  const int num_k = std::max(cfg->num_k, cfg->num_q);

  Rng rng(s.seed);
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> values;
  for (int k = 0; k < num_k; ++k) {
    std::string key;
    do key = random_of(type_k, rng, data_dir);
    while (std::find(keys.begin(), keys.end(), key) != keys.end());
    keys.push_back(key);
    values.emplace_back();
    for (int v = 0; v < cfg->num_v; ++v) values.back().push_back(random_of(type_v, rng, data_dir));
  }
  std::vector<int64_t> queried = rng.sample(num_k, cfg->num_q);
  std::vector<std::string> answers;
  for (int64_t q : queried)
    for (const auto& v : values[size_t(q)]) answers.push_back(v);

  // Depths: the first queried needle at the scheduled depth, every other needle at a
  // distinct random point of RULER's 40-point grid (as RULER places all of them).
  const int total = num_k * cfg->num_v;
  std::vector<double> grid = ruler_depth_grid();
  std::vector<int64_t> picks = rng.sample(int64_t(grid.size()), total - 1);
  std::vector<Placed> placed;
  size_t pick = 0;
  for (int k = 0; k < num_k; ++k) {
    const bool is_queried = std::find(queried.begin(), queried.end(), k) != queried.end();
    for (int v = 0; v < cfg->num_v; ++v) {
      const bool main_needle = k == queried[0] && v == 0;
      const double d = main_needle ? s.depth : grid[size_t(picks[pick++])];
      placed.push_back({needle_sentence(type_v, keys[size_t(k)], values[size_t(k)][size_t(v)]), d, is_queried});
    }
  }
  rng.shuffle(placed);  // RULER shuffles the needles; same-position ties keep this order

  std::vector<std::string> query_keys;
  for (int64_t q : queried) query_keys.push_back(keys[size_t(q)]);
  std::string query = query_keys[0];
  if (query_keys.size() > 1)
    query = text::join(std::vector<std::string>(query_keys.begin(), query_keys.end() - 1), ", ") + ", and " +
            query_keys.back();

  // RULER's template and answer prefix, made singular when one value is asked for.
  std::string tmpl = "Some special magic {v} are hidden within the following text. Make sure to memorize it. I will "
                     "quiz you about the {v} afterwards.\n{context}\nWhat are all the special magic {v} for {q} "
                     "mentioned in the provided text?";
  std::string prefix = " The special magic {v} for {q} mentioned in the provided text are";
  std::string type_v_shown = type_v;
  if (cfg->num_q * cfg->num_v == 1) {
    for (std::string* t : {&tmpl, &prefix}) {
      *t = text::replace_all(*t, "Some", "A");
      *t = text::replace_all(*t, "are all", "is");
      *t = text::replace_all(*t, "are", "is");
      *t = text::replace_all(*t, "answers", "answer");
    }
    type_v_shown.pop_back();
  }
  tmpl = text::replace_all(text::replace_all(tmpl, "{v}", type_v_shown), "{q}", query);
  prefix = text::replace_all(text::replace_all(prefix, "{v}", type_v_shown), "{q}", query);
  const size_t ctx_at = tmpl.find("{context}");
  const std::string head = tmpl.substr(0, ctx_at), tail = tmpl.substr(ctx_at + 9);

  std::vector<std::string> real_keys = keys;
  const std::vector<std::string>* essay = cfg->haystack == Haystack::Essay ? &essay_words(data_dir) : nullptr;
  std::map<int64_t, std::string> distractors;  // cached: built once per index across fits
  auto distractor = [&](int64_t i) -> const std::string& {
    auto it = distractors.find(i);
    if (it != distractors.end()) return it->second;
    Rng r(mix_seed(s.seed, uint64_t(i) + 1));
    std::string k;
    do k = random_of(type_k, r, data_dir);
    while (std::find(real_keys.begin(), real_keys.end(), k) != real_keys.end());
    return distractors.emplace(i, needle_sentence(type_v, k, random_of(type_v, r, data_dir))).first->second;
  };

  auto build = [&](int64_t n) {
    Built b;
    std::vector<Needle> needles;
    std::string context;
    if (cfg->haystack == Haystack::Essay) {
      std::vector<std::string> words;
      for (int64_t i = 0; i < n; ++i) words.push_back((*essay)[size_t(i) % essay->size()]);
      context = interleave(split_sentences(text::join(words, " ")), placed, " ", needles);
    } else {
      std::vector<std::string> lines;
      for (int64_t i = 0; i < n; ++i) lines.push_back(cfg->haystack == Haystack::Noise ? kNoise : distractor(i));
      context = interleave(lines, placed, "\n", needles);
    }
    b.prompt = head;
    b.context_begin = int64_t(b.prompt.size());
    for (Needle& nd : needles) nd.char_offset += b.context_begin;
    b.prompt += context;
    b.context_end = int64_t(b.prompt.size());
    b.prompt += tail;
    b.answer_prefix = prefix;
    b.needles = std::move(needles);
    b.metadata["haystack"] = cfg->haystack == Haystack::Essay ? "essay" : cfg->haystack == Haystack::Noise ? "noise" : "needle";
    b.metadata["query"] = query;
    return b;
  };
  const int64_t max_units = cfg->haystack == Haystack::Essay ? int64_t(1) << 23 : int64_t(1) << 21;
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 0, max_units, s.task);
  return finish_sample(s, std::move(fit), answers, Metric::RulerMatchAll, 128);
}

}  // namespace sinkrouter::eval::detail
