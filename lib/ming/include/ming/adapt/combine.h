// Combining adapters: several plain-LoRA adapters into one (combine), or into the experts of a
// MoLoRA adapter (upcycle).
//
// combine follows PEFT's LoraModel.add_weighted_adapter (huggingface/peft, lora/model.py and
// utils/merge_utils.py). Adapter i contributes dW_i = s_i B_i A_i (s_i its alpha/r) with weight
// w_i. The result is written with alpha = r (scaling 1), every s_i folded into the tensors:
//   cat     A = [w_1 s_1 A_1; ...; w_n s_n A_n], B = [B_1 ... B_n]: rank sum r_i and exactly
//           sum_i w_i dW_i.
//   svd     dW = sum_i w_i dW_i, truncated to rank R (default: the largest input rank) by an SVD
//           dW = U S V^T, B = U_R S_R^(1/2), A = S_R^(1/2) V_R^T (PEFT puts S wholly into B; the
//           same product, but balanced factors train better). dW has rank <= sum r_i, so the SVD
//           runs on the factors (QR of [w_i s_i B_i] and of [A_i]^T, then an SVD of a small
//           (sum r_i)^2 core) and never forms dW: exact and cheap for any model size. R >= the
//           rank of dW reproduces it to fp32 rounding; ranks beyond it start like a fresh LoRA
//           (A kaiming-uniform, B zero), so they change nothing and can still be trained.
//   linear  A = sum_i sign(w_i s_i) sqrt|w_i s_i| A_i, B = sum_i sqrt|w_i s_i| B_i
//   ties    TIES-merging (Yadav et al. 2023) on the A's and on the B's with those weights: keep
//           the top `density` fraction of each tensor by magnitude, elect each entry's sign
//           (total: sign of the sum; frequency: sign of the sum of signs), average the weighted
//           entries that agree with it.
//   dare    DARE (Yu et al. 2023) + linear: drop each entry with probability 1 - density,
//           rescale the rest by 1/density (seeded), then linear. dare_ties: DARE then TIES.
//   ties_svd, dare_svd (= PEFT's dare_linear_svd), dare_ties_svd: the same operations on the
//           dense updates w_i dW_i, then the svd step.
// NOTE linear, ties and dare act on A and B separately, as PEFT's do: B A of the result is NOT
// sum_i w_i dW_i (it contains the cross terms B_i A_j). Use cat for the exact sum, svd for the
// exact sum at a chosen rank. linear/ties/dare need equal ranks per projection (UsageError
// naming the adapters and ranks otherwise). A projection adapted by only some inputs combines
// those (PEFT does the same). The result targets the union of the inputs' target_modules.
//
// upcycle builds a MoLoRA adapter whose expert i starts as adapter i on the targeted projections
// (MLP gate/up/down by default), so ming-train can go on from several single-task adapters
// (adapter_name_or_path). Expert i reproduces dW_i exactly: experts share one rank r = the
// largest input rank and one scaling s (the first adapter's), so expert i gets B_i * s_i / s and
// any extra rank starts like a fresh LoRA (A kaiming, B zero). An adapter without a targeted
// projection gets a fresh (no-op) expert there. The router starts like MING's fresh router
// (nn.Linear init, U(-1/sqrt(D), 1/sqrt(D)), seeded): a zero router would tie all logits, send
// every token to the same k experts and starve the others of gradient until the tie broke;
// small random logits spread tokens over all experts from the first step with near-equal gates,
// so each token starts as a near-even blend of k task adapters. Other projections (attention):
//   mean   the exact average (1/n) sum_i dW_i, as cat (rank sum r_i)  [default for several]
//   first  adapter 1's LoRA unchanged                                  [default for from_lora]
//   drop   none
// from_lora (MING-MOE's dev-branch init): one trained LoRA copied into each of `experts`
// experts. The gates of a token's k experts sum to 1, so before any training the MoLoRA adapter
// computes exactly that LoRA's function (up to rounding); training then lets the copies drift
// apart.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ming::adapt {

