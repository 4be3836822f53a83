// Task specifications: every shipped task loads; mistakes are reported with file, line, field.
#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/eval/task.h"
#include "support.h"

using namespace ming::eval;
using ming::test::TempDir;
using ming::test::write_text;
using nlohmann::json;

namespace {

const char* kGoodTask = R"(name: toy
language: en
data: "{suite}/toy/{split}.jsonl"
prompt: |-
  Q: {question}
  {options}
  Answer:
gold: answer_idx
scorer: loglik_choice
choices:
  field: options
metrics: [accuracy]
)";

std::string load_error(const std::string& yaml, TempDir& dir) {
  auto path = dir / "task.yaml";
  write_text(path, yaml);
  try {
    load_task_spec(path.string());
  } catch (const ming::UsageError& e) {
    return e.what();
  }
  return "";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto pos = s.find(from);
  REQUIRE(pos != std::string::npos);
  return s.replace(pos, from.size(), to);
}

}  // namespace

TEST_CASE("task spec: every file under share/tasks loads and is named after its file") {
  auto share = ming::test::source_dir() / "share";
  auto names = list_tasks(share);
  REQUIRE(names.size() >= 13);
  for (const auto& name : names) {
    INFO(name);
    TaskSpec spec = load_task_spec(name, share);
    CHECK(spec.name == name);
    CHECK_FALSE(spec.metrics.empty());
    const std::string path = task_data_path(spec, "/s", "", "/d").string();
    CHECK((path.rfind("/s/", 0) == 0 || path.rfind("/d/", 0) == 0));
  }
  TaskSpec pc = load_task_spec("promptcblue", share);
  CHECK((pc.metrics == std::vector<Metric>{Metric::promptcblue}));
  CHECK(pc.split == "dev");
}

TEST_CASE("task spec: a good file loads with its defaults") {
  TempDir dir;
  write_text(dir / "toy.yaml", kGoodTask);
  TaskSpec s = load_task_spec((dir / "toy.yaml").string());
  CHECK(s.scorer == Scorer::loglik_choice);
  CHECK(s.choices_field == "options");
  CHECK(s.continuation_is_letter);
  CHECK(s.split == "test");
  CHECK(s.max_new_tokens == 256);
  CHECK(task_data_path(s, "/suite", "dev") == "/suite/toy/dev.jsonl");
}

TEST_CASE("task spec: unknown metric names the file, line and field") {
  TempDir dir;
  std::string err = load_error(replace(kGoodTask, "[accuracy]", "[accuracy, rouge9]"), dir);
  CHECK(err.find("task.yaml:12:") != std::string::npos);
  CHECK(err.find("metrics: unknown metric 'rouge9'") != std::string::npos);
}

TEST_CASE("task spec: missing field, unknown key and unknown scorer are all reported together") {
  TempDir dir;
  std::string yaml = replace(kGoodTask, "gold: answer_idx\n", "");
  yaml = replace(yaml, "scorer: loglik_choice", "scorer: beam\ntemperature: 0.7");
  std::string err = load_error(yaml, dir);
  CHECK(err.find("3 problems") != std::string::npos);
  CHECK(err.find("gold: missing required field") != std::string::npos);
  CHECK(err.find("task.yaml:9:1: temperature: unknown key") != std::string::npos);
  CHECK(err.find("task.yaml:8:9: scorer: unknown scorer 'beam'") != std::string::npos);
}

TEST_CASE("task spec: incompatible settings and bad templates are rejected") {
  TempDir dir;
  CHECK(
      load_error(replace(kGoodTask, "[accuracy]", "[rougeL]"), dir).find("needs generated text") !=
      std::string::npos);
  CHECK(load_error(replace(kGoodTask, "Q: {question}", "Q: {question"), dir).find("prompt:") !=
        std::string::npos);
  CHECK(load_error(replace(kGoodTask, "language: en", "language: fr"), dir).find("language:") !=
        std::string::npos);
  CHECK(load_error(replace(kGoodTask, "metrics: [accuracy]",
                           "metrics: [accuracy]\ngeneration:\n  max_new_tokens: many"),
                   dir)
            .find("generation.max_new_tokens: expected an integer") != std::string::npos);
  CHECK(load_error("name: [unclosed", dir).find("YAML syntax error") != std::string::npos);
  CHECK_THROWS_AS(load_task_spec("no-such-task", ming::test::source_dir() / "share"),
                  ming::UsageError);
}

