// Training data pipeline: readers, templating with label masks, mixtures, packing, batching,
// determinism, resume and sharding.
#include <algorithm>
#include <map>
#include <set>
#include <sstream>

// LibTorch first: glog's CHECK macro must be overridden by doctest's, not the other way round.
#include "ming/data/loader.h"

#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/text/tokenizer.h"
#include "byte_tokenizer.h"
#include "support.h"

namespace {

using namespace ming;
using data::kIgnoreIndex;
using ming::test::ByteTokenizer;
using ming::test::TempDir;
using ming::test::write_text;
using text::Role;

data::DatasetSpec spec(const std::string& path, const std::string& format, double weight) {
  data::DatasetSpec s;
  s.path = path;
  s.format = format;
  s.weight = weight;
  return s;
}

// Expected ids and labels spelled out piece by piece: (text, is_label). Special tokens are written
// literally and become one id each, like the tokenizer above.
struct Expected {
  std::vector<int32_t> ids, labels;
};
Expected spell(const ByteTokenizer& tok, const std::vector<std::pair<std::string, bool>>& pieces) {
  Expected e;
  for (const auto& [text, keep] : pieces) {
    for (int32_t id : tok.encode(text, false, true)) {
      e.ids.push_back(id);
      e.labels.push_back(keep ? id : kIgnoreIndex);
    }
  }
  return e;
}

std::vector<text::ChatMessage> five_turns() {
  return {{Role::system, "S!"},
          {Role::user, "q1"},
          {Role::assistant, "a1"},
          {Role::user, "q2"},
          {Role::assistant, "a2"}};
}

// An example whose tokens are all labels: ids = base, base+1, ...
data::EncodedExample make_example(int32_t base, int64_t length) {
  data::EncodedExample ex;
  for (int64_t i = 0; i < length; ++i) {
    ex.input_ids.push_back(base + static_cast<int32_t>(i));
    ex.labels.push_back(base + static_cast<int32_t>(i));
  }
  ex.first_trained = 0;
  return ex;
}

// Examples are identified by their first id (dataset * 1000 + index * 10 here).
std::vector<data::EncodedExample> make_dataset(int32_t dataset, int64_t n, int64_t length_mod = 0) {
  std::vector<data::EncodedExample> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(make_example(dataset * 1000 + static_cast<int32_t>(i) * 10,
                               length_mod ? 2 + (i * 7) % length_mod : 4));
  return out;
}

std::vector<int64_t> row_ids(const data::Batch& b, int64_t r) {
  auto row = b.input_ids[r];
  auto mask = b.attention_mask[r];
  std::vector<int64_t> out;
  for (int64_t t = 0; t < row.size(0); ++t)
    if (mask[t].item<int64_t>()) out.push_back(row[t].item<int64_t>());
  return out;
}

std::vector<std::pair<int32_t, int64_t>> refs(const data::Batch& b) {
  std::vector<std::pair<int32_t, int64_t>> out;
  for (const auto& e : b.examples) out.push_back({e.dataset, e.index});
  return out;
}

}  // namespace

// ---- readers ---------------------------------------------------------------

TEST_CASE("data reader: sharegpt turns (from/value and role/content) become chat messages") {
  TempDir dir("ming-data");
  write_text(
      dir / "a.jsonl",
      R"({"conversations":[{"from":"system","value":"be brief"},{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]})"
      "\n\n"
      R"({"conversations":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})"
      "\n");
  auto r = data::read_examples(dir / "a.jsonl", data::DataFormat::sharegpt,
                               data::BadExamplePolicy::stop);
  REQUIRE(r.examples.size() == 2);
  CHECK(r.n_bad == 0);
  const auto& m = r.examples[0].messages;
  REQUIRE(m.size() == 3);
  CHECK(m[0].role == Role::system);
  CHECK(m[0].content == "be brief");
  CHECK(m[1].role == Role::user);
  CHECK(m[2].role == Role::assistant);
  CHECK(m[2].content == "hello");
  CHECK(r.examples[0].origin == (dir / "a.jsonl").string() + ":1");
  CHECK(r.examples[1].origin == (dir / "a.jsonl").string() + ":3");  // blank line 2 skipped
  CHECK(r.examples[1].messages[1].content == "a");
}

TEST_CASE("data reader: messages format, and a leading assistant turn is dropped like MING does") {
  TempDir dir("ming-data");
  write_text(
      dir / "m.jsonl",
      R"({"messages":[{"role":"assistant","content":"How can I help?"},{"role":"user","content":"u"},{"role":"assistant","content":"x"}]})"
      "\n");
  auto r = data::read_examples(dir / "m.jsonl", data::DataFormat::messages,
                               data::BadExamplePolicy::stop);
  REQUIRE(r.examples.size() == 1);
  const auto& m = r.examples[0].messages;
  REQUIRE(m.size() == 2);
  CHECK(m[0].role == Role::user);
  CHECK(m[1].content == "x");
}

