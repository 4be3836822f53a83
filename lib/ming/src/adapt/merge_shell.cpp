#include "ming/adapt/merge_shell.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"

namespace ming::adapt {

namespace fs = std::filesystem;

bool NaturalLess::operator()(const std::string& a, const std::string& b) const {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i]));
    const bool db = std::isdigit(static_cast<unsigned char>(b[j]));
    if (da && db) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      // Compare digit runs as numbers: strip leading zeros, then length, then digits.
      size_t is = i, js = j;
      while (is + 1 < ie && a[is] == '0') ++is;
      while (js + 1 < je && b[js] == '0') ++js;
      if (ie - is != je - js) return ie - is < je - js;
      if (int c = a.compare(is, ie - is, b, js, je - js); c != 0) return c < 0;
      if (ie - i != je - j) return ie - i < je - j;  // "01" after "1": keep the order strict
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::string adapter_tensor_module(const std::string& key) {
  std::string k = key;
  if (k.rfind("base_model.model.", 0) == 0)
    k = k.substr(17);
  else if (k.rfind("model.model.", 0) == 0)  // MING strips "base_model." in places
    k = k.substr(6);
  static const char* markers[] = {".lora_A",  ".lora_B",         ".experts.",      ".router.",
                                  ".switch.", ".shared_expert.", ".share_experts."};
  size_t cut = std::string::npos;
  for (const char* m : markers) cut = std::min(cut, k.find(m));
  return cut == std::string::npos || cut == 0 ? std::string() : k.substr(0, cut);
}

namespace {

// name -> shape of every tensor on offer in an adapter folder, without reading safetensors data.
std::vector<std::pair<std::string, std::vector<int64_t>>> adapter_tensor_shapes(
    const fs::path& dir) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  const fs::path weights = dir / kAdapterWeightsFile;
  if (fs::exists(weights)) {
    auto store = io::TensorStore::open(weights);
    for (const auto& name : store.names()) out.emplace_back(name, store.info(name).shape);
  } else if (fs::exists(dir / "adapter_model.bin")) {
    for (auto& [k, t] : read_torch_save_dict(dir / "adapter_model.bin"))
      out.emplace_back(k, t.sizes().vec());
  }
  if (fs::exists(dir / kMingNonLoraFile))
    for (auto& [k, t] : read_torch_save_dict(dir / kMingNonLoraFile))
      out.emplace_back(k, t.sizes().vec());
  return out;
}

}  // namespace

ShapeMap adapter_projection_shapes(const fs::path& dir) {
  if (!fs::is_directory(dir)) fail_usage("'{}': not an adapter folder", dir.string());
  if (!fs::exists(dir / kAdapterConfigFile))
    fail_usage("'{}' is not an adapter folder: {} is missing", dir.string(), kAdapterConfigFile);
  ShapeMap shapes;
  auto set = [&](const std::string& module, int64_t ProjectionShape::*field, int64_t value,
                 const std::string& key) {
    auto& s = shapes[module];
    if (s.*field != 0 && s.*field != value)
      fail_usage("'{}': tensor '{}' implies {} {} features for '{}', other tensors imply {}",
                 dir.string(), key, field == &ProjectionShape::in_features ? "input" : "output",
                 value, module, s.*field);
    s.*field = value;
  };
  for (const auto& [key, shape] : adapter_tensor_shapes(dir)) {
    const std::string module = adapter_tensor_module(key);
    if (module.empty()) continue;  // load_adapter reports it as unexpected
    if (shape.size() != 2) {
      shapes[module];  // biases (1-D) imply no size
      continue;
    }
    if (key.find("lora_A") != std::string::npos)
      set(module, &ProjectionShape::in_features, shape[1], key);
    else if (key.find("lora_B") != std::string::npos)
      set(module, &ProjectionShape::out_features, shape[0], key);
    else if (key.find(".router.") != std::string::npos || key.find(".switch.") != std::string::npos)
      set(module, &ProjectionShape::in_features, shape[1], key);
  }
  if (shapes.empty())
    fail_usage("'{}': no adapter tensors ({} missing or empty)", dir.string(), kAdapterWeightsFile);
  for (const auto& [module, s] : shapes)
    if (s.in_features <= 0 || s.out_features <= 0)
      fail_usage(
          "'{}': the tensors of '{}' do not give both its input and output sizes "
          "(lora_A and lora_B expected)",
          dir.string(), module);
  return shapes;
}

