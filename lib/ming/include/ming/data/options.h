// Training-data options: which files, how they are templated and masked, how they are mixed,
// cut, packed and shuffled. Plain structs with defaults, one field per YAML key (the `data:`
// block of a training config); `visit` lists the fields once for ming::config::read/write.
//
// String-valued choices are kept as strings here so a YAML file maps onto them directly; they
// are validated (with the key named and the valid values listed) by the parse_* functions below,
// which TrainingData::load calls before doing any work.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ming/io/config.h"

namespace ming::data {

// How to read a dataset's records.
//   sharegpt    {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}
//               (turns written as {"role", "content"} are accepted too, as MING's loader does)
//   messages    {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
//   alpaca      {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
//               user turn = instruction + "\n" + input when input is non-empty
//   promptcblue {"input", "target", ...}: input is the user turn, target the assistant turn
//   text        {"text": ...} per record, or a raw .txt file (the whole file is one document);
//               no template, every token is a label, documents end with an end-of-text token
//   auto        sniffed from the keys of the file's first record (.txt files: text)
enum class DataFormat { sharegpt, messages, alpaca, promptcblue, text, auto_detect };

// Which tokens of a templated conversation are trained on (labels; the rest get -100).
//   ming       MING-MOE's preprocessing exactly: every turn delimiter (<|im_start|>, <|im_end|>
//              and the newline after it) is a label in every turn, system and user turns
//              included; role headers ("user\n", "assistant\n") and system/user text are masked;
//              assistant text is a label. An assistant turn trains text + <|im_end|> + "\n".
//   assistant  only assistant text and the special end token(s) that close it (<|im_end|>,
//              </s>, <|eot_id|>); everything else, delimiters included, is masked.
enum class MaskPolicy { ming, assistant };

// What to do with a record that cannot be used (bad JSON, missing field, unknown role, empty
// conversation, no assistant turn):
//   skip  count it, log one warning per file with the count and the first few file:line reasons
//   stop  throw UsageError naming file:line and the reason
enum class BadExamplePolicy { skip, stop };

constexpr config::NameTable<DataFormat, 6> enum_names(DataFormat) {
  return {{{DataFormat::sharegpt, "sharegpt"},
           {DataFormat::messages, "messages"},
           {DataFormat::alpaca, "alpaca"},
           {DataFormat::promptcblue, "promptcblue"},
           {DataFormat::text, "text"},
           {DataFormat::auto_detect, "auto"}}};
}
constexpr config::NameTable<MaskPolicy, 2> enum_names(MaskPolicy) {
  return {{{MaskPolicy::ming, "ming"}, {MaskPolicy::assistant, "assistant"}}};
}
constexpr config::NameTable<BadExamplePolicy, 2> enum_names(BadExamplePolicy) {
  return {{{BadExamplePolicy::skip, "skip"}, {BadExamplePolicy::stop, "stop"}}};
}

// By the tables above; parse throws UsageError naming the key and listing the valid names.
DataFormat parse_data_format(const std::string& name);
std::string data_format_name(DataFormat format);
MaskPolicy parse_mask_policy(const std::string& name);
std::string mask_policy_name(MaskPolicy policy);
BadExamplePolicy parse_bad_example_policy(const std::string& name);
std::string bad_example_policy_name(BadExamplePolicy policy);

// Where a dataset's records keep their fields, in LLaMA-Factory's dataset_info.json terms
// ("columns"). Empty = the format's own name (alpaca: instruction, input, output, system,
// history; sharegpt: conversations, system).
struct DatasetColumns {
  std::string prompt, query, response, system, history, messages;

  template <class V>
  void visit(V& v) {
    v("prompt", prompt, "alpaca: the instruction field (default instruction)");
    v("query", query, "alpaca: the input field (default input)");
    v("response", response, "alpaca: the answer field (default output)");
    v("system", system, "the system-prompt field (default system)");
    v("history", history, "alpaca: the [[prompt, response], ...] field (default history)");
    v("messages", messages, "sharegpt: the list of turns (default conversations)");
  }
  bool empty() const {
    return prompt.empty() && query.empty() && response.empty() && system.empty() &&
           history.empty() && messages.empty();
  }
};

// How a sharegpt record's turns name their role and content ("tags" in dataset_info.json).
// Empty = ShareGPT's own names (from, value, human, gpt, system); role names matching ming's
// (user/assistant/system) are understood whatever the tags say.
struct DatasetTags {
  std::string role_tag, content_tag, user_tag, assistant_tag, observation_tag, function_tag,
      system_tag;

