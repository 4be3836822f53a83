// One decoder for the LLaMA / Mistral / Qwen2 family, laid out module for module like Hugging
// Face's *ForCausalLM so that named_parameters() are exactly the checkpoint's tensor names
// ("model.layers.0.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight").
//
//   h = embed(ids)                                            (B, T, D)
//   per layer:  h += o_proj(attn(rope(q_proj(n1(h))), rope(k_proj(n1(h))), v_proj(n1(h))))
//               h += down_proj(silu(gate_proj(n2(h))) * up_proj(n2(h)))
//   logits = lm_head(norm(h))       (lm_head = embed_tokens.weight when tied)
//
// Numerics follow transformers' eager path: weights and activations in the model dtype, RMSNorm
// computed in fp32 and cast back before the weight, rotary cos/sin computed in fp32 (then cast to
// the activation dtype, as HF does), attention scores softmaxed in fp32 (model/attention.h: fused
// or query-blocked kernels that keep no (B, H, T, T) tensor for backward).
//
// Every linear layer is a ming::model::Projection named by its HF module path, where adapters
// attach. A tied output head is not a module (the embedding weight is used directly) so that full
// fine-tuning sees each tensor once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/model/attention.h"
#include "ming/model/config.h"
#include "ming/model/projection.h"

namespace ming::model {

// Keys and values of every layer, preallocated for `capacity` positions:
// keys[l], values[l]: (B, Hkv, capacity, hd). `length` positions are filled.
struct KVCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length = 0;

  int64_t batch() const { return keys.empty() ? 0 : keys[0].size(0); }
  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(2); }
  void reset() { length = 0; }
  // Keeps only the batch rows in `rows` (int64 indices), e.g. to drop finished sequences.
  void select_rows(const torch::Tensor& rows);
};

enum class ForwardOutput {
  logits_all,   // (B, T, V)
  logits_last,  // (B, 1, V): the last position only (generation)
  hidden,       // (B, T, D): after the final norm, before the head (compute logits yourself)
};

struct ForwardOptions {
  // Continue from (and append to) this cache; positions start at cache->length.
  KVCache* cache = nullptr;
  // (B, S) with S = past + T: nonzero for real tokens, 0 for padding (left padding for batches
  // of different lengths). Undefined = every position is real.
  torch::Tensor attention_mask;
  // (B, T) int64. Undefined = derived from attention_mask (count of real tokens before each
  // position), or past .. past+T-1 without a mask.
  torch::Tensor position_ids;
  // (B, T) int64 for packed rows (no cache): a token attends only to earlier tokens with the same
  // non-zero segment id, so examples packed into one row never see each other. Undefined = one
  // segment per row.
  torch::Tensor segment_ids;
  ForwardOutput output = ForwardOutput::logits_all;
  // Activation recomputation: with autograd on (and no cache), each decoder layer keeps only its
  // input for backward and runs again there (model/recompute.h); gradients are unchanged.
  bool recompute = false;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t width, double eps, const torch::TensorOptions& options);
  // (..., D) -> (..., D): weight * (x / sqrt(mean(x^2) + eps)), the normalisation in fp32.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (D)
  double eps;
};
TORCH_MODULE(RMSNorm);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t width, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);  // (B, T) -> (B, T, D)
  torch::Tensor weight;                             // (V, D)
};
TORCH_MODULE(Embedding);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, int64_t layer, const torch::TensorOptions& options);
  // x: (B, T, D); cos/sin: (B, T, 1, hd) in x's dtype; allowed: (B, 1, 1, T, S) bool or
  // undefined (all allowed). Writes this layer's k/v into `cache` at cache->length when given.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, KVCache* cache, int64_t layer);
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, int64_t layer, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, D) -> (B, T, D)
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, int64_t layer, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, KVCache* cache);
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};

 private:
  int64_t layer_;
};
TORCH_MODULE(DecoderLayer);

// The "model." part of the HF module tree.
class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(const ModelConfig& config, const torch::TensorOptions& options);
  Embedding embed_tokens{nullptr};
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Decoder);

class CausalLMImpl : public torch::nn::Module {
 public:
  // Parameters are allocated uninitialised in `options` (dtype, device); load_model fills them,
  // init_random() draws them.
  CausalLMImpl(ModelConfig config, const torch::TensorOptions& options);

  // ids: (B, T) int64. See ForwardOptions / ForwardOutput for what comes back.
  torch::Tensor forward(const torch::Tensor& ids, const ForwardOptions& options = {});
  // hidden (..., D) after the final norm -> logits (..., V).
  torch::Tensor logits(const torch::Tensor& hidden);

  // A cache for `batch` sequences of up to `capacity` positions in the model's dtype and device.
  KVCache new_cache(int64_t batch, int64_t capacity) const;

  // Every Projection of the decoder (q/k/v/o, gate/up/down per layer, then lm_head if untied).
  std::vector<Projection> projections() const;
  // Marks every parameter trainable (full fine-tuning) or frozen (adapters only).
  void set_trainable(bool trainable);
  // Normal(0, std) weights and biases (so tests exercise the bias paths), norms 1 + N(0, std),
  // from the current torch generator: for tests and benchmarks.
  void init_random(double std = 0.02);

  const ModelConfig& config() const { return config_; }
  torch::ScalarType dtype() const;
  torch::Device device() const;

  Decoder model{nullptr};
  Projection lm_head{nullptr};  // null when tie_word_embeddings

 private:
  // (B, T) positions -> cos, sin: (B, T, 1, hd) in `dtype`.
  std::pair<torch::Tensor, torch::Tensor> rotary(const torch::Tensor& positions,
                                                 torch::ScalarType dtype);
  void update_rope_frequencies(const torch::Tensor& positions);
  ModelConfig config_;
  torch::Tensor inv_freq_;           // (hd/2) fp32, scaling applied, for the current length
  torch::Tensor original_inv_freq_;  // for sequences within the original length
  double rope_attention_factor_ = 1.0;
  int64_t rope_seq_len_cached_ = 0;  // dynamic: the length inv_freq_ was computed for
  bool rope_long_context_ = false;   // longrope: inv_freq_ uses long_factor
};
TORCH_MODULE(CausalLM);

// The rotary inverse frequencies theta^(-2i/hd) for i < hd/2 with the configured rope_scaling,
// in fp32 as transformers computes them, for a sequence of `seq_len` positions (dynamic and
// longrope depend on it; 0 = within the original length).
torch::Tensor rope_inverse_frequencies(const ModelConfig& config, int64_t seq_len = 0);
// The factor transformers multiplies cos and sin by (yarn and longrope; 1 otherwise).
double rope_attention_factor(const ModelConfig& config);

}  // namespace ming::model
