// ming-train: the loop, resume, signals, data parallel, config errors. Runs on stories260K
// (the real pretrained llama2.c model, imported) with tiny adapters so every case stays fast.
#include <doctest/doctest.h>
#include <unistd.h>

#include <fstream>
#include <regex>

#include "ming/adapt/adapter_io.h"
#include "ming/bench/bench.h"
#include "ming/gen/generate.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "ming/model/llama2c.h"
#include "ming/model/load.h"
#include "ming/train/memory_plan.h"
#include "ming/train/trainer.h"
#include "support.h"
#include "train_fixture.h"

using namespace ming;
using ming::test::Fixture;
using ming::test::losses;
using ming::test::TempDir;
using ming::test::train_cmd;
namespace fs = std::filesystem;

TEST_CASE("train: the learning rate warms up linearly, then follows the schedule to zero") {
  CHECK(train::scheduled_lr("cosine", 1.0, 0, 10, 2) == doctest::Approx(0.5));
  CHECK(train::scheduled_lr("cosine", 1.0, 1, 10, 2) == doctest::Approx(1.0));
  CHECK(train::scheduled_lr("cosine", 1.0, 2, 10, 2) == doctest::Approx(1.0));
  CHECK(train::scheduled_lr("cosine", 1.0, 6, 10, 2) == doctest::Approx(0.5));
  CHECK(train::scheduled_lr("linear", 1.0, 6, 10, 2) == doctest::Approx(0.5));
  CHECK(train::scheduled_lr("constant", 1.0, 9, 10, 2) == doctest::Approx(1.0));
  CHECK(train::scheduled_lr("linear", 1.0, 10, 10, 0) == doctest::Approx(0.0));
}

TEST_CASE("train: MoLoRA on a mix of two formats lowers the loss, reloads and changes generation") {
  Fixture f;
  fs::path out = f.dir / "run";
  auto options = train::load_train_options(f.config(out, "max_steps: 30\n"), {});
  auto result = train::train(options);
  CHECK(result.steps == 30);
  auto l = losses(out / "metrics.jsonl");
  REQUIRE(l.size() == 30);
  io::for_each_jsonl(out / "metrics.jsonl", [&](const io::Json& r, int64_t) {
    if (r.contains("loss")) CHECK(r.at("peak_memory_bytes").get<double>() > 1e6);
  });
  double first = (l[0] + l[1] + l[2]) / 3, last = (l[27] + l[28] + l[29]) / 3;
  CHECK(last < 0.7 * first);
  CHECK(fs::exists(out / "adapter_config.json"));
  CHECK(fs::exists(out / "adapter_model.safetensors"));
  CHECK(fs::exists(out / "config.yaml"));

  model::LoadOptions lo;
  auto base = model::load_model(f.model, lo);
  auto tuned = model::load_model(f.model, lo);
  auto loaded = adapt::load_adapter(*tuned.model, out);
  CHECK(loaded.injected.adapters.size() == 5 * 7);
  auto prompt = base.tokenizer->encode("What is the dog called?", /*add_bos=*/true);
  std::vector<std::vector<int64_t>> prompts = {{prompt.begin(), prompt.end()}};
  gen::GenerateOptions g;
  g.max_new_tokens = 12;
  auto a = gen::generate(base.model, *base.tokenizer, prompts, g);
  auto b = gen::generate(tuned.model, *tuned.tokenizer, prompts, g);
  CHECK(a[0].tokens != b[0].tokens);
}

