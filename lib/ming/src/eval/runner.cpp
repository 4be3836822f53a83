#include "ming/eval/runner.h"

#include <chrono>
#include <memory>
#include <set>

#include "ming/adapt/adapter_io.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/core/runtime.h"
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

json run_info(const RunOptions& o, const std::vector<LoadedTask>& tasks) {
  json names = json::array();
  for (const auto& t : tasks) names.push_back(t.spec.name);
  const auto& s = o.scorer.sampling;
  return {{"tool", "ming-eval"},
          {"model", o.model_dir.string()},
          {"adapter", o.adapter_dir.empty() ? json(nullptr) : json(o.adapter_dir.string())},
          {"tasks", names},
          {"suite", o.suite_dir.string()},
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
  if (o.tasks.empty())
    fail_usage("no tasks given (--tasks NAME[,NAME...]; known tasks: {})",
               fmt::join(list_tasks(o.share_dir), ", "));
  if (!o.trace_routes.empty() && o.adapter_dir.empty())
    fail_usage("--trace-routes needs --adapter: routes exist only in MoLoRA adapters");

  // Tasks and their data first: every user mistake surfaces before the model is loaded.
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
    t.records = load_task_records(t.spec, o.suite_dir, o.split);
    if (o.limit > 0 && static_cast<int64_t>(t.records.size()) > o.limit)
      t.records.resize(static_cast<size_t>(o.limit));
    if (t.records.empty())
      fail_usage("task {}: no records in {}", t.spec.name,
                 task_data_path(t.spec, o.suite_dir, o.split).string());
    log::info("task {}: {} records ({}, {})", t.spec.name, t.records.size(),
              scorer_name(t.spec.scorer), task_data_path(t.spec, o.suite_dir, o.split).string());
  }

  RunResult result;
  result.output_dir =
      o.output_dir.empty() ? default_output_dir(o.model_dir, o.adapter_dir) : o.output_dir;
  std::error_code ec;
  fs::create_directories(result.output_dir, ec);
  if (ec || !fs::is_directory(result.output_dir))
    fail_usage("-o {}: cannot create the output folder ({})", result.output_dir.string(),
               ec ? ec.message() : "not a folder");

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

}  // namespace ming::eval
