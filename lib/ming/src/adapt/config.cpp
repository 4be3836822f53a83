#include "ming/adapt/config.h"

#include <regex>
#include <set>

#include <fmt/ranges.h>

#include "ming/core/error.h"
#include "ming/core/log.h"

namespace ming::adapt {

std::vector<TargetGroup> AdapterConfig::ming_moe_groups() {
  TargetGroup attention;
  attention.name = "attention";
  attention.targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  attention.experts = 1;
  attention.r = 16;
  attention.alpha = 32.0;
  attention.dropout = 0.05;
  TargetGroup mlp;
  mlp.name = "mlp";
  mlp.targets = {"gate_proj", "up_proj", "down_proj"};
  mlp.experts = 8;
  mlp.top_k = 2;
  mlp.r = 16;
  mlp.alpha = 32.0;
  mlp.dropout = 0.0;
  mlp.router_bias = true;
  return {attention, mlp};
}

AdapterConfig AdapterConfig::lora(std::vector<std::string> targets, int64_t r, double alpha,
                                  double dropout) {
  AdapterConfig config;
  TargetGroup group;
  group.name = "lora";
  group.targets = std::move(targets);
  group.experts = 1;
  group.r = r;
  group.alpha = alpha;
  group.dropout = dropout;
  config.groups = {group};
  return config;
}

namespace {

std::regex compile(const std::string& pattern, const std::string& what) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail_usage("{}: invalid regular expression '{}': {}", what, pattern, e.what());
  }
}

}  // namespace

bool target_matches(const std::string& pattern, const std::string& name) {
  if (pattern.rfind("re:", 0) == 0)
    return std::regex_match(name, compile(pattern.substr(3), "adapter target"));
  if (name == pattern) return true;
  return name.size() > pattern.size() &&
         name.compare(name.size() - pattern.size(), pattern.size(), pattern) == 0 &&
         name[name.size() - pattern.size() - 1] == '.';
}

void validate(const AdapterConfig& config) {
  if (config.groups.empty()) fail_usage("adapter config: no target groups");
  std::set<std::string> names;
  for (const auto& g : config.groups) {
    const std::string where = fmt::format("adapter group '{}'", g.name);
    if (g.name.empty()) fail_usage("adapter config: a target group has no name");
    if (!names.insert(g.name).second) fail_usage("adapter config: group '{}' given twice", g.name);
    if (g.targets.empty()) fail_usage("{}: 'targets' is empty", where);
    for (const auto& t : g.targets) {
      if (t.empty()) fail_usage("{}: empty target pattern", where);
      if (t.rfind("re:", 0) == 0) compile(t.substr(3), where);
    }
    if (g.experts < 1) fail_usage("{}: experts must be >= 1, got {}", where, g.experts);
    if (g.is_moe() && (g.top_k < 1 || g.top_k > g.experts))
      fail_usage("{}: top_k must be in [1, experts={}], got {}", where, g.experts, g.top_k);
    if (g.r < 1) fail_usage("{}: r must be >= 1, got {}", where, g.r);
    if (!(g.alpha > 0)) fail_usage("{}: alpha must be > 0, got {}", where, g.alpha);
    if (g.dropout < 0 || g.dropout >= 1)
      fail_usage("{}: dropout must be in [0, 1), got {}", where, g.dropout);
    if (g.jitter < 0 || g.jitter >= 1)
      fail_usage("{}: jitter must be in [0, 1), got {}", where, g.jitter);
    if (g.balance_loss_coef < 0 || g.router_z_loss_coef < 0)
      fail_usage("{}: loss coefficients must be >= 0 (balance_loss_coef {}, router_z_loss_coef {})",
                 where, g.balance_loss_coef, g.router_z_loss_coef);
  }
  for (const auto& [key, r] : config.rank_pattern) {
    compile("(.*\\.)?" + key, "rank_pattern");
    if (r < 1) fail_usage("rank_pattern '{}': r must be >= 1, got {}", key, r);
  }
  for (const auto& [key, a] : config.alpha_pattern) {
    compile("(.*\\.)?" + key, "alpha_pattern");
    if (!(a > 0)) fail_usage("alpha_pattern '{}': alpha must be > 0, got {}", key, a);
  }
}

