// A llama2.c checkpoint (.bin): the seven-int header, then the fp32 weights it implies.
#include "../fuzz.h"
#include "ming/model/llama2c.h"

MING_FUZZ_TARGET(llama2c_checkpoint) {
  const auto path = ming::fuzz::write_file("model.bin", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] { ming::model::read_llama2c(path); });
}