TEST_CASE(
    "train: a run killed with SIGKILL and resumed logs the same losses as one that never stopped") {
  Fixture f;
  fs::path straight = f.dir / "straight", killed = f.dir / "killed";
  const std::string extra =
      "max_steps: 40\nsave_steps: 4\nsave_total_limit: 2\nlora_dropout: 0.1\n";
  auto r1 = test::run_command(train_cmd(f.config(straight, extra), "-q"));
  REQUIRE_MESSAGE(r1.exit_code == 0, r1.err);
  // Kill as soon as the second checkpoint exists: well before the 40th step.
  auto r2 = test::run_command("( " + train_cmd(f.config(killed, extra), "-q") + " & pid=$!; " +
                              "while [ ! -d " + (killed / "checkpoint-8").string() +
                              " ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done; " +
                              "kill -9 $pid; wait $pid; echo killed:$? )");
  REQUIRE(r2.out.find("killed:137") != std::string::npos);
  REQUIRE_FALSE(fs::exists(killed / "adapter_model.safetensors"));
  auto r3 = test::run_command(train_cmd(f.config(killed, extra), "-q --resume"));
  REQUIRE_MESSAGE(r3.exit_code == 0, r3.err);
  auto a = losses(straight / "metrics.jsonl"), b = losses(killed / "metrics.jsonl");
  REQUIRE(a.size() == 40);
  REQUIRE(b.size() == 40);
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-6));
  auto wa = io::SafetensorsFile::open(straight / "adapter_model.safetensors");
  auto wb = io::SafetensorsFile::open(killed / "adapter_model.safetensors");
  for (const auto& t : wa->tensors())
    CHECK(torch::allclose(wa->get(t.name), wb->get(t.name), 1e-5, 1e-6));
  // Only the last save_total_limit checkpoints are kept.
  int n = 0;
  for (const auto& e : fs::directory_iterator(killed))
    n += e.path().filename().string().rfind("checkpoint-", 0) == 0;
  CHECK(n == 2);
}

TEST_CASE("train: SIGTERM writes a checkpoint at the next step and exits cleanly") {
  Fixture f;
  fs::path out = f.dir / "term";
  auto r = test::run_command("( " + train_cmd(f.config(out, "max_steps: 100000\n")) +
                             " & pid=$!; while [ ! -s " + (out / "metrics.jsonl").string() +
                             " ]; do sleep 0.01; done; kill -TERM $pid; wait $pid; echo rc:$? )");
  CHECK(r.out.find("rc:1") != std::string::npos);
  CHECK(r.err.find("stopped by SIGTERM") != std::string::npos);
  bool found = false;
  for (const auto& e : fs::directory_iterator(out))
    found = found || e.path().filename().string().rfind("checkpoint-", 0) == 0;
  CHECK(found);
}

TEST_CASE(
    "train: two ranks on 127.0.0.1 end with the adapter of one rank with the same global batch") {
  Fixture f;
  fs::path one = f.dir / "one", two = f.dir / "two";
  const std::string common = "max_steps: 5\n";
  auto r1 = test::run_command(
      train_cmd(f.config(one, common + "per_device_train_batch_size: 4\n"), "-q"));
  REQUIRE_MESSAGE(r1.exit_code == 0, r1.err);
  const std::string cfg2 = f.config(two, common + "per_device_train_batch_size: 2\n");
  const int port = 29000 + static_cast<int>(::getpid() % 900);
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
  auto r2 = test::run_command("( " + env + " RANK=0 LOCAL_RANK=0 " + train_cmd(cfg2, "-q") +
                              " & p0=$!; " + env + " RANK=1 LOCAL_RANK=1 " + train_cmd(cfg2, "-q") +
                              " & p1=$!; wait $p0; a=$?; wait $p1; b=$?; echo rc:$a:$b )");
  REQUIRE_MESSAGE(r2.out.find("rc:0:0") != std::string::npos, r2.err);
  auto a = losses(one / "metrics.jsonl"), b = losses(two / "metrics.jsonl");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-4));
  auto wa = io::SafetensorsFile::open(one / "adapter_model.safetensors");
  auto wb = io::SafetensorsFile::open(two / "adapter_model.safetensors");
  REQUIRE(wa->tensors().size() == wb->tensors().size());
  // Adam divides by sqrt(v): summation-order noise in near-zero gradients moves a weight by up to
  // ~lr per step, so compare against the size of the updates rather than bitwise.
  for (const auto& t : wa->tensors()) {
    double diff = (wa->get(t.name) - wb->get(t.name)).abs().max().item<double>();
    CHECK_MESSAGE(diff < 5e-3, t.name, " differs by ", diff);
  }
}

