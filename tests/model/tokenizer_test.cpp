// The tokenizer on small hand-made vocabularies: merge order, pre-tokeniser boundaries,
// special tokens, the byte alphabet, the stream decoder, bad input. Expected results
// are derived by hand from the BPE rules (repeatedly merge the adjacent pair of lowest
// rank, leftmost first). The reference vectors on the real model are in
// tokenizer_vectors_test.cpp.
#include "sinkrouter/model/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "model/unicode_bytes.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

using unicode::bytes_to_symbols;

// A vocabulary of the 256 byte symbols in a shuffled order (so ids are not bytes), the
// tokens the merges make, then `specials` (text, type).
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // spelled in the byte alphabet

  int32_t id(const std::string& raw) const {  // raw bytes -> id of the token spelling them
    const std::string spelled = bytes_to_symbols(raw);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == spelled && types[i] == 1) return int32_t(i);
    }
    ADD_FAILURE() << "no token for \"" << raw << "\"";
    return -1;
  }
  int32_t special(const std::string& text) const {
    return int32_t(std::find(tokens.begin(), tokens.end(), text) - tokens.begin());
  }
  Tokenizer make(const std::string& pre = "gpt2", int32_t bos = -1, int32_t eos = -1) const {
    return Tokenizer::from_vocab(tokens, types, merges, pre, bos, eos);
  }
};

// merges: pairs of raw byte strings, in rank order.
Vocab make_vocab(const std::vector<std::pair<std::string, std::string>>& merges,
                 const std::vector<std::pair<std::string, int32_t>>& specials = {}, uint32_t seed = 7,
                 const std::vector<int>& missing_bytes = {}) {
  Vocab v;
  std::vector<int> order(256);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  for (int b : order) {
    if (std::find(missing_bytes.begin(), missing_bytes.end(), b) != missing_bytes.end()) continue;
    v.tokens.push_back(unicode::byte_symbol(uint8_t(b)));
    v.types.push_back(1);
  }
  for (const auto& [a, b] : merges) {
    v.merges.push_back(bytes_to_symbols(a) + " " + bytes_to_symbols(b));
    const std::string joined = bytes_to_symbols(a + b);
    if (std::find(v.tokens.begin(), v.tokens.end(), joined) == v.tokens.end()) {
      v.tokens.push_back(joined);
      v.types.push_back(1);
    }
  }
  for (const auto& [text, type] : specials) {
    v.tokens.push_back(text);
    v.types.push_back(type);
  }
  return v;
}

std::string concat_bytes(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += t.token_bytes(id);
  return s;
}

// Random valid UTF-8 over all lengths of encoding (so every lead and continuation byte
// value that valid text can hold appears), with spaces, digits and newlines mixed in.
std::string random_utf8(std::mt19937& rng, size_t chars) {
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp = 0;
    switch (rng() % 6) {
      case 0: cp = 0x20 + rng() % 0x5F; break;
      case 1: cp = " \n\t0123456789"[rng() % 13]; break;
      case 2: cp = 0x80 + rng() % 0x780; break;
      case 3: cp = 0x800 + rng() % 0xF800; break;
      case 4: cp = 0x10000 + rng() % 0x100000; break;
      default: cp = 1 + rng() % 0x7F; break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    unicode::append_utf8(cp, s);
  }
  return s;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerBytes, EveryByteHasItsOwnTokenAndRoundTrips) {
  const Vocab v = make_vocab({});
  const Tokenizer t = v.make();
  for (int b = 0; b < 256; ++b) {
    const int32_t id = v.id(std::string(1, char(b)));
    EXPECT_EQ(t.token_bytes(id), std::string(1, char(b))) << "byte " << b;
    EXPECT_EQ(t.token_text(id), unicode::byte_symbol(uint8_t(b)));
  }
  // Without merges every byte of valid text becomes its byte token.
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 50; ++trial) {
    const std::string text = random_utf8(rng, 1 + rng() % 60);
    const std::vector<int32_t> ids = t.encode(text);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], v.id(text.substr(i, 1))) << "byte " << i;
    EXPECT_EQ(t.decode(ids), text);
  }
}

