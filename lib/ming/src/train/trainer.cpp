#include "ming/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>

#include <unistd.h>

#include "ming/adapt/adapter_io.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/core/memory.h"
#include "ming/core/runtime.h"
#include "ming/data/loader.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "ming/model/load.h"
#include "ming/train/distributed.h"
#include "ming/train/eval_loss.h"
#include "ming/train/llamafactory.h"
#include "ming/train/loss.h"
#include "ming/train/loss_plot.h"
#include "ming/train/tensorboard.h"
#include "train/checkpoint.h"

namespace ming::train {
namespace fs = std::filesystem;
using io::Json;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
}

// bf16 compute for full fine-tuning with fp32 master weights. The autocast API moved in
// LibTorch 2.4; this is the one place that knows.
class CpuAutocast {
 public:
  explicit CpuAutocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
#else
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
#endif
  }
  ~CpuAutocast() {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, false);
#else
    at::autocast::set_cpu_enabled(false);
#endif
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
};

torch::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

std::string format_duration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Checkpoint folders "checkpoint-<step>" in `dir`, oldest first.
std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  if (!fs::is_directory(dir)) return out;
  static const std::regex name_re(R"(checkpoint-([0-9]+))");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, m, name_re) &&
        fs::exists(entry.path() / "trainer_state.json"))
      out.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Files of a folder written by a staged writer moved into `dir` one by one (each a rename).
void move_files_into(const fs::path& from, const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(from))
    fs::rename(entry.path(), dir / entry.path().filename());
  fs::remove_all(from);
}

// Router load across layers: mean coefficient of variation of the per-expert token shares,
// and the largest max/mean load of any layer (1 = perfectly balanced).
std::pair<double, double> load_balance(const std::map<std::string, adapt::LayerLoad>& loads) {
  double cv_sum = 0, worst = 0;
  int n = 0;
  for (const auto& [layer, load] : loads) {
    size_t e = load.counts.size();
    if (e < 2 || load.tokens == 0) continue;
    double mean = 1.0 / double(e), var = 0, mx = 0;
    for (size_t i = 0; i < e; ++i) {
      double f = load.fraction(i);
      var += (f - mean) * (f - mean);
      mx = std::max(mx, f);
    }
    cv_sum += std::sqrt(var / double(e)) / mean;
    worst = std::max(worst, mx / mean);
    ++n;
  }
  return {n ? cv_sum / n : 0.0, worst};
}

int64_t eval_examples(const data::TrainingData& data) {
  int64_t n = 0;
  for (int64_t d = 0; d < data.n_datasets(); ++d)
    n += static_cast<int64_t>(data.examples(d).size());
  return n;
}

// TensorBoard run folder name, as the HF Trainer's default logging_dir: <Mon>DD_HH-MM-SS_<host>.
std::string run_name() {
  const std::time_t now = std::time(nullptr);
  char stamp[64];
  std::strftime(stamp, sizeof(stamp), "%b%d_%H-%M-%S", std::localtime(&now));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}_{}", stamp, host);
}

// The checkpoint this run continues from, or "" to start from scratch (LLaMA-Factory's rules):
// resume_from_checkpoint PATH, or true / --resume for the newest in output_dir; otherwise a
// non-empty output_dir is resumed from its newest checkpoint, refused when it has none, and
// with overwrite_output_dir trained over from scratch (its old checkpoints removed).
fs::path checkpoint_to_resume(const TrainOptions& options, const RunOptions& run, bool main_rank) {
  const fs::path out_dir = options.output_dir;
  const std::string& wanted = options.resume_from_checkpoint.value_or("");
  if (!wanted.empty() && wanted != "true") {
    if (!fs::exists(fs::path(wanted) / "trainer_state.json"))
      fail_usage("resume_from_checkpoint: '{}' is not a checkpoint folder (no trainer_state.json)",
                 wanted);
    return wanted;
  }
  auto checkpoints = list_checkpoints(out_dir);
  if (run.resume || wanted == "true") {
    if (!checkpoints.empty()) return checkpoints.back().second;
    log::info("resume: no checkpoint in '{}', starting from scratch", out_dir.string());
    return {};
  }
  // The run lock is not a result: a folder holding only a lock (left by a run that stopped before
  // writing anything) counts as empty.
  bool empty = true;
  if (fs::is_directory(out_dir))
    for (const auto& entry : fs::directory_iterator(out_dir))
      if (entry.path().filename() != RunLock::kFileName) empty = false;
  if (empty) return {};
  if (options.overwrite_output_dir) {
    if (main_rank)
      for (const auto& [step, dir] : checkpoints) fs::remove_all(dir);
    if (!checkpoints.empty())
      log::info("overwrite_output_dir: removed {} old checkpoint(s) of '{}'", checkpoints.size(),
                out_dir.string());
    return {};
  }
  if (!checkpoints.empty()) {
    log::info(
        "resume: '{}' has checkpoints; resuming from {} (change output_dir or set "
        "overwrite_output_dir to start from scratch)",
        out_dir.string(), checkpoints.back().second.string());
    return checkpoints.back().second;
  }
  // Rank 0 has already begun writing the folder (lock, config.yaml) by the time other ranks
  // look; it alone refuses, and its exit ends the others.
  if (!main_rank) return {};
  fail_usage(
      "output_dir '{}' already exists and is not empty; set overwrite_output_dir: true to train "
      "over it from scratch, or choose another output_dir",
      out_dir.string());
}

