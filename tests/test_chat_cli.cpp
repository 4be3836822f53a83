// ming-chat end to end on the real stories260K checkpoint imported with ming-merge: llama2.c's
// published greedy story, pipelines, and one-line errors with exit status 2.
#include <algorithm>
#include <cctype>

#include <doctest/doctest.h>

#include "ming/io/json.h"
#include "support.h"

using namespace ming;
namespace fs = std::filesystem;

namespace {

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

// Imports stories260K + tok512 into `dir` with the ming-merge CLI.
void import_stories(const fs::path& dir) {
  auto models = test::data_dir() / "models";
  auto r = test::run_command(
      test::tool("ming-merge").string() + " convert --from llama2c --checkpoint " +
      q(models / "stories260K.bin") + " --tokenizer " + q(models / "tok512.bin") + " -o " + q(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
}

std::string chat(const fs::path& model) {
  return test::tool("ming-chat").string() + " --model " + q(model) +
         " --dtype fp32 --threads 1 --quiet --template raw --temperature 0";
}

// llama2.c doc/stories260K.md: `./run stories260K.bin -z tok512.bin -t 0.0` (256 steps).
const char* kGreedyStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to "
    "do.\"\n"
    "Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" "
    "Her mom said, \"Don't worry, Lily. We can help you.";

}  // namespace

TEST_CASE("chat cli: greedy stories260K from an empty raw prompt is llama2.c's published story") {
  test::TempDir tmp;
  import_stories(tmp / "stories");
  auto r =
      test::run_command(chat(tmp / "stories") + " --max-new-tokens 256 --prompt '' </dev/null");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == std::string(kGreedyStory) + "\n");
}

TEST_CASE("chat cli: piped stdin gives one answer per line, as one-shot runs do") {
  test::TempDir tmp;
  import_stories(tmp / "stories");
  const std::string base = chat(tmp / "stories") + " --max-new-tokens 12";
  auto a = test::run_command(base + " --prompt 'The cat'");
  auto b = test::run_command(base + " --prompt 'Tom had a'");
  REQUIRE(a.exit_code == 0);
  REQUIRE(b.exit_code == 0);
  CHECK(a.out.size() > 5);
  auto piped = test::run_command("printf 'The cat\\nTom had a\\n' | " + base);
  REQUIRE_MESSAGE(piped.exit_code == 0, piped.err);
  CHECK(piped.out == a.out + b.out);
  CHECK(piped.err.empty());
  // A stop string taken from the middle of the answer ends it just before that text.
  const std::string answer = a.out.substr(0, a.out.size() - 1);
  std::string stop;
  for (size_t k = 3; k + 3 <= answer.size() && stop.empty(); ++k) {
    auto w = answer.substr(k, 3);
    if (std::all_of(w.begin(), w.end(), [](char c) { return std::isalnum(c) || c == ' '; }))
      stop = w;
  }
  REQUIRE(!stop.empty());
  auto stopped = test::run_command(base + " --prompt 'The cat' --stop '" + stop + "'");
  REQUIRE(stopped.exit_code == 0);
  CHECK(stopped.out == answer.substr(0, answer.find(stop)) + "\n");
}

static bool one_line(const test::CommandResult& r) {
  return std::count(r.err.begin(), r.err.end(), '\n') == 1;
}

TEST_CASE("chat cli: a non-UTF-8 prompt or a missing model exits 2 with one line") {
  test::TempDir tmp;
  // The prompt is checked before the model is read.
  auto r = test::run_command(chat(tmp / "stories") + " --prompt \"$(printf 'caf\\351')\"");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--prompt: not valid UTF-8") != std::string::npos);
  CHECK(one_line(r));
  r = test::run_command(chat(tmp / "nope") + " --prompt hi");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("nope") != std::string::npos);
  CHECK(one_line(r));
}

TEST_CASE("chat cli: bad stdin, unknown architecture and truncated weights exit 2 with one line") {
  test::TempDir tmp;
  import_stories(tmp / "stories");
  auto r = test::run_command("printf 'ok\\n\\376\\n' | " + chat(tmp / "stories") + " -n 2");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("stdin line 2") != std::string::npos);
  CHECK(one_line(r));

  const auto config = tmp / "stories" / "config.json";
  const auto original = io::read_json(config);
  auto j = original;
  j["model_type"] = "gpt_neox";
  j.erase("architectures");
  io::write_json(config, j);
  r = test::run_command(chat(tmp / "stories") + " --prompt hi");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("config.json") != std::string::npos);
  CHECK(r.err.find("model_type") != std::string::npos);
  CHECK(one_line(r));

  io::write_json(config, original);
  auto st = tmp / "stories" / "model.safetensors";
  auto bytes = test::read_text(st);
  test::write_text(st, bytes.substr(0, bytes.size() / 2));
  r = test::run_command(chat(tmp / "stories") + " --prompt hi");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("model.safetensors") != std::string::npos);
  CHECK(one_line(r));
}
