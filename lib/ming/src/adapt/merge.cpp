#include "ming/adapt/merge.h"

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/data/encode.h"
#include "ming/data/reader.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/model/load.h"

namespace ming::adapt {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// ---- routing statistics ------------------------------------------------------------------------

namespace {

std::vector<double> number_list(const Json& j, const std::string& where) {
  if (!j.is_array()) fail_usage("{}: expected a list of numbers, got {}", where, j.type_name());
  std::vector<double> out;
  for (const auto& v : j) {
    if (!v.is_number()) fail_usage("{}: expected numbers, got {}", where, v.dump());
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < 0)
      fail_usage("{}: usage values must be finite and >= 0, got {}", where, x);
    out.push_back(x);
  }
  if (out.empty()) fail_usage("{}: empty list of expert usages", where);
  return out;
}

// One layer of ming-route-stats' route_stats.json.
std::vector<double> layer_usage(const Json& layer, UsageMeasure measure, const std::string& where) {
  try {
    const int64_t n_experts = layer.at("experts").get<int64_t>();
    const int64_t top_k = layer.at("top_k").get<int64_t>();
    const Json& experts = layer.at("expert_stats");
    if (!experts.is_array() || int64_t(experts.size()) != n_experts)
      fail_usage("{}: expert_stats must list {} experts", where, n_experts);
    std::vector<double> out(n_experts, 0.0);
    for (const auto& e : experts) {
      const int64_t id = e.at("expert").get<int64_t>();
      if (id < 0 || id >= n_experts) fail_usage("{}: expert id {} out of range", where, id);
      const double share = e.at("topk_share").get<double>();
      // E[g_e] = P(e chosen) * E[g_e | chosen] = k * topk_share * mean_gate (mean_gate is the
      // mean over e's own assignments); these sum to 1 because every token's gates do.
      out[id] = measure == UsageMeasure::topk_share
                    ? share
                    : double(top_k) * share * e.at("mean_gate").get<double>();
      if (!std::isfinite(out[id]) || out[id] < 0)
        fail_usage("{}: expert {} has usage {}", where, id, out[id]);
    }
    return out;
  } catch (const Json::exception& e) {
    fail_usage("{}: not a ming-route-stats layer record: {}", where, e.what());
  }
}

}  // namespace

RouteUsage read_route_usage(const fs::path& path, UsageMeasure measure) {
  if (path.empty()) fail_usage("routing statistics needed: pass --route-stats FILE");
  if (!fs::is_regular_file(path))
    fail_usage("route stats file '{}' does not exist (write it with ming-route-stats)",
               path.string());
  const Json j = io::read_json(path);
  const std::string file = path.string();
  if (!j.is_object())
    fail_usage(
        "'{}': expected a JSON object (ming-route-stats' route_stats.json or "
        "{{\"module path\": [p_0, ...]}})",
        file);
  RouteUsage usage;
  if (j.contains("format") && j["format"] == "ming-route-stats") {
    usage.field = measure == UsageMeasure::topk_share ? "topk_share" : "expected gate";
    if (!j.contains("layers") || !j["layers"].is_array())
      fail_usage("'{}': ming-route-stats file without a \"layers\" list", file);
    const Json& layers = j["layers"];
    for (size_t i = 0; i < layers.size(); ++i) {
      const std::string where = fmt::format("'{}': layers[{}]", file, i);
      if (!layers[i].is_object() || !layers[i].contains("name") || !layers[i]["name"].is_string())
        fail_usage("{}: no \"name\" (the layer's module path)", where);
      usage.layers[layers[i]["name"].get<std::string>()] = layer_usage(layers[i], measure, where);
    }
  } else {
    usage.field = "values";
    for (const auto& [name, value] : j.items())
      usage.layers[name] = number_list(value, fmt::format("'{}': \"{}\"", file, name));
  }
  if (usage.layers.empty()) fail_usage("'{}': no layers with expert usage", file);
  return usage;
}

// ---- folding ------------------------------------------------------------------------------------

void fold_into_weight(model::ProjectionImpl& projection, const torch::Tensor& delta,
                      std::optional<torch::ScalarType> dtype) {
  torch::NoGradGuard no_grad;
  auto& w = projection.weight;  // (out, in)
  if (delta.sizes() != w.sizes())
    fail_usage("cannot fold a [{}] update into '{}' of shape [{}]", fmt::join(delta.sizes(), ", "),
               projection.name(), fmt::join(w.sizes(), ", "));
  const auto out_dtype = dtype.value_or(w.scalar_type());
  auto merged = w.to(torch::kFloat32).add(delta.to(w.device(), torch::kFloat32)).to(out_dtype);
  w.set_data(merged);
}