struct Checkpoint {
  int64_t step = 0;
  Json data_state;
  int64_t skipped = 0;
  int64_t consecutive_nonfinite = 0;
  int64_t tokens_seen = 0;
};

}  // namespace

TrainOptions load_train_options(const fs::path& config_path,
                                const std::vector<std::string>& overrides) {
  config::Document doc = config_path.empty() ? config::parse_document("", "<command line>")
                                             : config::load_document(config_path);
  for (const auto& o : overrides) config::apply_override(doc, o);
  apply_llamafactory_conventions(doc);
  auto options = config::read<TrainOptions>(doc);
  // Relative paths in a config file are relative to the directory the tool runs in, as with
  // every other flag (a Makefile or sbatch script sets that).
  options.validate();
  return options;
}

double scheduled_lr(const std::string& schedule, double peak, int64_t step, int64_t total,
                    int64_t warmup) {
  if (warmup > 0 && step < warmup) return peak * double(step + 1) / double(warmup);
  if (schedule == "constant") return peak;
  double progress = total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  progress = std::clamp(progress, 0.0, 1.0);
  if (schedule == "linear") return peak * (1.0 - progress);
  return peak * 0.5 * (1.0 + std::cos(M_PI * progress));  // cosine
}

TrainResult train(const TrainOptions& options, const RunOptions& run) {
  options.validate();
  const WorldInfo world = detect_world();
  torch::Device device = parse_device(options.device);
  // "cuda" on a multi-GPU node: one GPU per local rank (SLURM may also have narrowed
  // CUDA_VISIBLE_DEVICES to one, hence the modulo).
  if (device.is_cuda() && options.device == "cuda" && world.world_size > 1)
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                             world.local_rank % torch::cuda::device_count()));
  set_threads(static_cast<int>(options.threads));
  ProcessGroup group(world, device);
  const bool main_rank = group.is_main();
  const fs::path out_dir = options.output_dir;
  const bool full = options.finetuning_type == "full";
  std::optional<RunLock> run_lock;  // rank 0 writes the folder, so rank 0 holds it
  if (main_rank) run_lock.emplace(out_dir);

  // ---- model, adapters, data -------------------------------------------------------------------
  set_seed(static_cast<uint64_t>(options.seed));
  model::LoadOptions load;
  load.device = device;
  // Full fine-tuning keeps fp32 master weights (bf16 through autocast); adapters train on a
  // frozen base stored in the compute dtype.
  load.dtype = (full || !options.bf16) ? torch::kFloat32 : torch::kBFloat16;
  model::LoadedModel base = model::load_model(options.model_name_or_path, load);
  if (!base.tokenizer) fail_usage("model '{}' has no tokenizer files", options.model_name_or_path);

  adapt::AdapterConfig adapter_config;
  std::shared_ptr<adapt::MoeContext> moe_context;
  std::vector<torch::Tensor> trainable;
  if (full) {
    base.model->set_trainable(true);
    for (auto& p : base.model->parameters()) trainable.push_back(p);
  } else if (!options.adapter_name_or_path.empty()) {
    adapt::LoadAdapterOptions lo;
    lo.trainable = true;
    auto loaded = adapt::load_adapter(*base.model, options.adapter_name_or_path, lo);
    adapter_config = loaded.config;
    moe_context = loaded.injected.context;
    trainable = loaded.injected.parameters;
  } else {
    adapter_config = options.adapter_config();
    auto injected = adapt::inject_adapters(*base.model, adapter_config);
    moe_context = injected.context;
    trainable = injected.parameters;
  }
  int64_t n_trainable = 0;
  for (const auto& p : trainable) n_trainable += p.numel();
  // Identical starting weights on every rank, then a separate dropout stream per rank.
  group.broadcast(trainable);
  set_seed(static_cast<uint64_t>(options.seed) + 1000003ull * static_cast<uint64_t>(world.rank));

  auto train_data = data::TrainingData::load(options.data_options(), *base.tokenizer,
                                             fs::path(options.model_name_or_path));
  std::shared_ptr<const data::TrainingData> eval_data;
  if (options.val_size > 0) {
    auto split = data::TrainingData::split_held_out(*train_data, options.val_size,
                                                    static_cast<uint64_t>(options.seed));
    train_data = split.train;
    eval_data = split.eval;
    log::info("data: val_size {}: {} examples held out for evaluation (seed {})", options.val_size,
              eval_examples(*eval_data), options.seed);
  }
  data::DataLoader loader(train_data, options.per_device_train_batch_size, world.rank,
                          world.world_size);
  const int64_t total_steps =
      options.max_steps > 0
          ? options.max_steps
          : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(
                                     options.num_train_epochs * double(loader.steps_per_epoch()) /
                                     double(options.gradient_accumulation_steps))));
  const int64_t warmup = options.warmup_steps > 0
                             ? options.warmup_steps
                             : static_cast<int64_t>(std::ceil(options.warmup_ratio * total_steps));
  if (!options.eval_dataset.empty())
    eval_data = data::TrainingData::load(options.data_options(/*eval=*/true), *base.tokenizer,
                                         fs::path(options.model_name_or_path));

  // ---- optimizer
  // ---------------------------------------------------------------------------------
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : trainable) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto adamw = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(options.learning_rate)
            .betas({options.adam_beta1, options.adam_beta2})
            .eps(options.adam_epsilon)
            .weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, adamw(options.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, adamw(0.0));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(options.learning_rate));

  // ---- resume
  // ------------------------------------------------------------------------------------
  Checkpoint state;
  if (const fs::path dir = checkpoint_to_resume(options, run, main_rank); !dir.empty()) {
    {
      if (!fs::exists(dir / "optimizer.pt"))
        fail_usage(
            "checkpoint '{}' was written with save_only_model (no optimizer, RNG or data "
            "state) and cannot be resumed; set overwrite_output_dir to start again",
            dir.string());
      log::info("resume: from {}", dir.string());
      auto weights = io::SafetensorsFile::open(dir / "trainable.safetensors");
      torch::NoGradGuard no_grad;
      for (auto& item : base.model->named_parameters()) {
        const std::string& name = item.key();
        torch::Tensor& param = item.value();
        if (!param.requires_grad()) continue;
        if (!weights->find(name))
          fail_usage("checkpoint '{}' has no tensor '{}' (was it written by another config?)",
                     dir.string(), name);
        param.copy_(weights->get(name));
      }
      torch::load(optimizer, (dir / "optimizer.pt").string());
      Json s = io::read_json(dir / "trainer_state.json");
      state.step = s.at("step").get<int64_t>();
      state.data_state = s.at("data");
      state.skipped = s.value("skipped_nonfinite", int64_t{0});
      state.consecutive_nonfinite = s.value("consecutive_nonfinite", int64_t{0});
      state.tokens_seen = s.value("tokens_seen", int64_t{0});
      loader.restore(state.data_state);
      auto rng = io::SafetensorsFile::open(dir / "rng.safetensors");
      const std::string key = fmt::format("rank{}", world.rank);
      if (rng->find(key)) set_rng_state(rng->get(key).clone());
    }
  }

  // ---- run folder ----------------------------------------------------------------------------
  if (main_rank) {
    fs::create_directories(out_dir);
    TrainOptions resolved = options;
    io::write_file_atomic(out_dir / "config.yaml", config::to_yaml(config::write(resolved)));
    // Keep the metrics of the steps the checkpoint covers; later lines belong to lost work.
    std::string kept;
    if (state.step > 0 && fs::exists(out_dir / "metrics.jsonl")) {
      io::for_each_jsonl(
          out_dir / "metrics.jsonl",
          [&](const Json& r, int64_t) {
            if (r.value("step", int64_t{0}) <= state.step) kept += r.dump() + "\n";
          },
          [](int64_t, const std::string&) {});
    }
    io::write_file_atomic(out_dir / "metrics.jsonl", kept);
  }
  std::ofstream metrics;
  if (main_rank) metrics.open(out_dir / "metrics.jsonl", std::ios::app);
  std::unique_ptr<EventWriter> tensorboard;
  if (main_rank && std::count(options.report_to.begin(), options.report_to.end(), "tensorboard")) {
    tensorboard = std::make_unique<EventWriter>(out_dir / "runs" / run_name());
    if (state.step > 0) tensorboard->session_start(state.step + 1);
    log::info("report_to tensorboard: {}", tensorboard->path().string());
  }
  auto record = [&](const Json& line) {
    metrics << line.dump() << "\n" << std::flush;
    if (tensorboard) tensorboard->add_metrics(line);
  };

  log::info(
      "train: {} {} | {} trainable parameters | {} steps ({} warm-up) | global batch {} x {} "
      "accumulation | {} rank(s) | {} threads | {}",
      options.finetuning_type, options.model_name_or_path, n_trainable, total_steps, warmup,
      options.per_device_train_batch_size * world.world_size, options.gradient_accumulation_steps,
      world.world_size, torch::get_num_threads(), options.bf16 ? "bf16" : "fp32");

  auto save_checkpoint = [&](int64_t step) -> fs::path {
    fs::path dir = out_dir / fmt::format("checkpoint-{}", step);
    // Every rank's RNG state travels to rank 0 through the all-reduce of a zero-padded table.
    auto mine = rng_state();
    auto table = torch::zeros({world.world_size, mine.numel()}, torch::kFloat32);
    table[world.rank].copy_(mine.to(torch::kFloat32));
    std::vector<torch::Tensor> t = {table};
    group.all_reduce_sum(t);
    if (main_rank) {
      io::StagedDir staged(dir);
      io::NamedTensors weights;
      for (auto& item : base.model->named_parameters())
        if (item.value().requires_grad()) weights.emplace_back(item.key(), item.value().detach());
      io::save_safetensors(staged / "trainable.safetensors", weights);
      io::NamedTensors rng;
      for (int r = 0; r < world.world_size; ++r)
        rng.emplace_back(fmt::format("rank{}", r), t[0][r].to(torch::kUInt8));
      if (!options.save_only_model) {
        io::save_safetensors(staged / "rng.safetensors", rng);
        // Serialized in memory, then written like every other file: LibTorch's file writer
        // throws from its destructor when the disk is full, which terminates the process.
        std::ostringstream optimizer_bytes;
        torch::save(optimizer, optimizer_bytes);
        io::write_file_atomic(staged / "optimizer.pt", optimizer_bytes.str());
      }
      io::write_json(staged / "trainer_state.json",
                     Json{{"step", step},
                          {"total_steps", total_steps},
                          {"data", loader.state()},
                          {"skipped_nonfinite", state.skipped},
                          {"consecutive_nonfinite", state.consecutive_nonfinite},
                          {"tokens_seen", state.tokens_seen},
                          {"world_size", world.world_size}});
      staged.commit();
      auto all = list_checkpoints(out_dir);
      for (size_t i = 0; i + options.save_total_limit < all.size(); ++i)
        fs::remove_all(all[i].second);
    }
    group.barrier();
    return dir;
  };

  EvalLossOptions eval_options;
  eval_options.batch_size = options.per_device_eval_batch_size;
  eval_options.max_examples = options.max_eval_examples;
  const int64_t steps_per_epoch =
      std::max<int64_t>(1, (loader.steps_per_epoch() + options.gradient_accumulation_steps - 1) /
                               options.gradient_accumulation_steps);
  const int64_t eval_every = options.eval_steps > 0 ? options.eval_steps : options.logging_steps;
  auto evaluation_due = [&](int64_t done) {
    if (!eval_data || options.eval_strategy == "no") return false;
    if (done == total_steps) return true;
    return options.eval_strategy == "epoch" ? done % steps_per_epoch == 0 : done % eval_every == 0;
  };
  // load_best_model_at_end: the trainable weights of the lowest eval_loss so far, on the CPU.
  double best_eval_loss = HUGE_VAL;
  int64_t best_step = 0;
  std::vector<torch::Tensor> best_weights;

  // ---- loop -------------------------------------------------------------------------------------
  g_stop_signal = 0;
  auto old_term = std::signal(SIGTERM, on_stop_signal);
  auto old_int = std::signal(SIGINT, on_stop_signal);
  struct RestoreSignals {
    decltype(old_term) term, intr;
    ~RestoreSignals() {
      std::signal(SIGTERM, term);
      std::signal(SIGINT, intr);
    }
  } restore_signals{old_term, old_int};

  TrainResult result;
  result.skipped_nonfinite = state.skipped;
  base.model->train();
  double window_loss = 0;
  int64_t window_steps = 0, steps_this_run = 0;
  auto run_start = std::chrono::steady_clock::now();
  const bool terminal = log::stderr_is_terminal();

  for (int64_t step = state.step; step < total_steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    double lr =
        scheduled_lr(options.lr_scheduler_type, options.learning_rate, step, total_steps, warmup);
    for (auto& g : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

    // The whole step's batches first: the loss is normalised by the global target-token count.
    std::vector<data::Batch> micro;
    double local_targets = 0, local_tokens = 0;
    double epoch_progress = 0;
    for (int64_t m = 0; m < options.gradient_accumulation_steps; ++m) {
      micro.push_back(loader.next());
      local_targets += double(micro.back().n_target_tokens);
      local_tokens += micro.back().attention_mask.sum().item<double>();
      epoch_progress = micro.back().epoch_progress;
    }
    const double global_targets = std::max(1.0, group.all_reduce_sum(local_targets));
    const double global_tokens = group.all_reduce_sum(local_tokens);

    optimizer.zero_grad();
    double local_loss = 0, aux_value = 0;
    std::map<std::string, adapt::LayerLoad> loads;
    for (auto& batch : micro) {
      CpuAutocast autocast(full && options.bf16);
      if (moe_context) moe_context->set_token_mask(batch.attention_mask.to(device));
      auto loss_sum = summed_token_loss(base.model, batch, device, options.gradient_checkpointing);
      auto loss = loss_sum / global_targets;
      if (moe_context) {
        auto aux = moe_context->take_aux_loss();
        if (aux.requires_grad()) {
          // Auxiliary losses are means per micro-batch: average them over the global step.
          auto scaled = aux / double(options.gradient_accumulation_steps * world.world_size);
          aux_value += scaled.item<double>();
          loss = loss + scaled;
        }
        for (auto& [layer, l] : moe_context->take_load()) {
          auto& acc = loads[layer];
          if (acc.counts.empty()) acc.counts.assign(l.counts.size(), 0);
          for (size_t e = 0; e < l.counts.size(); ++e) acc.counts[e] += l.counts[e];
          acc.tokens += l.tokens;
          acc.top_k = l.top_k;
        }
      }
      loss.backward();
      if (moe_context) moe_context->clear_token_mask();  // recomputed layers read it in backward
      local_loss += loss_sum.item<double>();
    }
    std::vector<torch::Tensor> grads;
    for (auto& p : trainable) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
    group.all_reduce_sum(grads);
    const double step_loss = group.all_reduce_sum(local_loss) / global_targets;
    double grad_norm = 0;
    if (options.max_grad_norm > 0) {
      grad_norm = torch::nn::utils::clip_grad_norm_(trainable, options.max_grad_norm);
    } else {
      for (auto& g : grads) grad_norm += g.to(torch::kFloat64).pow(2).sum().item<double>();
      grad_norm = std::sqrt(grad_norm);
    }
    const bool finite = std::isfinite(step_loss) && std::isfinite(grad_norm);
    if (finite) {
      optimizer.step();
      state.consecutive_nonfinite = 0;
    } else {
      optimizer.zero_grad();
      ++state.skipped;
      ++state.consecutive_nonfinite;
      log::warn("step {}: non-finite loss {} or gradient norm {}; step skipped ({} in a row)",
                step + 1, step_loss, grad_norm, state.consecutive_nonfinite);
    }
    state.tokens_seen += static_cast<int64_t>(global_tokens);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1;
    ++steps_this_run;
    if (finite) {
      window_loss += step_loss;
      ++window_steps;
    }

    if (done % options.logging_steps == 0 || done == total_steps) {
      auto [load_cv, load_max] = load_balance(loads);
      const double mean_loss = window_steps ? window_loss / window_steps : step_loss;
      result.final_loss = mean_loss;
      if (main_rank) {
        Json line = {{"step", done},
                     {"epoch", epoch_progress},
                     {"loss", mean_loss},
                     {"learning_rate", lr},
                     {"grad_norm", grad_norm},
                     {"tokens_per_second", global_tokens / seconds},
                     {"tokens", state.tokens_seen},
                     {"skipped_nonfinite", state.skipped},
                     // Since the previous line: RSS on the CPU, peak allocated on CUDA.
                     {"peak_memory_bytes", peak_memory_bytes(device)}};
        if (!loads.empty()) {
          line["router_load_cv"] = load_cv;
          line["router_load_max_over_mean"] = load_max;
        }
        if (aux_value != 0) line["aux_loss"] = aux_value;
        record(line);
        reset_peak_memory(device);
        double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
        double eta = elapsed / double(steps_this_run) * double(total_steps - done);
        std::string msg = fmt::format(
            "step {}/{} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s | eta {}", done,
            total_steps, mean_loss, lr, grad_norm, global_tokens / seconds, format_duration(eta));
        if (terminal && log::level() <= log::Level::info)
          std::fprintf(stderr, "\r%s\033[K%s", msg.c_str(), done == total_steps ? "\n" : "");
        else
          log::info("{}", msg);
      }
      window_loss = 0;
      window_steps = 0;
    }
    if (evaluation_due(done)) {
      base.model->eval();
      EvalLoss eval;
      {
        CpuAutocast autocast(full && options.bf16);
        eval =
            evaluate_loss(base.model, *eval_data, eval_options, group, moe_context.get(), device);
      }
      base.model->train();
      if (options.load_best_model_at_end && eval.loss < best_eval_loss) {
        best_eval_loss = eval.loss;
        best_step = done;
        best_weights.clear();
        for (const auto& p : trainable)
          best_weights.push_back(p.detach().to(torch::kCPU, true).clone());
      }
      if (main_rank) {
        Json line = {{"step", done}, {"eval_loss", eval.loss}};
        std::string per_dataset;
        if (eval.per_dataset.size() > 1)
          for (const auto& [name, loss] : eval.per_dataset) {
            line[fmt::format("eval_{}_loss", name)] = loss;
            per_dataset += fmt::format(" | {} {:.4f}", name, loss);
          }
        record(line);
        log::info("step {}: eval loss {:.4f} (perplexity {:.2f}){}", done, eval.loss,
                  std::exp(eval.loss), per_dataset);
      }
    }
    result.steps = done;
    if (state.consecutive_nonfinite >= options.max_nonfinite_steps) {
      result.checkpoint = save_checkpoint(done);
      fail(
          "training diverged: {} consecutive steps with a non-finite loss or gradient (last at "
          "step {}); checkpoint written to '{}'. Lower learning_rate or max_grad_norm, or check "
          "the data.",
          state.consecutive_nonfinite, done, result.checkpoint.string());
    }
    const bool signalled = g_stop_signal.load() != 0;
    const bool stop_here = run.stop_after_steps > 0 && steps_this_run >= run.stop_after_steps;
    if (options.save_steps > 0 && done % options.save_steps == 0 && done < total_steps)
      result.checkpoint = save_checkpoint(done);
    if ((signalled || stop_here) && done < total_steps) {
      if (result.checkpoint != out_dir / fmt::format("checkpoint-{}", done))
        result.checkpoint = save_checkpoint(done);
      result.interrupted = true;
      if (main_rank && options.plot_loss) write_loss_plots(out_dir);
      log::info("stopped{} at step {}/{}; checkpoint '{}'; rerun with --resume to continue",
                signalled ? (g_stop_signal == SIGTERM ? " by SIGTERM" : " by SIGINT") : "", done,
                total_steps, result.checkpoint.string());
      return result;
    }
  }
  result.skipped_nonfinite = state.skipped;

  // ---- result --------------------------------------------------------------------------------
  if (!best_weights.empty() && best_step != result.steps) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < trainable.size(); ++i) trainable[i].copy_(best_weights[i]);
    log::info("load_best_model_at_end: the result is step {} (eval_loss {:.4f})", best_step,
              best_eval_loss);
  }
  if (main_rank) {
    fs::path staging = out_dir / ".result-staging";
    fs::remove_all(staging);
    if (full) {
      model::SaveOptions save;
      save.tokenizer_source = fs::path(options.model_name_or_path);
      save.generation_config = base.generation_config;
      model::save_model(staging, base.config, base.model, save);
    } else {
      adapt::save_adapter(staging, *base.model, adapter_config, options.model_name_or_path);
    }
    move_files_into(staging, out_dir);
    if (options.plot_loss)
      for (const auto& plot : write_loss_plots(out_dir)) log::info("plot_loss: {}", plot.string());
    log::info("train: done, {} steps; result in '{}'", result.steps, out_dir.string());
  }
  group.barrier();
  return result;
}

}  // namespace ming::train
