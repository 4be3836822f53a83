// PromptCBLUE scoring: the official post-processing and metrics on the real dev set (gold
// scored against itself is 100 everywhere) and on perturbations computed by hand.
#include <fstream>
#include <map>
#include <set>

#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/eval/promptcblue.h"
#include "ming/eval/report.h"
#include "ming/eval/scorer.h"
#include "ming/eval/task.h"
#include "support.h"

namespace pc = ming::eval::promptcblue;
using nlohmann::json;

namespace {

struct DevSet {
  std::vector<json> records;               // dev.json lines
  std::map<std::string, json> structured;  // sample_id -> official structured answer
};

DevSet load_dev() {
  const auto dir = ming::test::data_dir() / "promptcblue";
  DevSet d;
  std::ifstream in(dir / "dev.json");
  REQUIRE_MESSAGE(in.good(), "missing " << (dir / "dev.json").string());
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) d.records.push_back(json::parse(line));
  json s = json::parse(ming::test::read_text(dir / "dev_structured.json"));
  for (const auto& [task, items] : s.items())
    for (const auto& it : items) d.structured[it["sample_id"].get<std::string>()] = it["answer"];
  return d;
}

pc::Example example(const std::string& task, const std::string& generated, json gold,
                    json choices = nullptr) {
  return pc::Example{task, generated, std::move(choices), std::move(gold)};
}

}  // namespace

TEST_CASE("promptcblue: the dev targets parse to the official structured answers") {
  DevSet d = load_dev();
  REQUIRE(d.records.size() == 80);
  for (const auto& r : d.records) {
    const std::string task = r["task_dataset"].get<std::string>();
    const std::string id = r["sample_id"].get<std::string>();
    INFO(task << " " << id);
    REQUIRE(d.structured.count(id));
    json parsed = pc::parse_output(task, r["target"].get<std::string>(), r["answer_choices"]);
    auto s = pc::example_stats(task, parsed, d.structured[id]);
    if (pc::task_metric(task) == ming::eval::Metric::tuple_f1) {
      CHECK(s.fp == 0);
      CHECK(s.fn == 0);
    } else if (pc::task_metric(task) == ming::eval::Metric::rougeL) {
      CHECK(s.value == doctest::Approx(s.count).epsilon(1e-6));
    } else {
      CHECK(parsed == d.structured[id]);
    }
  }
}

