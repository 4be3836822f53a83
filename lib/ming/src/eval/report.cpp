#include "ming/eval/report.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "ming/core/error.h"
#include "ming/eval/promptcblue.h"
#include "ming/io/json.h"

namespace ming::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// NaN and infinities are not JSON: they become null.
json number(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

double get_number(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number())
    fail_usage("{}: field '{}': missing or not a number", where, key);
  return j[key].get<double>();
}

std::string get_string(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string())
    fail_usage("{}: field '{}': missing or not a string", where, key);
  return j[key].get<std::string>();
}

Metric metric_named(const std::string& name, const std::string& where) {
  Metric m;
  if (!parse_metric(name, &m)) fail_usage("{}: unknown metric '{}'", where, name);
  return m;
}

bool is_fraction(Metric m) {
  return m != Metric::perplexity;
}

std::string format_value(Metric m, double v) {
  if (!std::isfinite(v)) return "n/a";
  return is_fraction(m) ? fmt::format("{:.2f}", 100 * v) : fmt::format("{:.3f}", v);
}

double json_value(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
}

std::string pad(const std::string& s, size_t width) {
  // Width in characters, not bytes, so Chinese sub-task names line up.
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return s + std::string(width > chars ? width - chars : 0, ' ');
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) {
      size_t chars = 0;
      for (unsigned char ch : r[c]) chars += (ch & 0xC0) != 0x80;
      if (widths.size() <= c) widths.push_back(0);
      widths[c] = std::max(widths[c], chars);
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c)
      line += (c ? "  " : "") + (c + 1 < r.size() ? pad(r[c], widths[c]) : r[c]);
    out += line + "\n";
  }
  return out;
}

// task -> id -> that example's stats object for `metric`, from a predictions.jsonl.
using PredictionStats = std::map<std::string, std::map<std::string, json>>;

PredictionStats read_prediction_stats(const fs::path& path) {
  PredictionStats out;
  io::for_each_jsonl(path, [&](const json& rec, int64_t line) {
    const std::string where = fmt::format("{} line {}", path.string(), line);
    const std::string task = get_string(rec, "task", where);
    const std::string id = get_string(rec, "id", where);
    if (rec.contains("stats") && rec["stats"].is_object()) out[task][id] = rec["stats"];
  });
  return out;
}

}  // namespace

json stats_to_json(Metric metric, const ExampleStats& s) {
  switch (metric) {
    case Metric::accuracy:
    case Metric::exact_match:
    case Metric::rouge1:
    case Metric::rouge2:
    case Metric::rougeL:
    case Metric::perplexity:
      return {{"value", s.value}, {"count", s.count}};
    case Metric::f1_micro:
    case Metric::f1_macro:
    case Metric::f1_weighted:
      return {{"gold", s.gold_label}, {"pred", s.pred_label}};
    case Metric::tuple_f1:
      return {{"tp", s.tp}, {"fp", s.fp}, {"fn", s.fn}};
    case Metric::bleu4:
      return {{"matches", s.matches},
              {"totals", s.totals},
              {"hyp_len", s.hyp_len},
              {"ref_len", s.ref_len}};
    case Metric::promptcblue: {
      json j = stats_to_json(s.group_metric, s);
      j["group"] = s.group;
      j["group_metric"] = metric_name(s.group_metric);
      return j;
    }
  }
  return json::object();
}

ExampleStats stats_from_json(Metric metric, const json& j, const std::string& where) {
  ExampleStats s;
  switch (metric) {
    case Metric::accuracy:
    case Metric::exact_match:
    case Metric::rouge1:
    case Metric::rouge2:
    case Metric::rougeL:
    case Metric::perplexity:
      s.value = get_number(j, "value", where);
      s.count = get_number(j, "count", where);
      break;
    case Metric::f1_micro:
    case Metric::f1_macro:
    case Metric::f1_weighted:
      s.gold_label = get_string(j, "gold", where);
      s.pred_label = get_string(j, "pred", where);
      break;
    case Metric::tuple_f1:
      s.tp = static_cast<int64_t>(get_number(j, "tp", where));
      s.fp = static_cast<int64_t>(get_number(j, "fp", where));
      s.fn = static_cast<int64_t>(get_number(j, "fn", where));
      break;
    case Metric::bleu4:
      for (const char* key : {"matches", "totals"}) {
        if (!j.contains(key) || !j[key].is_array() || j[key].size() != 4)
          fail_usage("{}: field '{}': expected 4 numbers", where, key);
        for (size_t n = 0; n < 4; ++n)
          (std::string(key) == "matches" ? s.matches : s.totals)[n] = j[key][n].get<double>();
      }
      s.hyp_len = get_number(j, "hyp_len", where);
      s.ref_len = get_number(j, "ref_len", where);
      break;
    case Metric::promptcblue: {
      const Metric inner = metric_named(get_string(j, "group_metric", where), where);
      if (inner == Metric::promptcblue)
        fail_usage("{}: group_metric cannot be promptcblue itself", where);
      s = stats_from_json(inner, j, where);
      s.group = get_string(j, "group", where);
      s.group_metric = inner;
      break;
    }
  }
  return s;
}

