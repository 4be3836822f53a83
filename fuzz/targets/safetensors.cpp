// A .safetensors file: the u64 header length, the JSON header, the data block.
#include "../fuzz.h"
#include "ming/io/safetensors.h"

MING_FUZZ_TARGET(safetensors) {
  const auto path = ming::fuzz::write_file("model.safetensors", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    const auto file = ming::io::SafetensorsFile::open(path);
    for (const auto& info : file->tensors()) file->get(info.name).sum();
  });
}
