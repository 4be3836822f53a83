#include "ming/io/json.h"

#include <fstream>
#include <iostream>

#include "ming/core/error.h"
#include "ming/io/files.h"

namespace ming::io {

Json read_json(const std::filesystem::path& path) {
  std::string text = read_file(path);
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    fail_usage("'{}': invalid JSON at byte {}: {}", path.string(), e.byte, e.what());
  }
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
  while (std::getline(*in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json record;
    try {
      record = Json::parse(line);
    } catch (const Json::parse_error& e) {
      std::string message = fmt::format("invalid JSON: {}", e.what());
      if (on_bad_line) {
        on_bad_line(line_number, message);
        continue;
      }
      fail_usage("'{}' line {}: {}", path.string(), line_number, message);
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
