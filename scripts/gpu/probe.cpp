// ming-gpu-probe: the C++ side of scripts/gpu-check.sh. No tool of ming writes raw logits or
// times a bare training step, so this small program does, through libming's public API, for the
// Python side (transformers / PEFT) to compare against.
//
//   ming-gpu-probe logits --model DIR [--adapter DIR] --ids IDS.safetensors --out OUT.safetensors
//                         [--dtype fp32|bf16] [--device cpu|cuda]
//       ids: tensor "ids" (B, T) int64; writes "logits" (B, T, V) fp32 of ming's forward.
//   ming-gpu-probe random-model --out DIR [--arch qwen2|llama] [--seed N] [--adapter-out DIR]
//       a tiny random checkpoint in HF layout (for the CPU dry run, where transformers is absent),
//       and optionally a random MING-MOE adapter for it.
//   ming-gpu-probe train-step [--shape qwen1.5-1.8b|tiny] [--batch B] [--seq T] [--warmup N]
//                             [--iters N] [--device D] [--dtype bf16|fp32]
//       one optimizer step (forward, token cross-entropy, backward, AdamW) of a frozen random base
//       with MING-MOE's default adapter layout; prints one JSON object.
//   ming-gpu-probe decode [--shape ...] [--batch B] [--prompt N] [--new N]
//                         [--adapter ming-moe|none]
//       greedy KV-cache decode tokens/s; prints one JSON object.
// Results go to stdout as JSON (one line); logs to stderr; exit 2 on bad arguments.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/adapt/adapter_io.h"
#include "ming/adapt/config.h"
#include "ming/core/error.h"
#include "ming/core/runtime.h"
#include "ming/io/safetensors.h"
#include "ming/model/load.h"
#include "ming/model/transformer.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// "--key value" pairs after the subcommand.
std::map<std::string, std::string> parse_flags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 2; i < argc; ++i) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc)
      ming::fail_usage("argument '{}': expected --key value pairs", key);
    flags[key.substr(2)] = argv[++i];
  }
  return flags;
}

std::string flag(const std::map<std::string, std::string>& f, const std::string& key,
                 const std::string& fallback) {
  auto it = f.find(key);
  return it == f.end() ? fallback : it->second;
}

std::string required(const std::map<std::string, std::string>& f, const std::string& key) {
  auto it = f.find(key);
  if (it == f.end()) ming::fail_usage("--{} is required", key);
  return it->second;
}

int64_t flag_int(const std::map<std::string, std::string>& f, const std::string& key,
                 int64_t fallback) {
  auto it = f.find(key);
  if (it == f.end()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    ming::fail_usage("--{} {}: expected an integer", key, it->second);
  }
}

torch::ScalarType parse_dtype(const std::string& text) {
  if (text == "fp32" || text == "float32") return torch::kFloat32;
  if (text == "bf16" || text == "bfloat16") return torch::kBFloat16;
  if (text == "fp16" || text == "float16") return torch::kFloat16;
  ming::fail_usage("--dtype {}: expected fp32, bf16 or fp16", text);
}

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Qwen1.5-1.8B's config.json (no weights: random), or a tiny Qwen2 for dry runs.
ming::model::ModelConfig shape_config(const std::string& shape) {
  ming::model::ModelConfig c;
  c.model_type = "qwen2";
  c.qkv_bias = true;
  c.rms_norm_eps = 1e-6;
  c.torch_dtype = "bfloat16";
  if (shape == "qwen1.5-1.8b") {
    c.vocab_size = 151936;
    c.hidden_size = 2048;
    c.intermediate_size = 5504;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 16;
    c.rope_theta = 1000000.0;
    c.max_position_embeddings = 32768;
    c.tie_word_embeddings = false;
  } else if (shape == "tiny") {
    c.vocab_size = 512;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.rope_theta = 10000.0;
    c.max_position_embeddings = 512;
    c.tie_word_embeddings = true;
  } else {
    ming::fail_usage("--shape {}: expected qwen1.5-1.8b or tiny", shape);
  }
  return c;
}