torch::Tensor molora_dense_delta(const MoloraAdapter& adapter, const std::vector<double>& p) {
  torch::NoGradGuard no_grad;
  const int64_t n_experts = adapter.lora_A.size(0);
  if (int64_t(p.size()) != n_experts)
    fail_usage("'{}': {} expert weights given for {} experts", adapter.name(), p.size(), n_experts);
  const int64_t r = adapter.lora_A.size(1);
  auto weights = torch::tensor(p, torch::kFloat64).to(torch::kFloat32).view({n_experts, 1, 1});
  // sum_e p_e B_e A_e as one GEMM: [p_0 B_0 | ... | p_E-1 B_E-1] (O, E*r) @ [A_0; ...] (E*r, D).
  auto b = (adapter.lora_B * weights)
               .permute({1, 0, 2})
               .reshape({adapter.out_features(), n_experts * r});
  auto a = adapter.lora_A.reshape({n_experts * r, adapter.in_features()});
  auto delta = torch::mm(b, a);
  if (adapter.shared_A.defined()) delta.add_(torch::mm(adapter.shared_B, adapter.shared_A));
  return delta.mul_(adapter.scaling());
}

ExpertsToDense parse_experts_to_dense(const std::string& text) {
  if (text == "usage") return ExpertsToDense::usage;
  if (text == "uniform") return ExpertsToDense::uniform;
  fail_usage("--experts-to-dense '{}': expected 'usage' or 'uniform'", text);
}

// ---- merge --------------------------------------------------------------------------------------

namespace {

std::vector<data::EncodedExample> encode_eval_data(const model::LoadedModel& loaded,
                                                   const MergeOptions& o) {
  auto read =
      data::read_examples(o.eval_data, data::DataFormat::auto_detect, data::BadExamplePolicy::stop);
  const auto& tok = *loaded.tokenizer;
  data::EncodeOptions enc;
  enc.chat_template = loaded.chat_template;
  enc.mask = data::MaskPolicy::assistant;
  std::vector<data::EncodedExample> out;
  for (const auto& ex : read.examples) {
    if (int64_t(out.size()) >= o.eval_max_examples) break;
    auto e = ex.is_text ? data::encode_document(tok, ex.text, tok.bos_id().has_value())
                        : data::encode_conversation(tok, ex.messages, enc);
    if (int64_t(e.input_ids.size()) > o.eval_max_tokens) {
      e.input_ids.resize(o.eval_max_tokens);
      e.labels.resize(o.eval_max_tokens);
    }
    out.push_back(std::move(e));
  }
  return out;
}

// Sum of -log p(label_t | tokens < t) over labelled positions, and their count.
std::pair<double, int64_t> total_nll(model::CausalLM& model,
                                     const std::vector<data::EncodedExample>& examples) {
  torch::NoGradGuard no_grad;
  model->eval();
  double nll = 0;
  int64_t n = 0;
  for (const auto& e : examples) {
    const int64_t t = int64_t(e.input_ids.size());
    if (t < 2) continue;
    auto ids =
        torch::tensor(std::vector<int64_t>(e.input_ids.begin(), e.input_ids.end()), torch::kInt64)
            .view({1, t})
            .to(model->device());
    auto labels =
        torch::tensor(std::vector<int64_t>(e.labels.begin(), e.labels.end()), torch::kInt64);
    auto logits = model->forward(ids).squeeze(0).to(torch::kCPU, torch::kFloat32);  // (T, V)
    auto target = labels.slice(0, 1);                                               // (T-1)
    auto keep = target.ne(data::kIgnoreIndex);
    if (keep.sum().item<int64_t>() == 0) continue;
    auto logp = torch::log_softmax(logits.slice(0, 0, t - 1), -1);  // (T-1, V)
    auto picked = logp.index({keep}).gather(1, target.index({keep}).unsqueeze(1));
    nll -= picked.sum().item<double>();
    n += keep.sum().item<int64_t>();
  }
  return {nll, n};
}

}  // namespace

