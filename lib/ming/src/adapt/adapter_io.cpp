#include "ming/adapt/adapter_io.h"

#include <algorithm>
#include <optional>
#include <regex>
#include <set>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"
#include "ming/io/json.h"

namespace ming::adapt {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string adapter_key(const std::string& module, const std::string& leaf) {
  return "base_model.model." + module + "." + leaf;
}

namespace {

constexpr const char* kPrefix = "base_model.model.";

std::vector<std::pair<std::string, model::ProjectionImpl*>> adapted_projections(
    torch::nn::Module& module) {
  std::vector<std::pair<std::string, model::ProjectionImpl*>> out;
  if (auto* p = dynamic_cast<model::ProjectionImpl*>(&module); p && p->adapter())
    out.emplace_back(p->name(), p);
  for (const auto& item : module.named_modules("", /*include_self=*/false))
    if (auto* p = dynamic_cast<model::ProjectionImpl*>(item.value().get()); p && p->adapter())
      out.emplace_back(p->name(), p);
  return out;
}

std::string regex_escape(const std::string& s) {
  static const std::string special = R"(\^$.|?*+()[]{})";
  std::string out;
  for (char c : s) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

bool is_regex(const std::string& t) {
  return t.rfind("re:", 0) == 0;
}

}  // namespace

io::NamedTensors adapter_state(torch::nn::Module& module) {
  io::NamedTensors out;
  for (auto& [name, proj] : adapted_projections(module)) {
    const auto& adapter = proj->adapter();
    if (auto lora = std::dynamic_pointer_cast<LoraAdapter>(adapter)) {
      out.emplace_back(adapter_key(name, "lora_A.weight"), lora->lora_A);
      out.emplace_back(adapter_key(name, "lora_B.weight"), lora->lora_B);
    } else if (auto moe = std::dynamic_pointer_cast<MoloraAdapter>(adapter)) {
      for (int64_t i = 0; i < moe->options().experts; ++i) {
        out.emplace_back(adapter_key(name, fmt::format("experts.{}.lora_A.weight", i)),
                         moe->lora_A[i]);
        out.emplace_back(adapter_key(name, fmt::format("experts.{}.lora_B.weight", i)),
                         moe->lora_B[i]);
      }
      out.emplace_back(adapter_key(name, "router.weight"), moe->router_weight);
      if (moe->router_bias.defined())
        out.emplace_back(adapter_key(name, "router.bias"), moe->router_bias);
      if (moe->shared_A.defined()) {
        out.emplace_back(adapter_key(name, "shared_expert.lora_A.weight"), moe->shared_A);
        out.emplace_back(adapter_key(name, "shared_expert.lora_B.weight"), moe->shared_B);
      }
    } else {
      fail("projection '{}' carries an adapter of a type ming cannot save", name);
    }
  }
  return out;
}

Json adapter_config_json(const AdapterConfig& config, const std::string& base_model_name_or_path) {
  validate(config);
  std::vector<const TargetGroup*> plain, moe;
  for (const auto& g : config.groups) (g.is_moe() ? moe : plain).push_back(&g);
  const TargetGroup& top = plain.empty() ? *moe.front() : *plain.front();

  // target_modules: plain-LoRA targets only (see the header for why).
  bool any_regex = false;
  std::vector<std::string> suffixes;
  for (const auto* g : plain)
    for (const auto& t : g->targets) {
      any_regex = any_regex || is_regex(t);
      if (std::find(suffixes.begin(), suffixes.end(), t) == suffixes.end()) suffixes.push_back(t);
    }
  Json target_modules;
  if (!any_regex) {
    target_modules = suffixes;
  } else {
    // PEFT fullmatches a string target_modules against each module path.
    std::string alt;
    for (const auto& t : suffixes)
      alt += (alt.empty() ? "" : "|") +
             (is_regex(t) ? "(?:" + t.substr(3) + ")" : "(?:(?:.*\\.)?" + regex_escape(t) + ")");
    target_modules = alt;
  }

  Json rank_pattern = Json::object(), alpha_pattern = Json::object();
  for (const auto& [k, v] : config.rank_pattern) rank_pattern[k] = v;
  for (const auto& [k, v] : config.alpha_pattern) alpha_pattern[k] = v;
  bool peft_expressible = true;
  for (const auto* g : plain) {
    if (g->dropout != top.dropout || g->use_rslora != top.use_rslora) peft_expressible = false;
    for (const auto& t : g->targets) {
      const std::string key = is_regex(t) ? t.substr(3) : regex_escape(t);
      if (g->r != top.r && !rank_pattern.contains(key)) rank_pattern[key] = g->r;
      if (g->alpha != top.alpha && !alpha_pattern.contains(key)) alpha_pattern[key] = g->alpha;
    }
  }

  Json j = Json::object();
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["r"] = top.r;
  j["lora_alpha"] = top.alpha;
  j["lora_dropout"] = top.dropout;
  j["target_modules"] = target_modules;
  j["use_rslora"] = top.use_rslora;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["rank_pattern"] = rank_pattern;
  j["alpha_pattern"] = alpha_pattern;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["revision"] = nullptr;

  if (!moe.empty() || !peft_expressible) {
    Json block = Json::object();
    block["format"] = "ming-molora";
    block["version"] = 1;
    if (!moe.empty()) {
      const TargetGroup& m = *moe.front();
      block["experts"] = m.experts;
      block["top_k"] = m.top_k;
      block["router_bias"] = m.router_bias;
      block["balance_loss"] = balance_loss_name(m.balance_loss);
      block["balance_loss_coef"] = m.balance_loss_coef;
      block["router_z_loss_coef"] = m.router_z_loss_coef;
    }
    Json targets = Json::object();
    for (const auto* g : moe)
      for (const auto& t : g->targets) targets[t] = g->experts;
    block["targets"] = targets;
    Json groups = Json::array();
    for (const auto& g : config.groups) groups.push_back(to_json(g));
    block["groups"] = groups;
    j["moe"] = block;
  }
  return j;
}

AdapterConfig adapter_config_from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) fail_usage("{}: expected a JSON object", where);
  auto str = [&](const char* key, const std::string& def) {
    if (!j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_string()) fail_usage("{}: '{}' must be a string", where, key);
    return j[key].get<std::string>();
  };
  auto truthy = [&](const char* key) {
    return j.contains(key) && !j[key].is_null() && j[key].is_boolean() && j[key].get<bool>();
  };
  if (const auto type = str("peft_type", "LORA"); type != "LORA")
    fail_usage("{}: peft_type '{}' is not supported (ming reads LORA adapters)", where, type);
  if (const auto bias = str("bias", "none"); bias != "none")
    fail_usage("{}: bias '{}' is not supported (ming adapters train no biases; expected 'none')",
               where, bias);
  if (truthy("fan_in_fan_out"))
    fail_usage("{}: fan_in_fan_out true (Conv1D-style weights) is not supported", where);
  if (truthy("use_dora")) fail_usage("{}: use_dora true (DoRA) is not supported", where);
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() &&
      !j["modules_to_save"].empty())
    fail_usage("{}: modules_to_save {} is not supported (ming saves adapters only)", where,
               j["modules_to_save"].dump());

  AdapterConfig config;
  try {
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
      for (const auto& [k, v] : j["rank_pattern"].items())
        config.rank_pattern.emplace_back(k, v.get<int64_t>());
    if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
      for (const auto& [k, v] : j["alpha_pattern"].items())
        config.alpha_pattern.emplace_back(k, v.get<double>());

    if (j.contains("moe") && j["moe"].is_object() && j["moe"].contains("groups")) {
      config.groups.clear();
      const auto& groups = j["moe"]["groups"];
      if (!groups.is_array()) fail_usage("{}: moe.groups must be a list", where);
      for (size_t i = 0; i < groups.size(); ++i)
        config.groups.push_back(
            group_from_json(groups[i], fmt::format("{}: moe.groups[{}]", where, i)));
    } else {
      TargetGroup g;
      g.name = "lora";
      g.experts = 1;
      g.r = j.value("r", int64_t(8));  // PEFT's LoraConfig defaults
      g.alpha = j.value("lora_alpha", 8.0);
      g.dropout = j.contains("lora_dropout") && !j["lora_dropout"].is_null()
                      ? j["lora_dropout"].get<double>()
                      : 0.0;
      g.use_rslora = truthy("use_rslora");
      if (!j.contains("target_modules") || j["target_modules"].is_null())
        fail_usage(
            "{}: target_modules is missing or null (PEFT then guesses per architecture; "
            "ming needs the list)",
            where);
      const auto& tm = j["target_modules"];
      if (tm.is_string())
        g.targets = {"re:" + tm.get<std::string>()};
      else
        g.targets = tm.get<std::vector<std::string>>();
      config.groups = {g};
    }
  } catch (const Json::exception& e) {
    fail_usage("{}: malformed adapter config: {}", where, e.what());
  }
  return config;
}