TEST_CASE("promptcblue: gold scored against itself gives 100 on all 16 tasks") {
  DevSet d = load_dev();
  std::vector<pc::Example> exs;
  for (const auto& r : d.records)
    exs.push_back(example(r["task_dataset"].get<std::string>(), r["target"].get<std::string>(),
                          d.structured[r["sample_id"].get<std::string>()], r["answer_choices"]));
  pc::Report rep = pc::score(exs);
  CHECK(rep.missing.empty());
  REQUIRE(rep.per_task.size() == 16);
  for (const auto& [task, v] : rep.per_task) {
    INFO(task);
    CHECK(v == doctest::Approx(1.0).epsilon(1e-6));
  }
  CHECK(rep.mean == doctest::Approx(1.0).epsilon(1e-6));
  // The mean is a metric over per-example rows, so it bootstraps like any other.
  auto ci = ming::eval::bootstrap_ci(ming::eval::Metric::promptcblue, rep.rows, 100, 5);
  CHECK(ci.lo == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("promptcblue: a wrong dev answer lowers only its task, and the mean by 1/16 of it") {
  DevSet d = load_dev();
  std::vector<pc::Example> exs;
  for (const auto& r : d.records) {
    std::string gen = r["target"].get<std::string>();
    if (r["task_dataset"] == "KUAKE-QQR") gen = "";  // all five become the default label
    exs.push_back(example(r["task_dataset"].get<std::string>(), gen,
                          d.structured[r["sample_id"].get<std::string>()], r["answer_choices"]));
  }
  pc::Report rep = pc::score(exs);
  // Hand count on dev: gold labels of the five KUAKE-QQR examples, predictions all "完全一致".
  std::map<std::string, int> gold;
  for (const auto& r : d.records)
    if (r["task_dataset"] == "KUAKE-QQR")
      ++gold[d.structured[r["sample_id"].get<std::string>()].get<std::string>()];
  int n_same = gold.count("完全一致") ? gold["完全一致"] : 0;
  // Weighted F1: only label 完全一致 can score: P = n_same/5, R = 1, F = 2P/(P+1), weight n_same/5.
  double p = n_same / 5.0;
  double expected = n_same ? (2 * p / (p + 1)) * p : 0.0;
  CHECK(rep.per_task["KUAKE-QQR"] == doctest::Approx(expected));
  CHECK(rep.mean == doctest::Approx((15.0 + expected) / 16.0));
}

TEST_CASE("promptcblue: extraction tasks score micro F1 over tuples (hand values)") {
  json choices = {"疾病", "药物"};
  json gold1 = json::array({{{"entity", "感冒"}, {"type", "疾病"}},
                            {{"entity", "发烧"}, {"type", "疾病"}},
                            {{"entity", "布洛芬"}, {"type", "药物"}}});
  json gold2 = json::array({{{"entity", "头痛"}, {"type", "疾病"}}});
  // Example 1 misses 发烧 and adds 咳嗽: tp 2, fp 1, fn 1. Example 2 finds nothing: fn 1.
  std::vector<pc::Example> exs = {
      example("CMeEE-V2", "上述句子中的实体包含：\n疾病实体：感冒，咳嗽\n药物实体：布洛芬", gold1,
              choices),
      example("CMeEE-V2", "上述句子中的实体包含：\n疾病实体：\n药物实体：", gold2, choices)};
  pc::Report rep = pc::score(exs);
  // P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7.
  CHECK(rep.per_task["CMeEE-V2"] == doctest::Approx(4.0 / 7.0));
  CHECK(rep.missing.size() == 15);
  CHECK(rep.mean == doctest::Approx(4.0 / 7.0));

  json spo = pc::parse_output("CMeIE",
                              "具有药物治疗关系的头尾实体对如下：头实体为心衰，尾实体为地高辛。头实"
                              "体为房颤，尾实体为胺碘酮。\n具有病因关系的头尾实体对如下：",
                              json::array({"药物治疗", "病因"}));
  REQUIRE(spo.size() == 2);
  CHECK(spo[1] == json({{"predicate", "药物治疗"}, {"subject", "房颤"}, {"object", "胺碘酮"}}));

  json cdn = pc::parse_output("CHIP-CDN", "肾钙化，贲门溃疡，肾钙化，不在选项里",
                              json::array({"贲门溃疡", "肾钙化"}));
  CHECK(cdn.size() == 2);  // de-duplicated, restricted to the choices

  json sr = pc::parse_output(
      "IMCS-V2-SR", "判断如下：\n咳嗽：患有该症状\n发热：不确定\n乱码",
      json::array({"没有患有该症状", "患有该症状", "无法根据上下文确定病人是否患有该症状"}));
  REQUIRE(sr.size() == 2);
  CHECK(sr[1]["attr"] == "无法根据上下文确定病人是否患有该症状");

  json cdee = pc::parse_output(
      "CHIP-CDEE", "事件如下：\n主体词：疼痛；发生状态：否定；描述词：持续性，剧烈；解剖部位：腹",
      nullptr);
  REQUIRE(cdee.size() == 1);
  CHECK(cdee[0]["描述词"] == json::array({"持续性", "剧烈"}));
  CHECK(cdee[0]["发生状态"] == "否定");
}

TEST_CASE("promptcblue: classification uses weighted or macro F1 and the default label") {
  // CHIP-STS: 相同 maps to 是的. gold 是的 不是 不是 / pred 是的 是的 不是:
  // 是的 P .5 R 1 F 2/3 (support 1); 不是 P 1 R .5 F 2/3 (support 2) -> weighted 2/3.
  std::vector<pc::Example> sts = {example("CHIP-STS", "相同", "是的"),
                                  example("CHIP-STS", "是的", "不是"),
                                  example("CHIP-STS", " 不是\n", "不是")};
  CHECK(pc::score(sts).per_task["CHIP-STS"] == doctest::Approx(2.0 / 3.0));
  // KUAKE-QIC macro: an empty answer becomes 非上述类型; labels 就医建议 (F 0), 病因分析 (F 1),
  // 非上述类型 (F 0) -> 1/3.
  std::vector<pc::Example> qic = {example("KUAKE-QIC", "", "就医建议"),
                                  example("KUAKE-QIC", "病因分析", "病因分析")};
  CHECK(pc::score(qic).per_task["KUAKE-QIC"] == doctest::Approx(1.0 / 3.0));
  CHECK_THROWS_AS(pc::task_metric("CMedQA"), ming::UsageError);
}

TEST_CASE("promptcblue: generation tasks use character ROUGE-L, per section for reports") {
  std::vector<pc::Example> dg = {example("MedDG", "我爱北京", "我爱上海"),
                                 example("MedDG", "", "感冒了")};
  // 0.5 (LCS 2 of 4 and 4), and 0 (empty -> "无 。" shares nothing with 感 冒 了).
  CHECK(pc::score(dg).per_task["MedDG"] == doctest::Approx(0.25).epsilon(1e-6));
  json gold = {{"主诉", "发热。"}, {"诊断", "感冒。"}};
  std::vector<pc::Example> mrg = {
      example("IMCS-V2-MRG", "诊疗报告如下：\n主诉：发热。\n诊断：", gold)};
  // 主诉 exact (1); 诊断 empty -> "无 。" vs "感 冒 。": LCS 1, P 1/2, R 1/3, F 0.4. Mean 0.7.
  CHECK(pc::score(mrg).per_task["IMCS-V2-MRG"] == doctest::Approx(0.7).epsilon(1e-6));
}

TEST_CASE("promptcblue: every parser reads stripped text, as MING-MOE strips before parsing") {
  DevSet d = load_dev();
  const auto share = ming::test::source_dir() / "share";
  const auto spec = ming::eval::load_task_spec("promptcblue", share);
  CHECK(spec.system == "You are a helpful assistant.");
  CHECK(spec.max_new_tokens == 1024);
  CHECK((spec.stop_tokens == std::vector<std::string>{"<|im_end|>"}));
  std::set<std::string> tasks, broken_unstripped;
  for (const auto& r : d.records) {
    const std::string task = r["task_dataset"].get<std::string>();
    const std::string target = r["target"].get<std::string>();
    const std::string padded = "\n  " + target + " \n\n";
    INFO(task << ": " << target);
    tasks.insert(task);
    // Through the task's parser the padding makes no difference ...
    CHECK(ming::eval::parse_answer(spec, padded, r) == ming::eval::parse_answer(spec, target, r));
    // ... while the official post-processing itself is whitespace-sensitive for some tasks.
    if (pc::parse_output(task, padded, r["answer_choices"]) !=
        pc::parse_output(task, target, r["answer_choices"]))
      broken_unstripped.insert(task);
  }
  CHECK(tasks.size() == 16);
  INFO("whitespace-sensitive: " << json(broken_unstripped).dump());
  for (const char* t : {"CHIP-CDN", "CHIP-CDEE", "IMCS-V2-SR", "CHIP-MDCFNPC", "CMeIE"})
    CHECK_MESSAGE(broken_unstripped.count(t), t);
}

TEST_CASE("promptcblue: the 16-task mean is reported only when all 16 sub-tasks are there") {
  DevSet d = load_dev();
  const auto share = ming::test::source_dir() / "share";
  const auto spec = ming::eval::load_task_spec("promptcblue", share);
  auto report_of = [&](bool all) {
    std::vector<ming::eval::ExampleResult> results;
    size_t index = 0;
    for (const auto& r : d.records) {
      if (!all && r["task_dataset"] != "CMeEE-V2" && r["task_dataset"] != "KUAKE-QQR") continue;
      json rec = r;
      rec["answer"] = d.structured[r["sample_id"].get<std::string>()];
      const ming::eval::TaskRecord tr{r["sample_id"].get<std::string>(), index + 1, index, rec};
      results.push_back(ming::eval::rescore_example(spec, tr, r["target"].get<std::string>()));
      ++index;
    }
    const auto t = ming::eval::summarize_task(spec, results, 0.0, {50, 1, 0.95});
    return ming::eval::metrics_json({t}, {{"tasks", {"promptcblue"}}}, {50, 1, 0.95});
  };
  const json full = report_of(true);
  CHECK(full["promptcblue"]["mean"].get<double>() == doctest::Approx(1.0));
  CHECK(full["promptcblue"]["missing"].empty());
  CHECK(ming::eval::format_table(full).find("(mean of the 16 sub-tasks)") != std::string::npos);
  const json part = report_of(false);
  CHECK(part["promptcblue"]["mean"].is_null());
  CHECK(part["promptcblue"]["missing"].size() == 14);
  CHECK(part["promptcblue"]["per_task"]["CMeEE-V2"].get<double>() == doctest::Approx(1.0));
  const std::string table = ming::eval::format_table(part);
  CHECK(table.find("no 16-task mean: 2 of 16 sub-tasks scored, missing ") != std::string::npos);
  CHECK(table.find("CHIP-CDN") != std::string::npos);
}
