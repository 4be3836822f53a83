// Route tracing through a real (tiny, random) model and ming-route-stats end to end: padded
// batches trace what single-example forwards route, data files of several shapes become
// per-task statistics, and bad trace files exit 2 naming the file without leaving an output
// folder behind.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "ming/adapt/config.h"
#include "ming/core/error.h"
#include "ming/route/inputs.h"
#include "ming/route/stats.h"
#include "ming/route/trace.h"
#include "support.h"
#include "test_route_support.h"

namespace ming {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

test::CommandResult route_stats(const std::string& args) {
  return test::run_command(q(test::tool("ming-route-stats")) + " " + args);
}

std::vector<route::TraceExample> read_all(const fs::path& path) {
  route::RouteTraceReader reader(path);
  std::vector<route::TraceExample> out;
  route::TraceExample ex;
  while (reader.next(ex)) out.push_back(ex);
  return out;
}

TEST_CASE("route collect: padded batches trace the same experts as one-example forwards") {
  test::TempDir tmp("ming-route-collect");
  torch::manual_seed(7);
  auto config = test::tiny_route_config();
  model::CausalLM m(config, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.3);
  auto injected = adapt::inject_adapters(*m, test::tiny_molora_config(4, 2));
  {
    torch::NoGradGuard g;
    for (auto& [name, a] : injected.adapters)
      std::dynamic_pointer_cast<adapt::MoloraAdapter>(a)->router_weight.normal_(0, 2.0);
  }
  std::vector<route::TokenizedExample> examples = {{{1, 40, 41, 42, 43, 44, 45}, "long", "A"},
                                                   {{1, 7, 9}, "short", "B"},
                                                   {{1, 300, 301, 302}, "mid", "A"}};
  auto trace = [&](const fs::path& path, int64_t batch) {
    route::RouteTraceWriter writer(path);
    route::CollectOptions options;
    options.batch_size = batch;
    options.progress = false;
    route::collect_routes(*m, injected, examples, writer, options);
    writer.close();
  };
  trace(tmp / "batched.trace", 3);
  trace(tmp / "single.trace", 1);
  CHECK(injected.context->recorder() == nullptr);  // restored afterwards
  auto batched = read_all(tmp / "batched.trace"), single = read_all(tmp / "single.trace");
  REQUIRE(batched.size() == 3);
  REQUIRE(single.size() == 3);
  route::RouteTraceReader reader(tmp / "batched.trace");
  CHECK(reader.layers().size() == 2 * 3);  // 2 layers x gate/up/down
  for (size_t i = 0; i < 3; ++i) {
    INFO(examples[i].id);
    CHECK(batched[i].id == examples[i].id);
    CHECK(batched[i].task == examples[i].task);
    CHECK(batched[i].tokens == int64_t(examples[i].tokens.size()));
    for (size_t l = 0; l < batched[i].experts.size(); ++l) {
      CHECK(batched[i].experts[l] == single[i].experts[l]);
      for (size_t j = 0; j < batched[i].gates[l].size(); ++j)
        CHECK(batched[i].gates[l][j] == doctest::Approx(single[i].gates[l][j]).epsilon(2e-3));
    }
  }
}

TEST_CASE("route inputs: task from record or file name, ids, and records of each supported shape") {
  test::TempDir tmp("ming-route-inputs");
  fs::create_directories(tmp / "suite" / "qa");
  test::write_text(
      tmp / "suite" / "qa" / "test.jsonl",
      "{\"id\": 7, \"prompt\": \"Hi\", \"output\": \"Hello\"}\n"
      "{\"question\": \"Q?\", \"options\": {\"A\": \"x\", \"B\": \"y\"}, \"answer_idx\": \"B\"}\n"
      "{\"task\": \"chat\", \"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, "
      "{\"from\": \"gpt\", \"value\": \"b\"}]}\n"
      "{\"text\": \"once upon a time\"}\n");
  CHECK(route::task_from_path("data/medqa.jsonl") == "medqa");
  CHECK(route::task_from_path("suite/medqa/dev.jsonl") == "medqa");
  route::InputOptions options;
  options.use_task_specs = false;
  auto in = route::read_trace_inputs(tmp / "suite" / "qa" / "test.jsonl", options);
  REQUIRE(in.size() == 4);
  CHECK(in[0].task == "qa");
  CHECK(in[0].id == "7");
  CHECK(in[0].messages.size() == 2);
  CHECK(in[0].messages[1].content == "Hello");
  CHECK(in[1].id == "test:2");
  CHECK(in[1].messages[0].content == "Q?\nA. x\nB. y\nAnswer:");
  CHECK(in[1].messages[1].content == "B");
  CHECK(in[2].task == "chat");
  CHECK(in[2].messages[1].content == "b");
  CHECK(in[3].is_text);
  options.limit = 2;
  CHECK(route::read_trace_inputs(tmp / "suite" / "qa" / "test.jsonl", options).size() == 2);
  test::write_text(tmp / "bad.jsonl", "{\"id\": \"x\", \"foo\": 1}\n");
  CHECK_THROWS_WITH_AS(
      route::read_trace_inputs(tmp / "bad.jsonl", options),
      doctest::Contains("bad.jsonl:1: cannot tell what text to trace from keys [foo, id]"),
      UsageError);
}

TEST_CASE(
    "ming-route-stats: a missing or corrupt trace exits 2 naming the file, leaving no output "
    "folder") {
  test::TempDir tmp("ming-route-cli");
  auto r = route_stats(q(tmp / "nope.trace") + " -o " + q(tmp / "out"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("nope.trace") != std::string::npos);
  test::write_text(tmp / "bad.trace", std::string("MINGRTRC\x01\0\0\0\xff\0\0\0{", 17));
  r = route_stats(q(tmp / "bad.trace") + " -o " + q(tmp / "out"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("bad.trace") != std::string::npos);
  CHECK(r.err.find("truncated") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "out"));
  for (const auto& e : fs::directory_iterator(tmp.path()))
    CHECK(e.path().filename().string().find("out") == std::string::npos);  // no staging folder
}

TEST_CASE(
    "ming-route-stats: runs a model with a MoLoRA adapter over two task files and reports per "
    "task") {
  test::TempDir tmp("ming-route-cli");
  test::write_tiny_route_model(tmp / "model", tmp / "adapter", 5);
  test::write_tiny_route_model(tmp / "model2", tmp / "adapter2", 6);  // a second adapter to compare
  std::string stories, questions;
  for (int i = 0; i < 4; ++i) {
    stories += fmt::format(
        "{{\"id\": \"s{}\", \"prompt\": \"Tell me a story about a cat number {}.\", \"output\": "
        "\"Once upon a time there was a little cat. It liked to play in the sun.\"}}\n",
        i, i);
    questions += fmt::format(
        "{{\"id\": \"q{}\", \"task\": \"quiz\", \"question\": \"What is {} plus one?\", "
        "\"options\": {{\"A\": \"two\", \"B\": \"three\"}}, \"answer_idx\": \"A\"}}\n",
        i, i);
  }
  test::write_text(tmp / "stories.jsonl", stories);
  test::write_text(tmp / "questions.jsonl", questions);
  auto r = route_stats("--model " + q(tmp / "model") + " --adapter " + q(tmp / "adapter") +
                       " --compare-adapter " + q(tmp / "adapter2") + " --data " +
                       q(tmp / "stories.jsonl") + "," + q(tmp / "questions.jsonl") +
                       " --limit 3 -b 2 --threads 1 --save-trace " + q(tmp / "saved.trace") +
                       " -o " + q(tmp / "out"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("6 examples") != std::string::npos);
  CHECK(r.out.find("task stories") != std::string::npos);
  CHECK(r.out.find("task quiz") != std::string::npos);
  CHECK(r.out.find("highest task-expert mutual information") != std::string::npos);
  CHECK(r.out.find("compare with") != std::string::npos);
  CHECK(fs::exists(tmp / "saved.trace"));
  CHECK(fs::exists(tmp / "saved.compare.trace"));

  auto stats = json::parse(test::read_text(tmp / "out" / "route_stats.json"));
  REQUIRE(stats["tasks"].size() == 2);
  CHECK(stats["tasks"][0]["name"] == "stories");
  CHECK(stats["tasks"][0]["examples"] == 3);
  CHECK(stats["tasks"][1]["name"] == "quiz");
  CHECK(stats["layers"].size() == 6);
  CHECK(stats["meta"]["adapter"] == (tmp / "adapter").string());
  for (const auto& layer : stats["layers"]) {
    for (const char* task : {"stories", "quiz"}) {
      double sum = 0;
      for (double v : layer["task_shares"][task]) sum += v;
      CHECK(sum == doctest::Approx(1.0));
    }
  }
  // The two tasks' texts differ, so the routers' choices carry some task information somewhere.
  double max_mi = 0;
  for (const auto& layer : stats["layers"])
    max_mi = std::max(max_mi, layer["mi_bits"].get<double>());
  CHECK(max_mi > 0.0);
  auto tasks_csv = test::read_text(tmp / "out" / "tasks.csv");
  CHECK(tasks_csv.find(",stories,") != std::string::npos);
  CHECK(tasks_csv.find(",quiz,") != std::string::npos);
  CHECK(fs::exists(tmp / "out" / "compare.csv"));
  CHECK(fs::exists(tmp / "out" / "tasks_down_proj.svg"));

  // The saved trace reads back on its own, and compares with itself as unchanged.
  r = route_stats(q(tmp / "saved.trace") + " --compare " + q(tmp / "saved.trace"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("mean load total variation 0.000") != std::string::npos);
}

}  // namespace
}  // namespace ming