int cmd_logits(const std::map<std::string, std::string>& f) {
  const auto device = ming::parse_device(flag(f, "device", "cpu"));
  const auto dtype = parse_dtype(flag(f, "dtype", "fp32"));
  ming::model::LoadOptions lo;
  lo.dtype = dtype;
  lo.device = device;
  lo.load_tokenizer = false;  // ids come from the file; the tokenizer plays no part
  auto loaded = ming::model::load_model(required(f, "model"), lo);
  std::string format = "none";
  if (auto adapter = flag(f, "adapter", ""); !adapter.empty())
    format = ming::adapt::load_adapter(*loaded.model, adapter).format;
  loaded.model->eval();

  const std::string ids_path = required(f, "ids");
  auto file = ming::io::SafetensorsFile::open(ids_path);
  if (!file->find("ids")) ming::fail_usage("{}: no tensor named 'ids'", ids_path);
  auto ids = file->get("ids").to(torch::kInt64).to(device);  // (B, T)
  if (ids.dim() != 2) ming::fail_usage("{}: 'ids' must be (B, T), got {}", ids_path, ids.dim());

  torch::NoGradGuard no_grad;
  auto t0 = Clock::now();
  auto logits = loaded.model->forward(ids).to(torch::kFloat32);  // (B, T, V)
  sync(device);
  const double seconds = seconds_since(t0);
  ming::io::save_safetensors(required(f, "out"), {{"logits", logits.cpu().contiguous()}},
                             {{"dtype", flag(f, "dtype", "fp32")}, {"adapter", format}});
  std::cout << Json{{"batch", ids.size(0)},
                    {"tokens", ids.size(1)},
                    {"vocab", logits.size(-1)},
                    {"adapter_format", format},
                    {"finite", torch::isfinite(logits).all().item<bool>()},
                    {"seconds", seconds}}
                   .dump()
            << "\n";
  return 0;
}

int cmd_random_model(const std::map<std::string, std::string>& f) {
  auto config = shape_config("tiny");
  if (flag(f, "arch", "qwen2") == "llama") {
    config.model_type = "llama";
    config.qkv_bias = false;
    config.tie_word_embeddings = false;
  }
  config.torch_dtype = "float32";
  torch::manual_seed(flag_int(f, "seed", 0));
  ming::model::CausalLM model(config, torch::TensorOptions().dtype(torch::kFloat32));
  model->init_random(0.05);
  ming::model::save_model(required(f, "out"), config, model);
  Json report{{"out", required(f, "out")}, {"parameters", config.parameter_count()}};
  if (auto adapter_out = flag(f, "adapter-out", ""); !adapter_out.empty()) {
    // MING-MOE's layout with non-zero B, so that the adapter visibly changes the logits.
    auto injected = ming::adapt::inject_adapters(*model, ming::adapt::AdapterConfig{});
    {
      torch::NoGradGuard no_grad;
      for (auto& p : injected.parameters) p.normal_(0.0, 0.05);
    }
    ming::adapt::save_adapter(adapter_out, *model, ming::adapt::AdapterConfig{},
                              required(f, "out"));
    report["adapter_out"] = adapter_out;
    report["adapter_parameters"] = injected.n_trainable;
  }
  std::cout << report.dump() << "\n";
  return 0;
}

// A frozen random base of `shape` with MING-MOE's default adapters, on `device`.
struct BenchModel {
  ming::model::CausalLM model{nullptr};
  ming::adapt::InjectedAdapters injected;
};

BenchModel bench_model(const std::map<std::string, std::string>& f, bool with_adapter) {
  const auto device = ming::parse_device(flag(f, "device", "cpu"));
  const auto dtype = parse_dtype(flag(f, "dtype", "bf16"));
  torch::manual_seed(flag_int(f, "seed", 0));
  BenchModel b;
  b.model = ming::model::CausalLM(shape_config(flag(f, "shape", "qwen1.5-1.8b")),
                                  torch::TensorOptions().dtype(dtype).device(device));
  b.model->init_random(0.02);
  b.model->set_trainable(false);
  if (with_adapter) {
    b.injected = ming::adapt::inject_adapters(*b.model, ming::adapt::AdapterConfig{});
    // B starts at zero; a non-zero B makes the adapter's work visible to the router and the
    // backward pass exactly as after some training.
    torch::NoGradGuard no_grad;
    for (auto& p : b.injected.parameters)
      if (p.dim() >= 2) p.normal_(0.0, 0.01);
  }
  return b;
}

