// An adapter_config.json (PEFT fields plus ming's "moe" block).
#include "../fuzz.h"
#include "ming/adapt/adapter_io.h"
#include "ming/adapt/config.h"
#include "ming/io/json.h"

MING_FUZZ_TARGET(adapter_config) {
  const auto path = ming::fuzz::write_file("adapter_config.json", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    const auto config =
        ming::adapt::adapter_config_from_json(ming::io::read_json(path), path.string());
    ming::adapt::validate(config);
    ming::adapt::adapter_config_json(config, "base");
  });
}
