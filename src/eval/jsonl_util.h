// Internal helpers of the JSONL loaders (longbench.cpp, infinitebench.cpp, datasets.cpp).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sinkrouter::eval::detail {

struct JsonLine {
  int64_t line = 0;  // 1-based
  nlohmann::json value;
};

// Every non-blank line parsed; Error with the file and line for invalid JSON or a line
// that is not an object, and for an empty file.
std::vector<JsonLine> read_jsonl(const std::string& path);

// The file name without directories and without `suffix`.
std::string file_stem(const std::string& path, const std::string& suffix);

// Python's str.format for named fields: every "{name}" is replaced once (substituted
// text is not scanned again); a field missing from `fields` is an Error.
std::string format_fields(const std::string& tmpl, const std::map<std::string, std::string>& fields,
                          const std::string& where);

// A JSON string field, or the text of a number; Error naming the field, file and line.
std::string string_field(const JsonLine& l, const char* field, const std::string& path);
// A string, a number, or a list of them, as strings (Python's str() for numbers).
std::vector<std::string> string_list(const nlohmann::json& v);

}  // namespace sinkrouter::eval::detail