TEST(TokenizerMerges, LowestRankMergesFirst) {
  {
    const Vocab v = make_vocab({{"b", "c"}, {"a", "b"}});
    EXPECT_EQ(v.make().encode("abc"), (std::vector<int32_t>{v.id("a"), v.id("bc")}));
  }
  {
    const Vocab v = make_vocab({{"a", "b"}, {"b", "c"}});
    EXPECT_EQ(v.make().encode("abc"), (std::vector<int32_t>{v.id("ab"), v.id("c")}));
  }
  {
    // "c d" (rank 0) goes first although it is further right; then "a b"; "b c" never
    // applies because b and c are no longer neighbouring symbols.
    const Vocab v = make_vocab({{"c", "d"}, {"a", "b"}, {"b", "c"}});
    EXPECT_EQ(v.make().encode("abcd"), (std::vector<int32_t>{v.id("ab"), v.id("cd")}));
  }
  {
    // Merges build on merges: h e, l l, he ll, hell o.
    const Vocab v = make_vocab({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}});
    EXPECT_EQ(v.make().encode("hello"), (std::vector<int32_t>{v.id("hello")}));
    EXPECT_EQ(v.make().encode("hellhe"), (std::vector<int32_t>{v.id("hell"), v.id("he")}));
  }
}

TEST(TokenizerMerges, EqualRanksGoLeftmostFirst) {
  const Vocab v = make_vocab({{"a", "a"}, {"aa", "a"}});
  const Tokenizer t = v.make();
  // a a a a a -> [aa] a a a -> aa [aa] a -> aa [aaa]
  EXPECT_EQ(t.encode("aaaaa"), (std::vector<int32_t>{v.id("aa"), v.id("aaa")}));
  EXPECT_EQ(t.encode("aaa"), (std::vector<int32_t>{v.id("aaa")}));
  EXPECT_EQ(t.encode("aaaa"), (std::vector<int32_t>{v.id("aa"), v.id("aa")}));
}

TEST(TokenizerMerges, NeverCrossPreTokeniserPieces) {
  const Vocab v = make_vocab({{" ", "w"}, {"a", " "}, {"1", "2"}, {"x", "1"}});
  const Tokenizer gpt2 = v.make("gpt2");
  // GPT-2 pieces: "a", " w" -> the "a " merge cannot apply.
  EXPECT_EQ(gpt2.encode("a w"), (std::vector<int32_t>{v.id("a"), v.id(" w")}));
  // Letters and digits are separate pieces; digit runs stay together.
  EXPECT_EQ(gpt2.encode("x12"), (std::vector<int32_t>{v.id("x"), v.id("12")}));
  // smollm cuts every digit on its own first.
  const Tokenizer smollm = v.make("smollm");
  EXPECT_EQ(smollm.encode("x12"), (std::vector<int32_t>{v.id("x"), v.id("1"), v.id("2")}));
  EXPECT_EQ(smollm.pre_tokenizer(), "smollm");
}

TEST(TokenizerMerges, LlamaBpeTakesWholeTokensWithoutMerging) {
  // " zebra" is a token that no merge produces: only ignore_merges (Llama 3) finds it.
  Vocab v = make_vocab({{"z", "e"}});
  v.tokens.push_back(bytes_to_symbols(" zebra"));
  v.types.push_back(1);
  const int32_t zebra = int32_t(v.tokens.size()) - 1;
  EXPECT_EQ(v.make("llama-bpe").encode("a zebra"), (std::vector<int32_t>{v.id("a"), zebra}));
  const std::vector<int32_t> gpt2 = v.make("gpt2").encode("a zebra");
  EXPECT_EQ(gpt2, (std::vector<int32_t>{v.id("a"), v.id(" "), v.id("ze"), v.id("b"), v.id("r"), v.id("a")}));
}

TEST(TokenizerMerges, BytesWithoutATokenAreDroppedBeforeMerging) {
  // SmolLM2's vocabulary has no token for byte 0x04 (and 20 others); Hugging Face drops
  // such bytes before merging, so their neighbours may merge across them.
  // "!\x04!" is one GPT-2 piece (punctuation run).
  const Vocab v = make_vocab({{"!", "!"}}, {}, 7, {0x04});
  const Tokenizer t = v.make();
  EXPECT_EQ(t.encode("!\x04!"), (std::vector<int32_t>{v.id("!!")}));
  EXPECT_EQ(t.encode("a\x04!"), (std::vector<int32_t>{v.id("a"), v.id("!")}));
  EXPECT_EQ(t.encode("\x04"), std::vector<int32_t>{});
}

