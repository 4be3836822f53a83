// tokenizer_config.json (added tokens, BOS/EOS, tokenizer class, chat template) and
// special_tokens_map.json (input: the two files joined by "\n--8<--\n") beside a small valid
// vocab.json + merges.txt; then the chat template the folder declares renders a conversation.
#include "exercise_tokenizer.h"
#include "../fuzz.h"
#include "ming/text/chat_template.h"

MING_FUZZ_TARGET(tokenizer_config) {
  static const bool vocab_written = [] {
    ming::fuzz::write_file("tokenizer_config/vocab.json",
                           R"({"a": 0, "b": 1, "ab": 2, "<|im_end|>": 3, "\u0120": 4, "c": 5})");
    ming::fuzz::write_file("tokenizer_config/merges.txt", "#version: 0.2\na b\n");
    return true;
  }();
  (void)vocab_written;
  const auto parts = ming::fuzz::split_parts(ming::fuzz::as_text(data, size), 2);
  const auto config = ming::fuzz::write_file("tokenizer_config/tokenizer_config.json", parts[0]);
  ming::fuzz::write_file("tokenizer_config/special_tokens_map.json", parts[1]);
  const auto dir = config.parent_path();
  ming::fuzz::expect_clean([&] {
    ming::fuzz::exercise_tokenizer(*ming::text::load_tokenizer(dir));
    const auto kind = ming::text::detect_chat_template(dir);
    ming::text::render_chat(kind,
                            {{ming::text::Role::system, "s"},
                             {ming::text::Role::user, "q"},
                             {ming::text::Role::assistant, "a"}},
                            {.add_generation_prompt = true});
  });
}
