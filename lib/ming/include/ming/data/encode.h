// Conversations and documents to token ids with aligned labels.
//
// A conversation is rendered by the chat template into segments (marker / header / content, each
// tagged with its turn's role); every segment is encoded on its own with special tokens parsed
// and the ids are concatenated, exactly as MING's and Qwen's preprocessing tokenize role, "\n",
// message and <|im_end|> separately. The mask policy then decides per segment which tokens are
// labels. Labels are aligned with the inputs (labels[i] is input_ids[i] or kIgnoreIndex); the
// shift by one happens in the loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ming/data/options.h"
#include "ming/text/chat_template.h"
#include "ming/text/tokenizer.h"

namespace ming::data {

constexpr int32_t kIgnoreIndex = -100;  // label of a token that takes no part in the loss

struct EncodedExample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length; input id or kIgnoreIndex
  // Index of the first label that belongs to an assistant turn (chat) or to the document
  // (text); -1 when there is none. Truncation keeps an example only when this is < cutoff_len.
  int64_t first_trained = -1;
};

struct EncodeOptions {
  text::ChatTemplate chat_template{text::ChatTemplateKind::chatml};
  MaskPolicy mask = MaskPolicy::ming;
  std::string system_prompt;  // added when the conversation has no system turn ("" = none)
};

// Whether conversations in this template start with the tokenizer's BOS (LLaMA-2 <s>, LLaMA-3
// <|begin_of_text|>); ChatML does not. raw: yes when the tokenizer has one, as for pretraining.
// jinja: no, the model's template writes bos_token itself where it wants one.
bool template_expects_bos(text::ChatTemplateKind kind);

// Renders, encodes and masks one conversation. MaskPolicy::ming needs a built-in template (it
// masks by the built-in segment kinds); a Jinja template takes MaskPolicy::assistant. BOS (label
// kIgnoreIndex) is prepended when the tokenizer has one, the template expects it and the rendering
// did not already start with it. With the raw template, which has no end-of-turn marker, the
// tokenizer's end token is appended after the final assistant turn as a label, so the model learns
// to stop.
EncodedExample encode_conversation(const text::Tokenizer& tokenizer,
                                   const std::vector<text::ChatMessage>& messages,
                                   const EncodeOptions& options);

// One plain document for (pre)training: [BOS] + text + end-of-text, every token a label except
// BOS. BOS is added when `add_bos` and the tokenizer has one.
EncodedExample encode_document(const text::Tokenizer& tokenizer, const std::string& text,
                               bool add_bos);

// The token that ends a document: <|endoftext|> (Qwen, GPT-2), <|end_of_text|> (LLaMA-3), else
// the tokenizer's first end token. Error naming the tokenizer's lack of one otherwise.
int32_t end_of_text_id(const text::Tokenizer& tokenizer);

}  // namespace ming::data
