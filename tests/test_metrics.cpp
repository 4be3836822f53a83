// Metrics against values computed by hand, and the bootstrap's determinism and sanity.
#include <cmath>

#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/eval/metrics.h"
#include "support.h"

using namespace ming::eval;

namespace {

std::vector<ExampleStats> labels(const std::vector<std::string>& gold,
                                 const std::vector<std::string>& pred) {
  std::vector<ExampleStats> rows;
  for (size_t i = 0; i < gold.size(); ++i) rows.push_back(example_label(pred[i], gold[i]));
  return rows;
}

std::vector<std::string> en(const std::string& s) {
  return tokenize_for_metric(s, "en");
}
std::vector<std::string> zh(const std::string& s) {
  return tokenize_for_metric(s, "zh");
}

}  // namespace

TEST_CASE("metrics: metric names round-trip and unknown names are rejected") {
  for (const auto& name : metric_names()) {
    Metric m;
    REQUIRE(parse_metric(name, &m));
    CHECK(std::string(metric_name(m)) == name);
  }
  Metric m;
  CHECK_FALSE(parse_metric("rouge9", &m));
}

TEST_CASE("metrics: accuracy and exact match by hand") {
  std::vector<ExampleStats> rows = {example_correct(true), example_correct(false),
                                    example_correct(true), example_correct(true)};
  CHECK(aggregate(Metric::accuracy, rows) == doctest::Approx(0.75));
  CHECK(example_exact_match("The Answer!", "answer").value == 1.0);
  CHECK(example_exact_match("a  cat.", "Cat").value == 1.0);
  CHECK(example_exact_match("dog", "cat").value == 0.0);
  CHECK(normalize_answer("  The Quick, brown FOX!  ") == "quick brown fox");
}

TEST_CASE("metrics: label F1 micro/macro/weighted follow sklearn's classification_report") {
  // gold a a b c / pred a b b a: a p=.5 r=.5 f=.5; b p=.5 r=1 f=2/3; c f=0.
  auto rows = labels({"a", "a", "b", "c"}, {"a", "b", "b", "a"});
  CHECK(aggregate(Metric::f1_micro, rows) == doctest::Approx(0.5));
  CHECK(aggregate(Metric::f1_macro, rows) == doctest::Approx((0.5 + 2.0 / 3.0) / 3.0));
  CHECK(aggregate(Metric::f1_weighted, rows) == doctest::Approx((0.5 * 2 + 2.0 / 3.0) / 4.0));
  // A label only ever predicted counts in the macro mean (F1 0) but has no weight.
  auto rows2 = labels({"a", "b"}, {"a", "d"});
  CHECK(aggregate(Metric::f1_macro, rows2) == doctest::Approx(1.0 / 3.0));
  CHECK(aggregate(Metric::f1_weighted, rows2) == doctest::Approx(0.5));
  LabelF1 f = label_f1(rows);
  CHECK(f.macro_precision == doctest::Approx((0.5 + 0.5 + 0.0) / 3.0));
  CHECK(f.weighted_recall == doctest::Approx((0.5 * 2 + 1.0 * 1 + 0.0) / 4.0));
}

TEST_CASE("metrics: tuple F1 is micro over de-duplicated tuples") {
  std::vector<ExampleStats> rows = {example_tuples({"x", "y", "y"}, {"x", "z"}),
                                    example_tuples({}, {"w"})};
  CHECK(rows[0].tp == 1);
  CHECK(rows[0].fp == 1);
  CHECK(rows[0].fn == 1);
  // tp 1, fp 1, fn 2: P = 1/2, R = 1/3, F = 0.4.
  CHECK(aggregate(Metric::tuple_f1, rows) == doctest::Approx(0.4));
  // No true positive at all gives 0, even when both sides are empty (PromptCBLUE's rule).
  CHECK(aggregate(Metric::tuple_f1, {example_tuples({}, {})}) == 0.0);
}

TEST_CASE("metrics: English ROUGE is word-level and lower-cased") {
  auto pred = en("The cat sat on the mat");
  auto gold = en("the cat is on the mat");
  REQUIRE(pred.size() == 6);
  // Distinct unigrams 5 vs 5 with 4 shared; bigrams 5 vs 5 with 3 shared; LCS 5 of 6.
  CHECK(rouge_n_f(pred, gold, 1) == doctest::Approx(0.8).epsilon(1e-6));
  CHECK(rouge_n_f(pred, gold, 2) == doctest::Approx(0.6).epsilon(1e-6));
  CHECK(rouge_l_f(pred, gold) == doctest::Approx(5.0 / 6.0).epsilon(1e-6));
  CHECK(rouge_l_f({}, gold) == 0.0);
  std::vector<ExampleStats> rows = {example_rouge(pred, gold, 0), example_rouge(gold, gold, 0)};
  CHECK(aggregate(Metric::rougeL, rows) == doctest::Approx((5.0 / 6.0 + 1.0) / 2).epsilon(1e-6));
}

TEST_CASE("metrics: Chinese ROUGE is character-level, English words stay whole") {
  CHECK(zh("我爱北京。Hello, World") ==
        std::vector<std::string>{"我", "爱", "北", "京", "。", "hello", ",", "world"});
  CHECK(rouge_n_f(zh("我爱北京"), zh("我爱上海"), 1) == doctest::Approx(0.5).epsilon(1e-6));
  CHECK(rouge_l_f(zh("我爱北京"), zh("我爱上海")) == doctest::Approx(0.5).epsilon(1e-6));
  CHECK(en("Café naïve") == std::vector<std::string>{"cafe", "naive"});
}

