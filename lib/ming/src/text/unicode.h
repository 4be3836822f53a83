// UTF-8 helpers shared by the tokenizers (private to lib/ming/src/text).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ming::text::detail {

// Replaces each maximal invalid subsequence of `text` with U+FFFD, as Rust's
// String::from_utf8_lossy does (Hugging Face tokenizers only ever see a Rust String, so this is
// what they tokenize when handed bad bytes). Returns `text` unchanged when it is valid.
std::string sanitize_utf8(std::string_view text);
bool is_valid_utf8(std::string_view text);

// Length in bytes of the (valid) UTF-8 character starting with byte `lead`.
inline size_t utf8_char_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

void append_utf8(std::string& out, uint32_t codepoint);

enum class NormalForm { nfc, nfd, nfkc, nfkd };
// Unicode normalisation through utf8proc; ASCII-only text is returned as is (its own NF*).
std::string normalize(std::string_view text, NormalForm form);
std::string to_lower(std::string_view text);

// GPT-2's reversible byte <-> printable-character table used by byte-level BPE: every byte maps
// to one Unicode character (printable ASCII and Latin-1 map to themselves, the rest to U+0100+).
struct ByteLevelTable {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of the character for each byte
  std::array<int, 0x180> char_to_byte;        // codepoint -> byte, -1 if not in the table
  ByteLevelTable();
};
const ByteLevelTable& byte_level_table();
// Raw bytes -> byte-level characters ("Ġthe" for " the").
std::string bytes_to_byte_level(std::string_view bytes);
// Byte-level characters -> raw bytes; false (out untouched past its old size) when `text` holds a
// character outside the table.
bool byte_level_to_bytes(std::string_view text, std::string& out);

// "<0x0A>" -> 10; -1 when `piece` is not a byte-fallback piece.
int parse_byte_piece(std::string_view piece);

}  // namespace ming::text::detail