json prediction_json(const TaskSpec& spec, const ExampleResult& r) {
  json j = {{"id", r.id},         {"task", r.task},     {"line", r.line}, {"prompt", r.prompt},
            {"output", r.output}, {"parsed", r.parsed}, {"gold", r.gold}};
  if (r.correct) j["correct"] = *r.correct;
  if (!r.categories.empty()) j["categories"] = r.categories;
  // The example's own value of the primary metric (1/0 for accuracy, its F1, its perplexity).
  if (!spec.metrics.empty() && !r.stats.empty())
    j["score"] = number(aggregate(spec.metrics[0], {r.stats[0]}));
  switch (spec.scorer) {
    case Scorer::loglik_choice: {
      json choices = json::array();
      for (const auto& c : r.choices)
        choices.push_back({{"key", c.key},
                           {"logprob", number(c.logprob)},
                           {"tokens", c.tokens},
                           {"greedy", c.greedy}});
      j["choices"] = std::move(choices);
      j["chosen"] = r.chosen;
      break;
    }
    case Scorer::generate:
      j["finish"] = r.finish;
      j["output_tokens"] = r.output_tokens.size();
      break;
    case Scorer::perplexity:
      j["nll"] = number(r.nll);
      j["tokens"] = r.n_tokens;
      break;
  }
  json stats = json::object();
  for (size_t k = 0; k < spec.metrics.size() && k < r.stats.size(); ++k)
    stats[metric_name(spec.metrics[k])] = stats_to_json(spec.metrics[k], r.stats[k]);
  j["stats"] = std::move(stats);
  return j;
}

TaskReport summarize_task(const TaskSpec& spec, const std::vector<ExampleResult>& results,
                          double seconds, const BootstrapOptions& o) {
  TaskReport t;
  t.name = spec.name;
  t.scorer = spec.scorer;
  t.n = results.size();
  t.seconds = seconds;
  for (size_t k = 0; k < spec.metrics.size(); ++k) {
    MetricValue mv;
    mv.metric = spec.metrics[k];
    const auto rows = metric_rows(results, k);
    if (rows.empty()) {
      mv.ci = {std::nan(""), std::nan(""), std::nan("")};
    } else {
      mv.ci = bootstrap_ci(mv.metric, rows, o.n_resamples, o.seed, o.level);
    }
    if (mv.metric == Metric::promptcblue) {
      std::map<std::string, std::vector<size_t>> groups;
      for (size_t i = 0; i < rows.size(); ++i) groups[rows[i].group].push_back(i);
      for (const auto& [g, members] : groups)
        t.promptcblue[g] = aggregate(rows[members[0]].group_metric, rows, members);
      t.promptcblue_rows = rows;
    }
    t.metrics.push_back(mv);
  }
  for (const auto& r : results) {
    t.prompt_tokens += static_cast<int64_t>(r.prompt_tokens.size());
    t.prompt_byte_pieces += r.prompt_byte_pieces;
  }
  if (!spec.metrics.empty() && !results.empty()) {
    const auto rows = metric_rows(results, 0);
    for (const auto& field : spec.categories) {
      std::map<std::string, std::vector<size_t>> groups;
      for (size_t i = 0; i < results.size(); ++i)
        groups[results[i].categories.at(field)].push_back(i);
      for (const auto& [value, members] : groups)
        t.breakdowns[field][value] = {members.size(), aggregate(spec.metrics[0], rows, members)};
    }
  }
  return t;
}

