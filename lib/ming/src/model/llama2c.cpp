#include "ming/model/llama2c.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/model/load.h"

namespace ming::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

torch::Tensor permute_rotary_rows(const torch::Tensor& w, int64_t n_heads) {
  // transformers/models/llama/convert_llama_weights_to_hf.py:
  //   w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({n_heads, rows / n_heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

Llama2cCheckpoint read_llama2c(const fs::path& path) {
  const std::string where = path.string();
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail_usage("cannot open llama2.c checkpoint '{}': {}", where, std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  const uint64_t file_size = fs::file_size(path);

  int32_t header[7];
  if (file_size < sizeof(header) || std::fread(header, sizeof(header), 1, f) != 1)
    fail_usage("'{}': too short for a llama2.c checkpoint header (28 bytes)", where);
  if (static_cast<uint32_t>(header[0]) == 0x616b3432u)
    fail_usage(
        "'{}': this is a llama2.c 'ak42' export (version >= 1); ming imports the legacy "
        "(version 0) format written by export.py --version 0",
        where);
  const int64_t dim = header[0], hidden = header[1], n_layers = header[2], n_heads = header[3],
                n_kv = header[4], seq_len = header[6];
  const bool shared = header[5] > 0;
  const int64_t vocab = header[5] < 0 ? -static_cast<int64_t>(header[5]) : header[5];
  const bool sane = dim > 0 && hidden > 0 && n_layers > 0 && n_heads > 0 && n_kv > 0 && vocab > 0 &&
                    seq_len > 0 && dim % n_heads == 0 && n_heads % n_kv == 0 &&
                    (dim / n_heads) % 2 == 0 && dim < (1 << 20) && hidden < (1 << 22) &&
                    n_layers < 4096 && vocab < (1 << 24) && seq_len < (1 << 24);
  if (!sane)
    fail_usage(
        "'{}': implausible llama2.c header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
        "n_kv_heads {}, vocab_size {}, seq_len {})",
        where, dim, hidden, n_layers, n_heads, n_kv, header[5], seq_len);
  const int64_t hd = dim / n_heads, q = n_heads * hd, kv = n_kv * hd;

  // Sizes of the arrays in file order.
  struct Part {
    const char* name;
    std::vector<int64_t> shape;
  };
  std::vector<Part> parts = {{"token_embedding", {vocab, dim}},
                             {"rms_att", {n_layers, dim}},
                             {"wq", {n_layers, q, dim}},
                             {"wk", {n_layers, kv, dim}},
                             {"wv", {n_layers, kv, dim}},
                             {"wo", {n_layers, dim, q}},
                             {"rms_ffn", {n_layers, dim}},
                             {"w1", {n_layers, hidden, dim}},
                             {"w2", {n_layers, dim, hidden}},
                             {"w3", {n_layers, hidden, dim}},
                             {"rms_final", {dim}},
                             {"freq_cis_real", {seq_len, hd / 2}},
                             {"freq_cis_imag", {seq_len, hd / 2}}};
  if (!shared) parts.push_back({"wcls", {vocab, dim}});
  uint64_t floats = 0;
  for (const auto& p : parts) {
    uint64_t n = 1;
    for (auto s : p.shape) n *= static_cast<uint64_t>(s);
    floats += n;
  }
  const uint64_t expected = sizeof(header) + floats * sizeof(float);
  if (file_size != expected)
    fail_usage(
        "'{}': {} bytes, but its header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
        "n_kv_heads {}, vocab_size {}, seq_len {}) implies {} bytes",
        where, file_size, dim, hidden, n_layers, n_heads, n_kv, header[5], seq_len, expected);

  std::map<std::string, torch::Tensor> w;
  for (const auto& p : parts) {
    auto t = torch::empty(p.shape, torch::kFloat32);
    if (std::fread(t.data_ptr<float>(), sizeof(float), t.numel(), f) !=
        static_cast<size_t>(t.numel()))
      fail("'{}': read error in array {}", where, p.name);
    w[p.name] = t;
  }

  Llama2cCheckpoint out;
  ModelConfig& c = out.config;
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.num_hidden_layers = n_layers;
  c.num_attention_heads = n_heads;
  c.num_key_value_heads = n_kv;
  c.rms_norm_eps = 1e-5;  // llama2.c's rmsnorm
  c.rope_theta = 10000.0;
  c.max_position_embeddings = seq_len;
  c.tie_word_embeddings = shared;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.torch_dtype = "float32";

  auto& t = out.tensors;
  t.emplace_back("model.embed_tokens.weight", w["token_embedding"]);
  for (int64_t l = 0; l < n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    t.emplace_back(p + "self_attn.q_proj.weight", permute_rotary_rows(w["wq"][l], n_heads));
    t.emplace_back(p + "self_attn.k_proj.weight", permute_rotary_rows(w["wk"][l], n_kv));
    t.emplace_back(p + "self_attn.v_proj.weight", w["wv"][l]);
    t.emplace_back(p + "self_attn.o_proj.weight", w["wo"][l]);
    t.emplace_back(p + "mlp.gate_proj.weight", w["w1"][l]);
    t.emplace_back(p + "mlp.down_proj.weight", w["w2"][l]);
    t.emplace_back(p + "mlp.up_proj.weight", w["w3"][l]);
    t.emplace_back(p + "input_layernorm.weight", w["rms_att"][l]);
    t.emplace_back(p + "post_attention_layernorm.weight", w["rms_ffn"][l]);
  }
  t.emplace_back("model.norm.weight", w["rms_final"]);
  if (!shared) t.emplace_back("lm_head.weight", w["wcls"]);
  return out;
}

void import_llama2c(const Llama2cImportOptions& o) {
  auto ckpt = read_llama2c(o.checkpoint);
  if (o.tokenizer && !fs::is_regular_file(*o.tokenizer))
    fail_usage("'{}': tokenizer file not found", o.tokenizer->string());
  io::StagedDir staged(o.output, o.replace);
  io::write_json(staged / "config.json", ckpt.config.to_json());
  io::save_model_weights(staged.path(), ckpt.tensors);
  // llama2.c's run.c stops at BOS: the training stories are separated by BOS, not ended by EOS.
  io::write_json(staged / "generation_config.json",
                 Json{{"bos_token_id", 1}, {"eos_token_id", Json::array({1, 2})}});
  if (o.tokenizer) {
    fs::copy_file(*o.tokenizer, staged / "tokenizer.bin", fs::copy_options::overwrite_existing);
    io::write_json(staged / "tokenizer_config.json",
                   Json{{"bos_token", "<s>"},
                        {"eos_token", "</s>"},
                        {"unk_token", "<unk>"},
                        {"add_bos_token", true},
                        {"add_eos_token", false},
                        {"model_max_length", ckpt.config.max_position_embeddings}});
  }
  staged.commit();
  log::info("imported llama2.c checkpoint {} ({} layers, dim {}, vocab {}) into {}",
            o.checkpoint.string(), ckpt.config.num_hidden_layers, ckpt.config.hidden_size,
            ckpt.config.vocab_size, o.output.string());
}

}  // namespace ming::model
