// Statistics of a route trace (route/trace.h): how evenly each MoLoRA layer spreads tokens over
// its experts, which experts are (nearly) dead, which experts are chosen together, and how much
// the expert choice depends on the task. Also the comparison of two traces (two adapters, or one
// adapter before/after training) layer by layer.
//
// Notation: E experts, k slots per token, n tokens of a layer (every real token of every
// example counts once; examples with more tokens weigh more). One trace layer = one projection
// of one decoder layer ("model.layers.3.mlp.gate_proj": layer 3, projection gate_proj).
//
//   top1_share[e] = (tokens whose highest-gate expert is e) / n            sums to 1
//   topk_share[e] = (assignments (token, slot) to e) / (n * k)             sums to 1; the load
//   mean_gate[e]  = mean gate weight of e over its assignments (0 when it has none)
//   balance on topk_share p (uniform u = 1/E):
//     cv            = population std(p) / mean(p) = sqrt(E * sum p^2 - 1)   0 = perfectly even
//     max_over_mean = max(p) / u = E * max(p)                               1 = even, E = collapse
//     entropy_norm  = -sum p log p / log E                                  1 = even, 0 = collapse
//   dead[e]       = topk_share[e] < dead_threshold * u                      (default 0.1 * u)
//   collapse      = max top1_share > collapse_threshold                     (default 0.5)
//   pairs[a][b]   = tokens that chose both a and b (a != b; needs k >= 2); lift = (pairs/n) /
//                   (sel_a * sel_b) with sel_e = tokens choosing e / n (1 = independent)
//   task × expert: share[task][e] = that task's topk_share; mutual information between the task
//     of an assignment and its expert, over all (token, slot) assignments:
//       mi_bits = sum_{t,e} p(t,e) log2(p(t,e) / (p(t) p(e)))
//       mi_norm = mi_bits / H(task)   (1 = the expert choice identifies the task; 0 with one task)
//     mi_top1_bits is the same over top-1 choices only.
//
// Example: two tasks with equal token counts, each always routed to its own expert -> mi_bits = 1,
// mi_norm = 1; both tasks spread the same way -> 0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/route/trace.h"

namespace ming::route {

struct StatsOptions {
  double dead_threshold = 0.1;      // dead: load below this fraction of the uniform share 1/E
  double collapse_threshold = 0.5;  // collapse: one expert above this top-1 share
};

struct BalanceFigures {
  double cv = 0;
  double max_over_mean = 0;
  double entropy_norm = 0;
};

struct LayerStats {
  TraceLayer info;                   // name, E, k
  int64_t layer = -1;                // decoder layer index (-1 when the name has none)
  std::string projection;            // "gate_proj"
  int64_t tokens = 0;                // n
  std::vector<int64_t> top1_counts;  // (E)
  std::vector<int64_t> topk_counts;  // (E) assignments
  std::vector<double> gate_sums;     // (E) sum of gate weights over assignments
  std::vector<int64_t> pair_counts;  // (E*E) symmetric, diagonal = tokens choosing e
  // Per task (index into TraceStats::tasks): assignments and top-1 choices per expert.
  std::vector<std::vector<int64_t>> task_topk_counts;  // (tasks, E)
  std::vector<std::vector<int64_t>> task_top1_counts;  // (tasks, E)

  // Derived (filled by finalize()).
  std::vector<double> top1_share, topk_share, mean_gate;  // (E)
  std::vector<bool> dead;                                 // (E)
  BalanceFigures balance;                                 // on topk_share
  BalanceFigures top1_balance;                            // on top1_share
  double max_top1_share = 0;
  int64_t max_top1_expert = 0;
  bool collapsed = false;
  double mi_bits = 0, mi_norm = 0, mi_top1_bits = 0;

  double pair_share(int64_t a, int64_t b) const;  // tokens choosing both / n
  double pair_lift(int64_t a, int64_t b) const;   // see above; 0 when undefined
  // The task's topk share of expert e (0 for a task with no token here).
  double task_share(size_t task, int64_t e) const;
  int64_t task_tokens(size_t task) const;  // that task's tokens in this layer
};

struct TaskInfo {
  std::string name;
  int64_t examples = 0;
  int64_t tokens = 0;
};

struct TraceStats {
  std::filesystem::path source;
  nlohmann::json meta = nlohmann::json::object();
  StatsOptions options;
  int64_t examples = 0;
  int64_t tokens = 0;
  std::vector<TaskInfo> tasks;     // in order of first appearance
  std::vector<LayerStats> layers;  // trace header order

  std::vector<std::string> projections() const;  // distinct, in order of first appearance
  // Indices of `layers` whose projection is `projection`.
  std::vector<size_t> layers_of(const std::string& projection) const;
};

// Balance figures of a distribution p over E entries (see above).
BalanceFigures balance_figures(const std::vector<double>& p);
// Mutual information in bits of the joint counts (rows x cols); 0 for an empty table.
double mutual_information_bits(const std::vector<std::vector<int64_t>>& joint);
// Entropy in bits of counts.
double entropy_bits(const std::vector<int64_t>& counts);

// Accumulates examples one by one (for callers that have them in memory), then finalize().
class StatsBuilder {
 public:
  StatsBuilder(std::vector<TraceLayer> layers, StatsOptions options = {});
  void add(const TraceExample& example);
  TraceStats finalize();

 private:
  TraceStats stats_;
  std::map<std::string, size_t> task_index_;
};

// Streams a whole trace file (UsageError naming the file on any defect).
TraceStats compute_stats(const std::filesystem::path& trace, const StatsOptions& options = {});

// Comparison of two traces' loads, per layer present in both (matched by module path).
struct ExpertShift {
  int64_t expert = 0;
  double share_a = 0, share_b = 0;  // topk_share
  double delta() const { return share_b - share_a; }
};
struct LayerComparison {
  std::string name;
  int64_t layer = -1;
  std::string projection;
  double tv = 0;       // total variation of topk_share: 0.5 * sum |a - b|, in [0, 1]
  double js_bits = 0;  // Jensen-Shannon divergence of topk_share, bits, in [0, 1]
  double top1_tv = 0;  // total variation of top1_share
  double cv_a = 0, cv_b = 0;
  std::vector<ExpertShift> experts;  // (E) by expert id
  int64_t moved_most = 0;            // expert with the largest |delta|
};
struct TraceComparison {
  std::filesystem::path source_a, source_b;
  std::vector<LayerComparison> layers;
  std::vector<std::string> only_a, only_b;  // layers present in one trace only
};
// UsageError when no layer is shared, or a shared layer has a different E.
TraceComparison compare_stats(const TraceStats& a, const TraceStats& b);

// Everything as JSON (route_stats.json; layout documented in route/report.h).
nlohmann::json stats_to_json(const TraceStats& stats, const TraceComparison* comparison = nullptr);

// The stdout summary: totals, balance overview, collapse and dead-expert flags, the layers with
// the highest task-expert MI, and the largest shifts when comparing.
std::string summary_text(const TraceStats& stats, const TraceComparison* comparison = nullptr,
                         const TraceStats* other = nullptr, size_t top_layers = 5);

}  // namespace ming::route
