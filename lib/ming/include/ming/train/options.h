// ming-train's configuration: one plain struct per YAML block, defaults only here.
//
// Keys follow Hugging Face TrainingArguments / LLaMA-Factory names where those exist, flat at the
// top level, so habits carry over. The defaults reproduce MING-MOE's recipe (DESIGN.md): attention
// LoRA r16/a32/dropout 0.05, MLP gate/up/down MoLoRA with 8 experts top-2 r16/a32 and a router with
// bias, lr 2e-4 cosine with 3% warm-up, no weight decay, AdamW, bf16, cutoff 3072.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ming/adapt/config.h"
#include "ming/data/options.h"

namespace ming::train {

struct TrainOptions {
  // What to train.
  std::string model_name_or_path;
  std::string adapter_name_or_path;  // start from this adapter (e.g. ming-merge upcycle output)
  std::string output_dir = "runs/ming";
  std::string finetuning_type = "molora";  // molora | lora | full
  int64_t lora_rank = 16;
  double lora_alpha = 32.0;
  double lora_dropout = 0.05;
  std::vector<std::string> lora_target = {"q_proj", "k_proj", "v_proj", "o_proj"};
  bool use_rslora = false;
  // The `moe:` block: the MoLoRA layer put on the MLP projections (MING-MOE: 8 experts, top-2,
  // r 16, alpha 32, no dropout, router with bias).
  adapt::TargetGroup moe{"moe", {"gate_proj", "up_proj", "down_proj"}, adapt::MoloraOptions{}};

  // Data.
  std::vector<data::DatasetSpec> dataset;
  std::vector<data::DatasetSpec> eval_dataset;
  std::string template_name = "auto";
  std::string mask = "ming";
  int64_t cutoff_len = 3072;
  bool packing = false;
  std::string bad_example_policy = "skip";
  std::string system_prompt;
  int64_t max_eval_examples = 512;

  // Optimisation.
  double learning_rate = 2e-4;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  double num_train_epochs = 1.0;
  int64_t per_device_train_batch_size = 4;
  int64_t gradient_accumulation_steps = 1;
  std::string lr_scheduler_type = "cosine";  // cosine | linear | constant
  double warmup_ratio = 0.03;
  int64_t warmup_steps = 0;  // > 0 overrides warmup_ratio
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  bool bf16 = true;            // bf16 compute (frozen base stored in bf16); fp32 adapter weights
  int64_t max_nonfinite_steps = 10;    // consecutive skipped steps before stopping
  bool gradient_checkpointing = true;  // recompute each layer in backward (LLaMA-Factory default)

  // Bookkeeping.
  int64_t save_steps = 500;  // 0 = only at the end
  int64_t save_total_limit = 2;
  int64_t logging_steps = 10;
  int64_t eval_steps = 0;  // 0 = never
  int64_t seed = 42;
  std::string device = "cpu";
  int64_t threads = 0;  // 0 = cores available to this process

  template <class V>
  void visit(V& v) {
    v("model_name_or_path", model_name_or_path, "base model folder (HF layout)");
    v("adapter_name_or_path", adapter_name_or_path, "initial adapter folder");
    v("output_dir", output_dir, "where the adapter, config and metrics go");
    v("finetuning_type", finetuning_type, "molora | lora | full");
    v("lora_rank", lora_rank, "LoRA rank of the attention (and lora) adapters");
    v("lora_alpha", lora_alpha, "LoRA alpha");
    v("lora_dropout", lora_dropout, "LoRA dropout");
    v("lora_target", lora_target, "projections that get a plain LoRA");
    v("use_rslora", use_rslora, "scale by alpha/sqrt(r) (every group)");
    v("moe", moe, "MoLoRA settings (finetuning_type molora)");
    v("dataset", dataset, "training datasets: list of {path, format, weight}");
    v("eval_dataset", eval_dataset, "evaluation datasets (loss every eval_steps)");
    v("template", template_name, "chatml | llama2 | llama3 | raw | auto");
    v("mask", mask, "ming | assistant");
    v("cutoff_len", cutoff_len, "maximum tokens per example");
    v("packing", packing, "pack examples into rows of cutoff_len");
    v("bad_example_policy", bad_example_policy, "skip | stop");
    v("system_prompt", system_prompt, "system prompt for conversations without one");
    v("max_eval_examples", max_eval_examples, "cap on evaluation examples");
    v("learning_rate", learning_rate, "peak learning rate");
    v("max_steps", max_steps, "optimizer steps (> 0 overrides num_train_epochs)");
    v("num_train_epochs", num_train_epochs, "epochs over the mixture");
    v("per_device_train_batch_size", per_device_train_batch_size, "rows per rank per micro-batch");
    v("gradient_accumulation_steps", gradient_accumulation_steps, "micro-batches per step");
    v("lr_scheduler_type", lr_scheduler_type, "cosine | linear | constant");
    v("warmup_ratio", warmup_ratio, "warm-up as a fraction of the steps");
    v("warmup_steps", warmup_steps, "warm-up steps (> 0 overrides warmup_ratio)");
    v("weight_decay", weight_decay, "AdamW weight decay");
    v("adam_beta1", adam_beta1, "AdamW beta1");
    v("adam_beta2", adam_beta2, "AdamW beta2");
    v("adam_epsilon", adam_epsilon, "AdamW epsilon");
    v("max_grad_norm", max_grad_norm, "gradient clipping norm (<= 0: off)");
    v("bf16", bf16, "bf16 compute");
    v("max_nonfinite_steps", max_nonfinite_steps, "consecutive non-finite steps before stopping");
    v("gradient_checkpointing", gradient_checkpointing,
      "keep only each layer's input for backward and recompute the layer there");
    v("save_steps", save_steps, "checkpoint every N steps (0: only at the end)");
    v("save_total_limit", save_total_limit, "checkpoints kept");
    v("logging_steps", logging_steps, "metrics.jsonl line every N steps");
    v("eval_steps", eval_steps, "evaluation loss every N steps (0: never)");
    v("seed", seed, "random seed (init, dropout, data order)");
    v("device", device, "cpu | cuda | cuda:N");
    v("threads", threads, "CPU threads (0: cores available)");
  }

  // The adapter layout these options describe (finetuning_type molora or lora).
  adapt::AdapterConfig adapter_config() const;
  // The data options for the training (or evaluation) datasets.
  data::DataOptions data_options(bool eval = false) const;
  // Cross-field checks; UsageError naming the key (e.g. "moe.top_k 9 > moe.experts 8").
  void validate() const;
};

}  // namespace ming::train
