#include "ming/route/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "ming/core/error.h"

namespace ming::route {

using nlohmann::json;

namespace {

double safe_div(double a, double b) {
  return b > 0 ? a / b : 0.0;
}

std::vector<double> shares(const std::vector<int64_t>& counts, double total) {
  std::vector<double> out(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) out[i] = safe_div(double(counts[i]), total);
  return out;
}

double entropy_of(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log2(v);
  return h;
}

}  // namespace

BalanceFigures balance_figures(const std::vector<double>& p) {
  BalanceFigures out;
  const size_t n = p.size();
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  if (n == 0 || total <= 0) return out;
  const double mean = total / n;
  double var = 0;
  for (double v : p) var += (v - mean) * (v - mean);
  var /= n;
  out.cv = std::sqrt(var) / mean;
  out.max_over_mean = *std::max_element(p.begin(), p.end()) / mean;
  std::vector<double> q(p);
  for (double& v : q) v /= total;
  out.entropy_norm = n > 1 ? entropy_of(q) / std::log2(double(n)) : 1.0;
  return out;
}

double entropy_bits(const std::vector<int64_t>& counts) {
  double total = 0;
  for (auto c : counts) total += c;
  return total > 0 ? entropy_of(shares(counts, total)) : 0.0;
}

double mutual_information_bits(const std::vector<std::vector<int64_t>>& joint) {
  if (joint.empty()) return 0.0;
  const size_t cols = joint[0].size();
  std::vector<double> row_sum(joint.size(), 0.0), col_sum(cols, 0.0);
  double total = 0;
  for (size_t r = 0; r < joint.size(); ++r)
    for (size_t c = 0; c < cols; ++c) {
      row_sum[r] += joint[r][c];
      col_sum[c] += joint[r][c];
      total += joint[r][c];
    }
  if (total <= 0) return 0.0;
  double mi = 0;
  for (size_t r = 0; r < joint.size(); ++r)
    for (size_t c = 0; c < cols; ++c) {
      if (joint[r][c] == 0) continue;
      double p = joint[r][c] / total;
      mi += p * std::log2(p * total * total / (row_sum[r] * col_sum[c]));
    }
  return std::max(0.0, mi);  // rounding can leave -1e-17
}

double LayerStats::pair_share(int64_t a, int64_t b) const {
  return safe_div(double(pair_counts.at(a * info.experts + b)), double(tokens));
}

double LayerStats::pair_lift(int64_t a, int64_t b) const {
  double sel_a = pair_share(a, a), sel_b = pair_share(b, b);
  return safe_div(pair_share(a, b), sel_a * sel_b);
}

double LayerStats::task_share(size_t task, int64_t e) const {
  const auto& counts = task_topk_counts.at(task);
  double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  return safe_div(double(counts.at(e)), total);
}

int64_t LayerStats::task_tokens(size_t task) const {
  const auto& counts = task_top1_counts.at(task);
  return std::accumulate(counts.begin(), counts.end(), int64_t(0));
}

std::vector<std::string> TraceStats::projections() const {
  std::vector<std::string> out;
  for (const auto& l : layers)
    if (std::find(out.begin(), out.end(), l.projection) == out.end()) out.push_back(l.projection);
  return out;
}

std::vector<size_t> TraceStats::layers_of(const std::string& projection) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].projection == projection) out.push_back(i);
  return out;
}

// ---- accumulation ------------------------------------------------------------------------------

StatsBuilder::StatsBuilder(std::vector<TraceLayer> layers, StatsOptions options) {
  if (options.dead_threshold < 0 || options.dead_threshold > 1)
    fail_usage("dead threshold {} must be in [0, 1] (a fraction of the uniform share)",
               options.dead_threshold);
  stats_.options = options;
  for (auto& info : layers) {
    LayerStats l;
    l.layer = layer_index(info.name);
    l.projection = projection_name(info.name);
    const auto e = info.experts;
    l.top1_counts.assign(e, 0);
    l.topk_counts.assign(e, 0);
    l.gate_sums.assign(e, 0.0);
    l.pair_counts.assign(e * e, 0);
    l.info = std::move(info);
    stats_.layers.push_back(std::move(l));
  }
}

