// Hostile files are refused with a clear UsageError before the reader allocates what they claim,
// and fast: a safetensors header claiming a 10^12-element tensor, JSON and YAML nested 10^6 deep,
// a 2 GB line, a tokenizer with 10^8 merges. The huge inputs are sparse files: they claim their
// size without taking the disk.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>

#include "ming/core/error.h"
#include "ming/data/reader.h"
#include "ming/io/config.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "ming/text/tokenizer.h"
#include "support.h"

using namespace ming;
using ming::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Writes `head` and extends the file (sparsely) to `size` bytes.
void write_sparse(const fs::path& path, const std::string& head, uint64_t size) {
  test::write_text(path, head);
  REQUIRE(::truncate(path.c_str(), static_cast<off_t>(size)) == 0);
}

// Runs `read`, which must throw a UsageError whose message contains `expected`, within a second.
void expect_refused(const std::string& what, const std::function<void()>& read,
                    const std::string& expected) {
  CAPTURE(what);
  const auto t0 = std::chrono::steady_clock::now();
  std::string message;
  try {
    read();
  } catch (const UsageError& e) {
    message = e.what();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(what << ": refused in " << seconds * 1000 << " ms: " << message.substr(0, 160));
  CHECK_MESSAGE(message.find(expected) != std::string::npos, message);
  CHECK(seconds < 1.0);
}

std::string safetensors_with_header(const std::string& header) {
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  return bytes + header;
}

}  // namespace

TEST_CASE("hostile files: safetensors headers claiming huge tensors are refused") {
  TempDir tmp;
  const auto big = tmp / "big.safetensors";
  test::write_text(big,
                   safetensors_with_header(R"({"t": {"dtype": "F32", "shape": [1000000, 1000000], )"
                                           R"("data_offsets": [0, 4000000000000]}})"));
  expect_refused(
      "10^12-element tensor", [&] { io::SafetensorsFile::open(big); },
      "fall outside the data block");
  // A shape whose element count wraps around 2^64 to match an empty block.
  const auto wrap = tmp / "wrap.safetensors";
  test::write_text(
      wrap, safetensors_with_header(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], )"
                                    R"("data_offsets": [0, 0]}})"));
  expect_refused(
      "shape overflowing 64 bits", [&] { io::SafetensorsFile::open(wrap); },
      "more elements than fit in 64 bits");
  const auto bytes = tmp / "bytes.safetensors";
  test::write_text(
      bytes, safetensors_with_header(R"({"t": {"dtype": "F64", "shape": [3074457345618258603], )"
                                     R"("data_offsets": [0, 8]}})") +
                 std::string(8, '\0'));
  expect_refused(
      "byte count overflowing 64 bits", [&] { io::SafetensorsFile::open(bytes); },
      "more bytes than fit in 64 bits");
  // A 2 GB file whose header length claims 1.5 GB of JSON.
  const auto header = tmp / "header.safetensors";
  std::string length(8, '\0');
  const uint64_t n = 1500000000;
  std::memcpy(length.data(), &n, 8);
  write_sparse(header, length + "{", 2000000000);
  expect_refused(
      "1.5 GB header", [&] { io::SafetensorsFile::open(header); }, "more than the 100 MB");
}

TEST_CASE("hostile files: JSON and YAML nested a million levels deep are refused") {
  TempDir tmp;
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  test::write_text(tmp / "deep.json", deep);
  expect_refused(
      "JSON file", [&] { io::read_json(tmp / "deep.json"); }, "nested deeper than 1000 levels");
  test::write_text(tmp / "deep.jsonl", "{\"text\": \"x\"}\n" + deep + "\n");
  expect_refused(
      "JSON-lines record",
      [&] { io::for_each_jsonl(tmp / "deep.jsonl", [](const io::Json&, int64_t) {}); },
      "line 2: JSON nested deeper");
  expect_refused(
      "dataset record",
      [&] {
        data::read_examples(tmp / "deep.jsonl", data::DataFormat::auto_detect,
                            data::BadExamplePolicy::stop);
      },
      "deep.jsonl:2: record: JSON nested deeper");
  fs::create_directories(tmp / "tok");
  test::write_text(tmp / "tok" / "tokenizer.json", "{\"model\": " + deep + "}");
  expect_refused(
      "tokenizer.json", [&] { text::load_tokenizer(tmp / "tok"); },
      "nested deeper than 1000 levels");
  expect_refused(
      "YAML config", [&] { config::parse_document("a: " + deep + "\n", "deep.yaml"); },
      "deep.yaml: nested deeper than 1000 levels");
}

TEST_CASE("hostile files: a 2 GB line is refused after reading at most 64 MiB") {
  TempDir tmp;
  const auto jsonl = tmp / "line.jsonl";
  write_sparse(jsonl, "{\"text\": \"", 2ull << 30);
  expect_refused(
      "JSON-lines reader", [&] { io::for_each_jsonl(jsonl, [](const io::Json&, int64_t) {}); },
      "a line longer than 64 MiB");
  expect_refused(
      "dataset reader",
      [&] {
        data::read_examples(jsonl, data::DataFormat::auto_detect, data::BadExamplePolicy::stop);
      },
      "line.jsonl:1: a record longer than 64 MiB");
  const auto json = tmp / "big.json";
  write_sparse(json, "{\"a\": \"", 2ull << 30);
  expect_refused(
      "JSON document", [&] { io::read_json(json); }, "more than the 512 MiB");
}

TEST_CASE("hostile files: a tokenizer with 10^8 merges is refused before they are read") {
  TempDir tmp;
  const auto dir = tmp / "gpt2";
  fs::create_directories(dir);
  test::write_text(dir / "vocab.json", R"({"a": 0, "b": 1, "ab": 2, "ba": 3})");
  // 10^8 merges of four bytes each: the first lines are real, the rest of the file is sparse.
  std::string merges = "#version: 0.2\n";
  for (int i = 0; i < 1000; ++i) merges += i % 2 ? "b a\n" : "a b\n";
  write_sparse(dir / "merges.txt", merges, 400000000);
  expect_refused(
      "merges.txt", [&] { text::load_tokenizer(dir / "vocab.json"); },
      "merges.txt:18: more merges than 4 per each of the 4 vocabulary pieces");
  // In a tokenizer.json 10^8 merges take at least 600 MB: refused from the file size alone.
  const auto json_dir = tmp / "json";
  fs::create_directories(json_dir);
  write_sparse(json_dir / "tokenizer.json", R"({"model": {"merges": [)", 600000000);
  expect_refused(
      "tokenizer.json", [&] { text::load_tokenizer(json_dir); }, "more than the 512 MiB");
  // And a small one with more merges than pieces.
  test::write_text(
      json_dir / "tokenizer.json",
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, )"
      R"("merges": ["a b", "a b", "b a", "a b", "a b", "b a", "a b", "a b", "b a"]}})");
  expect_refused(
      "tokenizer.json merges", [&] { text::load_tokenizer(json_dir); },
      "9 merges for 2 vocabulary pieces");
  // Token ids are table indices: one hostile id must not allocate a table of 2^31 pieces.
  test::write_text(
      json_dir / "tokenizer.json",
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2147483647}, "merges": []}})");
  expect_refused(
      "tokenizer.json id", [&] { text::load_tokenizer(json_dir); },
      "must map to an integer id in [0, 16777216)");
}
