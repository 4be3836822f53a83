// GPT-2 style vocab.json + merges.txt (input: vocab.json, "\n--8<--\n", merges.txt).
#include "exercise_tokenizer.h"
#include "../fuzz.h"

MING_FUZZ_TARGET(vocab_merges) {
  const auto parts = ming::fuzz::split_parts(ming::fuzz::as_text(data, size), 2);
  const auto vocab = ming::fuzz::write_file("vocab_merges/vocab.json", parts[0]);
  ming::fuzz::write_file("vocab_merges/merges.txt", parts[1]);
  ming::fuzz::expect_clean(
      [&] { ming::fuzz::exercise_tokenizer(*ming::text::load_tokenizer(vocab)); });
}
