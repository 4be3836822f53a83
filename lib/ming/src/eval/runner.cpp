#include "ming/eval/runner.h"

#include <chrono>
#include <memory>
#include <set>

#include "ming/adapt/adapter_io.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/core/runtime.h"
#include "ming/eval/promptcblue.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/route/trace.h"

namespace ming::eval {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string folder_name(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (n.filename().empty()) n = n.parent_path();
  std::string name = n.filename().string();
  return name.empty() || name == "." || name == ".." ? "model" : name;
}

// Periodic progress lines on stderr: every batch on a terminal, at most every 10 s otherwise.
class Progress {
 public:
  Progress(std::string task, size_t total, bool enabled)
      : task_(std::move(task)), total_(total), enabled_(enabled) {}
  void update(size_t done) {
    if (!enabled_) return;
    const double elapsed = seconds_since(start_);
    const double every = log::stderr_is_terminal() ? 0.0 : 10.0;
    if (done < total_ && elapsed - last_ < every) return;
    last_ = elapsed;
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    const double eta = rate > 0 ? (total_ - done) / rate : 0.0;
    log::info("{}: {}/{} examples ({:.1f}/s{})", task_, done, total_, rate,
              done < total_ ? fmt::format(", ETA {:.0f}s", eta) : "");
  }
  double elapsed() const { return seconds_since(start_); }

 private:
  std::string task_;
  size_t total_;
  bool enabled_;
  Clock::time_point start_ = Clock::now();
  double last_ = -1e9;
};

struct LoadedTask {
  TaskSpec spec;
  std::vector<TaskRecord> records;
};

// Tasks and their data: every user mistake surfaces before a model is loaded.
std::vector<LoadedTask> load_tasks(const RunOptions& o) {
  if (o.tasks.empty())
    fail_usage("no tasks given (--tasks NAME[,NAME...]; known tasks: {})",
               fmt::join(list_tasks(o.share_dir), ", "));
  std::vector<LoadedTask> tasks;
  std::set<std::string> seen;
  for (const auto& name : o.tasks) {
    LoadedTask t;
    t.spec = load_task_spec(name, o.share_dir);
    if (!seen.insert(t.spec.name).second)
      fail_usage("task '{}' is given twice (--tasks lists it, or two files share the name)",
                 t.spec.name);
    tasks.push_back(std::move(t));
  }
  for (auto& t : tasks) {
    const fs::path path = task_data_path(t.spec, o.suite_dir, o.split, o.data_dir);
    t.records = load_task_records(t.spec, o.suite_dir, o.split, o.data_dir);
    if (o.limit > 0 && static_cast<int64_t>(t.records.size()) > o.limit)
      t.records.resize(static_cast<size_t>(o.limit));
    if (t.records.empty()) fail_usage("task {}: no records in {}", t.spec.name, path.string());
    log::info("task {}: {} records ({}, {})", t.spec.name, t.records.size(),
              scorer_name(t.spec.scorer), path.string());
  }
  return tasks;
}

fs::path make_output_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    fail_usage("-o {}: cannot create the output folder ({})", dir.string(),
               ec ? ec.message() : "not a folder");
  return dir;
}

json run_info(const RunOptions& o, const std::vector<LoadedTask>& tasks) {
  json names = json::array();
  for (const auto& t : tasks) names.push_back(t.spec.name);
  const auto& s = o.scorer.sampling;
  return {{"tool", "ming-eval"},
          {"model", o.model_dir.string()},
          {"adapter", o.adapter_dir.empty() ? json(nullptr) : json(o.adapter_dir.string())},
          {"tasks", names},
          {"suite", o.suite_dir.string()},
          {"data", o.data_dir.empty() ? json(nullptr) : json(o.data_dir.string())},
          {"split", o.split.empty() ? json(nullptr) : json(o.split)},
          {"limit", o.limit > 0 ? json(o.limit) : json(nullptr)},
          {"prompt_format", prompt_format_name(o.scorer.prompt_format)},
          {"template", o.chat_template},
          {"choice_norm", choice_norm_name(o.scorer.choice_norm)},
          {"batch_size", o.scorer.batch_size},
          {"max_new_tokens",
           o.scorer.max_new_tokens > 0 ? json(o.scorer.max_new_tokens) : json("task")},
          {"sampling",
           {{"temperature", s.temperature},
            {"top_k", s.top_k},
            {"top_p", s.top_p},
            {"repetition_penalty", s.repetition_penalty},
            {"seed", s.seed}}},
          {"device", o.load.device.str()},
          {"dtype", o.load.dtype ? json(dtype_name(*o.load.dtype)) : json("checkpoint")},
          {"bootstrap",
           {{"resamples", o.bootstrap.n_resamples},
            {"seed", o.bootstrap.seed},
            {"level", o.bootstrap.level}}},
          {"torch", torch_version()}};
}

}  // namespace

