// ming-bench's measurements, as a library: model shapes, adapter configurations, the machine's
// own limits, and one row of prefill / decode / training throughput per configuration.
//
// Every figure is set next to a limit measured in the same process, so a row says how far from
// the machine it runs, not just how fast:
//   prefill, train : model FLOPs utilisation against the measured GEMM throughput of the compute
//                    dtype (a matmul shaped like the model's MLP projection: tokens x D x I).
//   decode         : tokens/s against the bandwidth bound = copy bandwidth / bytes read per step.
//
// FLOP counting (attention score/value products are left out, as in the usual 2·N·tokens rule,
// so utilisation is slightly conservative at long prompts):
//   forward           2 · (matmul parameters) per token; the output head only where it runs
//                     (the last position in prefill, every position in training).
//   frozen-base train forward + input gradient = 2 × forward (no weight gradients).
//   adapters          LoRA 2·r·(in+out) per token and projection; MoLoRA k·2·r·(in+out) plus
//                     the router 2·E·in; in training 3 × that (forward + both gradients).
// The dense reference path does E/k times more adapter work, but its rows count the same useful
// FLOPs, so its utilisation drops exactly by the work it wastes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/adapt/config.h"
#include "ming/adapt/molora.h"
#include "ming/model/config.h"
#include "ming/model/projection.h"
#include "ming/model/transformer.h"

namespace ming::bench {

// Names accepted by model_shape(), in the order --help lists them.
const std::vector<std::string>& model_shape_names();
// The config.json shape of a real model (hidden/intermediate/layers/heads/kv heads/vocab/tied,
// biases, rope theta) for a random model built in memory; "tiny" is a 2-layer toy for tests.
// UsageError naming the value and the accepted names otherwise.
model::ModelConfig model_shape(const std::string& name);

// One adapter configuration of a run.
struct AdapterShape {
  enum class Kind { none, lora, molora, folder };
  Kind kind = Kind::none;
  int64_t experts = 8, top_k = 2, r = 16;  // molora only
  std::string folder;                      // Kind::folder: an adapter directory
  std::string label() const;               // "none", "lora", "molora:8,2,16", the folder
};

// "none" | "lora" (MING-MOE's attention LoRA alone: q/k/v/o r 16 alpha 32 dropout 0.05) |
// "molora" (MING-MOE's layout: that attention LoRA + MLP gate/up/down MoLoRA 8 experts top-2
// r 16) | "molora:E,k,r". Comma-separated lists are split at commas outside ":E,k,r" groups.
// UsageError naming the item on anything else.
std::vector<AdapterShape> parse_adapter_shapes(const std::string& text);

// The AdapterConfig an AdapterShape stands for (lora / molora kinds only).
adapt::AdapterConfig adapter_config(const AdapterShape& shape);

// MING-MOE's training-time MoLoRA: every expert on every token, the outputs stacked and the
// top-k gathered (adapt::dense_reference_mixture), with the parameters of a live MoloraAdapter
// (registered as submodule "molora", so optimisers and files see the same tensors).
class DenseReferenceAdapter : public model::ProjectionAdapter {
 public:
  explicit DenseReferenceAdapter(std::shared_ptr<adapt::MoloraAdapter> molora);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base) override;
  const std::shared_ptr<adapt::MoloraAdapter>& molora() const { return molora_; }

 private:
  std::shared_ptr<adapt::MoloraAdapter> molora_;
};

// Swaps every MoloraAdapter attached to a projection of `module` for a DenseReferenceAdapter
// over the same parameters (dense = true), or back (dense = false). Returns how many it swapped.
int set_dense_reference(torch::nn::Module& module, bool dense);

// Median, mean, spread and best of repeated measurements of a rate (tokens/s: higher is better).
// Ratios and utilisation use the median: one lucky rep does not move it.
struct Stat {
  std::vector<double> values;
  double median = 0, mean = 0, stddev = 0, min = 0, max = 0;
  bool empty() const { return values.empty(); }
  double best() const { return max; }
  static Stat of(std::vector<double> values);
  nlohmann::json to_json() const;
};

