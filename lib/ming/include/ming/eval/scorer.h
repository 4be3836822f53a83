// Scoring a task's records with a model: the three scorers of share/tasks/*.yaml.
//
//   loglik_choice  log p(continuation | prompt) of every choice (" A", " B", ... or the option
//                  texts); the prediction is the argmax of the sum, or of the sum divided by the
//                  continuation's tokens or characters (ChoiceNorm). When every choice of an
//                  example follows the same prompt tokens (the usual case) the prompt runs once
//                  and the choices continue from copies of its KV cache; otherwise each
//                  (prompt, choice) pair goes through gen::score.
//   generate       batched generation (greedy unless sampling options say otherwise) with the
//                  task's max_new_tokens and stop strings, then the task's answer parser.
//   perplexity     log p(reference | prompt) by teacher forcing through gen::score.
//
// Prompts: the task template rendered with the record, then either the model's chat template
// (system + user turn + opening of the assistant turn, each segment encoded on its own with
// special tokens parsed, as training does) or raw text with BOS. Continuations are tokenized as
// lm-evaluation-harness does: encode(prompt + continuation) and take the tokens after
// encode(prompt), so a tokenizer that merges across the boundary still scores exactly what it
// would produce.
//
// Every example comes back as an ExampleResult that holds what metrics need (one ExampleStats
// per task metric) and what predictions.jsonl shows, so reports and bootstrap intervals never go
// back to the model.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/eval/metrics.h"
#include "ming/eval/task.h"
#include "ming/gen/generate.h"
#include "ming/model/load.h"

namespace ming::eval {

// How prompts are presented: the model's chat template, raw text, or chat when the model folder
// declares a template (auto).
enum class PromptFormat { automatic, chat, raw };
// "auto" | "chat" | "raw"; UsageError otherwise.
PromptFormat parse_prompt_format(const std::string& name);
const char* prompt_format_name(PromptFormat f);

// What a loglik_choice prediction compares: the summed log-probability, or the sum per
// continuation token or per continuation byte (lm-evaluation-harness's acc_norm).
enum class ChoiceNorm { none, tokens, chars };
ChoiceNorm parse_choice_norm(const std::string& name);  // "none" | "tokens" | "chars"
const char* choice_norm_name(ChoiceNorm n);

struct ScorerOptions {
  PromptFormat prompt_format = PromptFormat::automatic;
  ChoiceNorm choice_norm = ChoiceNorm::none;
  // Sequences per forward (loglik_choice: prompts, or prompt+choice pairs on the slow path;
  // generate: prompts; perplexity: prompt+reference pairs).
  int64_t batch_size = 8;
  gen::SamplingOptions sampling;  // default greedy
  int64_t max_new_tokens = 0;     // > 0 overrides the task's generation.max_new_tokens
  // Longest scored sequence; longer prompts lose tokens from the left. 0 = the model's
  // max_position_embeddings.
  int64_t max_length = 0;
};

struct ChoiceScore {
  std::string key;           // option letter or value (what gold is compared with)
  std::string continuation;  // the scored text (" A", " yes", ...)
  double logprob = 0;        // sum over the continuation tokens
  int64_t tokens = 0;
  bool greedy = false;  // every continuation token was the argmax
};

struct ExampleResult {
  std::string id, task;
  size_t line = 0;                     // line in the task's JSONL file
  std::string prompt;                  // the prompt text as the model saw it (template applied)
  std::vector<int64_t> prompt_tokens;  // what the model was given (before left truncation)
  // Prompt tokens that stand for part of a character (byte-fallback pieces of characters the
  // vocabulary lacks): a base whose tokenizer writes a task's prompts mostly this way cannot
  // read them (stories260K's 512 pieces on Chinese text).
  int64_t prompt_byte_pieces = 0;
  // The tokens that follow the prompt in a teacher-forced replay (route traces): the generated
  // tokens, the chosen choice's continuation, or the reference (perplexity).
  std::vector<int64_t> output_tokens;
  std::string output;                // generated text; loglik_choice: the chosen key
  nlohmann::json parsed, gold;       // parse_answer / gold_answer shapes (task.h)
  std::optional<bool> correct;       // when the prediction is right or wrong as a whole
  std::vector<ChoiceScore> choices;  // loglik_choice
  int64_t chosen = -1;               // loglik_choice: index into choices
  double nll = 0;                    // perplexity: summed NLL (nats) of the reference
  int64_t n_tokens = 0;              // perplexity: reference tokens
  std::string finish;                // generate: "length" | "eos" | "stop"
  std::map<std::string, std::string> categories;  // TaskSpec::categories -> the record's value
  std::vector<ExampleStats> stats;                // one per TaskSpec::metrics, in order
};

// Called after each batch of examples with [begin, end) indices into the results so far.
using BatchCallback =
    std::function<void(const std::vector<ExampleResult>& results, size_t begin, size_t end)>;

// The prompt of a record: the rendered text (template applied) and its token ids.
struct EncodedPrompt {
  std::string text;
  std::vector<int64_t> ids;
};
EncodedPrompt encode_prompt(const TaskSpec& spec, const nlohmann::json& record,
                            const model::LoadedModel& model, PromptFormat format);

// The continuation tokens of `continuation` after `prompt` (see above: whole-minus-prefix).
// `prompt_ids` must be encode_prompt's ids for `prompt_text`.
std::vector<int64_t> continuation_tokens(const text::Tokenizer& tokenizer,
                                         const std::string& prompt_text,
                                         const std::vector<int64_t>& prompt_ids,
                                         const std::string& continuation);

// The choice index an example predicts under `norm` (ties: the first).
int64_t pick_choice(const std::vector<ChoiceScore>& choices, ChoiceNorm norm);

// Scores `records` of `spec`. The model is used in eval mode with no gradients; the model must
// carry a tokenizer. UsageError for a model without a tokenizer or records a scorer cannot use.
std::vector<ExampleResult> score_task(const TaskSpec& spec, const std::vector<TaskRecord>& records,
                                      model::LoadedModel& model, const ScorerOptions& options,
                                      const BatchCallback& on_batch = {});

// An example's fields that come from its record alone (id, task, line, gold, categories), and
// the judgement of its parsed prediction (correct, one ExampleStats per task metric).
ExampleResult example_shell(const TaskSpec& spec, const TaskRecord& record);
void finish_example(const TaskSpec& spec, const TaskRecord& record, ExampleResult& result);

// Scores an output produced elsewhere (ming-eval --score) exactly as score_task scores its own:
// generate tasks parse the text; loglik_choice tasks take it as the chosen option's key (what
// their predictions.jsonl holds as output). UsageError for perplexity tasks.
ExampleResult rescore_example(const TaskSpec& spec, const TaskRecord& record,
                              const std::string& output);

// The stats rows of metric number `metric_index` of a task's results.
std::vector<ExampleStats> metric_rows(const std::vector<ExampleResult>& results,
                                      size_t metric_index);

}  // namespace ming::eval