TEST_CASE("task spec: records are validated with file, line and field") {
  TempDir dir;
  write_text(dir / "toy.yaml", kGoodTask);
  TaskSpec s = load_task_spec((dir / "toy.yaml").string());
  std::filesystem::create_directories(dir / "suite/toy");
  const std::string good =
      R"({"id":"q1","question":"2+2?","options":{"A":"3","B":"4"},"answer_idx":"B"})";
  write_text(dir / "suite/toy/test.jsonl",
             good + "\n" +
                 R"({"id":"q2","question":"x","options":{"A":"3","B":"4"},"answer_idx":"E"})" +
                 "\n");
  try {
    load_task_records(s, dir / "suite");
    FAIL("expected a UsageError");
  } catch (const ming::UsageError& e) {
    std::string msg = e.what();
    CHECK(msg.find("toy/test.jsonl:2:") != std::string::npos);
    CHECK(msg.find("field 'answer_idx': answer letter 'E' is not among the options (A, B)") !=
          std::string::npos);
  }
  write_text(dir / "suite/toy/test.jsonl",
             good + "\n\n" + R"({"id":"q3","options":{"A":"3"},"answer_idx":"A"})" + "\n");
  try {
    load_task_records(s, dir / "suite");
    FAIL("expected a UsageError");
  } catch (const ming::UsageError& e) {
    std::string msg = e.what();
    CHECK(msg.find("toy/test.jsonl:3: field 'question'") != std::string::npos);
  }
  write_text(dir / "suite/toy/test.jsonl", good + "\n" + good + "\n");
  CHECK_THROWS_WITH_AS(load_task_records(s, dir / "suite"), doctest::Contains("duplicate id 'q1'"),
                       ming::UsageError);
  write_text(dir / "suite/toy/test.jsonl", good + "\n");
  auto recs = load_task_records(s, dir / "suite");
  REQUIRE(recs.size() == 1);
  CHECK(render_prompt(s, recs[0].data) == "Q: 2+2?\nA. 3\nB. 4\nAnswer:");
  Choices c = record_choices(s, recs[0].data);
  CHECK(c.continuations == std::vector<std::string>{" A", " B"});
  CHECK(c.gold == 1);
  CHECK_THROWS_WITH_AS(load_task_records(s, dir / "nowhere"), doctest::Contains("prepare-suite"),
                       ming::UsageError);
}

TEST_CASE("task spec: templates substitute fields, lists, option maps and literal braces") {
  json rec = {{"q", "Why?"}, {"ctx", {"one", "two"}}, {"n", 3}, {"opts", {{"B", "b"}, {"A", "a"}}}};
  CHECK(render_template("{q} {{x}} {n}\n{ctx}\n{opts}", rec) == "Why? {x} 3\none\ntwo\nA. a\nB. b");
  CHECK(template_fields("{a}{b}{a}{{c}}") == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH_AS(render_template("{missing}", rec), doctest::Contains("'missing'"),
                       ming::UsageError);
  CHECK_THROWS_AS(template_fields("a } b"), ming::UsageError);
}

TEST_CASE("task spec: answer parsers extract letters, labels, entities and pairs") {
  TaskSpec s;
  s.parser = AnswerParser::option_letter;
  s.options_field = "options";
  json rec = {{"options", {{"A", "x"}, {"B", "y"}, {"C", "z"}, {"D", "w"}}}, {"answer_idx", "C"}};
  s.gold = "answer_idx";
  CHECK(parse_answer(s, "C", rec) == "C");
  CHECK(parse_answer(s, "(B) because ...", rec) == "B");
  CHECK(parse_answer(s, "I think the answer is D.", rec) == "D");
  CHECK(parse_answer(s, "A patient with E coli. Answer: C", rec) == "C");
  CHECK(parse_answer(s, "E", rec) == "");
  CHECK(score_example(s, Metric::accuracy, parse_answer(s, "Answer: C", rec), rec).value == 1.0);

  s.parser = AnswerParser::yes_no_maybe;
  CHECK(parse_answer(s, "Maybe, the data are unclear.", rec) == "maybe");
  CHECK(parse_answer(s, "Nothing", rec) == "");

  s.parser = AnswerParser::label;
  s.labels = {"相关", "不相关"};
  CHECK(parse_answer(s, "不相关", rec) == "不相关");
  CHECK(parse_answer(s, "答案是相关。", rec) == "相关");

  s.parser = AnswerParser::entity_list;
  s.gold = "output";
  json ner = {{"output", "Chemical: aspirin\nDisease: pain; fever"}};
  json pred = parse_answer(s, "Chemical: none\nDisease: fever; pain; rash", ner);
  CHECK(pred == json::array({"Disease\tfever", "Disease\tpain", "Disease\trash"}));
  auto st = score_example(s, Metric::tuple_f1, pred, ner);
  CHECK(st.tp == 2);
  CHECK(st.fp == 1);
  CHECK(st.fn == 1);

  s.parser = AnswerParser::pair_list;
  CHECK(parse_answer(s, "cocaine | seizure\nnone", ner) == json::array({"cocaine\tseizure"}));

  s.parser = AnswerParser::regex;
  s.pattern = R"(score: (\d+))";
  CHECK(parse_answer(s, "final score: 42", ner) == "42");
}
