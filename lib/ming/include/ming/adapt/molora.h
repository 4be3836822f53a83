// MoLoRA: a frozen projection plus a sparse mixture of LoRA experts chosen per token by a router
// (MING-MOE, Liao et al. 2024, arXiv 2404.09027; released code MediaBrain-SJTU/MING `ming-moe`).
//
// Notation: N tokens (B*T flattened), D = in features, O = out features, E experts, k top-k,
// r LoRA rank, s = scaling (alpha / r, or alpha / sqrt(r) with rsLoRA).
//
//   logits = (W_r x + b_r) / T                 (E), fp32 router math ("switch" in MING); T = 1
//   S      = top-k indices of logits
//   w_i    = softmax over {logits_j : j in S}  (softmax of the k chosen logits only; equal to
//            MING's softmax-over-all then renormalise-the-top-k, in value and gradient)
//   y      = base + sum_{i in S} w_i * s * B_i A_i dropout(x)   [+ s * B_sh A_sh dropout(x)]
//
// Defaults reproduce the released MING-MOE MLP layer: E = 8, k = 2, r = 16, alpha = 32, router
// with bias and default nn.Linear init, no dropout (the released training path never applies
// lora_dropout to experts), no shared expert, no balance or z loss, no jitter. k == E gives dense
// soft mixing (softmax over all logits).
//
// Sparse dispatch (the same path in training and inference, any batch size): the base output is
// computed once by the Projection; tokens are flattened to (N, D); (token, slot) pairs are
// grouped by expert (one stable sort); each expert runs its low-rank pair only on its tokens; the
// gate-weighted results are combined per token. Without autograd, batches of at most 16 tokens
// (decode) skip the grouping: one kernel per layer runs each token's chosen experts. The reference
// instead runs every expert on every token in training (E/k times the work) and has a batch-1-only
// fast path in inference.
//
// Auxiliary losses (training mode only, padding masked through the MoeContext token mask):
//   switch : E * sum_e f_e P_e, f_e = share of the N*k assignments going to e (uniform -> 1)
//   mixtral: E * sum_e (count_e / N) P_e   (HF Mixtral's load_balancing_loss_func and MING's dev
//            branch use_lbl_loss; uniform -> k)
//   z-loss : mean_t logsumexp(logits_t)^2  (ST-MoE)
//   with P_e = mean_t softmax(logits_t)_e over all E. They are averaged over layers in the context.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "ming/adapt/lora.h"
#include "ming/adapt/routing.h"
#include "ming/io/config.h"
#include "ming/model/projection.h"

namespace ming::adapt {

enum class BalanceLoss { none, switch_style, mixtral };
constexpr config::NameTable<BalanceLoss, 3> enum_names(BalanceLoss) {
  return {{{BalanceLoss::none, "none"},
           {BalanceLoss::switch_style, "switch"},
           {BalanceLoss::mixtral, "mixtral"}}};
}

// The one description of a MoLoRA layer's settings: the layer takes it, adapter_config.json's
// groups store it (flat, beside name and targets) and ming-train's `moe:` block reads it. A new
// setting is a field here, one line in visit, and its use in molora.cpp. experts == 1 is a plain
// LoRA (only r, alpha, dropout and use_rslora apply).
struct MoloraOptions {
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t r = 16;
  double alpha = 32.0;
  double dropout = 0.0;
  bool use_rslora = false;
  bool router_bias = true;
  BalanceLoss balance_loss = BalanceLoss::none;
  double balance_loss_coef = 0.01;
  double router_z_loss_coef = 0.0;  // 0 = off
  bool shared_expert = false;       // one always-on LoRA expert (rank r, weight 1)
  double jitter = 0.0;  // training only: router input *= U(1 - jitter, 1 + jitter) (Switch)
  double router_temperature = 1.0;  // logits / T before top-k and softmax (< 1: sharper)

