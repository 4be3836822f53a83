#include "text/added_tokens.h"

#include <algorithm>

namespace ming::text::detail {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

void AddedTokens::add(AddedToken token) {
  if (token.content.empty()) return;
  if (auto it = by_content_.find(token.content); it != by_content_.end()) {
    by_id_.erase(tokens_[it->second].id);
    tokens_[it->second] = token;
    by_id_[token.id] = it->second;
    return;
  }
  const size_t index = tokens_.size();
  tokens_.push_back(token);
  by_content_[token.content] = index;
  by_id_[token.id] = index;
  auto& bucket = by_first_byte_[static_cast<unsigned char>(token.content[0])];
  bucket.push_back(index);
  std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

std::vector<AddedTokens::Piece> AddedTokens::split(std::string_view text,
                                                   bool parse_special) const {
  std::vector<Piece> pieces;
  size_t plain_begin = 0;
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const AddedToken& t = tokens_[index];
      if (t.special && !parse_special) continue;
      if (text.compare(i, t.content.size(), t.content) == 0) {
        match = &t;
        break;
      }
    }
    if (!match) {
      ++i;
      continue;
    }
    size_t plain_end = i;
    if (match->lstrip)
      while (plain_end > plain_begin && is_space(text[plain_end - 1])) --plain_end;
    if (plain_end > plain_begin)
      pieces.push_back({text.substr(plain_begin, plain_end - plain_begin)});
    pieces.push_back({{}, match->id});
    i += match->content.size();
    if (match->rstrip)
      while (i < text.size() && is_space(text[i])) ++i;
    plain_begin = i;
  }
  if (plain_begin < text.size()) pieces.push_back({text.substr(plain_begin)});
  return pieces;
}

std::optional<TokenId> AddedTokens::find(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedTokens::by_id(TokenId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace ming::text::detail
