#include "ming/train/eval_loss.h"

#include <algorithm>
#include <cmath>

namespace ming::train {

namespace {

// How many of each dataset's examples are scored: all, or the cap shared out in proportion
// (rounded down, at least one per dataset).
std::vector<int64_t> scored_counts(const data::TrainingData& data, int64_t cap) {
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (int64_t d = 0; d < data.n_datasets(); ++d) {
    counts.push_back(static_cast<int64_t>(data.examples(d).size()));
    total += counts.back();
  }
  if (cap <= 0 || total <= cap) return counts;
  for (auto& c : counts)
    c = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(cap) * c / total));
  return counts;
}

}  // namespace

EvalLoss evaluate_loss(model::CausalLM& model, const data::TrainingData& data,
                       const EvalLossOptions& options, ProcessGroup& group, adapt::MoeContext* moe,
                       torch::Device device) {
  torch::NoGradGuard no_grad;
  const int64_t n_datasets = data.n_datasets();
  const std::vector<int64_t> counts = scored_counts(data, options.max_examples);
  std::vector<data::ExampleRef> refs;
  for (int64_t d = 0; d < n_datasets; ++d)
    for (int64_t i = 0; i < counts[d]; ++i) refs.push_back({static_cast<int32_t>(d), i, 0});

  // Per dataset: summed token loss, then target tokens.
  std::vector<double> sums(2 * n_datasets, 0.0);
  const int64_t b = std::max<int64_t>(1, options.batch_size);
  const int64_t n_batches = (static_cast<int64_t>(refs.size()) + b - 1) / b;
  for (int64_t k = group.rank(); k < n_batches; k += group.world_size()) {
    const auto first = refs.begin() + k * b;
    const auto last =
        refs.begin() + std::min<int64_t>(static_cast<int64_t>(refs.size()), (k + 1) * b);
    const data::Batch batch = data::collate_examples(data, {first, last});
    model::ForwardOptions fwd;
    fwd.attention_mask = batch.attention_mask.to(device);
    fwd.position_ids = batch.position_ids.to(device);
    if (moe) moe->set_token_mask(fwd.attention_mask);
    auto logits = model->forward(batch.input_ids.to(device), fwd);  // (B, T, V)
    if (moe) {
      moe->clear_token_mask();
      moe->take_aux_loss();
      moe->take_load();
    }
    const int64_t T = logits.size(1);
    auto targets = batch.labels.narrow(1, 1, T - 1).to(device);  // (B, T-1)
    auto token_loss = torch::nn::functional::cross_entropy(
        logits.narrow(1, 0, T - 1).reshape({-1, logits.size(-1)}).to(torch::kFloat32),
        targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions()
            .ignore_index(data::kIgnoreIndex)
            .reduction(torch::kNone));
    auto row_loss = token_loss.view({-1, T - 1}).sum(1).to(torch::kCPU, torch::kFloat64);
    auto row_tokens = targets.ne(data::kIgnoreIndex).sum(1).to(torch::kCPU, torch::kFloat64);
    for (const auto& ex : batch.examples) {
      sums[2 * ex.dataset] += row_loss[ex.row].item<double>();
      sums[2 * ex.dataset + 1] += row_tokens[ex.row].item<double>();
    }
  }
  std::vector<torch::Tensor> reduced = {torch::tensor(sums, torch::kFloat64)};
  group.all_reduce_sum(reduced);
  auto totals = reduced[0].contiguous();
  const double* t = totals.data_ptr<double>();

  EvalLoss out;
  double loss_sum = 0, tokens = 0;
  for (int64_t d = 0; d < n_datasets; ++d) {
    loss_sum += t[2 * d];
    tokens += t[2 * d + 1];
    out.per_dataset.emplace_back(data.stats()[d].name,
                                 t[2 * d + 1] > 0 ? t[2 * d] / t[2 * d + 1] : std::nan(""));
  }
  out.loss = tokens > 0 ? loss_sum / tokens : std::nan("");
  out.tokens = static_cast<int64_t>(tokens);
  return out;
}

}  // namespace ming::train
