#include "ming/adapt/combine.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/ranges.h>

#include "ming/adapt/merge_shell.h"
#include "ming/core/error.h"
#include "ming/core/log.h"

namespace ming::adapt {

namespace fs = std::filesystem;

// ---- names --------------------------------------------------------------------------------------

namespace {
const std::vector<std::pair<std::string, CombineMethod>>& method_names() {
  static const std::vector<std::pair<std::string, CombineMethod>> names = {
      {"linear", CombineMethod::linear},
      {"cat", CombineMethod::cat},
      {"svd", CombineMethod::svd},
      {"ties", CombineMethod::ties},
      {"dare", CombineMethod::dare_linear},
      {"dare_linear", CombineMethod::dare_linear},
      {"dare_ties", CombineMethod::dare_ties},
      {"magnitude_prune", CombineMethod::magnitude_prune},
      {"ties_svd", CombineMethod::ties_svd},
      {"dare_svd", CombineMethod::dare_linear_svd},
      {"dare_linear_svd", CombineMethod::dare_linear_svd},
      {"dare_ties_svd", CombineMethod::dare_ties_svd},
  };
  return names;
}

bool is_svd(CombineMethod m) {
  return m == CombineMethod::svd || m == CombineMethod::ties_svd ||
         m == CombineMethod::dare_linear_svd || m == CombineMethod::dare_ties_svd;
}

bool needs_density(CombineMethod m) {
  return m != CombineMethod::linear && m != CombineMethod::cat && m != CombineMethod::svd;
}

// The task-arithmetic part of an svd method.
CombineMethod base_method(CombineMethod m) {
  switch (m) {
    case CombineMethod::svd:
      return CombineMethod::linear;
    case CombineMethod::ties_svd:
      return CombineMethod::ties;
    case CombineMethod::dare_linear_svd:
      return CombineMethod::dare_linear;
    case CombineMethod::dare_ties_svd:
      return CombineMethod::dare_ties;
    default:
      return m;
  }
}
}  // namespace

CombineMethod parse_combine_method(const std::string& text) {
  for (const auto& [name, m] : method_names())
    if (name == text) return m;
  std::vector<std::string> valid;
  for (const auto& [name, m] : method_names()) valid.push_back(name);
  fail_usage("--method '{}': expected one of {}", text, fmt::join(valid, ", "));
}

std::string combine_method_name(CombineMethod method) {
  for (const auto& [name, m] : method_names())
    if (m == method && name != "dare" && name != "dare_svd") return name;
  return "?";
}

MajoritySign parse_majority_sign(const std::string& text) {
  if (text == "total") return MajoritySign::total;
  if (text == "frequency") return MajoritySign::frequency;
  fail_usage("--majority-sign '{}': expected 'total' or 'frequency'", text);
}

// ---- task tensors -------------------------------------------------------------------------------

torch::Tensor magnitude_prune(const torch::Tensor& t, double density) {
  if (density >= 1) return t;
  const int64_t k = int64_t(density * double(t.numel()));
  auto flat = t.reshape({-1});
  auto mask = torch::zeros_like(flat);
  if (k > 0) mask.index_fill_(0, std::get<1>(flat.abs().topk(k)), 1);
  return t * mask.view(t.sizes());
}

torch::Tensor random_prune(const torch::Tensor& t, double density, bool rescale,
                           torch::Generator& generator) {
  if (density >= 1) return t;
  auto keep = torch::bernoulli(torch::full_like(t, density), generator);
  auto out = t * keep;
  return rescale ? out / density : out;
}

torch::Tensor majority_sign_mask(const torch::Tensor& stacked, MajoritySign method) {
  auto sign = stacked.sign();
  auto magnitude = method == MajoritySign::total ? stacked.sum(0) : sign.sum(0);
  auto elected =
      torch::where(magnitude >= 0, torch::ones_like(magnitude), -torch::ones_like(magnitude));
  return sign == elected;
}

torch::Tensor disjoint_merge(const torch::Tensor& weighted, const torch::Tensor& mask) {
  auto kept = (weighted * mask).sum(0);
  auto count = mask.sum(0).to(weighted.scalar_type()).clamp_min(1.0);
  return kept / count;
}

torch::Tensor merge_task_tensors(CombineMethod method, const std::vector<torch::Tensor>& tasks,
                                 const std::vector<double>& weights, double density,
                                 MajoritySign sign, torch::Generator& generator) {
  TORCH_INTERNAL_ASSERT(!tasks.empty() && tasks.size() == weights.size());
  std::vector<torch::Tensor> pruned;
  for (const auto& t : tasks) {
    switch (method) {
      case CombineMethod::ties:
      case CombineMethod::magnitude_prune:
        pruned.push_back(magnitude_prune(t, density));
        break;
      case CombineMethod::dare_linear:
      case CombineMethod::dare_ties:
        pruned.push_back(random_prune(t, density, /*rescale=*/true, generator));
        break;
      case CombineMethod::linear:
        pruned.push_back(t);
        break;
      default:
        TORCH_INTERNAL_ASSERT(false, "not a task-arithmetic method");
    }
  }
  auto stacked = torch::stack(pruned);  // (n, ...)
  std::vector<int64_t> shape(stacked.dim(), 1);
  shape[0] = int64_t(weights.size());
  auto w = torch::tensor(weights, torch::kFloat64).to(stacked.scalar_type()).view(shape);
  if (method == CombineMethod::ties || method == CombineMethod::dare_ties)
    // The sign is elected on the unweighted tensors (PEFT): a negative weight subtracts an
    // adapter's agreeing entries rather than flipping the vote.
    return disjoint_merge(stacked * w, majority_sign_mask(stacked, sign));
  return (stacked * w).sum(0);
}

namespace {

// Balanced rank-`rank` factors from an SVD dW = U diag(S) Vh: B = U_R S_R^(1/2), A = S_R^(1/2)
// Vh_R; ranks beyond S's length get fresh-LoRA factors (A kaiming-uniform, B zero).
std::pair<torch::Tensor, torch::Tensor> factors_from_svd(const torch::Tensor& u,
                                                         const torch::Tensor& s,
                                                         const torch::Tensor& vh, int64_t rank,
                                                         torch::Generator& generator) {
  const int64_t out = u.size(0), in = vh.size(1);
  const int64_t kept = std::min<int64_t>(rank, s.size(0));
  auto root = s.slice(0, 0, kept).sqrt();                   // (kept)
  auto out_b = torch::zeros({out, rank}, torch::kFloat32);  // (O, R)
  auto out_a = torch::empty({rank, in}, torch::kFloat32);   // (R, D)
  out_b.slice(1, 0, kept).copy_(u.slice(1, 0, kept) * root.unsqueeze(0));
  out_a.slice(0, 0, kept).copy_(vh.slice(0, 0, kept) * root.unsqueeze(1));
  if (kept < rank) {
    const double bound = 1.0 / std::sqrt(double(in));  // init_lora_a_'s kaiming-uniform
    out_a.slice(0, kept).uniform_(-bound, bound, generator);
  }
  return {out_b, out_a};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> low_rank_factors(const torch::Tensor& b,
                                                         const torch::Tensor& a, int64_t rank,
                                                         torch::Generator& generator) {
  torch::NoGradGuard no_grad;
  TORCH_INTERNAL_ASSERT(b.dim() == 2 && a.dim() == 2 && b.size(1) == a.size(0) && rank > 0);
  // dW = Qb Rb (Qa Ra)^T = Qb (Rb Ra^T) Qa^T: the SVD of the small (K x K) core gives dW's,
  // in fp64 so that a full-rank result reproduces dW to fp32 rounding.
  auto [qb, rb] = at::linalg_qr(b.to(torch::kFloat64), "reduced");      // (O, m1), (m1, K)
  auto [qa, ra] = at::linalg_qr(a.to(torch::kFloat64).t(), "reduced");  // (D, m2), (m2, K)
  auto [u, s, vh] = at::linalg_svd(torch::mm(rb, ra.t()), /*full_matrices=*/false);
  return factors_from_svd(torch::mm(qb, u), s, torch::mm(vh, qa.t()), rank, generator);
}

// Dense dW (O, D): the *_svd methods, whose pruning makes dW full-rank.
static std::pair<torch::Tensor, torch::Tensor> dense_low_rank_factors(const torch::Tensor& delta,
                                                                      int64_t rank,
                                                                      torch::Generator& generator) {
  torch::NoGradGuard no_grad;
  auto [u, s, vh] = at::linalg_svd(delta.to(torch::kFloat64), /*full_matrices=*/false);
  return factors_from_svd(u, s, vh, rank, generator);
}

// ---- shared plumbing ----------------------------------------------------------------------------

namespace {

struct LoraPart {
  torch::Tensor a;  // (r, in) fp32
  torch::Tensor b;  // (out, r) fp32
  double scaling = 1;
  int64_t rank() const { return a.size(0); }
};

struct PlainInput {
  fs::path dir;
  AdapterShell shell;
  std::map<std::string, LoraPart, NaturalLess> parts;
  std::vector<const TargetGroup*> groups;  // its plain groups
};

std::vector<PlainInput> load_plain_inputs(const std::vector<fs::path>& dirs, const char* what) {
  std::vector<PlainInput> inputs;
  for (const auto& dir : dirs) {
    PlainInput in;
    in.dir = dir;
    in.shell = load_adapter_shell(dir);
    const auto moe = molora_adapters(in.shell.adapter);
    if (!moe.empty())
      fail_usage(
          "{}: '{}' has MoLoRA experts on {} projections (e.g. {}); {} works on plain-LoRA "
          "adapters (hint: `ming-merge convert --to peft` keeps only the LoRA part)",
          what, dir.string(), moe.size(), moe.front().first, what);
    for (auto& [path, lora] : lora_adapters(in.shell.adapter))
      in.parts[path] = LoraPart{lora->lora_A.detach(), lora->lora_B.detach(), lora->scaling()};
    inputs.push_back(std::move(in));
  }
  for (auto& in : inputs)
    for (const auto& g : in.shell.adapter.config.groups) in.groups.push_back(&g);
  return inputs;
}

// Projection shapes over all inputs; UsageError when two inputs disagree (another base model).
ShapeMap union_shapes(const std::vector<PlainInput>& inputs, const char* what) {
  ShapeMap shapes;
  std::map<std::string, const fs::path*> first_seen;
  for (const auto& in : inputs)
    for (const auto& [path, shape] : in.shell.shapes) {
      auto [it, fresh] = shapes.emplace(path, shape);
      if (fresh) {
        first_seen[path] = &in.dir;
      } else if (it->second != shape) {
        fail_usage(
            "{}: '{}' adapts '{}' as {} -> {} features, '{}' as {} -> {} (adapters for "
            "different base models?)",
            what, first_seen[path]->string(), path, it->second.in_features, it->second.out_features,
            in.dir.string(), shape.in_features, shape.out_features);
      }
    }
  return shapes;
}

std::string common_base_name(const std::vector<PlainInput>& inputs) {
  const std::string& first = inputs.front().shell.adapter.base_model_name_or_path;
  for (const auto& in : inputs)
    if (in.shell.adapter.base_model_name_or_path != first)
      log::warn("adapters name different base models: '{}' ({}) vs '{}' ({})", first,
                inputs.front().dir.string(), in.shell.adapter.base_model_name_or_path,
                in.dir.string());
  return first;
}

// A plain group over `targets` with scaling 1 (alpha = r) everywhere: top-level r is the first
// projection's, the others differ through exact-path rank/alpha patterns.
AdapterConfig plain_config(const std::vector<std::string>& targets, double dropout,
                           const std::map<std::string, int64_t, NaturalLess>& ranks) {
  AdapterConfig cfg;
  TargetGroup g;
  g.name = "lora";
  g.targets = targets;
  g.experts = 1;
  g.r = ranks.begin()->second;
  g.alpha = double(g.r);
  g.dropout = dropout;
  g.use_rslora = false;
  cfg.groups = {g};
  for (const auto& [path, r] : ranks)
    if (r != g.r) {
      cfg.rank_pattern.emplace_back(exact_pattern_key(path), r);
      cfg.alpha_pattern.emplace_back(exact_pattern_key(path), double(r));
    }
  return cfg;
}

// Builds a shell for `shapes`, attaches `config`, lets `fill` set every adapter's tensors, and
// saves it. `fill` gets (module path, adapter) and must fill every parameter.
void write_adapter(const fs::path& output, const ShapeMap& shapes, const AdapterConfig& config,
                   const std::string& base_name, bool replace,
                   const std::function<void(const std::string&, model::ProjectionAdapter&)>& fill) {
  auto shell = make_projection_shell(shapes);
  auto injected = inject_adapters(*shell, config);
  torch::NoGradGuard no_grad;
  for (auto& [path, adapter] : injected.adapters) fill(path, *adapter);
  save_adapter(output, *shell, config, base_name, replace);
}

void copy_checked(torch::Tensor& dst, const torch::Tensor& src, const std::string& what) {
  TORCH_INTERNAL_ASSERT(dst.sizes() == src.sizes(), what, ": [", dst.sizes(), "] vs [", src.sizes(),
                        "]");
  dst.copy_(src);
}

std::vector<std::string> union_targets(const std::vector<PlainInput>& inputs, bool plain_only) {
  std::vector<std::string> targets;
  for (const auto& in : inputs)
    for (const auto* g : in.groups) {
      if (plain_only && g->is_moe()) continue;
      for (const auto& t : g->targets)
        if (std::find(targets.begin(), targets.end(), t) == targets.end()) targets.push_back(t);
    }
  return targets;
}

}  // namespace

// ---- combine ------------------------------------------------------------------------------------

CombineReport combine(const CombineOptions& o) {
  if (o.adapters.empty()) fail_usage("combine: no --adapters given");
  if (o.output.empty()) fail_usage("combine: no output folder (-o)");
  std::vector<double> weights = o.weights;
  if (weights.empty()) weights.assign(o.adapters.size(), 1.0);
  if (weights.size() != o.adapters.size())
    fail_usage("combine: {} --weights for {} --adapters", weights.size(), o.adapters.size());
  for (double w : weights)
    if (!std::isfinite(w)) fail_usage("combine: --weights must be finite numbers");
  CombineMethod method = o.method;
  double density = 1.0;
  if (needs_density(method)) {
    if (!o.density)
      fail_usage("combine --method {}: --density is required (fraction of entries kept, in (0, 1])",
                 combine_method_name(method));
    density = *o.density;
    if (!(density > 0 && density <= 1))
      fail_usage("combine: --density must be in (0, 1], got {}", density);
  } else if (o.density) {
    log::warn("combine --method {}: --density is not used", combine_method_name(method));
  }
  if (o.rank && !is_svd(method))
    log::warn("combine --method {}: --rank is only used by the svd methods",
              combine_method_name(method));
  if (o.rank && *o.rank <= 0) fail_usage("combine: --rank must be positive, got {}", *o.rank);

  auto inputs = load_plain_inputs(o.adapters, "combine");
  const ShapeMap shapes = union_shapes(inputs, "combine");

  // Ranks per projection, checked where the method needs them equal.
  int64_t max_rank = 0;
  for (const auto& in : inputs)
    for (const auto& [path, part] : in.parts) max_rank = std::max(max_rank, part.rank());
  const bool equal_ranks = method == CombineMethod::linear || method == CombineMethod::ties ||
                           method == CombineMethod::dare_linear ||
                           method == CombineMethod::dare_ties ||
                           method == CombineMethod::magnitude_prune;
  if (equal_ranks)
    for (const auto& [path, shape] : shapes) {
      const PlainInput* ref = nullptr;
      for (const auto& in : inputs) {
        auto it = in.parts.find(path);
        if (it == in.parts.end()) continue;
        if (!ref) {
          ref = &in;
          continue;
        }
        const int64_t r0 = ref->parts.at(path).rank(), r1 = it->second.rank();
        if (r0 != r1)
          fail_usage(
              "combine --method {} needs equal LoRA ranks: '{}' has r={} and '{}' has r={} "
              "(at {}); use --method cat or svd for adapters of different ranks",
              combine_method_name(method), ref->dir.string(), r0, in.dir.string(), r1, path);
      }
    }

  auto generator = at::detail::createCPUGenerator(o.seed);
  const int64_t svd_rank = o.rank.value_or(max_rank);
  std::map<std::string, LoraPart, NaturalLess> result;
  std::map<std::string, int64_t, NaturalLess> ranks;
  {
    torch::NoGradGuard no_grad;
    for (const auto& [path, shape] : shapes) {
      std::vector<const LoraPart*> parts;
      std::vector<double> ws;
      for (size_t i = 0; i < inputs.size(); ++i)
        if (auto it = inputs[i].parts.find(path); it != inputs[i].parts.end()) {
          parts.push_back(&it->second);
          ws.push_back(weights[i]);
        }
      LoraPart out;
      if (method == CombineMethod::cat) {
        std::vector<torch::Tensor> as, bs;
        for (size_t i = 0; i < parts.size(); ++i) {
          as.push_back(parts[i]->a * (ws[i] * parts[i]->scaling));
          bs.push_back(parts[i]->b);
        }
        out.a = torch::cat(as, 0);
        out.b = torch::cat(bs, 1);
      } else if (method == CombineMethod::svd) {
        std::vector<torch::Tensor> as, bs;
        for (size_t i = 0; i < parts.size(); ++i) {
          bs.push_back(parts[i]->b * (ws[i] * parts[i]->scaling));
          as.push_back(parts[i]->a);
        }
        std::tie(out.b, out.a) =
            low_rank_factors(torch::cat(bs, 1), torch::cat(as, 0), svd_rank, generator);
      } else if (is_svd(method)) {
        // Dense updates s_i B_i A_i, task arithmetic on them, then the SVD of the result.
        std::vector<torch::Tensor> deltas;
        for (const auto* p : parts) deltas.push_back(torch::mm(p->b, p->a) * p->scaling);
        auto delta = merge_task_tensors(base_method(method), deltas, ws, density, o.majority_sign,
                                        generator);
        std::tie(out.b, out.a) = dense_low_rank_factors(delta, svd_rank, generator);
      } else {
        // PEFT: the weight (times the input's scaling) is split as sqrt over A and B, its sign
        // on A only, so that B A carries w_i s_i for a single adapter.
        std::vector<torch::Tensor> as, bs;
        std::vector<double> wa, wb;
        for (size_t i = 0; i < parts.size(); ++i) {
          const double ws_i = ws[i] * parts[i]->scaling;
          wa.push_back(std::copysign(std::sqrt(std::abs(ws_i)), ws_i));
          wb.push_back(std::sqrt(std::abs(ws_i)));
          as.push_back(parts[i]->a);
          bs.push_back(parts[i]->b);
        }
        out.a = merge_task_tensors(method, as, wa, density, o.majority_sign, generator);
        out.b = merge_task_tensors(method, bs, wb, density, o.majority_sign, generator);
      }
      out.scaling = 1.0;
      ranks[path] = out.rank();
      result[path] = out;
    }
  }

  const double dropout = inputs.front().groups.front()->dropout;
  const auto config = plain_config(union_targets(inputs, true), dropout, ranks);
  write_adapter(o.output, shapes, config, common_base_name(inputs), o.replace,
                [&](const std::string& path, model::ProjectionAdapter& adapter) {
                  auto& lora = dynamic_cast<LoraAdapter&>(adapter);
                  copy_checked(lora.lora_A, result.at(path).a, path + ".lora_A");
                  copy_checked(lora.lora_B, result.at(path).b, path + ".lora_B");
                });

  CombineReport report;
  report.n_projections = int64_t(result.size());
  report.min_rank = report.max_rank = ranks.begin()->second;
  for (const auto& [path, r] : ranks) {
    report.min_rank = std::min(report.min_rank, r);
    report.max_rank = std::max(report.max_rank, r);
  }
  log::info("combine: {} adapters ({}) -> '{}': {} projections, rank {}{}", inputs.size(),
            combine_method_name(method), o.output.string(), report.n_projections, report.min_rank,
            report.max_rank != report.min_rank ? fmt::format("..{}", report.max_rank) : "");
  return report;
}

// ---- upcycle ------------------------------------------------------------------------------------

UpcycleReport upcycle(const UpcycleOptions& options) {
  UpcycleOptions o = options;
  if (!o.from_lora.empty()) {
    if (!o.adapters.empty()) fail_usage("upcycle: give --adapters or --from-lora, not both");
    if (o.experts < 2)
      fail_usage("upcycle --from-lora: --experts {} must be >= 2 (a router needs a choice)",
                 o.experts);
    o.adapters.assign(static_cast<size_t>(o.experts), o.from_lora);
    if (o.others.empty()) o.others = "first";  // the LoRA itself, at its own rank
  }
  if (o.others.empty()) o.others = "mean";
  const int64_t n = int64_t(o.adapters.size());
  if (n < 2) fail_usage("upcycle: needs at least 2 --adapters (one per expert), got {}", n);
  if (o.output.empty()) fail_usage("upcycle: no output folder (-o)");
  if (o.targets.empty()) fail_usage("upcycle: --targets is empty");
  if (o.top_k < 1 || o.top_k > n)
    fail_usage("upcycle: --top-k {} must be in [1, {}] (the number of adapters)", o.top_k, n);
  if (o.others != "mean" && o.others != "first" && o.others != "drop")
    fail_usage("upcycle: --others '{}': expected mean, first or drop", o.others);

  auto inputs = load_plain_inputs(o.adapters, "upcycle");
  const ShapeMap all_shapes = union_shapes(inputs, "upcycle");
  auto targeted = [&](const std::string& path) {
    for (const auto& t : o.targets)
      if (target_matches(t, path)) return true;
    return false;
  };

  // Expert layout: one rank and one scaling for all experts (MoLoRA stacks them).
  ShapeMap shapes;
  int64_t rank = 0;
  double scaling = 0;
  for (const auto& [path, shape] : all_shapes) {
    if (!targeted(path)) continue;
    shapes[path] = shape;
    for (const auto& in : inputs)
      if (auto it = in.parts.find(path); it != in.parts.end()) {
        rank = std::max(rank, it->second.rank());
        if (scaling == 0) scaling = it->second.scaling;
      }
  }
  if (shapes.empty())
    fail_usage(
        "upcycle: --targets [{}] match no projection the adapters adapt (they adapt e.g. "
        "{})",
        fmt::join(o.targets, ", "), all_shapes.begin()->first);

  TargetGroup experts;
  experts.name = "mlp";
  experts.targets = o.targets;
  experts.experts = n;
  experts.top_k = o.top_k;
  experts.r = rank;
  experts.alpha = scaling * double(rank);  // s = alpha / r: the first adapter's scaling
  experts.dropout = 0.0;
  experts.router_bias = o.router_bias;
  AdapterConfig config;
  config.groups = {experts};

  // Other projections.
  std::map<std::string, LoraPart, NaturalLess> others;
  std::map<std::string, int64_t, NaturalLess> other_ranks;
  if (o.others != "drop") {
    torch::NoGradGuard no_grad;
    for (const auto& [path, shape] : all_shapes) {
      if (targeted(path)) continue;
      LoraPart out;
      if (o.others == "first") {
        auto it = inputs.front().parts.find(path);
        if (it == inputs.front().parts.end()) continue;
        out = it->second;
        out.a = out.a * out.scaling;  // written with scaling 1 like the rest
        out.scaling = 1;
      } else {
        std::vector<torch::Tensor> as, bs;
        for (const auto& in : inputs)
          if (auto it = in.parts.find(path); it != in.parts.end()) {
            as.push_back(it->second.a * (it->second.scaling / double(n)));
            bs.push_back(it->second.b);
          }
        out.a = torch::cat(as, 0);
        out.b = torch::cat(bs, 1);
        out.scaling = 1;
      }
      shapes[path] = shape;
      other_ranks[path] = out.rank();
      others[path] = out;
    }
    if (!others.empty()) {
      // "first" keeps adapter 1's coverage; "mean" covers every adapter's.
      std::vector<std::string> targets;
      for (size_t i = 0; i < (o.others == "first" ? 1 : inputs.size()); ++i)
        for (const auto* g : inputs[i].groups)
          for (const auto& t : g->targets)
            if (std::find(targets.begin(), targets.end(), t) == targets.end()) targets.push_back(t);
      auto plain = plain_config(targets, inputs.front().groups.front()->dropout, other_ranks);
      plain.groups.front().name = "attention";
      config.groups.push_back(plain.groups.front());
      config.rank_pattern = plain.rank_pattern;
      config.alpha_pattern = plain.alpha_pattern;
    }
  } else {
    log::info("upcycle: --others drop: projections outside [{}] get no adapter",
              fmt::join(o.targets, ", "));
  }

  auto generator = at::detail::createCPUGenerator(o.seed);
  int64_t n_fresh = 0;
  write_adapter(o.output, shapes, config, common_base_name(inputs), o.replace,
                [&](const std::string& path, model::ProjectionAdapter& adapter) {
                  if (auto* lora = dynamic_cast<LoraAdapter*>(&adapter)) {
                    copy_checked(lora->lora_A, others.at(path).a, path + ".lora_A");
                    copy_checked(lora->lora_B, others.at(path).b, path + ".lora_B");
                    return;
                  }
                  auto& moe = dynamic_cast<MoloraAdapter&>(adapter);
                  const double bound = 1.0 / std::sqrt(double(moe.in_features()));
                  moe.lora_A.uniform_(-bound, bound,
                                      generator);  // fresh ranks; overwritten where used
                  moe.lora_B.zero_();
                  moe.router_weight.uniform_(-bound, bound, generator);
                  if (moe.router_bias.defined()) moe.router_bias.uniform_(-bound, bound, generator);
                  for (int64_t e = 0; e < n; ++e) {
                    auto it = inputs[e].parts.find(path);
                    if (it == inputs[e].parts.end()) {
                      ++n_fresh;
                      continue;
                    }
                    const LoraPart& p = it->second;
                    const int64_t r = p.rank();
                    moe.lora_A[e].slice(0, 0, r).copy_(p.a);
                    moe.lora_B[e].slice(1, 0, r).copy_(p.b * (p.scaling / moe.scaling()));
                  }
                });

  UpcycleReport report;
  report.rank = rank;
  report.n_lora = int64_t(others.size());
  report.n_molora = int64_t(shapes.size()) - report.n_lora;
  if (n_fresh > 0)
    log::info(
        "upcycle: {} (projection, adapter) pairs had no LoRA and start as fresh no-op experts",
        n_fresh);
  log::info(
      "upcycle: {} -> '{}': {} MoLoRA projections ({} experts, top-{}, r {}), {} plain LoRA "
      "projections ({})",
      o.from_lora.empty() ? fmt::format("{} adapters", n)
                          : fmt::format("'{}' in every expert", o.from_lora.string()),
      o.output.string(), report.n_molora, n, o.top_k, rank, report.n_lora, o.others);
  return report;
}

}  // namespace ming::adapt
