// Text generation and scoring over a CausalLM: batched prefill, then one token per step from a
// preallocated KV cache.
//
// Prompts of different lengths share one batch through left padding and an attention mask, so
// every sequence's next token sits in the last column. Finished sequences are dropped from the
// batch (and the cache) as they end, so a long straggler does not pay for the finished ones.
// Sampling follows transformers' order: repetition penalty, temperature, top-k, top-p; a
// temperature of 0 is greedy argmax. Sampling runs on the CPU with its own generator seeded per
// call, so results do not depend on the device or on other random draws in the process.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ming/model/transformer.h"
#include "ming/text/tokenizer.h"

namespace ming::gen {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  double repetition_penalty =
      1.0;  // 1 = off; HF's rule (divide positive logits, multiply negative)
  uint64_t seed = 0;
};

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_new_tokens = 256;
  // Generation of a sequence ends at any of these token ids (not included in the text) ...
  std::vector<int64_t> eos_ids;
  // ... or when its text contains one of these strings (the text is cut before it).
  std::vector<std::string> stop;
  // Special tokens that are not stop tokens are left out of the text.
  bool skip_special = true;
};

enum class FinishReason { length, eos, stop };

struct Generation {
  std::vector<int64_t> tokens;  // generated ids (the ending eos id excluded)
  std::string text;
  FinishReason finish = FinishReason::length;
};

// Called with (index of the prompt, new text). Deltas concatenate to the final text and never
// end inside a UTF-8 character or inside a possible stop string.
using StreamCallback = std::function<void(size_t index, const std::string& delta)>;

// prompts: token ids per sequence (each non-empty; add BOS yourself when the model wants it).
std::vector<Generation> generate(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options, const StreamCallback& stream = {});

// Next-token choice for a batch of logits rows. logits: (B, V) any dtype/device; history: the ids
// each row has seen (for the repetition penalty). Returns B ids.
std::vector<int64_t> sample_next(const torch::Tensor& logits,
                                 const std::vector<std::vector<int64_t>>& history,
                                 const SamplingOptions& options, torch::Generator& generator);

// ---- scoring (evaluation) ---------------------------------------------------------------------

struct ScoreRequest {
  std::vector<int64_t> context;       // non-empty (start with BOS for "unconditional")
  std::vector<int64_t> continuation;  // non-empty
};

struct ScoreResult {
  double logprob = 0;   // sum of log p(continuation token | everything before it)
  int64_t tokens = 0;   // continuation length
  bool greedy = false;  // every continuation token was the argmax
};

struct ScoreOptions {
  int64_t batch_size = 8;
  // Longer context + continuation is cut from the left of the context; 0 = the model's
  // max_position_embeddings.
  int64_t max_length = 0;
};

// Log-likelihoods of continuations, batched (sorted by length internally, results in request
// order). Used for multiple-choice scoring and perplexity.
std::vector<ScoreResult> score(model::CausalLM& model, const std::vector<ScoreRequest>& requests,
                               const ScoreOptions& options = {});

// ---- incremental text ---------------------------------------------------------------------------

// Length of the prefix of `text` that can be shown now: excludes a trailing incomplete UTF-8
// sequence (or a trailing U+FFFD a decoder put in its place) and any suffix that starts one of
// the `stop` strings.
size_t stable_prefix_length(const std::string& text, const std::vector<std::string>& stop);

}  // namespace ming::gen