TEST(TokenizerSpecial, MatchedLiterallyLeftmostLongest) {
  const Vocab v = make_vocab({{"h", "i"}}, {{"<s>", 3}, {"<a>", 3}, {"<a>b", 3}, {"<|u|>", 4}});
  const Tokenizer t = v.make("gpt2", v.special("<s>"), -1);
  const int32_t s = v.special("<s>"), a = v.special("<a>"), ab = v.special("<a>b"), u = v.special("<|u|>");
  EXPECT_EQ(t.encode("<s>hi<a>bc<a>"), (std::vector<int32_t>{s, v.id("hi"), ab, v.id("c"), a}));
  EXPECT_EQ(t.encode("hi", /*add_bos=*/true), (std::vector<int32_t>{s, v.id("hi")}));
  // parse_special = false: control tokens are text, user-defined ones still match.
  const std::vector<int32_t> plain = t.encode("<s><|u|>", false, /*parse_special=*/false);
  std::vector<int32_t> want;
  for (char c : std::string("<s>")) want.push_back(v.id(std::string(1, c)));
  want.push_back(u);
  EXPECT_EQ(plain, want);
  // Specials decode to their text; so do they through the stream decoder.
  EXPECT_EQ(t.decode({s, v.id("hi"), ab, u}), "<s>hi<a>b<|u|>");
  EXPECT_EQ(t.token_type(s), 3);
  EXPECT_EQ(t.token_type(u), 4);
  // Almost-specials stay text.
  EXPECT_EQ(concat_bytes(t, t.encode("<a <s <|u|")), "<a <s <|u|");
}

TEST(TokenizerSpecial, EndOfGeneration) {
  const Vocab v = make_vocab({}, {{"<|endoftext|>", 3}, {"<|im_start|>", 3}, {"<|im_end|>", 3}, {"<|im_end|>x", 1}});
  const Tokenizer t = v.make("gpt2", v.special("<|im_start|>"), v.special("<|im_end|>"));
  EXPECT_TRUE(t.is_end_of_generation(v.special("<|im_end|>")));
  EXPECT_TRUE(t.is_end_of_generation(v.special("<|endoftext|>")));
  EXPECT_FALSE(t.is_end_of_generation(v.special("<|im_start|>")));
  EXPECT_FALSE(t.is_end_of_generation(v.special("<|im_end|>x")));  // a normal token
  EXPECT_FALSE(t.is_end_of_generation(v.id("a")));
  EXPECT_FALSE(t.is_end_of_generation(-1));
  EXPECT_FALSE(t.is_end_of_generation(t.vocab_size()));
}

TEST(TokenizerRoundTrip, RandomUtf8WithMergesAndSpecials) {
  const Vocab v = make_vocab({{" ", "t"}, {"h", "e"}, {" t", "he"}, {"\n", "\n"}, {" ", " "}, {"\xE4", "\xBD"}},
                             {{"<|im_start|>", 3}, {"<|im_end|>", 3}});
  std::mt19937 rng(std::random_device{}());
  for (const char* pre : {"gpt2", "smollm", "llama-bpe"}) {
    const Tokenizer t = v.make(pre);
    for (int trial = 0; trial < 100; ++trial) {
      std::string text = random_utf8(rng, rng() % 80);
      if (trial % 3 == 0) text += " the<|im_start|>\n\n" + random_utf8(rng, 5) + "<|im_end|>";
      EXPECT_EQ(t.decode(t.encode(text)), text) << pre;
      EXPECT_EQ(t.decode(t.encode(text, false, false)), text) << pre;
    }
  }
}

// An emoji cut into 1 to 4 tokens streams as one character, released by the last token.
class StreamSplit : public ::testing::TestWithParam<std::vector<int>> {};

TEST_P(StreamSplit, EmojiArrivesWhole) {
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> parts;
  size_t at = 0;
  for (int len : GetParam()) {
    const std::string part = emoji.substr(at, len);
    for (int k = 1; k < len; ++k) merges.push_back({part.substr(0, k), part.substr(k, 1)});
    parts.push_back(part);
    at += len;
  }
  const Vocab v = make_vocab(merges);
  const Tokenizer t = v.make();
  const std::vector<int32_t> ids = t.encode("a" + emoji);
  ASSERT_EQ(ids.size(), parts.size() + 1);
  Tokenizer::StreamDecoder stream(t);
  EXPECT_EQ(stream.push(ids[0]), "a");
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_EQ(t.token_bytes(ids[i + 1]), parts[i]);
    EXPECT_EQ(stream.push(ids[i + 1]), i + 1 == parts.size() ? emoji : "") << "token " << i;
  }
  EXPECT_EQ(stream.flush(), "");
}

INSTANTIATE_TEST_SUITE_P(Splits, StreamSplit,
                         ::testing::Values(std::vector<int>{4}, std::vector<int>{2, 2}, std::vector<int>{1, 3},
                                           std::vector<int>{3, 1}, std::vector<int>{1, 1, 2},
                                           std::vector<int>{1, 1, 1, 1}));

