// Process set-up shared by every tool: core count and the allocator policy for large tensors.
#include <doctest/doctest.h>

#include <malloc.h>

#include <thread>

#include <torch/torch.h>

#include "ming/core/runtime.h"

TEST_CASE("runtime: available cores is at least 1 and at most the hardware's") {
  const int n = ming::available_cores();
  CHECK(n >= 1);
  CHECK(n <= static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST_CASE("runtime: a freed 64 MB tensor stays in the heap for the next one") {
  ming::keep_freed_tensor_memory();
  constexpr int64_t kBytes = int64_t(64) << 20;
  {
    auto big = torch::ones({kBytes}, torch::kUInt8);  // touched, so it is really allocated
    CHECK(big.sum().item<int64_t>() == kBytes);
  }
  // glibc's default would have unmapped it (fordblks would not count it); kept, it is free heap.
  CHECK(mallinfo2().fordblks >= static_cast<size_t>(kBytes));
}