TEST_CASE(
    "data reader: alpaca joins instruction and input with a newline, adds system and history") {
  TempDir dir("ming-data");
  write_text(dir / "al.json",
             R"([
  {"instruction": "Answer.", "input": "What is 2+2?", "output": "4", "system": "You are a tutor."},
  {"instruction": "Say hi.", "input": "", "output": "hi"},
  {"instruction": "Then?", "output": "done", "history": [["first", "ok"]]}
])");
  auto r =
      data::read_examples(dir / "al.json", data::DataFormat::alpaca, data::BadExamplePolicy::stop);
  REQUIRE(r.examples.size() == 3);
  const auto& a = r.examples[0].messages;
  REQUIRE(a.size() == 3);
  CHECK(a[0].role == Role::system);
  CHECK(a[0].content == "You are a tutor.");
  CHECK(a[1].content == "Answer.\nWhat is 2+2?");
  CHECK(a[2].content == "4");
  const auto& b = r.examples[1].messages;
  REQUIRE(b.size() == 2);
  CHECK(b[0].content == "Say hi.");  // empty input: no newline
  const auto& c = r.examples[2].messages;
  REQUIRE(c.size() == 4);
  CHECK(c[0].content == "first");
  CHECK(c[1].content == "ok");
  CHECK(c[2].content == "Then?");
  // Lines of JSON array elements are where each element starts.
  CHECK(r.examples[1].origin == (dir / "al.json").string() + ":3");
  CHECK(r.examples[2].origin == (dir / "al.json").string() + ":4");
}

TEST_CASE("data reader: promptcblue input/target and plain text records and .txt files") {
  TempDir dir("ming-data");
  write_text(dir / "p.json", R"({"input": "问题", "target": "答案", "task_type": "cls"})"
                             "\n");
  auto p = data::read_examples(dir / "p.json", data::DataFormat::promptcblue,
                               data::BadExamplePolicy::stop);
  REQUIRE(p.examples.size() == 1);
  REQUIRE(p.examples[0].messages.size() == 2);
  CHECK(p.examples[0].messages[0].content == "问题");
  CHECK(p.examples[0].messages[1].role == Role::assistant);
  CHECK(p.examples[0].messages[1].content == "答案");

  write_text(dir / "t.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
  auto t =
      data::read_examples(dir / "t.jsonl", data::DataFormat::text, data::BadExamplePolicy::stop);
  REQUIRE(t.examples.size() == 2);
  CHECK(t.examples[1].is_text);
  CHECK(t.examples[1].text == "two");

  write_text(dir / "raw.txt", "Once upon a time.\n\nThe end.\n");
  auto raw = data::read_examples(dir / "raw.txt", data::DataFormat::auto_detect,
                                 data::BadExamplePolicy::stop);
  REQUIRE(raw.examples.size() == 1);
  CHECK(raw.format == data::DataFormat::text);
  CHECK(raw.examples[0].text == "Once upon a time.\n\nThe end.\n");
  CHECK_THROWS_AS(data::read_examples(dir / "raw.txt", data::DataFormat::sharegpt,
                                      data::BadExamplePolicy::stop),
                  UsageError);
}

TEST_CASE("data reader: auto sniffs the format from the first record's keys") {
  TempDir dir("ming-data");
  struct Case {
    std::string line;
    data::DataFormat format;
  };
  std::vector<Case> cases = {
      {R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})",
       data::DataFormat::sharegpt},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})",
       data::DataFormat::messages},
      {R"({"instruction":"q","input":"","output":"a"})", data::DataFormat::alpaca},
      {R"({"input":"q","target":"a"})", data::DataFormat::promptcblue},
      {R"({"text":"doc"})", data::DataFormat::text},
  };
  for (const auto& c : cases) {
    write_text(dir / "x.jsonl", c.line + "\n");
    auto r = data::read_examples(dir / "x.jsonl", data::DataFormat::auto_detect,
                                 data::BadExamplePolicy::stop);
    CHECK(r.format == c.format);
    CHECK(r.examples.size() == 1);
  }
  write_text(dir / "x.jsonl", R"({"question":"q","answer":"a"})"
                              "\n");
  try {
    data::read_examples(dir / "x.jsonl", data::DataFormat::auto_detect,
                        data::BadExamplePolicy::skip);
    FAIL("unknown keys must not be guessed");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("question") != std::string::npos);
    CHECK(std::string(e.what()).find("x.jsonl:1") != std::string::npos);
  }
}

