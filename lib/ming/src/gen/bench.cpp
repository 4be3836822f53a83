#include "ming/gen/bench.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

namespace ming::gen {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

double measure_copy_bandwidth(int64_t bytes, int repeats) {
  auto src = torch::ones({bytes}, torch::kUInt8);
  auto dst = torch::empty_like(src);
  dst.copy_(src);  // fault the pages in before timing
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    dst.copy_(src);
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0));
  }
  return best;
}

DecodeBench bench_decode(model::CausalLM& model, int64_t batch, int64_t prompt_tokens,
                         int64_t new_tokens, int64_t copy_bytes) {
  torch::NoGradGuard no_grad;
  DecodeBench r;
  r.batch = batch;
  r.prompt_tokens = prompt_tokens;
  r.new_tokens = new_tokens;
  for (const auto& p : model->parameters()) r.weight_bytes += p.numel() * p.element_size();

  const auto device = model->device();
  auto ids = torch::randint(model->config().vocab_size, {batch, prompt_tokens},
                            torch::TensorOptions().dtype(torch::kInt64).device(device));
  auto cache = model->new_cache(batch, prompt_tokens + new_tokens + 1);
  model::ForwardOptions fo;
  fo.cache = &cache;
  fo.output = model::ForwardOutput::logits_last;
  auto t0 = std::chrono::steady_clock::now();
  auto logits = model->forward(ids, fo);
  r.prefill_seconds = seconds_since(t0);
  // One warm-up step outside the timing (first-call allocations, oneDNN primitive creation).
  auto next = logits.argmax(-1);  // (B, 1)
  logits = model->forward(next, fo);
  t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < new_tokens; ++s) {
    next = logits.argmax(-1);
    logits = model->forward(next, fo);
  }
  logits.sum().item<float>();  // wait for the device
  r.decode_seconds = seconds_since(t0);
  r.tokens_per_second = static_cast<double>(batch * new_tokens) / r.decode_seconds;
  r.copy_bandwidth = measure_copy_bandwidth(copy_bytes);
  r.bound_tokens_per_second = batch * r.copy_bandwidth / r.weight_bytes;
  return r;
}

std::string DecodeBench::summary() const {
  return fmt::format(
      "decode {:.1f} tok/s (batch {}, {} new tokens after a {}-token prefill of {:.3f} s); "
      "weights {:.1f} MB/step, copy bandwidth {:.1f} GB/s -> bound {:.1f} tok/s ({:.0f}% of it)",
      tokens_per_second, batch, new_tokens, prompt_tokens, prefill_seconds, weight_bytes / 1e6,
      copy_bandwidth / 1e9, bound_tokens_per_second,
      100.0 * tokens_per_second / bound_tokens_per_second);
}

}  // namespace ming::gen