int find_group(const AdapterConfig& config, const std::string& name) {
  for (size_t i = 0; i < config.groups.size(); ++i)
    for (const auto& t : config.groups[i].targets)
      if (target_matches(t, name)) return int(i);
  return -1;
}

namespace {

template <typename T>
const T* find_pattern(const std::vector<std::pair<std::string, T>>& patterns,
                      const std::string& name) {
  for (const auto& [key, value] : patterns)
    if (std::regex_match(name, std::regex("(.*\\.)?" + key))) return &value;
  return nullptr;
}

std::vector<std::pair<std::string, model::ProjectionImpl*>> projections(torch::nn::Module& module) {
  // include_self=false: the root may live on the stack (named_modules would need a shared_ptr).
  std::vector<std::pair<std::string, model::ProjectionImpl*>> out;
  if (auto* p = dynamic_cast<model::ProjectionImpl*>(&module)) out.emplace_back(p->name(), p);
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    auto* p = dynamic_cast<model::ProjectionImpl*>(item.value().get());
    if (p) out.emplace_back(p->name(), p);
  }
  return out;
}

}  // namespace

InjectedAdapters inject_adapters(torch::nn::Module& module, const AdapterConfig& config) {
  validate(config);
  auto projs = projections(module);
  InjectedAdapters result;
  result.context = std::make_shared<MoeContext>();
  std::vector<int64_t> matched(config.groups.size(), 0);

  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.set_requires_grad(false);

  for (auto& [name, proj] : projs) {
    const int gi = find_group(config, name);
    if (gi < 0) {
      if (proj->adapter()) proj->set_adapter(nullptr);
      continue;
    }
    const TargetGroup& g = config.groups[gi];
    ++matched[gi];
    const auto device = proj->weight.device();
    std::shared_ptr<model::ProjectionAdapter> adapter;
    if (g.is_moe()) {
      auto m = std::make_shared<MoloraAdapter>(proj->in_features(), proj->out_features(),
                                               g.molora_options(), result.context, device);
      m->set_name(name);
      adapter = m;
    } else {
      LoraOptions o = g.lora_options();
      if (const int64_t* r = find_pattern(config.rank_pattern, name)) o.r = *r;
      if (const double* a = find_pattern(config.alpha_pattern, name)) o.alpha = *a;
      adapter = std::make_shared<LoraAdapter>(proj->in_features(), proj->out_features(), o, device);
    }
    adapter->train(proj->is_training());
    proj->set_adapter(adapter);
    result.adapters.emplace_back(name, adapter);
  }

  for (size_t i = 0; i < config.groups.size(); ++i) {
    if (matched[i] > 0) continue;
    std::string examples;
    for (size_t j = 0; j < projs.size() && j < 4; ++j) examples += (j ? ", " : "") + projs[j].first;
    fail_usage("adapter group '{}': targets [{}] match no projection of the model (it has {}{}{})",
               config.groups[i].name, fmt::join(config.groups[i].targets, ", "), projs.size(),
               projs.empty() ? " projections" : " projections, e.g. ", examples);
  }

  for (auto& [name, adapter] : result.adapters)
    for (auto& p : adapter->parameters()) {
      p.set_requires_grad(true);
      result.parameters.push_back(p);
      result.n_trainable += p.numel();
    }
  return result;
}

void remove_adapters(torch::nn::Module& module) {
  for (auto& [name, proj] : projections(module))
    if (proj->adapter()) proj->set_adapter(nullptr);
}

int64_t count_trainable_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

int64_t adapter_parameter_count(const TargetGroup& group, int64_t in_features,
                                int64_t out_features) {
  const int64_t lora = group.r * (in_features + out_features);
  if (!group.is_moe()) return lora;
  int64_t n = group.experts * lora + group.experts * in_features;
  if (group.router_bias) n += group.experts;
  if (group.shared_expert) n += lora;
  return n;
}

nlohmann::json to_json(const TargetGroup& g) {
  return config::write(g);
}

TargetGroup group_from_json(const nlohmann::json& j, const std::string& where) {
  TargetGroup g;
  config::read_into(config::make_document(j, where), g);
  return g;
}

}  // namespace ming::adapt
