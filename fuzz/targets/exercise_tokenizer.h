// What the tokenizer targets do with a tokenizer that loaded: encode and decode mixed text, and
// look up every piece, so that a hostile vocabulary is also exercised, not only parsed.
#pragma once

#include <algorithm>
#include <string>

#include "ming/text/tokenizer.h"

namespace ming::fuzz {

inline void exercise_tokenizer(const text::Tokenizer& tokenizer) {
  static const std::string kText =
      "Hello world!  The patient's BP is 120/80 mmHg.\n\n患者主诉：头痛三天。<|im_start|>user\n"
      "\xF0\x9F\x98\x80 <s>x</s> \xC3\x28 \t123456";
  for (bool special : {false, true}) {
    const auto ids = tokenizer.encode(kText, /*add_bos=*/true, special);
    tokenizer.decode(ids, /*skip_special=*/false);
    tokenizer.decode(ids, /*skip_special=*/true);
  }
  const int64_t shown = std::min<int64_t>(tokenizer.vocab_size(), 512);
  for (int64_t id = 0; id < shown; ++id) {
    const std::string piece = tokenizer.piece(static_cast<text::TokenId>(id));
    tokenizer.find(piece);
    tokenizer.is_special(static_cast<text::TokenId>(id));
  }
}

}  // namespace ming::fuzz
