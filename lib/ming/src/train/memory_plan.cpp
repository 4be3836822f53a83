#include "ming/train/memory_plan.h"

#include <algorithm>

#include "ming/core/memory.h"
#include "ming/core/runtime.h"

namespace ming::train {

namespace {

// ming-train's resident size on the CPU before its first tensor (LibTorch, oneDNN, the tokenizer
// and the data index), measured at the Qwen2-0.5B shape with 2 threads.
constexpr double kCpuFramework = 0.40e9;
// Output-head rows per chunk and attention query rows per block follow train/loss.cpp and
// model/attention.cpp: about 16M logits / scores at a time.
constexpr double kWorkingElements = double(int64_t(1) << 24);

struct Projection {
  std::string name;  // suffix of the module path
  int64_t in, out;
  int input_group;  // projections reading the same tensor
};

// Bytes autograd keeps per token for one decoder layer, and the trainable parameters it adds.
struct LayerCost {
  double saved_per_token = 0;
  int64_t trainable = 0;
};

LayerCost layer_cost(const model::ModelConfig& c, const adapt::AdapterConfig* adapters, bool full,
                     double a) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, hd = c.head_size();
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const std::vector<Projection> projections = {{"self_attn.q_proj", D, H * hd, 0},
                                               {"self_attn.k_proj", D, Hkv * hd, 0},
                                               {"self_attn.v_proj", D, Hkv * hd, 0},
                                               {"self_attn.o_proj", H * hd, D, 1},
                                               {"mlp.gate_proj", D, I, 2},
                                               {"mlp.up_proj", D, I, 2},
                                               {"mlp.down_proj", I, D, 3}};
  LayerCost cost;
  bool input_kept[4] = {false, false, false, false};
  auto keep_input = [&](const Projection& p) {
    if (input_kept[p.input_group]) return;
    input_kept[p.input_group] = true;
    cost.saved_per_token += double(p.in) * a;
  };
  for (const auto& p : projections) {
    if (full) keep_input(p);  // for the weight's gradient
    const int g = adapters ? adapt::find_group(*adapters, "model.layers.0." + p.name) : -1;
    if (g < 0) continue;
    const auto& group = adapters->groups[size_t(g)];
    const int64_t r = group.r, E = group.experts;
    if (group.dropout > 0)
      cost.saved_per_token += double(p.in) * (1 + a);  // mask + dropped input
    else
      keep_input(p);
    if (group.is_moe()) {
      cost.saved_per_token += double(p.in) * 4 * (group.jitter > 0 ? 2 : 1);  // fp32 router input
      cost.saved_per_token += double(group.top_k) * r * (a + 4);              // per-pair A x, gates
      cost.trainable += E * r * (p.in + p.out) + E * p.in + (group.router_bias ? E : 0);
      if (group.shared_expert) cost.trainable += r * (p.in + p.out);
    } else {
      cost.saved_per_token += double(r) * a;
      cost.trainable += r * (p.in + p.out);
    }
  }
  cost.saved_per_token += 2.0 * (D * 4 + 4) + (full ? 2.0 * D * a : 0);  // the two RMSNorms
  cost.saved_per_token += double(H + 2 * Hkv) * hd * a;                  // q, k, v (after rope)
  cost.saved_per_token += 3.0 * I * a;  // SwiGLU: gate output, silu(gate), up output
  return cost;
}

}  // namespace

nlohmann::json MemoryPlan::to_json() const {
  return {{"per_device_train_batch_size", batch},
          {"cutoff_len", seq},
          {"gradient_checkpointing", recompute},
          {"trainable_parameters", trainable_parameters},
          {"weights_bytes", weights},
          {"trainable_and_optimizer_bytes", trainable},
          {"activations_bytes", activations},
          {"framework_bytes", framework},
          {"peak_bytes", total()}};
}

MemoryPlan plan_memory(const model::ModelConfig& c, const TrainOptions& options) {
  const bool full = options.finetuning_type == "full";
  const bool cuda = parse_device(options.device).is_cuda();
  const double a = options.bf16 ? 2.0 : 4.0;  // compute dtype bytes
  const double B = double(options.per_device_train_batch_size), T = double(options.cutoff_len);
  const double N = B * T;
  const double D = double(c.hidden_size), I = double(c.intermediate_size), V = double(c.vocab_size);
  const double L = double(c.num_hidden_layers), H = double(c.num_attention_heads);

  adapt::AdapterConfig adapters;
  if (!full) adapters = options.adapter_config();
  const LayerCost layer = layer_cost(c, full ? nullptr : &adapters, full, a);

  MemoryPlan plan;
  plan.batch = options.per_device_train_batch_size;
  plan.seq = options.cutoff_len;
  plan.recompute = options.gradient_checkpointing;
  const double base_parameters = double(c.parameter_count());
  if (full) {
    plan.trainable_parameters = c.parameter_count();
    plan.weights = options.bf16 ? base_parameters * 2 : 0;  // autocast's copies
  } else {
    plan.trainable_parameters = layer.trainable * c.num_hidden_layers;
    plan.weights = base_parameters * a;
  }
  plan.trainable = double(plan.trainable_parameters) * 16;  // fp32 weight, gradient, 2 moments

  const double per_layer = layer.saved_per_token * N;
  const double kept = plan.recompute ? L * N * D * a + per_layer : L * per_layer;
  // Backward of one layer: gradients of its widest intermediates and of the hidden state.
  const double layer_backward = N * (3 * I * a + 4 * D * 4);
  // One attention block: fp32 scores, probabilities and their gradients, with bf16 copies.
  const double scores = std::min(B * H * T * T, std::max(kWorkingElements, B * H * 16 * T));
  const double attention = scores * (4 + 4 + a + 4 + 4 + a);
  // Output head: the normed hidden state (and its fp32 norm input), the labelled rows and their
  // gradient, one chunk of logits with its fp32 copy, log-softmax and gradient.
  const double chunk_rows = std::min(N, std::max(64.0, kWorkingElements / V));
  const double head = N * D * (a + 4 + 2 * a) + chunk_rows * V * (2 * a + 12);
  plan.activations = kept + std::max({layer_backward + attention, head});
  plan.framework = cuda ? 0 : kCpuFramework;
  return plan;
}

int64_t largest_batch(const model::ModelConfig& config, TrainOptions options, double budget) {
  auto fits = [&](int64_t b) {
    options.per_device_train_batch_size = b;
    return plan_memory(config, options).total() <= budget;
  };
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = 2;
  while (hi < (int64_t(1) << 24) && fits(hi)) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::string format_plan(const MemoryPlan& p, double budget, int64_t fitting_batch) {
  std::string out = fmt::format(
      "memory plan per device: batch {} x {} tokens, gradient checkpointing {}\n"
      "  weights                     {:>10}\n"
      "  trainable + optimizer state {:>10}  ({} parameters)\n"
      "  activations                 {:>10}\n"
      "  framework                   {:>10}\n"
      "  predicted peak              {:>10}\n",
      p.batch, p.seq, p.recompute ? "on" : "off", format_bytes(p.weights),
      format_bytes(p.trainable), p.trainable_parameters, format_bytes(p.activations),
      format_bytes(p.framework), format_bytes(p.total()));
  if (budget > 0)
    out += fitting_batch > 0
               ? fmt::format("  largest per-device batch within {}: {}\n", format_bytes(budget),
                             fitting_batch)
               : fmt::format("  not even a batch of 1 fits in {}\n", format_bytes(budget));
  return out;
}

}  // namespace ming::train
