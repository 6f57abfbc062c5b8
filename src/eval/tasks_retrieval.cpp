// Passkey (Landmark Attention), and InfiniteBench's number_string and kv_retrieval, in
// their original prompt formats (InfiniteBench: the template it uses for open models,
// src/prompt.py, whose last line is the answer cue).
#include <cmath>

#include "eval/task_support.h"
#include "eval/text_util.h"

namespace sinkrouter::eval::detail {
namespace {

constexpr const char* kGarbage = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// The first n characters of " ".join([garbage] * infinity), as Landmark slices it.
std::string garbage_chars(int64_t n) {
  const std::string unit = std::string(kGarbage) + " ";
  std::string out;
  out.reserve(size_t(n));
  while (int64_t(out.size()) < n) out += unit;
  out.resize(size_t(n));
  return out;
}

int64_t depth_index(double depth, int64_t n) { return std::min<int64_t>(n, int64_t(std::floor(depth * double(n)))); }

}  // namespace

TaskSample make_passkey(const SampleSpec& s) {
  Rng rng(s.seed);
  const std::string key = std::to_string(rng.uniform(1, 50000));
  const std::string info = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  auto build = [&](int64_t n_garbage) {
    const int64_t n_prefix = std::llround(s.depth * double(n_garbage));
    Built b;
    b.prompt = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
               "I will quiz you about the important information there.\n";
    b.context_begin = int64_t(b.prompt.size());
    b.prompt += garbage_chars(n_prefix) + "\n";
    Needle needle{info, int64_t(b.prompt.size()), -1, n_garbage ? double(n_prefix) / double(n_garbage) : 0.0, true};
    b.prompt += info + "\n" + garbage_chars(n_garbage - n_prefix);
    b.context_end = int64_t(b.prompt.size());
    b.prompt += "\nWhat is the pass key?";
    b.answer_prefix = " The pass key is";
    b.needles.push_back(needle);
    b.metadata["haystack"] = "landmark_garbage_chars";
    return b;
  };
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 0, int64_t(1) << 26, s.task);
  return finish_sample(s, std::move(fit), {key}, Metric::LandmarkPasskey, 10);
}

TaskSample make_number_string(const SampleSpec& s) {
  Rng rng(s.seed);
  // InfiniteBench: five random digits, then five times a digit duplicated in place.
  std::string digits;
  for (int k = 0; k < 5; ++k) digits += char('0' + rng.uniform(0, 9));
  for (int k = 0; k < 5; ++k) {
    const size_t pos = size_t(rng.uniform(0, 5 + k - 1));
    digits.insert(pos, 1, digits[pos]);
  }
  const std::string noise = std::string(kGarbage) + "\n";
  const std::string info = "The sequence of digits is " + digits + ". Remember it. " + digits +
                           " is the sequence of digits.\n";
  auto build = [&](int64_t n_lines) {
    const int64_t before = depth_index(s.depth, n_lines);
    Built b;
    b.prompt = "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you "
               "about the important information there.\n\n";
    b.context_begin = int64_t(b.prompt.size());
    for (int64_t i = 0; i < before; ++i) b.prompt += noise;
    b.needles.push_back({info, int64_t(b.prompt.size()), -1, n_lines ? double(before) / double(n_lines) : 0.0, true});
    b.prompt += info;
    for (int64_t i = before; i < n_lines; ++i) b.prompt += noise;
    b.context_end = int64_t(b.prompt.size());
    b.prompt += "\n\nWhat is the sequence of digits?";
    b.answer_prefix = "\n\nThe sequence of digits is";
    b.metadata["haystack"] = "noise_lines";
    return b;
  };
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 0, int64_t(1) << 22, s.task);
  return finish_sample(s, std::move(fit), {digits}, Metric::FirstIntMatch, 12);
}

TaskSample make_kv_retrieval(const SampleSpec& s) {
  Rng rng(s.seed);
  const std::string key = random_uuid4(rng), value = random_uuid4(rng);
  const std::string needle_text = "\"" + key + "\": \"" + value + "\"";
  // Distractor record i depends on the sample and i only, so a longer context keeps the
  // shorter one's records.
  auto record = [&](int64_t i) {
    Rng r(mix_seed(s.seed, uint64_t(i) + 1));
    const std::string k = random_uuid4(r);
    return "\"" + k + "\": \"" + random_uuid4(r) + "\"";
  };
  auto build = [&](int64_t n_records) {
    const int64_t distractors = n_records - 1;
    const int64_t at = depth_index(s.depth, distractors);
    Built b;
    b.prompt = "Extract the value corresponding to the specified key in the JSON object below.\n\n";
    b.context_begin = int64_t(b.prompt.size());
    b.prompt += "JSON data:\n{";
    for (int64_t i = 0; i <= distractors; ++i) {
      if (i) b.prompt += ", ";
      if (i == at) {
        b.needles.push_back({needle_text, int64_t(b.prompt.size()), -1,
                             distractors ? double(at) / double(n_records) : 0.0, true});
        b.prompt += needle_text;
      } else {
        b.prompt += record(i < at ? i : i - 1);
      }
    }
    b.prompt += "}";
    b.context_end = int64_t(b.prompt.size());
    b.prompt += "\n\n\nKey: \"" + key + "\"";
    b.answer_prefix = "\nThe value associated with the specified key is: ";
    b.metadata["haystack"] = "json_uuid_records";
    return b;
  };
  FitResult fit = fit_to_budget(build, *s.count, s.budget, 1, int64_t(1) << 20, s.task);
  return finish_sample(s, std::move(fit), {value}, Metric::KvRetrieval, 50);
}

}  // namespace sinkrouter::eval::detail