TEST_CASE("metrics: corpus BLEU-4 with brevity penalty and method-1 smoothing by hand") {
  auto gold = en("the cat is on the mat");
  CHECK(aggregate(Metric::bleu4, {example_bleu(gold, gold)}) == doctest::Approx(1.0));
  // p1 = 2/4 (clipped), p2 = 1/3, p3 = 0.1/2, p4 = 0.1/1 (smoothed), BP = 1.
  double expected = std::pow(0.5 * (1.0 / 3.0) * 0.05 * 0.1, 0.25);
  CHECK(aggregate(Metric::bleu4, {example_bleu(en("the cat the cat"), en("the cat is here"))}) ==
        doctest::Approx(expected));
  // All precisions 1, hypothesis 4 tokens vs reference 6: BP = exp(1 - 6/4).
  CHECK(aggregate(Metric::bleu4, {example_bleu(en("the cat is on"), gold)}) ==
        doctest::Approx(std::exp(-0.5)));
  // Corpus level: statistics are summed before the geometric mean.
  std::vector<ExampleStats> rows = {example_bleu(en("the cat is on"), gold),
                                    example_bleu(gold, gold)};
  // hyp 10, ref 12; p1 10/10, p2 8/8, p3 6/6, p4 4/4.
  CHECK(aggregate(Metric::bleu4, rows) == doctest::Approx(std::exp(1.0 - 12.0 / 10.0)));
}

TEST_CASE("metrics: perplexity is exp of the token-weighted mean NLL") {
  std::vector<ExampleStats> rows = {example_nll(std::log(2.0), 1), example_nll(std::log(8.0), 1)};
  CHECK(aggregate(Metric::perplexity, rows) == doctest::Approx(4.0));
  rows = {example_nll(2 * std::log(4.0), 2), example_nll(0.0, 0)};
  CHECK(aggregate(Metric::perplexity, rows) == doctest::Approx(4.0));
}

TEST_CASE("metrics: bootstrap interval is deterministic, seeded and contains the estimate") {
  std::vector<ExampleStats> rows;
  for (int i = 0; i < 100; ++i) rows.push_back(example_correct(i % 2 == 0));
  Interval a = bootstrap_ci(Metric::accuracy, rows, 1000, 7);
  Interval b = bootstrap_ci(Metric::accuracy, rows, 1000, 7);
  Interval c = bootstrap_ci(Metric::accuracy, rows, 1000, 8);
  CHECK(a.point == doctest::Approx(0.5));
  CHECK(a.lo == b.lo);
  CHECK(a.hi == b.hi);
  CHECK((a.lo != c.lo || a.hi != c.hi));
  CHECK(a.lo < a.point);
  CHECK(a.point < a.hi);
  // Binomial standard error sqrt(.25/100) = .05, so the 95% interval is about .40 .. .60.
  CHECK(a.lo == doctest::Approx(0.40).epsilon(0.06));
  CHECK(a.hi == doctest::Approx(0.60).epsilon(0.06));
  std::vector<ExampleStats> all_right(20, example_correct(true));
  Interval d = bootstrap_ci(Metric::accuracy, all_right, 200, 1);
  CHECK(d.lo == 1.0);
  CHECK(d.hi == 1.0);
  CHECK_THROWS_AS(bootstrap_ci(Metric::accuracy, {}, 10, 1), ming::UsageError);
  // Corpus metrics resample examples and re-aggregate their statistics.
  auto lab = labels({"a", "a", "b", "c", "b", "a"}, {"a", "b", "b", "a", "b", "c"});
  Interval m = bootstrap_ci(Metric::f1_macro, lab, 300, 3);
  CHECK(m.lo <= m.point);
  CHECK(m.point <= m.hi);
}

TEST_CASE("metrics: paired bootstrap gives delta, interval and p-value") {
  std::vector<ExampleStats> a, b;
  for (int i = 0; i < 100; ++i) {
    a.push_back(example_correct(true));
    b.push_back(example_correct(i % 10 >= 3));  // 70% right
  }
  PairedResult r = paired_bootstrap(Metric::accuracy, a, b, 1000, 11);
  CHECK(r.a == doctest::Approx(1.0));
  CHECK(r.b == doctest::Approx(0.7));
  CHECK(r.delta.point == doctest::Approx(0.3));
  CHECK(r.delta.lo > 0.15);
  CHECK(r.delta.hi < 0.45);
  CHECK(r.p_value == doctest::Approx(1.0 / 1001.0));
  PairedResult same = paired_bootstrap(Metric::accuracy, b, b, 500, 11);
  CHECK(same.delta.point == 0.0);
  CHECK(same.p_value == 1.0);
  PairedResult again = paired_bootstrap(Metric::accuracy, a, b, 1000, 11);
  CHECK(again.delta.lo == r.delta.lo);
  CHECK_THROWS_AS(paired_bootstrap(Metric::accuracy, a, std::vector<ExampleStats>(3), 10, 1),
                  ming::UsageError);
}
