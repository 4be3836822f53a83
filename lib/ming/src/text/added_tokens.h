// Added (special) tokens matched literally in text before a model's own splitting, as Hugging
// Face's AddedVocabulary does: leftmost match wins, and the longest token at that position.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ming/text/tokenizer.h"

namespace ming::text::detail {

struct AddedToken {
  std::string content;
  TokenId id = -1;
  bool special = true;  // only matched when parse_special; skipped by decode(skip_special)
  bool lstrip = false;  // swallows whitespace on its left
  bool rstrip = false;  // swallows whitespace on its right
};

class AddedTokens {
 public:
  struct Piece {
    std::string_view text;  // plain text to hand to the model (when id < 0)
    TokenId id = -1;        // an added token
  };

  // A later token with the same content replaces the earlier one.
  void add(AddedToken token);
  // Non-special added tokens match always; special ones only when `parse_special`.
  std::vector<Piece> split(std::string_view text, bool parse_special) const;
  std::optional<TokenId> find(std::string_view content) const;
  const AddedToken* by_id(TokenId id) const;
  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& all() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, size_t> by_content_;
  std::unordered_map<TokenId, size_t> by_id_;
  std::array<std::vector<size_t>, 256> by_first_byte_;  // longest content first
};

}  // namespace ming::text::detail
