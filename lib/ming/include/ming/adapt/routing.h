// Shared state of all MoLoRA layers of one model: the token mask for the current forward, the
// auxiliary (balance / z) losses they accumulate for the trainer, per-step router load counts for
// training logs, and an optional routing recorder (ming-eval --trace-routes, ming-route-stats).
//
// Why one object: the decoder hands every projection only (x, base); anything that spans layers
// (padding mask, losses to add to the LM loss, traces) travels through this context, which
// inject_adapters() creates once and attaches to every MoloraAdapter it builds.
//
// Typical training step:
//   ctx->set_token_mask(attention_mask);            // (B, T) bool/int, true = real token
//   auto logits = model->forward(ids);
//   auto loss = lm_loss + ctx->take_aux_loss();     // coefficients already applied; resets
//   auto load = ctx->take_load();                   // per-layer expert load, resets
//   loss.backward();
//   ctx->clear_token_mask();                        // after backward: recomputed layers read it
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ming::adapt {

// Receives the routing decision of every MoLoRA layer for every forward (recorded in evaluation
// and training alike). Implementations must copy what they keep: the tensors are reused.
class RouteRecorder {
 public:
  virtual ~RouteRecorder() = default;
  // layer: the projection's HF module path ("model.layers.3.mlp.gate_proj").
  // experts: (N, k) int64 chosen expert ids, highest gate first. gates: (N, k) fp32 weights
  // (softmax over the k chosen logits; rows sum to 1). token_mask: (N) bool or undefined.
  // N = all tokens of the forward flattened (B*T, row-major).
  virtual void record(const std::string& layer, const torch::Tensor& experts,
                      const torch::Tensor& gates, const torch::Tensor& token_mask) = 0;
};

// A RouteRecorder that keeps everything in memory (CPU tensors), in call order.
class RouteTrace : public RouteRecorder {
 public:
  struct Entry {
    std::string layer;
    torch::Tensor experts;     // (N, k) int64
    torch::Tensor gates;       // (N, k) fp32
    torch::Tensor token_mask;  // (N) bool or undefined
  };
  void record(const std::string& layer, const torch::Tensor& experts, const torch::Tensor& gates,
              const torch::Tensor& token_mask) override;
  const std::vector<Entry>& entries() const { return entries_; }
  void clear() { entries_.clear(); }

 private:
  std::vector<Entry> entries_;
};

// Expert load of one layer accumulated since the last take_load(): counts[e] = number of
// (token, slot) assignments to expert e over non-padding tokens; tokens = non-padding tokens.
// fraction(e) = counts[e] / (tokens * k) sums to 1 over experts.
struct LayerLoad {
  std::vector<int64_t> counts;  // (E)
  int64_t tokens = 0;
  int64_t top_k = 1;
  double fraction(size_t e) const {
    return tokens > 0 ? double(counts.at(e)) / double(tokens * top_k) : 0.0;
  }
};

class MoeContext {
 public:
  // mask: any shape whose numel equals the token count N of the following forwards (normally
  // (B, T)); non-zero = real token. Padding tokens still go through the experts (same path for
  // every token) but are left out of balance/z losses, load statistics and nothing else.
  void set_token_mask(const torch::Tensor& mask);
  void clear_token_mask() { token_mask_ = torch::Tensor(); }
  // (N) bool on the mask's device, or undefined when none is set.
  const torch::Tensor& token_mask() const { return token_mask_; }

  // Called by the layers: `weighted` already carries the coefficient; balance/z are the raw
  // (unweighted) values kept for logging.
  void add_aux_loss(const torch::Tensor& weighted, double balance, double z_loss, bool has_balance,
                    bool has_z);
  // Mean over the layers that contributed since the last call of (coef_b * balance + coef_z *
  // z_loss) as a scalar tensor with autograd history; a zero scalar (no grad) when none
  // contributed. Resets the accumulator. Averaging over layers (as HF Mixtral does by
  // concatenating all layers' router logits) keeps the coefficient independent of depth.
  torch::Tensor take_aux_loss();
  // Detached means of the raw losses since the last take_aux_loss() (for metrics.jsonl).
  double last_balance_loss() const { return last_balance_; }
  double last_z_loss() const { return last_z_; }

  void add_load(const std::string& layer, const std::vector<int64_t>& counts, int64_t tokens,
                int64_t top_k);
  // Per-layer load since the last call (keyed by module path); resets.
  std::map<std::string, LayerLoad> take_load();

  // Routing recorder; nullptr (the default) turns recording off at the cost of one branch.
  void set_recorder(std::shared_ptr<RouteRecorder> recorder) { recorder_ = std::move(recorder); }
  RouteRecorder* recorder() const { return recorder_.get(); }

 private:
  torch::Tensor token_mask_;
  torch::Tensor aux_sum_;
  int64_t aux_layers_ = 0;
  double balance_sum_ = 0, z_sum_ = 0;
  int64_t balance_layers_ = 0, z_layers_ = 0;
  double last_balance_ = 0, last_z_ = 0;
  std::map<std::string, LayerLoad> load_;
  std::shared_ptr<RouteRecorder> recorder_;
};

}  // namespace ming::adapt