namespace {

// Maps MING-MOE / PEFT-internal tensor names onto ming's (see the header).
std::string normalise_key(std::string key) {
  static const std::regex ming_expert(R"(^(.*)\.experts\.(\d+)\.lora_([AB])_(\d+)\.weight$)");
  static const std::regex default_infix(R"(^(.*)\.(lora_[AB])\.default\.weight$)");
  std::smatch m;
  if (std::regex_match(key, m, ming_expert) && m[2] == m[4])
    return m[1].str() + ".experts." + m[2].str() + ".lora_" + m[3].str() + ".weight";
  if (std::regex_match(key, m, default_infix)) key = m[1].str() + "." + m[2].str() + ".weight";
  for (const std::string from : {".switch.weight", ".switch.bias"})
    if (key.size() > from.size() && key.compare(key.size() - from.size(), from.size(), from) == 0)
      return key.substr(0, key.size() - from.size()) + ".router." + from.substr(8);
  static const std::regex shared(R"(^(.*)\.share_experts\.(lora_[AB])\.weight$)");
  if (std::regex_match(key, m, shared))
    return m[1].str() + ".shared_expert." + m[2].str() + ".weight";
  if (key.rfind("base_model.", 0) != 0) {
    // MING strips "base_model." in places; accept "model.model.layers..." and "model.layers...".
    if (key.rfind("model.model.", 0) == 0) return "base_model." + key;
    if (key.rfind("model.", 0) == 0) return std::string(kPrefix) + key;
  }
  return key;
}

struct FileTensor {
  torch::Tensor tensor;
  std::string file;
};

// k of a MING-MOE release: the flag, else config.json's num_experts_per_token (the reference's
// builder reads it from there, with 2 as the released models' value), with a log line saying
// which. config.json's num_experts must agree with the experts found in the tensors.
int64_t ming_moe_top_k(const fs::path& dir, int64_t flag, int64_t experts) {
  const fs::path config = dir / "config.json";
  Json j = fs::exists(config) ? io::read_json(config) : Json::object();
  if (j.contains("num_experts") && j["num_experts"].is_number_integer() &&
      j["num_experts"].get<int64_t>() != experts)
    fail_usage("{}: num_experts {} but the adapter's tensors hold {} experts", config.string(),
               j["num_experts"].get<int64_t>(), experts);
  std::optional<int64_t> from_file;
  if (j.contains("num_experts_per_token")) {
    if (!j["num_experts_per_token"].is_number_integer() ||
        j["num_experts_per_token"].get<int64_t>() < 1)
      fail_usage("{}: num_experts_per_token: expected a positive integer", config.string());
    from_file = j["num_experts_per_token"].get<int64_t>();
  }
  if (flag > 0) {
    log::info("adapter '{}': MING-MOE top-k {} from the flag{}", dir.string(), flag,
              from_file ? fmt::format(" (its config.json says {})", *from_file)
                        : std::string(" (its config.json has no num_experts_per_token)"));
    return flag;
  }
  if (from_file) {
    log::info("adapter '{}': MING-MOE top-k {} from config.json num_experts_per_token",
              dir.string(), *from_file);
    return *from_file;
  }
  log::info("adapter '{}': MING-MOE top-k 2, the released models' value ({})", dir.string(),
            fs::exists(config) ? "config.json has no num_experts_per_token" : "no config.json");
  return 2;
}

// A MoLoRA group derived from MING-MOE tensor names, or nullopt when there are none.
std::optional<TargetGroup> derive_moe_group(const std::map<std::string, FileTensor>& tensors,
                                            const AdapterConfig& peft, const fs::path& dir,
                                            int64_t top_k_flag, const std::string& where) {
  static const std::regex expert_a(R"(^base_model\.model\.(.+)\.experts\.(\d+)\.lora_A\.weight$)");
  std::map<std::string, int64_t> experts;  // module -> max index + 1
  int64_t r = -1;
  for (const auto& [key, ft] : tensors) {
    std::smatch m;
    if (!std::regex_match(key, m, expert_a)) continue;
    auto& n = experts[m[1].str()];
    n = std::max<int64_t>(n, std::stoll(m[2].str()) + 1);
    if (r < 0) r = ft.tensor.size(0);
  }
  if (experts.empty()) return std::nullopt;
  TargetGroup g;
  g.name = "mlp";
  g.experts = experts.begin()->second;
  g.r = r;
  g.alpha = peft.groups.front().alpha;
  g.dropout = 0.0;
  g.use_rslora = peft.groups.front().use_rslora;
  g.top_k = std::min(ming_moe_top_k(dir, top_k_flag, g.experts), g.experts);
  g.router_bias = false;
  std::set<std::string> leaves;
  for (const auto& [module, n] : experts) {
    if (n != g.experts)
      fail_usage(
          "{}: MoLoRA module '{}' has {} experts but '{}' has {} (ming needs one count "
          "per group)",
          where, module, n, experts.begin()->first, g.experts);
    if (tensors.count(adapter_key(module, "router.bias"))) g.router_bias = true;
    if (tensors.count(adapter_key(module, "shared_expert.lora_A.weight"))) g.shared_expert = true;
    leaves.insert(module.substr(module.rfind('.') + 1));
  }
  if (g.experts < 2)
    fail_usage("{}: MING-MOE tensors describe a single expert; expected a router over >= 2", where);
  g.targets.assign(leaves.begin(), leaves.end());
  return g;
}

}  // namespace

