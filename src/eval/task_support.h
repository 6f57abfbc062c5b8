// What the task generators share: a portable RNG (the same numbers on every platform and
// standard library), the texts of data/, sentence splitting, and fitting a haystack to a
// token budget.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sinkrouter/eval/tasks.h"

namespace sinkrouter::eval::detail {

// splitmix64: small, portable, well mixed. Distributions are written out here because
// std::uniform_int_distribution differs between standard libraries.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi] (rejection sampling, no modulo bias).
  int64_t uniform(int64_t lo, int64_t hi);
  double uniform01() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(uniform(0, int64_t(i) - 1))]);
  }
  // k distinct values of [0, n), in random order.
  std::vector<int64_t> sample(int64_t n, int64_t k);

 private:
  uint64_t state_;
};

uint64_t mix_seed(uint64_t a, uint64_t b);
uint64_t hash_string(const std::string& s);

std::string random_number(Rng& rng, int digits);  // RULER: uniform in [10^(d-1), 10^d - 1]
std::string random_uuid4(Rng& rng);               // lowercase 8-4-4-4-12, version 4
std::string random_upper(Rng& rng, int length);    // RULER's VT variable names

// data/ texts, read once per path and cached. Errors name the file and `make data`.
const std::string& read_data_file(const std::string& data_dir, const std::string& relative);
const std::vector<std::string>& essay_words(const std::string& data_dir);        // PG essays, whitespace split
const std::vector<std::string>& word_list(const std::string& data_dir, const std::string& name);  // nouns, ...
// RULER's NIAH word keys are "adjective-noun" pairs drawn uniformly from all pairs of
// wonderwords' lists (RULER lists the 6.2 million pairs; drawing each half is the same
// distribution without the list).
std::string random_adjective_noun(Rng& rng, const std::string& data_dir);

// Splits text into sentences at '.', '!' or '?' (closing quotes/brackets included) that are
// followed by whitespace; an approximation of NLTK's sent_tokenize, which RULER uses to
// place needles between sentences.
std::vector<std::string> split_sentences(const std::string& text);

// One haystack size's prompt; needles carry offsets into prompt.
struct Built {
  std::string prompt;
  std::string answer_prefix;
  int64_t context_begin = 0, context_end = 0;
  std::vector<Needle> needles;
  nlohmann::json metadata = nlohmann::json::object();
};

struct FitResult {
  Built built;
  int64_t units = 0;   // haystack units used
  int64_t tokens = 0;  // counter(prompt + answer_prefix)
};

// Largest n in [min_units, max_units] with count(build(n)) <= budget; the count is assumed
// nondecreasing in n (true up to tokenizer merges at the seams, which only make the
// result slightly short). Throws Error when build(min_units) is already over budget.
FitResult fit_to_budget(const std::function<Built(int64_t)>& build, const TokenCounter& count, int64_t budget,
                        int64_t min_units, int64_t max_units, const std::string& task);

// RULER's depth grid: round(linspace(0, 100, 40)) / 100.
const std::vector<double>& ruler_depth_grid();

// Builders, one per family (tasks_retrieval.cpp, tasks_niah.cpp, tasks_ruler.cpp).
struct SampleSpec {
  std::string task;
  const TaskOptions* options;
  const TokenCounter* count;
  int index;
  uint64_t seed;  // of this sample: mix of the run seed, the task and the index
  double depth;   // scheduled depth of the (first) queried needle
  int64_t budget; // context_tokens - reserved_tokens
};

TaskSample make_passkey(const SampleSpec& s);
TaskSample make_number_string(const SampleSpec& s);
TaskSample make_kv_retrieval(const SampleSpec& s);
TaskSample make_niah(const SampleSpec& s);
TaskSample make_variable_tracking(const SampleSpec& s);
TaskSample make_common_words(const SampleSpec& s);

// Fills the fields every generator fills the same way from a fit.
TaskSample finish_sample(const SampleSpec& s, FitResult fit, std::vector<std::string> answers, Metric metric,
                         int max_new_tokens);

}  // namespace sinkrouter::eval::detail
