#include "ming/model/config.h"

#include <algorithm>

#include "ming/core/error.h"
#include "ming/io/json.h"

namespace ming::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// Reads an integer key, with a default when absent or null.
int64_t int_key(const Json& j, const char* key, int64_t fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer())
    fail_usage("'{}': key '{}' must be an integer, got {}", where, key, it->dump());
  return it->get<int64_t>();
}

int64_t required_int(const Json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) fail_usage("'{}': missing key '{}'", where, key);
  return int_key(j, key, 0, where);
}

double num_key(const Json& j, const char* key, double fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number())
    fail_usage("'{}': key '{}' must be a number, got {}", where, key, it->dump());
  return it->get<double>();
}

bool bool_key(const Json& j, const char* key, bool fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    fail_usage("'{}': key '{}' must be true or false, got {}", where, key, it->dump());
  return it->get<bool>();
}

std::string architecture_of(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  return "Qwen2ForCausalLM";
}

// One rope_scaling / rope_parameters object of a known type, checked; nullopt for "default".
std::optional<RopeScaling> parse_rope_scaling(const Json& r, const std::string& type,
                                              const std::string& in, const std::string& rope_key,
                                              const std::string& where, const ModelConfig& c,
                                              const Json& top) {
  if (type == "default" || (type.empty() && rope_key == "rope_parameters")) return std::nullopt;
  static const char* const kTypes[] = {"linear", "dynamic", "yarn", "longrope", "llama3"};
  if (std::find(std::begin(kTypes), std::end(kTypes), type) == std::end(kTypes))
    fail_usage(
        "'{}': key '{}' has type '{}'; ming supports default, linear, dynamic, yarn, longrope "
        "and llama3",
        where, rope_key, type.empty() ? r.dump() : type);
  RopeScaling s;
  s.rope_type = type;
  // Phi-3 writes original_max_position_embeddings beside rope_scaling, not inside it.
  const int64_t original_default = int_key(
      top, "original_max_position_embeddings",
      type == "llama3" ? s.original_max_position_embeddings : c.max_position_embeddings, where);
  s.original_max_position_embeddings =
      int_key(r, "original_max_position_embeddings", original_default, in);
  if (s.original_max_position_embeddings <= 0)
    fail_usage("'{}': key '{}.original_max_position_embeddings' must be positive", where, rope_key);
  if ((type == "linear" || type == "dynamic") && (!r.contains("factor") || r["factor"].is_null()))
    fail_usage("'{}': key '{}' of type '{}' needs a 'factor'", where, rope_key, type);
  // yarn and longrope without a factor take the ratio of the extended to the original length.
  s.factor = num_key(r, "factor",
                     type == "llama3" ? s.factor
                                      : static_cast<double>(c.max_position_embeddings) /
                                            static_cast<double>(s.original_max_position_embeddings),
                     in);
  if (!(s.factor > 0)) fail_usage("'{}': key '{}.factor' must be positive", where, rope_key);
  if (type == "linear" || type == "dynamic") {
    if (type == "dynamic" && s.factor < 1)
      fail_usage("'{}': key '{}.factor' must be at least 1 for dynamic scaling", where, rope_key);
  } else if (type == "llama3") {
    s.low_freq_factor = num_key(r, "low_freq_factor", s.low_freq_factor, in);
    s.high_freq_factor = num_key(r, "high_freq_factor", s.high_freq_factor, in);
    if (s.low_freq_factor <= 0 || s.high_freq_factor <= s.low_freq_factor)
      fail_usage("'{}': key '{}' has inconsistent llama3 parameters {}", where, rope_key, r.dump());
  } else if (type == "yarn") {
    if (r.contains("attention_factor") && !r["attention_factor"].is_null())
      s.attention_factor = num_key(r, "attention_factor", 1.0, in);
    // transformers reads beta_fast/beta_slow with `or`: 0 or null means the default.
    s.beta_fast = num_key(r, "beta_fast", 0, in);
    if (s.beta_fast == 0) s.beta_fast = 32;
    s.beta_slow = num_key(r, "beta_slow", 0, in);
    if (s.beta_slow == 0) s.beta_slow = 1;
    if (r.contains("mscale") && !r["mscale"].is_null()) s.mscale = num_key(r, "mscale", 0, in);
    if (r.contains("mscale_all_dim") && !r["mscale_all_dim"].is_null())
      s.mscale_all_dim = num_key(r, "mscale_all_dim", 0, in);
    s.truncate = bool_key(r, "truncate", true, in);
  } else if (type == "longrope") {
    if (r.contains("attention_factor") && !r["attention_factor"].is_null())
      s.attention_factor = num_key(r, "attention_factor", 1.0, in);
    const size_t half = static_cast<size_t>(c.head_size() / 2);
    for (const char* key : {"short_factor", "long_factor"}) {
      auto it = r.find(key);
      if (it == r.end() || !it->is_array() || it->size() != half)
        fail_usage("'{}': key '{}.{}' must be a list of {} numbers (head_dim / 2)", where, rope_key,
                   key, half);
      auto& out = std::string(key) == "short_factor" ? s.short_factor : s.long_factor;
      for (const auto& v : *it) {
        if (!v.is_number() || !(v.get<double>() > 0))
          fail_usage("'{}': key '{}.{}' must hold positive numbers", where, rope_key, key);
        out.push_back(v.get<double>());
      }
    }
  }
  return s;
}

}  // namespace

