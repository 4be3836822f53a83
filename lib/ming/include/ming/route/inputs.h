// Data files for ming-route-stats --data: JSON-lines records of many shapes turned into
// tokenized, task-tagged examples for collect_routes() (route/trace.h).
//
// Per record (one JSON object per line):
//   task  the record's "task" string; else the file's name: "medqa.jsonl" -> "medqa", and for
//         suite files ("<suite>/<task>/test.jsonl", split names train/dev/test/val/validation)
//         the folder name
//   id    the record's "id" (string or number); else "<file stem>:<line>"
//   text, tried in this order:
//     1. an evaluation task of that name exists (<share>/tasks/<task>.yaml) and the record has
//        the fields its prompt uses: the user turn is the task's prompt (and system message), the
//        assistant turn its gold answer (the gold choice's continuation for loglik_choice tasks,
//        the gold field's text otherwise), i.e. what ming-eval feeds the model
//     2. chat / instruction formats the training reader knows (data::detect_format):
//        {conversations}, {messages}, {instruction, input, output}, {input, target}, {text}
//     3. {prompt, output} (also "response" / "completion" for output)
//     4. {question, options {letter: text}, answer_idx}: question, "A. text" lines, "Answer:",
//        and the answer letter as the assistant turn
//   Conversations are rendered with the model's chat template and tokenized exactly as training
//   does (data::encode_conversation); {text} records as documents (data::encode_document).
// A record that fits none of these is a UsageError naming the file, line and the keys found.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ming/route/trace.h"
#include "ming/text/chat_template.h"
#include "ming/text/tokenizer.h"

namespace ming::route {

struct TraceInput {
  std::string id;
  std::string task;
  std::vector<text::ChatMessage> messages;  // chat records
  std::string text;                         // {text} records
  bool is_text = false;
  std::string origin;  // "file:line"
};

struct InputOptions {
  int64_t limit = 0;                // > 0: the first N records of each file
  std::filesystem::path share_dir;  // evaluation task specs; empty = the compiled-in share folder
  bool use_task_specs = true;       // rule 1 above
};

// The task name a file implies (see above).
std::string task_from_path(const std::filesystem::path& file);

// Reads one JSONL file (UsageError naming file and line on a malformed or unusable record, and
// on a missing or empty file).
std::vector<TraceInput> read_trace_inputs(const std::filesystem::path& file,
                                          const InputOptions& options = {});

// Tokenizes inputs for a model with this tokenizer and chat template; examples longer than
// max_tokens (> 0) are cut to their first max_tokens tokens.
std::vector<TokenizedExample> tokenize_inputs(const std::vector<TraceInput>& inputs,
                                              const text::Tokenizer& tokenizer,
                                              const text::ChatTemplate& chat_template,
                                              int64_t max_tokens = 0);

}  // namespace ming::route
