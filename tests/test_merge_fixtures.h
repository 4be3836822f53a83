// Fixtures for the merge / combine / upcycle / prune tests: a tiny random Qwen2-shaped model
// folder, adapter folders with random (non-zero) weights, and logits of model (+ adapter).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/model/load.h"
#include "support.h"
#include "test_adapter_model.h"

namespace ming::test {

// Qwen2 layout (q/k/v bias, GQA, tied embeddings) at toy size; vocab 512 so that the stories260K
// tokenizer (tok512.bin) fits it.
inline model::ModelConfig merge_tiny_qwen2() {
  model::ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 512;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  c.qkv_bias = true;
  c.eos_token_ids = {2};
  c.bos_token_id = 1;
  return c;
}

// Writes a random model folder (with tok512.bin as tokenizer.bin) in `dtype`.
inline void write_tiny_base(const std::filesystem::path& dir, torch::ScalarType dtype,
                            const model::ModelConfig& config = merge_tiny_qwen2(),
                            uint64_t seed = 7) {
  torch::manual_seed(seed);
  model::CausalLM m(config, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.2);
  model::SaveOptions save;
  save.dtype = dtype;
  model::save_model(dir, config, m, save);
  std::filesystem::copy_file(data_dir() / "models" / "tok512.bin", dir / "tokenizer.bin");
}

// Every adapter parameter ~ N(0, scale^2): B non-zero, so the adapter changes the outputs.
inline void randomise(const adapt::InjectedAdapters& injected, double scale = 0.1) {
  torch::NoGradGuard g;
  for (auto p : injected.parameters) p.copy_(torch::randn_like(p) * scale);
}

// An adapter folder for the model folder `base` with random weights.
inline void write_random_adapter(const std::filesystem::path& base,
                                 const std::filesystem::path& dir,
                                 const adapt::AdapterConfig& config, uint64_t seed = 11,
                                 double scale = 0.1) {
  model::LoadOptions load;
  load.load_tokenizer = false;
  load.dtype = torch::kFloat32;
  auto m = model::load_model(base, load);
  torch::manual_seed(seed);
  auto injected = adapt::inject_adapters(*m.model, config);
  randomise(injected, scale);
  adapt::save_adapter(dir, *m.model, config, base.string());
}

// Logits (1, T, V) in fp64 of model folder `dir` (+ adapter) in `dtype` on fixed token ids.
inline torch::Tensor tiny_logits(const std::filesystem::path& dir,
                                 const std::optional<std::filesystem::path>& adapter,
                                 std::optional<torch::ScalarType> dtype = std::nullopt) {
  model::LoadOptions load;
  load.load_tokenizer = false;
  load.dtype = dtype;
  auto m = model::load_model(dir, load);
  if (adapter) adapt::load_adapter(*m.model, *adapter);
  torch::NoGradGuard g;
  m.model->eval();
  auto ids =
      torch::tensor({5, 17, 300, 42, 99, 7, 250, 3, 511, 64, 12, 128}, torch::kInt64).view({1, -1});
  return m.model->forward(ids).to(torch::kFloat64);
}

// A TinyDecoder adapter folder (no model folder needed): for combine/upcycle/prune.
inline void write_tiny_decoder_adapter(const std::filesystem::path& dir,
                                       const adapt::AdapterConfig& config, uint64_t seed,
                                       int64_t hidden = 8, int64_t intermediate = 12,
                                       double scale = 0.3) {
  // Held by a shared_ptr: inject_adapters walks named_modules(include_self = true).
  auto model = std::make_shared<TinyDecoder>(2, hidden, intermediate);
  torch::manual_seed(seed);
  auto injected = adapt::inject_adapters(*model, config);
  randomise(injected, scale);
  adapt::save_adapter(dir, *model, config, "tiny-decoder");
}

// True when `dir` and any "<dir>.tmp-*" staging folder are absent.
inline bool no_output_left(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir)) return false;
  const auto parent = dir.parent_path();
  if (!std::filesystem::exists(parent)) return true;
  for (const auto& e : std::filesystem::directory_iterator(parent))
    if (e.path().filename().string().rfind(dir.filename().string() + ".tmp-", 0) == 0) return false;
  return true;
}

}  // namespace ming::test
