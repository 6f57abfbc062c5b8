// Small string helpers shared by the scorers, loaders and generators: Python's notion of
// whitespace, str.split() / str.strip(), ASCII case folding, UTF-8 code points.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sinkrouter::eval::text {

// Python's str.isspace() on ASCII: space, \t \n \v \f \r and the separators \x1c-\x1f.
inline bool is_space(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_alnum(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string lower(std::string_view s);  // ASCII letters only
std::string upper(std::string_view s);
std::string strip(std::string_view s);                          // str.strip()
std::string lstrip_chars(std::string_view s, std::string_view chars);  // str.lstrip(chars)
std::vector<std::string> split_ws(std::string_view s);          // str.split()
std::vector<std::string> split_on(std::string_view s, std::string_view sep);  // str.split(sep)
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool contains(std::string_view haystack, std::string_view needle);
std::string replace_all(std::string s, std::string_view from, std::string_view to);
// Every maximal run of ASCII digits, in order (Python re.findall(r"\d+") on ASCII).
std::vector<std::string> digit_runs(std::string_view s);
// UTF-8 to code points; an invalid byte becomes one code point 0xDC00 + byte.
std::vector<uint32_t> code_points(std::string_view s);
// Number of times `needle` occurs in `haystack` (non-overlapping).
int64_t count_occurrences(std::string_view haystack, std::string_view needle);

}  // namespace sinkrouter::eval::text
