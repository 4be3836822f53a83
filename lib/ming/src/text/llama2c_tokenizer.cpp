// llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length,
// bytes. Encoding follows llama2.c's encode(): a dummy-prefix " " token when the text is not
// empty, one token per UTF-8 character (or its bytes at id byte+3), then repeatedly merge the
// adjacent pair whose concatenation is the best-scoring token (leftmost on ties).
#include <algorithm>
#include <cstring>
#include <fstream>
#include <unordered_map>

#include "ming/core/error.h"
#include "text/factories.h"
#include "text/pair_merge.h"
#include "text/unicode.h"

namespace ming::text::detail {
namespace {

class Llama2cTokenizer final : public Tokenizer {
 public:
  explicit Llama2cTokenizer(const std::filesystem::path& path) : path_(path.string()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail_usage("cannot read {}", path_);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t pos = 0;
    const auto read_i32 = [&](const char* what) {
      if (pos + 4 > data.size())
        fail_usage("{}: truncated at byte {} reading {} (token {})", path_, pos, what,
                   pieces_.size());
      int32_t v;
      std::memcpy(&v, data.data() + pos, 4);
      pos += 4;
      return v;
    };
    max_token_length_ = read_i32("max_token_length");
    if (max_token_length_ <= 0 || max_token_length_ > 1 << 16)
      fail_usage("{}: max_token_length {} is not plausible; not a llama2.c tokenizer.bin", path_,
                 max_token_length_);
    while (pos < data.size()) {
      const int32_t score_bits = read_i32("score");
      float score;
      std::memcpy(&score, &score_bits, 4);
      const int32_t len = read_i32("length");
      if (len < 0 || len > max_token_length_ * 4 || pos + static_cast<size_t>(len) > data.size())
        fail_usage("{}: token {} has length {} at byte {} (file has {} bytes)", path_,
                   pieces_.size(), len, pos - 4, data.size());
      pieces_.push_back(data.substr(pos, static_cast<size_t>(len)));
      scores_.push_back(score);
      pos += static_cast<size_t>(len);
    }
    if (pieces_.size() < 3 + 256)
      fail_usage(
          "{}: only {} tokens; llama2.c tokenizers hold <unk>, <s>, </s> and 256 byte "
          "tokens at least",
          path_, pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i)
      lookup_.emplace(pieces_[i], static_cast<TokenId>(i));  // first spelling wins
    // Ids 0..2 are <unk>, <s>, </s> (stored as "\n<s>\n" etc.); their plain names are the
    // special tokens one writes in text.
    specials_.add({"<unk>", 0, true, false, false});
    specials_.add({"<s>", 1, true, false, false});
    specials_.add({"</s>", 2, true, false, false});
  }

  std::vector<TokenId> encode(std::string_view raw, bool add_bos,
                              bool parse_special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<TokenId> ids;
    if (add_bos) ids.push_back(1);
    for (const auto& piece : specials_.split(text, parse_special)) {
      if (piece.id >= 0)
        ids.push_back(piece.id);
      else
        encode_chunk(piece.text, ids);
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::string out;
    // The start of a sequence counts as following BOS, so decode(encode(x)) drops the dummy prefix.
    TokenId prev = 1;
    for (TokenId id : ids) {
      check_id(id);
      if (id <= 2) {
        if (!skip_special) out += specials_.by_id(id)->content;
        prev = id;
        continue;
      }
      std::string_view p = pieces_[static_cast<size_t>(id)];
      if (prev == 1 && !p.empty() && p[0] == ' ') p.remove_prefix(1);
      const int byte = parse_byte_piece(p);
      if (byte >= 0)
        out.push_back(static_cast<char>(byte));
      else
        out += p;
      prev = id;
    }
    return sanitize_utf8(out);
  }

  std::string piece(TokenId id) const override {
    check_id(id);
    return pieces_[static_cast<size_t>(id)];
  }
  std::optional<TokenId> find(std::string_view piece) const override {
    if (auto id = specials_.find(piece)) return id;
    auto it = lookup_.find(std::string(piece));
    if (it == lookup_.end()) return std::nullopt;
    return it->second;
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  std::optional<TokenId> bos_id() const override { return 1; }
  std::vector<TokenId> eos_ids() const override { return {2}; }
  bool is_special(TokenId id) const override { return id >= 0 && id <= 2; }

 private:
  void check_id(TokenId id) const {
    if (id < 0 || id >= static_cast<TokenId>(pieces_.size()))
      fail_usage("{}: token id {} is not in the vocabulary (size {})", path_, id, pieces_.size());
  }

  TokenId lookup(const std::string& s) const {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }

  void encode_chunk(std::string_view text, std::vector<TokenId>& ids) const {
    if (text.empty()) return;
    std::vector<TokenId> tokens;
    if (TokenId prefix = lookup(" "); prefix >= 0) tokens.push_back(prefix);
    for (size_t i = 0; i < text.size();) {
      const size_t n =
          std::min(utf8_char_len(static_cast<unsigned char>(text[i])), text.size() - i);
      const std::string ch(text.substr(i, n));
      i += n;
      if (TokenId id = lookup(ch); id >= 0) {
        tokens.push_back(id);
      } else {
        for (unsigned char c : ch) tokens.push_back(static_cast<TokenId>(c) + 3);
      }
    }
    // Highest score first: the priority is minus the merged piece's score.
    std::string joined;
    merge_pairs<float>(tokens,
                       [&](TokenId a, TokenId b) -> std::optional<std::pair<float, TokenId>> {
                         joined = pieces_[static_cast<size_t>(a)];
                         joined += pieces_[static_cast<size_t>(b)];
                         const TokenId id = lookup(joined);
                         if (id < 0) return std::nullopt;
                         return std::pair<float, TokenId>{-scores_[static_cast<size_t>(id)], id};
                       });
    ids.insert(ids.end(), tokens.begin(), tokens.end());
  }

  std::string path_;
  int32_t max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, TokenId> lookup_;
  AddedTokens specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_llama2c_tokenizer(const std::filesystem::path& path) {
  return std::make_unique<Llama2cTokenizer>(path);
}

}  // namespace ming::text::detail
