// A Hugging Face tokenizer.json (byte-level BPE: model, pre_tokenizer, added_tokens, ...).
#include "exercise_tokenizer.h"
#include "../fuzz.h"

MING_FUZZ_TARGET(tokenizer_json) {
  const auto path =
      ming::fuzz::write_file("tokenizer_json/tokenizer.json", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean(
      [&] { ming::fuzz::exercise_tokenizer(*ming::text::load_tokenizer(path)); });
}