enum class CombineMethod {
  linear,
  cat,
  svd,
  ties,
  dare_linear,
  dare_ties,
  magnitude_prune,
  ties_svd,
  dare_linear_svd,
  dare_ties_svd,
};
// "linear" | "cat" | "svd" | "ties" | "dare" (= "dare_linear") | "dare_ties" | "magnitude_prune"
// | "ties_svd" | "dare_svd" (= "dare_linear_svd") | "dare_ties_svd"; UsageError otherwise.
CombineMethod parse_combine_method(const std::string& text);
std::string combine_method_name(CombineMethod method);

enum class MajoritySign { total, frequency };
MajoritySign parse_majority_sign(const std::string& text);

// ---- PEFT's merge_utils on task tensors (exposed for tests) ------------------------------------

// Keeps the int(density * numel) entries of largest magnitude, zeroes the rest.
torch::Tensor magnitude_prune(const torch::Tensor& t, double density);
// Zeroes each entry with probability 1 - density (Bernoulli from `generator`); divides the kept
// ones by density when `rescale`.
torch::Tensor random_prune(const torch::Tensor& t, double density, bool rescale,
                           torch::Generator& generator);
// tasks stacked on dim 0 (n, ...): true where an entry's sign equals the elected sign
// (sum >= 0 -> +1, else -1; a zero entry never agrees).
torch::Tensor majority_sign_mask(const torch::Tensor& stacked, MajoritySign method);
// sum_i weighted_i * mask_i / max(1, sum_i mask_i).
torch::Tensor disjoint_merge(const torch::Tensor& weighted, const torch::Tensor& mask);

// The task-arithmetic step of `method` (its non-svd part) on tensors of one shape:
// linear: sum w_i t_i; ties: prune by magnitude, elect, disjoint merge of w_i t_i; dare_linear:
// random prune + rescale, then sum; dare_ties: random prune + rescale, then ties' election;
// magnitude_prune: prune by magnitude, then sum. `density` in (0, 1] (1 = no pruning).
torch::Tensor merge_task_tensors(CombineMethod method, const std::vector<torch::Tensor>& tasks,
                                 const std::vector<double>& weights, double density,
                                 MajoritySign sign, torch::Generator& generator);

// Rank-`rank` factors of dW = b (O, K) @ a (K, D) by the factored SVD described above:
// returns {B (O, rank), A (rank, D)} fp32 with B A = the best rank-`rank` approximation of dW;
// ranks beyond rank(dW) get fresh-LoRA factors (A kaiming-uniform from `generator`, B zero).
std::pair<torch::Tensor, torch::Tensor> low_rank_factors(const torch::Tensor& b,
                                                         const torch::Tensor& a, int64_t rank,
                                                         torch::Generator& generator);

// ---- combine ------------------------------------------------------------------------------------

struct CombineOptions {
  std::vector<std::filesystem::path> adapters;  // plain-LoRA adapter folders (ming or PEFT)
  std::vector<double> weights;                  // one per adapter; empty = all 1.0
  CombineMethod method = CombineMethod::cat;
  std::optional<int64_t> rank;    // svd methods: output rank (default: max input r)
  std::optional<double> density;  // ties/dare/magnitude_prune: required, (0, 1]
  MajoritySign majority_sign = MajoritySign::total;
  uint64_t seed = 0;  // dare's drops and fresh svd ranks
  std::filesystem::path output;
  bool replace = true;
};

struct CombineReport {
  int64_t n_projections = 0;
  int64_t min_rank = 0, max_rank = 0;  // output ranks over projections
};

CombineReport combine(const CombineOptions& options);

// ---- upcycle ------------------------------------------------------------------------------------

struct UpcycleOptions {
  std::vector<std::filesystem::path> adapters;  // >= 2 plain-LoRA adapters: expert i = adapter i
  std::filesystem::path from_lora;              // or: this one adapter in every expert ...
  int64_t experts = 8;                          // ... of this many
  std::vector<std::string> targets = {"gate_proj", "up_proj", "down_proj"};
  int64_t top_k = 2;
  bool router_bias = true;
  std::string others;  // mean | first | drop (see above); empty: the default for the inputs
  uint64_t seed = 0;   // router init and fresh ranks
  std::filesystem::path output;
  bool replace = true;
};

struct UpcycleReport {
  int64_t n_molora = 0;  // projections that became MoLoRA layers
  int64_t n_lora = 0;    // other projections written as plain LoRA
  int64_t rank = 0;      // experts' rank
};

UpcycleReport upcycle(const UpcycleOptions& options);

}  // namespace ming::adapt