void StatsBuilder::add(const TraceExample& example) {
  auto [it, fresh] = task_index_.emplace(example.task, stats_.tasks.size());
  if (fresh) {
    stats_.tasks.push_back({example.task, 0, 0});
    for (auto& l : stats_.layers) {
      l.task_topk_counts.emplace_back(l.info.experts, 0);
      l.task_top1_counts.emplace_back(l.info.experts, 0);
    }
  }
  const size_t task = it->second;
  stats_.tasks[task].examples += 1;
  stats_.tasks[task].tokens += example.tokens;
  stats_.examples += 1;
  stats_.tokens += example.tokens;
  if (example.experts.size() != stats_.layers.size())
    fail("route stats: example '{}' has {} layers, the trace {}", example.id,
         example.experts.size(), stats_.layers.size());
  for (size_t li = 0; li < stats_.layers.size(); ++li) {
    auto& l = stats_.layers[li];
    const int64_t k = l.info.top_k, e_count = l.info.experts;
    const auto& ids = example.experts[li];
    const auto& gates = example.gates[li];
    auto& task_topk = l.task_topk_counts[task];
    auto& task_top1 = l.task_top1_counts[task];
    l.tokens += example.tokens;
    for (int64_t t = 0; t < example.tokens; ++t) {
      const uint16_t* row = ids.data() + t * k;
      const float* g = gates.data() + t * k;
      // Slot 0 holds the highest gate by contract; recompute so that a writer with ties or another
      // order still gets the right top-1.
      int64_t best = 0;
      for (int64_t j = 1; j < k; ++j)
        if (g[j] > g[best]) best = j;
      l.top1_counts[row[best]] += 1;
      task_top1[row[best]] += 1;
      for (int64_t j = 0; j < k; ++j) {
        l.topk_counts[row[j]] += 1;
        task_topk[row[j]] += 1;
        l.gate_sums[row[j]] += g[j];
        l.pair_counts[row[j] * e_count + row[j]] += 1;
        for (int64_t m = j + 1; m < k; ++m) {
          if (row[m] == row[j]) continue;  // a duplicate id is not a pair
          l.pair_counts[row[j] * e_count + row[m]] += 1;
          l.pair_counts[row[m] * e_count + row[j]] += 1;
        }
      }
    }
  }
}

TraceStats StatsBuilder::finalize() {
  const auto& opt = stats_.options;
  std::vector<int64_t> task_tokens;
  for (const auto& t : stats_.tasks) task_tokens.push_back(t.tokens);
  for (auto& l : stats_.layers) {
    const int64_t e_count = l.info.experts;
    const double uniform = 1.0 / double(e_count);
    l.top1_share = shares(l.top1_counts, double(l.tokens));
    l.topk_share = shares(l.topk_counts, double(l.tokens) * l.info.top_k);
    l.mean_gate.assign(e_count, 0.0);
    l.dead.assign(e_count, false);
    for (int64_t e = 0; e < e_count; ++e) {
      l.mean_gate[e] = safe_div(l.gate_sums[e], double(l.topk_counts[e]));
      l.dead[e] = l.tokens > 0 && l.topk_share[e] < opt.dead_threshold * uniform;
    }
    if (l.tokens > 0) {
      l.balance = balance_figures(l.topk_share);
      l.top1_balance = balance_figures(l.top1_share);
      auto max_it = std::max_element(l.top1_share.begin(), l.top1_share.end());
      l.max_top1_expert = max_it - l.top1_share.begin();
      l.max_top1_share = *max_it;
      l.collapsed = l.max_top1_share > opt.collapse_threshold;
    }
    l.mi_bits = mutual_information_bits(l.task_topk_counts);
    l.mi_top1_bits = mutual_information_bits(l.task_top1_counts);
    // H(task) over this layer's assignments: every layer sees every token, so the task weights
    // are the token counts.
    const double h_task = entropy_bits(task_tokens);
    l.mi_norm = h_task > 0 ? std::min(1.0, l.mi_bits / h_task) : 0.0;
  }
  return std::move(stats_);
}

TraceStats compute_stats(const std::filesystem::path& trace, const StatsOptions& options) {
  RouteTraceReader reader(trace);
  StatsBuilder builder(reader.layers(), options);
  TraceExample example;
  while (reader.next(example)) builder.add(example);
  auto stats = builder.finalize();
  stats.source = trace;
  stats.meta = reader.meta();
  return stats;
}