TEST_CASE("data reader: bad records are reported with file:line; skip counts them, stop throws") {
  TempDir dir("ming-data");
  const std::string good =
      R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})";
  write_text(dir / "bad.jsonl",
             good + "\n" +                    // 1
                 "{\"conversations\": [\n" +  // 2 bad JSON
                 R"({"conversations":[{"from":"human","value":"q"},{"from":"robot","value":"a"}]})"
                 "\n"  // 3 role
                 R"({"conversations":[]})"
                 "\n"  // 4 empty
                 R"({"convs":[]})"
                 "\n"  // 5 missing
                 R"({"conversations":[{"from":"human","value":"only a question"}]})"
                 "\n"             // 6 no answer
                 + good + "\n");  // 7
  const std::string path = (dir / "bad.jsonl").string();
  auto r = data::read_examples(dir / "bad.jsonl", data::DataFormat::sharegpt,
                               data::BadExamplePolicy::skip);
  CHECK(r.examples.size() == 2);
  CHECK(r.n_bad == 5);
  REQUIRE(r.first_bad.size() == 5);
  CHECK(r.first_bad[0].origin == path + ":2");
  CHECK(r.first_bad[0].reason.find("invalid JSON") != std::string::npos);
  CHECK(r.first_bad[1].origin == path + ":3");
  CHECK(r.first_bad[1].reason.find("robot") != std::string::npos);
  CHECK(r.first_bad[2].reason.find("empty conversation") != std::string::npos);
  CHECK(r.first_bad[3].reason.find("missing field 'conversations'") != std::string::npos);
  CHECK(r.first_bad[4].origin == path + ":6");
  CHECK(r.first_bad[4].reason.find("no assistant turn") != std::string::npos);

  try {
    data::read_examples(dir / "bad.jsonl", data::DataFormat::sharegpt,
                        data::BadExamplePolicy::stop);
    FAIL("stop policy must throw");
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    CHECK(msg.find(path + ":2:") == 0);
    CHECK(msg.find("invalid JSON") != std::string::npos);
  }

  // A truncated JSON array: the unfinished element is reported at its line.
  write_text(dir / "cut.json", "[\n" + good + ",\n" + good + ",\n{\"conversations\": [");
  auto cut = data::read_examples(dir / "cut.json", data::DataFormat::sharegpt,
                                 data::BadExamplePolicy::skip);
  CHECK(cut.examples.size() == 2);
  REQUIRE(cut.first_bad.size() == 1);
  CHECK(cut.first_bad[0].origin == (dir / "cut.json").string() + ":4");
  CHECK_THROWS_AS(data::read_examples(dir / "cut.json", data::DataFormat::sharegpt,
                                      data::BadExamplePolicy::stop),
                  UsageError);
}

TEST_CASE("data reader: the real medical datasets read with zero bad records") {
  const auto root = ming::test::data_dir();
  struct Case {
    const char* path;
    data::DataFormat format;
    size_t n;
  };
  for (const Case& c :
       {Case{"medicalgpt/medical_sft_1K_format.jsonl", data::DataFormat::sharegpt, 1000},
        Case{"chatdoctor/chatdoctor5k.json", data::DataFormat::alpaca, 5452},
        Case{"promptcblue/train.json", data::DataFormat::promptcblue, 80},
        Case{"promptcblue/dev.json", data::DataFormat::promptcblue, 80}}) {
    INFO(c.path);
    auto r = data::read_examples(root / c.path, data::DataFormat::auto_detect,
                                 data::BadExamplePolicy::stop);
    CHECK(r.format == c.format);
    CHECK(r.n_bad == 0);
    CHECK(r.examples.size() == c.n);
  }
}

// ---- templating and masks ----------------------------------------------------

TEST_CASE("data encode: ming masking keeps every ChatML marker, masks headers and prompts") {
  ByteTokenizer tok;
  data::EncodeOptions opt;
  opt.chat_template = text::ChatTemplateKind::chatml;
  opt.mask = data::MaskPolicy::ming;
  auto got = data::encode_conversation(tok, five_turns(), opt);
  // MING's preprocess: <|im_start|> kept, role + "\n" masked, system/user text masked,
  // <|im_end|> "\n" kept; assistant text kept.
  auto want = spell(tok, {{"<|im_start|>", true},
                          {"system\n", false},
                          {"S!", false},
                          {"<|im_end|>", true},
                          {"\n", true},
                          {"<|im_start|>", true},
                          {"user\n", false},
                          {"q1", false},
                          {"<|im_end|>", true},
                          {"\n", true},
                          {"<|im_start|>", true},
                          {"assistant\n", false},
                          {"a1", true},
                          {"<|im_end|>", true},
                          {"\n", true},
                          {"<|im_start|>", true},
                          {"user\n", false},
                          {"q2", false},
                          {"<|im_end|>", true},
                          {"\n", true},
                          {"<|im_start|>", true},
                          {"assistant\n", false},
                          {"a2", true},
                          {"<|im_end|>", true},
                          {"\n", true}});
  CHECK(got.input_ids == want.ids);
  CHECK(got.labels == want.labels);
  // The first answer token follows the system turn (12 tokens), the user turn (10) and the
  // assistant's "<|im_start|>assistant\n" (11).
  CHECK(got.first_trained == 12 + 10 + 11);
}

