// A *.tiktoken rank file ("base64 rank" per line).
#include "exercise_tokenizer.h"
#include "../fuzz.h"

MING_FUZZ_TARGET(tiktoken) {
  const auto path = ming::fuzz::write_file("qwen.tiktoken", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean(
      [&] { ming::fuzz::exercise_tokenizer(*ming::text::load_tokenizer(path)); });
}
