// UTF-8 helpers and GPT-2's byte-to-unicode table, for the byte-level BPE tokenizer.
//
// Byte-level BPE spells every byte as one printable code point so that a vocabulary of
// strings can hold arbitrary bytes: bytes 33-126, 161-172 and 174-255 stand for
// themselves, the other 68 bytes (ascending) for U+0100..U+0143 (space -> U+0120 'Ġ',
// newline -> U+010A 'Ċ'). Facts: ../shared/REFERENCE.md section 4.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sinkrouter::unicode {

// The code point that stands for byte b.
uint32_t byte_to_codepoint(uint8_t b);
// The byte a code point stands for, or -1 when it stands for none.
int codepoint_to_byte(uint32_t cp);
// The UTF-8 spelling of byte b's code point (one or two bytes).
const std::string& byte_symbol(uint8_t b);

// Raw bytes -> byte-level spelling ("a b" -> "aĠb").
std::string bytes_to_symbols(std::string_view bytes);
// Byte-level spelling -> raw bytes. False (out unspecified) when the text is not valid
// UTF-8 or holds a code point that stands for no byte.
bool symbols_to_bytes(std::string_view symbols, std::string& out);

// Appends the UTF-8 encoding of cp (< 0x110000, not a surrogate) to out.
void append_utf8(uint32_t cp, std::string& out);

// Length of the well-formed UTF-8 sequence at s[0..n), writing its code point to *cp, or
// 0 when the bytes there are not a complete well-formed sequence (Unicode Table 3-7:
// no overlongs, no surrogates, nothing above U+10FFFF).
size_t decode_utf8(const char* s, size_t n, uint32_t* cp);

// Offset of the first byte that is not part of well-formed UTF-8, or npos.
size_t first_invalid_utf8(std::string_view s);

// The string with each maximal ill-formed subpart replaced by U+FFFD, as Rust's
// String::from_utf8_lossy (and so Hugging Face tokenizers' decode) does.
std::string utf8_lossy(std::string_view s);

// Number of bytes at the end of s that begin a well-formed character but stop before it
// is complete (0..3). A stream decoder holds these back until more bytes arrive.
size_t incomplete_utf8_tail(std::string_view s);

}  // namespace sinkrouter::unicode