json metrics_json(const std::vector<TaskReport>& tasks, const json& run,
                  const BootstrapOptions& o) {
  json doc = {{"format", "ming-eval-metrics"}, {"version", 1}, {"run", run}};
  json jt = json::object();
  double primary_sum = 0;
  json included = json::array(), excluded = json::array();
  std::vector<ExampleStats> cblue_rows;
  for (const auto& t : tasks) {
    json metrics = json::object();
    for (const auto& m : t.metrics)
      metrics[metric_name(m.metric)] = {
          {"value", number(m.ci.point)}, {"ci_low", number(m.ci.lo)}, {"ci_high", number(m.ci.hi)}};
    json entry = {{"n", t.n},
                  {"scorer", scorer_name(t.scorer)},
                  {"primary", t.metrics.empty() ? "" : metric_name(t.metrics[0].metric)},
                  {"metrics", metrics},
                  {"seconds", t.seconds},
                  {"examples_per_second", t.seconds > 0 ? t.n / t.seconds : 0.0}};
    if (t.prompt_tokens > 0)
      entry["prompts"] = {
          {"tokens", t.prompt_tokens},
          {"byte_pieces", t.prompt_byte_pieces},
          {"byte_piece_fraction", double(t.prompt_byte_pieces) / double(t.prompt_tokens)}};
    if (!t.breakdowns.empty()) {
      json b = json::object();
      for (const auto& [field, values] : t.breakdowns)
        for (const auto& [value, nv] : values)
          b[field][value] = {{"n", nv.first}, {"value", number(nv.second)}};
      entry["breakdowns"] = std::move(b);
    }
    if (!t.promptcblue.empty()) {
      entry["promptcblue"] = t.promptcblue;
      cblue_rows.insert(cblue_rows.end(), t.promptcblue_rows.begin(), t.promptcblue_rows.end());
    }
    jt[t.name] = std::move(entry);
    // Perplexity is not on the 0..1 scale of the other metrics: it stays out of the mean.
    if (t.metrics.empty() || t.metrics[0].metric == Metric::perplexity ||
        !std::isfinite(t.metrics[0].ci.point)) {
      excluded.push_back(t.name);
    } else {
      primary_sum += t.metrics[0].ci.point;
      included.push_back(t.name);
    }
  }
  doc["tasks"] = std::move(jt);
  doc["overall"] = {
      {"primary_mean", included.empty() ? json(nullptr) : json(primary_sum / included.size())},
      {"tasks", included},
      {"excluded", excluded}};
  if (!cblue_rows.empty()) {
    const Interval ci =
        bootstrap_ci(Metric::promptcblue, cblue_rows, o.n_resamples, o.seed, o.level);
    std::map<std::string, std::vector<size_t>> groups;
    for (size_t i = 0; i < cblue_rows.size(); ++i) groups[cblue_rows[i].group].push_back(i);
    json per_task = json::object();
    for (const auto& [g, members] : groups)
      per_task[g] = aggregate(cblue_rows[members[0]].group_metric, cblue_rows, members);
    json missing = json::array();
    for (const auto& name : promptcblue::task_datasets())
      if (!groups.count(name) && !(name == "CMeIE" && groups.count("CMeIE-V2")))
        missing.push_back(name);
    const bool complete = missing.empty();
    doc["promptcblue"] = {{"mean", complete ? number(ci.point) : json(nullptr)},
                          {"ci_low", complete ? number(ci.lo) : json(nullptr)},
                          {"ci_high", complete ? number(ci.hi) : json(nullptr)},
                          {"n_tasks", groups.size()},
                          {"per_task", per_task},
                          {"missing", missing}};
  }
  return doc;
}

