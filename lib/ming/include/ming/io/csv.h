// CSV files (RFC 4180: comma-separated, "double quotes" around fields that hold commas, quotes
// or line breaks, "" for a quote inside them) read as one JSON object per row, keyed by the
// header row. Exam sets ship this way (CMExam: an Options field of "A ..." lines).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

namespace ming::io {

struct CsvRow {
  int64_t line = 0;       // physical line (1-based) where the row starts
  nlohmann::json fields;  // header name -> string value
};

// Every data row of a CSV file with a header row (a UTF-8 byte-order mark is skipped; CRLF and
// LF line ends both work; blank lines are skipped). UsageError naming the file and line for an
// unreadable file, an unterminated quote, a duplicate or empty header name, or a row whose
// number of fields differs from the header's.
std::vector<CsvRow> read_csv(const std::filesystem::path& path);

}  // namespace ming::io
