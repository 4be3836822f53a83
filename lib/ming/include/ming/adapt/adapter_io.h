// Adapter folders: PEFT-compatible save/load, plus import of MING-MOE's released checkpoints.
//
// Folder layout (written atomically through io::StagedDir):
//   adapter_config.json        PEFT LoraConfig fields, plus a "moe" block when needed (below)
//   adapter_model.safetensors  every adapter tensor, fp32
//
// Tensor names (M = the projection's HF module path, e.g. model.layers.0.self_attn.q_proj):
//   base_model.model.M.lora_A.weight                  (r, in)    plain LoRA (PEFT's own names)
//   base_model.model.M.lora_B.weight                  (out, r)
//   base_model.model.M.experts.{i}.lora_A.weight      (r, in)    MoLoRA expert i, i in [0, E)
//   base_model.model.M.experts.{i}.lora_B.weight      (out, r)
//   base_model.model.M.router.weight                  (E, in)    router logits = W x + b
//   base_model.model.M.router.bias                    (E)        when router_bias
//   base_model.model.M.shared_expert.lora_A.weight    (r, in)    when shared_expert
//   base_model.model.M.shared_expert.lora_B.weight    (out, r)
//
// PEFT compatibility (PEFT >= 0.7, for use_rslora / rank_pattern / alpha_pattern):
// - target_modules lists only the plain-LoRA groups' targets; MoLoRA projections never appear
//   there, so PEFT never wraps an MLP projection with a fresh (random A, zero B) LoRA and never
//   reports MoLoRA projections as "missing keys". The per-group r/alpha that differ from the
//   top-level values go to rank_pattern/alpha_pattern, keyed by the group's suffix targets.
// - An adapter with only plain-LoRA groups that PEFT can express (one dropout and one use_rslora
//   for all groups) is written with PEFT's fields only: PEFT before 0.14 rejects unknown keys in
//   adapter_config.json, so such an adapter loads in any PEFT >= 0.7 unchanged.
// - Otherwise a "moe" block is added: {"format": "ming-molora", "version": 1, "experts", "top_k",
//   "router_bias" (of the first MoLoRA group), "targets": {suffix: experts}, "balance_loss",
//   "balance_loss_coef", "router_z_loss_coef", "groups": [full TargetGroup objects]}. "groups"
//   is what ming reads back; the rest summarises for people. PEFT >= 0.14 ignores the block with
//   a warning and loads the attention LoRA alone (expert/router tensors are unexpected keys for
//   it, so the MLP runs as the plain base model); an adapter whose groups are all MoLoRA has an
//   empty target_modules and is not loadable by PEFT at all.
//
// Loading (load_adapter): the config comes from the "moe" groups when present, else from the
// PEFT fields (target_modules list -> suffix targets, string -> one "re:" regex; rank_pattern,
// alpha_pattern). Then adapters are injected and every expected tensor is looked up; all
// missing, unexpected and wrongly shaped tensors are reported together in one UsageError.
//
// MING-MOE's released format is recognised automatically: a folder with non_lora_trainables.bin
// (a torch.save dict, read with torch::pickle_load) and/or MING-style names anywhere:
//   ....mlp.{gate,up,down}_proj.experts.{i}.lora_{A,B}_{i}.weight   ->
//   experts.{i}.lora_{A,B}.weight
//   ....mlp.{proj}.switch.{weight,bias}                             -> router.{weight,bias}
//   ....mlp.{proj}.share_experts.lora_{A,B}.weight                  ->
//   shared_expert.lora_{A,B}.weight
//   "...lora_A.default.weight" (PEFT adapter-name infix)            -> "...lora_A.weight"
// With no "moe" block, a MoLoRA group is derived from those tensors (experts = number found, r
// from the shapes, alpha = lora_alpha, top_k = the release's config.json num_experts_per_token
// (LoadAdapterOptions::ming_moe_top_k overrides; neither: 2), router bias
// and shared expert when present) and placed before the PEFT group, so projections that PEFT's
// target_modules also lists get the MoLoRA layer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/adapt/config.h"
#include "ming/io/safetensors.h"

namespace ming::adapt {

inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";
inline constexpr const char* kMingNonLoraFile = "non_lora_trainables.bin";

// "base_model.model." + module + "." + leaf
std::string adapter_key(const std::string& module, const std::string& leaf);

// Every adapter tensor of `module` under its file name (see above), as fp32 views of the live
// parameters (expert i of a MoLoRA layer is a slice of its stacked (E, r, in) parameter).
io::NamedTensors adapter_state(torch::nn::Module& module);

// adapter_config.json for `config` (see above for when the "moe" block is written).
nlohmann::json adapter_config_json(const AdapterConfig& config,
                                   const std::string& base_model_name_or_path);
// Inverse of adapter_config_json for ming and PEFT files; `where` names the file in errors.
// UsageError on peft_type other than LORA, bias other than "none", fan_in_fan_out, use_dora,
// or non-empty modules_to_save (none of which ming can represent).
AdapterConfig adapter_config_from_json(const nlohmann::json& j, const std::string& where);

// Writes dir/adapter_config.json + dir/adapter_model.safetensors atomically (a staging folder
// renamed over `dir`; an existing folder is replaced only when `replace`).
void save_adapter(const std::filesystem::path& dir, torch::nn::Module& module,
                  const AdapterConfig& config, const std::string& base_model_name_or_path,
                  bool replace = true);

struct LoadAdapterOptions {
  bool trainable = false;  // false: adapter parameters get requires_grad = false
  // Experts per token of a MING-MOE release: > 0 overrides; 0 takes num_experts_per_token from
  // the release's config.json, else 2 (what the released models use). A log line says which.
  int64_t ming_moe_top_k = 0;
};

struct LoadedAdapter {
  AdapterConfig config;
  InjectedAdapters injected;
  std::string base_model_name_or_path;
  std::string format;  // "ming", "peft" or "ming-moe"
};

// Injects the adapters described by `dir` into `module` and loads their weights (see above).
LoadedAdapter load_adapter(torch::nn::Module& module, const std::filesystem::path& dir,
                           const LoadAdapterOptions& options = {});

// Reads a torch.save file holding a dict of tensors (e.g. non_lora_trainables.bin). UsageError
// naming the file when it is not a torch.save archive or not a str -> Tensor dict.
std::map<std::string, torch::Tensor> read_torch_save_dict(const std::filesystem::path& path);

}  // namespace ming::adapt
