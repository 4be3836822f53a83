// ming-train's loop: a frozen base with LoRA / MoLoRA adapters (or every weight, for small bases)
// trained on a mixture of datasets, on one process or data-parallel over many.
//
// One optimizer step = gradient_accumulation_steps micro-batches of per_device_train_batch_size
// rows on every rank. The loss is the sum of token losses over the whole global step divided by
// the number of target tokens in it (counted before any backward and summed over ranks), so the
// result does not depend on how the global batch is split into ranks and micro-batches: 2 ranks
// with batch b reach the same weights as 1 rank with batch 2b.
//
// Run folder (output_dir):
//   config.yaml              the fully resolved configuration
//   metrics.jsonl            one JSON object per logged step (step, loss, learning_rate,
//                            grad_norm, tokens_per_second, epoch, router balance, ...)
//   adapter_config.json + adapter_model.safetensors   the result (lora / molora), or
//   config.json + model.safetensors + tokenizer files  the result (full)
//   checkpoint-<step>/       trainable weights, optimizer, scheduler, RNG and data position;
//                            the last save_total_limit are kept
//
// Resume (resume = true) continues from the newest checkpoint as if the run had not stopped:
// same batches, same dropout draws, same losses. SIGTERM / SIGINT make the loop write a
// checkpoint at the next step boundary and return with `interrupted` set.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "ming/io/config.h"
#include "ming/train/options.h"

namespace ming::train {

struct TrainResult {
  int64_t steps = 0;                 // optimizer steps done in total (including before a resume)
  int64_t skipped_nonfinite = 0;     // steps skipped for a non-finite loss or gradient
  double final_loss = 0;             // mean loss of the last logged window
  bool interrupted = false;          // stopped by SIGTERM/SIGINT after writing a checkpoint
  std::filesystem::path checkpoint;  // the last checkpoint written (if any)
};

struct RunOptions {
  bool resume = false;  // continue from the newest checkpoint in output_dir
  // Stop (as if interrupted) after this many steps of this invocation; 0 = no limit. For tests
  // and for splitting a long run over several batch jobs.
  int64_t stop_after_steps = 0;
};

// Reads a training config (YAML + --set overrides) into TrainOptions; unknown keys, bad types
// and bad values are reported together (UsageError).
TrainOptions load_train_options(const std::filesystem::path& config_path,
                                const std::vector<std::string>& overrides);

TrainResult train(const TrainOptions& options, const RunOptions& run = {});

// The learning rate at `step` (0-based) of `total` with `warmup` steps: linear warm-up from 0,
// then cosine to 0, linear to 0, or constant.
double scheduled_lr(const std::string& schedule, double peak, int64_t step, int64_t total,
                    int64_t warmup);

}  // namespace ming::train
