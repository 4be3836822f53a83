#include "ming/bench/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "ming/adapt/bench.h"
#include "ming/adapt/lora.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/core/memory.h"
#include "ming/gen/bench.h"
#include "ming/train/loss.h"

namespace ming::bench {

using torch::Tensor;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

model::ModelConfig qwen(int64_t hidden, int64_t inter, int64_t layers, int64_t heads,
                        int64_t kv_heads, bool tied) {
  model::ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.max_position_embeddings = 32768;
  c.tie_word_embeddings = tied;
  c.qkv_bias = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151643};
  c.torch_dtype = "bfloat16";
  return c;
}

// Every Projection leaf of `module` (module path, projection).
std::vector<std::pair<std::string, model::ProjectionImpl*>> projections(torch::nn::Module& module) {
  std::vector<std::pair<std::string, model::ProjectionImpl*>> out;
  for (const auto& item : module.named_modules("", false)) {
    if (auto* p = dynamic_cast<model::ProjectionImpl*>(item.value().get()))
      out.emplace_back(item.key(), p);
  }
  return out;
}

}  // namespace

// ---- shapes ------------------------------------------------------------------------------------

const std::vector<std::string>& model_shape_names() {
  static const std::vector<std::string> names = {"qwen2-0.5b", "qwen1.5-0.5b", "qwen1.5-1.8b",
                                                 "qwen2-1.5b", "llama-7b",     "tiny"};
  return names;
}

model::ModelConfig model_shape(const std::string& name) {
  // Sizes from the models' config.json files on the Hugging Face hub.
  if (name == "qwen2-0.5b") return qwen(896, 4864, 24, 14, 2, true);
  if (name == "qwen1.5-0.5b") return qwen(1024, 2816, 24, 16, 16, true);
  if (name == "qwen1.5-1.8b") return qwen(2048, 5504, 24, 16, 16, false);
  if (name == "qwen2-1.5b") return qwen(1536, 8960, 28, 12, 2, true);
  if (name == "llama-7b") {
    model::ModelConfig c;  // huggyllama/llama-7b
    c.model_type = "llama";
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.num_hidden_layers = 32;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 32;
    c.rms_norm_eps = 1e-6;
    c.max_position_embeddings = 2048;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    c.torch_dtype = "float16";
    return c;
  }
  if (name == "tiny") {
    auto c = qwen(64, 128, 2, 4, 2, true);
    c.vocab_size = 512;
    return c;
  }
  fail_usage("--shape: unknown model shape '{}' (expected one of: {})", name,
             fmt::join(model_shape_names(), ", "));
}

// ---- adapter configurations --------------------------------------------------------------------

std::string AdapterShape::label() const {
  switch (kind) {
    case Kind::none:
      return "none";
    case Kind::lora:
      return "lora";
    case Kind::molora:
      return fmt::format("molora:{},{},{}", experts, top_k, r);
    case Kind::folder:
      return folder;
  }
  return "?";
}

std::vector<AdapterShape> parse_adapter_shapes(const std::string& text) {
  // Split at commas, except those inside a "molora:E,k,r" item (the two commas after ':').
  std::vector<std::string> items;
  size_t i = 0;
  while (i <= text.size()) {
    size_t end = text.find(',', i);
    if (text.compare(i, 7, "molora:") == 0) {
      for (int skip = 0; skip < 2 && end != std::string::npos; ++skip)
        end = text.find(',', end + 1);
    }
    if (end == std::string::npos) end = text.size();
    items.push_back(text.substr(i, end - i));
    i = end + 1;
  }
  std::vector<AdapterShape> shapes;
  for (const auto& item : items) {
    AdapterShape s;
    if (item == "none") {
      s.kind = AdapterShape::Kind::none;
    } else if (item == "lora") {
      s.kind = AdapterShape::Kind::lora;
    } else if (item == "molora") {
      s.kind = AdapterShape::Kind::molora;
    } else if (item.rfind("molora:", 0) == 0) {
      s.kind = AdapterShape::Kind::molora;
      long long e = 0, k = 0, r = 0;
      char tail = 0;
      if (std::sscanf(item.c_str() + 7, "%lld,%lld,%lld%c", &e, &k, &r, &tail) != 3 || e < 2 ||
          k < 1 || k > e || r < 1)
        fail_usage(
            "--adapter-shape: '{}' is not molora:E,k,r with E >= 2 experts, 1 <= k <= E, r >= 1",
            item);
      s.experts = e;
      s.top_k = k;
      s.r = r;
    } else {
      fail_usage("--adapter-shape: unknown item '{}' (expected none, lora, molora or molora:E,k,r)",
                 item);
    }
    shapes.push_back(s);
  }
  return shapes;
}

