// A conversation with a model: the history, the chat template, and generation of each reply.
//
// Used by ming-chat (interactive and one-shot) and by anything else that wants "answer this as
// the assistant" with the same rendering and tokenisation as training uses: each built-in template
// segment is encoded on its own with special tokens parsed, as render_chat prescribes; a model's
// own Jinja template renders one text, encoded whole (what transformers' apply_chat_template
// with tokenize=True gives).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ming/gen/generate.h"
#include "ming/model/load.h"
#include "ming/text/chat_template.h"

namespace ming::gen {

struct ChatOptions {
  text::ChatTemplate chat_template{text::ChatTemplateKind::chatml};
  std::optional<std::string> system;
  GenerateOptions generation;
};

class ChatSession {
 public:
  // `model` must outlive the session and carry a tokenizer.
  ChatSession(model::LoadedModel& model, ChatOptions options);

  // Adds the user's message, generates the assistant's reply (streamed through `stream` when
  // given), keeps both in the history and returns the reply. With the raw template there are no
  // turns: `message` is text to continue (empty = start from BOS) and nothing is remembered.
  std::string reply(const std::string& message,
                    const std::function<void(const std::string&)>& stream = {});
  void reset() { history_.clear(); }
  const std::vector<text::ChatMessage>& history() const { return history_; }

  // The prompt ids for the current history plus `message` (what reply() feeds the model).
  std::vector<int64_t> prompt_ids(const std::string& message) const;

 private:
  model::LoadedModel& model_;
  ChatOptions options_;
  std::vector<text::ChatMessage> history_;
};

// Throws UsageError "<what>: not valid UTF-8 (byte N)" for malformed UTF-8.
void check_utf8(std::string_view text, const std::string& what);

}  // namespace ming::gen
