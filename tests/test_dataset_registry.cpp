// LLaMA-Factory's dataset registry (dataset_info.json), record layouts (columns, tags),
// max_samples, mix strategies and the seeded val_size hold-out.
#include <set>

// LibTorch first: glog's CHECK macro must be overridden by doctest's, not the other way round.
#include "ming/data/loader.h"

#include <doctest/doctest.h>

#include "byte_tokenizer.h"
#include "ming/core/error.h"
#include "ming/data/registry.h"
#include "support.h"

namespace {

using namespace ming;
using ming::test::ByteTokenizer;
using ming::test::TempDir;
using ming::test::write_text;
using text::Role;

// A LLaMA-Factory style data folder: an alpaca file with renamed columns, an OpenAI-style
// sharegpt file (role/content tags) with a system column, and a plain alpaca file.
void write_registry(const TempDir& dir) {
  write_text(dir / "dataset_info.json", R"({
    "qa": {"file_name": "qa.json", "columns": {"prompt": "question", "response": "answer",
                                                 "system": "sys"}},
    "chat": {"file_name": "chat.jsonl", "formatting": "sharegpt",
             "columns": {"messages": "messages", "system": "system"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                      "assistant_tag": "assistant"}},
    "plain": {"file_name": "plain.jsonl"},
    "hub": {"hf_hub_url": "llamafactory/alpaca_en"},
    "pairs": {"file_name": "plain.jsonl", "ranking": true},
    "pictures": {"file_name": "plain.jsonl", "columns": {"images": "images"}}
  })");
  write_text(dir / "qa.json", R"([
    {"question": "What is fever?", "answer": "A raised temperature.", "sys": "Be brief."},
    {"question": "What is a cough?", "answer": "A reflex."}
  ])");
  write_text(
      dir / "chat.jsonl",
      R"({"system": "You are a nurse.", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "Pain?"}, {"role": "assistant", "content": "Where?"}, {"role": "user", "content": "Head"}, {"role": "assistant", "content": "Rest."}]})"
      "\n");
  std::string plain;
  for (int i = 0; i < 20; ++i)
    plain += "{\"instruction\": \"q" + std::to_string(i) + "\", \"output\": \"a" +
             std::to_string(i) + "\"}\n";
  write_text(dir / "plain.jsonl", plain);
}

data::DatasetSpec named(const std::string& name) {
  data::DatasetSpec s;
  s.name = name;
  return s;
}

}  // namespace

TEST_CASE("dataset registry: comma lists split and trim like LLaMA-Factory's") {
  CHECK(data::split_comma_list("identity,alpaca_en_demo") ==
        std::vector<std::string>{"identity", "alpaca_en_demo"});
  CHECK(data::split_comma_list(" a , b,,c ") == std::vector<std::string>{"a", "b", "c"});
  CHECK(data::split_comma_list("").empty());
}

TEST_CASE("dataset registry: names resolve to files, formats, columns and tags") {
  TempDir dir("ming-registry");
  write_registry(dir);
  auto specs = data::resolve_dataset_names({named("qa"), named("chat")}, dir.path());
  REQUIRE(specs.size() == 2);
  CHECK(specs[0].path == (dir / "qa.json").string());
  CHECK(specs[0].format == "alpaca");
  CHECK(specs[0].columns.prompt == "question");
  CHECK(specs[1].format == "sharegpt");
  CHECK(specs[1].tags.user_tag == "user");

  // Renamed records read as the conversations they describe.
  const data::RecordLayout qa{specs[0].columns, specs[0].tags};
  auto read = data::read_examples(specs[0].path, data::DataFormat::alpaca,
                                  data::BadExamplePolicy::stop, &qa);
  REQUIRE(read.examples.size() == 2);
  const auto& m = read.examples[0].messages;
  REQUIRE(m.size() == 3);
  CHECK((m[0].role == Role::system && m[0].content == "Be brief."));
  CHECK((m[1].role == Role::user && m[1].content == "What is fever?"));
  CHECK((m[2].role == Role::assistant && m[2].content == "A raised temperature."));

  const data::RecordLayout chat{specs[1].columns, specs[1].tags};
  read = data::read_examples(specs[1].path, data::DataFormat::sharegpt,
                             data::BadExamplePolicy::stop, &chat);
  REQUIRE(read.examples.size() == 2);
  CHECK(read.examples[0].messages.size() == 3);  // the system column became the system turn
  CHECK(read.examples[0].messages[0].content == "You are a nurse.");
  CHECK(read.examples[1].messages.size() == 4);
  CHECK((read.examples[1].messages[3].role == Role::assistant &&
         read.examples[1].messages[3].content == "Rest."));

  // A spec with a path is left alone, registry or not.
  data::DatasetSpec file;
  file.path = (dir / "plain.jsonl").string();
  CHECK(data::resolve_dataset_names({file}, dir / "nowhere")[0].path == file.path);
}

