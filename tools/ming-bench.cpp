// ming-bench: prefill / decode / training throughput of a model with and without adapters, each
// figure set against this machine's own limits (like llama.cpp's llama-bench).
//
//   ming-bench --shape qwen2-0.5b                              # none, lora, molora; -p 512 -n 128
//   ming-bench --shape qwen2-0.5b --train 2048 --reference both -p 0
//   ming-bench --model DIR [--adapter DIR] --json
//
// At start-up it measures the GEMM throughput (bf16 and fp32, a matmul shaped like the model's
// MLP projection) and the memory copy bandwidth; every row then reports model FLOPs utilisation
// for prefill and training and the fraction of the bandwidth bound for decode (FLOP and byte
// counting in ming/bench/bench.h). Rates are tokens/s over the whole batch: the median rep and the
// spread (± stddev; min, max and best in --json) over --reps after one untimed warm-up. Time
// ratios (of medians) compare each configuration with the "none" row of the same run, and with
// --recompute both the recomputed training step with the plain one. Training rows also give the
// step's peak memory (RSS on the CPU, peak allocated on CUDA; its split in --json). The table goes
// to stdout (or one JSON object with --json); progress to stderr. Exit status 2 for bad flags or an
// unreadable model/adapter.
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include <ming/adapt/adapter_io.h>
#include <ming/bench/bench.h>
#include <ming/core/error.h>
#include <ming/core/log.h>
#include <ming/core/memory.h>
#include <ming/core/runtime.h>
#include <ming/model/load.h>

#include "common/cli.h"

namespace {

namespace fs = std::filesystem;
using namespace ming;

struct Flags {
  fs::path model, adapter;
  std::string shape, adapter_shape = "none,lora,molora", reference = "sparse";
  bench::BenchOptions bench;
  int64_t copy_mb = 512;
  bool json = false;
};

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  double l1 = 0, l5 = 0, l15 = 0;
  in >> l1 >> l5 >> l15;
  return fmt::format("{:.2f} {:.2f} {:.2f}", l1, l5, l15);
}

std::string rate(const bench::Stat& s) {
  if (s.empty()) return "-";
  return fmt::format("{:.1f} ± {:.1f}", s.median, s.stddev);
}

std::string memory(const bench::TrainMemory& m) {
  return m.peak > 0 ? format_bytes(m.peak) : "-";
}

std::string percent(const bench::Stat& s, double fraction) {
  return s.empty() ? "-" : fmt::format("{:.1f}%", 100.0 * fraction);
}

std::string ratio(const std::optional<double>& r) {
  return r ? fmt::format("{:.3f}", *r) : "-";
}

