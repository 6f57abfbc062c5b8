// Tokenizer::from_gguf on synthetic GGUF files (tests/common/gguf_writer.h): which keys
// it reads, the defaults when keys are absent, and clear errors for tokenizers we do not
// support and for inconsistent metadata. The real SmolLM2 file is covered by
// tokenizer_vectors_test.cpp.
#include <gtest/gtest.h>

#include <functional>

#include "common/gguf_writer.h"
#include "model/unicode_bytes.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"
#include "sinkrouter/model/tokenizer.h"

namespace sinkrouter {
namespace {

using namespace testing;  // the GGUF writer helpers
using VT = GGUFValue::Type;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// A small gpt2-style vocabulary: 256 byte symbols, "h e" -> "he", "he y" -> "hey", and
// three control tokens. Keys can be dropped or replaced per test.
struct TokenizerFile {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::pair<std::string, GGUFValue>> kvs;

  TokenizerFile() {
    for (int b = 0; b < 256; ++b) tokens.push_back(unicode::byte_symbol(uint8_t(b)));
    tokens.insert(tokens.end(), {"he", "hey", "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"});
    types.assign(tokens.size(), 1);
    types[258] = types[259] = types[260] = 3;
    set("general.architecture", gguf_string("llama"));
    set("tokenizer.ggml.model", gguf_string("gpt2"));
    set("tokenizer.ggml.pre", gguf_string("llama-bpe"));
    set("tokenizer.ggml.tokens", gguf_strings(tokens));
    set("tokenizer.ggml.token_type", gguf_i32s(types));
    set("tokenizer.ggml.merges", gguf_strings({"h e", "he y"}));
    set("tokenizer.ggml.bos_token_id", gguf_u32(258));
    set("tokenizer.ggml.eos_token_id", gguf_u32(259));
  }
  void set(const std::string& key, GGUFValue v) {
    drop(key);
    kvs.emplace_back(key, std::move(v));
  }
  void drop(const std::string& key) {
    for (size_t i = 0; i < kvs.size(); ++i) {
      if (kvs[i].first == key) kvs.erase(kvs.begin() + i);
    }
  }
  Tokenizer load() const {
    GGUFBuilder b;
    for (const auto& [k, v] : kvs) b.kv(k, v);
    const std::vector<uint8_t> bytes = b.build();
    return Tokenizer::from_gguf(GGUFFile::from_bytes(bytes.data(), bytes.size(), "tok.gguf"));
  }
};

TEST(TokenizerFromGguf, ReadsVocabularyMergesAndSpecialIds) {
  TokenizerFile f;
  f.set("tokenizer.chat_template", gguf_string("{{ bos_token }}<|start_header_id|>x<|end_header_id|><|eot_id|>"));
  const Tokenizer t = f.load();
  EXPECT_EQ(t.vocab_size(), 261);
  EXPECT_EQ(t.bos(), 258);
  EXPECT_EQ(t.eos(), 259);
  EXPECT_EQ(t.pre_tokenizer(), "llama-bpe");
  EXPECT_TRUE(t.add_bos());  // llama-bpe without add_bos_token: BOS, as llama.cpp
  EXPECT_TRUE(t.is_end_of_generation(259));
  EXPECT_TRUE(t.is_end_of_generation(260));
  EXPECT_EQ(t.encode("hey<|eot_id|>", true), (std::vector<int32_t>{258, 257, 259}));
  EXPECT_EQ(t.encode_chat({{"user", " hi "}}),
            t.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"));
  EXPECT_EQ(t.encode_chat({{"user", "hi"}}).front(), 258);
  EXPECT_NE(t.encode_chat({{"user", "hi"}})[1], 258);  // the template's BOS, not a second one
}

TEST(TokenizerFromGguf, DefaultsWhenOptionalKeysAreAbsent) {
  TokenizerFile f;
  f.drop("tokenizer.ggml.pre");
  f.drop("tokenizer.ggml.token_type");
  f.drop("tokenizer.ggml.bos_token_id");
  f.drop("tokenizer.ggml.eos_token_id");
  const Tokenizer t = f.load();
  EXPECT_EQ(t.pre_tokenizer(), "gpt2");
  EXPECT_FALSE(t.add_bos());
  EXPECT_EQ(t.bos(), -1);
  EXPECT_EQ(t.eos(), -1);
  EXPECT_EQ(t.token_type(258), 1);  // no types: all normal, so "<|eot_id|>" is plain text
  EXPECT_GT(t.encode("<|eot_id|>").size(), 1u);
  EXPECT_EQ(t.chat_template(), "");
}

TEST(TokenizerFromGguf, AddBosKeyOverridesTheDefault) {
  TokenizerFile f;
  f.set("tokenizer.ggml.add_bos_token", gguf_bool(false));
  EXPECT_FALSE(f.load().add_bos());
  f.set("tokenizer.ggml.pre", gguf_string("smollm"));
  f.set("tokenizer.ggml.add_bos_token", gguf_bool(true));
  EXPECT_TRUE(f.load().add_bos());
}

TEST(TokenizerFromGguf, UnsupportedTokenizersSaySo) {
  TokenizerFile f;
  f.set("tokenizer.ggml.model", gguf_string("llama"));
  EXPECT_NE(error_of([&] { f.load(); }).find("SentencePiece tokenizers are not supported yet"), std::string::npos);
  f.set("tokenizer.ggml.model", gguf_string("bert"));
  EXPECT_NE(error_of([&] { f.load(); }).find("tokenizer model \"bert\" is not supported yet (supported: \"gpt2\""),
            std::string::npos);
  f.set("tokenizer.ggml.model", gguf_string("gpt2"));
  f.set("tokenizer.ggml.pre", gguf_string("qwen2"));
  EXPECT_NE(error_of([&] { f.load(); }).find("pre-tokeniser \"qwen2\" is not supported (supported: smollm, llama-bpe"),
            std::string::npos);
  f.drop("tokenizer.ggml.model");
  EXPECT_NE(error_of([&] { f.load(); }).find("no tokenizer in the file (tokenizer.ggml.model is missing)"),
            std::string::npos);
}

TEST(TokenizerFromGguf, InconsistentMetadataIsAnError) {
  {
    TokenizerFile f;
    f.drop("tokenizer.ggml.merges");
    EXPECT_NE(error_of([&] { f.load(); }).find("tokenizer.ggml.merges is missing"), std::string::npos);
  }
  {
    TokenizerFile f;
    f.set("tokenizer.ggml.token_type", gguf_i32s({1, 1, 3}));
    EXPECT_NE(error_of([&] { f.load(); }).find("token_type has 3 entries for 261 tokens"), std::string::npos);
  }
  {
    TokenizerFile f;
    f.set("tokenizer.ggml.eos_token_id", gguf_u32(261));
    EXPECT_NE(error_of([&] { f.load(); }).find("tokenizer.ggml.eos_token_id = 261 is out of range"), std::string::npos);
  }
  {
    TokenizerFile f;
    f.set("tokenizer.ggml.merges", gguf_strings({"h e", "x yz"}));
    EXPECT_NE(error_of([&] { f.load(); }).find("merge 1 \"x yz\" needs \"yz\""), std::string::npos);
  }
  {
    TokenizerFile f;
    f.drop("tokenizer.ggml.bos_token_id");
    f.set("tokenizer.ggml.add_bos_token", gguf_bool(true));
    EXPECT_NE(error_of([&] { f.load(); }).find("add_bos_token is set but there is no bos_token_id"), std::string::npos);
  }
  {
    TokenizerFile f;  // the vocabulary stored as numbers: the reader's typed getter says so
    f.set("tokenizer.ggml.tokens", gguf_i32s({1, 2, 3}));
    EXPECT_NE(error_of([&] { f.load(); }).find("tokenizer.ggml.tokens"), std::string::npos);
  }
}

}  // namespace
}  // namespace sinkrouter