MergeReport merge(const MergeOptions& o) {
  // Cheap checks first, so a bad flag never costs a model load.
  if (o.output.empty()) fail_usage("merge: no output folder (-o)");
  const bool evaluate = !o.eval_data.empty();
  if (evaluate && !fs::is_regular_file(o.eval_data))
    fail_usage("--eval-data '{}' does not exist", o.eval_data.string());
  std::optional<RouteUsage> usage;
  if (o.experts_to_dense == ExpertsToDense::usage)
    usage = read_route_usage(o.route_stats, UsageMeasure::expected_gate);
  else if (!o.route_stats.empty())
    log::warn("--route-stats is only used with --experts-to-dense usage; ignoring '{}'",
              o.route_stats.string());
  if (!fs::exists(o.adapter / kAdapterConfigFile))
    fail_usage("'{}' is not an adapter folder: {} is missing", o.adapter.string(),
               kAdapterConfigFile);

  model::LoadOptions load;
  load.dtype = o.dtype;  // the output dtype is also what base + adapter is evaluated in
  load.load_tokenizer = evaluate;
  auto loaded = model::load_model(o.base, load);
  auto& model = loaded.model;
  const auto out_dtype = model->dtype();

  LoadAdapterOptions adapter_load;
  adapter_load.ming_moe_top_k = o.ming_moe_top_k;
  auto adapter = load_adapter(*model, o.adapter, adapter_load);

  MergeReport report;
  std::vector<data::EncodedExample> eval_examples;
  if (evaluate) {
    eval_examples = encode_eval_data(loaded, o);
    auto [nll, n] = total_nll(model, eval_examples);
    if (n == 0) fail_usage("--eval-data '{}': no labelled tokens to score", o.eval_data.string());
    report.eval_tokens = n;
    report.ppl_adapter = std::exp(nll / double(n));
  }

  for (auto& proj : model->projections()) {
    const auto& a = proj->adapter();
    if (auto lora = std::dynamic_pointer_cast<LoraAdapter>(a)) {
      fold_into_weight(*proj, lora->delta_weight(), out_dtype);
      proj->set_adapter(nullptr);
      ++report.n_lora_merged;
    } else if (auto moe = std::dynamic_pointer_cast<MoloraAdapter>(a)) {
      if (o.experts_to_dense == ExpertsToDense::keep) {
        ++report.n_molora_kept;
        continue;
      }
      const int64_t n_experts = moe->options().experts;
      std::vector<double> p(n_experts, 1.0 / double(n_experts));
      if (usage) {
        auto it = usage->layers.find(proj->name());
        if (it == usage->layers.end())
          fail_usage("'{}' has no routing statistics for '{}' (it lists {} layers, e.g. {})",
                     o.route_stats.string(), proj->name(), usage->layers.size(),
                     usage->layers.begin()->first);
        if (int64_t(it->second.size()) != n_experts)
          fail_usage("'{}': layer '{}' has {} expert values, the adapter has {} experts",
                     o.route_stats.string(), proj->name(), it->second.size(), n_experts);
        double sum = 0;
        for (double v : it->second) sum += v;
        if (sum <= 0)
          fail_usage("'{}': layer '{}' has all-zero expert usage", o.route_stats.string(),
                     proj->name());
        if (std::abs(sum - 1.0) > 1e-2)
          log::warn("'{}': {} of layer '{}' sum to {:.4f}, not 1; normalising",
                    o.route_stats.string(), usage->field, proj->name(), sum);
        for (int64_t e = 0; e < n_experts; ++e) p[e] = it->second[e] / sum;
      }
      fold_into_weight(*proj, molora_dense_delta(*moe, p), out_dtype);
      proj->set_adapter(nullptr);
      ++report.n_molora_densified;
    }
  }

  if (evaluate) {
    auto [nll, n] = total_nll(model, eval_examples);
    report.ppl_merged = std::exp(nll / double(n));
  }

  // Write: the model folder, then the base's own config.json (every field it had, in its order,
  // so HF and llama.cpp see the base's config), then the kept experts beside it.
  io::StagedDir staged(o.output, o.replace);
  model::SaveOptions save;
  save.dtype = out_dtype;
  save.tokenizer_source = o.base;
  save.generation_config = loaded.generation_config;
  model::save_model(staged.path(), loaded.config, model, save);
  Json config = io::read_json(o.base / "config.json");
  config["torch_dtype"] = model::torch_dtype_name(out_dtype);
  io::write_json(staged / "config.json", config);

  if (report.n_molora_kept > 0) {
    AdapterConfig experts;
    experts.groups.clear();
    for (const auto& g : adapter.config.groups)
      if (g.is_moe()) experts.groups.push_back(g);
    save_adapter(staged / o.experts_dir, *model, experts, o.output.string());
    report.experts_adapter = o.output / o.experts_dir;
  }
  staged.commit();

  log::info("merge: folded {} LoRA projections{} into '{}' ({})", report.n_lora_merged,
            report.n_molora_densified
                ? fmt::format(" and {} MoLoRA projections ({})", report.n_molora_densified,
                              o.experts_to_dense == ExpertsToDense::usage
                                  ? "weighted by measured " + usage->field
                                  : std::string("uniform expert weights"))
                : std::string(),
            o.output.string(), model::torch_dtype_name(out_dtype));
  if (report.experts_adapter)
    log::warn(
        "merge: the {} MoLoRA projections cannot be folded exactly and were kept as an "
        "adapter in '{}'; run with --model {} --adapter {} (or pass --experts-to-dense "
        "usage|uniform to fold an approximation)",
        report.n_molora_kept, report.experts_adapter->string(), o.output.string(),
        report.experts_adapter->string());
  if (report.ppl_adapter)
    log::info(
        "merge: perplexity on {} tokens of '{}': base+adapter {:.4f}, merged {:.4f} "
        "({:+.2f}%)",
        report.eval_tokens, o.eval_data.string(), *report.ppl_adapter, *report.ppl_merged,
        100.0 * (*report.ppl_merged / *report.ppl_adapter - 1.0));
  return report;
}

}  // namespace ming::adapt
