// ming-train: train LoRA / MoLoRA adapters (or a small base, finetuning_type: full) on a mixture
// of datasets, on one process or data-parallel (torchrun / SLURM environment).
#include "common/cli.h"
#include "ming/core/log.h"
#include "ming/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"ming-train: train a frozen base with LoRA / MoLoRA adapters on many tasks at once",
               "ming-train"};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string output_dir;
  bool resume = false, quiet = false;
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
  return ming::cli::run(app, argc, argv, [&] {
    if (quiet) ming::log::set_level(ming::log::Level::warn);
    if (!output_dir.empty()) overrides.push_back("output_dir=" + output_dir);
    auto options = ming::train::load_train_options(config_path, overrides);
    ming::train::RunOptions run;
    run.resume = resume;
    run.stop_after_steps = stop_after;
    auto result = ming::train::train(options, run);
    if (result.interrupted) throw ming::Error("interrupted; resume with --resume");
  });
}
