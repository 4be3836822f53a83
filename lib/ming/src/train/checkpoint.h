// Guards of a training run's output folder (private to lib/ming/src/train).
#pragma once

#include <filesystem>

namespace ming::train {

// An exclusive lock on a run folder, held for the life of the object: a second ming-train on
// the same output_dir refuses to start (UsageError naming the folder and the holder's pid and
// host) instead of interleaving checkpoints and metrics with the first. The lock is the kernel's
// (flock on "<dir>/.ming-train.lock"), so it goes away with its process however that ends,
// SIGKILL included, and a later --resume is never blocked by a stale lock file.
class RunLock {
 public:
  static constexpr const char* kFileName = ".ming-train.lock";

  explicit RunLock(const std::filesystem::path& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace ming::train
