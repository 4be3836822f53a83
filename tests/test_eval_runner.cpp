// Scorers and the evaluation runner on a tiny random model: every number the scorers produce is
// recomputed here independently (unbatched, unpadded forwards of the whole sequence).
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "ming/adapt/adapter_io.h"
#include "ming/adapt/config.h"
#include "ming/core/error.h"
#include "ming/eval/report.h"
#include "ming/eval/runner.h"
#include "ming/eval/scorer.h"
#include "ming/route/trace.h"
#include "support.h"
#include "test_eval_runner_fixture.h"

namespace ming {
namespace {

namespace fs = std::filesystem;
using eval::ExampleResult;

struct Toy {
  test::TempDir tmp{"ming-eval-runner"};
  fs::path model_dir = tmp / "model";
  fs::path suite = tmp / "suite";
  Toy(int n_records = 6) {
    test::write_tiny_eval_model(model_dir);
    fs::create_directories(suite / "toy");
    test::write_text(suite / "toy" / "test.jsonl", test::toy_mc_jsonl(n_records));
  }
  eval::TaskSpec task(const std::string& yaml, const std::string& file = "task.yaml") {
    test::write_text(tmp / file, yaml);
    return eval::load_task_spec((tmp / file).string());
  }
  model::LoadedModel load() { return model::load_model(model_dir); }
};

std::vector<int64_t> raw_prompt_ids(const text::Tokenizer& tok, const std::string& text) {
  std::vector<int64_t> ids = {*tok.bos_id()};
  for (auto id : tok.encode(text, false, false)) ids.push_back(id);
  return ids;
}

// log p(cont | ctx) from one unpadded forward over ctx + cont.
double reference_logprob(model::CausalLM& m, const std::vector<int64_t>& ctx,
                         const std::vector<int64_t>& cont) {
  torch::NoGradGuard ng;
  std::vector<int64_t> full = ctx;
  full.insert(full.end(), cont.begin(), cont.end());
  auto lp = m->forward(torch::tensor(full, torch::kInt64).view({1, -1}))[0].log_softmax(-1);
  double sum = 0;
  for (size_t j = 0; j < cont.size(); ++j) sum += lp[ctx.size() - 1 + j][cont[j]].item<double>();
  return sum;
}

// The continuation's tokens: encode(prompt + cont) after encode(prompt), which must be a prefix.
std::vector<int64_t> reference_continuation(const text::Tokenizer& tok, const std::string& prompt,
                                            const std::string& cont) {
  auto ctx = raw_prompt_ids(tok, prompt);
  auto whole = raw_prompt_ids(tok, prompt + cont);
  REQUIRE(whole.size() > ctx.size());
  REQUIRE(std::equal(ctx.begin(), ctx.end(), whole.begin()));
  return std::vector<int64_t>(whole.begin() + ctx.size(), whole.end());
}

void check_choices_match_reference(const std::string& continuation) {
  Toy toy;
  auto spec = toy.task(test::toy_mc_yaml("toy-mc", continuation));
  auto records = eval::load_task_records(spec, toy.suite);
  auto m = toy.load();
  eval::ScorerOptions o;
  o.batch_size = 4;  // 6 records: a full and a partial batch, prompts of different lengths
  auto results = eval::score_task(spec, records, m, o);
  REQUIRE(results.size() == records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = results[i];
    const std::string prompt = eval::render_prompt(spec, records[i].data);
    CHECK(r.prompt == prompt);
    const auto ctx = raw_prompt_ids(*m.tokenizer, prompt);
    CHECK(r.prompt_tokens == ctx);
    const auto c = eval::record_choices(spec, records[i].data);
    REQUIRE(r.choices.size() == c.continuations.size());
    int64_t best = 0;
    std::vector<double> ref(c.continuations.size());
    for (size_t k = 0; k < c.continuations.size(); ++k) {
      auto cont = reference_continuation(*m.tokenizer, prompt, c.continuations[k]);
      ref[k] = reference_logprob(m.model, ctx, cont);
      CHECK(r.choices[k].key == c.keys[k]);
      CHECK(r.choices[k].tokens == static_cast<int64_t>(cont.size()));
      CHECK(r.choices[k].logprob == doctest::Approx(ref[k]).epsilon(1e-4));
      if (ref[k] > ref[best]) best = static_cast<int64_t>(k);
    }
    CHECK(r.chosen == best);
    CHECK(r.parsed == c.keys[best]);
    CHECK(r.gold == c.keys[c.gold]);
    REQUIRE(r.correct.has_value());
    CHECK(*r.correct == (best == static_cast<int64_t>(c.gold)));
    REQUIRE(r.stats.size() == 1);
    CHECK(r.stats[0].value == (*r.correct ? 1.0 : 0.0));
  }
}

TEST_CASE(
    "eval scorer: loglik_choice letters pick the argmax of independently computed "
    "log-likelihoods") {
  check_choices_match_reference("letter");
}

TEST_CASE("eval scorer: loglik_choice multi-token option texts match unbatched log-likelihoods") {
  check_choices_match_reference("text");
}

TEST_CASE("eval scorer: length normalisation divides by tokens or bytes") {
  std::vector<eval::ChoiceScore> c(2);
  c[0] = {"A", " short", -3.0, 1, false};              // per token -3, per byte -0.6
  c[1] = {"B", " a much longer one", -8.0, 4, false};  // per token -2, per byte -0.47
  CHECK(eval::pick_choice(c, eval::ChoiceNorm::none) == 0);
  CHECK(eval::pick_choice(c, eval::ChoiceNorm::tokens) == 1);
  CHECK(eval::pick_choice(c, eval::ChoiceNorm::chars) == 1);
  c[1].logprob = -20.0;  // per byte -1.18: loses
  CHECK(eval::pick_choice(c, eval::ChoiceNorm::chars) == 0);
  CHECK(eval::parse_choice_norm("tokens") == eval::ChoiceNorm::tokens);
  CHECK_THROWS_AS(eval::parse_choice_norm("bytes"), UsageError);
  CHECK_THROWS_AS(eval::parse_prompt_format("chatml"), UsageError);
}

TEST_CASE("eval scorer: generate batches greedy decoding and parses with the task's parser") {
  Toy toy(5);
  auto spec = toy.task(test::toy_gen_yaml());
  auto records = eval::load_task_records(spec, toy.suite);
  auto m = toy.load();
  eval::ScorerOptions o;
  o.batch_size = 3;
  auto results = eval::score_task(spec, records, m, o);
  torch::NoGradGuard ng;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = results[i];
    // Unbatched greedy decoding of the same prompt, stopping at </s>.
    auto ids = raw_prompt_ids(*m.tokenizer, eval::render_prompt(spec, records[i].data));
    std::vector<int64_t> expected;
    for (int step = 0; step < spec.max_new_tokens; ++step) {
      auto logits = m.model->forward(torch::tensor(ids, torch::kInt64).view({1, -1}));
      const int64_t next = logits[0][-1].argmax().item<int64_t>();
      if (next == 2) break;
      expected.push_back(next);
      ids.push_back(next);
    }
    CHECK(r.output_tokens == expected);
    CHECK(r.parsed == eval::parse_answer(spec, r.output, records[i].data));
    CHECK((r.finish == "length" || r.finish == "eos"));
    CHECK(r.correct.has_value());
    auto line = eval::prediction_json(spec, r);
    for (const char* key : {"id", "task", "prompt", "output", "parsed", "gold", "score", "stats"})
      CHECK_MESSAGE(line.contains(key), key);
  }
}

TEST_CASE("eval scorer: perplexity scores the reference by teacher forcing") {
  Toy toy(3);
  auto spec = toy.task(test::toy_ppl_yaml());
  auto records = eval::load_task_records(spec, toy.suite);
  auto m = toy.load();
  auto results = eval::score_task(spec, records, m, {});
  double nll = 0, tokens = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string prompt = eval::render_prompt(spec, records[i].data);
    const std::string ref = " " + records[i].data["reference"].get<std::string>();
    auto cont = reference_continuation(*m.tokenizer, prompt, ref);
    const double lp = reference_logprob(m.model, raw_prompt_ids(*m.tokenizer, prompt), cont);
    CHECK(results[i].nll == doctest::Approx(-lp).epsilon(1e-4));
    CHECK(results[i].n_tokens == static_cast<int64_t>(cont.size()));
    nll += -lp;
    tokens += cont.size();
  }
  auto report = eval::summarize_task(spec, results, 1.0);
  REQUIRE(report.metrics.size() == 1);
  CHECK(report.metrics[0].ci.point == doctest::Approx(std::exp(nll / tokens)).epsilon(1e-4));
  CHECK(report.metrics[0].ci.lo <= report.metrics[0].ci.point);
  CHECK(report.metrics[0].ci.hi >= report.metrics[0].ci.point);
}

