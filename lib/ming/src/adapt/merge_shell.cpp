#include "ming/adapt/merge_shell.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
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

ConvertReport convert_to_peft(const ConvertAdapterOptions& options) {
  LoadAdapterOptions load;
  load.ming_moe_top_k = options.ming_moe_top_k;
  auto shell = load_adapter_shell(options.input, load);
  ConvertReport report;
  report.input_format = shell.adapter.format;

  const auto moe = molora_adapters(shell.adapter);
  report.n_molora_dropped = int64_t(moe.size());
  if (!moe.empty()) {
    log::warn(
        "convert --to peft: dropping the MoLoRA experts and routers of {} projections "
        "(e.g. {}); PEFT cannot represent them. Use `ming-merge merge` to keep them.",
        moe.size(), moe.front().first);
    for (auto& item : shell.module->named_modules("", true))
      if (auto* p = dynamic_cast<model::ProjectionImpl*>(item.value().get()))
        if (std::dynamic_pointer_cast<MoloraAdapter>(p->adapter())) p->set_adapter(nullptr);
  }
  const auto loras = lora_adapters(shell.adapter);
  if (loras.empty())
    fail_usage("convert --to peft: '{}' has no plain-LoRA part to write (only MoLoRA experts)",
               options.input.string());
  report.n_lora = int64_t(loras.size());

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
          "convert --to peft: group '{}' has lora_dropout {}, written as {} (PEFT keeps one; "
          "dropout only matters in training)",
          g.name, g.dropout, first->dropout);
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
  const auto json = adapter_config_json(out, shell.adapter.base_model_name_or_path);
  TORCH_INTERNAL_ASSERT(!json.contains("moe"), "PEFT config still needs ming's moe block");
  save_adapter(options.output, *shell.module, out, shell.adapter.base_model_name_or_path,
               options.replace);
  log::info("convert: {} adapter '{}' -> PEFT '{}' ({} LoRA projections{})", report.input_format,
            options.input.string(), options.output.string(), report.n_lora,
            moe.empty() ? "" : fmt::format(", {} MoLoRA projections dropped", moe.size()));
  return report;
}

}  // namespace ming::adapt
