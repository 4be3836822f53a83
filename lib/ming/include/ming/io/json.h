// JSON and JSON-lines files (nlohmann::json), with errors that name the file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ming::io {

using Json = nlohmann::json;

// Limits on JSON read from files, so that a hostile file is refused with a UsageError before it
// costs memory or stack: nesting deeper than any real config, tokenizer or dataset (recursive
// consumers would overflow the stack), a JSON file larger than the largest real tokenizer.json
// by far (checked from its size before reading), and one JSON-lines record.
inline constexpr int kMaxJsonDepth = 1000;
inline constexpr uint64_t kMaxJsonFileBytes = 512ull << 20;
inline constexpr size_t kMaxJsonLineBytes = size_t{64} << 20;

// Parses JSON text; UsageError "<where>: invalid JSON at byte N: ..." on bad content, and
// "<where>: JSON nested deeper than 1000 levels" (checked before parsing).
Json parse_json(std::string_view text, const std::string& where);

// Parses a whole JSON file (at most kMaxJsonFileBytes); UsageError
// "'<path>': invalid JSON at byte N: ..." on bad content.
Json read_json(const std::filesystem::path& path);
// Pretty-printed (2-space indent, keys in insertion order), written atomically.
void write_json(const std::filesystem::path& path, const Json& value);

// Calls `fn(record, line_number)` for each non-blank line of a JSONL file ("-" = stdin).
// A line that is not valid JSON throws UsageError "'<path>' line N: ..." unless `on_bad_line`
// is given, in which case it is called with (line_number, message) and reading goes on. A line
// longer than kMaxJsonLineBytes always throws, after reading no more than that.
void for_each_jsonl(const std::filesystem::path& path,
                    const std::function<void(const Json&, int64_t)>& fn,
                    const std::function<void(int64_t, const std::string&)>& on_bad_line = {});

// Typed field access that names the file/line/key on failure, e.g.
//   get_field<std::string>(rec, "question", where) with where = "data.jsonl line 12".
template <typename T>
T get_field(const Json& object, const std::string& key, const std::string& where);

}  // namespace ming::io