TEST_CASE("data encode: assistant masking keeps only answers and their <|im_end|>") {
  ByteTokenizer tok;
  data::EncodeOptions opt;
  opt.chat_template = text::ChatTemplateKind::chatml;
  opt.mask = data::MaskPolicy::assistant;
  auto got = data::encode_conversation(tok, five_turns(), opt);
  auto want = spell(tok, {{"<|im_start|>system\nS!<|im_end|>\n", false},
                          {"<|im_start|>user\nq1<|im_end|>\n", false},
                          {"<|im_start|>assistant\n", false},
                          {"a1<|im_end|>", true},
                          {"\n", false},
                          {"<|im_start|>user\nq2<|im_end|>\n", false},
                          {"<|im_start|>assistant\n", false},
                          {"a2<|im_end|>", true},
                          {"\n", false}});
  CHECK(got.input_ids == want.ids);
  CHECK(got.labels == want.labels);
}

TEST_CASE("data encode: system prompt is added only when the conversation has none") {
  ByteTokenizer tok;
  data::EncodeOptions opt;
  opt.system_prompt = "SYS";
  std::vector<text::ChatMessage> no_system = {{Role::user, "q"}, {Role::assistant, "a"}};
  auto with = data::encode_conversation(tok, no_system, opt);
  auto want = spell(tok, {{"<|im_start|>", true},
                          {"system\n", false},
                          {"SYS", false},
                          {"<|im_end|>\n", true},
                          {"<|im_start|>", true},
                          {"user\n", false},
                          {"q", false},
                          {"<|im_end|>\n", true},
                          {"<|im_start|>", true},
                          {"assistant\n", false},
                          {"a", true},
                          {"<|im_end|>\n", true}});
  CHECK(with.input_ids == want.ids);
  CHECK(with.labels == want.labels);
  auto own = data::encode_conversation(tok, five_turns(), opt);
  CHECK(tok.decode(std::vector<text::TokenId>(own.input_ids.begin(), own.input_ids.end()), false)
            .find("SYS") == std::string::npos);
}

TEST_CASE(
    "data encode: documents are all labels, end with end-of-text, BOS only when the tokenizer has "
    "one") {
  ByteTokenizer plain, with_bos(true);
  auto a = data::encode_document(plain, "ab", /*add_bos=*/true);
  CHECK(a.input_ids == std::vector<int32_t>{'a', 'b', ByteTokenizer::kEndOfText});
  CHECK(a.labels == a.input_ids);
  auto b = data::encode_document(with_bos, "ab", /*add_bos=*/true);
  CHECK(b.input_ids ==
        std::vector<int32_t>{ByteTokenizer::kBos, 'a', 'b', ByteTokenizer::kEndOfText});
  CHECK(b.labels == std::vector<int32_t>{kIgnoreIndex, 'a', 'b', ByteTokenizer::kEndOfText});
  CHECK(b.first_trained == 1);
}

TEST_CASE("data encode: BOS once for templates that expect it, never for ChatML") {
  ByteTokenizer tok(/*with_bos=*/true);
  std::vector<text::ChatMessage> conv = {{Role::user, "q"}, {Role::assistant, "a"}};
  data::EncodeOptions opt;
  opt.mask = data::MaskPolicy::assistant;
  opt.chat_template = text::ChatTemplateKind::chatml;
  CHECK(data::encode_conversation(tok, conv, opt).input_ids.front() == ByteTokenizer::kImStart);
  for (auto kind : {text::ChatTemplateKind::llama2, text::ChatTemplateKind::raw}) {
    opt.chat_template = kind;
    auto e = data::encode_conversation(tok, conv, opt);
    CHECK(std::count(e.input_ids.begin(), e.input_ids.end(), ByteTokenizer::kBos) == 1);
    CHECK(e.input_ids.front() == ByteTokenizer::kBos);
    CHECK(e.labels.front() == kIgnoreIndex);
  }
  // Raw text has no end-of-turn marker: the answer is closed by a trained end-of-text token.
  opt.chat_template = text::ChatTemplateKind::raw;
  auto raw = data::encode_conversation(tok, conv, opt);
  CHECK(raw.input_ids ==
        std::vector<int32_t>{ByteTokenizer::kBos, 'q', 'a', ByteTokenizer::kEndOfText});
  CHECK(raw.labels ==
        std::vector<int32_t>{kIgnoreIndex, kIgnoreIndex, 'a', ByteTokenizer::kEndOfText});
  // LLaMA-2 under the assistant policy: the answer and its </s>, nothing of [INST] ... [/INST].
  opt.chat_template = text::ChatTemplateKind::llama2;
  auto l2 = data::encode_conversation(tok, conv, opt);
  std::vector<int32_t> trained;
  for (int32_t l : l2.labels)
    if (l != kIgnoreIndex) trained.push_back(l);
  CHECK(trained == std::vector<int32_t>{'a', ByteTokenizer::kEos});
}