fs::path default_output_dir(const fs::path& model_dir, const fs::path& adapter_dir) {
  std::string name = "eval-" + folder_name(model_dir);
  if (!adapter_dir.empty()) name += "-" + folder_name(adapter_dir);
  return name;
}

RunResult run_eval(const RunOptions& o) {
  if (!o.trace_routes.empty() && o.adapter_dir.empty())
    fail_usage("--trace-routes needs --adapter: routes exist only in MoLoRA adapters");
  const std::vector<LoadedTask> tasks = load_tasks(o);

  RunResult result;
  result.output_dir = make_output_dir(
      o.output_dir.empty() ? default_output_dir(o.model_dir, o.adapter_dir) : o.output_dir);

  const auto load_start = Clock::now();
  auto loaded = model::load_model(o.model_dir, o.load);
  if (o.chat_template != "auto")
    loaded.chat_template = text::ChatTemplate(text::parse_chat_template(o.chat_template));
  adapt::LoadedAdapter adapter;
  if (!o.adapter_dir.empty()) {
    adapter = adapt::load_adapter(*loaded.model, o.adapter_dir);
    loaded.model->to(o.load.device);
    log::info("attached adapter {} ({})", o.adapter_dir.string(), adapter.format);
  }
  loaded.model->eval();
  log::info("loaded {} in {:.1f}s ({} layers, {}, {})", o.model_dir.string(),
            seconds_since(load_start), loaded.config.num_hidden_layers,
            dtype_name(loaded.model->dtype()), loaded.model->device().str());

  std::shared_ptr<route::RouteTraceWriter> writer;
  if (!o.trace_routes.empty()) {
    route::RouteTraceOptions to;
    to.meta = {{"tool", "ming-eval"},
               {"model", o.model_dir.string()},
               {"adapter", o.adapter_dir.string()}};
    writer = std::make_shared<route::RouteTraceWriter>(o.trace_routes, to);
    writer->declare_layers(adapter.injected);
    if (writer->layers().empty())
      fail_usage("--trace-routes: adapter {} has no MoLoRA layers, so there are no routes to trace",
                 o.adapter_dir.string());
  }
  const int64_t max_positions = loaded.config.max_position_embeddings;

  const json info = run_info(o, tasks);
  io::AtomicFile predictions(result.output_dir / "predictions.jsonl");
  std::vector<TaskReport> reports;
  for (const auto& t : tasks) {
    Progress progress(t.spec.name, t.records.size(), o.progress);
    BatchCallback on_batch = [&](const std::vector<ExampleResult>& results, size_t begin,
                                 size_t end) {
      if (writer) {
        // Teacher-forced replay of what was scored, tagged for the trace's reader.
        std::vector<route::TokenizedExample> examples;
        for (size_t i = begin; i < end; ++i) {
          route::TokenizedExample ex;
          ex.tokens = results[i].prompt_tokens;
          ex.tokens.insert(ex.tokens.end(), results[i].output_tokens.begin(),
                           results[i].output_tokens.end());
          if (static_cast<int64_t>(ex.tokens.size()) > max_positions)
            ex.tokens.erase(ex.tokens.begin(), ex.tokens.end() - max_positions);
          ex.id = results[i].id;
          ex.task = results[i].task;
          examples.push_back(std::move(ex));
        }
        route::CollectOptions co;
        co.batch_size = o.scorer.batch_size;
        co.progress = false;
        route::collect_routes(*loaded.model, adapter.injected, examples, *writer, co);
      }
      progress.update(end);
    };
    const auto results = score_task(t.spec, t.records, loaded, o.scorer, on_batch);
    const double seconds = progress.elapsed();
    result.seconds += seconds;
    result.examples += results.size();
    for (const auto& r : results) predictions.write(prediction_json(t.spec, r).dump() + "\n");
    reports.push_back(summarize_task(t.spec, results, seconds, o.bootstrap));
    log::info("{}: {} examples in {:.1f}s ({:.2f}/s)", t.spec.name, results.size(), seconds,
              seconds > 0 ? results.size() / seconds : 0.0);
  }

  result.metrics = metrics_json(reports, info, o.bootstrap);
  // predictions.jsonl first: a metrics.json on disk always has its predictions beside it.
  predictions.commit();
  io::write_json(result.output_dir / "metrics.json", result.metrics);
  if (writer) {
    writer->close();
    log::info("route trace: {} examples, {} tokens -> {}", writer->examples_written(),
              writer->tokens_written(), o.trace_routes.string());
  }
  result.table = format_table(result.metrics);
  return result;
}

