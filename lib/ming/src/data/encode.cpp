#include "ming/data/encode.h"

#include "ming/core/error.h"

namespace ming::data {

using text::ChatTemplateKind;
using text::Role;
using text::SegmentKind;

namespace {

// A marker that is exactly one special token (<|im_start|>, <s>, </s>, <|eot_id|>) maps to that
// id directly: SentencePiece models do not parse "<s>" written in text, BPE models do, and both
// must give the same ids. Everything else is encoded with special tokens parsed.
std::vector<int32_t> encode_segment(const text::Tokenizer& tokenizer, const text::Segment& seg) {
  if (seg.kind == SegmentKind::marker) {
    if (auto id = tokenizer.find(seg.text); id && tokenizer.is_special(*id)) return {*id};
  }
  return tokenizer.encode(seg.text, /*add_bos=*/false, /*parse_special=*/true);
}

}  // namespace

bool template_expects_bos(ChatTemplateKind kind) {
  return kind != ChatTemplateKind::chatml && kind != ChatTemplateKind::jinja;
}

int32_t end_of_text_id(const text::Tokenizer& tokenizer) {
  for (const char* piece : {"<|endoftext|>", "<|end_of_text|>"})
    if (auto id = tokenizer.find(piece); id && tokenizer.is_special(*id)) return *id;
  auto eos = tokenizer.eos_ids();
  if (eos.empty())
    fail_usage("the tokenizer has no end-of-text token to end documents and turns with");
  return eos.front();
}

EncodedExample encode_conversation(const text::Tokenizer& tokenizer,
                                   const std::vector<text::ChatMessage>& messages,
                                   const EncodeOptions& options) {
  std::vector<text::ChatMessage> conversation;
  bool has_system = false;
  for (const auto& m : messages) has_system = has_system || m.role == Role::system;
  if (!has_system && !options.system_prompt.empty())
    conversation.push_back({Role::system, options.system_prompt});
  conversation.insert(conversation.end(), messages.begin(), messages.end());

  if (options.mask == MaskPolicy::ming && options.chat_template.kind() == ChatTemplateKind::jinja)
    fail_usage(
        "mask 'ming' reproduces MING's ChatML masking and needs a built-in template, not {} "
        "(use mask 'assistant', or template chatml)",
        options.chat_template.name());
  const auto segments = text::render_chat(options.chat_template, conversation);
  EncodedExample out;
  // True between an assistant turn's text and the start of the next turn: the markers there
  // close the answer, and under the assistant policy their special tokens are trained on.
  bool closing_answer = false;
  for (const auto& seg : segments) {
    const std::vector<int32_t> ids = encode_segment(tokenizer, seg);
    const bool assistant = seg.role == Role::assistant;
    if (!assistant || seg.kind == SegmentKind::header) closing_answer = false;
    for (int32_t id : ids) {
      bool keep = false;
      if (options.mask == MaskPolicy::ming) {
        keep = seg.kind == SegmentKind::marker || (seg.kind == SegmentKind::content && assistant);
      } else {
        keep = (seg.kind == SegmentKind::content && assistant) ||
               (seg.kind == SegmentKind::marker && closing_answer && tokenizer.is_special(id));
      }
      // The answer itself (or its closing marker) must survive truncation, not only the
      // assistant turn's opening marker, for an example to be worth keeping.
      if (keep && assistant && (seg.kind == SegmentKind::content || closing_answer) &&
          out.first_trained < 0)
        out.first_trained = static_cast<int64_t>(out.input_ids.size());
      out.input_ids.push_back(id);
      out.labels.push_back(keep ? id : kIgnoreIndex);
    }
    if (assistant && seg.kind == SegmentKind::content) closing_answer = true;
  }

  // Raw text has no end-of-turn marker: end the final answer with the end token, so a model
  // trained this way learns to stop.
  if (options.chat_template.kind() == ChatTemplateKind::raw && !conversation.empty() &&
      conversation.back().role == Role::assistant) {
    const int32_t eot = end_of_text_id(tokenizer);
    out.input_ids.push_back(eot);
    out.labels.push_back(eot);
  }

  auto bos = tokenizer.bos_id();
  if (bos && template_expects_bos(options.chat_template.kind()) &&
      (out.input_ids.empty() || out.input_ids.front() != *bos)) {
    out.input_ids.insert(out.input_ids.begin(), *bos);
    out.labels.insert(out.labels.begin(), kIgnoreIndex);
    if (out.first_trained >= 0) ++out.first_trained;
  }
  return out;
}

EncodedExample encode_document(const text::Tokenizer& tokenizer, const std::string& text,
                               bool add_bos) {
  EncodedExample out;
  auto bos = tokenizer.bos_id();
  if (add_bos && bos) {
    out.input_ids.push_back(*bos);
    out.labels.push_back(kIgnoreIndex);
  }
  for (int32_t id : tokenizer.encode(text, /*add_bos=*/false, /*parse_special=*/true)) {
    out.input_ids.push_back(id);
    out.labels.push_back(id);
  }
  const int32_t eot = end_of_text_id(tokenizer);
  out.input_ids.push_back(eot);
  out.labels.push_back(eot);
  out.first_trained = (add_bos && bos) ? 1 : 0;
  return out;
}

}  // namespace ming::data
