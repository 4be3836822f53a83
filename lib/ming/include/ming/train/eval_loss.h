// Evaluation loss during training (eval_dataset or a val_size hold-out): the mean token loss of
// the model on held-out conversations, overall and per dataset, the numbers a user watches for
// over-fitting (metrics.jsonl eval_loss, eval_<dataset>_loss).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ming/adapt/routing.h"
#include "ming/data/loader.h"
#include "ming/model/transformer.h"
#include "ming/train/distributed.h"

namespace ming::train {

struct EvalLoss {
  double loss = 0;     // summed token loss / target tokens, over every dataset
  int64_t tokens = 0;  // target tokens scored
  std::vector<std::pair<std::string, double>> per_dataset;  // (DatasetStats::name, loss)
};

struct EvalLossOptions {
  int64_t batch_size = 8;      // rows per rank per forward (per_device_eval_batch_size)
  int64_t max_examples = 512;  // cap over all datasets, shared out in proportion; <= 0: all
};

// Scores the examples of `data` in order (the first ones of each dataset up to its share of the
// cap), one example per row, without gradients; the caller puts the model in eval mode (and
// under autocast when it trains that way). Batches are dealt round-robin to the ranks of
// `group` and the sums all-reduced, so every rank returns the same numbers, equal to one rank's.
// `moe` (may be null) gets each batch's padding mask so routing statistics skip padding.
EvalLoss evaluate_loss(model::CausalLM& model, const data::TrainingData& data,
                       const EvalLossOptions& options, ProcessGroup& group, adapt::MoeContext* moe,
                       torch::Device device);

}  // namespace ming::train