namespace {

// A prediction line's record: the task it names and the index of the record its id names.
struct PredictionTarget {
  size_t task = 0;
  size_t record = 0;
};

class PredictionIndex {
 public:
  explicit PredictionIndex(const std::vector<LoadedTask>& tasks) : tasks_(tasks) {
    for (size_t t = 0; t < tasks.size(); ++t) {
      by_name_[tasks[t].spec.name] = t;
      auto& ids = ids_.emplace_back();
      auto& subs = sample_ids_.emplace_back();
      for (size_t r = 0; r < tasks[t].records.size(); ++r) {
        const auto& rec = tasks[t].records[r];
        ids[rec.id] = r;
        const json& d = rec.data;
        if (d.contains("task_dataset") && d["task_dataset"].is_string() &&
            d.contains("sample_id") && d["sample_id"].is_string())
          subs[d["task_dataset"].get<std::string>() + "/" + d["sample_id"].get<std::string>()] = r;
      }
    }
  }

  PredictionTarget find(const std::string& task, const std::string& id,
                        const std::string& where) const {
    const size_t slash = task.find('/');
    const std::string name = task.substr(0, slash);
    const std::string sub = slash == std::string::npos ? "" : task.substr(slash + 1);
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      std::vector<std::string> known;
      for (const auto& [n, i] : by_name_) known.push_back(n);
      fail_usage("{}: field 'task': '{}' is not among --tasks ({})", where, task,
                 fmt::join(known, ", "));
    }
    const size_t t = it->second;
    const auto& spec = tasks_[t].spec;
    if (!sub.empty()) {
      if (spec.parser != AnswerParser::promptcblue || !promptcblue::is_known(sub))
        fail_usage("{}: field 'task': '{}': task {} has no sub-task '{}'{}", where, task, name, sub,
                   spec.parser == AnswerParser::promptcblue
                       ? fmt::format(" (known: {})", fmt::join(promptcblue::task_datasets(), ", "))
                       : "");
      if (auto s = sample_ids_[t].find(sub + "/" + id); s != sample_ids_[t].end())
        return {t, s->second};
    }
    auto r = ids_[t].find(id);
    if (r == ids_[t].end())
      fail_usage(
          "{}: field 'id': '{}' is not a record of task {}{} ({} records read from its data)",
          where, id, name, sub.empty() ? "" : " sub-task " + sub, tasks_[t].records.size());
    if (!sub.empty() && tasks_[t].records[r->second].data.value("task_dataset", "") != sub)
      fail_usage("{}: field 'id': record '{}' belongs to {}/{}, not {}", where, id, name,
                 tasks_[t].records[r->second].data.value("task_dataset", ""), task);
    return {t, r->second};
  }

 private:
  const std::vector<LoadedTask>& tasks_;
  std::map<std::string, size_t> by_name_;
  std::vector<std::map<std::string, size_t>> ids_;
  std::vector<std::map<std::string, size_t>> sample_ids_;  // "sub-task/sample_id"
};