std::string ModelConfig::architecture() const {
  return architecture_of(model_type);
}

ModelConfig ModelConfig::from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) fail_usage("'{}': expected a JSON object", where);
  ModelConfig c;

  // The architecture: model_type decides; `architectures`, when present, must agree.
  static const std::map<std::string, std::string> arch_to_type = {{"LlamaForCausalLM", "llama"},
                                                                  {"MistralForCausalLM", "mistral"},
                                                                  {"Qwen2ForCausalLM", "qwen2"}};
  std::string arch_type;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty()) {
    const std::string arch = (*it)[0].is_string() ? (*it)[0].get<std::string>() : it->dump();
    auto found = arch_to_type.find(arch);
    if (found == arch_to_type.end())
      fail_usage(
          "'{}': key 'architectures' names '{}', which ming does not support (supported: "
          "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
          where, arch);
    arch_type = found->second;
  }
  if (auto it = j.find("model_type"); it != j.end()) {
    if (!it->is_string()) fail_usage("'{}': key 'model_type' must be a string", where);
    c.model_type = it->get<std::string>();
    if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
      fail_usage(
          "'{}': key 'model_type' is '{}', which ming does not support (supported: llama, "
          "mistral, qwen2)",
          where, c.model_type);
    if (!arch_type.empty() && arch_type != c.model_type)
      fail_usage("'{}': key 'model_type' is '{}' but 'architectures' says {}", where, c.model_type,
                 j["architectures"][0].dump());
  } else if (!arch_type.empty()) {
    c.model_type = arch_type;
  } else {
    fail_usage("'{}': missing key 'model_type' (and no 'architectures')", where);
  }
  const bool qwen2 = c.model_type == "qwen2";
  const bool mistral = c.model_type == "mistral";

  c.vocab_size = required_int(j, "vocab_size", where);
  c.hidden_size = required_int(j, "hidden_size", where);
  c.intermediate_size = required_int(j, "intermediate_size", where);
  c.num_hidden_layers = required_int(j, "num_hidden_layers", where);
  c.num_attention_heads = required_int(j, "num_attention_heads", where);
  c.num_key_value_heads =
      int_key(j, "num_key_value_heads", mistral ? 8 : c.num_attention_heads, where);
  c.head_dim = int_key(j, "head_dim", 0, where);
  c.rms_norm_eps = num_key(j, "rms_norm_eps", 1e-6, where);
  c.rope_theta = num_key(j, "rope_theta", 10000.0, where);
  c.max_position_embeddings = int_key(j, "max_position_embeddings",
                                      qwen2     ? 32768
                                      : mistral ? 131072
                                                : 2048,
                                      where);
  c.tie_word_embeddings = bool_key(j, "tie_word_embeddings", false, where);
  if (qwen2) {
    c.qkv_bias = true;  // Qwen2Attention always has q/k/v biases, o_proj none
  } else if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = bool_key(j, "attention_bias", false, where);
    c.mlp_bias = bool_key(j, "mlp_bias", false, where);
  }

  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads"})
    if (int_key(j, key, 1, where) <= 0)
      fail_usage("'{}': key '{}' must be positive, got {}", where, key, j[key].dump());
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail_usage("'{}': num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
               where, c.num_attention_heads, c.num_key_value_heads);
  if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads != 0)
    fail_usage(
        "'{}': hidden_size ({}) is not a multiple of num_attention_heads ({}) and no "
        "head_dim is given",
        where, c.hidden_size, c.num_attention_heads);
  if (c.head_size() % 2 != 0)
    fail_usage("'{}': the head width {} must be even for rotary embeddings", where, c.head_size());
  if (c.rms_norm_eps <= 0) fail_usage("'{}': key 'rms_norm_eps' must be positive", where);
  if (c.rope_theta <= 0) fail_usage("'{}': key 'rope_theta' must be positive", where);

  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    c.hidden_act = it->is_string() ? it->get<std::string>() : it->dump();
    if (c.hidden_act != "silu")
      fail_usage("'{}': key 'hidden_act' is '{}'; ming supports only 'silu' (SwiGLU)", where,
                 c.hidden_act);
  }

  // RoPE scaling: "rope_scaling" up to transformers 4.x; transformers 5 writes one
  // "rope_parameters" object holding rope_theta, rope_type and the scaling fields together.
  const nlohmann::json* rope = nullptr;
  std::string rope_key = "rope_scaling";
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object())
      fail_usage("'{}': key 'rope_parameters' must be an object or null", where);
    rope = &*it;
    rope_key = "rope_parameters";
    c.rope_theta = num_key(*it, "rope_theta", c.rope_theta, where + " rope_parameters");
    if (c.rope_theta <= 0)
      fail_usage("'{}': key 'rope_parameters.rope_theta' must be positive", where);
  } else if (auto it2 = j.find("rope_scaling"); it2 != j.end() && !it2->is_null()) {
    if (!it2->is_object()) fail_usage("'{}': key 'rope_scaling' must be an object or null", where);
    rope = &*it2;
  }
  if (rope) {
    const auto& r = *rope;
    const std::string in = where + " " + rope_key;
    std::string type;
    for (const char* key : {"rope_type", "type"})
      if (r.contains(key) && r[key].is_string()) type = r[key].get<std::string>();
    c.rope_scaling = parse_rope_scaling(r, type, in, rope_key, where, c, j);
  }

  if (mistral) {
    if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null())
      c.sliding_window = int_key(j, "sliding_window", 0, where);
  } else if (qwen2 && bool_key(j, "use_sliding_window", false, where)) {
    fail_usage(
        "'{}': key 'use_sliding_window' is true; ming supports Qwen2 only without sliding "
        "window attention",
        where);
  }
  if (c.sliding_window && *c.sliding_window <= 0)
    fail_usage("'{}': key 'sliding_window' must be positive", where);

  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer())
    c.bos_token_id = it->get<int64_t>();
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.eos_token_ids.push_back(it->get<int64_t>());
    } else if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer())
          fail_usage("'{}': key 'eos_token_id' must be an integer or a list of integers", where);
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      fail_usage("'{}': key 'eos_token_id' must be an integer or a list of integers", where);
    }
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string())
    c.torch_dtype = it->get<std::string>();
  return c;
}