adapt::AdapterConfig adapter_config(const AdapterShape& shape) {
  adapt::AdapterConfig config;  // MING-MOE's layout: [attention LoRA, MLP MoLoRA]
  if (shape.kind == AdapterShape::Kind::lora) {
    config.groups.resize(1);
  } else if (shape.kind == AdapterShape::Kind::molora) {
    auto& mlp = config.groups.at(1);
    mlp.experts = shape.experts;
    mlp.top_k = shape.top_k;
    mlp.r = shape.r;
  } else {
    throw Error(fmt::format("adapter_config: '{}' is not a generated shape", shape.label()));
  }
  adapt::validate(config);
  return config;
}

// ---- dense reference ---------------------------------------------------------------------------

DenseReferenceAdapter::DenseReferenceAdapter(std::shared_ptr<adapt::MoloraAdapter> molora)
    : molora_(register_module("molora", std::move(molora))) {}

Tensor DenseReferenceAdapter::forward(const Tensor& x, const Tensor& base) {
  return adapt::dense_reference_mixture(*molora_, x, base);
}

int set_dense_reference(torch::nn::Module& module, bool dense) {
  int swapped = 0;
  for (auto& [name, p] : projections(module)) {
    const auto& current = p->adapter();
    if (dense) {
      if (auto m = std::dynamic_pointer_cast<adapt::MoloraAdapter>(current)) {
        p->set_adapter(std::make_shared<DenseReferenceAdapter>(m));
        ++swapped;
      }
    } else if (auto d = std::dynamic_pointer_cast<DenseReferenceAdapter>(current)) {
      p->set_adapter(d->molora());
      ++swapped;
    }
  }
  return swapped;
}

// ---- statistics and limits ---------------------------------------------------------------------

Stat Stat::of(std::vector<double> values) {
  Stat s;
  s.values = std::move(values);
  if (s.values.empty()) return s;
  const double n = static_cast<double>(s.values.size());
  s.mean = std::accumulate(s.values.begin(), s.values.end(), 0.0) / n;
  double var = 0;
  for (double v : s.values) var += (v - s.mean) * (v - s.mean);
  s.stddev = s.values.size() > 1 ? std::sqrt(var / (n - 1)) : 0.0;
  std::vector<double> sorted = s.values;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  s.median = sorted.size() % 2 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
  s.min = *std::min_element(s.values.begin(), s.values.end());
  s.max = *std::max_element(s.values.begin(), s.values.end());
  return s;
}

nlohmann::json Stat::to_json() const {
  if (empty()) return nullptr;
  return {{"median", median}, {"best", best()}, {"mean", mean},  {"stddev", stddev},
          {"min", min},       {"max", max},     {"reps", values}};
}

nlohmann::json MachineLimits::to_json() const {
  return {{"threads", threads},
          {"gemm_shape", {gemm_m, gemm_k, gemm_n}},
          {"gemm_bf16_tflops", gemm_bf16_flops / 1e12},
          {"gemm_fp32_tflops", gemm_fp32_flops / 1e12},
          {"copy_bandwidth_gbs", copy_bandwidth / 1e9}};
}

MachineLimits measure_limits(int64_t m, int64_t k, int64_t n, int reps, int64_t copy_bytes) {
  torch::NoGradGuard no_grad;
  MachineLimits limits;
  limits.threads = torch::get_num_threads();
  limits.gemm_m = m;
  limits.gemm_k = k;
  limits.gemm_n = n;
  auto time_gemm = [&](torch::ScalarType dtype) {
    // Activations (m, k) times a weight stored (n, k), as nn.Linear multiplies.
    auto a = torch::randn({m, k}).to(dtype);
    auto w = torch::randn({n, k}).to(dtype);
    auto out = torch::mm(a, w.t());  // warm-up: oneDNN primitive creation, page faults
    double best = 0;
    for (int r = 0; r < std::max(1, reps); ++r) {
      auto t0 = std::chrono::steady_clock::now();
      out = torch::mm(a, w.t());
      best = std::max(best, 2.0 * m * k * n / seconds_since(t0));
    }
    return best;
  };
  limits.gemm_bf16_flops = time_gemm(torch::kBFloat16);
  limits.gemm_fp32_flops = time_gemm(torch::kFloat32);
  limits.copy_bandwidth = gen::measure_copy_bandwidth(copy_bytes, std::max(3, reps));
  return limits;
}

// ---- FLOPs and bytes ---------------------------------------------------------------------------

double base_forward_flops_per_token(const model::ModelConfig& c) {
  const double d = c.hidden_size, hd = c.head_size();
  const double attn = d * hd * (c.num_attention_heads * 2 + c.num_key_value_heads * 2);
  const double mlp = 3.0 * d * c.intermediate_size;
  return 2.0 * c.num_hidden_layers * (attn + mlp);
}

