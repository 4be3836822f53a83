#include "ming/train/options.h"

#include "ming/adapt/molora.h"
#include "ming/core/error.h"

namespace ming::train {

adapt::AdapterConfig TrainOptions::adapter_config() const {
  adapt::AdapterConfig config;
  config.groups.clear();
  if (finetuning_type == "molora") {
    // The MoLoRA group goes first: a projection listed in both gets the MoLoRA layer.
    config.groups.push_back(moe);
    config.groups.back().use_rslora = moe.use_rslora || use_rslora;
  }
  if (!lora_target.empty()) {
    adapt::TargetGroup attention;
    attention.name = "lora";
    attention.targets = lora_target;
    attention.experts = 1;
    attention.r = lora_rank;
    attention.alpha = lora_alpha;
    attention.dropout = lora_dropout;
    attention.use_rslora = use_rslora;
    config.groups.push_back(attention);
  }
  return config;
}

data::DataOptions TrainOptions::data_options(bool eval) const {
  data::DataOptions d;
  d.datasets = eval ? eval_dataset : dataset;
  d.chat_template = template_name;
  d.mask = mask;
  d.cutoff_len = cutoff_len;
  d.packing = eval ? false : packing;
  d.bad_example_policy = bad_example_policy;
  d.seed = seed;
  d.system_prompt = system_prompt;
  return d;
}

void TrainOptions::validate() const {
  std::vector<std::string> errors;
  auto check = [&](bool ok, std::string message) {
    if (!ok) errors.push_back(std::move(message));
  };
  check(!model_name_or_path.empty(), "model_name_or_path: required (a HF model folder)");
  check(!dataset.empty(), "dataset: required (a list of {path, format, weight})");
  check(finetuning_type == "molora" || finetuning_type == "lora" || finetuning_type == "full",
        fmt::format("finetuning_type: '{}' is not one of molora, lora, full", finetuning_type));
  check(lr_scheduler_type == "cosine" || lr_scheduler_type == "linear" ||
            lr_scheduler_type == "constant",
        fmt::format("lr_scheduler_type: '{}' is not one of cosine, linear, constant",
                    lr_scheduler_type));
  check(learning_rate > 0, fmt::format("learning_rate: {} must be > 0", learning_rate));
  check(per_device_train_batch_size >= 1, "per_device_train_batch_size: must be >= 1");
  check(gradient_accumulation_steps >= 1, "gradient_accumulation_steps: must be >= 1");
  check(cutoff_len >= 2, "cutoff_len: must be >= 2");
  check(max_steps > 0 || num_train_epochs > 0,
        "max_steps / num_train_epochs: one of them must be > 0");
  check(warmup_ratio >= 0 && warmup_ratio < 1, "warmup_ratio: must be in [0, 1)");
  check(save_total_limit >= 1, "save_total_limit: must be >= 1");
  check(logging_steps >= 1, "logging_steps: must be >= 1");
  check(max_nonfinite_steps >= 1, "max_nonfinite_steps: must be >= 1");
  if (finetuning_type == "molora") {
    check(moe.experts >= 1, fmt::format("moe.experts: {} must be >= 1", moe.experts));
    check(moe.top_k >= 1 && moe.top_k <= moe.experts,
          fmt::format("moe.top_k: {} must be in [1, moe.experts = {}]", moe.top_k, moe.experts));
    check(!moe.targets.empty(), "moe.targets: list the projections that get experts");
  }
  if (finetuning_type != "full") check(lora_rank >= 1, "lora_rank: must be >= 1");
  if (finetuning_type == "lora") check(!lora_target.empty(), "lora_target: must not be empty");
  if (!errors.empty())
    throw UsageError(errors.size() == 1 ? "config: " + errors[0]
                                        : fmt::format("config: {} problems:\n  {}", errors.size(),
                                                      fmt::join(errors, "\n  ")));
  if (finetuning_type != "full") adapt::validate(adapter_config());
}

}  // namespace ming::train
