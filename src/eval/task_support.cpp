#include "eval/task_support.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "eval/text_util.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::eval::detail {

int64_t Rng::uniform(int64_t lo, int64_t hi) {
  SR_CHECK(lo <= hi, "Rng::uniform: empty range [{}, {}]", lo, hi);
  const uint64_t span = uint64_t(hi - lo) + 1;
  if (span == 0) return int64_t(next());  // the whole 64-bit range
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return lo + int64_t(x % span);
}

std::vector<int64_t> Rng::sample(int64_t n, int64_t k) {
  SR_CHECK(k >= 0 && k <= n, "Rng::sample: cannot draw {} distinct values from {}", k, n);
  // Partial Fisher-Yates over a sparse map: O(k) memory for any n.
  std::map<int64_t, int64_t> swapped;
  auto at = [&](int64_t i) {
    auto it = swapped.find(i);
    return it == swapped.end() ? i : it->second;
  };
  std::vector<int64_t> out;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = uniform(i, n - 1);
    const int64_t vi = at(i), vj = at(j);
    swapped[j] = vi;
    out.push_back(vj);
  }
  return out;
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  Rng r(a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull));
  r.next();
  return r.next();
}

uint64_t hash_string(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string random_number(Rng& rng, int digits) {
  int64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  return std::to_string(rng.uniform(lo, lo * 10 - 1));
}

std::string random_uuid4(Rng& rng) {
  uint64_t hi = rng.next(), lo = rng.next();
  hi = (hi & ~0xF000ull) | 0x4000ull;                      // version 4
  lo = (lo & ~(3ull << 62)) | (2ull << 62);                // variant 10
  const std::string h = fmt::format("{:016x}{:016x}", hi, lo);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

std::string random_upper(Rng& rng, int length) {
  std::string s;
  for (int i = 0; i < length; ++i) s += char('A' + rng.uniform(0, 25));
  return s;
}

namespace {
std::mutex g_data_mutex;
std::map<std::string, std::string> g_files;
std::map<std::string, std::vector<std::string>> g_lists;
}  // namespace

const std::string& read_data_file(const std::string& data_dir, const std::string& relative) {
  const std::string path = data_dir + "/" + relative;
  std::lock_guard<std::mutex> lock(g_data_mutex);
  auto it = g_files.find(path);
  if (it != g_files.end()) return it->second;
  std::ifstream f(path, std::ios::binary);
  SR_CHECK(f.good(), "evaluation data '{}' is missing: run `make data` (tools/fetch_data.py) first, "
                     "or point --data-dir at its output", path);
  std::stringstream ss;
  ss << f.rdbuf();
  SR_CHECK(!ss.str().empty(), "evaluation data '{}' is empty: rerun `make data`", path);
  return g_files.emplace(path, ss.str()).first->second;
}

static const std::vector<std::string>& cached_list(const std::string& key,
                                                   const std::function<std::vector<std::string>()>& make) {
  {
    std::lock_guard<std::mutex> lock(g_data_mutex);
    auto it = g_lists.find(key);
    if (it != g_lists.end()) return it->second;
  }
  std::vector<std::string> v = make();
  std::lock_guard<std::mutex> lock(g_data_mutex);
  return g_lists.emplace(key, std::move(v)).first->second;
}

const std::vector<std::string>& essay_words(const std::string& data_dir) {
  return cached_list("essay:" + data_dir, [&] {
    return text::split_ws(read_data_file(data_dir, "essays/paul_graham_essays.txt"));
  });
}

const std::vector<std::string>& word_list(const std::string& data_dir, const std::string& name) {
  return cached_list("words:" + data_dir + ":" + name, [&] {
    auto words = text::split_on(read_data_file(data_dir, "words/" + name + ".txt"), "\n");
    std::vector<std::string> out;
    for (auto& w : words)
      if (!text::strip(w).empty()) out.push_back(text::strip(w));
    SR_CHECK(!out.empty(), "word list data/words/{}.txt has no words: rerun `make data`", name);
    return out;
  });
}

std::string random_adjective_noun(Rng& rng, const std::string& data_dir) {
  const auto& adjs = word_list(data_dir, "adjectives");
  const auto& nouns = word_list(data_dir, "nouns");
  const auto& a = adjs[size_t(rng.uniform(0, int64_t(adjs.size()) - 1))];
  const auto& n = nouns[size_t(rng.uniform(0, int64_t(nouns.size()) - 1))];
  return a + "-" + n;
}

std::vector<std::string> split_sentences(const std::string& t) {
  std::vector<std::string> out;
  size_t begin = 0, i = 0;
  while (i < t.size()) {
    const char c = t[i++];
    if (c != '.' && c != '!' && c != '?') continue;
    while (i < t.size() && (t[i] == '"' || t[i] == '\'' || t[i] == ')' || t[i] == ']')) ++i;
    if (i < t.size() && !text::is_space(static_cast<unsigned char>(t[i]))) continue;
    const std::string s = text::strip(std::string_view(t).substr(begin, i - begin));
    if (!s.empty()) out.push_back(s);
    begin = i;
  }
  const std::string rest = text::strip(std::string_view(t).substr(begin));
  if (!rest.empty()) out.push_back(rest);
  return out;
}

FitResult fit_to_budget(const std::function<Built(int64_t)>& build, const TokenCounter& count, int64_t budget,
                        int64_t min_units, int64_t max_units, const std::string& task) {
  auto eval = [&](int64_t n) {
    FitResult r;
    r.built = build(n);
    r.units = n;
    r.tokens = count(r.built.prompt + r.built.answer_prefix);
    return r;
  };
  FitResult lo = eval(min_units);
  SR_CHECK(lo.tokens <= budget,
           "{}: a context of {} tokens is too short: the prompt with its smallest haystack ({} units) "
           "already takes {} tokens",
           task, budget, min_units, lo.tokens);
  if (max_units <= min_units) return lo;
  // A probe gives tokens per unit; the bracket [lo fits, hi does not] is then narrowed by
  // interpolation, with a bisection every other step so that a bad guess cannot stall it.
  const int64_t t0 = lo.tokens;
  const int64_t probe_n = std::min(max_units, min_units + 256);
  FitResult probe = eval(probe_n);
  int64_t hi_n = -1, hi_tokens = 0;
  if (probe.tokens > budget) {
    hi_n = probe.units;
    hi_tokens = probe.tokens;
  } else {
    lo = std::move(probe);
    if (lo.units == max_units) return lo;
    const double rate = std::max(1e-6, double(lo.tokens - t0) / double(lo.units - min_units));
    int64_t guess = lo.units + int64_t(double(budget - lo.tokens) / rate * 1.02) + 8;
    while (hi_n < 0) {
      guess = std::min(guess, max_units);
      FitResult g = eval(guess);
      if (g.tokens > budget) {
        hi_n = guess;
        hi_tokens = g.tokens;
      } else {
        lo = std::move(g);
        if (guess == max_units) return lo;
        guess = lo.units + std::max<int64_t>(16, (lo.units - min_units) / 8);
      }
    }
  }
  bool bisect = false;
  while (hi_n - lo.units > 1) {
    int64_t mid;
    if (bisect) {
      mid = lo.units + (hi_n - lo.units) / 2;
    } else {
      const double f = double(budget - lo.tokens) / double(std::max<int64_t>(1, hi_tokens - lo.tokens));
      mid = lo.units + int64_t(f * double(hi_n - lo.units));
    }
    mid = std::clamp(mid, lo.units + 1, hi_n - 1);
    bisect = !bisect;
    FitResult m = eval(mid);
    if (m.tokens <= budget) {
      lo = std::move(m);
    } else {
      hi_n = mid;
      hi_tokens = m.tokens;
    }
  }
  return lo;
}

const std::vector<double>& ruler_depth_grid() {
  static const std::vector<double> grid = [] {
    std::vector<double> g;
    for (int i = 0; i < 40; ++i) g.push_back(std::nearbyint(100.0 * i / 39.0) / 100.0);
    return g;
  }();
  return grid;
}

TaskSample finish_sample(const SampleSpec& s, FitResult fit, std::vector<std::string> answers, Metric metric,
                         int max_new_tokens) {
  TaskSample t;
  t.id = fmt::format("{}-{}-s{}-{}", s.task, s.options->context_tokens, s.options->seed, s.index);
  t.task = s.task;
  t.prompt = std::move(fit.built.prompt);
  t.answer_prefix = std::move(fit.built.answer_prefix);
  t.context_begin = fit.built.context_begin;
  t.context_end = fit.built.context_end;
  t.answers = std::move(answers);
  t.metric = metric;
  t.max_new_tokens = max_new_tokens;
  t.needles = std::move(fit.built.needles);
  t.target_tokens = s.options->context_tokens;
  t.prompt_tokens = fit.tokens;
  t.metadata = std::move(fit.built.metadata);
  t.metadata["haystack_units"] = fit.units;
  t.metadata["requested_depth"] = s.depth;
  if (s.options->needle_token_offsets)
    for (Needle& n : t.needles) n.token_offset = (*s.count)(t.prompt.substr(0, size_t(n.char_offset)));
  return t;
}

}  // namespace sinkrouter::eval::detail
