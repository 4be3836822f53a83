// ming-eval end to end: outputs on a tiny random model, --compare, and exit status 2 with a
// message naming the file/line/field for bad tasks and data.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "support.h"
#include "test_eval_runner_fixture.h"

namespace ming {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::istringstream in(test::read_text(p));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

struct CliToy {
  test::TempDir tmp{"ming-eval-cli"};
  fs::path suite = tmp / "suite";
  CliToy() {
    fs::create_directories(suite / "toy");
    test::write_text(suite / "toy" / "test.jsonl", test::toy_mc_jsonl(8));
    test::write_text(tmp / "toy-mc.yaml", test::toy_mc_yaml());
    test::write_text(tmp / "toy-gen.yaml", test::toy_gen_yaml());
  }
  test::CommandResult eval(const std::string& args) {
    return test::run_command(q(test::tool("ming-eval")) + " --suite " + q(suite) + " " + args);
  }
};

TEST_CASE("ming-eval: writes predictions.jsonl, metrics.json and a table for each task") {
  CliToy t;
  test::write_tiny_eval_model(t.tmp / "model");
  auto r = t.eval("--model " + q(t.tmp / "model") + " --tasks " + q(t.tmp / "toy-mc.yaml") + "," +
                  q(t.tmp / "toy-gen.yaml") + " --limit 6 -b 4 --bootstrap 100 --threads 1 -o " +
                  q(t.tmp / "out"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("toy-mc") != std::string::npos);
  CHECK(r.out.find("toy-gen") != std::string::npos);
  CHECK(r.out.find("accuracy") != std::string::npos);
  CHECK(r.out.find("overall:") != std::string::npos);
  CHECK(r.err.find("toy-mc: 6/6 examples") != std::string::npos);

  auto preds = read_jsonl(t.tmp / "out" / "predictions.jsonl");
  REQUIRE(preds.size() == 12);
  for (const auto& p : preds)
    for (const char* key : {"id", "task", "prompt", "output", "parsed", "gold", "score", "stats"})
      CHECK_MESSAGE(p.contains(key), key);
  CHECK(preds[0]["task"] == "toy-mc");
  CHECK(preds[0]["choices"].size() == 4);
  CHECK(preds[6]["task"] == "toy-gen");
  CHECK(preds[6].contains("finish"));

  auto m = json::parse(test::read_text(t.tmp / "out" / "metrics.json"));
  for (const char* task : {"toy-mc", "toy-gen"}) {
    const auto& acc = m["tasks"][task]["metrics"]["accuracy"];
    CHECK(m["tasks"][task]["n"] == 6);
    CHECK(acc["ci_low"].get<double>() <= acc["value"].get<double>());
    CHECK(acc["value"].get<double>() <= acc["ci_high"].get<double>());
    // The value is the mean of the per-example scores in predictions.jsonl.
    double sum = 0;
    for (const auto& p : preds)
      if (p["task"] == task) sum += p["score"].get<double>();
    CHECK(acc["value"].get<double>() == doctest::Approx(sum / 6));
  }
  const double mean = (m["tasks"]["toy-mc"]["metrics"]["accuracy"]["value"].get<double>() +
                       m["tasks"]["toy-gen"]["metrics"]["accuracy"]["value"].get<double>()) /
                      2;
  CHECK(m["overall"]["primary_mean"].get<double>() == doctest::Approx(mean));
  CHECK(m["run"]["limit"] == 6);
  // English prompts: tok512 has pieces for them, no byte fallback.
  CHECK(m["tasks"]["toy-mc"]["prompts"]["byte_piece_fraction"].get<double>() < 0.01);

  // Comparing a run with itself: paired, zero difference, not significant.
  auto c = t.eval("--compare " + q(t.tmp / "out" / "metrics.json") + " " +
                  q(t.tmp / "out" / "metrics.json"));
  INFO(c.err);
  CHECK(c.exit_code == 0);
  CHECK(c.out.find("toy-mc") != std::string::npos);
  CHECK(c.out.find("unpaired") == std::string::npos);
}

// A run folder with n examples of task "qa" whose first n_right are correct.
void write_run(const fs::path& dir, int n, int n_right, bool with_predictions) {
  fs::create_directories(dir);
  const double acc = double(n_right) / n;
  json m = {
      {"format", "ming-eval-metrics"},
      {"tasks",
       {{"qa",
         {{"n", n},
          {"primary", "accuracy"},
          {"metrics",
           {{"accuracy", {{"value", acc}, {"ci_low", acc - 0.1}, {"ci_high", acc + 0.1}}}}}}}}}};
  test::write_text(dir / "metrics.json", m.dump());
  if (!with_predictions) return;
  std::string lines;
  for (int i = 0; i < n; ++i)
    lines += json({{"id", "q" + std::to_string(i)},
                   {"task", "qa"},
                   {"stats", {{"accuracy", {{"value", i < n_right ? 1.0 : 0.0}, {"count", 1.0}}}}}})
                 .dump() +
             "\n";
  test::write_text(dir / "predictions.jsonl", lines);
}

TEST_CASE("ming-eval --compare: paired bootstrap by id, CI overlap without predictions") {
  CliToy t;
  write_run(t.tmp / "a", 40, 36, true);
  write_run(t.tmp / "b", 40, 12, true);
  auto r = t.eval("--compare " + q(t.tmp / "a" / "metrics.json") + " " +
                  q(t.tmp / "b" / "metrics.json") + " --bootstrap 200 -o " + q(t.tmp / "cmp"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto cmp = json::parse(test::read_text(t.tmp / "cmp" / "comparison.json"));
  const auto& qa = cmp["tasks"]["qa"];
  CHECK(qa["paired"] == true);
  CHECK(qa["n_paired"] == 40);
  CHECK(qa["delta"].get<double>() == doctest::Approx(0.6));
  CHECK(qa["p_value"].get<double>() < 0.01);
  CHECK(qa["significant"] == true);
  CHECK(r.out.find("+60.00") != std::string::npos);

  // One example apart: a tiny difference, far from significant.
  write_run(t.tmp / "c", 40, 35, true);
  r = t.eval("--compare " + q(t.tmp / "a" / "metrics.json") + " " +
             q(t.tmp / "c" / "metrics.json") + " --bootstrap 200 -o " + q(t.tmp / "cmp2"));
  cmp = json::parse(test::read_text(t.tmp / "cmp2" / "comparison.json"));
  CHECK(cmp["tasks"]["qa"]["p_value"].get<double>() > 0.2);
  CHECK(cmp["tasks"]["qa"]["significant"] == false);

  write_run(t.tmp / "d", 40, 12, false);
  r = t.eval("--compare " + q(t.tmp / "a" / "metrics.json") + " " +
             q(t.tmp / "d" / "metrics.json"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("unpaired: no predictions.jsonl beside") != std::string::npos);
  CHECK(r.out.find("CI overlap") != std::string::npos);

  r = t.eval("--compare " + q(t.tmp / "a" / "metrics.json") + " " + q(t.tmp / "nope.json"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("nope.json: no such file") != std::string::npos);
}

TEST_CASE("ming-eval: a malformed task file exits 2 naming the file, line and field") {
  CliToy t;
  test::write_text(t.tmp / "bad.yaml",
                   test::toy_mc_yaml("toy-mc", "letter", "[accuracy, acuracy]"));
  auto r = t.eval("--model " + q(t.tmp / "no-model") + " --tasks " + q(t.tmp / "bad.yaml"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find((t.tmp / "bad.yaml").string() + ":13:") != std::string::npos);
  CHECK(r.err.find("metrics: unknown metric 'acuracy'") != std::string::npos);
}

TEST_CASE("ming-eval: bad task data exits 2 naming the file, line and field") {
  CliToy t;
  test::write_text(t.suite / "toy" / "test.jsonl",
                   test::toy_mc_jsonl(1) +
                       "{\"id\": \"x\", \"options\": {\"A\": \"a\"}, \"answer_idx\": \"A\"}\n");
  auto r = t.eval("--model " + q(t.tmp / "no-model") + " --tasks " + q(t.tmp / "toy-mc.yaml"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("toy/test.jsonl:2: field 'question'") != std::string::npos);

  test::write_text(t.suite / "toy" / "test.jsonl",
                   test::toy_mc_jsonl(1) +
                       "{\"id\": \"x\", \"question\": \"q\", \"options\": {\"A\": \"a\", \"B\": "
                       "\"b\"}, \"answer_idx\": \"C\"}\n");
  r = t.eval("--model " + q(t.tmp / "no-model") + " --tasks " + q(t.tmp / "toy-mc.yaml"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(
            "toy/test.jsonl:2: field 'answer_idx': answer letter 'C' is not among the options") !=
        std::string::npos);
}

TEST_CASE("ming-eval: an unknown task name exits 2 listing the available tasks") {
  CliToy t;
  auto r = t.eval("--model " + q(t.tmp / "no-model") + " --tasks medqa,no-such-task");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("no-such-task") != std::string::npos);
  CHECK(r.err.find("known tasks: ") != std::string::npos);
  CHECK(r.err.find("pubmedqa") != std::string::npos);
  r = t.eval("--tasks medqa");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--model is required") != std::string::npos);
}

}  // namespace
}  // namespace ming

namespace ming {
namespace {

// metrics.json without what describes the run rather than the scores (run block, timings,
// prompt tokenization).
json scores_only(json m) {
  m.erase("run");
  for (auto& [name, t] : m["tasks"].items()) {
    t.erase("seconds");
    t.erase("examples_per_second");
    t.erase("prompts");  // tokenizer statistics: only a run with the model has them
  }
  return m;
}

}  // namespace

TEST_CASE("ming-eval --score: a run's own predictions.jsonl gives back its metrics.json exactly") {
  CliToy t;
  test::write_tiny_eval_model(t.tmp / "model");
  const std::string tasks = q(t.tmp / "toy-mc.yaml") + "," + q(t.tmp / "toy-gen.yaml");
  auto r = t.eval("--model " + q(t.tmp / "model") + " --tasks " + tasks +
                  " --limit 6 -b 4 --bootstrap 200 --threads 1 -o " + q(t.tmp / "run"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto s = t.eval("--score " + q(t.tmp / "run" / "predictions.jsonl") + " --tasks " + tasks +
                  " --bootstrap 200 -o " + q(t.tmp / "rescored"));
  INFO(s.err);
  REQUIRE(s.exit_code == 0);
  const json run = json::parse(test::read_text(t.tmp / "run" / "metrics.json"));
  const json rescored = json::parse(test::read_text(t.tmp / "rescored" / "metrics.json"));
  CHECK(scores_only(run) == scores_only(rescored));  // bit-equal values and intervals
  CHECK(rescored["run"]["tool"] == "ming-eval --score");
  // The table differs only in nothing: same rows.
  CHECK(s.out.substr(0, s.out.find("wrote")) == r.out.substr(0, r.out.find("wrote")));
  // Rescored predictions carry the per-example stats, so --compare pairs them with the run.
  auto c = t.eval("--compare " + q(t.tmp / "run" / "metrics.json") + " " +
                  q(t.tmp / "rescored" / "metrics.json"));
  CHECK(c.exit_code == 0);
  CHECK(c.out.find("unpaired") == std::string::npos);
}

TEST_CASE("ming-eval --score: bad predictions exit 2 naming the file, line and field") {
  CliToy t;
  const std::string task = " --tasks " + q(t.tmp / "toy-gen.yaml");
  auto score = [&](const std::string& lines) {
    test::write_text(t.tmp / "preds.jsonl", lines);
    return t.eval("--score " + q(t.tmp / "preds.jsonl") + task + " -o " + q(t.tmp / "out"));
  };
  auto r = score(
      "{\"task\": \"toy-gen\", \"id\": \"toy-0\", \"output\": \"A\"}\n"
      "{\"task\": \"medqa\", \"id\": \"toy-1\", \"output\": \"B\"}\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("preds.jsonl:2: field 'task': 'medqa' is not among --tasks (toy-gen)") !=
        std::string::npos);
  r = score("{\"task\": \"toy-gen\", \"id\": \"nope\", \"output\": \"A\"}\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("preds.jsonl:1: field 'id': 'nope' is not a record of task toy-gen") !=
        std::string::npos);
  r = score("{\"task\": \"toy-gen\", \"id\": \"toy-0\"}\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("preds.jsonl:1: field 'output': missing") != std::string::npos);
  r = score(
      "{\"task\": \"toy-gen\", \"id\": \"toy-0\", \"output\": \"A\"}\n"
      "{\"task\": \"toy-gen\", \"id\": \"toy-0\", \"output\": \"B\"}\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("preds.jsonl:2: field 'id': a second output for record 'toy-0'") !=
        std::string::npos);
}

TEST_CASE("ming-eval: a CSV task with a missing column or a foreign answer letter exits 2") {
  CliToy t;
  test::write_text(t.tmp / "exam.yaml",
                   "name: exam\nlanguage: zh\ndata: \"{data}/exam.csv\"\n"
                   "prompt: \"{Question}\\n{Options}\"\ngold: Answer\nscorer: loglik_choice\n"
                   "choices:\n  field: Options\nmetrics: [accuracy]\n");
  auto eval = [&] {
    return t.eval("--model " + q(t.tmp / "no-model") + " --tasks " + q(t.tmp / "exam.yaml") +
                  " --data " + q(t.tmp.path()));
  };
  test::write_text(t.tmp / "exam.csv", "Question,Answer\nq1,A\n");
  auto r = eval();
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("exam.csv:2: column 'Options': missing (the prompt uses {Options})") !=
        std::string::npos);
  test::write_text(t.tmp / "exam.csv",
                   "Question,Options,Answer\nq1,\"A x\nB y\",A\nq2,\"A x\nB y\",AC\n");
  r = eval();
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("exam.csv:4: field 'Answer': answer 'AC': answer letter 'C' is not among the "
                   "options (A, B)") != std::string::npos);
}

TEST_CASE("ming-eval: prompts the tokenizer can only spell in byte pieces are counted per task") {
  CliToy t;
  test::write_tiny_eval_model(t.tmp / "model");
  test::write_text(
      t.suite / "toy" / "test.jsonl",
      "{\"id\": \"a\", \"question\": \"亚急性感染性心内膜炎的主要致病菌是？\", "
      "\"options\": {\"A\": \"淋球菌\", \"B\": \"草绿色链球菌\"}, \"answer_idx\": \"B\"}\n");
  auto r = t.eval("--model " + q(t.tmp / "model") + " --tasks " + q(t.tmp / "toy-mc.yaml") +
                  " --bootstrap 10 --threads 1 -o " + q(t.tmp / "zh"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto m = json::parse(test::read_text(t.tmp / "zh" / "metrics.json"));
  const auto& p = m["tasks"]["toy-mc"]["prompts"];
  CHECK(p["byte_pieces"].get<int64_t>() > 0);
  // Each Chinese character is three byte pieces; the English frame is a minority of tokens.
  CHECK(p["byte_piece_fraction"].get<double>() > 0.5);
}

}  // namespace ming
