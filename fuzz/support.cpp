// The shared pieces of fuzz.h.
#include "fuzz.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <torch/torch.h>

#include "ming/core/log.h"

namespace fs = std::filesystem;

namespace ming::fuzz {

std::vector<Target>& targets() {
  static std::vector<Target> all;
  return all;
}

void initialise() {
  log::set_level(log::Level::quiet);
  torch::set_num_threads(1);
}

const fs::path& scratch() {
  static const fs::path dir = [] {
    const fs::path base =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("ming-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(scratch(), ignored);
    });
    return d;
  }();
  return dir;
}

fs::path write_file(const std::string& name, std::string_view bytes) {
  const fs::path path = scratch() / name;
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("fuzz: cannot write " + path.string());
  return path;
}

std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts) {
  static constexpr std::string_view kSeparator = "\n--8<--\n";
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(input);
  parts.resize(max_parts);
  return parts;
}

}  // namespace ming::fuzz
