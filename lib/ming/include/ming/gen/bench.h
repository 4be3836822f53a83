// Decode-speed measurement next to its memory-bandwidth bound.
//
// At batch 1 every decoded token reads every weight once, so tokens/s cannot beat
// (memory bandwidth) / (bytes of weights). Both numbers are measured in the same process, so the
// ratio says how close the decoder runs to the machine's limit.
#pragma once

#include <cstdint>
#include <string>

#include "ming/model/transformer.h"

namespace ming::gen {

// Copy bandwidth in bytes/s, counting bytes read plus bytes written, from `repeats` copies of a
// `bytes`-sized buffer (large enough to miss the caches); the best repeat is reported.
double measure_copy_bandwidth(int64_t bytes = int64_t(1) << 29, int repeats = 5);

struct DecodeBench {
  int64_t batch = 1;
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double tokens_per_second = 0;        // decoded tokens per second, over the whole batch
  double weight_bytes = 0;             // bytes of weights read per decode step
  double copy_bandwidth = 0;           // bytes/s (read + write)
  double bound_tokens_per_second = 0;  // batch * copy_bandwidth / weight_bytes

  std::string summary() const;  // one line for logs and reports
};

// Runs a prefill of `prompt_tokens` random ids, then `new_tokens` single-token decode steps with
// the KV cache (greedy, no sampling overhead), and measures the bandwidth bound with a copy of
// `copy_bytes`.
DecodeBench bench_decode(model::CausalLM& model, int64_t batch = 1, int64_t prompt_tokens = 16,
                         int64_t new_tokens = 32, int64_t copy_bytes = int64_t(1) << 29);

}  // namespace ming::gen