std::shared_ptr<torch::nn::Module> make_projection_shell(const ShapeMap& shapes) {
  auto shell = std::make_shared<torch::nn::Module>("AdapterShell");
  torch::NoGradGuard no_grad;
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32);
  int64_t i = 0;
  for (const auto& [path, s] : shapes) {
    // Created 1x1 and then widened to a zero-stride view: only the sizes are ever read.
    model::Projection p(path, 1, 1, /*bias=*/false, fp32);
    p->weight.set_(torch::zeros({1, 1}, fp32).expand({s.out_features, s.in_features}));
    shell->register_module("p" + std::to_string(i++), p);
  }
  return shell;
}

AdapterShell load_adapter_shell(const fs::path& dir, const LoadAdapterOptions& options) {
  AdapterShell shell;
  shell.dir = dir;
  shell.shapes = adapter_projection_shapes(dir);
  shell.module = make_projection_shell(shell.shapes);
  shell.adapter = load_adapter(*shell.module, dir, options);
  return shell;
}

std::vector<std::pair<std::string, std::shared_ptr<LoraAdapter>>> lora_adapters(
    const LoadedAdapter& adapter) {
  std::vector<std::pair<std::string, std::shared_ptr<LoraAdapter>>> out;
  for (const auto& [path, a] : adapter.injected.adapters)
    if (auto l = std::dynamic_pointer_cast<LoraAdapter>(a)) out.emplace_back(path, l);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<MoloraAdapter>>> molora_adapters(
    const LoadedAdapter& adapter) {
  std::vector<std::pair<std::string, std::shared_ptr<MoloraAdapter>>> out;
  for (const auto& [path, a] : adapter.injected.adapters)
    if (auto m = std::dynamic_pointer_cast<MoloraAdapter>(a)) out.emplace_back(path, m);
  return out;
}

std::string exact_pattern_key(const std::string& module_path) {
  // PEFT 0.7-0.12 match rank_pattern keys with re.match(".*\.KEY$"), which needs a "." before
  // the key, so the first path component is left out ("layers.0.self_attn.q_proj" is still
  // unique in a decoder); ming and newer PEFT full-match "(.*\.)?KEY", which accepts it too.
  std::string path = module_path;
  if (auto dot = path.find('.'); dot != std::string::npos) path = path.substr(dot + 1);
  static const std::string special = R"(\^$.|?*+()[]{})";
  std::string out;
  for (char c : path) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

ConvertReport convert_to_ming(const ConvertAdapterOptions& options) {
  LoadAdapterOptions load;
  load.ming_moe_top_k = options.ming_moe_top_k;
  auto shell = load_adapter_shell(options.input, load);
  ConvertReport report;
  report.input_format = shell.adapter.format;
  report.n_lora = int64_t(lora_adapters(shell.adapter).size());
  report.n_molora_written = int64_t(molora_adapters(shell.adapter).size());
  if (shell.adapter.format == "ming")
    log::info("convert: '{}' is already in ming's format; rewriting it", options.input.string());
  save_adapter(options.output, *shell.module, shell.adapter.config,
               shell.adapter.base_model_name_or_path, options.replace);
  log::info("convert: {} adapter '{}' -> ming '{}' ({} LoRA, {} MoLoRA projections)",
            report.input_format, options.input.string(), options.output.string(), report.n_lora,
            report.n_molora_written);
  return report;
}

namespace {

// Detaches the MoLoRA adapters from the shell's projections and returns the one PEFT config
// that describes the plain-LoRA rest exactly. `what` names the operation in messages.
AdapterConfig detach_to_peft(AdapterShell& shell, const std::string& what, int64_t* n_lora) {
  for (auto& item : shell.module->named_modules("", true))
    if (auto* p = dynamic_cast<model::ProjectionImpl*>(item.value().get()))
      if (std::dynamic_pointer_cast<MoloraAdapter>(p->adapter())) p->set_adapter(nullptr);
  const auto loras = lora_adapters(shell.adapter);
  if (loras.empty())
    fail_usage("{}: '{}' has no plain-LoRA part to write (only MoLoRA experts)", what,
               shell.dir.string());
  *n_lora = int64_t(loras.size());

  // One PEFT config: the first plain group's r/alpha/dropout at the top, per-module r and alpha
  // through exact-path patterns wherever a module differs (rsLoRA folded into alpha).
  const TargetGroup* first = nullptr;
  AdapterConfig out;
  out.groups.clear();
  TargetGroup merged;
  for (const auto& g : shell.adapter.config.groups) {
    if (g.is_moe()) continue;
    if (!first) {
      first = &g;
      merged = g;
      merged.name = "lora";
      merged.targets.clear();
      merged.use_rslora = false;
    }
    if (g.dropout != first->dropout)
      log::warn(
          "{}: group '{}' has lora_dropout {}, written as {} (PEFT keeps one; dropout only "
          "matters in training)",
          what, g.name, g.dropout, first->dropout);
    for (const auto& t : g.targets)
      if (std::find(merged.targets.begin(), merged.targets.end(), t) == merged.targets.end())
        merged.targets.push_back(t);
  }
  TORCH_INTERNAL_ASSERT(first, "plain LoRA adapters without a plain group");
  merged.alpha = first->use_rslora ? first->alpha * std::sqrt(double(first->r)) : first->alpha;
  const double top_scaling = merged.alpha / double(merged.r);
  for (const auto& [path, lora] : loras) {
    const int64_t r = lora->lora_A.size(0);
    if (r != merged.r) out.rank_pattern.emplace_back(exact_pattern_key(path), r);
    // alpha' with alpha'/r == the adapter's scaling (exact for rsLoRA and per-module alphas).
    const double alpha = lora->scaling() * double(r);
    if (r != merged.r || std::abs(lora->scaling() - top_scaling) > 1e-12 * top_scaling)
      out.alpha_pattern.emplace_back(exact_pattern_key(path), alpha);
  }
  out.groups.push_back(merged);
  TORCH_INTERNAL_ASSERT(!adapter_config_json(out, "").contains("moe"),
                        "PEFT config still needs ming's moe block");
  return out;
}

}  // namespace

ConvertReport convert_to_peft(const ConvertAdapterOptions& options) {
  LoadAdapterOptions load;
  load.ming_moe_top_k = options.ming_moe_top_k;
  auto shell = load_adapter_shell(options.input, load);
  ConvertReport report;
  report.input_format = shell.adapter.format;

  const auto moe = molora_adapters(shell.adapter);
  report.n_molora_dropped = int64_t(moe.size());
  if (!moe.empty())
    log::warn(
        "convert --to peft: dropping the MoLoRA experts and routers of {} projections "
        "(e.g. {}); PEFT cannot represent them. Use `ming-merge merge` to keep them.",
        moe.size(), moe.front().first);
  const AdapterConfig out = detach_to_peft(shell, "convert --to peft", &report.n_lora);
  save_adapter(options.output, *shell.module, out, shell.adapter.base_model_name_or_path,
               options.replace);
  log::info("convert: {} adapter '{}' -> PEFT '{}' ({} LoRA projections{})", report.input_format,
            options.input.string(), options.output.string(), report.n_lora,
            moe.empty() ? "" : fmt::format(", {} MoLoRA projections dropped", moe.size()));
  return report;
}

ConvertReport convert_to_ming_moe(const ConvertAdapterOptions& options) {
  const std::string what = "convert --to ming-moe";
  LoadAdapterOptions load;
  load.ming_moe_top_k = options.ming_moe_top_k;
  auto shell = load_adapter_shell(options.input, load);
  ConvertReport report;
  report.input_format = shell.adapter.format;
  const auto moe = molora_adapters(shell.adapter);
  if (moe.empty())
    fail_usage("{}: '{}' has no MoLoRA experts (a plain LoRA adapter is written with --to peft)",
               what, options.input.string());

  // MING-MOE's files hold one expert count, k, rank, alpha and shared-expert switch for all
  // MoLoRA projections, and the same r and alpha as the attention LoRA (its loader copies
  // adapter_config.json's r / lora_alpha into the experts).
  const MoloraOptions& mo = moe.front().second->options();
  for (const auto& [path, m] : moe) {
    const MoloraOptions& o = m->options();
    if (o.experts != mo.experts || o.top_k != mo.top_k || o.r != mo.r || o.alpha != mo.alpha ||
        o.router_bias != mo.router_bias || o.shared_expert != mo.shared_expert)
      fail_usage(
          "{}: '{}' and '{}' differ in experts, top_k, r, alpha, router_bias or shared_expert; "
          "MING-MOE's format has one setting for all MoLoRA projections",
          what, moe.front().first, path);
    if (o.use_rslora)
      fail_usage("{}: '{}' uses rsLoRA experts, which MING-MOE's loader scales as plain LoRA", what,
                 path);
  }

  const torch::ScalarType dtype = options.ming_moe_dtype;
  c10::Dict<std::string, torch::Tensor> non_lora;
  auto put = [&](const std::string& path, const std::string& leaf, const torch::Tensor& t) {
    non_lora.insert(adapter_key(path, leaf), t.detach().to(dtype).contiguous().clone());
  };
  for (const auto& [path, m] : moe) {
    for (int64_t i = 0; i < mo.experts; ++i) {
      put(path, fmt::format("experts.{}.lora_A_{}.weight", i, i), m->lora_A[i]);
      put(path, fmt::format("experts.{}.lora_B_{}.weight", i, i), m->lora_B[i]);
    }
    put(path, "switch.weight", m->router_weight);
    if (m->router_bias.defined()) put(path, "switch.bias", m->router_bias);
    if (m->shared_A.defined()) {
      put(path, "share_experts.lora_A.weight", m->shared_A);
      put(path, "share_experts.lora_B.weight", m->shared_B);
    }
  }
  report.n_molora_written = int64_t(moe.size());

  const AdapterConfig peft = detach_to_peft(shell, what, &report.n_lora);
  const TargetGroup& top = peft.groups.front();
  if (top.r != mo.r || std::abs(top.alpha - mo.alpha) > 1e-12 * mo.alpha)
    fail_usage(
        "{}: the attention LoRA has r {} / alpha {} but the experts r {} / alpha {}; MING-MOE's "
        "loader gives the experts adapter_config.json's r and lora_alpha",
        what, top.r, top.alpha, mo.r, mo.alpha);

  // config.json: the base model's (the reference saves model.config), plus its MoE fields.
  nlohmann::json config = nlohmann::json::object();
  fs::path base_config = options.base_config;
  if (base_config.empty() && !shell.adapter.base_model_name_or_path.empty() &&
      fs::is_regular_file(fs::path(shell.adapter.base_model_name_or_path) / "config.json"))
    base_config = fs::path(shell.adapter.base_model_name_or_path) / "config.json";
  if (!base_config.empty()) {
    if (fs::is_directory(base_config)) base_config /= "config.json";
    config = io::read_json(base_config);
    if (!config.is_object())
      fail_usage("{}: {}: expected a JSON object", what, base_config.string());
  } else {
    log::warn(
        "{}: no base config.json (give --base DIR): config.json gets only the MoE fields, and "
        "MING-MOE's own loader also wants the base model's (AutoConfig)",
        what);
  }
  config["num_experts"] = mo.experts;
  config["num_experts_per_token"] = mo.top_k;
  config["share_expert"] = mo.shared_expert;
  config["expert_selection"] = "top_k";
  config["use_rslora"] = false;

  io::NamedTensors attention;
  for (auto& [k, t] : adapter_state(*shell.module))
    attention.emplace_back(k, t.detach().to(dtype).contiguous());
  io::StagedDir staged(options.output, options.replace);
  io::write_json(staged / kAdapterConfigFile,
                 adapter_config_json(peft, shell.adapter.base_model_name_or_path));
  io::save_safetensors(staged / kAdapterWeightsFile, attention, {{"format", "pt"}});
  const std::vector<char> pickled = torch::pickle_save(c10::IValue(non_lora));
  io::write_file_atomic(staged / kMingNonLoraFile,
                        std::string_view(pickled.data(), pickled.size()));
  io::write_json(staged / "config.json", config);
  staged.commit();
  log::info(
      "convert: {} adapter '{}' -> MING-MOE '{}' ({} LoRA, {} MoLoRA projections: {} experts, "
      "top-{}, {})",
      report.input_format, options.input.string(), options.output.string(), report.n_lora,
      report.n_molora_written, mo.experts, mo.top_k, c10::toString(dtype));
  return report;
}

}  // namespace ming::adapt