TEST(TokenizerStream, BadBytesAreReplacedAndTheRestFlushed) {
  const Vocab v = make_vocab({});
  const Tokenizer t = v.make();
  Tokenizer::StreamDecoder stream(t);
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(stream.push(v.id("\xFF")), fffd);  // can never start a character
  EXPECT_EQ(stream.push(v.id("\xE2")), "");
  EXPECT_EQ(stream.push(v.id("\x82")), "");
  EXPECT_EQ(stream.push(v.id("x")), fffd + "x");  // E2 82 cut short by 'x'
  EXPECT_EQ(stream.push(v.id("\xF0")), "");
  EXPECT_EQ(stream.flush(), fffd);
  EXPECT_EQ(stream.flush(), "");
}

TEST(TokenizerStream, RandomIdsStreamAsDecodeDoes) {
  const Vocab v = make_vocab({{"\xE4", "\xBD"}, {"\xF0", "\x9F"}, {"\xF0\x9F", "\x98"}}, {{"<|im_end|>", 3}});
  const Tokenizer t = v.make();
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(rng() % 30);
    for (int32_t& id : ids) id = int32_t(rng() % t.vocab_size());
    Tokenizer::StreamDecoder stream(t);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_EQ(unicode::first_invalid_utf8(piece), std::string_view::npos);
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, t.decode(ids));
  }
}

TEST(TokenizerErrors, SaySomethingUseful) {
  const Vocab v = make_vocab({{"a", "b"}});
  EXPECT_NE(error_of([&] { v.make("falcon"); }).find("pre-tokeniser \"falcon\" is not supported (supported: smollm, llama-bpe"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(v.tokens, v.types, {"ab"}, "gpt2", -1, -1); })
                .find("merge 0 \"ab\" is not two symbols"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(v.tokens, v.types, {"a q"}, "gpt2", -1, -1); })
                .find("needs \"aq\", which is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(v.tokens, {1, 1}, v.merges, "gpt2", -1, -1); })
                .find("2 token types for 257 tokens"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab(v.tokens, v.types, v.merges, "gpt2", 9999, -1); }).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_vocab({}, {}, {}, "gpt2", -1, -1); }).find("vocabulary is empty"),
            std::string::npos);

  const Tokenizer t = v.make();
  EXPECT_NE(error_of([&] { t.encode("ok \xC3("); }).find("not valid UTF-8 (byte 0xC3 at offset 3)"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("x", /*add_bos=*/true); }).find("no BOS token"), std::string::npos);
  EXPECT_NE(error_of([&] { t.decode({0, 257}); }).find("token id 257 is out of range (vocabulary has 257 tokens)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.token_bytes(-1); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { t.apply_chat_template({{"user", "hi"}}); }).find("has no tokenizer.chat_template"),
            std::string::npos);
  Tokenizer u = v.make();
  u.set_chat_template("{{ messages[0]['content'] }}</s>");
  EXPECT_NE(error_of([&] { u.apply_chat_template({{"user", "hi"}}); }).find("not recognised (supported: ChatML"),
            std::string::npos);
  u.set_chat_template("{{ bos_token }}<|start_header_id|>system<|end_header_id|>Cutting Knowledge Date<|eot_id|>");
  EXPECT_NE(error_of([&] { u.apply_chat_template({{"tool", "42"}}); }).find("role \"tool\""), std::string::npos);
}

TEST(TokenizerChat, ChatmlDefaultSystemMessageAndEncodeChat) {
  const Vocab v = make_vocab({}, {{"<|im_start|>", 3}, {"<|im_end|>", 3}});
  Tokenizer t = v.make("gpt2", v.special("<|im_start|>"), v.special("<|im_end|>"));
  // A Jinja string literal with escaped newlines and an escaped quote.
  t.set_chat_template(
      "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe brief, it\\'s late.<|im_end|>\\n' }}"
      "{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
  const std::string want =
      "<|im_start|>system\nBe brief, it's late.<|im_end|>\n<|im_start|>user\n hi \n<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(t.apply_chat_template({{"user", " hi \n"}}), want);
  EXPECT_EQ(t.apply_chat_template({{"system", "S"}, {"user", "u"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n");
  EXPECT_EQ(t.encode_chat({{"user", " hi \n"}}), t.encode(want));
  t.set_add_bos(true);  // the prompt already starts with BOS: not added twice
  EXPECT_EQ(t.encode_chat({{"user", " hi \n"}}), t.encode(want));
}

}  // namespace
}  // namespace sinkrouter