std::string prediction_string(const json& rec, const char* key, const std::string& where,
                              bool allow_integer) {
  if (!rec.contains(key)) fail_usage("{}: field '{}': missing", where, key);
  const json& v = rec[key];
  if (v.is_string()) return v.get<std::string>();
  if (allow_integer && v.is_number_integer()) return v.dump();
  fail_usage("{}: field '{}': expected a string{}", where, key,
             allow_integer ? " or an integer" : "");
}

}  // namespace

RunResult score_predictions(const RunOptions& o, const fs::path& predictions) {
  if (!fs::is_regular_file(predictions))
    fail_usage("--score {}: no such file", predictions.string());
  const std::vector<LoadedTask> tasks = load_tasks(o);
  const PredictionIndex index(tasks);
  // task -> record index -> (line in the predictions file, output)
  std::vector<std::map<size_t, std::pair<int64_t, std::string>>> outputs(tasks.size());
  io::for_each_jsonl(predictions, [&](const json& rec, int64_t line) {
    const std::string where = fmt::format("{}:{}", predictions.string(), line);
    if (!rec.is_object()) fail_usage("{}: expected a JSON object", where);
    const std::string task = prediction_string(rec, "task", where, false);
    const std::string id = prediction_string(rec, "id", where, true);
    const std::string output = prediction_string(rec, "output", where, false);
    const PredictionTarget target = index.find(task, id, where);
    auto [it, fresh] = outputs[target.task].emplace(target.record, std::make_pair(line, output));
    if (!fresh)
      fail_usage("{}: field 'id': a second output for record '{}' of task {} (first on line {})",
                 where, id, tasks[target.task].spec.name, it->second.first);
  });

  RunResult result;
  fs::path stem = predictions.stem();
  if (stem == "predictions" && !fs::absolute(predictions).parent_path().filename().empty())
    stem = fs::absolute(predictions).parent_path().filename();
  result.output_dir =
      make_output_dir(o.output_dir.empty() ? fs::path(stem.string() + "-rescored") : o.output_dir);
  io::AtomicFile out(result.output_dir / "predictions.jsonl");
  std::vector<TaskReport> reports;
  json names = json::array();
  for (size_t t = 0; t < tasks.size(); ++t) {
    const auto& spec = tasks[t].spec;
    names.push_back(spec.name);
    if (outputs[t].empty())
      fail_usage("--score {}: no predictions for task {}", predictions.string(), spec.name);
    if (outputs[t].size() < tasks[t].records.size())
      log::info("{}: {} of {} records have predictions", spec.name, outputs[t].size(),
                tasks[t].records.size());
    std::vector<ExampleResult> results;
    for (const auto& [r, line_output] : outputs[t]) {
      try {
        results.push_back(rescore_example(spec, tasks[t].records[r], line_output.second));
      } catch (const UsageError& e) {
        fail_usage("{}:{}: {}", predictions.string(), line_output.first, e.what());
      }
    }
    for (const auto& r : results) out.write(prediction_json(spec, r).dump() + "\n");
    reports.push_back(summarize_task(spec, results, 0.0, o.bootstrap));
    result.examples += results.size();
  }
  const json info = {{"tool", "ming-eval --score"},
                     {"predictions", predictions.string()},
                     {"tasks", names},
                     {"suite", o.suite_dir.string()},
                     {"data", o.data_dir.empty() ? json(nullptr) : json(o.data_dir.string())},
                     {"split", o.split.empty() ? json(nullptr) : json(o.split)},
                     {"limit", o.limit > 0 ? json(o.limit) : json(nullptr)},
                     {"bootstrap",
                      {{"resamples", o.bootstrap.n_resamples},
                       {"seed", o.bootstrap.seed},
                       {"level", o.bootstrap.level}}}};
  result.metrics = metrics_json(reports, info, o.bootstrap);
  out.commit();
  io::write_json(result.output_dir / "metrics.json", result.metrics);
  result.table = format_table(result.metrics);
  return result;
}

}  // namespace ming::eval
