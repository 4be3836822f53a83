// TensorBoard event files: framing, CRCs and Event/Summary fields, checked by an independent
// reader (tfevents_reader.h).
#include "ming/train/tensorboard.h"

#include <doctest/doctest.h>

#include "support.h"
#include "tfevents_reader.h"

namespace {

using namespace ming;
using ming::test::TempDir;

}  // namespace

TEST_CASE("tensorboard: CRC32C matches the reference check value and a bitwise reference") {
  const std::string check = "123456789";
  CHECK(train::crc32c(check.data(), check.size()) == 0xE3069283u);
  std::string bytes;
  for (int i = 0; i < 1000; ++i) bytes += static_cast<char>((i * 37) & 0xff);
  CHECK(train::crc32c(bytes.data(), bytes.size()) ==
        test::reference_crc32c(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()));
  CHECK(train::crc32c("", 0) == 0u);
}

TEST_CASE("tensorboard: event files hold a version record, then scalars with tags and steps") {
  TempDir dir("ming-tb");
  std::filesystem::path file;
  {
    train::EventWriter writer(dir / "runs" / "x");
    file = writer.path();
    writer.add_scalar("train/loss", 2.5, 10);
    writer.add_metrics(io::Json{
        {"step", 20}, {"loss", 1.25}, {"learning_rate", 1e-4}, {"note", "text is skipped"}});
    writer.add_metrics(io::Json{{"step", 20}, {"eval_loss", 1.5}, {"eval_qa_loss", 1.75}});
    writer.session_start(21);
  }
  CHECK(file.filename().string().rfind("events.out.tfevents.", 0) == 0);
  auto events = test::read_tfevents(file);
  REQUIRE(events.size() == 7);
  CHECK(events[0].file_version == "brain.Event:2");
  CHECK(events[0].wall_time > 1.5e9);
  auto scalar = [&](size_t i) { return events[i].scalars.at(0); };
  CHECK(events[1].step == 10);
  CHECK(scalar(1).tag == "train/loss");
  CHECK(scalar(1).value == 2.5f);
  // nlohmann orders keys alphabetically: learning_rate, loss.
  CHECK(scalar(2).tag == "train/learning_rate");
  CHECK(scalar(2).value == static_cast<float>(1e-4));
  CHECK((scalar(3).tag == "train/loss" && events[3].step == 20 && scalar(3).value == 1.25f));
  CHECK(scalar(4).tag == "eval/loss");
  CHECK(scalar(5).tag == "eval/qa_loss");
  CHECK(events[6].session_status == 1);
  CHECK(events[6].step == 21);
}

TEST_CASE("tensorboard: a corrupted byte is caught by the reader's CRC check") {
  TempDir dir("ming-tb");
  std::filesystem::path file;
  {
    train::EventWriter writer(dir.path());
    file = writer.path();
    writer.add_scalar("train/loss", 1.0, 1);
  }
  std::string bytes = test::read_text(file);
  bytes[bytes.size() - 6] ^= 0x01;  // inside the last record's data
  test::write_text(file, bytes);
  CHECK_THROWS_WITH(test::read_tfevents(file), "data CRC");
}
