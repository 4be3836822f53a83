#include "ming/route/inputs.h"

#include <map>
#include <optional>

#include <fmt/format.h>

#include "ming/core/error.h"
#include "ming/data/encode.h"
#include "ming/data/reader.h"
#include "ming/eval/task.h"
#include "ming/io/json.h"

namespace ming::route {

namespace fs = std::filesystem;
using io::Json;

std::string task_from_path(const fs::path& file) {
  const std::string stem = file.stem().string();
  static const char* splits[] = {"train", "dev", "test", "val", "validation", "valid"};
  for (const char* s : splits)
    if (stem == s && file.has_parent_path() && !file.parent_path().filename().empty())
      return file.parent_path().filename().string();
  return stem;
}

namespace {

std::string keys_of(const Json& record) {
  std::vector<std::string> keys;
  for (auto it = record.begin(); it != record.end(); ++it) keys.push_back(it.key());
  return fmt::format("{}", fmt::join(keys, ", "));
}

std::string as_text(const Json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Rule 1: the evaluation task's own prompt and gold answer. nullopt when the record lacks a
// field the prompt needs (then the generic rules get their chance).
std::optional<std::vector<text::ChatMessage>> render_with_spec(const eval::TaskSpec& spec,
                                                               const Json& record) {
  for (const auto& field : eval::template_fields(spec.prompt))
    if (!record.contains(field)) return std::nullopt;
  if (!record.contains(spec.gold)) return std::nullopt;
  std::vector<text::ChatMessage> messages;
  if (!spec.system.empty()) messages.push_back({text::Role::system, spec.system});
  messages.push_back({text::Role::user, eval::render_prompt(spec, record)});
  std::string answer;
  if (spec.scorer == eval::Scorer::loglik_choice) {
    answer = eval::record_choices(spec, record).gold_answer;
  } else {
    answer = as_text(record.at(spec.gold));
  }
  messages.push_back({text::Role::assistant, answer});
  return messages;
}

}  // namespace

std::vector<TraceInput> read_trace_inputs(const fs::path& file, const InputOptions& options) {
  if (!fs::is_regular_file(file)) fail_usage("data file '{}' does not exist", file.string());
  const fs::path share = options.share_dir.empty() ? eval::default_share_dir() : options.share_dir;
  const std::string file_task = task_from_path(file);
  std::map<std::string, std::optional<eval::TaskSpec>> specs;  // task -> spec (nullopt: none)
  std::vector<TraceInput> out;
  bool stop = false;
  io::for_each_jsonl(file, [&](const Json& record, int64_t line) {
    if (stop) return;
    const std::string where = fmt::format("{}:{}", file.string(), line);
    if (!record.is_object())
      fail_usage("{}: expected a JSON object, got {}", where, record.type_name());
    TraceInput in;
    in.origin = where;
    in.task = record.contains("task") && record["task"].is_string()
                  ? record["task"].get<std::string>()
                  : file_task;
    if (record.contains("id") && (record["id"].is_string() || record["id"].is_number()))
      in.id = as_text(record["id"]);
    else
      in.id = fmt::format("{}:{}", file.stem().string(), line);

    bool done = false;
    if (options.use_task_specs) {
      auto it = specs.find(in.task);
      if (it == specs.end()) {
        std::optional<eval::TaskSpec> spec;
        if (fs::is_regular_file(share / "tasks" / (in.task + ".yaml")))
          spec = eval::load_task_spec(in.task, share);
        it = specs.emplace(in.task, std::move(spec)).first;
      }
      if (it->second) {
        try {
          if (auto messages = render_with_spec(*it->second, record)) {
            in.messages = std::move(*messages);
            done = true;
          }
        } catch (const UsageError& e) {
          fail_usage("{}: task '{}': {}", where, in.task, e.what());
        }
      }
    }
    if (!done) {
      auto str = [&](const char* key) { return record.contains(key) && record[key].is_string(); };
      const bool known = record.contains("conversations") || record.contains("messages") ||
                         record.contains("instruction") ||
                         (record.contains("input") && record.contains("target")) || str("text");
      if (known) {
        data::Example ex;
        try {
          ex = data::parse_record(record, data::detect_format(record, where));
        } catch (const UsageError& e) {
          fail_usage("{}: {}", where, e.what());
        }
        in.messages = std::move(ex.messages);
        in.text = std::move(ex.text);
        in.is_text = ex.is_text;
      } else if (str("prompt") && (str("output") || str("response") || str("completion"))) {
        const char* out_key = str("output")     ? "output"
                              : str("response") ? "response"
                                                : "completion";
        in.messages = {{text::Role::user, record["prompt"].get<std::string>()},
                       {text::Role::assistant, record[out_key].get<std::string>()}};
      } else if (str("question") && record.contains("options") && record["options"].is_object() &&
                 record.contains("answer_idx")) {
        std::string prompt = record["question"].get<std::string>() + "\n";
        for (auto it = record["options"].begin(); it != record["options"].end(); ++it)
          prompt += fmt::format("{}. {}\n", it.key(), as_text(it.value()));
        prompt += "Answer:";
        in.messages = {{text::Role::user, prompt},
                       {text::Role::assistant, as_text(record["answer_idx"])}};
      } else {
        fail_usage(
            "{}: cannot tell what text to trace from keys [{}] (expected an evaluation task's "
            "fields, conversations, messages, instruction/output, input/target, text, "
            "prompt/output or question/options/answer_idx)",
            where, keys_of(record));
      }
    }
    out.push_back(std::move(in));
    if (options.limit > 0 && int64_t(out.size()) >= options.limit) stop = true;
  });
  if (out.empty()) fail_usage("data file '{}' has no records", file.string());
  return out;
}

std::vector<TokenizedExample> tokenize_inputs(const std::vector<TraceInput>& inputs,
                                              const text::Tokenizer& tokenizer,
                                              const text::ChatTemplate& chat_template,
                                              int64_t max_tokens) {
  std::vector<TokenizedExample> out;
  out.reserve(inputs.size());
  data::EncodeOptions encode;
  encode.chat_template = chat_template;
  encode.mask = data::MaskPolicy::assistant;  // only the ids matter here
  for (const auto& in : inputs) {
    auto enc = in.is_text ? data::encode_document(tokenizer, in.text,
                                                  data::template_expects_bos(chat_template.kind()))
                          : data::encode_conversation(tokenizer, in.messages, encode);
    if (enc.input_ids.empty()) fail_usage("{}: the record tokenizes to nothing", in.origin);
    TokenizedExample ex;
    ex.id = in.id;
    ex.task = in.task;
    size_t n = enc.input_ids.size();
    if (max_tokens > 0) n = std::min<size_t>(n, max_tokens);
    ex.tokens.assign(enc.input_ids.begin(), enc.input_ids.begin() + n);
    out.push_back(std::move(ex));
  }
  return out;
}

}  // namespace ming::route
