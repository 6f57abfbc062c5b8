#include "model/unicode_bytes.h"

#include <array>

namespace sinkrouter::unicode {
namespace {

struct ByteTable {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> symbol;
  std::array<int16_t, 0x144> from_cp{};  // every mapped code point is < U+0144

  ByteTable() {
    from_cp.fill(-1);
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cp[b] = printable ? uint32_t(b) : next++;
      from_cp[to_cp[b]] = int16_t(b);
      append_utf8(to_cp[b], symbol[b]);
    }
  }
};

const ByteTable& table() {
  static const ByteTable t;
  return t;
}

// Bytes a well-formed sequence starting with `lead` has, or 0 for a byte that starts none.
size_t sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether byte b may stand at position idx (>= 1) of a sequence led by `lead`
// (Unicode Table 3-7: the second byte's range depends on the lead).
bool continuation_ok(uint8_t lead, size_t idx, uint8_t b) {
  if (idx == 1) {
    if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
    if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
    if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
    if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  }
  return b >= 0x80 && b <= 0xBF;
}

// How many bytes from s[0] on form a well-formed (possibly incomplete) prefix of one
// character: at least 1 when s[0] is a lead byte, 0 otherwise. Sets *need to the
// character's full length.
size_t valid_prefix(const uint8_t* s, size_t n, size_t* need) {
  *need = sequence_length(s[0]);
  if (*need == 0) return 0;
  size_t k = 1;
  while (k < *need && k < n && continuation_ok(s[0], k, s[k])) ++k;
  return k;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return table().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 0x144 ? table().from_cp[cp] : -1; }

const std::string& byte_symbol(uint8_t b) { return table().symbol[b]; }

std::string bytes_to_symbols(std::string_view bytes) {
  const ByteTable& t = table();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.symbol[uint8_t(c)];
  return out;
}

bool symbols_to_bytes(std::string_view symbols, std::string& out) {
  out.clear();
  size_t i = 0;
  while (i < symbols.size()) {
    uint32_t cp = 0;
    const size_t len = decode_utf8(symbols.data() + i, symbols.size() - i, &cp);
    if (len == 0) return false;
    const int b = codepoint_to_byte(cp);
    if (b < 0) return false;
    out += char(b);
    i += len;
  }
  return true;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

size_t decode_utf8(const char* s, size_t n, uint32_t* cp) {
  if (n == 0) return 0;
  const auto* u = reinterpret_cast<const uint8_t*>(s);
  size_t need = 0;
  const size_t k = valid_prefix(u, n, &need);
  if (need == 0 || k < need) return 0;
  static constexpr uint8_t kLeadMask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t c = u[0] & kLeadMask[need];
  for (size_t i = 1; i < need; ++i) c = (c << 6) | (u[i] & 0x3F);
  *cp = c;
  return need;
}

size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  uint32_t cp = 0;
  while (i < s.size()) {
    if (uint8_t(s[i]) < 0x80) {  // ASCII fast path
      ++i;
      continue;
    }
    const size_t len = decode_utf8(s.data() + i, s.size() - i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* u = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    size_t need = 0;
    const size_t k = valid_prefix(u + i, s.size() - i, &need);
    if (need != 0 && k == need) {
      out.append(s.data() + i, k);
      i += k;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal ill-formed subpart
      i += k == 0 ? 1 : k;
    }
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view s) {
  const auto* u = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const size_t start = s.size() - k;
    size_t need = 0;
    if (valid_prefix(u + start, k, &need) == k && need > k) return k;
  }
  return 0;
}

}  // namespace sinkrouter::unicode
