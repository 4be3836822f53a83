// ming-train under the faults a batch job meets: SIGKILL at random moments (checkpoint writes
// included), a full disk while writing a checkpoint, a second ming-train on the same output
// folder, and a rank of a 2-rank run dying. Runs on the tiny stories260K fixture.
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <random>

#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "support.h"
#include "train_fixture.h"

using namespace ming;
using ming::test::Fixture;
using ming::test::train_cmd;
namespace fs = std::filesystem;

namespace {

// Bit-exact resume means the very bytes of the adapter match.
bool same_bytes(const fs::path& a, const fs::path& b) {
  return test::read_text(a) == test::read_text(b);
}

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

// A small tmpfs mounted for the life of the object (root only).
class SmallDisk {
 public:
  SmallDisk(const fs::path& dir, uint64_t bytes) : dir_(dir) {
    fs::create_directories(dir);
    mounted_ = test::run_command("mount -t tmpfs -o size=" + std::to_string(bytes) + " tmpfs " +
                                 quoted(dir))
                   .exit_code == 0;
  }
  ~SmallDisk() {
    if (mounted_) test::run_command("umount " + quoted(dir_));
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool mounted() const { return mounted_; }
  bool grow(uint64_t bytes) const {
    return test::run_command("mount -o remount,size=" + std::to_string(bytes) + " " + quoted(dir_))
               .exit_code == 0;
  }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

uint64_t folder_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

}  // namespace

TEST_CASE("train faults: SIGKILL at 20 random moments, then --resume, ends bit-exact") {
  Fixture f;
  const std::string extra = "max_steps: 6\nsave_steps: 1\nsave_total_limit: 2\nlora_dropout: 0.1\n";
  const fs::path reference = f.dir / "reference";
  // The reference run also measures how long training lasts once its first step is logged, so
  // that the kills below land while steps and checkpoint writes are going on.
  const std::string started = "while [ ! -s " + quoted(reference / "metrics.jsonl") +
                              " ] && kill -0 $pid 2>/dev/null; do sleep 0.002; done; ";
  auto r = test::run_command("( " + train_cmd(f.config(reference, extra), "-q") + " & pid=$!; " +
                             started +
                             "t0=$(date +%s%N); wait $pid; rc=$?; t1=$(date +%s%N); "
                             "echo rc:$rc ms:$(( (t1 - t0) / 1000000 )) )");
  REQUIRE_MESSAGE(r.out.find("rc:0") != std::string::npos, r.err);
  const int training_ms = std::max(50, std::stoi(r.out.substr(r.out.find("ms:") + 3)));
  const fs::path expected = reference / "adapter_model.safetensors";

  std::mt19937 rng(19);
  std::uniform_int_distribution<int> delay_ms(0, training_ms);
  int killed = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const fs::path out = f.dir / ("trial-" + std::to_string(trial));
    const int delay = delay_ms(rng);
    CAPTURE(trial);
    CAPTURE(delay);
    const std::string cfg = f.config(out, extra);
    auto k = test::run_command("( " + train_cmd(cfg, "-q") + " & pid=$!; " + "while [ ! -s " +
                               quoted(out / "metrics.jsonl") +
                               " ] && kill -0 $pid 2>/dev/null; do sleep 0.002; done; sleep " +
                               std::to_string(delay / 1000.0) +
                               "; kill -9 $pid 2>/dev/null; wait $pid; echo rc:$? )");
    killed += k.out.find("rc:137") != std::string::npos;
    auto resumed = test::run_command(train_cmd(cfg, "-q --resume"));
    REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
    CHECK_MESSAGE(same_bytes(out / "adapter_model.safetensors", expected),
                  "resumed adapter differs from the uninterrupted run's");
    fs::remove_all(out);
  }
  MESSAGE(killed << " of 20 runs were killed before they finished");
  CHECK(killed >= 15);
}

TEST_CASE("train faults: a full disk while checkpointing keeps the last checkpoint and resumes") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: mounting a small tmpfs needs root");
    return;
  }
  Fixture f;
  const std::string steps = "max_steps: 6\nsave_steps: 2\n";
  const fs::path reference = f.dir / "reference";
  auto r = test::run_command(train_cmd(f.config(reference, steps + "save_total_limit: 3\n"), "-q"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const uint64_t checkpoint = folder_bytes(reference / "checkpoint-2");

  // Room for the run folder and one checkpoint, not for the second beside it.
  const fs::path disk_dir = f.dir / "disk";
  SmallDisk disk(disk_dir, checkpoint + checkpoint / 2 + 16384);
  REQUIRE(disk.mounted());
  const fs::path out = disk_dir / "run";
  const std::string cfg = f.config(out, steps + "save_total_limit: 1\n");
  auto full = test::run_command(train_cmd(cfg, "-q"));
  CHECK(full.exit_code == 1);
  CHECK_MESSAGE(full.err.find("No space left on device") != std::string::npos, full.err);
  // The checkpoint written before the disk filled up is whole, and nothing half-written remains.
  REQUIRE(fs::exists(out / "checkpoint-2" / "trainer_state.json"));
  CHECK(io::read_json(out / "checkpoint-2" / "trainer_state.json")["step"] == 2);
  CHECK(same_bytes(out / "checkpoint-2" / "trainable.safetensors",
                   reference / "checkpoint-2" / "trainable.safetensors"));
  CHECK(same_bytes(out / "checkpoint-2" / "optimizer.pt",
                   reference / "checkpoint-2" / "optimizer.pt"));
  for (const auto& e : fs::directory_iterator(out))
    CHECK_MESSAGE(e.path().filename().string().find(".tmp-") == std::string::npos,
                  "left behind: ", e.path().string());

  REQUIRE(disk.grow(64ull << 20));
  auto resumed = test::run_command(train_cmd(cfg, "-q --resume"));
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
  CHECK(same_bytes(out / "adapter_model.safetensors", reference / "adapter_model.safetensors"));
}

TEST_CASE(
    "train faults: a second ming-train on the same output folder refuses; the first goes on") {
  Fixture f;
  const fs::path out = f.dir / "shared";
  const std::string cfg = f.config(out, "max_steps: 400\n");
  const fs::path reference = f.dir / "alone";
  auto r = test::run_command(
      "( " + train_cmd(cfg, "-q") + " & pid=$!; while [ ! -s " + quoted(out / "metrics.jsonl") +
      " ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done; " + train_cmd(cfg, "-q") +
      "; echo second:$?; kill -0 $pid 2>/dev/null && echo first-running; wait $pid; echo "
      "first:$? )");
  CHECK_MESSAGE(r.out.find("second:2") != std::string::npos, r.out, r.err);
  CHECK(r.err.find("is in use by another ming-train (pid ") != std::string::npos);
  CHECK_MESSAGE(r.out.find("first-running") != std::string::npos,
                "the first run ended before the second tried; raise max_steps");
  CHECK_MESSAGE(r.out.find("first:0") != std::string::npos, r.err);
  CHECK(test::losses(out / "metrics.jsonl").size() == 400);
  // The lock goes with its process: the folder can be trained on again at once.
  auto again = test::run_command(train_cmd(cfg, "-q --resume"));
  CHECK_MESSAGE(again.exit_code == 0, again.err);
}

TEST_CASE("train faults: when one of two ranks dies, the other exits non-zero instead of hanging") {
  Fixture f;
  const fs::path out = f.dir / "ranks";
  const std::string cfg = f.config(out, "max_steps: 100000\nper_device_train_batch_size: 2\n");
  const int port = 29900 + static_cast<int>(::getpid() % 90);
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = test::run_command(
      "( " + env + " RANK=0 LOCAL_RANK=0 " + train_cmd(cfg, "-q") + " & p0=$!; " + env +
      " RANK=1 LOCAL_RANK=1 " + train_cmd(cfg, "-q") + " & p1=$!; while [ ! -s " +
      quoted(out / "metrics.jsonl") + " ] && kill -0 $p0 2>/dev/null; do sleep 0.01; done; " +
      "kill -9 $p1; t=$(date +%s%N); " +
      // A watchdog: a survivor still alive after 120 s counts as hung.
      "( sleep 120; kill -9 $p0 2>/dev/null ) & w=$!; wait $p0; rc=$?; " +
      "echo rank0:$rc ms:$(( ($(date +%s%N) - t) / 1000000 )); kill $w 2>/dev/null; wait $p1 )");
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CAPTURE(r.err);
  REQUIRE(r.out.find("rank0:") != std::string::npos);
  const int rc = std::stoi(r.out.substr(r.out.find("rank0:") + 6));
  const int ms = std::stoi(r.out.substr(r.out.find("ms:") + 3));
  MESSAGE("rank 0 exited with " << rc << " " << ms << " ms after rank 1 was killed (test "
                                << total_s << " s)");
  CHECK(rc != 0);
  CHECK(rc != 137);  // not the watchdog
  CHECK(ms < 60000);
}
