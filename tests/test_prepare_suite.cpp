// scripts/prepare-suite on the real data: counts, determinism, and that the shipped task files
// load every record it writes.
#include <fstream>

#include <doctest/doctest.h>

#include "ming/eval/task.h"
#include "support.h"

using ming::test::TempDir;
using nlohmann::json;

namespace {

// The fast tasks (the full suite adds MedQuAD's 11k XML files and the large NER sets, ~6 s).
const char* kTasks =
    "medqa,mmlu-medical,pubmedqa,bc5cdr-cid,mediqa-rqe,meqsum,promptcblue,"
    "cmd-department,medicalgpt,chatdoctor";

std::string prepare(const std::filesystem::path& out, const std::string& extra = "") {
  return "python3 '" + (ming::test::source_dir() / "scripts/prepare-suite").string() +
         "' --data '" + ming::test::data_dir().string() + "' --out '" + out.string() + "' " + extra;
}

size_t count_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

}  // namespace

TEST_CASE("prepare-suite: real data gives documented counts, byte-identical on re-run") {
  TempDir a("suite-a"), b("suite-b");
  auto ra = ming::test::run_command(prepare(a.path(), std::string("--tasks ") + kTasks));
  REQUIRE_MESSAGE(ra.exit_code == 0, ra.err);
  auto rb = ming::test::run_command(prepare(b.path(), std::string("--tasks ") + kTasks));
  REQUIRE_MESSAGE(rb.exit_code == 0, rb.err);
  CHECK(ra.out == rb.out);

  json manifest = json::parse(ming::test::read_text(a / "manifest.json"));
  CHECK(manifest["seed"] == 1234);
  auto counts = [&](const std::string& task) { return manifest["tasks"][task]["counts"]; };
  CHECK(counts("medqa") == json({{"train", 773}, {"dev", 100}, {"test", 400}}));
  CHECK(counts("pubmedqa")["test"] == 500);
  CHECK(counts("pubmedqa")["train"].get<int>() + counts("pubmedqa")["dev"].get<int>() == 500);
  CHECK(counts("promptcblue") == json({{"train", 80}, {"dev", 80}, {"test", 0}}));
  CHECK(counts("bc5cdr-cid") == json({{"train", 500}, {"dev", 500}, {"test", 500}}));
  CHECK(counts("mediqa-rqe") == json({{"train", 3000}, {"dev", 302}, {"test", 230}}));
  CHECK(counts("mmlu-medical")["train"] == 40);  // 5 few-shot questions x 8 subjects

  for (const auto& [task, info] : manifest["tasks"].items()) {
    for (const auto& split : {"train", "dev", "test"}) {
      INFO(task << "/" << split);
      auto rel = std::filesystem::path(task) / (std::string(split) + ".jsonl");
      CHECK(count_lines(a / rel.string()) == info["counts"][split].get<size_t>());
      CHECK(ming::test::read_text(a / rel.string()) == ming::test::read_text(b / rel.string()));
    }
  }
  CHECK(ming::test::read_text(a / "manifest.json") == ming::test::read_text(b / "manifest.json"));

  // A different seed gives a different medqa split.
  TempDir c("suite-c");
  auto rc = ming::test::run_command(prepare(c.path(), "--tasks medqa --seed 7"));
  REQUIRE(rc.exit_code == 0);
  CHECK(ming::test::read_text(a / "medqa/test.jsonl") !=
        ming::test::read_text(c / "medqa/test.jsonl"));

  // Every shipped task whose data was prepared loads all of its records (train/dev/test).
  auto share = ming::test::source_dir() / "share";
  int checked = 0;
  for (const auto& name : ming::eval::list_tasks(share)) {
    auto spec = ming::eval::load_task_spec(name, share);
    if (spec.data.find("{data}") != std::string::npos) continue;  // read from the raw data
    for (const auto& split : {"train", "dev", "test"}) {
      auto path = ming::eval::task_data_path(spec, a.path(), split);
      if (!std::filesystem::exists(path)) continue;
      INFO(name << " " << path.string());
      auto recs = ming::eval::load_task_records(spec, a.path(), split);
      CHECK(recs.size() == count_lines(path));
      if (!recs.empty()) CHECK_FALSE(ming::eval::render_prompt(spec, recs[0].data).empty());
      ++checked;
    }
  }
  CHECK(checked >= 30);
}

TEST_CASE("prepare-suite: missing data folder exits 2 naming it; missing sources are skipped") {
  TempDir out("suite-x");
  auto r = ming::test::run_command(prepare(out.path()) + "--data /nonexistent/ming-data");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("/nonexistent/ming-data") != std::string::npos);

  TempDir partial("data-partial");
  std::filesystem::create_directories(partial / "medqa");
  std::filesystem::copy_file(ming::test::data_dir() / "medqa/medqa_usmle_4options.jsonl",
                             partial / "medqa/medqa_usmle_4options.jsonl");
  auto p = ming::test::run_command(
      prepare(out.path(), "--tasks medqa,meqsum --data '" + partial.path().string() + "'"));
  REQUIRE_MESSAGE(p.exit_code == 0, p.err);
  CHECK(p.err.find("skipping meqsum") != std::string::npos);
  json manifest = json::parse(ming::test::read_text(out / "manifest.json"));
  CHECK(manifest["tasks"].contains("medqa"));
  CHECK(manifest["skipped"].contains("meqsum"));
  CHECK_FALSE(std::filesystem::exists(out / "meqsum"));
  auto u = ming::test::run_command(prepare(out.path(), "--tasks nosuch"));
  CHECK(u.exit_code == 2);
  CHECK(u.err.find("unknown task") != std::string::npos);
}