double head_flops_per_token(const model::ModelConfig& c) {
  return 2.0 * static_cast<double>(c.vocab_size) * c.hidden_size;
}

double adapter_forward_flops_per_token(torch::nn::Module& module) {
  double flops = 0;
  for (auto& [name, p] : projections(module)) {
    auto adapter = p->adapter();
    if (auto d = std::dynamic_pointer_cast<DenseReferenceAdapter>(adapter)) adapter = d->molora();
    const double io = static_cast<double>(p->in_features() + p->out_features());
    if (auto l = std::dynamic_pointer_cast<adapt::LoraAdapter>(adapter)) {
      flops += 2.0 * l->options().r * io;
    } else if (auto m = std::dynamic_pointer_cast<adapt::MoloraAdapter>(adapter)) {
      const auto& o = m->options();
      flops += 2.0 * o.top_k * o.r * io + 2.0 * o.experts * p->in_features();
      if (o.shared_expert) flops += 2.0 * o.r * io;
    }
  }
  return flops;
}

double decode_weight_bytes(model::CausalLM& model) {
  double bytes = 0;
  for (const auto& p : model->parameters()) bytes += p.numel() * p.element_size();
  if (!model->config().tie_word_embeddings) {
    const auto& e = model->model->embed_tokens->weight;
    bytes -= e.numel() * e.element_size();
  }
  return bytes;
}

// ---- one configuration -------------------------------------------------------------------------

nlohmann::json TrainMemory::to_json() const {
  if (peak <= 0) return nullptr;
  return {{"peak_bytes", peak},
          {"weights_bytes", weights},
          {"trainable_state_bytes", trainable_state},
          {"activations_bytes", activations},
          {"other_bytes", other}};
}

