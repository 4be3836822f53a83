// RunLock: the output folder lock of a training run.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "ming/core/error.h"

namespace fs = std::filesystem;

namespace ming::train {

RunLock::RunLock(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path path = dir / RunLock::kFileName;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create the run lock '{}': {}", path.string(), std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[256] = "";
    const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
    holder[n > 0 ? n : 0] = '\0';
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail_usage(
          "output_dir '{}' is in use by another ming-train ({}); wait for it to finish or pick "
          "another output_dir",
          dir.string(), *holder ? holder : "holder unknown");
    fail("cannot lock '{}': {}", path.string(), std::strerror(err));
  }
  char host[128] = "";
  ::gethostname(host, sizeof host - 1);
  const std::string who = "pid " + std::to_string(::getpid()) + " on " + host;
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, who.data(), who.size(), 0) < 0) {
    // The holder's name only improves the message a second process prints.
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

}  // namespace ming::train