TEST_CASE("eval report: per-example stats round-trip through JSON for every metric") {
  eval::ExampleStats s;
  s.value = 0.75;
  s.count = 3;
  s.gold_label = "yes";
  s.pred_label = "no";
  s.tp = 2;
  s.fp = 1;
  s.fn = 4;
  s.matches = {5, 3, 2, 1};
  s.totals = {6, 5, 4, 3};
  s.hyp_len = 6;
  s.ref_len = 7;
  s.group = "CHIP-CTC";
  s.group_metric = eval::Metric::f1_macro;
  for (const auto& name : eval::metric_names()) {
    eval::Metric m;
    REQUIRE(eval::parse_metric(name, &m));
    auto back =
        eval::stats_from_json(m, nlohmann::json::parse(eval::stats_to_json(m, s).dump()), "test");
    CHECK_MESSAGE(eval::aggregate(m, {back}) == doctest::Approx(eval::aggregate(m, {s})), name);
  }
  CHECK_THROWS_WITH_AS(eval::stats_from_json(eval::Metric::tuple_f1, {{"tp", 1}}, "p.jsonl line 3"),
                       doctest::Contains("p.jsonl line 3: field 'fp'"), UsageError);
}

TEST_CASE("eval runner: --trace-routes writes one tagged record per example") {
  Toy toy(5);
  test::write_text(toy.tmp / "toy-mc.yaml", test::toy_mc_yaml());
  {
    // A MoLoRA adapter over the MLP projections (B = 0: outputs unchanged, routes real).
    auto m = toy.load();
    adapt::AdapterConfig cfg;
    adapt::TargetGroup g;
    g.name = "mlp";
    g.targets = {"gate_proj", "up_proj", "down_proj"};
    g.experts = 4;
    g.top_k = 2;
    g.r = 4;
    g.alpha = 8;
    cfg.groups = {g};
    torch::manual_seed(3);
    adapt::inject_adapters(*m.model, cfg);
    adapt::save_adapter(toy.tmp / "adapter", *m.model, cfg, "tiny");
  }
  eval::RunOptions o;
  o.model_dir = toy.model_dir;
  o.adapter_dir = toy.tmp / "adapter";
  o.tasks = {(toy.tmp / "toy-mc.yaml").string()};
  o.suite_dir = toy.suite;
  o.output_dir = toy.tmp / "out";
  o.trace_routes = toy.tmp / "routes.trace";
  o.scorer.batch_size = 2;
  o.bootstrap.n_resamples = 50;
  o.progress = false;
  auto result = eval::run_eval(o);
  CHECK(result.examples == 5);

  std::map<std::string, size_t> tokens_of;  // id -> prompt + chosen continuation tokens
  {
    auto spec = eval::load_task_spec(o.tasks[0]);
    auto records = eval::load_task_records(spec, toy.suite);
    auto m = toy.load();
    for (const auto& r : eval::score_task(spec, records, m, {}))
      tokens_of[r.id] = r.prompt_tokens.size() + r.output_tokens.size();
  }
  route::RouteTraceReader reader(o.trace_routes);
  CHECK(reader.layers().size() == 6);  // 2 layers x gate/up/down
  route::TraceExample ex;
  std::vector<std::string> ids;
  while (reader.next(ex)) {
    ids.push_back(ex.id);
    CHECK(ex.task == "toy-mc");
    CHECK(static_cast<size_t>(ex.tokens) == tokens_of.at(ex.id));
  }
  CHECK(ids == std::vector<std::string>{"toy-0", "toy-1", "toy-2", "toy-3", "toy-4"});
  CHECK(fs::is_regular_file(o.output_dir / "metrics.json"));
}

