// Adapter folders without their base model: what combine, upcycle, prune and convert work on.
//
// Why a "shell": load_adapter / save_adapter (adapter_io.h) are the one place that knows every
// file format (ming, PEFT, MING-MOE's release) and checks every tensor name and shape, but they
// work on a module tree with Projections to attach to. Reshaping adapters needs no base weights,
// so a shell is a module tree of placeholder Projections whose paths and (in, out) sizes are
// read off the adapter's own tensors. The placeholder weights are zero-stride views of a single
// element: a shell costs nothing however large the base model, and must never be run.
//
//   auto shell = ming::adapt::load_adapter_shell("runs/molora");        // any supported format
//   for (auto& [path, adapter] : shell.adapter.injected.adapters) ...   //
//   LoraAdapter/MoloraAdapter ming::adapt::save_adapter("out", *shell.module, shell.adapter.config,
//   "Qwen/Qwen1.5-0.5B");
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"

namespace ming::adapt {

struct ProjectionShape {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool operator==(const ProjectionShape& o) const {
    return in_features == o.in_features && out_features == o.out_features;
  }
  bool operator!=(const ProjectionShape& o) const { return !(*this == o); }
};

// "model.layers.10.mlp.up_proj" sorts after "model.layers.9.mlp.up_proj": digit runs compare as
// numbers, so shells and output files list layers in model order.
struct NaturalLess {
  bool operator()(const std::string& a, const std::string& b) const;
};
using ShapeMap = std::map<std::string, ProjectionShape, NaturalLess>;

// The HF module path an adapter tensor name belongs to ("" when the name is not an adapter
// tensor), for ming, PEFT and MING-MOE names alike:
//   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight     ->
//   model.layers.0.self_attn.q_proj
//   base_model.model.model.layers.0.mlp.up_proj.experts.3.lora_B_3.weight ->
//   model.layers.0.mlp.up_proj model.layers.0.mlp.up_proj.switch.weight ->
//   model.layers.0.mlp.up_proj
std::string adapter_tensor_module(const std::string& key);

// Projection sizes implied by the tensors of adapter folder `dir` (adapter_model.safetensors or
// adapter_model.bin, plus non_lora_trainables.bin): in from lora_A (r, in) or the router (E, in),
// out from lora_B (out, r). UsageError naming the folder and module when the tensors disagree
// (two in sizes) or leave a size unknown.
ShapeMap adapter_projection_shapes(const std::filesystem::path& dir);

// A module tree with one placeholder Projection per entry (see above); never call forward.
std::shared_ptr<torch::nn::Module> make_projection_shell(const ShapeMap& shapes);

struct AdapterShell {
  std::filesystem::path dir;
  ShapeMap shapes;
  std::shared_ptr<torch::nn::Module> module;  // the placeholder projections, adapters attached
  LoadedAdapter adapter;                      // config, injected adapters (fp32, frozen), format
};

// Loads adapter folder `dir` (any format load_adapter reads) into a fresh shell.
AdapterShell load_adapter_shell(const std::filesystem::path& dir,
                                const LoadAdapterOptions& options = {});

// The module path -> adapter of a shell, split by kind.
std::vector<std::pair<std::string, std::shared_ptr<LoraAdapter>>> lora_adapters(
    const LoadedAdapter& adapter);
std::vector<std::pair<std::string, std::shared_ptr<MoloraAdapter>>> molora_adapters(
    const LoadedAdapter& adapter);

// A rank_pattern / alpha_pattern key that selects exactly `module_path` (regex-escaped; PEFT
// and ming both full-match "(.*\.)?KEY").
std::string exact_pattern_key(const std::string& module_path);

// ---- convert ----------------------------------------------------------------------------------

struct ConvertAdapterOptions {
  std::filesystem::path input;   // adapter folder: MING-MOE release, PEFT or ming
  std::filesystem::path output;  // written atomically
  int64_t ming_moe_top_k = 0;    // > 0 overrides a MING-MOE release's config.json (see
                                 // LoadAdapterOptions)
  bool replace = true;
  // convert_to_ming_moe: the dtype of the written tensors (fp32 is lossless; MING-MOE's own
  // files carry its training dtype, bf16 in its scripts) and the base model's config.json (or
  // its folder) that the release's config.json extends; empty: the adapter's
  // base_model_name_or_path when that is a local folder.
  torch::ScalarType ming_moe_dtype = torch::kFloat32;
  std::filesystem::path base_config;
};

struct ConvertReport {
  std::string input_format;      // "ming-moe", "peft" or "ming"
  int64_t n_lora = 0;            // plain-LoRA projections written
  int64_t n_molora_written = 0;  // MoLoRA projections written
  int64_t n_molora_dropped = 0;  // MoLoRA projections left out (to PEFT)
};

// Any adapter folder -> ming's format (adapter_config.json with the "moe" block when there are
// experts, adapter_model.safetensors under ming's names). For MING-MOE's release this is the
// import: experts.{i}.lora_A_{i} -> experts.{i}.lora_A, switch -> router, and a "moe" block that
// records k.
ConvertReport convert_to_ming(const ConvertAdapterOptions& options);

// Any adapter folder -> a plain PEFT LoRA adapter (loads in PEFT >= 0.7 unchanged): only the
// plain-LoRA parts; MoLoRA experts and routers are dropped with a warning (PEFT cannot represent
// them; use `ming-merge merge` to keep them). Groups that PEFT's single config cannot express are
// made expressible without changing the function: rsLoRA groups get alpha' = alpha * sqrt(r)
// (the same scaling alpha/sqrt(r) = alpha'/r) through alpha_pattern, and differing dropouts
// (training-only) take the first group's with a warning. UsageError when no plain LoRA is left.
ConvertReport convert_to_peft(const ConvertAdapterOptions& options);

// A ming MoLoRA adapter -> MING-MOE's release files, which its loader (ming/model/builder.py)
// and ming's importer both read:
//   adapter_config.json + adapter_model.safetensors  the attention LoRA, as convert_to_peft
//   non_lora_trainables.bin   a torch.save dict (torch.load reads it) of
//                             base_model.model.M.experts.{i}.lora_{A,B}_{i}.weight,
//                             base_model.model.M.switch.{weight,bias} and, with a shared expert,
//                             base_model.model.M.share_experts.lora_{A,B}.weight
//   config.json               the base's config.json plus num_experts, num_experts_per_token,
//                             share_expert, expert_selection "top_k", use_rslora
// Importing the result (convert_to_ming) gives back every tensor bit for bit at fp32.
// UsageError for what the format cannot hold: MoLoRA groups that differ in experts / k / r /
// alpha / router bias / shared expert, rsLoRA experts, experts whose r or alpha differ from the
// attention LoRA's, or no attention LoRA at all.
ConvertReport convert_to_ming_moe(const ConvertAdapterOptions& options);

}  // namespace ming::adapt
