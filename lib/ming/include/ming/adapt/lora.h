// Plain LoRA on a frozen projection (Hu et al. 2021; the PEFT layout):
//   y = base + scaling * B A dropout(x),   scaling = alpha / r   (alpha / sqrt(r) with rsLoRA)
// A (r, in) is kaiming-uniform(a = sqrt(5)), B (out, r) starts at zero, so a fresh adapter is a
// no-op. MING-MOE uses it on attention q/k/v/o with r = 16, alpha = 32, dropout = 0.05.
//
// Numerics: A and B are fp32 master weights (what the optimiser updates and what files hold);
// forward casts them to x's dtype (bf16 by default: oneDNN runs bf16 matmuls an order of
// magnitude faster than fp32 on AMX CPUs), so activations are never upcast and autograd still
// delivers fp32 gradients to the masters. Without autograd (evaluation, chat, decode) the cast
// copies are kept and reused until the master changes, so a decode step reads bf16 adapter
// weights once instead of reading fp32 and writing bf16 on every token.
//
//   auto lora = std::make_shared<ming::adapt::LoraAdapter>(896, 896, LoraOptions{16, 32.0, 0.05});
//   projection->set_adapter(lora);   // Projection computes base once and calls lora->forward
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include "ming/model/projection.h"

namespace ming::adapt {

struct LoraOptions {
  int64_t r = 16;
  double alpha = 32.0;
  double dropout = 0.0;
  bool use_rslora = false;
};

// alpha / r, or alpha / sqrt(r) with use_rslora.
double lora_scaling(int64_t r, double alpha, bool use_rslora);

// Initialises a (r, in) LoRA A like torch.nn.init.kaiming_uniform_(A, a=sqrt(5)) (PEFT, MING):
// uniform(-1/sqrt(in), 1/sqrt(in)). Works on (..., r, in) stacks, per last-dim fan-in.
void init_lora_a_(torch::Tensor a);

// A parameter in the compute dtype (and, for the decode kernel, with its last two dimensions
// transposed). Under autograd the cast is part of the graph (gradients reach the fp32 master);
// otherwise the copy is cached and rebuilt only when the master changes (an in-place update bumps
// its version counter; load/set_data replace its storage).
enum class Layout { same, transposed };

class ComputeCopy {
 public:
  torch::Tensor get(const torch::Tensor& master, torch::ScalarType dtype,
                    Layout layout = Layout::same);

 private:
  torch::Tensor copy_;
  const void* source_ = nullptr;
  int64_t version_ = -1;
};

class LoraAdapter : public model::ProjectionAdapter {
 public:
  // Parameters are created fp32 on `device`.
  LoraAdapter(int64_t in_features, int64_t out_features, LoraOptions options,
              torch::Device device = torch::kCPU);

  // x: (..., in), base: (..., out) in the compute dtype. Returns (..., out).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base) override;

  // scaling * B A: (out, in) fp32, the update that merging adds to W0.
  torch::Tensor delta_weight() const;
  void reset_parameters();

  const LoraOptions& options() const { return options_; }
  double scaling() const { return scaling_; }
  int64_t in_features() const { return lora_A.size(1); }
  int64_t out_features() const { return lora_B.size(0); }

  torch::Tensor lora_A;  // (r, in) fp32, registered as "lora_A"
  torch::Tensor lora_B;  // (out, r) fp32, registered as "lora_B"

 private:
  LoraOptions options_;
  double scaling_ = 1.0;
  ComputeCopy a_copy_, b_copy_, bt_copy_;
};

}  // namespace ming::adapt