// This machine's limits for the model's shapes, measured at start-up.
struct MachineLimits {
  int threads = 0;
  int64_t gemm_m = 0, gemm_k = 0, gemm_n = 0;  // (m x k) @ (k x n)
  double gemm_bf16_flops = 0;                  // best FLOP/s
  double gemm_fp32_flops = 0;
  double copy_bandwidth = 0;  // bytes/s, read + write (gen::measure_copy_bandwidth)
  double gemm_flops(torch::ScalarType dtype) const {
    return dtype == torch::kFloat32 ? gemm_fp32_flops : gemm_bf16_flops;
  }
  nlohmann::json to_json() const;
};

// Times (m x k) @ (k x n) in bf16 and fp32 (best of `reps` after a warm-up) and the copy
// bandwidth over `copy_bytes`.
MachineLimits measure_limits(int64_t m, int64_t k, int64_t n, int reps = 3,
                             int64_t copy_bytes = int64_t(1) << 29);

struct BenchOptions {
  int64_t batch = 1;
  int64_t prompt = 512;      // prefill tokens per sequence (0: no prefill/decode)
  int64_t generate = 128;    // decode steps (0: no decode)
  int64_t train_tokens = 0;  // tokens per training step (0: no training)
  int64_t train_seq = 512;   // training sequence length; batch = train_tokens / train_seq
  int reps = 3;
  // Training with activation recomputation: "on", "off", or "both" (reps interleaved, so the two
  // see the same machine load).
  std::string recompute = "on";
  double learning_rate = 1e-4;
  uint64_t seed = 0;
};

// FLOPs per token of the frozen base forward: 2 · matmul parameters, head excluded.
double base_forward_flops_per_token(const model::ModelConfig& config);
// FLOPs per token of the output head (2 · V · D).
double head_flops_per_token(const model::ModelConfig& config);
// Forward FLOPs per token of the adapters attached to `module` (sparse work, see above).
double adapter_forward_flops_per_token(torch::nn::Module& module);
// Bytes one decode step reads: every parameter, less the input embedding when it is not also
// the output head (a step reads one of its rows).
double decode_weight_bytes(model::CausalLM& model);

// Peak memory of a training step (RSS on the CPU, peak allocated on CUDA; core/memory.h) and its
// split: frozen weights, trainable weights with their gradients and AdamW moments, and what the
// step itself added (activations and working buffers). `other` is the rest of the peak: the
// framework and, on the CPU, freed memory the allocator kept.
struct TrainMemory {
  double peak = 0, weights = 0, trainable_state = 0, activations = 0, other = 0;
  nlohmann::json to_json() const;
};

struct BenchRow {
  std::string adapter;             // AdapterShape::label()
  std::string mixture = "sparse";  // "sparse" | "dense" (MoLoRA path), "-" without MoLoRA
  int64_t trainable_parameters = 0;
  // tokens/s per rep (empty when not run); train with recomputation, train_plain without.
  Stat prefill, decode, train, train_plain;
  // Utilisation of the median rep against the limits (useful FLOPs: recomputation not counted).
  double prefill_mfu = 0, train_mfu = 0, train_plain_mfu = 0, decode_bound_fraction = 0;
  double decode_bound_tokens_per_second = 0;
  TrainMemory train_memory, train_plain_memory;
  // Time ratios of medians: against the first "none" row of the run, the dense MoLoRA row
  // against its sparse twin, and recomputation against none (in this row): > 1 = slower.
  std::optional<double> prefill_vs_base, decode_vs_base, train_vs_sparse, recompute_vs_plain;
  nlohmann::json to_json() const;
};

// Measures one configuration on `model`, whose adapters are already attached (`parameters` are
// the trainable ones; training is skipped when empty). The training step is ming-train's:
// labelled-position loss (train/loss.h) over every position, recomputation as configured, AdamW.
// Leaves the model in eval mode.
BenchRow bench_configuration(model::CausalLM& model, const std::vector<torch::Tensor>& parameters,
                             const std::shared_ptr<adapt::MoeContext>& context,
                             const BenchOptions& options, const MachineLimits& limits);

}  // namespace ming::bench
