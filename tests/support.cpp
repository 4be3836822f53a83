#include "support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace ming::test {

// The checkout's paths are compiled into this file only, so the other test sources compile to
// the same objects in every checkout (shared compiler caches hit).
fs::path data_dir() {
  if (const char* env = std::getenv("MING_DATA"); env && *env) return env;
  return MING_DEFAULT_DATA_DIR;
}
fs::path source_dir() {
  return MING_SOURCE_DIR;
}
fs::path tool(const std::string& name) {
  return fs::path(MING_TOOL_DIR) / name;
}
fs::path build_dir() {
  return MING_TOOL_DIR;
}

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  path_ =
      fs::temp_directory_path() / (tag + "-" + std::to_string(::getpid()) + "-" +
                                   std::to_string(counter++) + "-" + std::to_string(rd() % 100000));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

CommandResult run_command(const std::string& command_line) {
  TempDir scratch("ming-cmd");
  fs::path out = scratch / "stdout", err = scratch / "stderr";
  std::string full = "(" + command_line + ") >'" + out.string() + "' 2>'" + err.string() + "'";
  int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

}  // namespace ming::test