void run(Flags& f, const cli::RuntimeFlags& rf) {
  if (f.model.empty() == f.shape.empty()) fail_usage("give exactly one of --model DIR and --shape");
  if (f.bench.batch < 1) fail_usage("--batch must be >= 1, got {}", f.bench.batch);
  if (f.bench.prompt < 0 || f.bench.generate < 0 || f.bench.train_tokens < 0)
    fail_usage("-p, -n and --train must be >= 0");
  if (f.bench.generate > 0 && f.bench.prompt < 1)
    fail_usage("decode (-n {}) needs a prompt: -p must be >= 1", f.bench.generate);
  if (f.bench.train_seq < 2) fail_usage("--train-seq must be >= 2, got {}", f.bench.train_seq);
  if (f.copy_mb < 1) fail_usage("--copy-mb must be >= 1, got {}", f.copy_mb);
  if (f.bench.reps < 1) fail_usage("--reps must be >= 1, got {}", f.bench.reps);
  if (f.reference != "sparse" && f.reference != "dense" && f.reference != "both")
    fail_usage("--reference: expected sparse, dense or both, got '{}'", f.reference);
  if (f.bench.train_tokens > 0 &&
      f.bench.train_tokens % std::min(f.bench.train_seq, f.bench.train_tokens) != 0)
    fail_usage("--train {} is not a multiple of --train-seq {}", f.bench.train_tokens,
               f.bench.train_seq);

  std::vector<bench::AdapterShape> shapes;
  if (!f.adapter.empty()) {
    shapes.push_back({});  // "none": the base the adapter is compared with
    bench::AdapterShape folder;
    folder.kind = bench::AdapterShape::Kind::folder;
    folder.folder = f.adapter.string();
    shapes.push_back(folder);
  } else {
    shapes = bench::parse_adapter_shapes(f.adapter_shape);
  }

  auto rt = cli::apply_runtime_flags(rf);
  if (rt.device != torch::kCPU) fail_usage("--device: ming-bench measures CPU limits only");
  const auto options = torch::TensorOptions().dtype(rt.dtype).device(rt.device);

  model::CausalLM model{nullptr};
  std::string model_name;
  if (!f.model.empty()) {
    model_name = f.model.string();
    model::LoadOptions lo;
    lo.dtype = rt.dtype;
    lo.load_tokenizer = false;
    model = model::load_model(f.model, lo).model;
  } else {
    model_name = f.shape;
    model = model::CausalLM(bench::model_shape(f.shape), options);
    model->init_random();
  }
  model->eval();
  const auto& config = model->config();
  int64_t base_params = 0;
  for (const auto& p : model->parameters()) base_params += p.numel();
  log::info("ming-bench: {} ({:.1f} M parameters, {}), {} threads, load {}", model_name,
            base_params / 1e6, dtype_name(rt.dtype), torch::get_num_threads(), load_average());

  // The limits, for a GEMM shaped like this model's MLP projection at the run's token count
  // (at least 512 on every side: a toy model's tiny matmuls would understate the peak).
  const int64_t tokens = std::max(f.bench.batch * f.bench.prompt, f.bench.train_tokens);
  auto limits = bench::measure_limits(
      std::clamp<int64_t>(tokens, 512, 2048), std::max<int64_t>(config.hidden_size, 512),
      std::max<int64_t>(config.intermediate_size, 512), std::max(3, f.bench.reps), f.copy_mb << 20);
  log::info("limits: GEMM {}x{}x{} bf16 {:.3g} TFLOP/s, fp32 {:.3g} TFLOP/s; copy {:.1f} GB/s",
            limits.gemm_m, limits.gemm_k, limits.gemm_n, limits.gemm_bf16_flops / 1e12,
            limits.gemm_fp32_flops / 1e12, limits.copy_bandwidth / 1e9);

  std::vector<bench::BenchRow> rows;
  for (const auto& shape : shapes) {
    adapt::remove_adapters(*model);
    std::vector<torch::Tensor> parameters;
    std::shared_ptr<adapt::MoeContext> context;
    if (shape.kind == bench::AdapterShape::Kind::folder) {
      adapt::LoadAdapterOptions lo;
      lo.trainable = true;
      auto loaded = adapt::load_adapter(*model, shape.folder, lo);
      parameters = loaded.injected.parameters;
      context = loaded.injected.context;
    } else if (shape.kind != bench::AdapterShape::Kind::none) {
      auto injected = adapt::inject_adapters(*model, bench::adapter_config(shape));
      parameters = injected.parameters;
      context = injected.context;
      // Fresh LoRA B is zero; random values keep every product honest.
      torch::NoGradGuard no_grad;
      for (auto& p : parameters) p.normal_(0, 0.02);
    }
    // Adapter parameters follow the model's device (inject_adapters puts them there).
    std::vector<std::string> mixtures = {"sparse"};
    const bool has_molora = bench::set_dense_reference(*model, true) > 0;
    bench::set_dense_reference(*model, false);
    if (has_molora && f.reference == "dense") mixtures = {"dense"};
    if (has_molora && f.reference == "both") mixtures = {"sparse", "dense"};
    for (const auto& mixture : mixtures) {
      bench::set_dense_reference(*model, mixture == "dense");
      log::info("running {}{}", shape.label(), has_molora ? " (" + mixture + " MoLoRA)" : "");
      auto row = bench::bench_configuration(model, parameters, context, f.bench, limits);
      row.adapter = shape.label();
      row.mixture = has_molora ? mixture : "-";
      rows.push_back(std::move(row));
    }
    bench::set_dense_reference(*model, false);
  }
  adapt::remove_adapters(*model);

  // Ratios against the first base row; dense MoLoRA training against its sparse twin.
  const bench::BenchRow* base = nullptr;
  for (const auto& r : rows)
    if (r.adapter == "none" && !base) base = &r;
  auto time_ratio = [](const bench::Stat& base, const bench::Stat& s) -> std::optional<double> {
    if (base.empty() || s.empty()) return std::nullopt;
    return base.median / s.median;
  };
  for (auto& r : rows) {
    if (base && &r != base) {
      r.prefill_vs_base = time_ratio(base->prefill, r.prefill);
      r.decode_vs_base = time_ratio(base->decode, r.decode);
    }
    if (r.mixture == "dense")
      for (const auto& s : rows)
        if (s.adapter == r.adapter && s.mixture == "sparse")
          r.train_vs_sparse = time_ratio(s.train, r.train);
  }

  if (f.json) {
    nlohmann::json out = {
        {"tool", "ming-bench"},
        {"model", model_name},
        {"parameters", base_params},
        {"dtype", dtype_name(rt.dtype)},
        {"threads", torch::get_num_threads()},
        {"available_cores", available_cores()},
        {"load_average", load_average()},
        {"torch", torch_version()},
        {"batch", f.bench.batch},
        {"prompt", f.bench.prompt},
        {"generate", f.bench.generate},
        {"train_tokens", f.bench.train_tokens},
        {"train_seq", std::min(f.bench.train_seq, std::max<int64_t>(f.bench.train_tokens, 1))},
        {"reps", f.bench.reps},
        {"limits", limits.to_json()},
        {"rows", nlohmann::json::array()}};
    for (const auto& r : rows) out["rows"].push_back(r.to_json());
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  fmt::print("# {}, {}, {} threads, batch {}, load {}\n", model_name, dtype_name(rt.dtype),
             torch::get_num_threads(), f.bench.batch, load_average());
  fmt::print("# GEMM {}x{}x{}: bf16 {:.3g} TFLOP/s, fp32 {:.3g} TFLOP/s; copy {:.1f} GB/s\n",
             limits.gemm_m, limits.gemm_k, limits.gemm_n, limits.gemm_bf16_flops / 1e12,
             limits.gemm_fp32_flops / 1e12, limits.copy_bandwidth / 1e9);
  const auto line = [](const std::vector<std::string>& cells) {
    // Widths of: adapter, moe, trainable, pp, MFU, x base, tg, bound, x base, train, MFU,
    // x sparse, peak memory, train without recomputation, MFU, its peak, x recompute
    static const int widths[] = {-16, -6, 10, 18, 6, 7, 16, 6, 7, 16, 6, 8, 9, 16, 6, 9, 6};
    std::string out = "|";
    for (size_t i = 0; i < cells.size(); ++i)
      out += widths[i] < 0 ? fmt::format(" {:<{}} |", cells[i], -widths[i])
                           : fmt::format(" {:>{}} |", cells[i], widths[i]);
    fmt::print("{}\n", out);
  };
  line({"adapter", "moe", "trainable", fmt::format("pp{} tok/s", f.bench.prompt), "MFU", "x base",
        fmt::format("tg{} tok/s", f.bench.generate), "bound", "x base",
        fmt::format("train{} tok/s", f.bench.train_tokens), "MFU", "x sparse", "peak",
        "no-recompute tok/s", "MFU", "peak", "x rec"});
  for (const auto& r : rows)
    line({r.adapter, r.mixture, std::to_string(r.trainable_parameters), rate(r.prefill),
          percent(r.prefill, r.prefill_mfu), ratio(r.prefill_vs_base), rate(r.decode),
          percent(r.decode, r.decode_bound_fraction), ratio(r.decode_vs_base), rate(r.train),
          percent(r.train, r.train_mfu), ratio(r.train_vs_sparse), memory(r.train_memory),
          rate(r.train_plain), percent(r.train_plain, r.train_plain_mfu),
          memory(r.train_plain_memory), ratio(r.recompute_vs_plain)});
}

}  // namespace
int main(int argc, char** argv) {
  CLI::App app{"ming-bench: prefill, decode and training throughput against the machine's limits",
               "ming-bench"};
  Flags f;
  cli::RuntimeFlags rf;
  app.add_option("--model", f.model, "HF model folder (config.json + safetensors)");
  app.add_option("--shape", f.shape,
                 "random model of a real shape: qwen2-0.5b | qwen1.5-0.5b | qwen1.5-1.8b | "
                 "qwen2-1.5b | llama-7b | tiny");
  app.add_option("--adapter", f.adapter, "adapter folder (compared with the bare model)");
  app.add_option("--adapter-shape", f.adapter_shape,
                 "comma list of none | lora (MING-MOE attention LoRA r16 on q/k/v/o) | molora "
                 "(that LoRA + MLP MoLoRA 8 experts top-2 r16) | molora:E,k,r")
      ->capture_default_str();
  app.add_option("--batch,-b", f.bench.batch, "sequences per prefill/decode")
      ->capture_default_str();
  app.add_option("-p,--prompt", f.bench.prompt, "prefill tokens per sequence (0: skip)")
      ->capture_default_str();
  app.add_option("-n,--generate", f.bench.generate, "decode steps (0: skip)")
      ->capture_default_str();
  app.add_option("--train", f.bench.train_tokens,
                 "tokens per training step: forward + backward + AdamW on the adapter (0: skip)")
      ->capture_default_str();
  app.add_option("--train-seq", f.bench.train_seq,
                 "training sequence length (batch = --train / --train-seq)")
      ->capture_default_str();
  app.add_option("--reps,-r", f.bench.reps, "timed repetitions after one warm-up")
      ->capture_default_str();
  app.add_option("--recompute", f.bench.recompute,
                 "training with activation recomputation: on | off | both (interleaved reps, "
                 "compared in the table)")
      ->capture_default_str();
  app.add_option("--reference", f.reference,
                 "MoLoRA path: sparse (ming) | dense (MING-MOE: every expert on every token) | "
                 "both")
      ->capture_default_str();
  app.add_option("--copy-mb", f.copy_mb,
                 "buffer for the bandwidth measurement, MiB (well above the last-level cache)")
      ->capture_default_str();
  app.add_flag("--json", f.json, "one JSON object on stdout instead of the table");
  cli::add_runtime_flags(app, rf);
  return cli::run(app, argc, argv, [&] { run(f, rf); });
}