std::map<std::string, torch::Tensor> read_torch_save_dict(const fs::path& path) {
  const std::string bytes = io::read_file(path);
  torch::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    fail_usage("'{}': not a readable torch.save file: {}", path.string(),
               e.what_without_backtrace());
  }
  if (!value.isGenericDict())
    fail_usage("'{}': expected a torch.save'd dict of tensors, got {}", path.string(),
               value.tagKind());
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString())
      fail_usage("'{}': dict key of type {} (expected str)", path.string(), item.key().tagKind());
    const std::string key = item.key().toStringRef();
    if (!item.value().isTensor())
      fail_usage("'{}': entry '{}' is a {} (expected a tensor)", path.string(), key,
                 item.value().tagKind());
    out.emplace(key, item.value().toTensor());
  }
  return out;
}

void save_adapter(const fs::path& dir, torch::nn::Module& module, const AdapterConfig& config,
                  const std::string& base_model_name_or_path, bool replace) {
  auto tensors = adapter_state(module);
  if (tensors.empty())
    fail_usage("save_adapter '{}': the model carries no adapters (inject or load them first)",
               dir.string());
  // Every adapted projection must be described by the config, or the file would not load back.
  for (auto& [name, proj] : adapted_projections(module))
    if (find_group(config, name) < 0)
      fail_usage(
          "save_adapter '{}': projection '{}' has an adapter that no group of the config "
          "targets",
          dir.string(), name);
  io::NamedTensors fp32;
  fp32.reserve(tensors.size());
  {
    torch::NoGradGuard no_grad;
    for (auto& [k, t] : tensors) fp32.emplace_back(k, t.detach().to(torch::kFloat32).contiguous());
  }
  io::StagedDir staged(dir, replace);
  io::write_json(staged / kAdapterConfigFile, adapter_config_json(config, base_model_name_or_path));
  io::save_safetensors(staged / kAdapterWeightsFile, fp32, {{"format", "pt"}});
  staged.commit();
}

