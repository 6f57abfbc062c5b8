#include "model/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

// Unicode White_Space, the set Oniguruma (Hugging Face tokenizers) matches with \s.
// PCRE2's UCP \s also matches U+180E (Mongolian vowel separator, no longer White_Space
// since Unicode 6.3), so the patterns below spell the set out.
#define SR_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" SR_WS "\\p{L}\\p{N}]+"
    "|[" SR_WS "]+(?![^" SR_WS "])|[" SR_WS "]+";

// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//          | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^" SR_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" SR_WS "]*[\\r\\n]+|[" SR_WS "]+(?![^" SR_WS "])"
    "|[" SR_WS "]+";

#undef SR_WS

constexpr const char* kDigitPattern = "\\p{N}";

struct NameAndPatterns {
  const char* name;
  std::vector<const char*> patterns;
};

const std::vector<NameAndPatterns>& known() {
  static const std::vector<NameAndPatterns> k = {
      {"smollm", {kDigitPattern, kGpt2Pattern}},
      {"llama-bpe", {kLlama3Pattern}},
      {"llama3", {kLlama3Pattern}},
      {"llama-v3", {kLlama3Pattern}},
      {"gpt2", {kGpt2Pattern}},
  };
  return k;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

// One compiled regex (JIT-compiled when PCRE2 supports it here).
struct PreTokenizer::Stage {
  pcre2_code* code = nullptr;
  std::string pattern;

  explicit Stage(const char* p) : pattern(p) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                         &err, &offset, nullptr);
    SR_CHECK(code != nullptr, "pre-tokeniser: regex does not compile at offset {}: {}", size_t(offset),
             pcre2_message(err));
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  }
  ~Stage() { pcre2_code_free(code); }
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  // Appends the matches of this regex in `piece` and the gaps between them to out.
  void split(std::string_view piece, pcre2_match_data* md, std::vector<std::string_view>& out) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
    size_t pos = 0, gap_start = 0;
    while (pos < piece.size()) {
      // The caller checked UTF-8 validity once for the whole text.
      const int rc = pcre2_match(code, subject, piece.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      SR_CHECK(rc >= 0, "pre-tokeniser: regex match failed: {}", pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t start = ov[0], end = ov[1];
      if (end == start) {  // no pattern here matches empty; step one character if one did
        end = start + 1;
        while (end < piece.size() && (uint8_t(piece[end]) & 0xC0) == 0x80) ++end;
        pos = end;
        continue;
      }
      if (start > gap_start) out.push_back(piece.substr(gap_start, start - gap_start));
      out.push_back(piece.substr(start, end - start));
      pos = gap_start = end;
    }
    if (gap_start < piece.size()) out.push_back(piece.substr(gap_start));
  }
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

std::vector<std::string> PreTokenizer::supported_names() {
  std::vector<std::string> names;
  for (const auto& k : known()) names.push_back(k.name);
  return names;
}

PreTokenizer PreTokenizer::create(const std::string& name) {
  for (const auto& k : known()) {
    if (name != k.name) continue;
    PreTokenizer p;
    p.name_ = name;
    for (const char* pattern : k.patterns) p.stages_.push_back(std::make_unique<Stage>(pattern));
    return p;
  }
  fail("tokenizer: pre-tokeniser \"{}\" is not supported (supported: {})", name,
       fmt::join(supported_names(), ", "));
}

std::vector<std::string_view> PreTokenizer::split(std::string_view text) const {
  SR_CHECK(!stages_.empty(), "pre-tokeniser: used before create()");
  std::vector<std::string_view> pieces{text}, next;
  if (text.empty()) return {};
  // Match data sized for the largest pattern; one per call keeps split() thread-safe.
  pcre2_match_data* md = pcre2_match_data_create(4, nullptr);
  SR_CHECK(md != nullptr, "pre-tokeniser: out of memory");
  try {
    for (const auto& stage : stages_) {
      next.clear();
      next.reserve(pieces.size() + text.size() / 4);
      for (std::string_view piece : pieces) stage->split(piece, md, next);
      pieces.swap(next);
    }
  } catch (...) {
    pcre2_match_data_free(md);
    throw;
  }
  pcre2_match_data_free(md);
  return pieces;
}

}  // namespace sinkrouter
