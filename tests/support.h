// Helpers shared by the tests: where the real data lives, scratch folders, running the tools.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

namespace ming::test {

namespace fs = std::filesystem;

// The shared data folder: $MING_DATA if set, else ../shared/data beside the source tree.
fs::path data_dir();
fs::path source_dir();
// Where the built tools are (the build folder's root).
fs::path tool(const std::string& name);
// The build folder's root (scratch installs that tests need, under cache/).
fs::path build_dir();

// A fresh, empty folder under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "ming-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command line; captures stdout and stderr separately.
CommandResult run_command(const std::string& command_line);

// Reads a whole file (throws on failure).
std::string read_text(const fs::path& path);
void write_text(const fs::path& path, const std::string& text);

}  // namespace ming::test
