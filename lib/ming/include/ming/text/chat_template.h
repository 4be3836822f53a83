// Chat templates: ChatML (Qwen), LLaMA-2 [INST], LLaMA-3 header tokens, and raw text.
//
// A conversation renders to a list of segments rather than one string, so that training can mask
// labels per segment and every tool tokenizes a conversation the same way: each segment is encoded
// on its own (special tokens parsed) and the ids are concatenated, as MING's and Qwen's
// preprocessing do.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ming::text {

enum class ChatTemplateKind { chatml, llama2, llama3, raw };

// "chatml" | "llama2" | "llama3" | "raw" -> kind; throws UsageError otherwise.
ChatTemplateKind parse_chat_template(const std::string& name);
std::string chat_template_name(ChatTemplateKind kind);
// Picks the template a model folder declares (tokenizer_config.json's chat_template text, or
// the tokenizer's special tokens), falling back to raw.
ChatTemplateKind detect_chat_template(const std::filesystem::path& model_dir);

enum class Role { system, user, assistant };
// "system" | "user"|"human" | "assistant"|"gpt" -> Role; nullopt otherwise.
std::optional<Role> parse_role(const std::string& name);

struct ChatMessage {
  Role role = Role::user;
  std::string content;
};

// What a piece of rendered text is, for label masking:
//  marker  - turn delimiters (<|im_start|>, <|im_end|>, the newline after it, [INST], <s>, ...)
//  header  - the role line of a turn ("assistant\n",
//  "<|start_header_id|>user<|end_header_id|>\n\n") content - the message text itself
enum class SegmentKind { marker, header, content };

struct Segment {
  std::string text;
  SegmentKind kind = SegmentKind::content;
  Role role = Role::user;  // the turn this segment belongs to
};

struct RenderOptions {
  // Appends the opening of an assistant turn (header, no content) for generation.
  bool add_generation_prompt = false;
  // Adds the template's default system prompt when the conversation has none (ChatML: none).
  std::optional<std::string> default_system;
};

std::vector<Segment> render_chat(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                 const RenderOptions& options = {});

// The concatenated text of segments (what a string-based template would produce).
std::string join_segments(const std::vector<Segment>& segments);

}  // namespace ming::text
