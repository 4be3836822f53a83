#include "ming/eval/sft.h"

#include <algorithm>
#include <random>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"

namespace ming::eval {

std::string sft_target(const TaskSpec& spec, const nlohmann::json& record) {
  if (spec.scorer == Scorer::loglik_choice) {
    return record_choices(spec, record).gold_answer;
  }
  const auto it = record.find(spec.gold);
  if (it == record.end())
    fail_usage("task '{}': record has no gold field '{}'", spec.name, spec.gold);
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string out;
    for (const auto& item : *it) {
      if (!out.empty()) out += "\n";
      out += item.is_string() ? item.get<std::string>() : item.dump();
    }
    return out;
  }
  return it->dump();
}

std::vector<std::pair<std::string, int64_t>> export_sft(const std::vector<TaskSpec>& tasks,
                                                        const SftExportOptions& options,
                                                        const std::filesystem::path& out) {
  std::vector<std::pair<std::string, int64_t>> counts;
  io::AtomicFile file(out);
  for (const auto& spec : tasks) {
    if (!std::filesystem::exists(
            task_data_path(spec, options.suite_dir, options.split, options.data_dir))) {
      log::warn("export: task '{}' has no {} split in '{}'; skipped", spec.name, options.split,
                options.suite_dir.string());
      continue;
    }
    auto records = load_task_records(spec, options.suite_dir, options.split, options.data_dir);
    if (options.max_per_task > 0 && static_cast<int64_t>(records.size()) > options.max_per_task) {
      uint64_t h = 1469598103934665603ull;  // FNV-1a of the task name: a stable per-task stream
      for (unsigned char ch : spec.name) h = (h ^ ch) * 1099511628211ull;
      std::mt19937_64 rng(options.seed ^ h);
      std::shuffle(records.begin(), records.end(), rng);
      records.resize(options.max_per_task);
      std::sort(records.begin(), records.end(),
                [](const TaskRecord& a, const TaskRecord& b) { return a.line < b.line; });
    }
    int64_t n = 0;
    for (const auto& r : records) {
      nlohmann::json messages = nlohmann::json::array();
      if (!spec.system.empty()) messages.push_back({{"role", "system"}, {"content", spec.system}});
      messages.push_back({{"role", "user"}, {"content", render_prompt(spec, r.data)}});
      messages.push_back({{"role", "assistant"}, {"content", sft_target(spec, r.data)}});
      nlohmann::json line = {{"messages", messages}, {"task", spec.name}, {"id", r.id}};
      file.write(line.dump() + "\n");
      ++n;
    }
    counts.emplace_back(spec.name, n);
  }
  file.commit();
  return counts;
}

}  // namespace ming::eval
