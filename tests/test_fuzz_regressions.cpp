// Replays every input kept under fuzz/regressions/<target>/ (inputs that once crashed a fuzzer
// or a sanitizer) and fuzz/seeds/<target>/ (small hand-made seeds) through the same target code
// the fuzzers run (fuzz/targets): each must now be read or refused with a ming error, nothing
// else. Under a sanitizer build (MING_SANITIZE) this is also a sanitizer check of those inputs.
#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "../fuzz/fuzz.h"
#include "support.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> found;
  if (!fs::is_directory(dir)) return found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "README.md") found.push_back(e.path());
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

TEST_CASE("fuzz regressions: every kept input is read or refused with a ming error") {
  ming::fuzz::initialise();
  std::set<std::string> names;
  for (const auto& t : ming::fuzz::targets()) names.insert(t.name);
  REQUIRE(names.size() >= 15);
  int replayed = 0;
  for (const char* kind : {"regressions", "seeds"}) {
    const fs::path root = ming::test::source_dir() / "fuzz" / kind;
    for (const auto& e : fs::directory_iterator(root)) {
      if (!e.is_directory()) continue;
      // A folder without its target would silently stop being checked.
      CHECK_MESSAGE(names.count(e.path().filename().string()) == 1, "no fuzz target named ",
                    e.path().filename().string());
    }
    for (const auto& t : ming::fuzz::targets()) {
      for (const auto& file : files_under(root / t.name)) {
        CAPTURE(file.string());
        std::ifstream in(file, std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
        CHECK_NOTHROW(t.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
        ++replayed;
      }
    }
  }
  CHECK(replayed > 0);
}
