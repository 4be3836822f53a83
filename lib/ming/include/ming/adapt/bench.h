// Micro-benchmarks of the MoLoRA layer (for ming-bench and for choosing dispatch strategies).
//
// Two questions, on one MLP block of a Qwen2-shaped decoder (gate/up: H -> I, down: I -> H):
// 1. Adapter work only (router + experts, forward + backward, base output given): ming's sparse
//    dispatch versus MING-MOE's reference training path, which runs every expert on every token,
//    stacks (E, N, O), gathers the top-k and mixes them with an einsum.
// 2. A whole training step of the block: MoLoRA-MLP forward + backward versus the frozen base MLP
//    forward + backward (input gradient only, as for a frozen layer inside a trained model).
// Times are medians over `iterations` after `warmup` runs, in milliseconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/adapt/molora.h"

namespace ming::adapt {

struct MoloraBenchOptions {
  int64_t tokens = 2048;
  int64_t hidden = 896;         // Qwen2-0.5B
  int64_t intermediate = 4864;  // Qwen2-0.5B
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t r = 16;
  torch::ScalarType dtype = torch::kBFloat16;
  int threads = 2;  // <= 0: leave LibTorch's setting alone
  int warmup = 2;
  int iterations = 7;
  DispatchA dispatch = DispatchA::automatic;
  uint64_t seed = 0;
};

struct ProjectionBench {
  std::string name;  // "gate_proj", "up_proj", "down_proj"
  int64_t in_features = 0, out_features = 0;
  double sparse_ms = 0;  // ming's adapter forward + backward
  double dense_ms = 0;   // MING-MOE reference: every expert on every token
};

struct MoloraBenchResult {
  std::vector<ProjectionBench> projections;
  double sparse_ms = 0;  // sum over the three projections
  double dense_ms = 0;
  double base_mlp_ms = 0;    // frozen base MLP forward + backward (dx only)
  double molora_mlp_ms = 0;  // the same MLP with MoLoRA on gate/up/down
  double sparse_over_dense() const { return dense_ms > 0 ? sparse_ms / dense_ms : 0; }
  double molora_over_base() const { return base_mlp_ms > 0 ? molora_mlp_ms / base_mlp_ms : 0; }
};

MoloraBenchResult bench_molora_mlp(const MoloraBenchOptions& options = {});

// MING-MOE's reference mixture (molora_helper2) in x's dtype: every expert on every token, then
// the top-k gathered. x (N, D), base (N, O) -> (N, O). For benchmarks and cross-checks.
torch::Tensor dense_reference_mixture(MoloraAdapter& adapter, const torch::Tensor& x,
                                      const torch::Tensor& base);

}  // namespace ming::adapt
