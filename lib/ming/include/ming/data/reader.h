// Dataset readers: JSON lines, JSON arrays and raw text files into conversations or documents.
//
// Every record that cannot be used is reported with the file and line it starts on, because the
// data files users bring are large, hand-converted and often slightly broken; the bad-example
// policy decides whether such a record stops the run or is counted and skipped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ming/data/options.h"
#include "ming/io/json.h"
#include "ming/text/chat_template.h"

namespace ming::data {

// One training record: a conversation, or (format text) one plain document.
struct Example {
  std::vector<text::ChatMessage> messages;  // chat formats
  std::string text;                         // format text
  bool is_text = false;
  std::string origin;  // "path:line" of the record, for messages
};

struct BadExample {
  std::string origin;  // "path:line"
  std::string reason;
};

struct ReadResult {
  DataFormat format = DataFormat::auto_detect;  // the format actually used (auto resolved)
  std::vector<Example> examples;
  int64_t n_bad = 0;
  std::vector<BadExample> first_bad;  // the first few (at most kMaxReportedBad) bad records
};

constexpr int64_t kMaxReportedBad = 5;

// Reads a whole dataset file. Files whose first non-blank character is '[' are read as one JSON
// array (each element's line is tracked); other .json/.jsonl files as JSON lines; .txt files as
// one raw document (format text or auto only). `format` auto is resolved from the first record
// that parses. Under BadExamplePolicy::stop the first bad record throws UsageError
// "<path>:<line>: <reason>"; under skip bad records are counted, and one warning per file lists
// the count and the first few reasons. A missing file, an unknown auto format, or a file with
// no record at all throws UsageError regardless of the policy.
//
// `layout` (columns and tags, as a dataset_info.json entry gives them) renames the fields of
// alpaca and sharegpt records before they are parsed; a sharegpt record's system column becomes
// its system turn. Without it records are read under the formats' own names.
struct RecordLayout {
  DatasetColumns columns;
  DatasetTags tags;
};
ReadResult read_examples(const std::filesystem::path& path, DataFormat format,
                         BadExamplePolicy policy, const RecordLayout* layout = nullptr);

// A record with LLaMA-Factory column and tag names rewritten to the format's own names
// (alpaca: instruction/input/output/system/history; sharegpt: conversations of {from, value}
// with roles user/assistant/system). UsageError with the reason for a record that cannot be
// rewritten (tool turns, an unknown role value).
io::Json canonical_record(const io::Json& record, DataFormat format, const RecordLayout& layout);

// The format a record's keys indicate (conversations -> sharegpt, messages -> messages,
// instruction -> alpaca, input + target -> promptcblue, text -> text); UsageError naming
// `where` and the keys found otherwise.
DataFormat detect_format(const io::Json& record, const std::string& where);

// Converts one record; throws UsageError with the reason (without the location) when the record
// cannot be used. Conversations are validated: at least one turn, known roles, string contents,
// at least one assistant turn, no empty assistant text. Assistant turns before the first user
// turn are dropped (MING's loader drops a leading non-human turn the same way).
Example parse_record(const io::Json& record, DataFormat format);

}  // namespace ming::data
