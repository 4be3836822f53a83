// Training data from task definitions: the same prompts ming-eval asks, with the gold answers as
// the assistant's reply, so a model is trained on the suite exactly in the form it is tested in.
//
// Each record becomes one OpenAI-style conversation line
//   {"messages": [{"role": "system", ...}?, {"role": "user", "content": <prompt>},
//                 {"role": "assistant", "content": <target>}], "task": <name>, "id": <id>}
// (ming-train format `messages`; the task name is for reporting only, never for routing).
// Target: for loglik_choice tasks the gold continuation without its leading space (" B" -> "B",
// or the option text); otherwise the record's gold field as text (lists one item per line).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ming/eval/task.h"

namespace ming::eval {

struct SftExportOptions {
  std::filesystem::path suite_dir;
  std::filesystem::path data_dir;  // {data} in task files; empty: $MING_DATA
  std::string split = "train";
  // At most this many records per task (seeded sample when a task has more); 0 = all.
  int64_t max_per_task = 0;
  uint64_t seed = 0;
};

// Writes the conversations of every task to `out` (JSONL, atomically), tasks in the given order,
// and returns the number of records written per task. Tasks without that split are skipped with
// a warning.
std::vector<std::pair<std::string, int64_t>> export_sft(const std::vector<TaskSpec>& tasks,
                                                        const SftExportOptions& options,
                                                        const std::filesystem::path& out);

// The assistant reply a record trains on (see above).
std::string sft_target(const TaskSpec& spec, const nlohmann::json& record);

}  // namespace ming::eval
