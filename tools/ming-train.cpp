// ming-train: train LoRA / MoLoRA adapters (or a small base, finetuning_type: full) on a mixture
// of datasets, on one process or data-parallel (torchrun / SLURM environment). With --plan it
// trains nothing and prints the predicted peak memory per device (from config.json alone).
#include <cstdio>

#include "common/cli.h"
#include "ming/core/log.h"
#include "ming/core/memory.h"
#include "ming/model/config.h"
#include "ming/train/memory_plan.h"
#include "ming/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"ming-train: train a frozen base with LoRA / MoLoRA adapters on many tasks at once",
               "ming-train"};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string output_dir;
  bool resume = false, quiet = false, plan = false;
  std::string plan_memory;
  int64_t stop_after = 0;
  app.add_option("--config,-c", config_path, "YAML config (see share/configs/)")
      ->check(CLI::ExistingFile);
  app.add_option("--set", overrides, "override a config key: --set learning_rate=1e-4 (repeatable)")
      ->take_all();
  app.add_option("-o,--output-dir", output_dir, "run folder (beats output_dir in the config)");
  app.add_flag("--resume", resume, "continue from the newest checkpoint in the run folder");
  app.add_option("--stop-after", stop_after,
                 "write a checkpoint and stop after N steps of this invocation (then --resume)");
  app.add_flag("--quiet,-q", quiet, "only warnings and errors on stderr");
  app.add_flag("--plan", plan,
               "train nothing: print the predicted peak memory per device for this config (reads "
               "only the model's config.json)");
  app.add_option("--plan-memory", plan_memory,
                 "with --plan: a per-device memory budget (80GB, 24GiB); prints the largest "
                 "per_device_train_batch_size that fits");
  return ming::cli::run(app, argc, argv, [&] {
    if (quiet) ming::log::set_level(ming::log::Level::warn);
    if (!output_dir.empty()) overrides.push_back("output_dir=" + output_dir);
    auto options = ming::train::load_train_options(config_path, overrides);
    if (plan) {
      const auto config = ming::model::ModelConfig::load(options.model_name_or_path);
      const double budget = plan_memory.empty() ? 0.0 : double(ming::parse_bytes(plan_memory));
      const auto predicted = ming::train::plan_memory(config, options);
      const int64_t fitting = budget > 0 ? ming::train::largest_batch(config, options, budget) : 0;
      std::fputs(ming::train::format_plan(predicted, budget, fitting).c_str(), stdout);
      return;
    }
    if (!plan_memory.empty()) throw ming::UsageError("--plan-memory needs --plan");
    ming::train::RunOptions run;
    run.resume = resume;
    run.stop_after_steps = stop_after;
    auto result = ming::train::train(options, run);
    if (result.interrupted) throw ming::Error("interrupted; resume with --resume");
  });
}
