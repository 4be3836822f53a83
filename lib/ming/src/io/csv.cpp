#include "ming/io/csv.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "ming/core/error.h"

namespace ming::io {

namespace {

// Splits the text into rows of fields, each row with the physical line it starts on.
struct RawRow {
  int64_t line = 0;
  std::vector<std::string> fields;
};

std::vector<RawRow> split_rows(const std::string& text, const std::filesystem::path& path) {
  std::vector<RawRow> rows;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line = 1;
  while (i < text.size()) {
    RawRow row;
    row.line = line;
    std::string field;
    bool row_done = false;
    while (!row_done) {
      field.clear();
      if (i < text.size() && text[i] == '"') {
        const int64_t quote_line = line;
        ++i;
        while (true) {
          if (i >= text.size())
            fail_usage("{}:{}: unterminated quoted field", path.string(), quote_line);
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          field += text[i++];
        }
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          fail_usage("{}:{}: text after a closing quote (a quote inside a field is written \"\")",
                     path.string(), line);
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          field += text[i++];
      }
      row.fields.push_back(field);
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '\r') ++i;
      if (i < text.size() && text[i] == '\n') ++i, ++line;
      row_done = true;
    }
    const bool blank = row.fields.size() == 1 && row.fields[0].empty();
    if (!blank) rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

std::vector<CsvRow> read_csv(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_usage("{}: cannot read the file", path.string());
  std::ostringstream buf;
  buf << in.rdbuf();
  const auto raw = split_rows(buf.str(), path);
  if (raw.empty()) fail_usage("{}: no header row", path.string());
  const auto& header = raw[0].fields;
  std::set<std::string> seen;
  for (const auto& name : header) {
    if (name.empty())
      fail_usage("{}:{}: empty column name in the header", path.string(), raw[0].line);
    if (!seen.insert(name).second)
      fail_usage("{}:{}: column '{}' appears twice in the header", path.string(), raw[0].line,
                 name);
  }
  std::vector<CsvRow> rows;
  for (size_t r = 1; r < raw.size(); ++r) {
    if (raw[r].fields.size() != header.size())
      fail_usage("{}:{}: {} fields, the header has {}", path.string(), raw[r].line,
                 raw[r].fields.size(), header.size());
    CsvRow row;
    row.line = raw[r].line;
    row.fields = nlohmann::json::object();
    for (size_t c = 0; c < header.size(); ++c) row.fields[header[c]] = raw[r].fields[c];
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace ming::io
