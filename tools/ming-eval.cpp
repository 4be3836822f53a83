// ming-eval: evaluate a model (+ adapter) on tasks from share/tasks/*.yaml, or compare two runs.
//
//   ming-eval --model DIR [--adapter DIR] --tasks medqa,pubmedqa [--suite DIR] [-o OUTDIR]
//   ming-eval --compare A/metrics.json B/metrics.json
//   ming-eval --score PREDICTIONS.jsonl --tasks cmexam,promptcblue [--data DIR] [-o OUTDIR]
//
// Results: OUTDIR/predictions.jsonl, OUTDIR/metrics.json and a table on stdout; progress on
// stderr. Exit status 2 for bad flags, task files or task data (the message names the file, line
// and field), 1 for other failures.
#include <malloc.h>

#include <cstdio>

#include <ming/core/error.h>
#include <ming/eval/report.h>
#include <ming/eval/runner.h>
#include <ming/eval/sft.h>
#include <ming/io/json.h>

#include "common/cli.h"

namespace {

struct EvalFlags {
  ming::eval::RunOptions run;
  std::string prompt_format = "auto", choice_norm = "none";
  std::vector<std::string> compare;
  std::filesystem::path score;
  std::filesystem::path export_sft;
  int64_t max_per_task = 0;
};

// --export-sft: the tasks' records as training conversations (no model involved).
void export_sft(const EvalFlags& f, uint64_t seed) {
  if (f.run.tasks.empty()) throw ming::UsageError("--export-sft needs --tasks");
  std::vector<ming::eval::TaskSpec> specs;
  for (const auto& t : f.run.tasks) specs.push_back(ming::eval::load_task_spec(t));
  ming::eval::SftExportOptions o;
  o.suite_dir = f.run.suite_dir;
  o.data_dir = f.run.data_dir;
  o.split = f.run.split.empty() ? "train" : f.run.split;
  o.max_per_task = f.max_per_task;
  o.seed = seed;
  int64_t total = 0;
  for (const auto& [task, n] : ming::eval::export_sft(specs, o, f.export_sft)) {
    std::fprintf(stderr, "export: %-20s %6lld\n", task.c_str(), static_cast<long long>(n));
    total += n;
  }
  std::fprintf(stdout, "wrote %lld conversations to %s\n", static_cast<long long>(total),
               f.export_sft.string().c_str());
}

void compare(const EvalFlags& f) {
  auto c = ming::eval::compare_runs(f.compare[0], f.compare[1], f.run.bootstrap);
  std::fputs(ming::eval::format_comparison(c, f.compare[0], f.compare[1]).c_str(), stdout);
  if (!f.run.output_dir.empty()) {
    std::filesystem::create_directories(f.run.output_dir);
    ming::io::write_json(f.run.output_dir / "comparison.json",
                         ming::eval::comparison_json(c, f.compare[0], f.compare[1]));
  }
}

void rescore(const EvalFlags& f) {
  if (f.run.tasks.empty()) throw ming::UsageError("--score needs --tasks (the tasks it scores)");
  auto result = ming::eval::score_predictions(f.run, f.score);
  std::fputs(result.table.c_str(), stdout);
  std::fprintf(stdout, "wrote %s/{predictions.jsonl,metrics.json}\n",
               result.output_dir.string().c_str());
}

void evaluate(EvalFlags& f, const ming::cli::RuntimeFlags& rf) {
  if (f.run.model_dir.empty()) throw ming::UsageError("--model is required (or use --compare A B)");
  auto rt = ming::cli::apply_runtime_flags(rf);
  f.run.load.device = rt.device;
  f.run.load.dtype = rt.dtype;
  f.run.scorer.sampling.seed = rf.seed;
  f.run.scorer.prompt_format = ming::eval::parse_prompt_format(f.prompt_format);
  f.run.scorer.choice_norm = ming::eval::parse_choice_norm(f.choice_norm);
  f.run.progress = !rf.quiet;
  auto result = ming::eval::run_eval(f.run);
  std::fputs(result.table.c_str(), stdout);
  std::fprintf(stdout, "wrote %s/{predictions.jsonl,metrics.json}\n",
               result.output_dir.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  // Every forward frees and re-allocates the same large attention buffers ((B, H, T, T) fp32,
  // tens of MiB). glibc hands blocks above its mmap threshold back to the kernel on free, so each
  // forward paid fresh page faults for them: a third of the CPU time of MedQA scoring. Keeping
  // them in the heap makes loglik evaluation about twice as fast.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"ming-eval: evaluate a model on medical tasks, or compare two evaluations",
               "ming-eval"};
  EvalFlags f;
  ming::cli::RuntimeFlags rf;
  auto& r = f.run;
  auto* model = app.add_option("--model,-m", r.model_dir, "model folder (HF layout)");
  app.add_option("--adapter", r.adapter_dir, "adapter folder to attach (LoRA / MoLoRA)");
  app.add_option("--tasks,-t", r.tasks, "task names (share/tasks) or YAML files, comma-separated")
      ->delimiter(',');
  app.add_option("--suite", r.suite_dir, "suite folder from scripts/prepare-suite")
      ->capture_default_str();
  app.add_option("--data", r.data_dir,
                 "raw data folder for tasks that read it ({data}; default: $MING_DATA)");
  app.add_option("--split", r.split, "split to evaluate (default: each task's own)");
  app.add_option("--limit", r.limit, "first N records of each task (0 = all)");
  app.add_option("-o,--output-dir", r.output_dir,
                 "output folder (default: eval-<model>[-<adapter>])");
  app.add_option("--batch-size,-b", r.scorer.batch_size, "sequences per forward")
      ->capture_default_str();
  app.add_option("--trace-routes", r.trace_routes,
                 "write the MoLoRA routing of every example here");
  app.add_option("--prompt-format", f.prompt_format, "auto | chat | raw")->capture_default_str();
  app.add_option("--template", r.chat_template,
                 "chat template: auto (the model's own) | chatml | llama2 | llama3 | raw")
      ->check(CLI::IsMember({"auto", "chatml", "llama2", "llama3", "raw"}))
      ->capture_default_str();
  app.add_option("--choice-norm", f.choice_norm,
                 "loglik choices compared by summed logprob (none) or per token / per byte")
      ->capture_default_str();
  app.add_option("--temperature", r.scorer.sampling.temperature, "0 = greedy")
      ->capture_default_str();
  app.add_option("--top-k", r.scorer.sampling.top_k, "keep the k most likely tokens (0 = off)");
  app.add_option("--top-p", r.scorer.sampling.top_p, "nucleus sampling mass (1 = off)");
  app.add_option("--repeat-penalty", r.scorer.sampling.repetition_penalty, "1 = off");
  app.add_option("--max-new-tokens,-n", r.scorer.max_new_tokens,
                 "override the tasks' answer length");
  app.add_option("--bootstrap", r.bootstrap.n_resamples, "bootstrap resamples for CIs")
      ->capture_default_str();
  app.add_option("--compare", f.compare, "compare two runs: A/metrics.json B/metrics.json")
      ->expected(2)
      ->excludes(model);
  app.add_option("--score", f.score,
                 "score FILE's {task, id, output} lines with the tasks' parsers (no model)")
      ->excludes(model);
  app.add_option("--export-sft", f.export_sft,
                 "write the tasks' --split (default train) as training conversations to FILE")
      ->excludes(model);
  app.add_option("--max-per-task", f.max_per_task,
                 "with --export-sft: at most N records per task (seeded sample; 0 = all)");
  ming::cli::add_runtime_flags(app, rf);
  return ming::cli::run(app, argc, argv, [&] {
    if (!f.export_sft.empty())
      export_sft(f, rf.seed);
    else if (!f.compare.empty())
      compare(f);
    else if (!f.score.empty())
      rescore(f);
    else
      evaluate(f, rf);
  });
}
