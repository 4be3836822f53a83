// YAML configs: precedence (defaults < file < --set), unknown keys, type errors, round trip.
#include <doctest/doctest.h>

#include "ming/io/config.h"

namespace {

struct Block {
  int64_t experts = 8;
  std::vector<std::string> target = {"gate_proj"};
  template <class V>
  void visit(V& v) {
    v("experts", experts);
    v("target", target);
  }
};

struct Item {
  std::string path;
  double weight = 1.0;
  template <class V>
  void visit(V& v) {
    v("path", path);
    v("weight", weight);
  }
};

struct Options {
  double learning_rate = 2e-4;
  bool bf16 = true;
  std::string name = "run";
  std::optional<int64_t> max_steps;
  Block moe;
  std::vector<Item> dataset;
  template <class V>
  void visit(V& v) {
    v("learning_rate", learning_rate);
    v("bf16", bf16);
    v("name", name);
    v("max_steps", max_steps);
    v("moe", moe);
    v("dataset", dataset);
  }
};

}  // namespace

using namespace ming;

TEST_CASE("config: defaults hold for keys the file leaves out") {
  auto doc = config::parse_document("name: x\n", "run.yaml");
  auto o = config::read<Options>(doc);
  CHECK(o.learning_rate == doctest::Approx(2e-4));
  CHECK(o.name == "x");
  CHECK(o.moe.experts == 8);
  CHECK(!o.max_steps);
}

TEST_CASE("config: --set beats the file, including nested keys and list items") {
  auto doc = config::parse_document(
      "learning_rate: 1e-3\nmoe:\n  experts: 4\ndataset:\n  - {path: a.jsonl, weight: 2}\n",
      "run.yaml");
  config::apply_override(doc, "learning_rate=5e-5");
  config::apply_override(doc, "moe.experts=2");
  config::apply_override(doc, "dataset.0.weight=3");
  config::apply_override(doc, "dataset.1.path=b.jsonl");
  config::apply_override(doc, "moe.target=[q_proj, v_proj]");
  auto o = config::read<Options>(doc);
  CHECK(o.learning_rate == doctest::Approx(5e-5));
  CHECK(o.moe.experts == 2);
  REQUIRE(o.dataset.size() == 2);
  CHECK(o.dataset[0].weight == 3.0);
  CHECK(o.dataset[1].path == "b.jsonl");
  CHECK(o.moe.target == std::vector<std::string>{"q_proj", "v_proj"});
}

TEST_CASE("config: every unknown key and type error is reported together with file and line") {
  auto doc =
      config::parse_document("learning_rat: 1\nbf16: maybe\nmoe:\n  expertz: 3\n", "run.yaml");
  try {
    config::read<Options>(doc);
    FAIL("expected UsageError");
  } catch (const UsageError& e) {
    std::string m = e.what();
    CHECK(m.find("run.yaml:1: unknown key 'learning_rat' (did you mean 'learning_rate'?)") !=
          std::string::npos);
    CHECK(m.find("run.yaml:2: key 'bf16': expected true or false") != std::string::npos);
    CHECK(m.find("run.yaml:4: unknown key 'moe.expertz'") != std::string::npos);
  }
}

TEST_CASE("config: an unknown key given with --set is an error naming the key") {
  auto doc = config::parse_document("", "run.yaml");
  config::apply_override(doc, "moe.top_kk=3");
  CHECK_THROWS_WITH_AS(config::read<Options>(doc), doctest::Contains("unknown key 'moe.top_kk'"),
                       UsageError);
  CHECK_THROWS_AS(config::apply_override(doc, "novalue"), UsageError);
}

TEST_CASE("config: a scalar where a list is expected is the one-element list") {
  auto doc = config::parse_document("moe:\n  target: down_proj\n", "run.yaml");
  CHECK(config::read<Options>(doc).moe.target == std::vector<std::string>{"down_proj"});
}

TEST_CASE("config: the resolved config written as YAML reads back to the same values") {
  Options o;
  o.learning_rate = 3e-4;
  o.max_steps = 7;
  o.name = "123";  // must stay a string after the round trip
  o.dataset = {{"x.jsonl", 0.5}};
  std::string yaml = config::to_yaml(config::write(o));
  auto back = config::read<Options>(config::parse_document(yaml, "resolved.yaml"));
  CHECK(back.learning_rate == doctest::Approx(3e-4));
  CHECK(back.max_steps == 7);
  CHECK(back.name == "123");
  REQUIRE(back.dataset.size() == 1);
  CHECK(back.dataset[0].weight == 0.5);
}

TEST_CASE("config: YAML syntax errors name file and line") {
  CHECK_THROWS_WITH_AS(config::parse_document("a: [1, 2\nb: 3\n", "bad.yaml"),
                       doctest::Contains("bad.yaml:"), UsageError);
}

