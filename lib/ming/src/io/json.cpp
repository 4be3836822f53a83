#include "ming/io/json.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <optional>

#include "ming/core/error.h"
#include "ming/io/files.h"

namespace ming::io {
namespace {

// The deepest nesting of arrays and objects in `text`, counting brackets outside strings; stops
// early once past `limit`. Invalid text is left to the parser.
int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// Reads one line of at most `max_bytes` (without the newline); false at the end of the input.
bool read_bounded_line(std::istream& in, std::string& line, size_t max_bytes,
                       const std::string& where) {
  line.clear();
  std::streambuf* buffer = in.rdbuf();
  for (;;) {
    const int c = buffer->sbumpc();
    if (c == std::char_traits<char>::eof()) return !line.empty();
    if (c == '\n') return true;
    if (line.size() >= max_bytes)
      fail_usage("{}: a line longer than {} MiB (the limit for one JSON-lines record)", where,
                 max_bytes >> 20);
    line.push_back(static_cast<char>(c));
  }
}

// Parses `text` into `out`, or says what is wrong with it (without naming the file).
std::optional<std::string> parse_or_explain(std::string_view text, Json& out) {
  if (json_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
    return fmt::format("JSON nested deeper than {} levels", kMaxJsonDepth);
  try {
    out = Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    return fmt::format("invalid JSON at byte {}: {}", e.byte, e.what());
  }
  return std::nullopt;
}

}  // namespace

Json parse_json(std::string_view text, const std::string& where) {
  Json out;
  if (auto problem = parse_or_explain(text, out)) fail_usage("{}: {}", where, *problem);
  return out;
}

Json read_json(const std::filesystem::path& path) {
  return parse_json(read_file(path, kMaxJsonFileBytes), "'" + path.string() + "'");
}

void write_json(const std::filesystem::path& path, const Json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

void for_each_jsonl(const std::filesystem::path& path,
                    const std::function<void(const Json&, int64_t)>& fn,
                    const std::function<void(int64_t, const std::string&)>& on_bad_line) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) fail_usage("cannot open '{}'", path.string());
    in = &file;
  }
  std::string line;
  int64_t line_number = 0;
  while (read_bounded_line(*in, line, kMaxJsonLineBytes,
                           fmt::format("'{}' line {}", path.string(), line_number + 1))) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json record;
    if (auto problem = parse_or_explain(line, record)) {
      if (!on_bad_line) fail_usage("'{}' line {}: {}", path.string(), line_number, *problem);
      on_bad_line(line_number, *problem);
      continue;
    }
    fn(record, line_number);
  }
}

template <typename T>
T get_field(const Json& object, const std::string& key, const std::string& where) {
  if (!object.is_object()) fail_usage("{}: expected a JSON object", where);
  auto it = object.find(key);
  if (it == object.end()) fail_usage("{}: missing field '{}'", where, key);
  try {
    return it->get<T>();
  } catch (const Json::exception& e) {
    fail_usage("{}: field '{}' has the wrong type ({})", where, key, it->type_name());
  }
}

template std::string get_field<std::string>(const Json&, const std::string&, const std::string&);
template int64_t get_field<int64_t>(const Json&, const std::string&, const std::string&);
template double get_field<double>(const Json&, const std::string&, const std::string&);
template bool get_field<bool>(const Json&, const std::string&, const std::string&);
template Json get_field<Json>(const Json&, const std::string&, const std::string&);

}  // namespace ming::io
