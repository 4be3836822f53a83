// Import of llama2.c checkpoints (Karpathy's "tinyllamas": stories260K, stories15M, ...) into a
// Hugging Face LLaMA model folder.
//
// Checkpoint layout (llama2.c run.c, "legacy" version 0): seven int32 (dim, hidden_dim, n_layers,
// n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is not
// shared with the embedding), then float32 arrays: token_embedding (V, D), rms_att (L, D),
// wq (L, H*hd, D), wk (L, Hkv*hd, D), wv (L, Hkv*hd, D), wo (L, D, H*hd), rms_ffn (L, D),
// w1 (L, F, D), w2 (L, D, F), w3 (L, F, D), rms_final (D), freq_cis_real and freq_cis_imag
// (seq_len * hd/2 each; recomputed, skipped), then wcls (V, D) when unshared.
//
// llama2.c rotates interleaved pairs (x0,x1),(x2,x3).. while HF rotates halves; the q/k rows are
// permuted exactly as transformers' convert_llama_weights_to_hf.py does so that the HF model
// computes the same function. llama2.c uses rms eps 1e-5 and rope theta 10000.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include <torch/torch.h>

#include "ming/io/safetensors.h"
#include "ming/model/config.h"

namespace ming::model {

struct Llama2cCheckpoint {
  ModelConfig config;
  io::NamedTensors tensors;  // HF names, fp32, q/k already permuted to rotate-half
};

// Reads and validates a checkpoint (file size must match the header exactly). UsageError naming
// the file on a bad header or size.
Llama2cCheckpoint read_llama2c(const std::filesystem::path& checkpoint);

// HF's permute for rotary weights: (n_heads*hd, in) rows reordered from interleaved pairs to
// halves within each head.
torch::Tensor permute_rotary_rows(const torch::Tensor& w, int64_t n_heads);

struct Llama2cImportOptions {
  std::filesystem::path checkpoint;
  // llama2.c tokenizer.bin (e.g. tok512.bin); copied as tokenizer.bin into the folder.
  std::optional<std::filesystem::path> tokenizer;
  std::filesystem::path output;
  bool replace = true;
};

// Writes a HF folder: config.json (LlamaForCausalLM), model.safetensors (fp32),
// generation_config.json, and with a tokenizer: tokenizer.bin + tokenizer_config.json
// (bos <s> = 1, eos </s> = 2, as llama2.c's sentencepiece vocabularies).
void import_llama2c(const Llama2cImportOptions& options);

}  // namespace ming::model
