// Pruning MoLoRA experts the router rarely uses.
//
// For every MoLoRA projection, experts whose measured usage is below a threshold are dropped with
// their router rows. Routing over the rest renormalises by itself: the top-k are chosen among
// the remaining logits and the softmax runs over those k, exactly as if the dropped experts'
// logits were -inf. What changes is the outputs of tokens that chose a dropped expert (they now
// take the next-best one); the route stats say how many those are.
//
// Usage is read from ming-route-stats' route_stats.json (topk_share by default: the share of the
// (token, slot) assignments each expert receives, summing to 1 per layer, so uniform use is 1/E;
// expected_gate, the mean gate weight over all tokens, as the alternative) or from a plain
// {"module path": [u_0, ...]} file (read_route_usage in merge.h).
//
// Projections keep their own expert count, so a projection that loses experts gets its own
// adapter group (targeted by its exact path) with E' experts and k' = min(k, E') (lowered k is
// reported). A projection left with one expert becomes a plain LoRA with that expert's A and B
// (top-1 of one expert gives it gate 1: the same function), with a shared expert concatenated to
// it (rank 2r, still exact). Dropping every expert of a projection is refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ming/adapt/merge.h"

namespace ming::adapt {

struct PruneOptions {
  std::filesystem::path adapter;      // MoLoRA adapter folder (ming or MING-MOE format)
  std::filesystem::path route_stats;  // route_stats.json or {"module": [u_e...]}
  double threshold = 0.0;             // drop experts with usage < threshold
  UsageMeasure measure = UsageMeasure::topk_share;
  std::filesystem::path output;
  int64_t ming_moe_top_k = 0;  // > 0 overrides a MING-MOE release's config.json
  bool replace = true;
};

struct PrunedProjection {
  std::string module;
  int64_t experts_before = 0;
  std::vector<int64_t> kept;  // original expert ids, ascending
  int64_t top_k_before = 0;
  int64_t top_k_after = 0;  // 1 and kept.size() == 1: now a plain LoRA
};

struct PruneReport {
  std::vector<PrunedProjection> projections;  // every MoLoRA projection, in model order
  int64_t n_dropped = 0;                      // experts dropped in total
  std::string field;                          // the usage measure read
};

PruneReport prune_experts(const PruneOptions& options);

}  // namespace ming::adapt
