#include "ming/adapt/prune.h"

#include <algorithm>
#include <map>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"

namespace ming::adapt {

PruneReport prune_experts(const PruneOptions& o) {
  if (o.output.empty()) fail_usage("prune: no output folder (-o)");
  if (!(o.threshold >= 0 && o.threshold < 1))
    fail_usage(
        "prune: --threshold must be in [0, 1) (usage shares sum to 1 per layer; uniform "
        "use is 1/E), got {}",
        o.threshold);
  const RouteUsage usage = read_route_usage(o.route_stats, o.measure);
  LoadAdapterOptions load;
  load.ming_moe_top_k = o.ming_moe_top_k;
  const AdapterShell shell = load_adapter_shell(o.adapter, load);
  const auto moes = molora_adapters(shell.adapter);
  if (moes.empty())
    fail_usage("prune: '{}' has no MoLoRA experts to prune (a plain LoRA adapter)",
               o.adapter.string());

  PruneReport report;
  report.field = usage.field;
  const AdapterConfig& old_config = shell.adapter.config;
  AdapterConfig config;
  config.groups.clear();
  config.rank_pattern = old_config.rank_pattern;
  config.alpha_pattern = old_config.alpha_pattern;
  std::vector<std::pair<std::string, int64_t>> exact_ranks;
  std::vector<std::pair<std::string, double>> exact_alphas;

  for (const auto& [path, moe] : moes) {
    const auto it = usage.layers.find(path);
    if (it == usage.layers.end())
      fail_usage(
          "prune: '{}' has no usage for '{}' (it lists {} layers, e.g. '{}'; route stats "
          "of another adapter?)",
          o.route_stats.string(), path, usage.layers.size(), usage.layers.begin()->first);
    const auto& u = it->second;
    const MoloraOptions& mo = moe->options();
    if (int64_t(u.size()) != mo.experts)
      fail_usage("prune: '{}' gives {} expert values for '{}', the adapter has {} experts",
                 o.route_stats.string(), u.size(), path, mo.experts);
    PrunedProjection pp;
    pp.module = path;
    pp.experts_before = mo.experts;
    pp.top_k_before = mo.top_k;
    for (int64_t e = 0; e < mo.experts; ++e)
      if (u[e] >= o.threshold) pp.kept.push_back(e);
    if (pp.kept.empty())
      fail_usage(
          "prune: --threshold {} would drop all {} experts of '{}' (its largest {} is "
          "{:.4g}); lower the threshold",
          o.threshold, mo.experts, path, usage.field, *std::max_element(u.begin(), u.end()));
    const int64_t n_kept = int64_t(pp.kept.size());
    pp.top_k_after = std::min(mo.top_k, n_kept);
    report.n_dropped += mo.experts - n_kept;

    if (n_kept < mo.experts) {
      const TargetGroup& g = old_config.groups.at(find_group(old_config, path));
      TargetGroup ng = g;
      ng.name = g.name + ":" + path;
      ng.targets = {path};  // a plain target matches the path itself
      if (n_kept == 1) {
        // One expert always gets gate 1: a plain LoRA with its A/B (+ the shared expert's,
        // concatenated), at the MoLoRA scaling. Exact-path patterns go first so that no
        // existing pattern changes its rank or alpha.
        ng.experts = 1;
        ng.top_k = 1;
        ng.r = mo.r * (mo.shared_expert ? 2 : 1);
        ng.alpha = moe->scaling() * double(ng.r);
        ng.use_rslora = false;
        ng.shared_expert = false;
        exact_ranks.emplace_back(exact_pattern_key(path), ng.r);
        exact_alphas.emplace_back(exact_pattern_key(path), ng.alpha);
        log::info("prune: '{}': only expert {} of {} is kept; written as a plain LoRA", path,
                  pp.kept.front(), mo.experts);
      } else {
        ng.experts = n_kept;
        ng.top_k = pp.top_k_after;
        log::info("prune: '{}': kept experts [{}] of {}", path, fmt::join(pp.kept, ","),
                  mo.experts);
      }
      if (pp.top_k_after < mo.top_k)
        log::warn("prune: '{}' keeps {} experts, fewer than top-k {}; k lowered to {}", path,
                  n_kept, mo.top_k, pp.top_k_after);
      config.groups.push_back(ng);
    }
    report.projections.push_back(pp);
  }
  config.rank_pattern.insert(config.rank_pattern.begin(), exact_ranks.begin(), exact_ranks.end());
  config.alpha_pattern.insert(config.alpha_pattern.begin(), exact_alphas.begin(),
                              exact_alphas.end());

  // The original groups follow the per-projection ones (first match wins); a group whose every
  // projection now has its own group is left out (inject_adapters refuses groups that match
  // nothing, and so would a later load).
  for (const auto& g : old_config.groups) {
    config.groups.push_back(g);
    bool used = false;
    for (const auto& [path, shape] : shell.shapes)
      used = used || find_group(config, path) == int(config.groups.size()) - 1;
    if (!used) config.groups.pop_back();
  }

  // Copy the kept tensors into a fresh shell carrying the new config.
  std::map<std::string, std::shared_ptr<model::ProjectionAdapter>> old_adapters;
  for (const auto& [path, a] : shell.adapter.injected.adapters) old_adapters[path] = a;
  std::map<std::string, const PrunedProjection*> pruned;
  for (const auto& pp : report.projections) pruned[pp.module] = &pp;

  auto out = make_projection_shell(shell.shapes);
  auto injected = inject_adapters(*out, config);
  {
    torch::NoGradGuard no_grad;
    for (auto& [path, adapter] : injected.adapters) {
      const auto& old = old_adapters.at(path);
      if (auto dst = std::dynamic_pointer_cast<LoraAdapter>(adapter)) {
        if (auto src = std::dynamic_pointer_cast<LoraAdapter>(old)) {
          dst->lora_A.copy_(src->lora_A);
          dst->lora_B.copy_(src->lora_B);
        } else {
          auto src_moe = std::dynamic_pointer_cast<MoloraAdapter>(old);
          const int64_t e = pruned.at(path)->kept.front();
          auto a = src_moe->lora_A[e], b = src_moe->lora_B[e];  // (r, D), (O, r)
          if (src_moe->shared_A.defined()) {
            a = torch::cat({a, src_moe->shared_A}, 0);
            b = torch::cat({b, src_moe->shared_B}, 1);
          }
          TORCH_INTERNAL_ASSERT(dst->lora_A.sizes() == a.sizes() &&
                                dst->lora_B.sizes() == b.sizes());
          dst->lora_A.copy_(a);
          dst->lora_B.copy_(b);
        }
        continue;
      }
      auto dst = std::dynamic_pointer_cast<MoloraAdapter>(adapter);
      auto src = std::dynamic_pointer_cast<MoloraAdapter>(old);
      TORCH_INTERNAL_ASSERT(dst && src, "prune: adapter kinds changed at ", path);
      const auto& kept = pruned.at(path)->kept;
      auto idx = torch::tensor(kept, torch::kInt64);
      dst->lora_A.copy_(src->lora_A.index_select(0, idx));
      dst->lora_B.copy_(src->lora_B.index_select(0, idx));
      dst->router_weight.copy_(src->router_weight.index_select(0, idx));
      if (dst->router_bias.defined()) dst->router_bias.copy_(src->router_bias.index_select(0, idx));
      if (dst->shared_A.defined()) {
        dst->shared_A.copy_(src->shared_A);
        dst->shared_B.copy_(src->shared_B);
      }
    }
  }
  save_adapter(o.output, *out, config, shell.adapter.base_model_name_or_path, o.replace);

  log::info(
      "prune: dropped {} of {} experts ({} < {}) -> '{}'", report.n_dropped,
      [&] {
        int64_t n = 0;
        for (const auto& pp : report.projections) n += pp.experts_before;
        return n;
      }(),
      usage.field, o.threshold, o.output.string());
  return report;
}

}  // namespace ming::adapt