TEST_CASE("eval runner: task and data problems surface before the model is loaded") {
  test::TempDir tmp("ming-eval-errors");
  eval::RunOptions o;
  o.model_dir = tmp / "no-such-model";
  o.suite_dir = tmp / "suite";
  o.tasks = {"no-such-task"};
  CHECK_THROWS_WITH_AS(eval::run_eval(o), doctest::Contains("known tasks: "), UsageError);
  fs::create_directories(tmp / "suite" / "toy");
  test::write_text(tmp / "toy-mc.yaml", test::toy_mc_yaml());
  test::write_text(
      tmp / "suite" / "toy" / "test.jsonl",
      test::toy_mc_jsonl(2) +
          R"({"id": "bad", "question": "q?", "options": {"A": "x", "B": "y"}, "answer_idx": "E"})"
          "\n");
  o.tasks = {(tmp / "toy-mc.yaml").string()};
  CHECK_THROWS_WITH_AS(eval::run_eval(o), doctest::Contains("test.jsonl:3: field 'answer_idx'"),
                       UsageError);
  o.trace_routes = tmp / "r.trace";
  CHECK_THROWS_WITH_AS(eval::run_eval(o), doctest::Contains("--trace-routes needs --adapter"),
                       UsageError);
}

}  // namespace
}  // namespace ming
