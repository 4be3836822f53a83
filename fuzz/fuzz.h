// What the libFuzzer harnesses share: a registry of targets, the input as a file for readers
// that take a path, and which exceptions count as a clean refusal.
//
// A target is written once (fuzz/targets/<name>.cpp, MING_FUZZ_TARGET(name)) and linked into
// two places: its fuzzer (build option MING_FUZZ: fuzz/main.cpp supplies LLVMFuzzerTestOneInput)
// and the normal test suite, which replays every file in fuzz/regressions/<name>/ through it
// (tests/test_fuzz_regressions.cpp), so an input that once crashed keeps being checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ming/core/error.h"

namespace ming::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);

struct Target {
  const char* name;
  TargetFn run;
};

std::vector<Target>& targets();

struct Register {
  Register(const char* name, TargetFn run) { targets().push_back({name, run}); }
};

// Quiet logs, one LibTorch thread; called once before the first input.
void initialise();

// A private folder for this process (under /dev/shm when it exists), removed at exit.
const std::filesystem::path& scratch();
// Writes `bytes` to scratch()/name (creating folders) and returns the path.
std::filesystem::path write_file(const std::string& name, std::string_view bytes);

// Splits an input into parts at each "\n--8<--\n", for targets that read several files.
std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts);

// Runs `read`; a ming::UsageError or ming::Error is the reader refusing the input, which is
// what it should do. Anything else (another exception, a sanitizer report, a crash) escapes
// and is a finding.
template <typename Read>
void expect_clean(Read&& read) {
  try {
    std::forward<Read>(read)();
  } catch (const ming::UsageError&) {
  } catch (const ming::Error&) {
  }
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace ming::fuzz

#define MING_FUZZ_TARGET(name)                                                          \
  static void fuzz_target_##name(const uint8_t* data, size_t size);                     \
  static const ::ming::fuzz::Register fuzz_register_##name{#name, &fuzz_target_##name}; \
  static void fuzz_target_##name(const uint8_t* data, size_t size)