TEST_CASE(
    "data encode: ming masking on the real Qwen tokenizer gives MING's exact ids and labels") {
  const auto path = ming::test::data_dir() / "models/qwen.tiktoken";
  auto tok = text::load_tokenizer(path);
  data::EncodeOptions opt;
  opt.chat_template = text::ChatTemplateKind::chatml;
  opt.mask = data::MaskPolicy::ming;
  std::vector<text::ChatMessage> conv = {{Role::system, "You are a helpful assistant."},
                                         {Role::user, "What is a fever?"},
                                         {Role::assistant, "A raised body temperature."},
                                         {Role::user, "Thanks."},
                                         {Role::assistant, "You're welcome."}};
  auto got = data::encode_conversation(*tok, conv, opt);
  // Ids worked out by hand from qwen.tiktoken's ranks: <|im_start|> 151644, <|im_end|> 151645,
  // "\n" 198, "system" 8948, "user" 872, "assistant" 77091.
  const int32_t S = 151644, E = 151645, NL = 198, X = kIgnoreIndex;
  std::vector<int32_t> ids = {S, 8948,  NL, 2610,  525,  264,   10950, 17847, 13, E,  NL,  // system
                              S, 872,   NL, 3838,  374,  264,   33553, 30,    E,  NL,      // user
                              S, 77091, NL, 32,    9226, 2487,  9315,  13,    E,  NL,  // assistant
                              S, 872,   NL, 12658, 13,   E,     NL,                    // user
                              S, 77091, NL, 2610,  2299, 10565, 13,    E,     NL};     // assistant
  std::vector<int32_t> labels = {S, X, X, X, X,  X,  X, X, X,  E,    NL,   S,     X,  X, X,  X,
                                 X, X, X, E, NL, S,  X, X, 32, 9226, 2487, 9315,  13, E, NL, S,
                                 X, X, X, X, E,  NL, S, X, X,  2610, 2299, 10565, 13, E, NL};
  CHECK(got.input_ids == ids);
  CHECK(got.labels == labels);
}

// ---- TrainingData: truncation and mixtures -----------------------------------

TEST_CASE("data load: conversations are cut to cutoff_len and dropped when no answer is left") {
  TempDir dir("ming-data");
  // Short answer: fits. Long question: the answer falls beyond cutoff_len, dropped.
  write_text(
      dir / "c.jsonl",
      R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a long answer here"}]})"
      "\n"
      R"({"conversations":[{"from":"human","value":")" +
          std::string(200, 'x') +
          R"("},{"from":"gpt","value":"a"}]})"
          "\n");
  ByteTokenizer tok;
  data::DataOptions o;
  o.datasets = {spec((dir / "c.jsonl").string(), "auto", 1.0)};
  o.chat_template = "chatml";
  o.cutoff_len = 30;  // the first conversation is 40 tokens: truncated but keeps answer tokens
  auto d = data::TrainingData::load(o, tok);
  REQUIRE(d->n_datasets() == 1);
  const auto& st = d->stats()[0];
  CHECK(st.n_records == 2);
  CHECK(st.n_examples == 1);
  CHECK(st.n_truncated == 1);
  CHECK(st.n_dropped == 1);
  const auto& ex = d->examples(0)[0];
  CHECK(ex.input_ids.size() == 30);
  CHECK(ex.labels.size() == 30);
  CHECK(ex.input_ids.front() == ByteTokenizer::kImStart);  // kept the start
}

TEST_CASE("data load: long documents become consecutive chunks of cutoff_len") {
  TempDir dir("ming-data");
  write_text(dir / "doc.txt", std::string(25, 'z'));
  ByteTokenizer tok;
  data::DataOptions o;
  o.datasets = {spec((dir / "doc.txt").string(), "text", 1.0)};
  o.cutoff_len = 10;
  auto d = data::TrainingData::load(o, tok);
  // 25 bytes + end-of-text = 26 tokens -> 10 + 10 + 6.
  REQUIRE(d->examples(0).size() == 3);
  CHECK(d->examples(0)[2].input_ids.size() == 6);
  CHECK(d->examples(0)[2].input_ids.back() == ByteTokenizer::kEndOfText);
}

TEST_CASE("data load: invalid option values name their key") {
  ByteTokenizer tok;
  data::DataOptions o;
  o.datasets = {spec("/nonexistent.jsonl", "auto", 1.0)};
  o.mask = "everything";
  try {
    data::TrainingData::load(o, tok);
    FAIL("bad mask must throw");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("data.mask") != std::string::npos);
  }
  o.mask = "ming";
  o.datasets[0].format = "csv";
  CHECK_THROWS_WITH_AS(data::TrainingData::load(o, tok),
                       doctest::Contains("data.datasets.0.format"), UsageError);
}

