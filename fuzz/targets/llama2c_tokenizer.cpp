// llama2.c's tokenizer.bin (max_token_length, then score / length / bytes per token).
#include "exercise_tokenizer.h"
#include "../fuzz.h"

MING_FUZZ_TARGET(llama2c_tokenizer) {
  const auto path = ming::fuzz::write_file("tokenizer.bin", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean(
      [&] { ming::fuzz::exercise_tokenizer(*ming::text::load_tokenizer(path)); });
}
