// Licensing-exam tasks as MING-MOE scores them (ming/eval/eval_em.py): the "答案为" line, exact
// multi-answer letters, the X对/X错 fallbacks, the first-letter rule; CSV input with options as
// "A ..." lines; ids from position; and the shipped CMExam / MMedBench files.
#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/eval/report.h"
#include "ming/eval/scorer.h"
#include "ming/eval/task.h"
#include "ming/io/csv.h"
#include "support.h"

using namespace ming::eval;
using ming::test::TempDir;
using ming::test::write_text;
using nlohmann::json;

namespace {

TaskSpec exam_task(TempDir& dir, const std::string& parser, const std::string& extra = "") {
  write_text(dir / "exam.yaml",
             "name: exam\n"
             "language: zh\n"
             "data: \"{suite}/exam.csv\"\n"
             "prompt: \"{Question}\\n{Options}\"\n"
             "gold: Answer\n"
             "scorer: generate\n"
             "answer:\n"
             "  parser: " +
                 parser +
                 "\n"
                 "  options_field: Options\n"
                 "metrics: [accuracy]\n" +
                 extra);
  return load_task_spec((dir / "exam.yaml").string());
}

const json kRecord = {{"Question", "q"}, {"Options", "A 甲\nB 乙\nC 丙\nD 丁\nE 戊"}};

std::string parsed(const TaskSpec& spec, const std::string& text) {
  return parse_answer(spec, text, kRecord).get<std::string>();
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ming::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("exam: chain-of-thought answers are read from the last line's 答案为") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "exam_cot");
  CHECK(parsed(spec, "分析……\n所以答案为B。") == "B");
  CHECK(parsed(spec, "答案为B") == "B");
  // Multi-answer: the sorted set of letters after 答案为, so exactly-right is string equality.
  CHECK(parsed(spec, "分析\n答案为E、A、C。") == "ACE");
  CHECK(parsed(spec, "答案为A或B") == "AB");
  // Python's re.search('答案为(.*?)$') without MULTILINE: only the last line counts; an earlier
  // 答案为 falls through to the fallbacks (here none match).
  CHECK(parsed(spec, "答案为B。\n后面还有一行") == "");
  // The output is stripped first, as the reference does.
  CHECK(parsed(spec, "推理\n答案为D。\n\n  ") == "D");
}

TEST_CASE("exam: without 答案为, 'X错，为本题正确答案' and then 'X对' judgements decide") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "exam_cot");
  CHECK(parsed(spec, "A对。B对。C错，为本题正确答案。") == "C");
  CHECK(parsed(spec, "AC错，为本题正确答案") == "AC");
  CHECK(parsed(spec, "A对，B错，C对，D错，E错") == "AC");
  CHECK(parsed(spec, "不知道") == "");
}

TEST_CASE("exam: a multi-answer question counts only when exactly right") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "exam_cot");
  json record = kRecord;
  record["Answer"] = "ACE";
  CHECK(gold_answer(spec, record) == "ACE");
  auto right = [&](const std::string& text) {
    return score_example(spec, Metric::accuracy, parse_answer(spec, text, record), record).value;
  };
  CHECK(right("答案为ACE") == 1.0);
  CHECK(right("答案为E, C, A") == 1.0);
  CHECK(right("答案为AC") == 0.0);    // a letter missing
  CHECK(right("答案为ABCE") == 0.0);  // an extra letter
  CHECK(right("A对 C对 E对 B错 D错") == 1.0);
  CHECK(right("A对 C对 E对 B对") == 0.0);
  // Gold letters may also come separated or as a list.
  record["Answer"] = json::array({"E", "A", "C"});
  CHECK(gold_answer(spec, record) == "ACE");
}

TEST_CASE("exam: the non-CoT rule takes the first option letter anywhere in the text") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "first_letter");
  CHECK(parsed(spec, "  B。因为……A不对") == "B");
  CHECK(parsed(spec, "the answer: C") == "C");  // [A-E]: lower-case words are skipped
  CHECK(parsed(spec, "没有字母") == "");
}

TEST_CASE("exam: options given as one text field of 'A ...' lines") {
  const json rec = {
      {"o", "A 极高的催化效率\nB. 高度的特异性\nC、可调节性\r\nD：质量不变\n(E) 不稳定"}};
  const auto options = record_options(rec, "o");
  REQUIRE(options.size() == 5);
  CHECK(options[0] == std::make_pair(std::string("A"), std::string("极高的催化效率")));
  CHECK(options[1].second == "高度的特异性");
  CHECK(options[2].second == "可调节性");
  CHECK(options[3].second == "质量不变");
  CHECK(options[4].first == "E");
  CHECK(record_options(json{{"o", "not options"}}, "o").empty());
  CHECK(record_options(json{{"o", {{"A", "x"}, {"B", "y"}}}}, "o").size() == 2);
}

TEST_CASE("csv: quoted fields keep commas, quotes and line breaks; rows start on their line") {
  TempDir dir;
  write_text(
      dir / "t.csv",
      "\xEF\xBB\xBFQuestion,Options,Answer\r\n\"a, b\",\"A x\nB \"\"y\"\"\",B\r\n\nq2,A z,A\n");
  const auto rows = ming::io::read_csv(dir / "t.csv");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].line == 2);
  CHECK(rows[0].fields["Question"] == "a, b");
  CHECK(rows[0].fields["Options"] == "A x\nB \"y\"");
  CHECK(rows[1].line == 5);
  CHECK(rows[1].fields["Answer"] == "A");
  write_text(dir / "bad.csv", "a,b\n1,2,3\n");
  CHECK(error_of([&] { ming::io::read_csv(dir / "bad.csv"); }).find("bad.csv:2: 3 fields") !=
        std::string::npos);
  write_text(dir / "open.csv", "a,b\n\"1,2\n");
  CHECK(error_of([&] {
          ming::io::read_csv(dir / "open.csv");
        }).find("open.csv:2: unterminated quoted field") != std::string::npos);
}

