// MING-MOE's non_lora_trainables.bin: a torch.save archive of a str -> tensor dict.
#include "../fuzz.h"
#include "ming/adapt/adapter_io.h"

MING_FUZZ_TARGET(torch_pickle) {
  const auto path =
      ming::fuzz::write_file("non_lora_trainables.bin", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    for (const auto& [name, tensor] : ming::adapt::read_torch_save_dict(path)) tensor.sum();
  });
}