ModelConfig ModelConfig::load(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "config.json" : path;
  if (!fs::exists(file))
    fail_usage("'{}': no config.json (is this a model folder?)", file.string());
  return from_json(io::read_json(file), file.string());
}

Json ModelConfig::to_json() const {
  Json j = Json::object();
  j["architectures"] = Json::array({architecture()});
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (head_dim > 0) j["head_dim"] = head_dim;
  j["hidden_act"] = hidden_act;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling) {
    const RopeScaling& r = *rope_scaling;
    Json rs = {{"rope_type", r.rope_type},
               {"factor", r.factor},
               {"original_max_position_embeddings", r.original_max_position_embeddings}};
    if (r.rope_type == "llama3") {
      rs["low_freq_factor"] = r.low_freq_factor;
      rs["high_freq_factor"] = r.high_freq_factor;
    } else if (r.rope_type == "yarn") {
      rs["beta_fast"] = r.beta_fast;
      rs["beta_slow"] = r.beta_slow;
      rs["truncate"] = r.truncate;
      if (r.mscale) rs["mscale"] = *r.mscale;
      if (r.mscale_all_dim) rs["mscale_all_dim"] = *r.mscale_all_dim;
    } else if (r.rope_type == "longrope") {
      rs["short_factor"] = r.short_factor;
      rs["long_factor"] = r.long_factor;
    }
    if (r.attention_factor) rs["attention_factor"] = *r.attention_factor;
    j["rope_scaling"] = rs;
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type == "llama") {
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  } else if (model_type == "qwen2") {
    j["use_sliding_window"] = false;
  }
  if (model_type != "llama")
    j["sliding_window"] = sliding_window ? Json(*sliding_window) : Json(nullptr);
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_ids.size() == 1)
    j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty())
    j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  return j;
}

int64_t ModelConfig::parameter_count() const {
  const int64_t d = hidden_size, hd = head_size();
  const int64_t q = num_attention_heads * hd, kv = num_key_value_heads * hd;
  int64_t layer = d * q + 2 * d * kv + q * d + 3 * d * intermediate_size + 2 * d;
  if (qkv_bias) layer += q + 2 * kv;
  if (o_bias) layer += d;
  if (mlp_bias) layer += 2 * intermediate_size + d;
  int64_t total = num_hidden_layers * layer + vocab_size * d + d;
  if (!tie_word_embeddings) total += vocab_size * d;
  return total;
}

}  // namespace ming::model