std::string format_table(const json& doc) {
  std::vector<std::vector<std::string>> rows = {{"task", "n", "metric", "value [95% CI]"}};
  // Tasks in the order they ran, each with its primary metric first (JSON objects are sorted).
  std::vector<std::string> order;
  if (doc.contains("run") && doc["run"].contains("tasks"))
    for (const auto& n : doc["run"]["tasks"])
      if (doc.at("tasks").contains(n.get<std::string>())) order.push_back(n.get<std::string>());
  if (order.size() != doc.at("tasks").size()) {
    order.clear();
    for (const auto& [name, t] : doc.at("tasks").items()) order.push_back(name);
  }
  for (const auto& name : order) {
    const json& t = doc.at("tasks").at(name);
    std::vector<std::string> metric_order;
    const std::string primary = t.value("primary", "");
    if (t.at("metrics").contains(primary)) metric_order.push_back(primary);
    for (const auto& [mname, m] : t.at("metrics").items())
      if (mname != primary) metric_order.push_back(mname);
    for (const auto& mname : metric_order) {
      const json& m = t.at("metrics").at(mname);
      Metric metric = metric_named(mname, "metrics.json");
      const double v = json_value(m, "value"), lo = json_value(m, "ci_low"),
                   hi = json_value(m, "ci_high");
      rows.push_back({name, std::to_string(t.value("n", 0)), mname,
                      fmt::format("{} [{}, {}]", format_value(metric, v), format_value(metric, lo),
                                  format_value(metric, hi))});
    }
    if (t.contains("promptcblue"))
      for (const auto& [sub, v] : t["promptcblue"].items())
        rows.push_back({"  " + sub, "", metric_name(promptcblue::task_metric(sub)),
                        format_value(Metric::accuracy, v.get<double>())});
    if (t.contains("breakdowns")) {
      const Metric metric = metric_named(primary, "metrics.json");
      for (const auto& [field, values] : t["breakdowns"].items())
        for (const auto& [value, b] : values.items())
          rows.push_back({"  " + field + ": " + value, std::to_string(b.value("n", 0)), primary,
                          format_value(metric, json_value(b, "value"))});
    }
  }
  std::string out = table(rows);
  const json& overall = doc.value("overall", json::object());
  if (overall.contains("primary_mean") && overall["primary_mean"].is_number())
    out += fmt::format("overall: {} (mean primary metric of {} tasks{})\n",
                       format_value(Metric::accuracy, overall["primary_mean"].get<double>()),
                       overall["tasks"].size(),
                       overall["excluded"].empty() ? ""
                                                   : fmt::format("; perplexity tasks left out: {}",
                                                                 overall["excluded"].dump()));
  if (doc.contains("promptcblue")) {
    const json& p = doc["promptcblue"];
    std::vector<std::string> missing;
    for (const auto& m : p.value("missing", json::array())) missing.push_back(m.get<std::string>());
    if (missing.empty())
      out += fmt::format("promptcblue: {} [{}, {}] (mean of the 16 sub-tasks)\n",
                         format_value(Metric::accuracy, json_value(p, "mean")),
                         format_value(Metric::accuracy, json_value(p, "ci_low")),
                         format_value(Metric::accuracy, json_value(p, "ci_high")));
    else
      out += fmt::format(
          "promptcblue: no 16-task mean: {} of 16 sub-tasks scored, missing {} (per-task scores "
          "above)\n",
          p.value("n_tasks", 0), fmt::join(missing, ", "));
  }
  return out;
}

Comparison compare_runs(const fs::path& path_a, const fs::path& path_b, const BootstrapOptions& o) {
  auto load = [](const fs::path& p) {
    if (!fs::is_regular_file(p)) fail_usage("--compare: {}: no such file", p.string());
    json doc = io::read_json(p);
    if (!doc.is_object() || !doc.contains("tasks") || !doc["tasks"].is_object())
      fail_usage("--compare: {}: not a ming-eval metrics.json (no \"tasks\" object)", p.string());
    return doc;
  };
  const json a = load(path_a), b = load(path_b);
  const fs::path pred_a = path_a.parent_path() / "predictions.jsonl";
  const fs::path pred_b = path_b.parent_path() / "predictions.jsonl";
  const bool have_preds = fs::is_regular_file(pred_a) && fs::is_regular_file(pred_b);
  PredictionStats stats_a, stats_b;
  if (have_preds) {
    stats_a = read_prediction_stats(pred_a);
    stats_b = read_prediction_stats(pred_b);
  }

  Comparison c;
  c.level = o.level;
  for (const auto& [name, ta] : a["tasks"].items())
    if (!b["tasks"].contains(name)) c.only_a.push_back(name);
  for (const auto& [name, tb] : b["tasks"].items())
    if (!a["tasks"].contains(name)) c.only_b.push_back(name);

  for (const auto& [name, ta] : a["tasks"].items()) {
    if (!b["tasks"].contains(name)) continue;
    const json& tb = b["tasks"][name];
    const std::string where_a = fmt::format("{}: tasks.{}", path_a.string(), name);
    TaskComparison tc;
    tc.task = name;
    tc.metric = get_string(ta, "primary", where_a);
    const Metric metric = metric_named(tc.metric, where_a);
    const std::string where_b = fmt::format("{}: tasks.{}", path_b.string(), name);
    if (!tb.contains("metrics") || !tb["metrics"].contains(tc.metric))
      fail_usage("{}: has no metric '{}' (the primary metric in {})", where_b, tc.metric,
                 path_a.string());
    const json& ma = ta.at("metrics").at(tc.metric);
    const json& mb = tb["metrics"][tc.metric];
    tc.a = json_value(ma, "value");
    tc.b = json_value(mb, "value");
    tc.n_a = ta.value("n", 0);
    tc.n_b = tb.value("n", 0);

    // Pair by id on the examples both runs scored.
    std::vector<ExampleStats> rows_a, rows_b;
    if (have_preds && stats_a.count(name) && stats_b.count(name)) {
      for (const auto& [id, sa] : stats_a[name]) {
        auto it = stats_b[name].find(id);
        if (it == stats_b[name].end() || !sa.contains(tc.metric) || !it->second.contains(tc.metric))
          continue;
        rows_a.push_back(stats_from_json(metric, sa[tc.metric],
                                         fmt::format("{}: id '{}'", pred_a.string(), id)));
        rows_b.push_back(stats_from_json(metric, it->second[tc.metric],
                                         fmt::format("{}: id '{}'", pred_b.string(), id)));
      }
    }
    if (!rows_a.empty()) {
      const PairedResult pr =
          paired_bootstrap(metric, rows_a, rows_b, o.n_resamples, o.seed, o.level);
      tc.paired = true;
      tc.n_paired = rows_a.size();
      tc.a = pr.a;
      tc.b = pr.b;
      tc.delta = pr.delta;
      tc.p_value = pr.p_value;
      tc.significant = pr.p_value < 1 - o.level;
      if (tc.n_paired < std::max(tc.n_a, tc.n_b))
        tc.note = fmt::format("paired on the {} ids both runs scored ({} in A, {} in B)",
                              tc.n_paired, tc.n_a, tc.n_b);
    } else {
      tc.delta.point = tc.a - tc.b;
      tc.delta.lo = tc.delta.hi = std::nan("");
      const double alo = json_value(ma, "ci_low"), ahi = json_value(ma, "ci_high");
      const double blo = json_value(mb, "ci_low"), bhi = json_value(mb, "ci_high");
      tc.significant = alo > bhi || blo > ahi;
      tc.note = !have_preds ? fmt::format(
                                  "unpaired: no predictions.jsonl beside {}; significance "
                                  "from CI overlap",
                                  fs::is_regular_file(pred_a) ? path_b.string() : path_a.string())
                            : "unpaired: no example ids in common with per-example stats; "
                              "significance from CI overlap";
    }
    c.tasks.push_back(std::move(tc));
  }
  return c;
}

