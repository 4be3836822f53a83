// One evaluation run (ming-eval): load the model (and adapter) once, score every task, write
//   OUTDIR/predictions.jsonl  one line per example (report.h: prediction_json)
//   OUTDIR/metrics.json       per task metrics with bootstrap CIs, overall mean, PromptCBLUE mean
// each atomically, and return the stdout table. Progress goes to stderr.
//
// Everything the user can get wrong (task names and files, task data, flags) is checked before
// the model is loaded, so a typo costs seconds, not a model load.
//
// --trace-routes: after each scored batch, one teacher-forced forward over prompt + output tokens
// (generated text; the chosen choice; the reference for perplexity) with a RouteTraceWriter as
// the MoE context's recorder; examples are tagged with id and task (for reports only: routing
// never sees the task).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/eval/report.h"
#include "ming/eval/scorer.h"
#include "ming/model/load.h"

namespace ming::eval {

struct RunOptions {
  std::filesystem::path model_dir;
  std::filesystem::path adapter_dir;  // empty: none
  std::vector<std::string> tasks;     // names (share/tasks/<name>.yaml) or YAML paths
  std::filesystem::path suite_dir = "suite";
  std::filesystem::path data_dir;      // {data} in task files; empty: $MING_DATA
  std::string split;                   // empty: each task's own split
  int64_t limit = 0;                   // > 0: the first N records of each task
  std::filesystem::path output_dir;    // empty: default_output_dir()
  std::filesystem::path trace_routes;  // empty: no trace
  std::filesystem::path share_dir;     // empty: the compiled-in share folder
  // auto: the model's own chat template; chatml | llama2 | llama3 | raw: that built-in renderer.
  std::string chat_template = "auto";
  ScorerOptions scorer;
  model::LoadOptions load;
  BootstrapOptions bootstrap;
  bool progress = true;
};

struct RunResult {
  std::filesystem::path output_dir;
  nlohmann::json metrics;  // what metrics.json holds
  std::string table;       // what goes to stdout
  size_t examples = 0;
  double seconds = 0;  // scoring time, model load excluded
};

// "eval-<model folder name>[-<adapter folder name>]" (in the current folder).
std::filesystem::path default_output_dir(const std::filesystem::path& model_dir,
                                         const std::filesystem::path& adapter_dir);

RunResult run_eval(const RunOptions& options);

// ming-eval --score: scores outputs produced elsewhere (vLLM, transformers, another ming run)
// with the tasks' parsers and metrics, no model loaded, and writes the same predictions.jsonl,
// metrics.json and table. `predictions` is JSONL, one {"task", "id", "output"} per line:
//   task    a name as given to --tasks; a PromptCBLUE task also takes "name/sub-task"
//           ("promptcblue/CMeIE"), and then `id` may be the record's sample_id;
//   id      the record's id (the task's id_field, else its 0-based position in the file; a
//           number or a string);
//   output  the generated text (loglik_choice tasks: the chosen option's key).
// Each task's examples are aggregated in the order of its data file, so a ming-eval run's own
// predictions.jsonl gives back that run's metrics exactly. UsageError naming the file, line and
// field for a malformed line, an unknown task or id, or a second output for one record.
// options.output_dir empty: "<predictions stem, or its folder's name>-rescored".
RunResult score_predictions(const RunOptions& options, const std::filesystem::path& predictions);

}  // namespace ming::eval
