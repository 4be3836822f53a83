// ming-route-stats: how a MoLoRA model routes tokens, from a route trace or by running the model.
//
//   ming-route-stats TRACE [--compare TRACE2] [-o DIR] [--dead-threshold X]
//   ming-route-stats --model DIR --adapter DIR --data a.jsonl,b.jsonl [--limit N] [--batch-size B]
//                    [--compare-adapter DIR] [--save-trace FILE] [-o DIR]
//
// A summary goes to stdout (collapse and dead-expert flags, layers with the highest task-expert
// mutual information); -o DIR writes route_stats.json, CSV tables and SVG heatmaps (layout in
// ming/route/report.h) as one folder, atomically. Exit status 2 for a missing or corrupt trace
// or data file (the message names it), 1 for other failures.
#include <unistd.h>
#include <cstdio>

#include <ming/adapt/adapter_io.h>
#include <ming/core/error.h>
#include <ming/core/log.h>
#include <ming/io/files.h>
#include <ming/model/load.h>
#include <ming/route/inputs.h>
#include <ming/route/report.h>
#include <ming/route/stats.h>
#include <ming/route/trace.h>

#include "common/cli.h"

namespace {

namespace fs = std::filesystem;
using namespace ming;

struct Flags {
  std::string trace, compare;
  fs::path model, adapter, compare_adapter, save_trace, output;
  std::vector<std::string> data;
  int64_t limit = 0, batch_size = 8, max_tokens = 1024;
  route::StatsOptions stats;
  route::ReportOptions report;
  size_t top = 5;
};

// Runs the model with `adapter` over the data and writes a trace to `path`.
void trace_adapter(model::LoadedModel& loaded, const fs::path& adapter,
                   const std::vector<route::TokenizedExample>& examples, const Flags& f,
                   const fs::path& path) {
  adapt::remove_adapters(*loaded.model);
  auto a = adapt::load_adapter(*loaded.model, adapter);
  route::RouteTraceOptions options;
  options.meta = {{"tool", "ming-route-stats"},
                  {"model", loaded.dir.string()},
                  {"adapter", adapter.string()},
                  {"data", f.data}};
  route::RouteTraceWriter writer(path, options);
  route::CollectOptions collect;
  collect.batch_size = f.batch_size;
  collect.progress = log::level() <= log::Level::info;
  route::collect_routes(*loaded.model, a.injected, examples, writer, collect);
  writer.close();
}

void run(Flags& f, const cli::RuntimeFlags& rf) {
  std::optional<fs::path> temp_dir;  // traces of a model run without --save-trace / -o
  struct Cleanup {
    std::optional<fs::path>& dir;
    ~Cleanup() {
      std::error_code ec;
      if (dir) fs::remove_all(*dir, ec);
    }
  } cleanup{temp_dir};

  fs::path trace_a = f.trace, trace_b = f.compare;
  if (!f.model.empty()) {
    if (!f.trace.empty())
      fail_usage("give either a TRACE file or --model/--adapter/--data, not both");
    if (f.adapter.empty()) fail_usage("--model needs --adapter (the MoLoRA adapter to trace)");
    if (f.data.empty()) fail_usage("--model needs --data FILE.jsonl[,...]");
    if (!f.compare.empty())
      fail_usage("with --model, compare two adapters with --compare-adapter DIR");
    // Read every data file before the model load, so a typo costs seconds.
    route::InputOptions in;
    in.limit = f.limit;
    std::vector<route::TraceInput> inputs;
    for (const auto& d : f.data) {
      auto part = route::read_trace_inputs(d, in);
      inputs.insert(inputs.end(), part.begin(), part.end());
    }
    auto rt = cli::apply_runtime_flags(rf);
    model::LoadOptions load;
    load.device = rt.device;
    load.dtype = rt.dtype;
    auto loaded = model::load_model(f.model, load);
    auto examples =
        route::tokenize_inputs(inputs, *loaded.tokenizer, loaded.chat_template, f.max_tokens);
    log::info("tracing {} examples from {} file(s)", examples.size(), f.data.size());
    fs::path dir;
    if (f.save_trace.empty()) {
      temp_dir = fs::temp_directory_path() / fmt::format("ming-route-stats-{}", ::getpid());
      fs::create_directories(*temp_dir);
      trace_a = *temp_dir / "routes.trace";
    } else {
      trace_a = f.save_trace;
    }
    trace_adapter(loaded, f.adapter, examples, f, trace_a);
    if (!f.compare_adapter.empty()) {
      trace_b = trace_a;
      trace_b.replace_extension(".compare.trace");
      trace_adapter(loaded, f.compare_adapter, examples, f, trace_b);
    }
  } else {
    if (f.trace.empty()) fail_usage("give a TRACE file, or --model DIR --adapter DIR --data FILE");
    if (!f.adapter.empty() || !f.compare_adapter.empty() || !f.data.empty())
      fail_usage("--adapter/--compare-adapter/--data need --model");
  }

  auto stats = route::compute_stats(trace_a, f.stats);
  std::optional<route::TraceStats> other;
  std::optional<route::TraceComparison> comparison;
  if (!trace_b.empty()) {
    other = route::compute_stats(trace_b, f.stats);
    comparison = route::compare_stats(stats, *other);
  }
  if (!f.output.empty()) {
    io::StagedDir out(f.output);
    auto files =
        route::write_report(out.path(), stats, comparison ? &*comparison : nullptr, f.report);
    // A model run keeps its traces with the report, unless they were saved elsewhere.
    if (temp_dir) {
      fs::copy_file(trace_a, out / "routes.trace");
      if (!trace_b.empty()) fs::copy_file(trace_b, out / "routes.compare.trace");
    }
    out.commit();
    log::info("wrote {} files to {}", files.size(), f.output.string());
  }
  std::fputs(route::summary_text(stats, comparison ? &*comparison : nullptr,
                                 other ? &*other : nullptr, f.top)
                 .c_str(),
             stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ming-route-stats: expert load, balance, dead experts and task-expert mutual "
      "information of MoLoRA routing",
      "ming-route-stats"};
  Flags f;
  cli::RuntimeFlags rf;
  app.add_option("trace", f.trace, "route trace (ming-eval --trace-routes, --save-trace)");
  app.add_option("--compare", f.compare, "a second trace to compare with");
  app.add_option("-o,--output-dir", f.output, "write route_stats.json, CSV and SVG files here");
  app.add_option("--dead-threshold", f.stats.dead_threshold,
                 "dead expert: load below this fraction of the uniform share")
      ->capture_default_str();
  app.add_option("--collapse-threshold", f.stats.collapse_threshold,
                 "collapse: one expert above this top-1 share")
      ->capture_default_str();
  app.add_option("--task-layers", f.report.task_layers,
                 "per-layer task heatmaps for the N layers with the highest MI per projection")
      ->capture_default_str();
  app.add_option("--top", f.top, "layers listed in the summary")->capture_default_str();
  app.add_option("--model,-m", f.model, "model folder: trace by running it");
  app.add_option("--adapter", f.adapter, "MoLoRA adapter folder (with --model)");
  app.add_option("--compare-adapter", f.compare_adapter,
                 "second adapter to compare (with --model)");
  app.add_option("--data", f.data,
                 "JSONL files (task from each record's task field, else file name)")
      ->delimiter(',');
  app.add_option("--limit", f.limit, "first N records of each data file (0 = all)");
  app.add_option("--batch-size,-b", f.batch_size, "sequences per forward")->capture_default_str();
  app.add_option("--max-tokens", f.max_tokens, "cut longer examples (0 = never)")
      ->capture_default_str();
  app.add_option("--save-trace", f.save_trace, "keep the trace of a --model run here");
  cli::add_runtime_flags(app, rf);
  return cli::run(app, argc, argv, [&] { run(f, rf); });
}
