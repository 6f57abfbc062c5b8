// The UTF-8 helpers, the GPT-2 byte alphabet and Jinja's |trim, against the Unicode
// standard's rules and Python's str semantics (hand-derived cases plus random input
// checked against a straightforward re-derivation).
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "model/chat_template.h"
#include "model/unicode_bytes.h"

namespace sinkrouter {
namespace {

using namespace unicode;

TEST(ByteAlphabet, MapsEveryByteToADistinctPrintableCodePoint) {
  std::set<uint32_t> seen;
  uint32_t next_shifted = 0x100;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = byte_to_codepoint(uint8_t(b));
    const bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    // Printable bytes stand for themselves; the 68 others take U+0100.. in byte order.
    EXPECT_EQ(cp, self ? uint32_t(b) : next_shifted++) << "byte " << b;
    EXPECT_TRUE(seen.insert(cp).second) << "byte " << b;
    EXPECT_EQ(codepoint_to_byte(cp), b);
    std::string utf8;
    append_utf8(cp, utf8);
    EXPECT_EQ(byte_symbol(uint8_t(b)), utf8);
  }
  EXPECT_EQ(next_shifted, 0x100u + 68);
  EXPECT_EQ(byte_to_codepoint(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(codepoint_to_byte(0x144), -1);
  EXPECT_EQ(codepoint_to_byte(0x20), -1);  // a real space stands for no byte
}

TEST(ByteAlphabet, RoundTripsRandomBytes) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(rng() % 97, '\0');
    for (char& c : bytes) c = char(rng() & 0xFF);
    std::string back;
    ASSERT_TRUE(symbols_to_bytes(bytes_to_symbols(bytes), back));
    EXPECT_EQ(back, bytes);
  }
  std::string out;
  EXPECT_FALSE(symbols_to_bytes("a b", out));      // U+0020 is not in the alphabet
  EXPECT_FALSE(symbols_to_bytes("\xC4", out));     // truncated UTF-8
  EXPECT_FALSE(symbols_to_bytes("\xE4\xBD\xA0", out));  // U+4F60 stands for no byte
}

// Well-formedness by Unicode Table 3-7, written independently of the implementation:
// decode the scalar value arithmetically and reject overlongs, surrogates, > U+10FFFF.
size_t reference_decode(const std::string& s, size_t i, uint32_t* cp) {
  const uint8_t b0 = uint8_t(s[i]);
  size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t v = len == 1 ? b0 : b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    const uint8_t b = uint8_t(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b & 0x3F);
  }
  static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

TEST(Utf8, DecodeAgreesWithTheStandardOnRandomBytes) {
  std::mt19937 rng(std::random_device{}());
  // Bytes drawn mostly from the interesting ranges (leads, continuations, boundaries).
  const uint8_t pool[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                          0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
  for (int trial = 0; trial < 20000; ++trial) {
    std::string s(1 + rng() % 4, '\0');
    for (char& c : s) c = char(rng() % 2 ? pool[rng() % sizeof(pool)] : rng() & 0xFF);
    uint32_t a = 0, b = 0;
    const size_t want = reference_decode(s, 0, &a);
    const size_t got = decode_utf8(s.data(), s.size(), &b);
    ASSERT_EQ(got, want) << "bytes " << ::testing::PrintToString(s);
    if (want != 0) EXPECT_EQ(b, a);
  }
}

TEST(Utf8, LossyReplacesEachMaximalSubpart) {
  // Unicode 15 section 3.9, Table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy(in), "a" + r + r + r + "b" + r + "c" + r + r + "d");
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);  // a surrogate: ED A0 is not a subpart
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), r);           // emoji cut before its last byte
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), r + r);           // overlong '/'
  EXPECT_EQ(utf8_lossy("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");  // valid text is unchanged
  EXPECT_EQ(first_invalid_utf8("ab\xE2\x82"), 2u);
  EXPECT_EQ(first_invalid_utf8("ab\xE2\x82\xAC"), std::string_view::npos);
}

TEST(Utf8, IncompleteTailOnlyCountsAValidPrefix) {
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  for (size_t k = 0; k <= 4; ++k) {
    EXPECT_EQ(incomplete_utf8_tail("x" + emoji.substr(0, k)), k == 4 ? 0u : k) << k;
  }
  EXPECT_EQ(incomplete_utf8_tail("\xE2\x82"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xED\xA0"), 0u);  // would be a surrogate: never completes
  EXPECT_EQ(incomplete_utf8_tail("\xF5"), 0u);      // not a lead byte
  EXPECT_EQ(incomplete_utf8_tail("\x80"), 0u);
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
}

TEST(PythonStrip, RemovesWhatStrIsspaceCallsSpace) {
  EXPECT_EQ(python_strip("  a b \n"), "a b");
  EXPECT_EQ(python_strip("\t\x0b\x0c\r\x1c\x1d\x1e\x1fx\xC2\x85"), "x");  // U+001C..1F, U+0085
  EXPECT_EQ(python_strip("\xE3\x80\x80\xE2\x80\xA8mid\xC2\xA0"), "mid");  // U+3000, U+2028, U+00A0
  EXPECT_EQ(python_strip("\xE2\x80\x8Bzw\xE2\x80\x8B"), "\xE2\x80\x8Bzw\xE2\x80\x8B");  // U+200B is not space
  EXPECT_EQ(python_strip(" \n "), "");
  EXPECT_EQ(python_strip(""), "");
}

}  // namespace
}  // namespace sinkrouter
