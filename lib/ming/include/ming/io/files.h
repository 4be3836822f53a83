// Whole-file reads and crash-safe writes.
//
// Every file ming writes goes through AtomicFile: the bytes go to a temporary name in the same
// folder, are flushed and fsync'ed, then renamed over the target, so a killed process never
// leaves a half-written file behind. Folders get the same treatment with StagedDir.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace ming::io {

namespace fs = std::filesystem;

// Reads a whole file; throws ming::Error naming the path on failure, and UsageError (before
// reading) when the file is larger than `max_bytes`.
std::string read_file(const fs::path& path, uint64_t max_bytes = UINT64_MAX);

// A whole file mapped read-only: its bytes without reading them all into memory first, so that
// a reader can look at (and refuse) a huge file cheaply. Throws ming::Error naming the path.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view view() const { return {static_cast<const char*>(data_), size_}; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `bytes` to `path` atomically (temp file + fsync + rename).
void write_file_atomic(const fs::path& path, std::string_view bytes);

// Streaming form: write through file(), then commit(). Destroyed without commit() -> the
// temporary is removed and the target is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(fs::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::FILE* file() { return file_; }
  void write(std::string_view bytes);
  void commit();

 private:
  fs::path target_, temp_;
  std::FILE* file_ = nullptr;
};

// A folder written as a unit: contents go into "<target>.tmp-<pid>" and commit() renames it to
// `target` (replacing an existing folder only when `replace` is true). Destroyed without commit()
// -> the staging folder is removed, so no partial output folder is left behind.
class StagedDir {
 public:
  explicit StagedDir(fs::path target, bool replace = true);
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;

  const fs::path& path() const { return staging_; }
  fs::path operator/(const std::string& name) const { return staging_ / name; }
  void commit();

 private:
  fs::path target_, staging_;
  bool replace_ = true;
  bool committed_ = false;
};

}  // namespace ming::io