TEST_CASE("data mixture: weights give the expected proportions per epoch, seeded") {
  data::DataOptions o;
  o.datasets = {spec("a", "auto", 3.0), spec("b", "auto", 1.0)};
  o.epoch_size = 400;
  o.cutoff_len = 64;
  o.seed = 7;
  auto d = data::TrainingData::from_examples({make_dataset(0, 100), make_dataset(1, 1000)}, o, 0);
  CHECK(d->per_epoch_counts() == std::vector<int64_t>{300, 100});
  data::DataLoader loader(d, 8);
  std::map<int32_t, int64_t> count;
  std::map<int64_t, int64_t> seen_a;
  for (int step = 0; step < 50; ++step)  // exactly one epoch: 400 / 8
    for (const auto& e : loader.next().examples) {
      ++count[e.dataset];
      if (e.dataset == 0) ++seen_a[e.index];
    }
  CHECK(count[0] == 300);
  CHECK(count[1] == 100);
  // Dataset a (100 examples) is oversampled 3x: whole passes, each example exactly 3 times.
  CHECK(seen_a.size() == 100);
  for (const auto& [idx, n] : seen_a) CHECK(n == 3);
  // Datasets are interleaved, not concatenated: the first batch of 8 already mixes both.
  data::DataLoader again(d, 8);
  auto first = refs(again.next());
  std::set<int32_t> sources;
  for (auto& r : first) sources.insert(r.first);
  CHECK(sources.size() == 2);

  // A different seed gives a different order with the same proportions.
  o.seed = 8;
  auto d8 = data::TrainingData::from_examples({make_dataset(0, 100), make_dataset(1, 1000)}, o, 0);
  data::DataLoader other(d8, 8);
  CHECK(refs(other.next()) != first);
}

TEST_CASE("data mixture: an undersampled dataset continues its pass in the next epoch") {
  data::DataOptions o;
  o.datasets = {spec("a", "auto", 1.0), spec("b", "auto", 1.0)};
  o.epoch_size = 20;  // 10 from each; b has 30 examples, so 3 epochs make one full pass of b
  o.cutoff_len = 64;
  auto d = data::TrainingData::from_examples({make_dataset(0, 10), make_dataset(1, 30)}, o, 0);
  data::DataLoader loader(d, 4);
  std::set<int64_t> seen_b;
  for (int step = 0; step < 15; ++step)  // 3 epochs of 20
    for (const auto& e : loader.next().examples)
      if (e.dataset == 1) CHECK(seen_b.insert(e.index).second);  // no repeat within the pass
  CHECK(seen_b.size() == 30);
}

// ---- batches, packing, determinism, resume, sharding ---------------------------

TEST_CASE("data batches: right padding with pad id, labels -100 and attention 0") {
  data::DataOptions o;
  o.cutoff_len = 64;
  std::vector<data::EncodedExample> ds = {make_example(10, 3), make_example(20, 5)};
  ds[0].labels[0] = kIgnoreIndex;
  auto d = data::TrainingData::from_examples({ds}, o, /*pad_id=*/99);
  data::DataLoader loader(d, 2);
  auto b = loader.next();
  REQUIRE(b.input_ids.sizes() == torch::IntArrayRef({2, 5}));
  for (int64_t r = 0; r < 2; ++r) {
    const auto& ex = d->examples(0)[b.examples[r].index];
    const int64_t n = static_cast<int64_t>(ex.input_ids.size());
    for (int64_t t = 0; t < 5; ++t) {
      if (t < n) {
        CHECK(b.input_ids[r][t].item<int64_t>() == ex.input_ids[t]);
        CHECK(b.labels[r][t].item<int64_t>() == ex.labels[t]);
        CHECK(b.attention_mask[r][t].item<int64_t>() == 1);
        CHECK(b.position_ids[r][t].item<int64_t>() == t);
      } else {
        CHECK(b.input_ids[r][t].item<int64_t>() == 99);
        CHECK(b.labels[r][t].item<int64_t>() == kIgnoreIndex);
        CHECK(b.attention_mask[r][t].item<int64_t>() == 0);
        CHECK(b.segment_ids[r][t].item<int64_t>() == 0);
      }
    }
  }
  // labels[:, 1:] != -100: (3 - 1) for the 3-token example (its label 0 is masked anyway) + 4.
  CHECK(b.n_target_tokens == 2 + 4);
  CHECK(b.input_ids.dtype() == torch::kLong);
}

