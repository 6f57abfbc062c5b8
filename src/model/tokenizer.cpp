// GPT-2 byte-level BPE. Encoding: special tokens (types 3 and 4) are cut out of the
// text first, the rest is split by the pre-tokeniser, and each piece is spelled in the
// byte alphabet and merged pair by pair, lowest merge rank first. This follows Hugging
// Face tokenizers (the reference the tests compare against) where it and llama.cpp differ:
// bytes whose one-symbol token is missing from the vocabulary are dropped before merging.
#include "sinkrouter/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <unordered_map>

#include "model/chat_template.h"
#include "model/pretokenizer.h"
#include "model/unicode_bytes.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUserDefined = 4;

// Texts that end a turn or a document in the vocabularies we know (llama.cpp's list).
constexpr std::array<const char*, 8> kEndOfGenerationTexts = {
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<|end|>"};

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

struct Merge {
  int32_t rank;
  int32_t result;  // id of the merged token
};

// A special token matched literally in the text.
struct Special {
  std::string text;
  int32_t id;
  bool control;  // type 3: matched only when parse_special; type 4 always
};

// Scratch space for the merge loop, reused across the pieces of one encode() call.
struct MergeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the linked list, -1 at the ends
  };
  struct Candidate {
    int32_t rank, pos;      // merge rank, position of the left symbol
    int32_t left, right;    // the ids the pair had when queued (stale entries are skipped)
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;  // as stored (byte-level spelling for normal tokens)
  std::vector<int32_t> types;
  std::vector<std::string> bytes;   // token_bytes() of every id
  std::unordered_map<std::string, int32_t> id_of;
  std::array<int32_t, 256> byte_id{};  // id of each byte's one-symbol token, -1 if absent
  std::unordered_map<uint64_t, Merge> merges;
  std::vector<Special> specials;                 // longest first
  std::array<std::vector<int32_t>, 256> specials_by_byte;  // indices into specials, by first byte
  std::vector<bool> end_of_generation;
  PreTokenizer pre;
  bool ignore_merges = false;  // a piece that is a whole token is not merged (Llama 3)
  int32_t bos = -1, eos = -1;
  bool add_bos = false;
  std::string chat_template;

  void check_id(int32_t id, const char* what) const {
    SR_CHECK(id >= 0 && size_t(id) < tokens.size(), "tokenizer: {}: token id {} is out of range (vocabulary has {} tokens)",
             what, id, tokens.size());
  }
  void encode_text(std::string_view text, std::vector<int32_t>& out, MergeScratch& scratch) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, MergeScratch& scratch) const;
  // Validates the vocabulary and merges and builds the lookup tables.
  static std::unique_ptr<Impl> build(std::vector<std::string> tokens, std::vector<int32_t> types,
                                     const std::vector<std::string>& merges, const std::string& pre, int32_t bos,
                                     int32_t eos);
};

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::build(std::vector<std::string> tokens, std::vector<int32_t> types,
                                                        const std::vector<std::string>& merges, const std::string& pre,
                                                        int32_t bos, int32_t eos) {
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  SR_CHECK(!tokens.empty(), "tokenizer: the vocabulary is empty");
  SR_CHECK(tokens.size() < size_t(INT32_MAX), "tokenizer: vocabulary of {} tokens is too large", tokens.size());
  SR_CHECK(types.size() == tokens.size(), "tokenizer: {} token types for {} tokens (expected one type per token)",
           types.size(), tokens.size());
  t.pre = PreTokenizer::create(pre);
  // The Llama 3 family, as in its tokenizer.json and llama.cpp.
  t.ignore_merges = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  const int32_t n = int32_t(tokens.size());
  for (int32_t id : {bos, eos}) {
    SR_CHECK(id >= -1 && id < n, "tokenizer: special token id {} is out of range (vocabulary has {} tokens)", id, n);
  }
  t.bos = bos;
  t.eos = eos;

  t.bytes.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    t.id_of.emplace(tokens[id], id);  // the first of duplicate spellings wins
    // Tokens spelled in the byte alphabet decode to their bytes; any other (e.g. an added
    // token with a real space) to its own text, as Hugging Face's ByteLevel decoder does.
    if (!unicode::symbols_to_bytes(tokens[id], t.bytes[id])) t.bytes[id] = tokens[id];
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = t.id_of.find(unicode::byte_symbol(uint8_t(b)));
    t.byte_id[b] = it == t.id_of.end() ? -1 : it->second;
  }

  t.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    SR_CHECK(space != std::string::npos && space + 1 < m.size(),
             "tokenizer: merge {} \"{}\" is not two symbols separated by a space", rank, m);
    const std::string left = m.substr(0, space), right = m.substr(space + 1);
    int32_t ids[3];
    const std::string parts[3] = {left, right, left + right};
    for (int k = 0; k < 3; ++k) {
      const auto it = t.id_of.find(parts[k]);
      SR_CHECK(it != t.id_of.end(), "tokenizer: merge {} \"{}\" needs \"{}\", which is not in the vocabulary", rank, m,
               parts[k]);
      ids[k] = it->second;
    }
    t.merges.emplace(pair_key(ids[0], ids[1]), Merge{int32_t(rank), ids[2]});  // first rank wins
  }

  t.end_of_generation.assign(n, false);
  if (eos >= 0) t.end_of_generation[eos] = true;
  for (int32_t id = 0; id < n; ++id) {
    if (types[id] == kTypeControl || types[id] == kTypeUserDefined) {
      if (!tokens[id].empty()) t.specials.push_back({tokens[id], id, types[id] == kTypeControl});
      for (const char* eog : kEndOfGenerationTexts) {
        if (tokens[id] == eog) t.end_of_generation[id] = true;
      }
    }
  }
  std::stable_sort(t.specials.begin(), t.specials.end(),
                   [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });
  for (size_t i = 0; i < t.specials.size(); ++i) t.specials_by_byte[uint8_t(t.specials[i].text[0])].push_back(int32_t(i));

  t.tokens = std::move(tokens);
  t.types = std::move(types);
  return impl;
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out, MergeScratch& s) const {
  if (ignore_merges) {
    const auto it = id_of.find(unicode::bytes_to_symbols(piece));
    if (it != id_of.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& sym = s.symbols;
  sym.clear();
  for (char c : piece) {
    const int32_t id = byte_id[uint8_t(c)];
    if (id < 0) continue;  // no token for this byte: dropped, as Hugging Face's BPE does without unk
    const int32_t i = int32_t(sym.size());
    sym.push_back({id, i - 1, -1});
    if (i > 0) sym[i - 1].next = i;
  }
  if (sym.size() > 1) {
    auto& heap = s.heap;
    heap.clear();
    const auto greater = std::greater<MergeScratch::Candidate>();
    auto offer = [&](int32_t pos) {  // queue the pair starting at pos, if it merges
      const int32_t next = sym[pos].next;
      if (next < 0) return;
      const auto it = merges.find(pair_key(sym[pos].id, sym[next].id));
      if (it == merges.end()) return;
      heap.push_back({it->second.rank, pos, sym[pos].id, sym[next].id});
      std::push_heap(heap.begin(), heap.end(), greater);
    };
    for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) offer(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), greater);
      const MergeScratch::Candidate c = heap.back();
      heap.pop_back();
      auto& left = sym[c.pos];
      // Stale when either side has merged since: removed symbols have id -1.
      if (left.id != c.left || left.next < 0 || sym[left.next].id != c.right) continue;
      auto& right = sym[left.next];
      left.id = merges.at(pair_key(c.left, c.right)).result;
      left.next = right.next;
      if (right.next >= 0) sym[right.next].prev = c.pos;
      right.id = -1;
      if (left.prev >= 0) offer(left.prev);
      offer(c.pos);
    }
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out, MergeScratch& scratch) const {
  for (std::string_view piece : pre.split(text)) encode_piece(piece, out, scratch);
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_vocab(std::vector<std::string> tokens, std::vector<int32_t> types,
                                std::vector<std::string> merges, const std::string& pre, int32_t bos, int32_t eos) {
  Tokenizer t;
  t.impl_ = Impl::build(std::move(tokens), std::move(types), merges, pre, bos, eos);
  return t;
}

Tokenizer Tokenizer::from_gguf(const GGUFFile& file) {
  const GGUFValue* model = file.find("tokenizer.ggml.model");
  SR_CHECK(model != nullptr, "{}: no tokenizer in the file (tokenizer.ggml.model is missing)", file.path());
  const std::string& kind = model->as_string("tokenizer.ggml.model");
  SR_CHECK(kind != "llama",
           "{}: SentencePiece tokenizers are not supported yet (tokenizer.ggml.model = \"llama\"); "
           "supported: \"gpt2\" (byte-level BPE)",
           file.path());
  SR_CHECK(kind == "gpt2", "{}: tokenizer model \"{}\" is not supported yet (supported: \"gpt2\", byte-level BPE)",
           file.path(), kind);

  std::vector<std::string> tokens = file.get("tokenizer.ggml.tokens").as_strings("tokenizer.ggml.tokens");
  std::vector<int32_t> types(tokens.size(), 1);
  if (const GGUFValue* v = file.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> raw = v->as_ints("tokenizer.ggml.token_type");
    SR_CHECK(raw.size() == tokens.size(), "{}: tokenizer.ggml.token_type has {} entries for {} tokens", file.path(),
             raw.size(), tokens.size());
    for (size_t i = 0; i < raw.size(); ++i) types[i] = int32_t(raw[i]);
  }
  const GGUFValue* merges = file.find("tokenizer.ggml.merges");
  SR_CHECK(merges != nullptr, "{}: tokenizer.ggml.merges is missing (a gpt2 tokenizer needs its merges)", file.path());
  const std::string pre = file.get_string("tokenizer.ggml.pre", "gpt2");
  auto id_or_none = [&](const char* key) -> int32_t {
    const GGUFValue* v = file.find(key);
    if (v == nullptr) return -1;
    const int64_t id = v->as_i64(key);
    SR_CHECK(id >= 0 && id < int64_t(tokens.size()), "{}: {} = {} is out of range (vocabulary has {} tokens)",
             file.path(), key, id, tokens.size());
    return int32_t(id);
  };
  const int32_t bos = id_or_none("tokenizer.ggml.bos_token_id");
  const int32_t eos = id_or_none("tokenizer.ggml.eos_token_id");

  Tokenizer t = from_vocab(std::move(tokens), std::move(types), merges->as_strings("tokenizer.ggml.merges"), pre, bos, eos);
  // llama.cpp's default: BOS for the Llama 3 family, none for other BPE vocabularies.
  bool add_bos = t.impl_->ignore_merges;
  if (const GGUFValue* v = file.find("tokenizer.ggml.add_bos_token")) add_bos = v->as_bool("tokenizer.ggml.add_bos_token");
  SR_CHECK(!add_bos || bos >= 0, "{}: tokenizer.ggml.add_bos_token is set but there is no bos_token_id", file.path());
  t.impl_->add_bos = add_bos;
  t.impl_->chat_template = file.get_string("tokenizer.chat_template", "");
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos, bool parse_special) const {
  SR_CHECK(impl_ != nullptr, "tokenizer: used before it was loaded");
  const Impl& t = *impl_;
  const size_t bad = unicode::first_invalid_utf8(text);
  SR_CHECK(bad == std::string::npos, "tokenizer: encode: the text is not valid UTF-8 (byte 0x{:02X} at offset {})",
           unsigned(uint8_t(text[bad])), bad);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) {
    SR_CHECK(t.bos >= 0, "tokenizer: encode: add_bos was asked for but the vocabulary has no BOS token");
    out.push_back(t.bos);
  }
  MergeScratch scratch;
  // Leftmost-longest literal match of the special tokens, then the text between them.
  size_t segment = 0;
  for (size_t i = 0; i < text.size();) {
    const Special* hit = nullptr;
    for (int32_t k : t.specials_by_byte[uint8_t(text[i])]) {
      const Special& s = t.specials[k];
      if ((parse_special || !s.control) && text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    t.encode_text(std::string_view(text).substr(segment, i - segment), out, scratch);
    out.push_back(hit->id);
    i += hit->text.size();
    segment = i;
  }
  t.encode_text(std::string_view(text).substr(segment), out, scratch);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  SR_CHECK(impl_ != nullptr, "tokenizer: used before it was loaded");
  std::string raw;
  for (int32_t id : ids) {
    impl_->check_id(id, "decode");
    raw += impl_->bytes[id];
  }
  return unicode::utf8_lossy(raw);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  impl_->check_id(id, "token_bytes");
  return impl_->bytes[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  impl_->check_id(id, "token_text");
  return impl_->tokens[id];
}

int32_t Tokenizer::token_type(int32_t id) const {
  impl_->check_id(id, "token_type");
  return impl_->types[id];
}

int32_t Tokenizer::vocab_size() const { return impl_ ? int32_t(impl_->tokens.size()) : 0; }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
const std::string& Tokenizer::pre_tokenizer() const { return impl_->pre.name(); }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
void Tokenizer::set_chat_template(std::string jinja) { impl_->chat_template = std::move(jinja); }

void Tokenizer::set_add_bos(bool add_bos) {
  SR_CHECK(!add_bos || impl_->bos >= 0, "tokenizer: cannot add BOS: the vocabulary has no BOS token");
  impl_->add_bos = add_bos;
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->end_of_generation.size() && impl_->end_of_generation[id];
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  const ChatTemplateInfo info = recognise_chat_template(impl_->chat_template);
  const std::string bos_text = impl_->bos >= 0 ? impl_->tokens[impl_->bos] : std::string();
  return render_chat_template(info, messages, add_generation_prompt, bos_text);
}

std::vector<int32_t> Tokenizer::encode_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  const std::string prompt = apply_chat_template(messages, add_generation_prompt);
  const bool has_bos = impl_->bos >= 0 && prompt.compare(0, impl_->tokens[impl_->bos].size(), impl_->tokens[impl_->bos]) == 0;
  return encode(prompt, impl_->add_bos && !has_bos, /*parse_special=*/true);
}

std::string Tokenizer::StreamDecoder::push(int32_t id) {
  pending_ += tok_->token_bytes(id);
  // Emit everything but an unfinished character at the end; ill-formed bytes before it
  // cannot become valid any more and are replaced now.
  const size_t keep = unicode::incomplete_utf8_tail(pending_);
  std::string out = unicode::utf8_lossy(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string Tokenizer::StreamDecoder::flush() {
  std::string out = unicode::utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace sinkrouter
