// GGUFValue: checked conversions (errors name the key and the actual type) and the
// one-line display `sinkrouter inspect` prints.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

using T = GGUFValue::Type;

bool is_unsigned(T t) { return t == T::U8 || t == T::U16 || t == T::U32 || t == T::U64; }
bool is_signed(T t) { return t == T::I8 || t == T::I16 || t == T::I32 || t == T::I64; }
bool is_float(T t) { return t == T::F32 || t == T::F64; }

std::string label(const std::string& key) {
  return key.empty() ? std::string("metadata value") : fmt::format("metadata key '{}'", key);
}

std::string type_label(const GGUFValue& v) {
  if (v.type != T::ARRAY) return gguf_value_type_name(v.type);
  return fmt::format("array of {}", gguf_value_type_name(v.array_type));
}

[[noreturn]] void wrong_type(const GGUFValue& v, const std::string& key, const char* expected) {
  fail("{} has type {} (expected {})", label(key), type_label(v), expected);
}

// Printable, quoted, control characters escaped; long strings are cut with their size.
std::string quote(const std::string& s) {
  constexpr size_t kMaxShown = 160;
  std::string out = "\"";
  const size_t shown = std::min(s.size(), kMaxShown);
  for (size_t i = 0; i < shown; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else out += char(c);
    }
  }
  out += '"';
  if (shown < s.size()) out += fmt::format("... ({} bytes)", s.size());
  return out;
}

}  // namespace

const char* gguf_value_type_name(GGUFValue::Type t) {
  switch (t) {
    case T::U8: return "u8";
    case T::I8: return "i8";
    case T::U16: return "u16";
    case T::I16: return "i16";
    case T::U32: return "u32";
    case T::I32: return "i32";
    case T::F32: return "f32";
    case T::BOOL: return "bool";
    case T::STRING: return "string";
    case T::ARRAY: return "array";
    case T::U64: return "u64";
    case T::I64: return "i64";
    case T::F64: return "f64";
  }
  return "unknown";
}

uint64_t GGUFValue::as_u64(const std::string& key) const {
  if (is_unsigned(type)) return u;
  if (is_signed(type)) {
    SR_CHECK(i >= 0, "{} is {} (expected a non-negative integer)", label(key), i);
    return uint64_t(i);
  }
  wrong_type(*this, key, "an integer");
}

int64_t GGUFValue::as_i64(const std::string& key) const {
  if (is_signed(type)) return i;
  if (is_unsigned(type)) {
    SR_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), "{} is {} (expected at most 2^63-1)",
             label(key), u);
    return int64_t(u);
  }
  wrong_type(*this, key, "an integer");
}

double GGUFValue::as_f64(const std::string& key) const {
  if (is_float(type)) return f;
  if (is_unsigned(type)) return double(u);
  if (is_signed(type)) return double(i);
  wrong_type(*this, key, "a number");
}

bool GGUFValue::as_bool(const std::string& key) const {
  if (type != T::BOOL) wrong_type(*this, key, "bool");
  return u != 0;
}

const std::string& GGUFValue::as_string(const std::string& key) const {
  if (type != T::STRING) wrong_type(*this, key, "string");
  return s;
}

std::vector<std::string> GGUFValue::as_strings(const std::string& key) const {
  if (type != T::ARRAY || array_type != T::STRING) wrong_type(*this, key, "array of string");
  std::vector<std::string> out;
  out.reserve(array.size());
  for (const GGUFValue& e : array) out.push_back(e.s);
  return out;
}

std::vector<int64_t> GGUFValue::as_ints(const std::string& key) const {
  if (type != T::ARRAY || !(is_signed(array_type) || is_unsigned(array_type)))
    wrong_type(*this, key, "array of integers");
  std::vector<int64_t> out;
  out.reserve(array.size());
  for (const GGUFValue& e : array) out.push_back(e.as_i64(key));
  return out;
}

std::vector<double> GGUFValue::as_floats(const std::string& key) const {
  if (type != T::ARRAY || !(is_float(array_type) || is_signed(array_type) || is_unsigned(array_type)))
    wrong_type(*this, key, "array of numbers");
  std::vector<double> out;
  out.reserve(array.size());
  for (const GGUFValue& e : array) out.push_back(e.as_f64(key));
  return out;
}

std::string GGUFValue::to_display(size_t max_items) const {
  switch (type) {
    case T::U8: case T::U16: case T::U32: case T::U64: return fmt::format("{}", u);
    case T::I8: case T::I16: case T::I32: case T::I64: return fmt::format("{}", i);
    case T::F32: return fmt::format("{}", float(f));  // shortest text that reads back as the f32
    case T::F64: return fmt::format("{}", f);
    case T::BOOL: return u ? "true" : "false";
    case T::STRING: return quote(s);
    case T::ARRAY: {
      std::string out = "[";
      const size_t shown = std::min(array.size(), max_items);
      for (size_t k = 0; k < shown; ++k) {
        if (k) out += ", ";
        out += array[k].to_display(max_items);
      }
      if (shown < array.size()) out += fmt::format("{}... ({} items)", shown ? ", " : "", array.size());
      return out + "]";
    }
  }
  return "?";
}

}  // namespace sinkrouter
