#include "ming/io/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ming/core/error.h"

namespace ming::io {

std::string read_file(const fs::path& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}': {}", path.string(), std::strerror(errno));
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > max_bytes)
    fail_usage("'{}' is {} MiB, more than the {} MiB this kind of file may have", path.string(),
               size >> 20, max_bytes >> 20);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

MappedFile::MappedFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot read '{}': {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot read '{}': not a regular file", path.string());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      data_ = nullptr;
      fail("cannot map '{}': {}", path.string(), std::strerror(err));
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

AtomicFile::AtomicFile(fs::path target) : target_(std::move(target)) {
  fs::path dir = target_.parent_path().empty() ? fs::path(".") : target_.parent_path();
  std::error_code ec;
  fs::create_directories(dir, ec);
  temp_ = dir / ("." + target_.filename().string() + ".tmp-" + std::to_string(::getpid()));
  file_ = std::fopen(temp_.c_str(), "wb");
  if (!file_) fail("cannot write '{}': {}", temp_.string(), std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_) {
    std::fclose(file_);
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFile::write(std::string_view bytes) {
  if (!file_) fail("'{}' was already committed", target_.string());
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size())
    fail("writing '{}' failed: {}", temp_.string(), std::strerror(errno));
}

void AtomicFile::commit() {
  if (!file_) fail("'{}' was already committed", target_.string());
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(temp_.c_str(), target_.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::error_code ec;
    fs::remove(temp_, ec);
    fail("cannot write '{}': {}", target_.string(), why);
  }
}

StagedDir::StagedDir(fs::path target, bool replace)
    : target_(std::move(target)), replace_(replace) {
  if (!replace_ && fs::exists(target_))
    fail_usage("output folder '{}' already exists (remove it or choose another -o)",
               target_.string());
  staging_ = target_;
  staging_ += ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(staging_, ec);
  fs::create_directories(staging_);
}

StagedDir::~StagedDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

void StagedDir::commit() {
  std::error_code ec;
  if (fs::exists(target_)) {
    fs::path old = target_;
    old += ".old-" + std::to_string(::getpid());
    fs::rename(target_, old);
    fs::rename(staging_, target_);
    fs::remove_all(old, ec);
  } else {
    if (!target_.parent_path().empty()) fs::create_directories(target_.parent_path());
    fs::rename(staging_, target_);
  }
  committed_ = true;
}

}  // namespace ming::io