TEST_CASE("train: full fine-tuning lowers the loss and writes a loadable model folder") {
  Fixture f;
  fs::path out = f.dir / "full";
  auto options = train::load_train_options(f.config(out, "learning_rate: 0.003\nmax_steps: 15\n"),
                                           {"finetuning_type=full"});
  train::train(options);
  auto l = losses(out / "metrics.jsonl");
  REQUIRE(l.size() == 15);
  CHECK(l.back() < l.front());
  auto m = model::load_model(out);
  CHECK(m.config.num_hidden_layers == 5);
  CHECK(m.tokenizer);
}

TEST_CASE("train: config errors exit 2 naming the key or file") {
  Fixture f;
  fs::path out = f.dir / "bad";
  const std::string cfg = f.config(out);
  auto unknown = test::run_command(train_cmd(cfg, "--set learning_rat=1"));
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("unknown key 'learning_rat'") != std::string::npos);
  auto type = test::run_command(train_cmd(cfg, "--set max_steps=many"));
  CHECK(type.exit_code == 2);
  CHECK(type.err.find("key 'max_steps': expected an integer") != std::string::npos);
  auto topk = test::run_command(train_cmd(cfg, "--set moe.top_k=5"));
  CHECK(topk.exit_code == 2);
  CHECK(topk.err.find("moe.top_k") != std::string::npos);
  auto missing = test::run_command(train_cmd(cfg, "--set dataset.0.path=/nonexistent/x.jsonl"));
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("/nonexistent/x.jsonl") != std::string::npos);
}

TEST_CASE("train: an unreadable JSONL line is named by file and line") {
  Fixture f;
  fs::path out = f.dir / "badline";
  std::string text = test::read_text(f.alpaca);
  test::write_text(f.alpaca, text + "{not json\n");
  auto stop = test::run_command(train_cmd(f.config(out), "--set bad_example_policy=stop"));
  CHECK(stop.exit_code == 2);
  CHECK(stop.err.find(f.alpaca.string() + ":25") != std::string::npos);
  auto skip = test::run_command(train_cmd(f.config(out), "--set max_steps=1"));
  CHECK(skip.exit_code == 0);
  CHECK(skip.err.find(":25") != std::string::npos);
}

TEST_CASE("train: --plan predicts memory from config.json alone and finds the batch that fits") {
  test::TempDir dir;
  const fs::path model = dir / "model";
  fs::create_directories(model);
  auto shape = bench::model_shape("qwen2-0.5b");
  test::write_text(model / "config.json", shape.to_json().dump());
  const std::string config = (dir / "plan.yaml").string();
  test::write_text(config, "model_name_or_path: " + model.string() +
                               "\ndataset:\n  - {path: none.jsonl, format: alpaca}\n"
                               "cutoff_len: 512\nper_device_train_batch_size: 4\n");
  auto options = train::load_train_options(config, {});
  auto plan = train::plan_memory(shape, options);
  CHECK(plan.weights == doctest::Approx(2.0 * double(shape.parameter_count())));
  CHECK(plan.trainable_parameters > 50'000'000);  // MING-MOE's layout on 24 layers
  options.gradient_checkpointing = false;
  auto plain = train::plan_memory(shape, options);
  CHECK(plain.activations > 3 * plan.activations);
  options.gradient_checkpointing = true;
  const int64_t fits = train::largest_batch(shape, options, 20e9);
  REQUIRE(fits > 4);
  options.per_device_train_batch_size = fits;
  CHECK(train::plan_memory(shape, options).total() <= 20e9);
  options.per_device_train_batch_size = fits + 1;
  CHECK(train::plan_memory(shape, options).total() > 20e9);
  CHECK(train::largest_batch(shape, options, 1e9) == 0);  // the weights alone do not fit

  auto r = test::run_command(train_cmd(config, "--plan --plan-memory 20GB"));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("predicted peak") != std::string::npos);
  CHECK(r.out.find("largest per-device batch within 20.00 GB: " + std::to_string(fits)) !=
        std::string::npos);
  CHECK(test::run_command(train_cmd(config, "--plan --plan-memory lots")).exit_code == 2);
}
