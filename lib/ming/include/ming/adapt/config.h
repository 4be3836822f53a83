// Which projections get which adapter, and attaching them to a model.
//
// An AdapterConfig is a list of target groups; each group names projections by pattern and says
// what to attach: experts == 1 gives a plain (mergeable, PEFT-compatible) LoRA, experts > 1 a
// MoLoRA layer. A default-constructed AdapterConfig is MING-MOE's released layout:
//   attention: q_proj k_proj v_proj o_proj   LoRA   r 16, alpha 32, dropout 0.05
//   mlp:       gate_proj up_proj down_proj   MoLoRA 8 experts, top-2, r 16, alpha 32, router
//              with bias, dropout 0 (MING's MoLoRA training path never applies lora_dropout),
//              no balance/z loss, no shared expert, no jitter
//
// Target patterns follow PEFT: a plain string matches a module path equal to it or ending in
// "." + it ("q_proj" matches "model.layers.3.self_attn.q_proj"); a pattern starting with "re:"
// is a regular expression (ECMAScript) that must match the whole module path. Groups are tried
// in order and the first group that matches a projection wins.
//
// Per-module rank/alpha overrides use PEFT's rank_pattern / alpha_pattern semantics (key K
// applies to a module whose path matches "(.*\.)?K" in full; first listed key wins) and apply to
// plain-LoRA groups only (PEFT has no experts).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/adapt/lora.h"
#include "ming/adapt/molora.h"
#include "ming/adapt/routing.h"

namespace ming::adapt {

// A group is the MoLoRA settings (one description, molora.h) plus which projections get them;
// a default group is a plain LoRA (experts 1).
struct TargetGroup : MoloraOptions {
  std::string name;                  // "attention", "mlp": for logs and error messages
  std::vector<std::string> targets;  // suffixes ("q_proj") or "re:<regex>" full-path regexes

  TargetGroup() { experts = 1; }
  TargetGroup(std::string group_name, std::vector<std::string> group_targets,
              const MoloraOptions& options)
      : MoloraOptions(options), name(std::move(group_name)), targets(std::move(group_targets)) {}

  bool is_moe() const { return experts > 1; }
  LoraOptions lora_options() const { return {r, alpha, dropout, use_rslora}; }
  const MoloraOptions& molora_options() const { return *this; }

  template <class V>
  void visit(V& v) {
    v("name", name, "group name (logs, messages)");
    v("targets|target", targets, "projections: suffixes (q_proj) or re:<full-path regex>");
    MoloraOptions::visit(v);
  }
};

struct AdapterConfig {
  std::vector<TargetGroup> groups = ming_moe_groups();
  // PEFT-style per-module overrides for plain-LoRA groups: (regex key, value), first match wins.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  // MING-MOE's layout (the default).
  static std::vector<TargetGroup> ming_moe_groups();
  // One plain-LoRA group over `targets`.
  static AdapterConfig lora(std::vector<std::string> targets, int64_t r = 16, double alpha = 32.0,
                            double dropout = 0.05);
};

// Throws UsageError naming the group and field: empty targets, r <= 0, top_k outside
// [1, experts], dropout/jitter outside [0, 1), negative coefficients, a malformed regex.
void validate(const AdapterConfig& config);

// True when `pattern` (suffix or "re:" regex, as above) selects module path `name`.
bool target_matches(const std::string& pattern, const std::string& name);

// The group (index into config.groups) that adapts `name`, or -1.
int find_group(const AdapterConfig& config, const std::string& name);

// What inject_adapters did.
struct InjectedAdapters {
  // Adapted projections in module order: (module path, adapter). Adapters are LoraAdapter or
  // MoloraAdapter (dynamic_pointer_cast to tell).
  std::vector<std::pair<std::string, std::shared_ptr<model::ProjectionAdapter>>> adapters;
  std::vector<torch::Tensor> parameters;  // the trainable adapter parameters (fp32)
  std::shared_ptr<MoeContext> context;    // shared by every MoLoRA layer
  int64_t n_trainable = 0;                // total elements of `parameters`
};

// Walks `module` (named_modules) for model::Projection leaves, attaches a fresh adapter to every
// projection a group matches (replacing any adapter already there), freezes every other
// parameter of `module`, and returns the adapter parameters with requires_grad = true. Adapter
// parameters are created fp32 on the projection weight's device. UsageError when a group matches
// no projection (a typo in a target would otherwise silently train nothing), naming the group,
// its patterns and a few projection paths.
InjectedAdapters inject_adapters(torch::nn::Module& module, const AdapterConfig& config);

// Removes every adapter from the projections of `module`.
void remove_adapters(torch::nn::Module& module);

// Elements of the parameters of `module` with requires_grad.
int64_t count_trainable_parameters(const torch::nn::Module& module);

// Elements one group adds to one (in -> out) projection: E*r*(in+out) for the experts, E*in
// (+E with bias) for the router, r*(in+out) for a shared expert; r*(in+out) for plain LoRA.
int64_t adapter_parameter_count(const TargetGroup& group, int64_t in_features,
                                int64_t out_features);

// JSON form of a group (an item of the "groups" list of adapter_config.json's "moe" block),
// through the group's visit. group_from_json reports every unknown key and bad value together
// (UsageError naming `where`) and fills absent keys with the defaults above.
nlohmann::json to_json(const TargetGroup& group);
TargetGroup group_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace ming::adapt
