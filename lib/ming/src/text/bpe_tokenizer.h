// Byte-pair encoding with a Hugging Face-style pipeline (normalizer -> pre-tokenizer -> BPE model
// -> decoder). One class serves tokenizer.json, vocab.json + merges.txt and *.tiktoken files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/text/tokenizer.h"
#include "text/added_tokens.h"
#include "text/regex.h"

namespace ming::text::detail {

struct NormalizerStep {
  enum class Kind { nfc, nfd, nfkc, nfkd, lowercase, prepend, replace, strip };
  Kind kind = Kind::nfc;
  std::string text;                    // prepend: the prefix; replace: the replacement
  std::shared_ptr<const Regex> regex;  // replace: what to replace
  bool left = false, right = false;    // strip
};

enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

struct PreTokenizerStep {
  enum class Kind { split, byte_level, metaspace };
  Kind kind = Kind::split;
  std::shared_ptr<const Regex> regex;  // split; byte_level when use_regex (GPT-2 pattern)
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  bool add_prefix_space = false;             // byte_level
  std::string replacement = "\xE2\x96\x81";  // metaspace: "▁"
  bool prepend_always = true;                // metaspace: "always" (true) or "first" (false)
  bool prepend = true;                       // metaspace: prepend_scheme != "never"
  bool split_on_replacement = true;          // metaspace
};

struct DecoderStep {
  enum class Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace };
  Kind kind = Kind::byte_level;
  std::string pattern, content;              // replace: pattern -> content; strip: content
  int start = 0, stop = 0;                   // strip
  std::string replacement = "\xE2\x96\x81";  // metaspace
  bool prepend = true;  // metaspace: strip the space it prepended to the first token
};

// Everything a BpeTokenizer needs; the loaders below fill it from the various file formats.
struct BpeSpec {
  std::string source;               // file it came from, for messages
  std::vector<std::string> pieces;  // id -> vocabulary string ("" for holes)
  std::unordered_map<std::string, TokenId> vocab;
  // HF merges: (left id << 32 | right id) -> (rank, merged id).
  std::unordered_map<uint64_t, std::pair<int32_t, TokenId>> merges;
  // tiktoken: no merge list; a pair merges when its concatenation is a token, lowest id first.
  bool rank_merges = false;
  bool byte_fallback = false;
  bool ignore_merges = false;  // a word that is itself a token is not split (tiktoken, LLaMA-3)
  bool fuse_unk = false;
  std::optional<TokenId> unk;
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  std::vector<DecoderStep> decoders;
  AddedTokens added;
  std::optional<TokenId> bos;
  std::vector<TokenId> eos;
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec);

// tokenizer.json (model.type BPE). Throws UsageError naming `path` and the key at fault.
BpeSpec bpe_spec_from_tokenizer_json(const nlohmann::json& json, const std::filesystem::path& path);
// GPT-2-style vocab.json + merges.txt with the given pre-tokenizer pattern.
BpeSpec bpe_spec_from_vocab_merges(const std::filesystem::path& vocab_path,
                                   const std::filesystem::path& merges_path,
                                   Pretokenizer pretokenizer);
// A *.tiktoken rank file plus the pattern, normaliser and special tokens of `pretokenizer`.
BpeSpec bpe_spec_from_tiktoken(const std::filesystem::path& path, Pretokenizer pretokenizer);

// Split pattern + normaliser for a family (shared by the tiktoken and vocab/merges loaders).
void set_family_pipeline(BpeSpec& spec, Pretokenizer pretokenizer);
// The family's special tokens appended after `first_id` (tiktoken files carry none).
void add_family_specials(BpeSpec& spec, Pretokenizer pretokenizer, TokenId first_id);

}  // namespace ming::text::detail
