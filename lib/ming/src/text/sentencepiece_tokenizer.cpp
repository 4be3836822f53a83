// SentencePiece models (LLaMA-2's tokenizer.model, or one made by spm_train) via libsentencepiece.
//
// libsentencepiece has no notion of special tokens written in text: "<s>" is spelled out as
// characters. Hugging Face's LLaMA tokenizers split the text on the control pieces first and
// encode each chunk on its own (legacy behaviour: every chunk gets the dummy-prefix space), which
// is what encode() does here when parse_special is on.
#include <sentencepiece_processor.h>

#include <algorithm>

#include "ming/core/error.h"
#include "text/factories.h"
#include "text/unicode.h"

namespace ming::text::detail {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, const AddedTokens& extra,
                         std::optional<TokenId> bos_override, std::vector<TokenId> extra_eos)
      : path_(path.string()) {
    const auto status = sp_.Load(path_);
    if (!status.ok())
      fail_usage("{}: not a loadable SentencePiece model: {}", path_, status.ToString());
    pieces_ = sp_.GetPieceSize();
    for (int id = 0; id < pieces_; ++id) {
      if (sp_.IsControl(id) || sp_.IsUnknown(id))
        added_.add({sp_.IdToPiece(id), id, /*special=*/true, false, false});
    }
    for (const auto& t : extra.all()) {
      if (t.id < pieces_ && !(sp_.IsControl(t.id) || sp_.IsUnknown(t.id)) &&
          sp_.IdToPiece(t.id) == t.content)
        continue;  // an ordinary or user-defined piece: SentencePiece matches those itself
      added_.add(t);
    }
    vocab_size_ = pieces_;
    for (const auto& t : added_.all()) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    if (bos_override) {
      bos_ = bos_override;
    } else if (sp_.bos_id() >= 0) {
      bos_ = sp_.bos_id();
    }
    if (sp_.eos_id() >= 0) eos_.push_back(sp_.eos_id());
    for (TokenId id : extra_eos)
      if (std::find(eos_.begin(), eos_.end(), id) == eos_.end()) eos_.push_back(id);
  }

  std::vector<TokenId> encode(std::string_view raw, bool add_bos,
                              bool parse_special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<TokenId> ids;
    if (add_bos && bos_) ids.push_back(*bos_);
    std::vector<int> chunk;
    for (const auto& piece : added_.split(text, parse_special)) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      const auto status = sp_.Encode(piece.text, &chunk);
      if (!status.ok()) fail("{}: SentencePiece encode failed: {}", path_, status.ToString());
      ids.insert(ids.end(), chunk.begin(), chunk.end());
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::string out, part;
    std::vector<int> run;
    const auto flush = [&] {
      if (run.empty()) return;
      const auto status = sp_.Decode(run, &part);
      if (!status.ok()) fail("{}: SentencePiece decode failed: {}", path_, status.ToString());
      out += part;
      run.clear();
    };
    for (TokenId id : ids) {
      if (id < 0 || id >= vocab_size_)
        fail_usage("{}: token id {} is not in the vocabulary (size {})", path_, id, vocab_size_);
      const AddedToken* t = added_.by_id(id);
      if (!t) {
        run.push_back(id);
        continue;
      }
      if (skip_special && t->special) continue;  // skipped ids don't split the run
      // Each chunk between special tokens was encoded with its own dummy prefix; decoding the
      // chunks separately removes exactly those prefixes again.
      flush();
      out += t->content;
    }
    flush();
    return sanitize_utf8(out);
  }

  std::string piece(TokenId id) const override {
    if (const AddedToken* t = added_.by_id(id); t && id >= pieces_) return t->content;
    if (id < 0 || id >= pieces_)
      fail_usage("{}: token id {} is not in the vocabulary (size {})", path_, id, vocab_size_);
    return sp_.IdToPiece(id);
  }

  std::optional<TokenId> find(std::string_view piece) const override {
    if (auto id = added_.find(piece)) return id;
    const int id = sp_.PieceToId(piece);
    // PieceToId answers unk_id for unknown pieces; only a real match counts.
    if (id >= 0 && id < pieces_ && sp_.IdToPiece(id) == piece) return id;
    return std::nullopt;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return bos_; }
  std::vector<TokenId> eos_ids() const override { return eos_; }
  bool is_special(TokenId id) const override {
    const AddedToken* t = added_.by_id(id);
    return t && t->special;
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  int pieces_ = 0;
  int64_t vocab_size_ = 0;
  AddedTokens added_;
  std::optional<TokenId> bos_;
  std::vector<TokenId> eos_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& path,
                                                        const AddedTokens& extra,
                                                        std::optional<TokenId> bos_override,
                                                        std::vector<TokenId> extra_eos) {
  return std::make_unique<SentencePieceTokenizer>(path, extra, bos_override, std::move(extra_eos));
}

}  // namespace ming::text::detail
