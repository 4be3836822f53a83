// The route-statistics report folder that ming-route-stats -o DIR writes: JSON for programs, CSV
// for spreadsheets and pandas, SVG heatmaps for people. SVG is written by hand (no display or
// plotting library needed); every cell carries a <title> tooltip with its exact value.
//
// Files (columns are stable; new columns are only ever appended; shares are fractions in [0, 1];
// `layer` is the decoder layer index or -1 when the module path has none; `module` is the full
// HF module path):
//   route_stats.json   stats_to_json(): {"format": "ming-route-stats", "version": 1, trace, meta,
//                      examples, tokens, dead_threshold, collapse_threshold,
//                      tasks: [{name, examples, tokens}],
//                      projections: [{projection, layers, mean_mi_bits, task_shares_mean}],
//                      layers: [{name, layer, projection, experts, top_k, tokens, balance{cv,
//                        max_over_mean, entropy_norm, top1_cv, top1_max_share, top1_max_expert},
//                        collapsed, dead_experts, mi_bits, mi_norm, mi_top1_bits,
//                        expert_stats[{expert, top1_share, topk_share, mean_gate, dead}],
//                        task_shares{task: [E]}, pair_counts[E][E]}],
//                      compare (with --compare): {trace_a, trace_b, only_a, only_b,
//                        layers[{name, layer, projection, tv, js_bits, top1_tv, cv_a, cv_b,
//                        moved_most, experts[{expert, share_a, share_b, delta}]}]},
//                      files: [the files of the folder]}
//   layers.csv         layer,projection,experts,top_k,tokens,cv,max_over_mean,entropy_norm,
//                      top1_cv,top1_max_share,top1_max_expert,collapsed,dead_experts,mi_bits,
//                      mi_norm,mi_top1_bits,module
//   experts.csv        layer,projection,expert,top1_share,topk_share,mean_gate,dead,module
//   tasks.csv          layer,projection,task,expert,share,top1_share,tokens,module
//                      (share = the task's top-k share of the expert; tokens = the task's tokens)
//   pairs.csv          layer,projection,expert_a,expert_b,count,share,lift,module  (a < b, k >= 2)
//   compare.csv        layer,projection,tv,js_bits,top1_tv,cv_a,cv_b,moved_expert,moved_delta,
//                      module                                               (with --compare)
//   compare_experts.csv layer,projection,expert,share_a,share_b,delta,module (with --compare)
//   load_<proj>.svg    layer x expert top-k load share, one per projection
//   top1_<proj>.svg    layer x expert top-1 share
//   tasks_<proj>.svg   task x expert load share averaged over the projection's layers
//   tasks_<proj>_layer<L>.svg  task x expert share in one layer: the task_layers layers with the
//                      highest task-expert MI per projection (all when there are that few)
//   compare_<proj>.svg layer x expert change of load share, b - a (diverging scale)
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ming/route/stats.h"

namespace ming::route {

struct ReportOptions {
  size_t task_layers = 3;  // per-layer task heatmaps per projection (0 = none)
};

// Writes the files above into `dir` (which must exist; the tool passes an io::StagedDir).
// Returns the file names written.
std::vector<std::string> write_report(const std::filesystem::path& dir, const TraceStats& stats,
                                      const TraceComparison* comparison = nullptr,
                                      const ReportOptions& options = {});

// A heatmap picture. values: rows * cols, row-major; NaN = no value (drawn grey, "n/a").
struct Heatmap {
  std::string title;
  std::string row_axis, col_axis;  // axis titles
  std::vector<std::string> row_labels, col_labels;
  std::vector<double> values;
  bool diverging = false;  // scale [-m, m] blue-white-red; else [0, m] sequential (viridis)
  double scale_max = 0;    // m; 0 = the largest |value|
  bool percent = true;     // values are shares: legend and tooltips in percent
  std::string value_name = "share";
};

// A complete standalone SVG document. ming::Error when values.size() != rows * cols.
std::string heatmap_svg(const Heatmap& map);

// A CSV field: quoted (with doubled quotes) when it contains a comma, quote or newline.
std::string csv_field(const std::string& text);

}  // namespace ming::route
