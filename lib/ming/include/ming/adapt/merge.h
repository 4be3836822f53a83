// Folding adapters into the base weights: a plain HF model folder that any LLaMA/Qwen2 runtime
// (transformers, llama.cpp's convert_hf_to_gguf, vLLM) loads without ming.
//
// Plain LoRA folds exactly: W' = W + s * B A (s = alpha / r, or alpha / sqrt(r) with rsLoRA),
// computed in fp32 from the fp32 adapter masters and written in the output dtype, so the merged
// model equals base + adapter up to one rounding of W' to that dtype.
//
// MoLoRA cannot fold exactly: its update sum_{e in topk(x)} g_e(x) s B_e A_e x depends on x
// through the router. By default the experts stay an adapter beside the merged model:
//   OUT/                      the base with every plain LoRA folded in (a complete HF folder)
//   OUT/experts-adapter/      the MoLoRA groups only, for `--model OUT --adapter
//   OUT/experts-adapter`
// which computes exactly what base + the whole adapter computes (runtimes that only read OUT's
// top level ignore the sub-folder and run base + attention LoRA). The reference MING-MOE "merge"
// silently drops the experts instead.
//
// experts_to_dense folds them approximately into W as their expected contribution:
//   W' = W + s * sum_e p_e B_e A_e   [+ s B_sh A_sh for a shared expert, always on]
// with p_e = E_x[g_e(x)], the mean gate weight of expert e (0 on tokens that do not choose it).
// Top-k softmax gates sum to 1 per token, so sum_e p_e = 1: the dense layer applies the
// experts' average update with the weight the router gave each. The approximation replaces
// E[g(x) * BAx] by E[g] * BAx, i.e. it ignores which inputs each expert serves; how much that
// costs is measured by the perplexity change on eval data. p comes from
//   usage   measured routing: E[g_e] from ming-route-stats' route_stats.json (see
//           read_route_usage), or a plain {"module": [p_e...]} file
//   uniform p_e = 1/E (no measurement; right for a router that balances its load)
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/adapt/merge_shell.h"
#include "ming/model/transformer.h"

namespace ming::adapt {

// ---- routing statistics ------------------------------------------------------------------------

// Which per-expert number of a route-stats file to read.
enum class UsageMeasure {
  expected_gate,  // E[g_e]: mean gate weight over all tokens (0 where e is not chosen); sums to 1
  topk_share,     // share of the N*k (token, slot) assignments that go to e; sums to 1
};

struct RouteUsage {
  std::map<std::string, std::vector<double>> layers;  // module path -> (E) values
  std::string field;                                  // what was read, for messages
};

// Reads per-layer per-expert usage from `path`, accepting
//   - ming-route-stats' route_stats.json ({"format": "ming-route-stats", "layers": [{"name": M,
//     "experts": E, "top_k": k, "expert_stats": [{"expert", "topk_share", "mean_gate"}, ...]},
//     ...]}): topk_share as is; expected_gate = k * topk_share_e * mean_gate_e, because its
//     mean_gate is the mean over e's own assignments (P(e chosen) * E[g_e | chosen]);
//   - a plain {"M": [u_0, ..., u_{E-1}], ...} object, taken as given whatever `measure` asks.
// UsageError naming the file (and layer) when it is missing, malformed or holds negative values.
RouteUsage read_route_usage(const std::filesystem::path& path, UsageMeasure measure);

// ---- folding ------------------------------------------------------------------------------------

// W' = W + delta in fp32, stored in `dtype` (default: W's dtype). `delta` (out, in) fp32.
void fold_into_weight(model::ProjectionImpl& projection, const torch::Tensor& delta,
                      std::optional<torch::ScalarType> dtype = std::nullopt);

// s * sum_e p_e B_e A_e (+ s B_sh A_sh): (out, in) fp32. p: E non-negative weights.
torch::Tensor molora_dense_delta(const MoloraAdapter& adapter, const std::vector<double>& p);

enum class ExpertsToDense { keep, usage, uniform };
// "usage" | "uniform"; UsageError otherwise.
ExpertsToDense parse_experts_to_dense(const std::string& text);

struct MergeOptions {
  std::filesystem::path base;              // HF model folder
  std::filesystem::path adapter;           // adapter folder (ming, PEFT or MING-MOE's release)
  std::filesystem::path output;            // written atomically
  std::optional<torch::ScalarType> dtype;  // output dtype; default the base's torch_dtype
  ExpertsToDense experts_to_dense = ExpertsToDense::keep;
  std::filesystem::path route_stats;  // required for ExpertsToDense::usage
  // Perplexity of base + adapter vs the merged model on this data (any format data/reader.h
  // reads; chat records are templated with the base's chat template, MING masking). Empty = off.
  std::filesystem::path eval_data;
  int64_t eval_max_examples = 64;
  int64_t eval_max_tokens = 1024;               // each example is cut to this many tokens
  std::string experts_dir = "experts-adapter";  // where kept MoLoRA groups go, inside output
  int64_t ming_moe_top_k = 0;                   // > 0 overrides a MING-MOE release's config.json
  bool replace = true;
};

struct MergeReport {
  int64_t n_lora_merged = 0;
  int64_t n_molora_densified = 0;
  int64_t n_molora_kept = 0;
  std::optional<std::filesystem::path> experts_adapter;  // when MoLoRA groups were kept
  // Filled when eval_data is given: per-token perplexity over the labelled tokens.
  std::optional<double> ppl_adapter, ppl_merged;
  int64_t eval_tokens = 0;
};

// Loads base + adapter, folds (see above), writes `output` (HF folder: safetensors with the
// base's tensor names and shapes, the base's config.json with torch_dtype set to the output
// dtype, its generation_config.json and tokenizer files).
MergeReport merge(const MergeOptions& options);

}  // namespace ming::adapt