// ---- comparison --------------------------------------------------------------------------------

TraceComparison compare_stats(const TraceStats& a, const TraceStats& b) {
  TraceComparison out;
  out.source_a = a.source;
  out.source_b = b.source;
  std::map<std::string, const LayerStats*> by_name;
  for (const auto& l : b.layers) by_name[l.info.name] = &l;
  std::map<std::string, bool> seen;
  for (const auto& la : a.layers) {
    auto it = by_name.find(la.info.name);
    if (it == by_name.end()) {
      out.only_a.push_back(la.info.name);
      continue;
    }
    seen[la.info.name] = true;
    const auto& lb = *it->second;
    if (la.info.experts != lb.info.experts)
      fail_usage(
          "cannot compare '{}' with '{}': layer '{}' has {} experts in one and {} in the other",
          a.source.string(), b.source.string(), la.info.name, la.info.experts, lb.info.experts);
    LayerComparison c;
    c.name = la.info.name;
    c.layer = la.layer;
    c.projection = la.projection;
    c.cv_a = la.balance.cv;
    c.cv_b = lb.balance.cv;
    double best = -1;
    for (int64_t e = 0; e < la.info.experts; ++e) {
      ExpertShift s{e, la.topk_share[e], lb.topk_share[e]};
      c.tv += 0.5 * std::abs(s.delta());
      c.top1_tv += 0.5 * std::abs(lb.top1_share[e] - la.top1_share[e]);
      double m = 0.5 * (s.share_a + s.share_b);
      if (s.share_a > 0) c.js_bits += 0.5 * s.share_a * std::log2(s.share_a / m);
      if (s.share_b > 0) c.js_bits += 0.5 * s.share_b * std::log2(s.share_b / m);
      if (std::abs(s.delta()) > best) {
        best = std::abs(s.delta());
        c.moved_most = e;
      }
      c.experts.push_back(s);
    }
    c.js_bits = std::max(0.0, c.js_bits);
    out.layers.push_back(std::move(c));
  }
  for (const auto& lb : b.layers)
    if (!seen.count(lb.info.name)) out.only_b.push_back(lb.info.name);
  if (out.layers.empty())
    fail_usage("cannot compare '{}' with '{}': they share no MoLoRA layer", a.source.string(),
               b.source.string());
  return out;
}

// ---- JSON and text -----------------------------------------------------------------------------

namespace {

json layer_json(const TraceStats& stats, const LayerStats& l) {
  json experts = json::array();
  for (int64_t e = 0; e < l.info.experts; ++e)
    experts.push_back({{"expert", e},
                       {"top1_share", l.top1_share[e]},
                       {"topk_share", l.topk_share[e]},
                       {"mean_gate", l.mean_gate[e]},
                       {"dead", bool(l.dead[e])}});
  json dead = json::array();
  for (int64_t e = 0; e < l.info.experts; ++e)
    if (l.dead[e]) dead.push_back(e);
  json tasks = json::object();
  for (size_t t = 0; t < stats.tasks.size(); ++t) {
    json row = json::array();
    for (int64_t e = 0; e < l.info.experts; ++e) row.push_back(l.task_share(t, e));
    tasks[stats.tasks[t].name] = std::move(row);
  }
  json pairs = json::array();
  for (int64_t a = 0; a < l.info.experts; ++a) {
    json row = json::array();
    for (int64_t b = 0; b < l.info.experts; ++b)
      row.push_back(a == b ? int64_t(0) : l.pair_counts[a * l.info.experts + b]);
    pairs.push_back(std::move(row));
  }
  return {{"name", l.info.name},
          {"layer", l.layer},
          {"projection", l.projection},
          {"experts", l.info.experts},
          {"top_k", l.info.top_k},
          {"tokens", l.tokens},
          {"balance",
           {{"cv", l.balance.cv},
            {"max_over_mean", l.balance.max_over_mean},
            {"entropy_norm", l.balance.entropy_norm},
            {"top1_cv", l.top1_balance.cv},
            {"top1_max_share", l.max_top1_share},
            {"top1_max_expert", l.max_top1_expert}}},
          {"collapsed", l.collapsed},
          {"dead_experts", std::move(dead)},
          {"mi_bits", l.mi_bits},
          {"mi_norm", l.mi_norm},
          {"mi_top1_bits", l.mi_top1_bits},
          {"expert_stats", std::move(experts)},
          {"task_shares", std::move(tasks)},
          {"pair_counts", std::move(pairs)}};
}

std::string percent(double v) {
  return fmt::format("{:.1f}%", 100.0 * v);
}

}  // namespace