  // "lora_rank", "lora_alpha", "lora_dropout": the names ming-train's moe: block used first.
  template <class V>
  void visit(V& v) {
    v("experts", experts, "experts per layer (1 = plain LoRA)");
    v("top_k", top_k, "experts chosen per token (= experts: dense soft mixing)");
    v("r|lora_rank", r, "LoRA rank of each expert");
    v("alpha|lora_alpha", alpha, "LoRA alpha of each expert (scaling alpha / r)");
    v("dropout|lora_dropout", dropout, "dropout on the experts' input (MING-MOE: 0)");
    v("use_rslora", use_rslora, "scale by alpha / sqrt(r)");
    v("router_bias", router_bias, "router Linear has a bias (MING-MOE: yes)");
    v("balance_loss", balance_loss, "auxiliary load-balancing loss");
    v("balance_loss_coef", balance_loss_coef, "weight of the balance loss");
    v("router_z_loss_coef", router_z_loss_coef, "weight of the router z-loss (0: off)");
    v("shared_expert", shared_expert, "add an always-on expert");
    v("jitter", jitter, "multiplicative router-input noise in training (Switch)");
    v("router_temperature", router_temperature, "router logits divided by T before top-k");
  }
};

// How the expert A stage (A_e x) runs.
enum class DispatchA {
  automatic,  // currently dense (the faster on CPU in every measured shape; see molora.cpp)
  dense,      // x (N, D) @ [A_0; ...; A_{E-1}]^T in one matmul, then pick the routed rows
  gathered,   // gather each expert's tokens, (n_e, D) @ A_e^T
};

class MoloraAdapter : public model::ProjectionAdapter {
 public:
  // Parameters are fp32 on `device`. `context` may be null: the adapter then makes its own.
  MoloraAdapter(int64_t in_features, int64_t out_features, MoloraOptions options,
                std::shared_ptr<MoeContext> context = nullptr, torch::Device device = torch::kCPU);

  // x: (..., D), base: (..., O) in the compute dtype (bf16/fp16/fp32/fp64). Returns (..., O).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base) override;

  // Router decision for x (..., D) -> experts (N, k) int64, gates (N, k) fp32 (no jitter).
  std::pair<torch::Tensor, torch::Tensor> route(const torch::Tensor& x);

  void reset_parameters();
  void set_name(std::string name) { name_ = std::move(name); }  // module path, for traces/logs
  const std::string& name() const { return name_; }
  void set_context(std::shared_ptr<MoeContext> context);
  const std::shared_ptr<MoeContext>& context() const { return context_; }
  void set_dispatch_a(DispatchA mode) { dispatch_a_ = mode; }

  const MoloraOptions& options() const { return options_; }
  double scaling() const { return scaling_; }
  int64_t in_features() const { return lora_A.size(2); }
  int64_t out_features() const { return lora_B.size(1); }

  torch::Tensor lora_A;         // (E, r, D) fp32, registered "lora_A"; expert i is lora_A[i]
  torch::Tensor lora_B;         // (E, O, r) fp32, registered "lora_B"
  torch::Tensor router_weight;  // (E, D) fp32, registered "router_weight"
  torch::Tensor router_bias;    // (E) fp32 or undefined, registered "router_bias"
  torch::Tensor shared_A;       // (r, D) fp32 or undefined, registered "shared_A"
  torch::Tensor shared_B;       // (O, r) fp32 or undefined, registered "shared_B"

 private:
  MoloraOptions options_;
  double scaling_ = 1.0;
  std::string name_;
  std::shared_ptr<MoeContext> context_;
  DispatchA dispatch_a_ = DispatchA::automatic;
  ComputeCopy a_copy_, b_copy_, bt_copy_, shared_a_copy_, shared_b_copy_;
};

// Low-level sparse mixture (exposed for tests and benchmarks): given x (N, D), expert ids (N, k)
// int64, gate weights already multiplied by the scaling (N, k) in x's dtype, A (E, r, D) and
// B (E, O, r) in x's dtype, returns base (N, O) + sum_slots gate * B_e A_e x with autograd
// through x, gates, A, B and base.
torch::Tensor sparse_lora_mixture(const torch::Tensor& x, const torch::Tensor& experts,
                                  const torch::Tensor& scaled_gates, const torch::Tensor& a,
                                  const torch::Tensor& b, const torch::Tensor& base,
                                  DispatchA mode = DispatchA::automatic);

}  // namespace ming::adapt