TEST_CASE("exam: CSV records are validated naming the file, line and column; ids are positions") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "exam_cot", "categories: [Level]\n");
  const std::string header = "Question,Options,Answer,Level\n";
  write_text(dir / "exam.csv", header + "q1,\"A x\nB y\",B,1\nq2,\"A x\nB y\",AB,2\n");
  const auto records = load_task_records(spec, dir.path());
  REQUIRE(records.size() == 2);
  CHECK(records[0].id == "0");
  CHECK(records[1].id == "1");
  CHECK(records[1].line == 4);
  CHECK(records[1].index == 1);
  CHECK(gold_answer(spec, records[1].data) == "AB");

  write_text(dir / "exam.csv", header + "q1,\"A x\nB y\",F,1\n");
  CHECK(error_of([&] {
          load_task_records(spec, dir.path());
        }).find("exam.csv:2: field 'Answer': answer letter 'F' is not among the options (A, B)") !=
        std::string::npos);
  write_text(dir / "exam.csv", "Question,Options,Level\nq1,\"A x\nB y\",1\n");
  CHECK(error_of([&] {
          load_task_records(spec, dir.path());
        }).find("exam.csv:2: column 'Answer': missing") != std::string::npos);
  write_text(dir / "exam.csv", "Question,Options,Answer\nq1,\"A x\nB y\",A\n");
  CHECK(error_of([&] {
          load_task_records(spec, dir.path());
        }).find("exam.csv:2: column 'Level': missing (a category of the task)") !=
        std::string::npos);
}

TEST_CASE("task records: a record without an id is numbered by its 0-based position") {
  TempDir dir;
  write_text(dir / "t.yaml",
             "name: t\nlanguage: en\ndata: \"{suite}/{split}.jsonl\"\nprompt: \"{question}\"\n"
             "gold: answer_idx\nscorer: loglik_choice\nchoices:\n  field: options\n"
             "metrics: [accuracy]\n");
  const TaskSpec spec = load_task_spec((dir / "t.yaml").string());
  const std::string rec = R"("question":"q","options":{"A":"x","B":"y"},"answer_idx":"A")";
  write_text(dir / "test.jsonl", "{" + rec + "}\n\n{" + rec + "}\n{\"id\":7," + rec + "}\n");
  const auto records = load_task_records(spec, dir.path());
  REQUIRE(records.size() == 3);
  CHECK(records[0].id == "0");
  CHECK(records[1].id == "1");  // blank lines are not records
  CHECK(records[1].line == 3);
  CHECK(records[2].id == "7");
}

TEST_CASE("exam: per-category scores in metrics.json and the table") {
  TempDir dir;
  const TaskSpec spec = exam_task(dir, "exam_cot", "categories: [Level]\n");
  write_text(dir / "exam.csv",
             "Question,Options,Answer,Level\nq,\"A x\nB y\",A,easy\n"
             "q,\"A x\nB y\",B,easy\nq,\"A x\nB y\",AB,hard\n");
  const auto records = load_task_records(spec, dir.path());
  std::vector<ExampleResult> results;
  for (const auto& [r, out] :
       std::vector<std::pair<size_t, std::string>>{{0, "答案为A"}, {1, "答案为A"}, {2, "答案为AB"}})
    results.push_back(rescore_example(spec, records[r], out));
  const auto report = summarize_task(spec, results, 0.0, {100, 1, 0.95});
  CHECK(report.breakdowns.at("Level").at("easy") == std::make_pair(size_t{2}, 0.5));
  CHECK(report.breakdowns.at("Level").at("hard") == std::make_pair(size_t{1}, 1.0));
  const json m = metrics_json({report}, {{"tasks", {"exam"}}});
  CHECK(m["tasks"]["exam"]["breakdowns"]["Level"]["easy"]["n"] == 2);
  const std::string table = format_table(m);
  CHECK(table.find("  Level: easy") != std::string::npos);
  CHECK(table.find("  Level: hard") != std::string::npos);
}

TEST_CASE("exam: the shipped CMExam and MMedBench-zh files read MING-MOE's subsets") {
  const auto share = ming::test::source_dir() / "share";
  const auto data = ming::test::data_dir();
  for (const char* name : {"cmexam", "cmexam-loglik"}) {
    INFO(name);
    const TaskSpec spec = load_task_spec(name, share);
    const auto records = load_task_records(spec, "", "", data);
    REQUIRE(records.size() == 606);
    size_t multi = 0;
    for (const auto& r : records) multi += gold_answer(spec, r.data).get<std::string>().size() > 1;
    CHECK(multi == 11);
    CHECK(record_options(records[0].data, "Options").size() == 5);
    CHECK(render_prompt(spec, records[0].data).find("E 酶活性的不稳定性") != std::string::npos);
  }
  for (const char* name : {"mmedbench-zh", "mmedbench-zh-loglik", "mmedbench-zh-cot"}) {
    INFO(name);
    const TaskSpec spec = load_task_spec(name, share);
    const auto records = load_task_records(spec, "", "", data);
    CHECK(records.size() == 685);
    CHECK(records[0].id == "0");
  }
}
