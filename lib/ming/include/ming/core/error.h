// Error types shared by the library and the tools.
//
// The library throws; each tool's main catches once (tools/common/cli.h) and maps the type to an
// exit status: UsageError -> 2 (bad flags, bad config, malformed user input files that the user
// must fix), everything else -> 1. Messages name the file, key, line or tensor at fault and say
// what was expected.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace ming {

// A failure the user caused and can fix: bad flag, unknown config key, malformed input file.
// Tools exit with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Any other failure (I/O error, numerical failure, internal limit). Tools exit with status 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail_usage(fmt::format_string<Args...> f, Args&&... args) {
  throw UsageError(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ming
