// A memory plan before a run starts: the peak memory one device will need for a training config,
// from the model's shape alone (config.json; no weights are read), and the largest per-device
// batch that fits a budget.
//
// The peak is the sum of what lives at the worst moment of a step (the backward of the first
// layer, or of the output head):
//   weights      frozen base in the compute dtype (full fine-tuning: fp32 masters, counted in
//                trainable, plus the bf16 copies autocast keeps during the step)
//   trainable    fp32 master weights, their gradients and AdamW's two moments (16 bytes each)
//   activations  what autograd keeps per token and layer, counted tensor by tensor from the
//                layer's code (norms' fp32 inputs, adapter dropout masks and inputs, fp32 router
//                inputs, q/k/v for attention, the SwiGLU gate/up/product) for every layer, or with
//                recomputation each layer's input plus one layer's worth; plus the attention and
//                output-head working blocks and the gradient of the hidden states
//   framework    on the CPU, the resident size of LibTorch and the process before any tensor
//                (measured: ming-train's start-up RSS); on CUDA not counted (allocated bytes
//                exclude the CUDA context)
// Every position is assumed to carry a label (the head works on labelled rows only, so real data
// with masked prompts needs less).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "ming/model/config.h"
#include "ming/train/options.h"

namespace ming::train {

struct MemoryPlan {
  int64_t batch = 0, seq = 0;
  bool recompute = true;
  int64_t trainable_parameters = 0;
  double weights = 0, trainable = 0, activations = 0, framework = 0;  // bytes
  double total() const { return weights + trainable + activations + framework; }
  nlohmann::json to_json() const;
};

// The plan for `options` (finetuning_type, adapters, per_device_train_batch_size, cutoff_len,
// bf16, gradient_checkpointing, device) on a model of shape `config`.
MemoryPlan plan_memory(const model::ModelConfig& config, const TrainOptions& options);

// The largest per-device batch whose plan fits `budget` bytes (0 when not even one row fits).
int64_t largest_batch(const model::ModelConfig& config, TrainOptions options, double budget);

// A few lines for a terminal: the split, the total, and the batch that fits the budget.
std::string format_plan(const MemoryPlan& plan, double budget, int64_t fitting_batch);

}  // namespace ming::train
