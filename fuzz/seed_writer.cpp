// fuzz-seed-writer CORPUS_DIR: writes the binary seeds that only LibTorch or ming's own writers
// can make (used by scripts/fuzz-seeds): safetensors files, a torch.save dict, route traces, a
// tiny llama2.c checkpoint, and the JSON ming writes for model and adapter configs.
#include <cstdio>
#include <fstream>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "ming/model/llama2c.h"
#include "ming/route/trace.h"
#include "ming/train/options.h"

namespace fs = std::filesystem;

namespace {

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_trace(const fs::path& path, ming::route::GateDtype gates, int64_t experts) {
  ming::route::RouteTraceWriter writer(path, {.gate_dtype = gates, .meta = {{"tool", "seed"}}});
  writer.declare_layer("model.layers.0.mlp.gate_proj", experts, 2);
  writer.declare_layer("model.layers.0.mlp.down_proj", experts, 2);
  const auto mask = torch::tensor({{1, 1, 1}, {1, 1, 0}});
  writer.begin_batch({{"ex-1", "medqa"}, {"ex-2", ""}}, mask);
  for (const char* layer : {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.down_proj"}) {
    const auto ids = torch::randint(experts, {6, 2}, torch::kInt64);
    const auto weights = torch::softmax(torch::randn({6, 2}), -1);
    writer.record(layer, ids, weights, mask);
  }
  writer.end_batch();
  writer.close();
}

// dim 8, hidden 16, 1 layer, 2 heads (2 kv), vocab 16 (negative: unshared classifier), seq 4.
void write_llama2c(const fs::path& path, bool shared) {
  const int32_t dim = 8, hidden = 16, layers = 1, heads = 2, kv = 2, vocab = 16, seq = 4;
  const int32_t header[7] = {dim, hidden, layers, heads, kv, shared ? vocab : -vocab, seq};
  const int64_t head_dim = dim / heads;
  int64_t floats = vocab * dim + layers * dim * 2 + layers * dim * dim * 2 +
                   layers * dim * (kv * head_dim) * 2 + layers * hidden * dim * 3 + dim +
                   seq * head_dim;
  if (!shared) floats += vocab * dim;
  std::string bytes(reinterpret_cast<const char*>(header), sizeof header);
  const auto w = torch::randn({floats}) * 0.1;
  bytes.append(reinterpret_cast<const char*>(w.data_ptr<float>()), floats * sizeof(float));
  write_bytes(path, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz-seed-writer CORPUS_DIR\n");
    return 2;
  }
  const fs::path corpus = argv[1];
  torch::manual_seed(0);
  for (const char* d : {"safetensors", "torch_pickle", "route_trace", "llama2c_checkpoint",
                        "model_config", "adapter_config"})
    fs::create_directories(corpus / d);

  ming::io::save_safetensors(corpus / "safetensors" / "dtypes",
                             {{"f32", torch::randn({2, 3})},
                              {"bf16", torch::randn({4}).to(torch::kBFloat16)},
                              {"f16", torch::randn({1, 1, 2}).to(torch::kHalf)},
                              {"i64", torch::arange(3)},
                              {"scalar", torch::tensor(1.5)},
                              {"empty", torch::zeros({0, 4})}},
                             {{"format", "pt"}});
  ming::io::save_safetensors(corpus / "safetensors" / "one", {{"w", torch::ones({1})}});

  c10::Dict<std::string, torch::Tensor> dict;
  dict.insert("base_model.model.model.layers.0.mlp.gate_proj.switch.weight", torch::randn({4, 8}));
  dict.insert("base_model.model.model.layers.0.mlp.gate_proj.switch.bias", torch::zeros({4}));
  const auto pickled = torch::pickle_save(dict);
  write_bytes(corpus / "torch_pickle" / "non_lora_trainables.bin",
              std::string(pickled.begin(), pickled.end()));

  write_trace(corpus / "route_trace" / "f16-u8", ming::route::GateDtype::f16, 8);
  write_trace(corpus / "route_trace" / "f32-u16", ming::route::GateDtype::f32, 300);

  write_llama2c(corpus / "llama2c_checkpoint" / "shared.bin", true);
  write_llama2c(corpus / "llama2c_checkpoint" / "unshared.bin", false);
  const auto checkpoint = ming::model::read_llama2c(corpus / "llama2c_checkpoint" / "shared.bin");
  write_bytes(corpus / "model_config" / "from-llama2c.json", checkpoint.config.to_json().dump(1));

  ming::train::TrainOptions options;
  write_bytes(corpus / "adapter_config" / "ming-molora.json",
              ming::adapt::adapter_config_json(options.adapter_config(), "base").dump(1));
  options.finetuning_type = "lora";
  write_bytes(corpus / "adapter_config" / "ming-lora.json",
              ming::adapt::adapter_config_json(options.adapter_config(), "base").dump(1));
  return 0;
}
