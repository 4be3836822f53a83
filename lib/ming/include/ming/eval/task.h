// Evaluation task specifications (share/tasks/<task>.yaml) and the records they run on.
//
// A task is data, not code: a YAML file names the suite file, the prompt template, how the
// model is scored (log-likelihood of choices, generation + answer parser, or perplexity) and
// which metrics to report. Adding a task means adding a YAML file. Task names are used for
// reporting only; nothing routes on them.
//
//   name: medqa                       # required; [a-z0-9._-]+
//   language: en                      # required; en | zh (ROUGE/BLEU tokenisation)
//   description: ...                  # optional
//   data: "{suite}/medqa/{split}.jsonl"   # required; {suite}, {data} (--data / MING_DATA: the
//                                     #   raw data folder) and {split} are substituted
//   format: jsonl                     # jsonl | csv (default: from the file name; csv has a header)
//   split: test                       # default split to evaluate (default: test)
//   id_field: id                      # record field with the example id; records without it
//                                     #   are numbered by 0-based position in the file
//   categories: [Clinical Department] # record fields whose values get their own scores
//   system: ...                       # optional system message
//   prompt: |                         # required; {field} from the record, {{ and }} literal
//     {question}
//     {options}
//     Answer:
//   gold: answer_idx                  # required; record field holding the gold answer
//   scorer: loglik_choice             # required; loglik_choice | generate | perplexity
//   choices:                          # loglik_choice only: one of field / values
//     field: options                  #   record object {letter: text}, or text of "A ..." lines;
//                                     #   gold is one or several letters ("B", "ACE", ["A","C"])
//     values: [yes, no, maybe]        #   fixed continuations; gold must be one of them
//     continuation: letter            #   letter | text: what is scored after the prompt
//   answer:                           # generate only
//     parser: option_letter           #   option_letter | exam_cot | first_letter | yes_no_maybe |
//                                     #   label | entity_list | pair_list | regex | text |
//                                     #   promptcblue
//     pattern: "..."                  #   regex: first capture group (or whole match)
//     labels: [a, b]                  #   label: fixed labels, or
//     labels_field: labels            #   label: record field with the label list
//     options_field: options          #   option_letter, exam_cot, first_letter: record field
//                                     #   with the options (object or "A ..." lines)
//   metrics: [accuracy]               # required; see metrics.h for names
//   generation:
//     max_new_tokens: 16              # default 256
//     stop: ["\n\n"]                  # extra stop strings (default none)
//     stop_tokens: ["<|im_end|>"]     # special tokens that end the answer, where the
//                                     #   tokenizer has them (besides the model's eos ids)
//
// Structured answer formats the parsers read (and prepare-suite writes as gold):
//   entity_list: one line per type, "Type: mention; mention" ("none" for no mention);
//   pair_list:   one line per pair, "head | tail" ("none" for no pair).
//
// Generated text is stripped (Unicode whitespace at both ends, as Python's str.strip) before any
// parser reads it, as MING-MOE's evaluation does.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/eval/metrics.h"

