// Safetensors as the model loader meets it: round trips in every weight dtype, sharded folders,
// and damaged files (truncated, lying headers, missing shards) refused with the file named.
#include <fstream>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "ming/core/error.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "support.h"

using namespace ming;
namespace fs = std::filesystem;

namespace {

std::string usage_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  FAIL("expected a UsageError");
  return {};
}

// A valid file's bytes with its header JSON replaced (length prefix recomputed).
std::string with_header(const std::string& bytes, const io::Json& header) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text + bytes.substr(8 + n);
}

io::Json header_of(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return io::Json::parse(bytes.substr(8, n));
}

}  // namespace

TEST_CASE("safetensors: bf16, fp16 and fp32 tensors round trip bit for bit") {
  test::TempDir tmp;
  torch::manual_seed(1);
  io::NamedTensors tensors = {
      {"a.bf16", torch::randn({3, 5}).to(torch::kBFloat16)},
      {"b.fp16", torch::randn({7}).to(torch::kHalf)},
      {"c.fp32", torch::randn({2, 3, 4})},
      {"d.empty", torch::empty({0, 4})},
      {"e.strided", torch::randn({4, 6}).t()},  // non-contiguous input
  };
  io::save_safetensors(tmp / "t.safetensors", tensors, {{"format", "pt"}});
  auto f = io::SafetensorsFile::open(tmp / "t.safetensors");
  CHECK(f->metadata().at("format") == "pt");
  for (const auto& [name, t] : tensors) {
    INFO(name);
    auto back = f->get(name);
    CHECK((back.scalar_type() == t.scalar_type()));
    CHECK(back.sizes() == t.sizes());
    CHECK(torch::equal(back, t));
  }
  CHECK(f->find("nope") == nullptr);
  CHECK(usage_error([&] { f->get("nope"); }).find("nope") != std::string::npos);
}

TEST_CASE("safetensors: a sharded folder reads like one file") {
  test::TempDir tmp;
  io::NamedTensors tensors;
  for (int i = 0; i < 6; ++i)
    tensors.emplace_back(fmt::format("w{}", i), torch::full({100}, float(i)));
  io::save_model_weights(tmp.path(), tensors, /*max_shard_bytes=*/900);  // 400 bytes each
  CHECK(fs::exists(tmp / "model.safetensors.index.json"));
  CHECK(fs::exists(tmp / "model-00003-of-00003.safetensors"));
  auto index = io::read_json(tmp / "model.safetensors.index.json");
  CHECK(index["metadata"]["total_size"] == 2400);
  CHECK(index["weight_map"]["w5"] == "model-00003-of-00003.safetensors");
  auto store = io::TensorStore::open(tmp.path());
  CHECK(store.names().size() == 6);
  for (int i = 0; i < 6; ++i)
    CHECK(torch::equal(store.get(fmt::format("w{}", i)), torch::full({100}, float(i))));
  CHECK(store.file_of("w0").filename() == "model-00001-of-00003.safetensors");

  fs::remove(tmp / "model-00002-of-00003.safetensors");
  auto msg = usage_error([&] { io::TensorStore::open(tmp.path()); });
  CHECK(msg.find("model-00002-of-00003.safetensors") != std::string::npos);
  CHECK(msg.find("missing") != std::string::npos);
}

TEST_CASE("safetensors: truncated and lying files are refused naming the file and tensor") {
  test::TempDir tmp;
  io::save_safetensors(tmp / "ok.safetensors",
                       {{"x", torch::ones({4, 4})}, {"y", torch::ones({8}).to(torch::kBFloat16)}});
  const std::string good = test::read_text(tmp / "ok.safetensors");
  const fs::path bad = tmp / "bad.safetensors";

  SUBCASE("truncated data") {
    test::write_text(bad, good.substr(0, good.size() - 10));
    auto msg = usage_error([&] { io::SafetensorsFile::open(bad); });
    CHECK(msg.find("bad.safetensors") != std::string::npos);
    CHECK(msg.find("truncated") != std::string::npos);
  }
  SUBCASE("truncated header") {
    test::write_text(bad, good.substr(0, 20));
    CHECK(usage_error([&] { io::SafetensorsFile::open(bad); }).find("bad.safetensors") !=
          std::string::npos);
  }
  SUBCASE("shorter than the length prefix") {
    test::write_text(bad, good.substr(0, 5));
    CHECK(usage_error([&] { io::SafetensorsFile::open(bad); }).find("bad.safetensors") !=
          std::string::npos);
  }
  SUBCASE("offsets past the end") {
    auto h = header_of(good);
    h["x"]["data_offsets"] = {0, 1 << 20};
    test::write_text(bad, with_header(good, h));
    auto msg = usage_error([&] { io::SafetensorsFile::open(bad); });
    CHECK(msg.find("'x'") != std::string::npos);
    CHECK(msg.find("outside") != std::string::npos);
  }
  SUBCASE("size does not match shape and dtype") {
    auto h = header_of(good);
    h["x"]["shape"] = {4, 5};
    test::write_text(bad, with_header(good, h));
    auto msg = usage_error([&] { io::SafetensorsFile::open(bad); });
    CHECK(msg.find("'x'") != std::string::npos);
    CHECK(msg.find("[4, 5]") != std::string::npos);
  }
  SUBCASE("overlapping tensors") {
    auto h = header_of(good);
    h["y"]["data_offsets"] = {16, 32};
    test::write_text(bad, with_header(good, h));
    CHECK(usage_error([&] { io::SafetensorsFile::open(bad); }).find("overlap") !=
          std::string::npos);
  }
  SUBCASE("unknown dtype") {
    auto h = header_of(good);
    h["y"]["dtype"] = "F8_E4M3";
    test::write_text(bad, with_header(good, h));
    CHECK(usage_error([&] { io::SafetensorsFile::open(bad); }).find("F8_E4M3") !=
          std::string::npos);
  }
}
