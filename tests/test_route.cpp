// Route traces and their statistics: the binary format round trip (padding dropped, rows split
// per example), defects reported with the file name, hand-computed shares / balance / MI / pairs,
// trace comparison, and the report folder (CSV columns, well-formed SVG).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include <torch/torch.h>

#include "ming/adapt/config.h"
#include "ming/core/error.h"
#include "ming/model/transformer.h"
#include "ming/route/report.h"
#include "ming/route/stats.h"
#include "ming/route/trace.h"
#include "support.h"
#include "test_route_support.h"

namespace ming {
namespace {

namespace fs = std::filesystem;
using route::ExampleTag;
using route::RouteTraceReader;
using route::RouteTraceWriter;
using route::TraceExample;

const std::string kGate = "model.layers.0.mlp.gate_proj";
const std::string kUp = "model.layers.0.mlp.up_proj";

std::vector<TraceExample> read_all(const fs::path& path) {
  RouteTraceReader reader(path);
  std::vector<TraceExample> out;
  TraceExample ex;
  while (reader.next(ex)) out.push_back(ex);
  return out;
}

// Writes examples given per token as (expert ids, gates) for one or two layers.
struct Tok {
  std::vector<int> experts;
  std::vector<float> gates;
};
struct Ex {
  std::string id, task;
  std::vector<Tok> tokens;
};

// One-layer trace (E experts, k = tokens' slot count) from hand-written examples, one batch per
// example.
void write_trace(const fs::path& path, int64_t experts, int64_t k, const std::vector<Ex>& examples,
                 const std::string& layer = kGate) {
  RouteTraceWriter w(path);
  w.declare_layer(layer, experts, k);
  for (const auto& ex : examples) {
    const int64_t t = ex.tokens.size();
    auto ids = torch::zeros({t, k}, torch::kInt64);
    auto gates = torch::zeros({t, k}, torch::kFloat);
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) {
        ids[i][j] = ex.tokens[i].experts[j];
        gates[i][j] = ex.tokens[i].gates.empty() ? 1.0f / k : ex.tokens[i].gates[j];
      }
    w.begin_batch({{ex.id, ex.task}}, torch::ones({1, t}, torch::kInt64));
    w.record(layer, ids, gates, torch::Tensor());
    w.end_batch();
  }
  w.close();
}

TEST_CASE("route trace: round trip keeps only real tokens, split per example, in order") {
  test::TempDir tmp("ming-route");
  const auto path = tmp / "r.trace";
  {
    RouteTraceWriter w(path, {route::GateDtype::f32, {{"model", "tiny"}}});
    w.declare_layer(kGate, 4, 2);
    w.declare_layer("model.layers.1.mlp.down_proj", 300, 1);  // > 256 experts: u16 ids
    // Batch of 2 x 3: row 0 right-padded (2 real), row 1 left-padded (2 real).
    auto mask = torch::tensor({1, 1, 0, 0, 1, 1}, torch::kInt64).view({2, 3});
    w.begin_batch({{"a", "t1"}, {"b", "t2"}}, mask);
    // Rows n = b*3 + t; give every row distinct values to see which were kept.
    auto e0 = torch::tensor({0, 1, 1, 2, 2, 3, 3, 0, 0, 2, 1, 3}, torch::kInt64).view({6, 2});
    auto g0 = torch::tensor({.9f, .1f, .8f, .2f, .7f, .3f, .6f, .4f, .55f, .45f, .51f, .49f})
                  .view({6, 2});
    auto e1 = torch::tensor({10, 11, 12, 13, 299, 15}, torch::kInt64).view({6, 1});
    w.record("model.layers.1.mlp.down_proj", e1, torch::ones({6, 1}), torch::Tensor());
    w.record(kGate, e0, g0, torch::Tensor());
    w.end_batch();
    // A second batch of one unpadded example.
    w.begin_batch({{"c", "t1"}}, torch::ones({1, 1}, torch::kBool));
    w.record(kGate, torch::tensor({{3, 2}}, torch::kInt64), torch::tensor({{.75f, .25f}}), {});
    w.record("model.layers.1.mlp.down_proj", torch::tensor({{7}}, torch::kInt64),
             torch::ones({1, 1}), {});
    w.end_batch();
    CHECK(w.examples_written() == 3);
    CHECK(w.tokens_written() == 5);
    w.close();
  }
  RouteTraceReader reader(path);
  REQUIRE(reader.layers().size() == 2);
  CHECK(reader.layers()[0].name == kGate);  // declaration order, not record order
  CHECK(reader.layers()[1].experts == 300);
  CHECK(reader.meta().at("model") == "tiny");
  CHECK(reader.gate_dtype() == route::GateDtype::f32);
  TraceExample ex;
  REQUIRE(reader.next(ex));
  CHECK(ex.id == "a");
  CHECK(ex.task == "t1");
  CHECK(ex.tokens == 2);
  CHECK(ex.experts[0] == std::vector<uint16_t>{0, 1, 1, 2});  // rows 0 and 1
  CHECK(ex.gates[0] == std::vector<float>{.9f, .1f, .8f, .2f});
  CHECK(ex.experts[1] == std::vector<uint16_t>{10, 11});
  REQUIRE(reader.next(ex));
  CHECK(ex.id == "b");
  CHECK(ex.tokens == 2);
  CHECK(ex.experts[0] == std::vector<uint16_t>{0, 2, 1, 3});  // rows 4 and 5
  CHECK(ex.experts[1] == std::vector<uint16_t>{299, 15});
  REQUIRE(reader.next(ex));
  CHECK(ex.id == "c");
  CHECK(ex.experts[0] == std::vector<uint16_t>{3, 2});
  CHECK_FALSE(reader.next(ex));
  CHECK_FALSE(reader.next(ex));
}

TEST_CASE(
    "route trace: f16 gates round to within 1e-3; a writer destroyed without close leaves "
    "nothing") {
  test::TempDir tmp("ming-route");
  write_trace(tmp / "h.trace", 4, 2, {{"x", "t", {{{0, 3}, {0.6180339f, 0.3819661f}}}}});
  auto all = read_all(tmp / "h.trace");
  REQUIRE(all.size() == 1);
  CHECK(all[0].gates[0][0] == doctest::Approx(0.6180339).epsilon(1e-3));
  CHECK(all[0].gates[0][1] == doctest::Approx(0.3819661).epsilon(1e-3));
  {
    RouteTraceWriter w(tmp / "gone.trace");
    w.declare_layer(kGate, 4, 1);
    w.begin_batch({{"x", ""}}, torch::ones({1, 2}));
    w.record(kGate, torch::zeros({2, 1}, torch::kInt64), torch::ones({2, 1}), {});
    w.end_batch();
  }
  CHECK(fs::is_empty(tmp.path()) == false);
  for (const auto& entry : fs::directory_iterator(tmp.path()))
    CHECK(entry.path().filename() == "h.trace");  // neither gone.trace nor a temporary
}

TEST_CASE("route trace: misuse of the writer is an error that names the layer") {
  test::TempDir tmp("ming-route");
  RouteTraceWriter w(tmp / "m.trace");
  w.declare_layer(kGate, 4, 2);
  CHECK_THROWS_WITH_AS(
      w.record(kGate, torch::zeros({2, 2}, torch::kInt64), torch::ones({2, 2}), {}),
      doctest::Contains("outside begin_batch"), Error);
  w.begin_batch({{"a", ""}}, torch::ones({1, 2}));
  CHECK_THROWS_WITH_AS(w.record(kUp, torch::zeros({2, 2}, torch::kInt64), torch::ones({2, 2}), {}),
                       doctest::Contains("was not declared"), Error);
  CHECK_THROWS_WITH_AS(
      w.record(kGate, torch::zeros({3, 2}, torch::kInt64), torch::ones({3, 2}), {}),
      doctest::Contains("expected (2, 2)"), Error);
  w.record(kGate, torch::zeros({2, 2}, torch::kInt64), torch::ones({2, 2}), {});
  CHECK_THROWS_WITH_AS(
      w.record(kGate, torch::zeros({2, 2}, torch::kInt64), torch::ones({2, 2}), {}),
      doctest::Contains("recorded twice"), Error);
  w.end_batch();
  w.begin_batch({{"b", ""}}, torch::ones({1, 1}));
  CHECK_THROWS_WITH_AS(w.end_batch(), doctest::Contains("not recorded"), Error);
}

TEST_CASE(
    "route trace: missing, foreign, truncated and trailing-garbage files are UsageErrors naming "
    "the file") {
  test::TempDir tmp("ming-route");
  const auto good = tmp / "good.trace";
  write_trace(good, 4, 2, {{"a", "t", {{{0, 1}, {}}, {{2, 3}, {}}}}, {"b", "t", {{{1, 0}, {}}}}});
  CHECK(read_all(good).size() == 2);
  const std::string bytes = test::read_text(good);

  CHECK_THROWS_WITH_AS(RouteTraceReader(tmp / "none.trace"),
                       doctest::Contains("none.trace': no such file"), UsageError);
  test::write_text(tmp / "foreign.trace", "hello, this is not a trace at all");
  CHECK_THROWS_WITH_AS(RouteTraceReader(tmp / "foreign.trace"), doctest::Contains("foreign.trace"),
                       UsageError);
  // Cut inside the second record and just before the end record: both refused.
  for (size_t cut : {bytes.size() - 25, bytes.size() - 20, bytes.size() - 1}) {
    test::write_text(tmp / "cut.trace", bytes.substr(0, cut));
    CHECK_THROWS_WITH_AS(read_all(tmp / "cut.trace"), doctest::Contains("cut.trace"), UsageError);
  }
  test::write_text(tmp / "extra.trace", bytes + "x");
  CHECK_THROWS_WITH_AS(read_all(tmp / "extra.trace"), doctest::Contains("after the end record"),
                       UsageError);
  // An expert id out of range (flip the first id byte of the first record to 9 >= E = 4).
  std::string bad = bytes;
  size_t header_len = *reinterpret_cast<const uint32_t*>(bad.data() + 12);
  size_t first_id = 16 + header_len + 4 + 8 + 4 + 1 + 4 + 1 + 4;  // tag, len, "a", "t", tokens
  bad[first_id] = 9;
  test::write_text(tmp / "range.trace", bad);
  CHECK_THROWS_WITH_AS(read_all(tmp / "range.trace"),
                       doctest::Contains("expert id 9 outside [0, 4)"), UsageError);
}

TEST_CASE(
    "route stats: two tasks each routed to their own expert give 1 bit of MI, CV 1, two dead "
    "experts") {
  test::TempDir tmp("ming-route");
  // E = 4, k = 1; task A always expert 0, task B always expert 1; 3 tokens each.
  Tok a{{0}, {1.f}}, b{{1}, {1.f}};
  write_trace(tmp / "t.trace", 4, 1,
              {{"a1", "A", {a, a}}, {"b1", "B", {b, b, b}}, {"a2", "A", {a}}});
  auto s = route::compute_stats(tmp / "t.trace");
  CHECK(s.examples == 3);
  CHECK(s.tokens == 6);
  REQUIRE(s.tasks.size() == 2);
  CHECK(s.tasks[0].name == "A");
  CHECK(s.tasks[0].examples == 2);
  CHECK(s.tasks[0].tokens == 3);
  REQUIRE(s.layers.size() == 1);
  const auto& l = s.layers[0];
  CHECK(l.layer == 0);
  CHECK(l.projection == "gate_proj");
  CHECK(l.top1_share == std::vector<double>{0.5, 0.5, 0, 0});
  CHECK(l.topk_share == std::vector<double>{0.5, 0.5, 0, 0});
  // p = (.5, .5, 0, 0): mean .25, population std .25 -> CV 1; max/mean 2; H = 1 bit of 2.
  CHECK(l.balance.cv == doctest::Approx(1.0));
  CHECK(l.balance.max_over_mean == doctest::Approx(2.0));
  CHECK(l.balance.entropy_norm == doctest::Approx(0.5));
  CHECK(l.dead == std::vector<bool>{false, false, true, true});
  CHECK_FALSE(l.collapsed);  // 50% is not above 50%
  CHECK(l.mi_bits == doctest::Approx(1.0));
  CHECK(l.mi_norm == doctest::Approx(1.0));
  CHECK(l.mi_top1_bits == doctest::Approx(1.0));
  CHECK(l.task_share(0, 0) == doctest::Approx(1.0));
  CHECK(l.task_share(1, 1) == doctest::Approx(1.0));
  CHECK(l.task_tokens(1) == 3);

  // The same tasks spread identically -> MI 0.
  Tok c{{2}, {1.f}}, d{{3}, {1.f}};
  write_trace(tmp / "u.trace", 4, 1, {{"a", "A", {c, d}}, {"b", "B", {c, d}}});
  auto u = route::compute_stats(tmp / "u.trace");
  CHECK(u.layers[0].mi_bits == doctest::Approx(0.0));
  CHECK(u.layers[0].dead == std::vector<bool>{true, true, false, false});
}

TEST_CASE("route stats: top-k shares, mean gates, collapse and co-selection counts by hand") {
  test::TempDir tmp("ming-route");
  // E = 4, k = 2; slot 0 has the higher gate except in the last token (order must not matter).
  write_trace(tmp / "k.trace", 4, 2,
              {{"x",
                "T",
                {{{0, 1}, {.75f, .25f}},
                 {{0, 1}, {.5f, .5f}},
                 {{0, 2}, {.875f, .125f}},
                 {{3, 1}, {.25f, .75f}}}}});
  auto s = route::compute_stats(tmp / "k.trace");
  const auto& l = s.layers[0];
  // top-1: tokens 0..2 -> expert 0 (ties keep slot 0), token 3 -> expert 1 (higher gate).
  CHECK(l.top1_counts == std::vector<int64_t>{3, 1, 0, 0});
  CHECK(l.top1_share[0] == doctest::Approx(0.75));
  CHECK(l.collapsed);  // 75% > 50%
  CHECK(l.max_top1_expert == 0);
  // top-k: 8 assignments: e0 3, e1 3, e2 1, e3 1.
  CHECK(l.topk_share == std::vector<double>{3 / 8.0, 3 / 8.0, 1 / 8.0, 1 / 8.0});
  CHECK(l.mean_gate[0] == doctest::Approx((.75 + .5 + .875) / 3));
  CHECK(l.mean_gate[1] == doctest::Approx((.25 + .5 + .75) / 3));
  CHECK(l.mean_gate[3] == doctest::Approx(.25));
  // Dead threshold 0.1 * 1/4 = 2.5%: nobody; with threshold 0.6 (15%): experts 2 and 3 (12.5%).
  CHECK(std::count(l.dead.begin(), l.dead.end(), true) == 0);
  route::StatsOptions strict;
  strict.dead_threshold = 0.6;
  auto s2 = route::compute_stats(tmp / "k.trace", strict);
  CHECK(s2.layers[0].dead == std::vector<bool>{false, false, true, true});
  // Pairs: {0,1} twice, {0,2} once, {1,3} once; symmetric.
  auto pair = [&](int a, int b) { return l.pair_counts[a * 4 + b]; };
  CHECK(pair(0, 1) == 2);
  CHECK(pair(1, 0) == 2);
  CHECK(pair(0, 2) == 1);
  CHECK(pair(1, 3) == 1);
  CHECK(pair(2, 3) == 0);
  CHECK(pair(0, 3) == 0);
  // lift(0,1) = (2/4) / ((3/4) * (3/4)).
  CHECK(l.pair_lift(0, 1) == doctest::Approx(0.5 / 0.5625));
  // Balance of p = (3,3,1,1)/8: mean 1/4, deviations +-1/8 -> CV 0.5.
  CHECK(l.balance.cv == doctest::Approx(0.5));
}

TEST_CASE(
    "route stats: comparing traces gives total variation and Jensen-Shannon divergence per layer") {
  test::TempDir tmp("ming-route");
  Tok e0{{0}, {1.f}}, e1{{1}, {1.f}};
  write_trace(tmp / "a.trace", 2, 1, {{"a", "T", {e0, e0}}});
  write_trace(tmp / "b.trace", 2, 1, {{"a", "T", {e0, e1}}});
  write_trace(tmp / "other.trace", 2, 1, {{"a", "T", {e0}}}, kUp);
  auto a = route::compute_stats(tmp / "a.trace");
  auto b = route::compute_stats(tmp / "b.trace");
  auto c = route::compare_stats(a, b);
  REQUIRE(c.layers.size() == 1);
  CHECK(c.layers[0].tv == doctest::Approx(0.5));
  // JS((1,0), (.5,.5)) with m = (.75, .25).
  double js =
      0.5 * std::log2(1 / 0.75) + 0.5 * (0.5 * std::log2(0.5 / 0.75) + 0.5 * std::log2(0.5 / 0.25));
  CHECK(c.layers[0].js_bits == doctest::Approx(js));
  CHECK(c.layers[0].experts[1].delta() == doctest::Approx(0.5));
  CHECK(c.layers[0].moved_most == 0);  // |-0.5| == |+0.5|: the first wins
  auto text = route::summary_text(a, &c, &b);
  CHECK(text.find("TV 0.500") != std::string::npos);
  CHECK_THROWS_WITH_AS(route::compare_stats(a, route::compute_stats(tmp / "other.trace")),
                       doctest::Contains("share no MoLoRA layer"), UsageError);
}

TEST_CASE("route report: CSV columns, JSON and well-formed SVG heatmaps with tooltips and legend") {
  test::TempDir tmp("ming-route");
  const auto path = tmp / "r.trace";
  {
    // Two layers x two projections, E = 4, k = 2, tasks with XML-hostile names.
    RouteTraceWriter w(path);
    std::vector<std::string> names = {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                                      "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"};
    for (const auto& n : names) w.declare_layer(n, 4, 2);
    torch::manual_seed(3);
    for (int b = 0; b < 3; ++b) {
      w.begin_batch({{"x" + std::to_string(b), b == 0 ? "a<b&\"c\"" : "plain, task"}},
                    torch::ones({1, 5}));
      for (const auto& n : names) {
        auto ids = torch::stack({torch::randint(0, 2, {5}), torch::randint(2, 4, {5})}, 1);
        w.record(n, ids, torch::full({5, 2}, 0.5), {});
      }
      w.end_batch();
    }
    w.close();
  }
  auto a = route::compute_stats(path);
  auto c = route::compare_stats(a, a);
  fs::create_directories(tmp / "out");
  auto files = route::write_report(tmp / "out", a, &c, {1});
  for (const char* f : {"route_stats.json", "layers.csv", "experts.csv", "tasks.csv", "pairs.csv",
                        "compare.csv", "compare_experts.csv", "load_gate_proj.svg",
                        "top1_up_proj.svg", "tasks_gate_proj.svg", "compare_up_proj.svg"})
    CHECK_MESSAGE(fs::exists(tmp / "out" / f), f);
  int per_layer = 0;
  for (const auto& f : files) per_layer += f.rfind("tasks_gate_proj_layer", 0) == 0;
  CHECK(per_layer == 1);  // task_layers = 1

  auto experts = test::read_text(tmp / "out" / "experts.csv");
  CHECK(experts.rfind("layer,projection,expert,top1_share,topk_share,mean_gate,dead,module\n", 0) ==
        0);
  CHECK(test::count_lines(experts) == 1 + 4 * 4);
  auto tasks = test::read_text(tmp / "out" / "tasks.csv");
  CHECK(tasks.find("\"plain, task\"") != std::string::npos);  // quoted field
  CHECK(test::count_lines(tasks) == 1 + 4 * 2 * 4);
  CHECK(test::count_lines(test::read_text(tmp / "out" / "pairs.csv")) == 1 + 4 * 6);
  auto json = nlohmann::json::parse(test::read_text(tmp / "out" / "route_stats.json"));
  CHECK(json["format"] == "ming-route-stats");
  CHECK(json["layers"].size() == 4);
  CHECK(json["tasks"].size() == 2);
  CHECK(json["compare"]["layers"][0]["tv"] == 0.0);
  CHECK(json["files"].size() == files.size());

  for (const auto& f : files) {
    if (f.size() < 4 || f.substr(f.size() - 4) != ".svg") continue;
    auto svg = test::read_text(tmp / "out" / f);
    INFO(f);
    CHECK(test::xml_well_formed(svg) == "");
    CHECK(svg.find("<title>") != std::string::npos);
    CHECK(svg.find("linearGradient") != std::string::npos);
    CHECK(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
    if (f.rfind("tasks_", 0) == 0) CHECK(svg.find("a&lt;b&amp;&quot;c&quot;") != std::string::npos);
  }
  CHECK(test::python_xml_parses(tmp / "out" / "tasks_gate_proj.svg"));
}

TEST_CASE("route heatmap: the well-formedness check used on SVGs rejects broken XML") {
  CHECK(test::xml_well_formed("<a><b x=\"1\"/><c>t &amp; u</c></a>") == "");
  CHECK(test::xml_well_formed("<a><b></a>") != "");
  CHECK(test::xml_well_formed("<a x=1></a>") != "");
  CHECK(test::xml_well_formed("<a>x & y</a>") != "");
  CHECK(test::xml_well_formed("<a></a><b></b>") != "");
  route::Heatmap m;
  m.row_labels = {"r"};
  m.col_labels = {"c1", "c2"};
  m.values = {0.5};
  CHECK_THROWS_AS(route::heatmap_svg(m), Error);
}

}  // namespace
}  // namespace ming