json stats_to_json(const TraceStats& stats, const TraceComparison* comparison) {
  json tasks = json::array();
  for (const auto& t : stats.tasks)
    tasks.push_back({{"name", t.name}, {"examples", t.examples}, {"tokens", t.tokens}});
  json layers = json::array();
  for (const auto& l : stats.layers) layers.push_back(layer_json(stats, l));
  // Per projection, each task's expert distribution averaged over the projection's layers.
  json projections = json::array();
  for (const auto& p : stats.projections()) {
    auto idx = stats.layers_of(p);
    json by_task = json::object();
    for (size_t t = 0; t < stats.tasks.size(); ++t) {
      std::vector<double> mean(stats.layers[idx[0]].info.experts, 0.0);
      bool same_e = true;
      for (size_t i : idx) {
        if (stats.layers[i].info.experts != int64_t(mean.size())) {
          same_e = false;
          break;
        }
        for (size_t e = 0; e < mean.size(); ++e)
          mean[e] += stats.layers[i].task_share(t, e) / idx.size();
      }
      if (same_e) by_task[stats.tasks[t].name] = mean;
    }
    double mi = 0;
    for (size_t i : idx) mi += stats.layers[i].mi_bits / idx.size();
    projections.push_back({{"projection", p},
                           {"layers", idx.size()},
                           {"mean_mi_bits", mi},
                           {"task_shares_mean", std::move(by_task)}});
  }
  json out = {{"format", "ming-route-stats"},
              {"version", 1},
              {"trace", stats.source.string()},
              {"meta", stats.meta},
              {"examples", stats.examples},
              {"tokens", stats.tokens},
              {"dead_threshold", stats.options.dead_threshold},
              {"collapse_threshold", stats.options.collapse_threshold},
              {"tasks", std::move(tasks)},
              {"projections", std::move(projections)},
              {"layers", std::move(layers)}};
  if (comparison) {
    json cl = json::array();
    for (const auto& c : comparison->layers) {
      json shifts = json::array();
      for (const auto& s : c.experts)
        shifts.push_back({{"expert", s.expert},
                          {"share_a", s.share_a},
                          {"share_b", s.share_b},
                          {"delta", s.delta()}});
      cl.push_back({{"name", c.name},
                    {"layer", c.layer},
                    {"projection", c.projection},
                    {"tv", c.tv},
                    {"js_bits", c.js_bits},
                    {"top1_tv", c.top1_tv},
                    {"cv_a", c.cv_a},
                    {"cv_b", c.cv_b},
                    {"moved_most", c.moved_most},
                    {"experts", std::move(shifts)}});
    }
    out["compare"] = {{"trace_a", comparison->source_a.string()},
                      {"trace_b", comparison->source_b.string()},
                      {"only_a", comparison->only_a},
                      {"only_b", comparison->only_b},
                      {"layers", std::move(cl)}};
  }
  return out;
}

