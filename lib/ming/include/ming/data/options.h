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

DataFormat parse_data_format(const std::string& name);  // UsageError listing the valid names
std::string data_format_name(DataFormat format);
MaskPolicy parse_mask_policy(const std::string& name);
std::string mask_policy_name(MaskPolicy policy);
BadExamplePolicy parse_bad_example_policy(const std::string& name);
std::string bad_example_policy_name(BadExamplePolicy policy);

// One dataset of a mixture.
struct DatasetSpec {
  std::string path;             // .jsonl, .json (JSON array or JSON lines) or .txt
  std::string format = "auto";  // sharegpt | messages | alpaca | promptcblue | text | auto
  double weight = 1.0;          // relative sampling probability, see DataOptions::epoch_size

  template <class V>
  void visit(V& v) {
    v("path", path, "dataset file (.jsonl, .json array or lines, .txt)");
    v("format", format, "sharegpt | messages | alpaca | promptcblue | text | auto");
    v("weight", weight, "relative sampling probability within the mixture");
  }
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
  }
};

}  // namespace ming::data
