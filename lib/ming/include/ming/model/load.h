// Hugging Face model folders in and out: config.json + model.safetensors (or shards with
// model.safetensors.index.json) + tokenizer files + generation_config.json.
//
// Loading checks the checkpoint against the config before trusting it: every tensor the config
// implies must exist with exactly the implied shape, and any tensor the model would not use is an
// error (a config that does not match its weights would otherwise load into a wrong model).
// Messages name the tensor, the file holding it and expected vs actual shapes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/model/config.h"
#include "ming/model/transformer.h"
#include "ming/text/chat_template.h"
#include "ming/text/tokenizer.h"

namespace ming::model {

struct LoadOptions {
  // Weights are cast to this dtype; nullopt keeps the checkpoint's torch_dtype.
  std::optional<torch::ScalarType> dtype;
  torch::Device device = torch::kCPU;
  // Skip the tokenizer (e.g. tools that only touch weights).
  bool load_tokenizer = true;
};

struct LoadedModel {
  std::filesystem::path dir;
  ModelConfig config;
  CausalLM model{nullptr};
  std::shared_ptr<text::Tokenizer> tokenizer;  // null when not loaded
  text::ChatTemplate chat_template{text::ChatTemplateKind::raw};
  // generation_config.json (empty object when absent).
  nlohmann::json generation_config = nlohmann::json::object();
  // Token ids that end generation: generation_config's eos_token_id, else config.json's, plus
  // the tokenizer's own, deduplicated.
  std::vector<int64_t> eos_token_ids;
};

// Reads a model folder. Throws UsageError naming the file / tensor / key on any mismatch.
LoadedModel load_model(const std::filesystem::path& dir, const LoadOptions& options = {});

// Builds the model for `config` and fills it from the safetensors in `dir` (no tokenizer).
CausalLM load_weights(const std::filesystem::path& dir, const ModelConfig& config,
                      const LoadOptions& options = {});

// The tensors the config implies, name -> shape, in HF naming (what a checkpoint must hold).
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(
    const ModelConfig& config);

struct SaveOptions {
  // Weights are written in this dtype (nullopt: as they are); config.json's torch_dtype follows.
  std::optional<torch::ScalarType> dtype;
  uint64_t max_shard_bytes = 5ull << 30;
  // Tokenizer files (tokenizer.json, tokenizer.model, tokenizer_config.json, vocab.json, ...)
  // are copied from here when given.
  std::optional<std::filesystem::path> tokenizer_source;
  // generation_config.json contents; an empty object gets bos/eos from the config.
  nlohmann::json generation_config = nlohmann::json::object();
  bool replace = true;  // replace an existing folder
};

// Writes a complete HF model folder atomically (staged, then renamed into place).
void save_model(const std::filesystem::path& dir, const ModelConfig& config, CausalLM& model,
                const SaveOptions& options = {});

// config.json's torch_dtype for a storage dtype ("bfloat16", "float16", "float32"); UsageError
// for any other dtype.
std::string torch_dtype_name(torch::ScalarType dtype);

// Names of the tokenizer-related files save_model copies.
const std::vector<std::string>& tokenizer_file_names();

}  // namespace ming::model
