// libFuzzer entry points for a fuzzer built from exactly one fuzz/targets/<name>.cpp.
#include <cstdlib>
#include <cstdio>

#include "fuzz.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (ming::fuzz::targets().size() != 1) {
    std::fprintf(stderr, "fuzz: expected one target in this fuzzer, found %zu\n",
                 ming::fuzz::targets().size());
    std::abort();
  }
  ming::fuzz::initialise();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ming::fuzz::targets().front().run(data, size);
  return 0;
}