TEST_CASE("data packing: examples keep their boundaries (segments, positions, masks, labels)") {
  data::DataOptions o;
  o.cutoff_len = 16;
  o.packing = true;
  auto d = data::TrainingData::from_examples({make_dataset(0, 40, /*length_mod=*/9)}, o, 0);
  data::DataLoader loader(d, 4);
  std::multiset<int64_t> seen;
  for (int step = 0; step < 6; ++step) {
    auto b = loader.next();
    const int64_t T = b.input_ids.size(1);
    CHECK(T <= 16);
    std::map<int64_t, std::vector<int64_t>> by_row;
    for (const auto& e : b.examples) by_row[e.row].push_back(e.index);
    for (const auto& [r, indices] : by_row) {
      int64_t t = 0;
      for (size_t k = 0; k < indices.size(); ++k) {
        const auto& ex = d->examples(0)[indices[k]];
        seen.insert(indices[k]);
        for (size_t i = 0; i < ex.input_ids.size(); ++i, ++t) {
          CHECK(b.input_ids[r][t].item<int64_t>() == ex.input_ids[i]);
          CHECK(b.segment_ids[r][t].item<int64_t>() == static_cast<int64_t>(k) + 1);
          CHECK(b.position_ids[r][t].item<int64_t>() == static_cast<int64_t>(i));
          // No prediction across a boundary: a later example's first label is masked.
          CHECK(b.labels[r][t].item<int64_t>() ==
                ((k > 0 && i == 0) ? kIgnoreIndex : ex.labels[i]));
        }
      }
      // The rest of the row is padding.
      for (; t < T; ++t) CHECK(b.segment_ids[r][t].item<int64_t>() == 0);
    }
    // Attention never crosses examples: a token sees only earlier tokens of its own segment.
    auto mask = data::packed_attention_mask(b.segment_ids);  // (B, 1, T, T)
    REQUIRE(mask.sizes() == torch::IntArrayRef({b.input_ids.size(0), 1, T, T}));
    auto seg = b.segment_ids;
    for (int64_t r = 0; r < seg.size(0); ++r)
      for (int64_t q = 0; q < T; ++q)
        for (int64_t k = 0; k < T; ++k) {
          bool want = k <= q && seg[r][q].item<int64_t>() != 0 &&
                      seg[r][q].item<int64_t>() == seg[r][k].item<int64_t>();
          CHECK(mask[r][0][q][k].item<bool>() == want);
        }
  }
  CHECK(seen.size() >= 20);
}

TEST_CASE("data loader: same seed gives the same batches; a restored state resumes exactly") {
  data::DataOptions o;
  o.cutoff_len = 16;
  o.packing = true;
  o.seed = 3;
  o.datasets = {spec("a", "auto", 2.0), spec("b", "auto", 1.0)};
  auto d = data::TrainingData::from_examples({make_dataset(0, 13, 9), make_dataset(1, 7, 5)}, o, 0);
  data::DataLoader ref(d, 3);
  std::vector<std::vector<int64_t>> stream;
  io::Json saved;
  for (int step = 0; step < 25; ++step) {  // crosses several epochs of 20 examples
    if (step == 11) saved = ref.state();
    auto b = ref.next();
    std::vector<int64_t> flat(b.input_ids.data_ptr<int64_t>(),
                              b.input_ids.data_ptr<int64_t>() + b.input_ids.numel());
    flat.push_back(b.input_ids.size(1));
    stream.push_back(flat);
  }
  data::DataLoader same(d, 3);
  for (int step = 0; step < 25; ++step) {
    auto b = same.next();
    CHECK(
        std::equal(stream[step].begin(), stream[step].end() - 1, b.input_ids.data_ptr<int64_t>()));
  }
  // Restore into a fresh loader (as after a restart) through JSON text.
  data::DataLoader resumed(d, 3);
  resumed.restore(io::Json::parse(saved.dump()));
  CHECK(resumed.batches_served() == 11);
  for (int step = 11; step < 25; ++step) {
    auto b = resumed.next();
    REQUIRE(static_cast<int64_t>(stream[step].size()) == b.input_ids.numel() + 1);
    CHECK(
        std::equal(stream[step].begin(), stream[step].end() - 1, b.input_ids.data_ptr<int64_t>()));
  }
  // A state from other data is refused.
  o.seed = 4;
  auto other =
      data::TrainingData::from_examples({make_dataset(0, 13, 9), make_dataset(1, 7, 5)}, o, 0);
  data::DataLoader wrong(other, 3);
  CHECK_THROWS_WITH_AS(wrong.restore(saved), doctest::Contains("fingerprint"), UsageError);
  CHECK_THROWS_AS(wrong.restore(io::Json{{"epoch", 0}}), UsageError);
}

