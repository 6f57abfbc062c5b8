// Regex pre-tokenisers for byte-level BPE: cut text into pieces that BPE merges never
// cross. A pre-tokeniser is a list of stages; each stage runs one regex over every piece
// of the previous stage and keeps both the matches and the unmatched gaps between them
// as pieces (Hugging Face's Split(behavior="isolated"), llama.cpp's unicode_regex_split).
//
//   "smollm"     \p{N} (each digit alone), then the GPT-2 pattern (SmolLM2's
//                Digits(individual_digits) + ByteLevel)
//   "llama-bpe"  the Llama 3 pattern (aliases "llama3", "llama-v3")
//   "gpt2"       the GPT-2 pattern (also used when a GGUF names no pre-tokeniser)
//
// Regexes run in PCRE2 with UTF and UCP (Unicode \p{L}, \p{N}); whitespace is spelled
// out as Unicode White_Space, which is what Hugging Face's Oniguruma calls \s.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sinkrouter {

class PreTokenizer {
 public:
  // Error listing the supported names for anything else.
  static PreTokenizer create(const std::string& name);
  static std::vector<std::string> supported_names();

  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  const std::string& name() const { return name_; }

  // Pieces of `text` (valid UTF-8: the caller checks), in order; they concatenate to
  // `text`. The views point into `text`.
  std::vector<std::string_view> split(std::string_view text) const;

 private:
  struct Stage;
  std::string name_;
  std::vector<std::unique_ptr<Stage>> stages_;
};

}  // namespace sinkrouter