std::string format_comparison(const Comparison& c, const std::string& name_a,
                              const std::string& name_b) {
  std::vector<std::vector<std::string>> rows = {
      {"task", "metric", "A", "B", "A-B [95% CI]", "p", "significant"}};
  std::vector<std::string> notes;
  for (const auto& t : c.tasks) {
    Metric m = metric_named(t.metric, "comparison");
    const std::string delta =
        std::isfinite(t.delta.lo)
            ? fmt::format("{:+.2f} [{:+.2f}, {:+.2f}]", (is_fraction(m) ? 100 : 1) * t.delta.point,
                          (is_fraction(m) ? 100 : 1) * t.delta.lo,
                          (is_fraction(m) ? 100 : 1) * t.delta.hi)
            : fmt::format("{:+.2f}", (is_fraction(m) ? 100 : 1) * t.delta.point);
    rows.push_back({t.task, t.metric, format_value(m, t.a), format_value(m, t.b), delta,
                    t.p_value ? fmt::format("{:.4f}", *t.p_value) : "n/a",
                    std::string(t.significant ? "yes" : "no") + (t.paired ? "" : " (CI overlap)")});
    if (!t.note.empty()) notes.push_back(t.task + ": " + t.note);
  }
  std::string out = fmt::format("A = {}\nB = {}\n", name_a, name_b) + table(rows);
  for (const auto& n : notes) out += "note: " + n + "\n";
  if (!c.only_a.empty()) out += fmt::format("only in A: {}\n", fmt::join(c.only_a, ", "));
  if (!c.only_b.empty()) out += fmt::format("only in B: {}\n", fmt::join(c.only_b, ", "));
  return out;
}

json comparison_json(const Comparison& c, const std::string& name_a, const std::string& name_b) {
  json tasks = json::object();
  for (const auto& t : c.tasks)
    tasks[t.task] = {{"metric", t.metric},
                     {"a", number(t.a)},
                     {"b", number(t.b)},
                     {"delta", number(t.delta.point)},
                     {"ci_low", number(t.delta.lo)},
                     {"ci_high", number(t.delta.hi)},
                     {"p_value", t.p_value ? json(*t.p_value) : json(nullptr)},
                     {"paired", t.paired},
                     {"n_paired", t.n_paired},
                     {"significant", t.significant},
                     {"note", t.note}};
  return {{"a", name_a},    {"b", name_b},        {"level", c.level},
          {"tasks", tasks}, {"only_a", c.only_a}, {"only_b", c.only_b}};
}

}  // namespace ming::eval
