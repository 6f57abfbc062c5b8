// What the LongBench and InfiniteBench loaders share: JSONL reading, placeholder
// formatting, middle truncation and per-sample scoring.
#include "eval/jsonl_util.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include "eval/text_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/datasets.h"

namespace sinkrouter::eval {
namespace detail {

std::vector<JsonLine> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  SR_CHECK(f.good(), "cannot open '{}' (expected a JSONL file, one JSON object per line)", path);
  std::vector<JsonLine> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (text::strip(line).empty()) continue;
    JsonLine l;
    l.line = n;
    try {
      l.value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: invalid JSON ({})", path, n, e.what());
    }
    SR_CHECK(l.value.is_object(), "{}:{}: expected a JSON object, got {}", path, n, l.value.type_name());
    out.push_back(std::move(l));
  }
  SR_CHECK(!out.empty(), "'{}' has no JSON lines", path);
  return out;
}

std::string file_stem(const std::string& path, const std::string& suffix) {
  std::string name = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    name.resize(name.size() - suffix.size());
  return name;
}

std::string format_fields(const std::string& tmpl, const std::map<std::string, std::string>& fields,
                          const std::string& where) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    SR_CHECK(close != std::string::npos, "{}: unclosed '{{' in the prompt template", where);
    const std::string name = tmpl.substr(i + 1, close - i - 1);
    auto it = fields.find(name);
    SR_CHECK(it != fields.end(), "{}: the prompt needs the field '{}', which the line does not have", where, name);
    out += it->second;
    i = close + 1;
  }
  return out;
}

static std::string number_text(const nlohmann::json& v) {
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  const double d = v.get<double>();
  // Python's str(float) for the values these data sets hold (e.g. 3.5, 42.0).
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::vector<std::string> string_list(const nlohmann::json& v) {
  std::vector<std::string> out;
  if (v.is_string()) return {v.get<std::string>()};
  if (v.is_number()) return {number_text(v)};
  if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_array()) {  // InfiniteBench's math_calc nests its list once
        for (const auto& x : string_list(e)) out.push_back(x);
      } else if (e.is_string()) {
        out.push_back(e.get<std::string>());
      } else if (e.is_number()) {
        out.push_back(number_text(e));
      }
    }
  }
  return out;
}

std::string string_field(const JsonLine& l, const char* field, const std::string& path) {
  auto it = l.value.find(field);
  SR_CHECK(it != l.value.end(), "{}:{}: missing field \"{}\"", path, l.line, field);
  if (it->is_number()) return number_text(*it);
  SR_CHECK(it->is_string(), "{}:{}: field \"{}\" is {} (expected a string)", path, l.line, field, it->type_name());
  return it->get<std::string>();
}

}  // namespace detail

std::string truncate_middle(const std::string& text, int64_t max_tokens,
                            const std::function<std::vector<int32_t>(const std::string&)>& encode,
                            const std::function<std::string(const std::vector<int32_t>&)>& decode) {
  SR_CHECK(max_tokens >= 2, "truncate_middle: a budget of {} tokens cannot keep both ends", max_tokens);
  const std::vector<int32_t> ids = encode(text);
  if (int64_t(ids.size()) <= max_tokens) return text;
  const size_t half = size_t(max_tokens / 2);
  return decode(std::vector<int32_t>(ids.begin(), ids.begin() + long(half))) +
         decode(std::vector<int32_t>(ids.end() - long(half), ids.end()));
}

double score_sample(const TaskSample& sample, const std::string& prediction) {
  std::string p = prediction;
  if (sample.metadata.value("first_line_only", false)) p = text::split_on(text::lstrip_chars(p, "\n"), "\n")[0];
  return score_prediction(sample.metric, p, sample.answers, sample.all_classes);
}

}  // namespace sinkrouter::eval
