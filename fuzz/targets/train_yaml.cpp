// A training config (YAML) with --set overrides (input: the YAML, "\n--8<--\n", then one
// override per line).
#include <sstream>

#include "../fuzz.h"
#include "ming/train/trainer.h"

MING_FUZZ_TARGET(train_yaml) {
  const auto parts = ming::fuzz::split_parts(ming::fuzz::as_text(data, size), 2);
  const auto path = ming::fuzz::write_file("train.yaml", parts[0]);
  std::vector<std::string> overrides;
  std::istringstream lines{std::string(parts[1])};
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) overrides.push_back(line);
  ming::fuzz::expect_clean([&] {
    const auto options = ming::train::load_train_options(path, overrides);
    options.adapter_config();
    options.data_options();
  });
}
