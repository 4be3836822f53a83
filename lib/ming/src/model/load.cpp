#include "ming/model/load.h"

#include <algorithm>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"

namespace ming::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

torch::ScalarType dtype_from_torch_name(const std::string& name) {
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  return torch::kFloat32;  // float32, and anything unusual is loaded at full precision
}

// Tensors some exporters write that the model recomputes.
bool harmless_extra(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void add_ids(std::vector<int64_t>& out, const Json& value) {
  if (value.is_number_integer()) out.push_back(value.get<int64_t>());
  if (value.is_array())
    for (const auto& v : value)
      if (v.is_number_integer()) out.push_back(v.get<int64_t>());
}

}  // namespace

std::string torch_dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kFloat32:
      return "float32";
    default:
      fail_usage("models are stored as bf16, fp16 or fp32, not {}", c10::toString(dtype));
  }
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, hd = c.head_size();
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    out.push_back({p + "self_attn.q_proj.weight", {q, d}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.o_proj.weight", {d, q}});
    if (c.qkv_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.o_bias) out.push_back({p + "self_attn.o_proj.bias", {d}});
    out.push_back({p + "mlp.gate_proj.weight", {f, d}});
    out.push_back({p + "mlp.up_proj.weight", {f, d}});
    out.push_back({p + "mlp.down_proj.weight", {d, f}});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {f}});
      out.push_back({p + "mlp.up_proj.bias", {f}});
      out.push_back({p + "mlp.down_proj.bias", {d}});
    }
    out.push_back({p + "input_layernorm.weight", {d}});
    out.push_back({p + "post_attention_layernorm.weight", {d}});
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, d}});
  return out;
}

CausalLM load_weights(const fs::path& dir, const ModelConfig& config, const LoadOptions& options) {
  auto store = io::TensorStore::open(dir);
  const auto dtype = options.dtype.value_or(dtype_from_torch_name(config.torch_dtype));
  const auto expected = expected_tensors(config);
  const std::string arch = config.architecture();

  std::map<std::string, const std::vector<int64_t>*> wanted;
  for (const auto& [name, shape] : expected) {
    wanted[name] = &shape;
    if (!store.contains(name))
      fail_usage("'{}': checkpoint has no tensor '{}' (a {} with this config.json needs shape {})",
                 dir.string(), name, arch, shape_text(shape));
    const auto& info = store.info(name);
    if (info.shape != shape)
      fail_usage("'{}': tensor '{}' has shape {} but config.json implies {}",
                 store.file_of(name).string(), name, shape_text(info.shape), shape_text(shape));
    if (!c10::isFloatingType(info.dtype))
      fail_usage("'{}': tensor '{}' has dtype {}, expected a floating-point type",
                 store.file_of(name).string(), name, c10::toString(info.dtype));
  }
  for (const auto& name : store.names()) {
    if (wanted.count(name) || harmless_extra(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      // Some exporters store the tied head anyway; it is the embedding, so it is not needed.
      log::debug("'{}': ignoring lm_head.weight (tie_word_embeddings is true)", dir.string());
      continue;
    }
    fail_usage(
        "'{}': unexpected tensor '{}' (not part of a {} with this config.json: wrong "
        "config, or an adapter/merged checkpoint?)",
        store.file_of(name).string(), name, arch);
  }

  auto opts = torch::TensorOptions().dtype(dtype).device(options.device);
  CausalLM model(config, opts);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    TORCH_INTERNAL_ASSERT(wanted.count(item.key()), "parameter ", item.key(), " not expected");
    // Same dtype on CPU: the tensor stays a view of the (copy-on-write) mapping, so loading is
    // free and pages are read on first use.
    item.value().set_data(store.get(item.key()).to(opts));
  }
  return model;
}

LoadedModel load_model(const fs::path& dir, const LoadOptions& options) {
  if (!fs::is_directory(dir)) fail_usage("'{}': not a model folder", dir.string());
  LoadedModel out;
  out.dir = dir;
  out.config = ModelConfig::load(dir);
  out.model = load_weights(dir, out.config, options);
  if (fs::exists(dir / "generation_config.json"))
    out.generation_config = io::read_json(dir / "generation_config.json");
  if (out.generation_config.contains("eos_token_id"))
    add_ids(out.eos_token_ids, out.generation_config["eos_token_id"]);
  else
    out.eos_token_ids = out.config.eos_token_ids;
  if (options.load_tokenizer) {
    out.tokenizer = text::load_tokenizer(dir);
    for (auto id : out.tokenizer->eos_ids()) out.eos_token_ids.push_back(id);
    out.chat_template = text::ChatTemplate::load(dir);
  }
  std::sort(out.eos_token_ids.begin(), out.eos_token_ids.end());
  out.eos_token_ids.erase(std::unique(out.eos_token_ids.begin(), out.eos_token_ids.end()),
                          out.eos_token_ids.end());
  log::info("loaded {} ({}, {} layers, {:.1f}M parameters, {}) from {}", out.config.architecture(),
            c10::toString(out.model->dtype()), out.config.num_hidden_layers,
            out.config.parameter_count() / 1e6, out.model->device().str(), dir.string());
  return out;
}

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {"tokenizer.json",
                                                 "tokenizer.model",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "added_tokens.json",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "tokenizer.bin"};
  return names;
}

void save_model(const fs::path& dir, const ModelConfig& config, CausalLM& model,
                const SaveOptions& options) {
  const auto dtype = options.dtype.value_or(model->dtype());
  io::StagedDir staged(dir, options.replace);

  ModelConfig cfg = config;
  cfg.torch_dtype = torch_dtype_name(dtype);
  io::write_json(staged / "config.json", cfg.to_json());

  io::NamedTensors tensors;
  for (const auto& item : model->named_parameters()) {
    if (item.key().find(".adapter.") != std::string::npos) continue;  // adapters save themselves
    tensors.emplace_back(item.key(), item.value().detach().to(dtype));
  }
  io::save_model_weights(staged.path(), tensors, options.max_shard_bytes);

  Json gen = options.generation_config;
  if (gen.empty()) {
    if (config.bos_token_id) gen["bos_token_id"] = *config.bos_token_id;
    if (config.eos_token_ids.size() == 1)
      gen["eos_token_id"] = config.eos_token_ids[0];
    else if (!config.eos_token_ids.empty())
      gen["eos_token_id"] = config.eos_token_ids;
  }
  io::write_json(staged / "generation_config.json", gen);

  if (options.tokenizer_source) {
    const fs::path& src = *options.tokenizer_source;
    for (const auto& entry : fs::directory_iterator(src)) {
      const std::string name = entry.path().filename().string();
      const auto& known = tokenizer_file_names();
      const bool tokenizer_file = std::find(known.begin(), known.end(), name) != known.end() ||
                                  entry.path().extension() == ".tiktoken";
      if (tokenizer_file && entry.is_regular_file())
        fs::copy_file(entry.path(), staged / name, fs::copy_options::overwrite_existing);
    }
  }
  staged.commit();
}

}  // namespace ming::model
