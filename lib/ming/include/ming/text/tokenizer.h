// One interface over every tokenizer a model folder can carry.
//
// Implementations: SentencePiece `tokenizer.model` (libsentencepiece), byte-level BPE from
// `tokenizer.json`, `vocab.json` + `merges.txt` or a `*.tiktoken` rank file (Qwen2 / LLaMA-3 /
// GPT-2 pre-tokenizer patterns), and the llama2.c `tokenizer.bin` format. Encoding matches
// Hugging Face `tokenizers` token for token; decode(encode(x)) == x for any valid UTF-8 x.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ming/io/config.h"

namespace ming::text {

using TokenId = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids. Added/special tokens (e.g. <|im_start|>) written literally in `text` are matched
  // before the model's own splitting when `parse_special` is true. `add_bos` prepends bos_id()
  // when the tokenizer has one (Qwen's have none; LLaMA SentencePiece models do).
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos = false,
                                      bool parse_special = true) const = 0;
  // Ids -> text. Special tokens are rendered unless `skip_special`.
  virtual std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const = 0;
  // The raw piece of one id as the vocabulary stores it (e.g. "▁the", "Ġthe", "<|im_end|>").
  virtual std::string piece(TokenId id) const = 0;
  // Exact id of a piece or added token, if any.
  virtual std::optional<TokenId> find(std::string_view piece) const = 0;
  virtual int64_t vocab_size() const = 0;

  virtual std::optional<TokenId> bos_id() const = 0;
  // Ids that end generation (e.g. </s>; <|im_end|> and <|endoftext|> for Qwen chat).
  virtual std::vector<TokenId> eos_ids() const = 0;
  virtual bool is_special(TokenId id) const = 0;
};

// What to do with a bare `*.tiktoken` rank file, which carries no pre-tokenizer or special tokens.
enum class Pretokenizer { qwen2, llama3, gpt2 };
// The first name of each is the one written; "qwen", "llama-3", "gpt-2" are read too.
constexpr config::NameTable<Pretokenizer, 6> enum_names(Pretokenizer) {
  return {{{Pretokenizer::qwen2, "qwen2"},
           {Pretokenizer::llama3, "llama3"},
           {Pretokenizer::gpt2, "gpt2"},
           {Pretokenizer::qwen2, "qwen"},
           {Pretokenizer::llama3, "llama-3"},
           {Pretokenizer::gpt2, "gpt-2"}}};
}

// By the table above; parse throws UsageError listing the names.
Pretokenizer parse_pretokenizer(const std::string& name);
std::string pretokenizer_name(Pretokenizer pretokenizer);

struct TokenizerLoadOptions {
  // Pattern, normaliser and special tokens for a bare `*.tiktoken` file (the family's special
  // tokens follow the last rank: Qwen <|endoftext|> = 151643, <|im_start|>, <|im_end|>,
  // <|extra_0..204|>; LLaMA-3 <|begin_of_text|> = 128000 ... <|eot_id|> = 128009, reserved;
  // GPT-2 <|endoftext|>). Also used for vocab.json + merges.txt without a tokenizer_config.json
  // that names the tokenizer class.
  Pretokenizer tiktoken_pretokenizer = Pretokenizer::qwen2;
};

// Loads from a model folder (tokenizer.json > tokenizer.model > vocab.json+merges.txt >
// *.tiktoken > tokenizer.bin, with tokenizer_config.json / special_tokens_map.json for special
// tokens and BOS/EOS) or from a single tokenizer file. Throws UsageError naming the path when
// nothing loadable is found or a file is malformed.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path,
                                          const TokenizerLoadOptions& options = {});

}  // namespace ming::text
