// The shape and numerics of a decoder from the LLaMA / Mistral / Qwen2 family, as Hugging Face's
// `config.json` describes it.
//
// One struct covers the three architectures because they differ only in flags: Qwen2 has q/k/v
// biases, LLaMA may have `attention_bias` (q/k/v and o), LLaMA-3.1 adds "llama3" RoPE frequency
// scaling, small models tie the output head to the embedding. Everything not understood is
// rejected with a message naming config.json and the key, rather than silently computing a
// different model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ming::model {

// RoPE frequency scaling, the types transformers implements (modeling_rope_utils.py):
//  linear   - every inverse frequency divided by `factor`
//  dynamic  - NTK-aware: the base grows with the sequence length once it passes
//             max_position_embeddings, recomputed as the sequence grows (as transformers' forward)
//  yarn     - interpolation for low frequencies, extrapolation for high ones, a linear ramp
//             between (beta_fast/beta_slow rotations), cos/sin scaled by the attention factor
//  longrope - per-frequency factors: short_factor up to original_max_position_embeddings,
//             long_factor past it; cos/sin scaled by the attention factor
//  llama3   - LLaMA-3.1: long wavelengths divided by `factor`, short ones kept, a blend between
struct RopeScaling {
  std::string rope_type = "llama3";
  double factor = 8.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;
  std::optional<double> attention_factor;         // yarn, longrope: derived from factor when absent
  double beta_fast = 32.0;                        // yarn
  double beta_slow = 1.0;                         // yarn
  std::optional<double> mscale, mscale_all_dim;   // yarn (DeepSeek-style attention factor)
  bool truncate = true;                           // yarn: round the correction range outwards
  std::vector<double> short_factor, long_factor;  // longrope, head_dim / 2 each
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // < num_attention_heads: grouped-query attention
  int64_t head_dim = 0;              // 0 in the file means hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  int64_t max_position_embeddings = 4096;
  std::optional<int64_t> sliding_window;  // Mistral / Qwen2 with use_sliding_window
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; LLaMA when attention_bias
  bool o_bias = false;    // LLaMA attention_bias
  bool mlp_bias = false;  // LLaMA mlp_bias
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype = "float32";  // the dtype the weights were saved in

  // Attention heads' width: head_dim if given, else hidden_size / num_attention_heads.
  int64_t head_size() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM".
  std::string architecture() const;

  // Parses and validates a config.json object; `where` (the file path) prefixes every error.
  // Throws UsageError naming the key for unknown architectures, unsupported rope_scaling or
  // hidden_act, and inconsistent sizes.
  static ModelConfig from_json(const nlohmann::json& json, const std::string& where);
  // Reads `dir/config.json` (or the file itself when `path` is a file).
  static ModelConfig load(const std::filesystem::path& path);

  // A config.json that transformers loads as this architecture.
  nlohmann::json to_json() const;

  // Number of parameters (embedding and head counted once when tied).
  int64_t parameter_count() const;
};

}  // namespace ming::model
