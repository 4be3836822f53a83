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
  std::optional<double> lora_alpha;  // unset = 2 x lora_rank (LLaMA-Factory's default)
  double lora_dropout = 0.05;
  // "all" = every linear projection of the decoder layers (q/k/v/o, gate/up/down), as
  // LLaMA-Factory's lora_target: all.
  std::vector<std::string> lora_target = {"q_proj", "k_proj", "v_proj", "o_proj"};
  bool use_rslora = false;
  // The `moe:` block: the MoLoRA layer put on the MLP projections (MING-MOE: 8 experts, top-2,
  // r 16, alpha 32, no dropout, router with bias).
  adapt::TargetGroup moe{"moe", {"gate_proj", "up_proj", "down_proj"}, adapt::MoloraOptions{}};

  // Data.
  // Datasets as {path, format, weight} entries or, as in LLaMA-Factory, names looked up in
  // dataset_dir/dataset_info.json ("dataset: a,b" becomes [{name: a}, {name: b}]).
  std::vector<data::DatasetSpec> dataset;
  std::vector<data::DatasetSpec> eval_dataset;
  std::string dataset_dir = "data";
  int64_t max_samples = 0;   // first records per dataset; 0 = all
  std::string mix_strategy;  // weights | concat | interleave_under | interleave_over; "" = auto
  std::vector<double> interleave_probs;  // the datasets' weights (interleave_* strategies)
  // Examples held out of `dataset` for evaluation: a fraction in (0, 1) or a count; 0 = none.
  double val_size = 0;
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
  // Evaluation loss on eval_dataset or the val_size hold-out: every eval_steps steps (0 =
  // logging_steps, as the HF Trainer) with eval_strategy steps, after every epoch with epoch;
  // always after the last step unless eval_strategy is no.
  std::string eval_strategy = "steps";  // no | steps | epoch
  int64_t eval_steps = 0;
  int64_t per_device_eval_batch_size = 8;
  bool load_best_model_at_end = false;  // the result is the checkpoint with the lowest eval_loss
  // Run folder: refuse to train from scratch into a non-empty output_dir unless this is set.
  bool overwrite_output_dir = false;
  // PATH = resume from that checkpoint, true = the newest in output_dir; unset/false = start
  // from scratch (or resume automatically when output_dir has a checkpoint, as LLaMA-Factory).
  std::optional<std::string> resume_from_checkpoint;
  bool save_only_model = false;  // checkpoints hold only the trainable weights (no resume)
  bool plot_loss = false;        // training_loss.svg (+ training_eval_loss.svg) at the end
  std::vector<std::string> report_to = {"none"};  // none | tensorboard
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
    v("lora_alpha", lora_alpha, "LoRA alpha (default: 2 x lora_rank)");
    v("lora_dropout", lora_dropout, "LoRA dropout");
    v("lora_target", lora_target, "projections that get a plain LoRA (all: every one)");
    v("use_rslora", use_rslora, "scale by alpha/sqrt(r) (every group)");
    v("moe", moe, "MoLoRA settings (finetuning_type molora)");
    v("dataset", dataset, "training datasets: names (a,b) or a list of {path, format, weight}");
    v("eval_dataset", eval_dataset, "evaluation datasets: names or {path, format} entries");
    v("dataset_dir", dataset_dir, "folder of dataset_info.json for datasets given by name");
    v("max_samples", max_samples, "records read per dataset, the first ones (0: all)");
    v("mix_strategy", mix_strategy, "weights | concat | interleave_under | interleave_over");
    v("interleave_probs", interleave_probs, "sampling probability of each dataset");
    v("val_size", val_size, "held-out evaluation examples: fraction or count (0: none)");
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
    v("eval_strategy", eval_strategy, "no | steps | epoch");
    v("eval_steps", eval_steps, "evaluation loss every N steps (0: logging_steps)");
    v("per_device_eval_batch_size", per_device_eval_batch_size, "rows per rank in evaluation");
    v("load_best_model_at_end", load_best_model_at_end, "result = checkpoint of lowest eval_loss");
    v("overwrite_output_dir", overwrite_output_dir,
      "train from scratch over a non-empty output_dir");
    v("resume_from_checkpoint", resume_from_checkpoint, "checkpoint folder, or true: the newest");
    v("save_only_model", save_only_model, "checkpoints without optimizer/RNG state (no resume)");
    v("plot_loss", plot_loss, "write training_loss.svg / training_eval_loss.svg");
    v("report_to", report_to, "none | tensorboard (event files under output_dir/runs)");
    v("seed", seed, "random seed (init, dropout, data order)");
    v("device", device, "cpu | cuda | cuda:N");
    v("threads", threads, "CPU threads (0: cores available)");
  }

  // The adapter layout these options describe (finetuning_type molora or lora).
  adapt::AdapterConfig adapter_config() const;
  double effective_lora_alpha() const { return lora_alpha.value_or(2.0 * lora_rank); }
  // The data options for the training (or evaluation) datasets.
  data::DataOptions data_options(bool eval = false) const;
  // Cross-field checks; UsageError naming the key (e.g. "moe.top_k 9 > moe.experts 8").
  void validate() const;
};

}  // namespace ming::train
