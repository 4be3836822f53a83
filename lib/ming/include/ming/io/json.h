// JSON and JSON-lines files (nlohmann::json), with errors that name the file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace ming::io {

using Json = nlohmann::json;

// Parses a whole JSON file; UsageError "'<path>': invalid JSON at byte N: ..." on bad content.
Json read_json(const std::filesystem::path& path);
// Pretty-printed (2-space indent, keys in insertion order), written atomically.
void write_json(const std::filesystem::path& path, const Json& value);

// Calls `fn(record, line_number)` for each non-blank line of a JSONL file ("-" = stdin).
// A line that is not valid JSON throws UsageError "'<path>' line N: ..." unless `on_bad_line`
// is given, in which case it is called with (line_number, message) and reading goes on.
void for_each_jsonl(const std::filesystem::path& path,
                    const std::function<void(const Json&, int64_t)>& fn,
                    const std::function<void(int64_t, const std::string&)>& on_bad_line = {});

// Typed field access that names the file/line/key on failure, e.g.
//   get_field<std::string>(rec, "question", where) with where = "data.jsonl line 12".
template <typename T>
T get_field(const Json& object, const std::string& key, const std::string& where);

}  // namespace ming::io
