// Constructors of the non-BPE tokenizers (private to lib/ming/src/text).
#pragma once

#include <filesystem>
#include <memory>

#include "ming/text/tokenizer.h"
#include "text/added_tokens.h"

namespace ming::text::detail {

// SentencePiece model file; `extra` are added tokens from tokenizer_config.json (ids past the
// model's pieces, or new spellings of its control pieces).
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& path,
                                                        const AddedTokens& extra,
                                                        std::optional<TokenId> bos_override,
                                                        std::vector<TokenId> extra_eos);
// llama2.c tokenizer.bin.
std::unique_ptr<Tokenizer> make_llama2c_tokenizer(const std::filesystem::path& path);

}  // namespace ming::text::detail
