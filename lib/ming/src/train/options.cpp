#include "ming/train/options.h"

#include "ming/adapt/molora.h"
#include <cmath>

#include "ming/core/error.h"

namespace ming::train {

namespace {

// Every linear projection of a decoder layer (what LLaMA-Factory's "all" finds in these models).
const std::vector<std::string> kAllProjections = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};

std::vector<std::string> expand_all(const std::vector<std::string>& targets) {
  if (targets.size() == 1 && targets[0] == "all") return kAllProjections;
  return targets;
}

}  // namespace

adapt::AdapterConfig TrainOptions::adapter_config() const {
  adapt::AdapterConfig config;
  config.groups.clear();
  if (finetuning_type == "molora") {
    // The MoLoRA group goes first: a projection listed in both gets the MoLoRA layer.
    config.groups.push_back(moe);
    config.groups.back().targets = expand_all(moe.targets);
    config.groups.back().use_rslora = moe.use_rslora || use_rslora;
  }
  if (!lora_target.empty()) {
    adapt::TargetGroup attention;
    attention.name = "lora";
    attention.targets = expand_all(lora_target);
    attention.experts = 1;
    attention.r = lora_rank;
    attention.alpha = effective_lora_alpha();
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
  d.dataset_dir = dataset_dir;
  d.max_samples = max_samples;
  d.mix_strategy = mix_strategy;
  if (!eval)
    for (size_t i = 0; i < interleave_probs.size() && i < d.datasets.size(); ++i)
      d.datasets[i].weight = interleave_probs[i];
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
  check(eval_strategy == "no" || eval_strategy == "steps" || eval_strategy == "epoch",
        fmt::format("eval_strategy: '{}' is not one of no, steps, epoch", eval_strategy));
  check(eval_steps >= 0, "eval_steps: must be >= 0");
  check(per_device_eval_batch_size >= 1, "per_device_eval_batch_size: must be >= 1");
  check(val_size >= 0 && (val_size < 1 || val_size == std::floor(val_size)),
        fmt::format("val_size: {} must be a fraction in [0, 1) or a whole number", val_size));
  check(val_size == 0 || eval_dataset.empty(),
        "val_size / eval_dataset: give one of them (as LLaMA-Factory)");
  check(max_samples >= 0, "max_samples: must be >= 0");
  check(interleave_probs.empty() || interleave_probs.size() == dataset.size(),
        fmt::format("interleave_probs: {} values for {} datasets", interleave_probs.size(),
                    dataset.size()));
  check(interleave_probs.empty() || mix_strategy.rfind("interleave", 0) == 0,
        "interleave_probs: only valid with mix_strategy interleave_under or interleave_over");
  check(!load_best_model_at_end || val_size > 0 || !eval_dataset.empty(),
        "load_best_model_at_end: needs evaluation data (eval_dataset or val_size)");
  for (const auto& r : report_to)
    check(r == "none" || r == "tensorboard",
          fmt::format("report_to: '{}' is not one of none, tensorboard (ming also writes "
                      "metrics.jsonl)",
                      r));
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