namespace ming::eval {

enum class Scorer { loglik_choice, generate, perplexity };
enum class AnswerParser {
  none,           // not generated (loglik_choice, perplexity)
  option_letter,  // "B", "(B)", "The answer is B. ..." -> "B"
  // MING-MOE's exam rules (ming/eval/eval_em.py); both give the sorted set of letters ("ACE"),
  // so a multi-answer question is right only when exactly right:
  exam_cot,  // the letters on a last line holding "答案为"; else those of "X错，为本题正确答案";
             // else every X written as "X对"
  first_letter,  // the first option letter anywhere in the text
  yes_no_maybe,  // first of yes/no/maybe as a word -> "yes" | "no" | "maybe"
  label,         // the label the text starts with or mentions (longest first)
  entity_list,   // "Type: a; b" lines -> {"Type\ta", "Type\tb"}
  pair_list,     // "a | b" lines -> {"a\tb"}
  regex,         // first capture group of `pattern`
  text,          // the stripped text itself (summaries, answers, dialogue)
  promptcblue,   // official PromptCBLUE post-processing per record task_dataset
};

const char* scorer_name(Scorer s);
const char* parser_name(AnswerParser p);

struct TaskSpec {
  std::string name;
  std::string language;  // en | zh
  std::string description;
  std::string data;    // path template with {suite} and {split}
  std::string format;  // jsonl | csv
  std::string split = "test";
  std::string id_field = "id";
  std::vector<std::string> categories;
  std::string system;
  std::string prompt;  // template
  std::string gold;    // record field with the gold answer
  Scorer scorer = Scorer::generate;
  // loglik_choice
  std::string choices_field;
  std::vector<std::string> choice_values;
  bool continuation_is_letter = true;
  // generate
  AnswerParser parser = AnswerParser::none;
  std::string pattern;
  std::vector<std::string> labels;
  std::string labels_field;
  std::string options_field;
  std::vector<Metric> metrics;
  int max_new_tokens = 256;
  std::vector<std::string> stop;
  std::vector<std::string> stop_tokens;
  std::filesystem::path source;  // the YAML file this came from
};

// The share folder compiled into the library (MING_SHARE_DIR), used when share_dir is empty.
std::filesystem::path default_share_dir();

// Loads and validates a task: a path to a YAML file, or a bare task name looked up as
// <share_dir>/tasks/<name>.yaml. Every problem (unknown key, unknown scorer/parser/metric,
// missing or mistyped field, bad template, incompatible metric) is collected and thrown as one
// UsageError whose lines read "<file>:<line>:<column>: <field>: <what is wrong>".
TaskSpec load_task_spec(const std::string& path_or_name,
                        const std::filesystem::path& share_dir = {});
// Task names available under <share_dir>/tasks (sorted).
std::vector<std::string> list_tasks(const std::filesystem::path& share_dir = {});

// The record fields a template uses, in order of first use. UsageError on malformed braces.
std::vector<std::string> template_fields(const std::string& tmpl);
// Substitutes {field} from the record: strings as they are, numbers as JSON, lists of strings
// one per line, objects (option maps) as "A. text" lines in key order, null as "".
// {{ and }} give literal braces. UsageError naming the field if the record lacks it.
std::string render_template(const std::string& tmpl, const nlohmann::json& record);
inline std::string render_prompt(const TaskSpec& spec, const nlohmann::json& record) {
  return render_template(spec.prompt, record);
}

// The task's data file for a split: data with {suite}, {data} and {split} substituted. An empty
// data_dir means $MING_DATA; UsageError when the template uses {data} and neither is set.
std::filesystem::path task_data_path(const TaskSpec& spec, const std::filesystem::path& suite_dir,
                                     const std::string& split = "",
                                     const std::filesystem::path& data_dir = {});

struct TaskRecord {
  std::string id;
  size_t line = 0;      // 1-based line in the file where the record starts
  size_t index = 0;     // 0-based position among the file's records
  nlohmann::json data;  // the whole record (CSV: every column as a string)
};

// Reads and validates a task's records (JSONL: one object per line; CSV: one per row under the
// header): the id (the id_field, a string or integer; absent: the record's 0-based position),
// every field the prompt uses, the gold field, the category fields, and for option tasks
// options that parse and a gold whose every letter is one of them ("answer letter 'F' is not
// among the options (A, B, C, D)"). UsageError names the file, line and field. Empty lines are
// skipped; duplicate ids are an error.
std::vector<TaskRecord> load_task_records(const TaskSpec& spec,
                                          const std::filesystem::path& suite_dir,
                                          const std::string& split = "",
                                          const std::filesystem::path& data_dir = {});

// The options of a record's field: an object {letter: text} in key order, or text with one
// "A ..." line per option ("A 极高的催化效率", "B. text", "C、text"). Empty when the field is
// missing or holds neither.
std::vector<std::pair<std::string, std::string>> record_options(const nlohmann::json& record,
                                                                const std::string& field);

// The continuations scored for one record by loglik_choice (" A", " B", ... or the option
// texts) with the index of the gold one.
struct Choices {
  std::vector<std::string> continuations;
  std::vector<std::string> keys;  // letters or values, what the gold is compared with
  size_t gold = 0;                // the (first) gold choice
  std::string gold_answer;        // the whole gold as one writes it: "B", "ACE", or the value
};
Choices record_choices(const TaskSpec& spec, const nlohmann::json& record);

// Parses generated text (stripped first) with the task's parser. Returns a JSON string
// (option_letter, yes_no_maybe, label, regex, text; "" when nothing was found), a JSON array of
// tuple strings (entity_list, pair_list) or the PromptCBLUE structure.
nlohmann::json parse_answer(const TaskSpec& spec, const std::string& text,
                            const nlohmann::json& record);
// The gold answer of a record in the same shape parse_answer returns.
nlohmann::json gold_answer(const TaskSpec& spec, const nlohmann::json& record);

// One example's statistics for `metric`, from a parsed prediction and the record.
ExampleStats score_example(const TaskSpec& spec, Metric metric, const nlohmann::json& pred,
                           const nlohmann::json& record);

}  // namespace ming::eval
