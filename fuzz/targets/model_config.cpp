// A model's config.json (LLaMA / Qwen2 / Mistral families, rope scaling variants).
#include "../fuzz.h"
#include "ming/model/config.h"

MING_FUZZ_TARGET(model_config) {
  const auto path = ming::fuzz::write_file("config.json", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    const auto config = ming::model::ModelConfig::load(path);
    config.to_json();
    config.parameter_count();
  });
}
