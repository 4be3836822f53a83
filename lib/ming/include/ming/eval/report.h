// Evaluation reports: predictions.jsonl lines, metrics.json, the stdout table, and the
// comparison of two runs (ming-eval --compare).
//
// predictions.jsonl carries, besides id/task/prompt/output/parsed/gold/score, every example's
// sufficient statistics per metric ("stats"), so a later --compare can re-aggregate any metric
// (F1 over labels, BLEU, PromptCBLUE's mean of sub-tasks) on resamples exactly as the run did,
// without the model.
//
// metrics.json:
//   {"format": "ming-eval-metrics", "version": 1,
//    "run": {...model, adapter, split, limit, flags...},
//    "tasks": {"<task>": {"n": 400, "scorer": "loglik_choice", "primary": "accuracy",
//                         "metrics": {"accuracy": {"value": .31, "ci_low": .27, "ci_high": .36}},
//                         "seconds": 12.5,
//                         "promptcblue": {"CMeEE-V2": .41, ...},  // promptcblue tasks only
//                         "breakdowns": {"Difficulty level": {"1": {"n": 230, "value": .3}}},
//                                                                 // tasks with categories
//                         "prompts": {"tokens": 9120, "byte_pieces": 7310,
//                                     "byte_piece_fraction": .80}  // runs with a model
//                        }, ...},

//    "overall": {"primary_mean": .., "tasks": [...], "excluded": [...perplexity tasks...]},
//    "promptcblue": {"mean": .., "ci_low": .., "ci_high": .., "per_task": {...}, "missing": []}}
// Values are fractions (perplexity: itself); confidence intervals are 95% percentile bootstrap.
// A breakdown's value is the task's primary metric over the examples with that category value.
// PromptCBLUE's mean (the paper's headline figure) is the mean over all 16 sub-tasks: with any
// missing it is null, and the table names the missing ones.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/eval/metrics.h"
#include "ming/eval/scorer.h"
#include "ming/eval/task.h"

namespace ming::eval {

// ExampleStats <-> JSON, only the fields `metric` reads (promptcblue: the group, its metric and
// that metric's fields). stats_from_json: UsageError naming `where` on a missing/mistyped field.
nlohmann::json stats_to_json(Metric metric, const ExampleStats& stats);
ExampleStats stats_from_json(Metric metric, const nlohmann::json& j, const std::string& where);

// One line of predictions.jsonl (as a JSON object).
nlohmann::json prediction_json(const TaskSpec& spec, const ExampleResult& result);

struct BootstrapOptions {
  int n_resamples = 1000;
  uint64_t seed = 1234;
  double level = 0.95;
};

struct MetricValue {
  Metric metric = Metric::accuracy;
  Interval ci;  // point, lo, hi
};

struct TaskReport {
  std::string name;
  Scorer scorer = Scorer::generate;
  size_t n = 0;
  std::vector<MetricValue> metrics;  // in the task's order; metrics[0] is the primary one
  double seconds = 0;
  // PromptCBLUE tasks: sub-task -> score, and the rows for the suite-level interval.
  std::map<std::string, double> promptcblue;
  std::vector<ExampleStats> promptcblue_rows;
  // category field -> value -> (examples, primary metric over them)
  std::map<std::string, std::map<std::string, std::pair<size_t, double>>> breakdowns;
  // Prompt tokens, and those that are byte pieces of characters the vocabulary lacks (zero when
  // the outputs were rescored without a model).
  int64_t prompt_tokens = 0, prompt_byte_pieces = 0;
};

// Aggregates a task's results with bootstrap intervals.
TaskReport summarize_task(const TaskSpec& spec, const std::vector<ExampleResult>& results,
                          double seconds, const BootstrapOptions& options = {});

// metrics.json for a run (see above); `run` goes in as "run".
nlohmann::json metrics_json(const std::vector<TaskReport>& tasks, const nlohmann::json& run,
                            const BootstrapOptions& options = {});

// The stdout table (task | n | metric | value [95% CI]) of a metrics.json document; percentages
// for fractions, plain numbers for perplexity.
std::string format_table(const nlohmann::json& metrics);

// ---- comparing two runs -------------------------------------------------------------------------

struct TaskComparison {
  std::string task;
  std::string metric;  // the primary metric
  double a = 0, b = 0;
  Interval delta;                 // a - b with its interval (paired) or point only (unpaired)
  std::optional<double> p_value;  // paired bootstrap only
  bool paired = false;
  size_t n_paired = 0, n_a = 0, n_b = 0;
  bool significant = false;  // p < 1 - level (paired) or non-overlapping CIs (unpaired)
  std::string note;          // why unpaired, or how many examples could be paired
};

struct Comparison {
  std::vector<TaskComparison> tasks;
  std::vector<std::string> only_a, only_b;  // tasks present in one run
  double level = 0.95;
};

// Compares the primary metric of every task two metrics.json files share. Examples are paired by
// id through the predictions.jsonl beside each metrics.json; without them (or without per-example
// stats in them) the comparison falls back to the overlap of the two runs' confidence intervals
// and says so in `note`. UsageError naming the file for unreadable or malformed inputs.
Comparison compare_runs(const std::filesystem::path& metrics_a,
                        const std::filesystem::path& metrics_b,
                        const BootstrapOptions& options = {});

std::string format_comparison(const Comparison& c, const std::string& name_a,
                              const std::string& name_b);
nlohmann::json comparison_json(const Comparison& c, const std::string& name_a,
                               const std::string& name_b);

}  // namespace ming::eval
