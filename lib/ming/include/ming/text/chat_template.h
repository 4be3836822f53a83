// Chat templates: a model's own Jinja template (tokenizer_config.json), or one of ming's built-in
// renderers: ChatML (Qwen), LLaMA-2 [INST], LLaMA-3 header tokens, and raw text.
//
// A conversation renders to a list of segments rather than one string, so that training can mask
// labels per segment and every tool tokenizes a conversation the same way: each segment is encoded
// on its own (special tokens parsed) and the ids are concatenated, as MING's and Qwen's
// preprocessing do.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ming::text {

namespace jinja {
class Template;
}

// jinja: the model's own template, interpreted (ChatTemplate::from_jinja).
enum class ChatTemplateKind { chatml, llama2, llama3, raw, jinja };

// "chatml" | "llama2" | "llama3" | "raw" -> kind; throws UsageError otherwise.
ChatTemplateKind parse_chat_template(const std::string& name);
std::string chat_template_name(ChatTemplateKind kind);
// The built-in renderer of the family a model folder declares (its chat_template text, or the
// tokenizer's special tokens), falling back to raw. MING's exact masking works on these.
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

// A chat template: one of the built-in renderers, or a model's own Jinja template together with
// the special tokens it is rendered with (bos_token, eos_token, ...). Cheap to copy.
class ChatTemplate {
 public:
  ChatTemplate(ChatTemplateKind kind = ChatTemplateKind::chatml);  // a built-in renderer
  // Parses a Jinja chat template; `origin` names it in errors.
  static ChatTemplate from_jinja(const std::string& source, const std::string& origin,
                                 nlohmann::ordered_json special_tokens);
  // The model folder's own template (tokenizer_config.json "chat_template" — a string or the
  // "default" of a list — or chat_template.jinja / chat_template.json), else the built-in
  // renderer detect_chat_template picks. A template that does not parse is kept with its error,
  // which rendering reports, so a model whose template is never used still loads.
  static ChatTemplate load(const std::filesystem::path& model_dir);
  // "auto" -> load(model_dir) (raw without a folder); a built-in name -> that renderer.
  static ChatTemplate resolve(const std::string& name,
                              const std::optional<std::filesystem::path>& model_dir);

  ChatTemplateKind kind() const { return kind_; }
  // "chatml", ..., or "jinja (<origin>)".
  std::string name() const;

  // Renders messages given as JSON ({"role", "content", ...}; tool_calls and other fields pass
  // through to a Jinja template), with the tools list (null = none) and extra variables (e.g.
  // enable_thinking). Built-in renderers accept system/user/assistant turns with string content.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& tools = nullptr,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

 private:
  ChatTemplateKind kind_;
  std::shared_ptr<const jinja::Template> jinja_;
  nlohmann::ordered_json special_tokens_;
  std::string origin_;       // jinja: where the template came from
  std::string parse_error_;  // jinja: why it does not parse (jinja_ is null then)
};

struct RenderOptions {
  // Appends the opening of an assistant turn (header, no content) for generation.
  bool add_generation_prompt = false;
  // Adds the template's default system prompt when the conversation has none (ChatML: none).
  std::optional<std::string> default_system;
};

// Renders a conversation as segments. A Jinja template's output is cut where training masks
// need it, found by rendering prefixes of the conversation (the common method): each assistant
// turn is what rendering up to it adds to rendering up to the turn before with a generation
// prompt; its opening (the generation prompt) is a header segment, the rest, through the
// template's end-of-turn text, a content segment. A template that renders a turn differently
// once it is no longer last (Qwen3 drops an empty <think></think>) is handled by keeping the
// longest tail of the turn's own rendering that the full rendering continues with.
std::vector<Segment> render_chat(const ChatTemplate& chat_template,
                                 const std::vector<ChatMessage>& messages,
                                 const RenderOptions& options = {});

// JSON messages of system/user/assistant turns.
nlohmann::ordered_json messages_json(const std::vector<ChatMessage>& messages);

// The concatenated text of segments (what a string-based template would produce).
std::string join_segments(const std::vector<Segment>& segments);

}  // namespace ming::text