TEST_CASE("data sharding: 2 ranks with batch b see exactly the global batch of 1 rank with 2b") {
  for (bool packing : {false, true}) {
    INFO("packing " << packing);
    data::DataOptions o;
    o.cutoff_len = 16;
    o.packing = packing;
    o.datasets = {spec("a", "auto", 1.0), spec("b", "auto", 2.0)};
    auto d =
        data::TrainingData::from_examples({make_dataset(0, 11, 9), make_dataset(1, 6, 7)}, o, 0);
    data::DataLoader one(d, 4, 0, 1);
    data::DataLoader r0(d, 2, 0, 2), r1(d, 2, 1, 2);
    std::multiset<int64_t> first_ids_r0, first_ids_r1;
    for (int step = 0; step < 12; ++step) {  // several epochs
      auto g = one.next();
      auto a = r0.next();
      auto b = r1.next();
      REQUIRE(g.input_ids.size(0) == 4);
      REQUIRE(a.input_ids.size(0) == 2);
      REQUIRE(b.input_ids.size(0) == 2);
      for (int64_t r = 0; r < 2; ++r) {
        CHECK(row_ids(g, r) == row_ids(a, r));
        CHECK(row_ids(g, r + 2) == row_ids(b, r));
      }
      // Same examples in the same order; the target token counts add up.
      auto ga = refs(g);
      auto ab = refs(a);
      auto bb = refs(b);
      ab.insert(ab.end(), bb.begin(), bb.end());
      CHECK(ga == ab);
      CHECK(g.n_target_tokens == a.n_target_tokens + b.n_target_tokens);
      CHECK(r0.state() == r1.state());
      CHECK(one.state()["index"] == r0.state()["index"]);
    }
  }
}

TEST_CASE("data loader: rows and steps per epoch") {
  data::DataOptions o;
  o.cutoff_len = 64;
  auto d = data::TrainingData::from_examples({make_dataset(0, 10)}, o, 0);
  data::DataLoader loader(d, 3, 0, 2);
  CHECK(loader.rows_per_epoch() == 10);
  CHECK(loader.steps_per_epoch() == 2);  // ceil(10 / 6)
  o.packing = true;
  o.cutoff_len = 8;  // 4-token examples: two per row
  auto p = data::TrainingData::from_examples({make_dataset(0, 10)}, o, 0);
  data::DataLoader packed(p, 1);
  CHECK(packed.rows_per_epoch() == 5);
}

TEST_CASE("data load: MedicalGPT conversations through the real Qwen tokenizer, packed") {
  auto tok = text::load_tokenizer(ming::test::data_dir() / "models/qwen.tiktoken");
  // The first 200 conversations keep the test fast; the whole file is read by the reader test.
  TempDir dir("ming-data");
  std::string head;
  {
    std::istringstream in(
        ming::test::read_text(ming::test::data_dir() / "medicalgpt/medical_sft_1K_format.jsonl"));
    std::string line;
    for (int i = 0; i < 200 && std::getline(in, line); ++i) head += line + "\n";
  }
  write_text(dir / "medicalgpt200.jsonl", head);
  data::DataOptions o;
  o.datasets = {spec((dir / "medicalgpt200.jsonl").string(), "auto", 1.0)};
  o.bad_example_policy = "stop";
  o.cutoff_len = 512;
  o.packing = true;
  o.system_prompt = "You are a helpful assistant.";
  auto d = data::TrainingData::load(o, *tok);
  CHECK(d->chat_template().kind() ==
        text::ChatTemplateKind::chatml);  // from the tokenizer's tokens
  const auto& st = d->stats()[0];
  CHECK(st.n_records == 200);
  CHECK(st.n_bad == 0);
  CHECK(st.n_examples + st.n_dropped == 200);
  CHECK(d->pad_id() == 151643);  // <|endoftext|>
  for (const auto& ex : d->examples(0)) {
    REQUIRE(ex.input_ids.size() <= 512);
    // MING's layout: system turn first, every example starts with <|im_start|>system.
    CHECK(ex.input_ids[0] == 151644);
    CHECK(ex.input_ids[1] == 8948);
    CHECK(ex.labels[0] == 151644);
    CHECK(ex.labels[1] == kIgnoreIndex);
  }
  data::DataLoader loader(d, 4);
  auto b = loader.next();
  CHECK(b.input_ids.size(1) <= 512);
  CHECK(b.n_target_tokens > 0);
}

TEST_CASE("data load: encoding on several threads gives the same data as on one") {
  auto tok = text::load_tokenizer(ming::test::data_dir() / "models/qwen.tiktoken");
  data::DataOptions o;
  o.datasets = {spec((ming::test::data_dir() / "promptcblue/train.json").string(), "auto", 1.0)};
  o.mask = "assistant";
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  auto one = data::TrainingData::load(o, *tok);
  at::set_num_threads(2);
  auto two = data::TrainingData::load(o, *tok);
  at::set_num_threads(saved);
  CHECK(one->stats()[0].n_examples == 80);
  CHECK(one->fingerprint() == two->fingerprint());
}