namespace {

enum class Decay { cosine, linear, constant };
constexpr config::NameTable<Decay, 3> enum_names(Decay) {
  return {{{Decay::cosine, "cosine"}, {Decay::linear, "linear"}, {Decay::constant, "constant"}}};
}

struct Schedule {
  Decay decay = Decay::cosine;
  std::optional<Decay> fallback;
  std::vector<std::string> targets = {"q_proj"};
  std::map<std::string, int64_t> experts_per_target;
  template <class V>
  void visit(V& v) {
    v("decay", decay, "how the rate decays");
    v("fallback", fallback, "decay after a restart");
    v("targets|target", targets, "projections");
    v("experts_per_target", experts_per_target, "experts by projection");
  }
};

}  // namespace

TEST_CASE("config: enums are read and written by the names in their table") {
  auto doc = config::parse_document("decay: linear\nfallback: constant\n", "s.yaml");
  auto s = config::read<Schedule>(doc);
  CHECK(s.decay == Decay::linear);
  CHECK(s.fallback == Decay::constant);
  CHECK(config::write(s)["decay"] == "linear");
  CHECK(config::name_of(Decay::constant) == "constant");
  CHECK(config::enum_choices<Decay>() == "cosine | linear | constant");
  CHECK_THROWS_WITH_AS(config::read<Schedule>(config::parse_document("decay: linaer\n", "s.yaml")),
                       "s.yaml:1: key 'decay': 'linaer' is not one of cosine, linear, constant "
                       "(did you mean 'linear'?)",
                       UsageError);
  CHECK_THROWS_WITH_AS(
      config::parse_enum<Decay>("cos", "decay"),
      "decay: 'cos' is not one of cosine, linear, constant (did you mean 'cosine'?)", UsageError);
  CHECK_THROWS_WITH_AS(config::parse_enum<Decay>("step", "decay"),
                       "decay: 'step' is not one of cosine, linear, constant", UsageError);
}

TEST_CASE("config: an old key name is read, written under the new one, and not with both") {
  auto s = config::read<Schedule>(config::parse_document("target: [v_proj]\n", "s.yaml"));
  CHECK(s.targets == std::vector<std::string>{"v_proj"});
  CHECK(config::write(s).contains("targets"));
  CHECK_FALSE(config::write(s).contains("target"));
  CHECK_THROWS_WITH_AS(
      config::read<Schedule>(config::parse_document("target: [a]\ntargets: [b]\n", "s.yaml")),
      doctest::Contains("are the same setting"), UsageError);
}

TEST_CASE("config: mappings of names to values round-trip") {
  auto s = config::read<Schedule>(
      config::parse_document("experts_per_target: {gate_proj: 8, up_proj: 4}\n", "s.yaml"));
  CHECK(s.experts_per_target == std::map<std::string, int64_t>{{"gate_proj", 8}, {"up_proj", 4}});
  CHECK(config::write(s)["experts_per_target"]["up_proj"] == 4);
  CHECK_THROWS_WITH_AS(
      config::read<Schedule>(config::parse_document("experts_per_target: {a: x}\n", "s.yaml")),
      doctest::Contains("key 'experts_per_target.a': expected an integer"), UsageError);
}

TEST_CASE("config: JSON files read through the same description, with lines") {
  auto doc =
      config::parse_document("{\n  \"decay\": \"constant\",\n  \"expertz\": 1\n}\n", "a.json");
  CHECK_THROWS_WITH_AS(config::read<Schedule>(doc),
                       doctest::Contains("a.json:3: unknown key 'expertz'"), UsageError);
  auto parsed = config::make_document(nlohmann::json{{"decay", "linear"}}, "b.json");
  CHECK(config::read<Schedule>(parsed).decay == Decay::linear);
}

TEST_CASE("config: describe lists every key with type, default and help") {
  auto rows = config::describe<Options>();
  auto find = [&](const std::string& key) {
    for (const auto& r : rows)
      if (r.key == key) return r;
    FAIL("no row for " << key);
    return config::FieldDoc{};
  };
  CHECK(find("learning_rate").type == "number");
  CHECK(find("learning_rate").default_value == "0.0002");
  CHECK(find("moe.experts").default_value == "8");
  CHECK(find("moe.target").type == "list of string");
  CHECK(find("dataset[].weight").default_value == "1.0");
  CHECK(find("max_steps").default_value == "null");
  auto help = config::help_text<Schedule>();
  CHECK(help.find("decay") != std::string::npos);
  CHECK(help.find("cosine | linear | constant") != std::string::npos);
  CHECK(help.find("how the rate decays") != std::string::npos);
  CHECK(help.find("(also read as: target)") != std::string::npos);
}