int cmd_train_step(const std::map<std::string, std::string>& f) {
  const auto device = ming::parse_device(flag(f, "device", "cpu"));
  const int64_t batch = flag_int(f, "batch", 4), seq = flag_int(f, "seq", 512);
  const int64_t warmup = flag_int(f, "warmup", 2), iters = flag_int(f, "iters", 5);
  auto b = bench_model(f, true);
  b.model->train();
  const int64_t vocab = b.model->config().vocab_size;
  torch::optim::AdamW opt(b.injected.parameters,
                          torch::optim::AdamWOptions(2e-4).weight_decay(0.0));
  auto ids = torch::randint(vocab, {batch, seq},
                            torch::TensorOptions().dtype(torch::kInt64).device(device));
  double last_loss = 0;
  auto step = [&] {
    opt.zero_grad();
    auto logits = b.model->forward(ids);                               // (B, T, V)
    auto shifted = logits.narrow(1, 0, seq - 1).reshape({-1, vocab});  // (B*(T-1), V)
    auto targets = ids.narrow(1, 1, seq - 1).reshape({-1});
    auto loss = torch::nn::functional::cross_entropy(shifted.to(torch::kFloat32), targets);
    if (b.injected.context) loss = loss + b.injected.context->take_aux_loss();
    loss.backward();
    opt.step();
    if (b.injected.context) b.injected.context->take_load();
    return loss;
  };
  for (int64_t i = 0; i < warmup; ++i) last_loss = step().item<double>();
  sync(device);
  auto t0 = Clock::now();
  torch::Tensor loss;
  for (int64_t i = 0; i < iters; ++i) loss = step();
  sync(device);
  const double ms = 1000.0 * seconds_since(t0) / static_cast<double>(std::max<int64_t>(iters, 1));
  if (loss.defined()) last_loss = loss.item<double>();
  std::cout << Json{{"shape", flag(f, "shape", "qwen1.5-1.8b")},
                    {"batch", batch},
                    {"seq", seq},
                    {"device", flag(f, "device", "cpu")},
                    {"dtype", flag(f, "dtype", "bf16")},
                    {"trainable", b.injected.n_trainable},
                    {"ms_per_step", ms},
                    {"tokens_per_second", 1000.0 * batch * seq / ms},
                    {"loss", last_loss}}
                   .dump()
            << "\n";
  return 0;
}

int cmd_decode(const std::map<std::string, std::string>& f) {
  const auto device = ming::parse_device(flag(f, "device", "cpu"));
  const int64_t batch = flag_int(f, "batch", 1), prompt = flag_int(f, "prompt", 16);
  const int64_t fresh = flag_int(f, "new", 64);
  const std::string adapter = flag(f, "adapter", "ming-moe");
  if (adapter != "ming-moe" && adapter != "none")
    ming::fail_usage("--adapter {}: expected ming-moe or none", adapter);
  auto b = bench_model(f, adapter == "ming-moe");
  b.model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(b.model->config().vocab_size, {batch, prompt},
                            torch::TensorOptions().dtype(torch::kInt64).device(device));
  ming::model::ForwardOptions fo;
  fo.output = ming::model::ForwardOutput::logits_last;
  auto run = [&](ming::model::KVCache& cache) {
    fo.cache = &cache;
    auto logits = b.model->forward(ids, fo);  // (B, 1, V)
    for (int64_t s = 0; s < fresh; ++s) logits = b.model->forward(logits.argmax(-1), fo);
    sync(device);
  };
  auto warm = b.model->new_cache(batch, prompt + fresh + 1);
  run(warm);  // first-call allocations and kernel selection stay out of the timing
  auto cache = b.model->new_cache(batch, prompt + fresh + 1);
  auto t0 = Clock::now();
  run(cache);
  const double seconds = seconds_since(t0);
  std::cout << Json{{"shape", flag(f, "shape", "qwen1.5-1.8b")},
                    {"adapter", adapter},
                    {"batch", batch},
                    {"prompt", prompt},
                    {"new_tokens", fresh},
                    {"seconds", seconds},
                    {"tokens_per_second", static_cast<double>(batch * fresh) / seconds}}
                   .dump()
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    const auto f = parse_flags(argc, argv);
    if (cmd == "logits") return cmd_logits(f);
    if (cmd == "random-model") return cmd_random_model(f);
    if (cmd == "train-step") return cmd_train_step(f);
    if (cmd == "decode") return cmd_decode(f);
    ming::fail_usage("usage: ming-gpu-probe logits|random-model|train-step|decode --key value ...");
  } catch (const ming::UsageError& e) {
    std::cerr << "ming-gpu-probe: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ming-gpu-probe: " << e.what() << "\n";
    return 1;
  }
}
