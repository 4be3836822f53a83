// A tiny deterministic tokenizer for data tests: one id per byte (0..255) and a few special
// tokens matched literally, so masking tests do not depend on any real vocabulary.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ming/text/tokenizer.h"

namespace ming::test {

class ByteTokenizer : public text::Tokenizer {
 public:
  static constexpr int32_t kEndOfText = 256, kImStart = 257, kImEnd = 258, kBos = 259, kEos = 260;

  explicit ByteTokenizer(bool with_bos = false) : with_bos_(with_bos) {}

  std::vector<text::TokenId> encode(std::string_view s, bool add_bos,
                                    bool parse_special) const override {
    std::vector<text::TokenId> out;
    if (add_bos && with_bos_) out.push_back(kBos);
    for (size_t i = 0; i < s.size();) {
      bool matched = false;
      if (parse_special) {
        for (const auto& [piece, id] : specials()) {
          if (s.substr(i, piece.size()) == piece) {
            out.push_back(id);
            i += piece.size();
            matched = true;
            break;
          }
        }
      }
      if (!matched) out.push_back(static_cast<unsigned char>(s[i++]));
    }
    return out;
  }
  std::string decode(const std::vector<text::TokenId>& ids, bool skip_special) const override {
    std::string out;
    for (auto id : ids) {
      if (id < 256)
        out += static_cast<char>(id);
      else if (!skip_special)
        out += piece(id);
    }
    return out;
  }
  std::string piece(text::TokenId id) const override {
    for (const auto& [p, i] : specials())
      if (i == id) return p;
    return std::string(1, static_cast<char>(id));
  }
  std::optional<text::TokenId> find(std::string_view p) const override {
    for (const auto& [s, i] : specials())
      if (s == p) return i;
    if (p.size() == 1) return static_cast<unsigned char>(p[0]);
    return std::nullopt;
  }
  int64_t vocab_size() const override { return 261; }
  std::optional<text::TokenId> bos_id() const override {
    return with_bos_ ? std::optional<text::TokenId>(kBos) : std::nullopt;
  }
  std::vector<text::TokenId> eos_ids() const override { return {kImEnd, kEndOfText}; }
  bool is_special(text::TokenId id) const override { return id >= 256; }

 private:
  static const std::vector<std::pair<std::string, int32_t>>& specials() {
    static const std::vector<std::pair<std::string, int32_t>> s = {{"<|endoftext|>", kEndOfText},
                                                                   {"<|im_start|>", kImStart},
                                                                   {"<|im_end|>", kImEnd},
                                                                   {"<s>", kBos},
                                                                   {"</s>", kEos}};
    return s;
  }
  bool with_bos_;
};

}  // namespace ming::test