LoadedAdapter load_adapter(torch::nn::Module& module, const fs::path& dir,
                           const LoadAdapterOptions& options) {
  const fs::path config_path = dir / kAdapterConfigFile;
  if (!fs::exists(config_path))
    fail_usage("'{}' is not an adapter folder: {} is missing", dir.string(), kAdapterConfigFile);
  const Json j = io::read_json(config_path);
  LoadedAdapter result;
  result.config = adapter_config_from_json(j, config_path.string());
  result.base_model_name_or_path = j.value("base_model_name_or_path", std::string());
  const bool has_moe_block = j.contains("moe") && j["moe"].is_object();
  result.format = has_moe_block ? "ming" : "peft";

  // Every tensor on offer, under normalised names, remembering its file for messages.
  std::map<std::string, FileTensor> tensors;
  auto offer = [&](const std::string& raw, torch::Tensor t, const std::string& file) {
    const std::string key = normalise_key(raw);
    auto [it, fresh] = tensors.emplace(key, FileTensor{t, file});
    if (!fresh && !(it->second.tensor.sizes() == t.sizes() &&
                    torch::equal(it->second.tensor.to(torch::kFloat32), t.to(torch::kFloat32))))
      fail_usage("'{}': tensor '{}' appears in both {} and {} with different values", dir.string(),
                 key, it->second.file, file);
  };
  const fs::path weights = dir / kAdapterWeightsFile;
  const fs::path ming_bin = dir / kMingNonLoraFile;
  if (fs::exists(weights)) {
    auto store = io::TensorStore::open(weights);
    for (const auto& name : store.names()) offer(name, store.get(name), weights.filename());
  } else if (fs::exists(dir / "adapter_model.bin")) {
    for (auto& [k, t] : read_torch_save_dict(dir / "adapter_model.bin"))
      offer(k, t, "adapter_model.bin");
  }
  if (fs::exists(ming_bin))
    for (auto& [k, t] : read_torch_save_dict(ming_bin)) offer(k, t, kMingNonLoraFile);
  if (tensors.empty())
    fail_usage("'{}': no adapter tensors ({} missing or empty)", dir.string(), kAdapterWeightsFile);

  if (!has_moe_block) {
    if (auto g = derive_moe_group(tensors, result.config, dir, options.ming_moe_top_k,
                                  config_path.string())) {
      log::info("adapter '{}': MING-MOE format, {} experts, top-{}, r {}, targets {}", dir.string(),
                g->experts, g->top_k, g->r, fmt::join(g->targets, ","));
      result.config.groups.insert(result.config.groups.begin(), *g);
      result.format = "ming-moe";
      // PEFT's group may list only MoLoRA projections (then it is dropped), or a mix.
      auto& peft_group = result.config.groups[1];
      std::vector<std::string> kept;
      for (const auto& t : peft_group.targets)
        if (std::find(g->targets.begin(), g->targets.end(), t) == g->targets.end())
          kept.push_back(t);
      if (kept.empty())
        result.config.groups.erase(result.config.groups.begin() + 1);
      else
        peft_group.targets = kept;
    }
  }

  result.injected = inject_adapters(module, result.config);
  auto expected = adapter_state(module);

  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> expected_names;
  for (const auto& [name, param] : expected) {
    expected_names.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.tensor.sizes() != param.sizes())
      mismatched.push_back(fmt::format("{} is [{}] in {}, the model needs [{}]", name,
                                       fmt::join(it->second.tensor.sizes(), ", "), it->second.file,
                                       fmt::join(param.sizes(), ", ")));
  }
  for (const auto& [name, ft] : tensors)
    if (!expected_names.count(name)) unexpected.push_back(name + " (" + ft.file + ")");
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    remove_adapters(module);
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 8; ++i) s += "\n  " + v[i];
      if (v.size() > 8) s += fmt::format("\n  ... and {} more", v.size() - 8);
      return s;
    };
    std::string message = fmt::format("adapter '{}' does not fit the model", dir.string());
    if (!mismatched.empty())
      message +=
          fmt::format("\n{} tensors have the wrong shape:{}", mismatched.size(), list(mismatched));
    if (!missing.empty())
      message += fmt::format("\n{} tensors the config calls for are missing:{}", missing.size(),
                             list(missing));
    if (!unexpected.empty())
      message += fmt::format("\n{} tensors match no adapted projection:{}", unexpected.size(),
                             list(unexpected));
    message +=
        "\n(hint: an adapter trained on another base model, or a config whose targets "
        "differ from the saved tensors?)";
    throw UsageError(message);
  }

  torch::NoGradGuard no_grad;
  for (auto& [name, param] : expected) {
    const auto& src = tensors.at(name).tensor;
    if (!torch::isFloatingType(src.scalar_type()))
      fail_usage("'{}': tensor '{}' has dtype {}, expected a floating type", dir.string(), name,
                 c10::toString(src.scalar_type()));
    param.copy_(src.to(param.device(), param.scalar_type()));
  }
  for (auto& p : result.injected.parameters) p.set_requires_grad(options.trainable);
  if (!options.trainable) result.injected.n_trainable = 0;
  return result;
}

}  // namespace ming::adapt