std::string summary_text(const TraceStats& stats, const TraceComparison* comparison,
                         const TraceStats* other, size_t top_layers) {
  std::string s;
  auto line = [&](const std::string& text) { s += text + "\n"; };
  int64_t max_e = 0, max_k = 0;
  for (const auto& l : stats.layers) {
    max_e = std::max(max_e, l.info.experts);
    max_k = std::max(max_k, l.info.top_k);
  }
  line(fmt::format(
      "trace {}: {} examples, {} tokens, {} task{}, {} MoLoRA layers ({} projection{}), "
      "up to {} experts, top-{}",
      stats.source.string(), stats.examples, stats.tokens, stats.tasks.size(),
      stats.tasks.size() == 1 ? "" : "s", stats.layers.size(), stats.projections().size(),
      stats.projections().size() == 1 ? "" : "s", max_e, max_k));
  for (const auto& t : stats.tasks)
    line(fmt::format("  task {:<24} {:>7} examples {:>10} tokens",
                     t.name.empty() ? "(none)" : t.name, t.examples, t.tokens));
  if (stats.layers.empty() || stats.tokens == 0) {
    line("no routed tokens: nothing to summarise");
    return s;
  }
  // Balance overview per projection.
  line("balance (load = top-k share; CV 0 = even, entropy 1 = even):");
  for (const auto& p : stats.projections()) {
    double cv = 0, ent = 0, worst = -1;
    std::string worst_name;
    auto idx = stats.layers_of(p);
    for (size_t i : idx) {
      const auto& l = stats.layers[i];
      cv += l.balance.cv / idx.size();
      ent += l.balance.entropy_norm / idx.size();
      if (l.balance.cv > worst) {
        worst = l.balance.cv;
        worst_name = l.info.name;
      }
    }
    line(fmt::format("  {:<12} mean CV {:.3f}  mean entropy {:.3f}  worst CV {:.3f} ({})", p, cv,
                     ent, worst, worst_name));
  }
  int64_t collapsed = 0, dead_layers = 0, dead_total = 0;
  for (const auto& l : stats.layers) {
    if (l.collapsed) {
      ++collapsed;
      line(fmt::format("COLLAPSE {}: expert {} takes {} of top-1 choices", l.info.name,
                       l.max_top1_expert, percent(l.max_top1_share)));
    }
  }
  for (const auto& l : stats.layers) {
    std::vector<std::string> dead;
    for (int64_t e = 0; e < l.info.experts; ++e)
      if (l.dead[e]) dead.push_back(fmt::format("{} ({})", e, percent(l.topk_share[e])));
    if (!dead.empty()) {
      ++dead_layers;
      dead_total += dead.size();
      line(fmt::format("DEAD {}: expert{} {} (threshold {} of the load)", l.info.name,
                       dead.size() == 1 ? "" : "s", fmt::join(dead, ", "),
                       percent(stats.options.dead_threshold / l.info.experts)));
    }
  }
  line(fmt::format(
      "{} collapsed layer{} (one expert > {} of top-1), {} dead expert{} in {} layer{}", collapsed,
      collapsed == 1 ? "" : "s", percent(stats.options.collapse_threshold), dead_total,
      dead_total == 1 ? "" : "s", dead_layers, dead_layers == 1 ? "" : "s"));
  if (stats.tasks.size() > 1) {
    std::vector<size_t> order(stats.layers.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return stats.layers[a].mi_bits > stats.layers[b].mi_bits;
    });
    line(fmt::format("highest task-expert mutual information (of H(task) = {:.3f} bits):", [&] {
      std::vector<int64_t> tok;
      for (const auto& t : stats.tasks) tok.push_back(t.tokens);
      return entropy_bits(tok);
    }()));
    for (size_t i = 0; i < std::min(top_layers, order.size()); ++i) {
      const auto& l = stats.layers[order[i]];
      line(fmt::format("  {:<40} MI {:.3f} bits (normalised {:.3f}, top-1 {:.3f} bits)",
                       l.info.name, l.mi_bits, l.mi_norm, l.mi_top1_bits));
    }
  } else {
    line("one task only: no task-expert mutual information");
  }
  if (comparison) {
    line(fmt::format(
        "compare with {}{}:", comparison->source_b.string(),
        other ? fmt::format(" ({} examples, {} tokens)", other->examples, other->tokens) : ""));
    std::vector<size_t> order(comparison->layers.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return comparison->layers[a].tv > comparison->layers[b].tv;
    });
    double mean_tv = 0;
    for (const auto& c : comparison->layers) mean_tv += c.tv / comparison->layers.size();
    line(fmt::format("  {} shared layers, mean load total variation {:.3f}",
                     comparison->layers.size(), mean_tv));
    for (size_t i = 0; i < std::min(top_layers, order.size()); ++i) {
      const auto& c = comparison->layers[order[i]];
      const auto& m = c.experts[c.moved_most];
      line(fmt::format(
          "  {:<40} TV {:.3f}  JS {:.3f} bits  CV {:.3f} -> {:.3f}  expert {} {} -> {}", c.name,
          c.tv, c.js_bits, c.cv_a, c.cv_b, m.expert, percent(m.share_a), percent(m.share_b)));
    }
    if (!comparison->only_a.empty() || !comparison->only_b.empty())
      line(fmt::format("  {} layer(s) only in the first trace, {} only in the second",
                       comparison->only_a.size(), comparison->only_b.size()));
  }
  return s;
}

}  // namespace ming::route
