// GPT-2 byte-level BPE built from GGUF metadata (tokenizer.ggml.*), with the `smollm`,
// `llama-bpe` (Llama 3) and `gpt2` pre-tokenisers. Special tokens (types 3 and 4) are
// matched literally before pre-tokenising. Facts: ../shared/REFERENCE.md section 4.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sinkrouter {

class GGUFFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Tokenizer {
 public:
  // Error for tokenizer models we do not implement (e.g. SentencePiece "llama": said so).
  static Tokenizer from_gguf(const GGUFFile& file);
  // Direct construction (tests): tokens, types (1 normal, 3 control, 4 user-defined, 6 byte...),
  // merges "A B" in rank order, pre-tokeniser name.
  static Tokenizer from_vocab(std::vector<std::string> tokens, std::vector<int32_t> types,
                              std::vector<std::string> merges, const std::string& pre,
                              int32_t bos, int32_t eos);

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // add_bos: prepend BOS when the model asks for it (tokenizer.ggml.add_bos_token).
  std::vector<int32_t> encode(const std::string& text, bool add_bos = false,
                              bool parse_special = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of one token (byte-level symbols mapped back to bytes).
  std::string token_bytes(int32_t id) const;
  const std::string& token_text(int32_t id) const;  // as stored in the vocabulary

  int32_t vocab_size() const;
  int32_t bos() const;
  int32_t eos() const;
  bool add_bos() const;
  bool is_end_of_generation(int32_t id) const;  // eos, <|im_end|>, <|eot_id|>, ...

  // Chat prompt per the model's template (ChatML for SmolLM2, Llama 3 headers); Error
  // for a template we do not recognise. The text is what the Jinja template renders, so
  // for Llama 3 it starts with the BOS text ("<|begin_of_text|>").
  std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt = true) const;
  // The chat prompt's ids: special tokens parsed, BOS added only where the model asks for
  // it and the rendered text does not already start with it (as transformers'
  // apply_chat_template(tokenize=True) does for Llama 3).
  std::vector<int32_t> encode_chat(const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt = true) const;
  const std::string& chat_template() const;      // tokenizer.chat_template ("" when absent)
  void set_chat_template(std::string jinja);     // e.g. for a model without one
  void set_add_bos(bool add_bos);                // override tokenizer.ggml.add_bos_token
  int32_t token_type(int32_t id) const;          // 1 normal, 3 control, 4 user-defined, ...
  const std::string& pre_tokenizer() const;      // "smollm", "llama-bpe", "gpt2"

  // Streams text while ids arrive: holds back bytes of a UTF-8 character split across
  // tokens until it is complete.
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& t) : tok_(&t) {}
    std::string push(int32_t id);
    std::string flush();  // whatever is left (invalid bytes become U+FFFD)

   private:
    const Tokenizer* tok_;
    std::string pending_;
  };

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sinkrouter