  template <class V>
  void visit(V& v) {
    v("role_tag", role_tag, "key of a turn's role (default from)");
    v("content_tag", content_tag, "key of a turn's text (default value)");
    v("user_tag", user_tag, "role value of user turns (default human)");
    v("assistant_tag", assistant_tag, "role value of assistant turns (default gpt)");
    v("observation_tag", observation_tag, "role value of tool results (not supported)");
    v("function_tag", function_tag, "role value of tool calls (not supported)");
    v("system_tag", system_tag, "role value of system turns (default system)");
  }
  bool empty() const {
    return role_tag.empty() && content_tag.empty() && user_tag.empty() && assistant_tag.empty() &&
           observation_tag.empty() && function_tag.empty() && system_tag.empty();
  }
};

// One dataset of a mixture: a file (path), or a name looked up in dataset_dir/dataset_info.json
// (LLaMA-Factory's registry, see ming/data/registry.h), which fills path, format, columns, tags.
struct DatasetSpec {
  std::string path;             // .jsonl, .json (JSON array or JSON lines) or .txt
  std::string format = "auto";  // sharegpt | messages | alpaca | promptcblue | text | auto
  double weight = 1.0;          // relative sampling probability, see DataOptions::epoch_size
  std::string name;             // registry name; also names the dataset in eval metrics
  DatasetColumns columns;
  DatasetTags tags;

  template <class V>
  void visit(V& v) {
    v("path", path, "dataset file (.jsonl, .json array or lines, .txt)");
    v("name", name, "dataset name in dataset_dir/dataset_info.json (instead of path)");
    v("format", format, "sharegpt | messages | alpaca | promptcblue | text | auto");
    v("weight", weight, "relative sampling probability within the mixture");
    v("columns", columns, "field names of the records (LLaMA-Factory columns)");
    v("tags", tags, "role/content names of sharegpt turns (LLaMA-Factory tags)");
  }
  // What the dataset is called in logs and per-dataset metrics: the name, else the file stem.
  std::string display_name() const;
};

struct DataOptions {
  std::vector<DatasetSpec> datasets;
  // Chat template for conversations: chatml | llama2 | llama3 | raw | auto. auto with mask
  // assistant: the model's own Jinja template (assistant spans found by rendering prefixes);
  // auto with mask ming: the built-in renderer of the model's family (MING's ChatML masking
  // needs its segments), else what the tokenizer's special tokens suggest, else raw.
  std::string chat_template = "auto";
  std::string mask = "ming";  // ming | assistant
  // Longest sequence in tokens. Conversations keep their start; text documents longer than this
  // are cut into consecutive chunks of cutoff_len.
  int64_t cutoff_len = 3072;
  // Concatenate examples into rows of up to cutoff_len tokens. Examples never attend across
  // each other: a batch carries per-token segment ids and restarting position ids, from which
  // the model builds a block-diagonal causal mask (packed_attention_mask()).
  bool packing = false;
  std::string bad_example_policy = "skip";  // skip | stop
  int64_t seed = 42;  // shuffling and mixture sampling; same seed -> same batches
  // System prompt for conversations that have none ("" = none). MING-MOE's Qwen recipe always
  // adds "You are a helpful assistant.".
  std::string system_prompt;
  // Examples per epoch of the mixture; 0 = the sum of the dataset sizes. Each epoch dataset i
  // contributes round(epoch_size * weight_i / sum(weights)) examples (largest remainder). Each
  // dataset is read as an endless stream of reshuffled passes, without replacement within a
  // pass: an oversampled dataset repeats only after all its examples were seen, an undersampled
  // one continues where the previous epoch stopped.
  int64_t epoch_size = 0;
  // Padding token id; -1 = the tokenizer's <|endoftext|> (or its first end token). Padding
  // never reaches the loss (labels -100, attention 0), so the choice only matters for tidiness.
  int64_t pad_id = -1;
  // Folder of dataset_info.json, for datasets given by name (LLaMA-Factory's dataset_dir).
  std::string dataset_dir = "data";
  // Records read per dataset, the first ones in file order; 0 = all (LLaMA-Factory's max_samples).
  int64_t max_samples = 0;
  // How datasets are mixed (LLaMA-Factory's mix_strategy):
  //   weights           each dataset's share of an epoch follows its weight (ming's default)
  //   concat            each dataset contributes its own size per epoch; weights are ignored
  //   interleave_under  shares follow the weights; the epoch ends when the first dataset would
  //                     repeat (epoch_size = min_i size_i / share_i)
  //   interleave_over   shares follow the weights; the epoch ends when the last dataset has
  //                     been seen once (epoch_size = max_i size_i / share_i)
  // "" = concat when every dataset is given by name (as in LLaMA-Factory), else weights.
  std::string mix_strategy;

  template <class V>
  void visit(V& v) {
    v("datasets", datasets, "list of {path, format, weight}");
    v("template", chat_template,
      "chatml | llama2 | llama3 | raw | auto (the model's own template; its family's built-in "
      "one under mask ming)");
    v("mask", mask, "ming | assistant");
    v("cutoff_len", cutoff_len, "maximum sequence length in tokens");
    v("packing", packing, "pack several examples per row (block-diagonal attention)");
    v("bad_example_policy", bad_example_policy, "skip | stop");
    v("seed", seed, "shuffling and mixture seed");
    v("system_prompt", system_prompt, "system prompt for conversations without one");
    v("epoch_size", epoch_size, "examples per mixture epoch (0 = sum of dataset sizes)");
    v("pad_id", pad_id, "padding token id (-1 = tokenizer's end-of-text)");
    v("dataset_dir", dataset_dir, "folder of dataset_info.json for datasets given by name");
    v("max_samples", max_samples, "records read per dataset (0 = all)");
    v("mix_strategy", mix_strategy, "weights | concat | interleave_under | interleave_over");
  }
};

}  // namespace ming::data
