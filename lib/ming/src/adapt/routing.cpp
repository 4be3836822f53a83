#include "ming/adapt/routing.h"

#include "ming/core/error.h"
#include "ming/model/recompute.h"

namespace ming::adapt {

void RouteTrace::record(const std::string& layer, const torch::Tensor& experts,
                        const torch::Tensor& gates, const torch::Tensor& token_mask) {
  Entry entry;
  entry.layer = layer;
  entry.experts = experts.detach().to(torch::kCPU, torch::kInt64).clone();
  entry.gates = gates.detach().to(torch::kCPU, torch::kFloat32).clone();
  if (token_mask.defined()) entry.token_mask = token_mask.detach().to(torch::kCPU).clone();
  entries_.push_back(std::move(entry));
}

void MoeContext::set_token_mask(const torch::Tensor& mask) {
  if (!mask.defined()) {
    token_mask_ = torch::Tensor();
    return;
  }
  token_mask_ = mask.detach().reshape({-1}).ne(0);
}

void MoeContext::add_aux_loss(const torch::Tensor& weighted, double balance, double z_loss,
                              bool has_balance, bool has_z) {
  // Inside a recomputed layer the loss leaves through the layer's outputs; its re-run in the
  // backward hands it over again, already counted.
  if (model::replaying()) {
    model::defer_region_loss(weighted, nullptr);
    return;
  }
  auto accumulate = [this](const torch::Tensor& term) {
    aux_sum_ = aux_sum_.defined() ? aux_sum_ + term : term;
  };
  if (!model::defer_region_loss(weighted, accumulate)) accumulate(weighted);
  ++aux_layers_;
  if (has_balance) balance_sum_ += balance, ++balance_layers_;
  if (has_z) z_sum_ += z_loss, ++z_layers_;
}

torch::Tensor MoeContext::take_aux_loss() {
  torch::Tensor result =
      aux_layers_ > 0 ? aux_sum_ / double(aux_layers_) : torch::zeros({}, torch::kFloat32);
  last_balance_ = balance_layers_ > 0 ? balance_sum_ / double(balance_layers_) : 0.0;
  last_z_ = z_layers_ > 0 ? z_sum_ / double(z_layers_) : 0.0;
  aux_sum_ = torch::Tensor();
  aux_layers_ = balance_layers_ = z_layers_ = 0;
  balance_sum_ = z_sum_ = 0;
  return result;
}

void MoeContext::add_load(const std::string& layer, const std::vector<int64_t>& counts,
                          int64_t tokens, int64_t top_k) {
  LayerLoad& load = load_[layer];
  if (load.counts.empty()) load.counts.assign(counts.size(), 0);
  if (load.counts.size() != counts.size())
    fail("MoLoRA layer '{}': expert count changed from {} to {} between forwards", layer,
         load.counts.size(), counts.size());
  for (size_t e = 0; e < counts.size(); ++e) load.counts[e] += counts[e];
  load.tokens += tokens;
  load.top_k = top_k;
}

std::map<std::string, LayerLoad> MoeContext::take_load() {
  std::map<std::string, LayerLoad> result;
  result.swap(load_);
  return result;
}

}  // namespace ming::adapt