TEST_CASE("dataset registry: unknown names, Hub entries, preference data and images are refused") {
  TempDir dir("ming-registry");
  write_registry(dir);
  auto message = [&](const std::string& name) {
    try {
      data::resolve_dataset_names({named(name)}, dir.path());
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message("cht").find("did you mean 'chat'") != std::string::npos);
  CHECK(message("hub").find("hf_hub_url") != std::string::npos);
  CHECK(message("pairs").find("ranking") != std::string::npos);
  CHECK(message("pictures").find("columns.images is not supported") != std::string::npos);
  TempDir empty("ming-registry");
  CHECK_THROWS_WITH_AS(data::resolve_dataset_names({named("qa")}, empty.path()),
                       doctest::Contains("dataset_info.json"), UsageError);
}

TEST_CASE("dataset registry: tool turns and unknown roles are bad records, counted under skip") {
  data::RecordLayout layout;
  layout.tags.role_tag = "role";
  layout.tags.content_tag = "content";
  io::Json tool = io::Json::parse(
      R"({"conversations": [{"role": "human", "content": "x"}, {"role": "observation", "content": "y"}]})");
  CHECK_THROWS_WITH_AS(data::canonical_record(tool, data::DataFormat::sharegpt, layout),
                       doctest::Contains("tool turn"), UsageError);
  io::Json odd = io::Json::parse(R"({"conversations": [{"role": "doctor", "content": "x"}]})");
  CHECK_THROWS_WITH_AS(data::canonical_record(odd, data::DataFormat::sharegpt, layout),
                       doctest::Contains("unknown role 'doctor'"), UsageError);
}

TEST_CASE("dataset registry: max_samples keeps each dataset's first records") {
  TempDir dir("ming-registry");
  write_registry(dir);
  ByteTokenizer tok;
  data::DataOptions options;
  options.datasets = {named("plain"), named("qa")};
  options.dataset_dir = dir.path().string();
  options.chat_template = "chatml";
  options.max_samples = 5;
  auto d = data::TrainingData::load(options, tok);
  CHECK(d->stats()[0].n_records == 5);
  CHECK(d->stats()[0].name == "plain");
  CHECK(d->stats()[1].n_records == 2);
}

TEST_CASE("dataset registry: mix strategies set each dataset's share of an epoch") {
  std::vector<std::vector<data::EncodedExample>> sets(2);
  auto example = [] {
    data::EncodedExample ex;
    ex.input_ids = {1, 2, 3};
    ex.labels = {1, 2, 3};
    ex.first_trained = 0;
    return ex;
  };
  sets[0].assign(30, example());
  sets[1].assign(10, example());
  data::DataOptions options;
  options.datasets.resize(2);
  options.datasets[0].weight = 1;
  options.datasets[1].weight = 1;
  auto counts = [&](const std::string& strategy) {
    options.mix_strategy = strategy;
    auto d = data::TrainingData::from_examples(sets, options, 0);
    return d->per_epoch_counts();
  };
  CHECK(counts("weights") == std::vector<int64_t>{20, 20});
  CHECK(counts("concat") == std::vector<int64_t>{30, 10});
  // Equal probabilities: the small dataset runs out after 20 draws, the large after 60.
  CHECK(counts("interleave_under") == std::vector<int64_t>{10, 10});
  CHECK(counts("interleave_over") == std::vector<int64_t>{30, 30});
  CHECK_THROWS_WITH_AS(counts("shuffle"), doctest::Contains("mix_strategy"), UsageError);
  // Unset: concat when every dataset is named (as in LLaMA-Factory), weights otherwise.
  options.mix_strategy.clear();
  CHECK(data::resolved_mix_strategy(options) == "weights");
  options.datasets[0].name = "a";
  options.datasets[1].name = "b";
  CHECK(data::resolved_mix_strategy(options) == "concat");
}

TEST_CASE("val_size: a seeded hold-out per dataset, disjoint from training and reproducible") {
  std::vector<std::vector<data::EncodedExample>> sets(2);
  for (int d = 0; d < 2; ++d)
    for (int i = 0; i < (d ? 40 : 100); ++i) {
      data::EncodedExample ex;
      ex.input_ids = {d * 1000 + i, 7};
      ex.labels = ex.input_ids;
      ex.first_trained = 0;
      sets[d].push_back(ex);
    }
  data::DataOptions options;
  options.datasets.resize(2);
  options.datasets[0].name = "big";
  options.datasets[1].name = "small";
  auto data = data::TrainingData::from_examples(sets, options, 0);
  auto ids = [](const data::TrainingData& t, int64_t d) {
    std::set<int32_t> out;
    for (const auto& ex : t.examples(d)) out.insert(ex.input_ids[0]);
    return out;
  };

  auto split = data::TrainingData::split_held_out(*data, 0.1, 42);
  REQUIRE(split.eval->n_datasets() == 2);
  CHECK(split.eval->examples(0).size() == 10);
  CHECK(split.eval->examples(1).size() == 4);
  CHECK(split.train->examples(0).size() == 90);
  CHECK(split.eval->stats()[1].name == "small");
  for (int64_t d = 0; d < 2; ++d) {
    auto held = ids(*split.eval, d), kept = ids(*split.train, d);
    for (int32_t id : held) CHECK(kept.count(id) == 0);
    CHECK(held.size() + kept.size() == data->examples(d).size());
  }
  // Same seed, same split; another seed, another split.
  auto again = data::TrainingData::split_held_out(*data, 0.1, 42);
  CHECK(ids(*again.eval, 0) == ids(*split.eval, 0));
  auto other = data::TrainingData::split_held_out(*data, 0.1, 7);
  CHECK(ids(*other.eval, 0) != ids(*split.eval, 0));

  // A whole number is a count over all datasets, shared out by size.
  auto counted = data::TrainingData::split_held_out(*data, 14, 42);
  CHECK(counted.eval->examples(0).size() == 10);
  CHECK(counted.eval->examples(1).size() == 4);
  CHECK_THROWS_WITH_AS(data::TrainingData::split_held_out(*data, 1.5, 42),
                       doctest::Contains("val_size"), UsageError);
  CHECK_THROWS_WITH_AS(data::TrainingData::split_held_out(*data, 140, 42),
                       doctest::Contains("none to train on"), UsageError);
}