nlohmann::json BenchRow::to_json() const {
  auto opt = [](const std::optional<double>& v) -> nlohmann::json {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  return {
      {"adapter", adapter},
      {"mixture", mixture},
      {"trainable_parameters", trainable_parameters},
      {"prefill_tokens_per_second", prefill.to_json()},
      {"decode_tokens_per_second", decode.to_json()},
      {"train_tokens_per_second", train.to_json()},
      {"train_no_recompute_tokens_per_second", train_plain.to_json()},
      {"train_memory", train_memory.to_json()},
      {"train_no_recompute_memory", train_plain_memory.to_json()},
      {"prefill_mfu", prefill.empty() ? nlohmann::json(nullptr) : nlohmann::json(prefill_mfu)},
      {"train_mfu", train.empty() ? nlohmann::json(nullptr) : nlohmann::json(train_mfu)},
      {"train_no_recompute_mfu",
       train_plain.empty() ? nlohmann::json(nullptr) : nlohmann::json(train_plain_mfu)},
      {"decode_bound_tokens_per_second",
       decode.empty() ? nlohmann::json(nullptr) : nlohmann::json(decode_bound_tokens_per_second)},
      {"decode_bound_fraction",
       decode.empty() ? nlohmann::json(nullptr) : nlohmann::json(decode_bound_fraction)},
      {"prefill_time_vs_base", opt(prefill_vs_base)},
      {"decode_time_vs_base", opt(decode_vs_base)},
      {"train_time_vs_sparse", opt(train_vs_sparse)},
      {"recompute_time_vs_no_recompute", opt(recompute_vs_plain)}};
}

BenchRow bench_configuration(model::CausalLM& model, const std::vector<Tensor>& parameters,
                             const std::shared_ptr<adapt::MoeContext>& context,
                             const BenchOptions& o, const MachineLimits& limits) {
  BenchRow row;
  for (const auto& p : parameters) row.trainable_parameters += p.numel();
  const auto& config = model->config();
  const auto dtype = model->dtype();
  const auto ids_options = torch::TensorOptions().dtype(torch::kInt64).device(model->device());
  const double adapter_flops = adapter_forward_flops_per_token(*model);
  const double peak = limits.gemm_flops(dtype);

  if (o.prompt > 0) {
    torch::NoGradGuard no_grad;
    model->eval();
    auto ids = torch::randint(config.vocab_size, {o.batch, o.prompt}, ids_options);
    model::ForwardOptions fo;
    fo.output = model::ForwardOutput::logits_last;
    std::vector<double> prefill, decode;
    // One untimed round first: oneDNN primitives and allocator pools for these shapes (a few
    // decode steps warm the single-token path as well as a full round would).
    for (int rep = -1; rep < o.reps; ++rep) {
      const int64_t steps = rep < 0 ? std::min<int64_t>(o.generate, 8) : o.generate;
      auto cache = model->new_cache(o.batch, o.prompt + o.generate + 1);
      fo.cache = &cache;
      auto t0 = std::chrono::steady_clock::now();
      auto logits = model->forward(ids, fo);  // (B, 1, V)
      logits.sum().item<float>();
      const double prefill_s = seconds_since(t0);
      if (o.generate > 0) {
        auto next = logits.argmax(-1);  // (B, 1)
        t0 = std::chrono::steady_clock::now();
        for (int64_t s = 0; s < steps; ++s) {
          logits = model->forward(next, fo);
          next = logits.argmax(-1);
        }
        next.sum().item<int64_t>();
        if (rep >= 0) decode.push_back(o.batch * o.generate / seconds_since(t0));
      }
      if (rep >= 0) prefill.push_back(o.batch * o.prompt / prefill_s);
    }
    row.prefill = Stat::of(prefill);
    row.decode = Stat::of(decode);
    // Prefill runs the head on the last position of each sequence only.
    const double prefill_flops_per_token =
        base_forward_flops_per_token(config) + adapter_flops +
        head_flops_per_token(config) / static_cast<double>(o.prompt);
    row.prefill_mfu = row.prefill.median * prefill_flops_per_token / peak;
    if (!row.decode.empty()) {
      row.decode_bound_tokens_per_second =
          o.batch * limits.copy_bandwidth / decode_weight_bytes(model);
      row.decode_bound_fraction = row.decode.median / row.decode_bound_tokens_per_second;
    }
  }

  if (o.train_tokens > 0 && !parameters.empty()) {
    const int64_t seq = std::min(o.train_seq, o.train_tokens);
    if (o.train_tokens % seq != 0)
      fail_usage("--train {} is not a multiple of --train-seq {}", o.train_tokens, seq);
    if (o.recompute != "on" && o.recompute != "off" && o.recompute != "both")
      fail_usage("--recompute must be on, off or both, got '{}'", o.recompute);
    const int64_t batch = o.train_tokens / seq;
    const auto device = model->device();
    model->train();
    torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(o.learning_rate));
    // Every position is labelled: the head runs on all of them, as in the FLOP count.
    auto ids = torch::randint(config.vocab_size, {batch, seq}, ids_options);
    const double targets = double(batch * (seq - 1));
    auto step = [&](bool recompute) {
      model::ForwardOptions fo;
      fo.output = model::ForwardOutput::hidden;
      fo.recompute = recompute;
      auto loss = train::labelled_token_loss(model, model->forward(ids, fo), ids) / targets;
      if (context) loss = loss + context->take_aux_loss();
      loss.backward();
      optimizer.step();
      optimizer.zero_grad();
      if (context) context->take_load();
    };
    std::vector<bool> modes;
    if (o.recompute != "off") modes.push_back(true);
    if (o.recompute != "on") modes.push_back(false);
    std::vector<double> rates[2];
    TrainMemory memory[2];
    double trainable_bytes = 0, frozen_bytes = 0;
    for (const auto& p : model->parameters())
      (p.requires_grad() ? trainable_bytes : frozen_bytes) += double(p.numel() * p.element_size());
    for (int rep = -1; rep < o.reps; ++rep) {
      for (bool recompute : modes) {
        // After the warm-up rep, gradients and AdamW moments exist: what a step adds on top of
        // them is its activations and working buffers.
        const double before = double(current_memory_bytes(device));
        reset_peak_memory(device);
        auto t0 = std::chrono::steady_clock::now();
        step(recompute);
        const double seconds = seconds_since(t0);
        if (rep < 0) continue;
        rates[recompute].push_back(o.train_tokens / seconds);
        TrainMemory& m = memory[recompute];
        const double peak = double(peak_memory_bytes(device));
        if (peak > m.peak) {
          m.peak = peak;
          m.weights = frozen_bytes;
          m.trainable_state = 4 * trainable_bytes;  // weights, gradients, two moments
          m.activations = peak - before;
          m.other = peak - m.weights - m.trainable_state - m.activations;
        }
      }
    }
    model->eval();
    const double train_flops_per_token =
        2.0 * (base_forward_flops_per_token(config) + head_flops_per_token(config)) +
        3.0 * adapter_flops;
    row.train = Stat::of(rates[1]);
    row.train_plain = Stat::of(rates[0]);
    row.train_memory = memory[1];
    row.train_plain_memory = memory[0];
    if (!row.train.empty()) row.train_mfu = row.train.median * train_flops_per_token / peak;
    if (!row.train_plain.empty())
      row.train_plain_mfu = row.train_plain.median * train_flops_per_token / peak;
    if (!row.train.empty() && !row.train_plain.empty())
      row.recompute_vs_plain = row.train_plain.median / row.train.median;
  }
  return row;
}

}  // namespace ming::bench
